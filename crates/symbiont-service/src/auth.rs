//! Who is asking: a bearer token proves an agent id. The config holds only
//! each token's SHA-256; a presented token is hashed and compared with
//! every configured hash in constant time.

use std::fmt;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use symbiont_runtime::config::ServiceSettings;

use crate::error::ApiError;

/// The configured agents' token hashes.
pub struct Tokens {
    hashes: Vec<(String, [u8; 32])>,
    anonymous: Option<String>,
    metrics: Option<[u8; 32]>,
    operator: Option<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "agents",
                &self.hashes.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .field("anonymous", &self.anonymous)
            .field("metrics_token", &self.metrics.is_some())
            .field("operator_token", &self.operator.is_some())
            .finish()
    }
}

impl Tokens {
    /// From `[slm.service]` (validated: every hash is `sha256:` + 64 hex).
    pub fn new(settings: &ServiceSettings) -> Self {
        let hashes = settings
            .agent_tokens
            .iter()
            .filter_map(|(agent, h)| Some((agent.clone(), parse_hash(h)?)))
            .collect();
        Self {
            hashes,
            anonymous: settings.anonymous_agent.clone(),
            metrics: settings.metrics_token.as_deref().and_then(parse_hash),
            operator: settings.operator_token.as_deref().and_then(parse_hash),
        }
    }

    /// Whether any agent has a token.
    pub fn any(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// Whether a request may read `GET /metrics`: with
    /// `slm.service.metrics_token` configured, only with that token; without
    /// it, only while no agent has a token (a local, single-user setup):
    /// the counts per agent would tell one agent how the others use the
    /// service, and every agent may connect from the same address as a
    /// scraper (loopback, a balancer, a port forward).
    pub fn metrics(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.special(
            self.metrics.as_ref(),
            headers,
            "/metrics needs the scraper's token (slm.service.metrics_token)",
            ApiError::forbidden(
                "metrics_token_not_set",
                "/metrics counts requests per agent: set slm.service.metrics_token (symbi-slm agents metrics-token makes one) and scrape with that token",
            ),
        )
    }

    /// Whether a request may read `GET /v1/ps` (every worker, the agents
    /// they serve): as `/metrics`, with `slm.service.operator_token`.
    pub fn operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.special(
            self.operator.as_ref(),
            headers,
            "/v1/ps needs the operator's token (slm.service.operator_token)",
            ApiError::forbidden(
                "operator_token_not_set",
                "/v1/ps shows every agent's workers: set slm.service.operator_token (symbi-slm agents operator-token makes one) and send that token",
            ),
        )
    }

    /// A token of its own for one endpoint: with its hash configured, only
    /// that token; without, only while no agent has a token.
    fn special(
        &self,
        expected: Option<&[u8; 32]>,
        headers: &HeaderMap,
        wrong: &'static str,
        not_set: ApiError,
    ) -> Result<(), ApiError> {
        match expected {
            Some(expected) => {
                let token = presented(headers).unwrap_or("");
                let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                if bool::from(expected.ct_eq(&hash)) && !token.is_empty() {
                    Ok(())
                } else {
                    Err(ApiError::unauthorized("invalid_api_key", wrong))
                }
            }
            None if self.hashes.is_empty() => Ok(()),
            None => Err(not_set),
        }
    }

    /// The agent a request speaks for: its `Authorization: Bearer` token
    /// (or `x-api-key`), else the configured anonymous agent, else 401.
    /// The anonymous agent answers only requests whose `Host` is a
    /// loopback name or address: a web page whose name was made to point
    /// at 127.0.0.1 (DNS rebinding) sends its own name, and must not act
    /// as that agent.
    pub fn agent(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let Some(token) = presented(headers) else {
            let Some(anonymous) = &self.anonymous else {
                return Err(ApiError::unauthorized(
                    "missing_api_key",
                    "no token: send `Authorization: Bearer <token>` (symbi-slm agents token AGENT makes one)",
                ));
            };
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !loopback_host(host) {
                return Err(ApiError::unauthorized(
                    "untrusted_host",
                    format!(
                        "no token, and the request names the host `{}`: without a token only requests to localhost, 127.0.0.1 or [::1] act as the anonymous agent",
                        symbiont_runtime::audit::clean_text(host, 64)
                    ),
                ));
            }
            return Ok(anonymous.clone());
        };
        if token.is_empty() {
            return Err(ApiError::unauthorized(
                "invalid_api_key",
                "the Authorization header is not `Bearer <token>`",
            ));
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every hash is compared, whichever matches: the time taken does
        // not depend on which agent (if any) the token belongs to.
        let mut found: Option<&str> = None;
        for (agent, h) in &self.hashes {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(agent);
            }
        }
        found
            .map(str::to_string)
            .ok_or_else(|| ApiError::unauthorized("invalid_api_key", "the token is not valid"))
    }
}

/// The token a request presents: `None` when it sends none; an
/// `Authorization` or `x-api-key` header that is there but unusable (not
/// Bearer, not ASCII, empty, or sent twice) presents an empty token,
/// which matches no agent: a 401, never the anonymous agent. A header
/// sent twice is refused rather than one of its values taken: a proxy
/// in front (HAProxy takes the last) must not count the request under
/// another token than the one that authenticates it.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let twice = |name| headers.get_all(name).iter().nth(1).is_some();
    if twice(header::AUTHORIZATION.as_str()) || twice("x-api-key") {
        return Some("");
    }
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim_start_matches(' '))
            // One word: a balancer in front keys the request by it.
            .filter(|t| !t.contains([' ', '\t']));
        return Some(token.unwrap_or(""));
    }
    headers
        .get("x-api-key")
        .map(|v| v.to_str().map(str::trim).unwrap_or(""))
}

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// an address of 127.0.0.0/8 or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `sha256:<lowercase hex>` of a token, the form the config holds.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut s = String::from("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new token: 256 random bits from the kernel, hex, with a prefix that
/// makes it recognizable in a leak scan.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut s = String::from("symbi_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn settings(pairs: &[(&str, &str)], anonymous: Option<&str>) -> ServiceSettings {
        ServiceSettings {
            agent_tokens: pairs
                .iter()
                .map(|(a, t)| (a.to_string(), token_hash(t)))
                .collect(),
            anonymous_agent: anonymous.map(str::to_string),
            ..Default::default()
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_token_proves_its_agent_and_no_other() {
        let tokens = Tokens::new(&settings(&[("a1", "secret-1"), ("a2", "secret-2")], None));
        assert_eq!(tokens.agent(&bearer("secret-1")).unwrap(), "a1");
        assert_eq!(tokens.agent(&bearer("secret-2")).unwrap(), "a2");
        let e = tokens.agent(&bearer("secret-3")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "invalid_api_key"));
        let e = tokens.agent(&HeaderMap::new()).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "missing_api_key"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("secret-2"));
        assert_eq!(tokens.agent(&h).unwrap(), "a2");
        // A hash is not a token.
        let e = tokens.agent(&bearer(&token_hash("secret-1"))).unwrap_err();
        assert_eq!(e.status.as_u16(), 401);
        // The token is one word, as the balancer reads it.
        for bad in [
            "Bearer secret-1 x",
            "Bearer \tsecret-1",
            "Bearer secret-1\tx",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(bad).unwrap());
            let e = tokens.agent(&h).unwrap_err();
            assert_eq!(e.status.as_u16(), 401, "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer   secret-1"),
        );
        assert_eq!(tokens.agent(&h).unwrap(), "a1");
        // A header sent twice proves nothing, whichever value is valid (a
        // balancer in front may read the other one).
        for name in [header::AUTHORIZATION.as_str(), "x-api-key"] {
            for (first, second) in [("secret-1", "other"), ("other", "secret-1")] {
                let mut h = HeaderMap::new();
                let v = |t: &str| {
                    HeaderValue::from_str(&if name == "x-api-key" {
                        t.to_string()
                    } else {
                        format!("Bearer {t}")
                    })
                    .unwrap()
                };
                h.append(name, v(first));
                h.append(name, v(second));
                let e = tokens.agent(&h).unwrap_err();
                assert_eq!(
                    (e.status.as_u16(), e.code),
                    (401, "invalid_api_key"),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn anonymous_only_when_configured_and_only_without_a_token() {
        let tokens = Tokens::new(&settings(&[("a1", "s")], Some("dev")));
        let host = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static(h));
            m
        };
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
        ] {
            assert_eq!(tokens.agent(&host(ok)).unwrap(), "dev", "{ok}");
        }
        // A name that points here (DNS rebinding), another address, or no
        // Host at all: not the anonymous agent.
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "192.168.1.2:8080",
            "[::2]:80",
        ] {
            let e = tokens.agent(&host(bad)).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (401, "untrusted_host"),
                "{bad}"
            );
        }
        assert_eq!(
            tokens.agent(&HeaderMap::new()).unwrap_err().code,
            "untrusted_host"
        );
        assert_eq!(
            tokens.agent(&bearer("wrong")).unwrap_err().status.as_u16(),
            401
        );
        // A header that is there but unusable is no way to become `dev`.
        for bad in ["Basic czpz", "Bearer", "Bearer   ", "token"] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            let e = tokens.agent(&h).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (401, "invalid_api_key"),
                "{bad}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(""));
        assert_eq!(tokens.agent(&h).unwrap_err().status.as_u16(), 401);
    }

    #[test]
    fn metrics_need_the_scraper_s_token_once_agents_have_tokens() {
        let alone = Tokens::new(&settings(&[], Some("dev")));
        assert!(alone.metrics(&HeaderMap::new()).is_ok());
        let agents = Tokens::new(&settings(&[("a1", &token_hash("t-a1"))], None));
        for headers in [HeaderMap::new(), bearer("t-a1")] {
            let e = agents.metrics(&headers).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::FORBIDDEN);
        }
        let mut s = settings(&[("a1", &token_hash("t-a1"))], None);
        s.metrics_token = Some(token_hash("t-scrape"));
        let guarded = Tokens::new(&s);
        assert!(guarded.metrics(&bearer("t-scrape")).is_ok());
        for headers in [
            HeaderMap::new(),
            bearer("t-a1"),
            bearer(""),
            bearer("t-scrapeX"),
        ] {
            let e = guarded.metrics(&headers).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn new_tokens_are_long_random_and_hash_to_the_config_form() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), "symbi_".len() + 64);
        let h = token_hash(&a);
        assert!(parse_hash(&h).is_some(), "{h}");
        assert_eq!(
            token_hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
