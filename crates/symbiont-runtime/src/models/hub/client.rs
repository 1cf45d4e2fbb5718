//! The hub's HTTP protocol, as `huggingface_hub` speaks it:
//! `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true` (the
//! commit and every file with its size and LFS SHA-256) and
//! `GET {endpoint}/{repo}/resolve/{commit}/{file}` (the bytes, often by a
//! redirect to a CDN, with `Range` to resume).
//!
//! Every hop is judged before it is taken: a redirect may lead to the
//! endpoint's own host or to a public address over HTTPS (plain HTTP only
//! when the endpoint is plain HTTP), never to loopback, private, link-local
//! or cloud-metadata addresses unless the endpoint is one; names are
//! resolved by a resolver that hands reqwest only the addresses it
//! allowed. The token goes to the endpoint's host only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use symbiont_egress::address_class;

use super::HubError;
use crate::config::provider::{is_commit, is_repo_file, is_sha256};

/// The longest a repository listing may take, whole.
const LISTING_DEADLINE: Duration = Duration::from_secs(120);
/// Most redirects followed for one file.
const MAX_REDIRECTS: usize = 5;
/// Largest repository listing read (a listing of 100,000 files is ~20 MB).
const MAX_LISTING_BYTES: usize = 32 << 20;

/// Where the hub is and how to speak to it, from the environment as
/// `huggingface_hub` reads it.
#[derive(Clone)]
pub struct HubEnv {
    /// `$HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: Url,
    /// `$HF_HUB_OFFLINE`: nothing may be fetched.
    pub offline: bool,
    token: Option<String>,
}

impl std::fmt::Debug for HubEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubEnv")
            .field("endpoint", &self.endpoint.as_str())
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

impl HubEnv {
    /// `HF_ENDPOINT`, `HF_HUB_OFFLINE`, and the token: `$HF_TOKEN`, else
    /// the file `huggingface-cli login` writes (`$HF_TOKEN_PATH`, else
    /// `$HF_HOME/token`, else `$XDG_CACHE_HOME/huggingface/token`, else
    /// `~/.cache/huggingface/token`).
    pub fn from_env() -> Result<Self, HubError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let raw = var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        let endpoint = Url::parse(raw.trim_end_matches('/')).map_err(|e| HubError::Setting {
            name: "HF_ENDPOINT",
            reason: format!("`{raw}` is not a URL: {e}"),
        })?;
        if !matches!(endpoint.scheme(), "http" | "https")
            || endpoint.host_str().is_none()
            || !endpoint.username().is_empty()
            || endpoint.password().is_some()
            || endpoint.query().is_some()
        {
            return Err(HubError::Setting {
                name: "HF_ENDPOINT",
                reason: format!(
                    "`{raw}` must be an http:// or https:// URL with a host and no user or query"
                ),
            });
        }
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH")
                .map(std::path::PathBuf::from)
                .or_else(|| var("HF_HOME").map(|h| std::path::Path::new(&h).join("token")))
                .or_else(|| {
                    var("XDG_CACHE_HOME")
                        .map(|c| std::path::Path::new(&c).join("huggingface/token"))
                })
                .or_else(|| {
                    var("HOME").map(|h| std::path::Path::new(&h).join(".cache/huggingface/token"))
                })?;
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        Ok(Self {
            endpoint,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            token,
        })
    }

    /// An explicit endpoint, online, without a token (tests).
    pub fn with_endpoint(endpoint: Url) -> Self {
        Self {
            endpoint,
            offline: false,
            token: None,
        }
    }
}

/// One file of a repository listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    /// Its path in the repository.
    pub rfilename: String,
    /// Its size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Its git blob id.
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
    /// Its LFS pointer, for a file stored in LFS.
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// An LFS file's digest and size.
#[derive(Debug, Clone, Deserialize)]
pub struct Lfs {
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A revision of a repository, as the hub lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    /// The commit the revision is at.
    pub sha: String,
    /// Its files.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

impl RepoInfo {
    /// The listing from the hub's JSON, with every name and digest
    /// checked: a commit that is not 40 hex digits is refused, files whose
    /// names could climb out of a snapshot are left out, LFS digests that
    /// are not SHA-256 are dropped.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let mut info: RepoInfo =
            serde_json::from_slice(body).map_err(|e| format!("not a repository listing: {e}"))?;
        if !is_commit(&info.sha) {
            return Err(format!(
                "`sha` is not a 40-digit commit id: {:?}",
                info.sha.chars().take(80).collect::<String>()
            ));
        }
        info.siblings.retain(|s| is_repo_file(&s.rfilename));
        for s in &mut info.siblings {
            if s.lfs.as_ref().is_some_and(|l| !is_sha256(&l.sha256)) {
                s.lfs = None;
            }
            if let Some(l) = &mut s.lfs {
                l.sha256.make_ascii_lowercase();
            }
        }
        Ok(info)
    }
}

/// Hands reqwest only the addresses a hop may go to.
struct Guard {
    /// HF_ENDPOINT's host, and the proxies' hosts: the operator chose
    /// them, whatever their address.
    trusted: Vec<String>,
}

/// The hosts of the proxies the environment names (reqwest honours
/// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and their lowercase forms).
fn proxy_hosts() -> Vec<String> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .filter_map(|v| {
        let v = if v.contains("://") {
            v
        } else {
            format!("http://{v}")
        };
        Url::parse(&v).ok()?.host_str().map(str::to_string)
    })
    .collect()
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let trusted = self.trusted.iter().any(|t| host.eq_ignore_ascii_case(t));
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|a| trusted || address_class(a.ip()).is_none());
            if ok.is_empty() {
                let classes: Vec<String> = refused
                    .iter()
                    .map(|a| format!("{} ({})", a.ip(), address_class(a.ip()).unwrap_or("?")))
                    .collect();
                return Err(format!(
                    "`{host}` resolves to {}: only HF_ENDPOINT's host may be a non-public address",
                    if classes.is_empty() {
                        "nothing".into()
                    } else {
                        classes.join(", ")
                    }
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

/// A client of one hub.
#[derive(Debug, Clone)]
pub struct HubClient {
    env: Arc<HubEnv>,
    http: reqwest::Client,
    /// A proxy is in use: it resolves names itself, so a redirect's name is
    /// looked up and judged here first.
    proxied: bool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

impl HubClient {
    /// A client of the hub `env` names (`HTTPS_PROXY` is honoured).
    pub fn new(env: HubEnv) -> Result<Self, HubError> {
        let proxies = proxy_hosts();
        let mut trusted = proxies.clone();
        trusted.push(env.endpoint.host_str().unwrap_or_default().to_string());
        let guard = Guard { trusted };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(guard))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("symbi-slm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubError::Setting {
                name: "HTTPS_PROXY",
                reason: e.to_string(),
            })?;
        Ok(Self {
            env: Arc::new(env),
            http,
            proxied: !proxies.is_empty(),
        })
    }

    /// The hub's environment.
    pub fn env(&self) -> &HubEnv {
        &self.env
    }

    fn same_origin(&self, url: &Url) -> bool {
        let e = &self.env.endpoint;
        url.scheme() == e.scheme()
            && url.host_str() == e.host_str()
            && url.port_or_known_default() == e.port_or_known_default()
    }

    /// Whether `url` may be fetched: the endpoint itself, or HTTPS (HTTP
    /// only under an HTTP endpoint) to a host that is not a literal
    /// non-public address. Names are judged by the resolver.
    fn judge(&self, url: &Url) -> Result<(), HubError> {
        let refuse = |reason: String| HubError::Refused {
            url: shown(url),
            reason,
        };
        if self.same_origin(url) {
            return Ok(());
        }
        match url.scheme() {
            "https" => {}
            "http" if self.env.endpoint.scheme() == "http" => {}
            s => {
                return Err(refuse(format!(
                    "scheme `{s}` (a redirect must stay on HTTPS)"
                )))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("a redirect may not carry credentials".into()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(refuse("no host".into())),
        };
        if let Some(class) = ip.and_then(address_class) {
            if url.host_str() != self.env.endpoint.host_str() {
                return Err(refuse(format!(
                    "a {class} address: only HF_ENDPOINT's host may be one"
                )));
            }
        }
        Ok(())
    }

    fn offline(&self, what: &str) -> Result<(), HubError> {
        if self.env.offline {
            Err(HubError::Offline(what.to_string()))
        } else {
            Ok(())
        }
    }

    /// [`Self::judge`], and under a proxy (which resolves names itself)
    /// a redirect's name looked up here: it must lead to public addresses
    /// only. (The proxy looks it up again; what it connects to is its to
    /// judge.)
    async fn judge_hop(&self, url: &Url) -> Result<(), HubError> {
        self.judge(url)?;
        if !self.proxied || self.same_origin(url) {
            return Ok(());
        }
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            // A host behind a proxy often cannot resolve outside names:
            // then the proxy alone judges (by its own policy).
            let Ok(found) = tokio::net::lookup_host((name, port)).await else {
                return Ok(());
            };
            for a in found {
                if let Some(class) = address_class(a.ip()) {
                    return Err(HubError::Refused {
                        url: shown(url),
                        reason: format!(
                            "`{name}` resolves to {} ({class}): only HF_ENDPOINT's host may be a non-public address",
                            a.ip()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// One request, redirects followed hop by hop after judging each.
    async fn get(&self, mut url: Url, headers: HeaderMap) -> Result<reqwest::Response, HubError> {
        self.judge_hop(&url).await?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.http.get(url.clone()).headers(headers.clone());
            if let (Some(t), true) = (&self.env.token, self.same_origin(&url)) {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    HubError::Setting {
                        name: "HF_TOKEN",
                        reason: "holds characters a header cannot".into(),
                    }
                })?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            let resp = req.send().await.map_err(|e| HubError::Network {
                url: shown(&url),
                reason: chain(&e.without_url()),
            })?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| HubError::Answer {
                    url: shown(&url),
                    what: format!("{} without a usable Location", resp.status()),
                })?;
            self.judge_hop(&next).await?;
            url = next;
        }
        Err(HubError::Answer {
            url: shown(&url),
            what: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn url(&self, path: &[&str]) -> Url {
        let mut u = self.env.endpoint.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty();
            for p in path {
                // Each part of a repository id or file path is one
                // segment, escaped; the separators stay.
                for s in p.split('/') {
                    segs.push(s);
                }
            }
        }
        u
    }

    /// The commit `revision` of `repo` is at, and its files.
    pub async fn revision(&self, repo: &str, revision: &str) -> Result<RepoInfo, HubError> {
        self.offline(&format!("resolving {repo}@{revision}"))?;
        let mut url = self.url(&["api", "models", repo, "revision"]);
        if let Ok(mut segs) = url.path_segments_mut() {
            // A branch such as `refs/pr/1` is one escaped segment.
            segs.push(revision);
        }
        url.query_pairs_mut().append_pair("blobs", "true");
        // The listing has a deadline of its own: a hub that trickles bytes
        // (each read within the read timeout) cannot hold it.
        let listing = async {
            let resp = self.get(url.clone(), HeaderMap::new()).await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(HubError::Status {
                    url: shown(&url),
                    status: status.as_u16(),
                    hint: hint(status, repo, revision),
                });
            }
            read_capped(resp, MAX_LISTING_BYTES)
                .await
                .map_err(|what| HubError::Answer {
                    url: shown(&url),
                    what,
                })
        };
        let body = tokio::time::timeout(LISTING_DEADLINE, listing)
            .await
            .map_err(|_| HubError::Answer {
                url: shown(&url),
                what: format!("no whole listing within {} s", LISTING_DEADLINE.as_secs()),
            })??;
        RepoInfo::parse(&body).map_err(|what| HubError::Answer {
            url: shown(&url),
            what,
        })
    }

    /// `GET …/resolve/{commit}/{file}`, from byte `from` on.
    pub async fn file(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        from: u64,
    ) -> Result<(Url, reqwest::Response), HubError> {
        self.offline(&format!("downloading {repo}/{file}"))?;
        let url = self.url(&[repo, "resolve", commit, file]);
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if from > 0 {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={from}-")).expect("ascii"),
            );
        }
        let resp = self.get(url.clone(), headers).await?;
        let status = resp.status();
        if !(status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
            return Err(HubError::Status {
                url: shown(&url),
                status: status.as_u16(),
                hint: hint(status, repo, commit),
            });
        }
        Ok((url, resp))
    }
}

fn hint(status: StatusCode, repo: &str, revision: &str) -> String {
    match status.as_u16() {
        401 | 403 => " (a gated or private repository needs HF_TOKEN with access to it)".into(),
        404 => format!(" (no repository `{repo}` or no revision `{revision}` in it)"),
        429 => " (rate limited: try again later)".into(),
        _ => String::new(),
    }
}

/// A URL as errors show it: no query or fragment (a CDN's signed URL
/// carries its grant there), at most 300 characters.
pub(super) fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.as_str().chars().take(300).collect()
}

/// An error and its causes on one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("the answer is larger than {} MB", cap >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_keeps_only_safe_names_and_real_digests() {
        let body = br#"{"id":"o/m","sha":"0123456789abcdef0123456789abcdef01234567","siblings":[
            {"rfilename":"m.gguf","size":5,"lfs":{"sha256":"AB","size":5}},
            {"rfilename":"../../etc/passwd"},
            {"rfilename":"/abs.gguf"},
            {"rfilename":"d/n.gguf","lfs":{"sha256":"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB","size":7}}]}"#;
        let info = RepoInfo::parse(body).unwrap();
        let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        assert_eq!(names, ["m.gguf", "d/n.gguf"]);
        assert!(info.siblings[0].lfs.is_none(), "not a SHA-256");
        assert_eq!(
            info.siblings[1].lfs.as_ref().unwrap().sha256,
            "ab".repeat(32)
        );
        let e = RepoInfo::parse(br#"{"sha":"../x","siblings":[]}"#).unwrap_err();
        assert!(e.contains("commit"), "{e}");
    }

    #[test]
    fn redirects_are_judged() {
        let c = HubClient::new(HubEnv::with_endpoint(
            Url::parse("http://127.0.0.1:9/").unwrap(),
        ))
        .unwrap();
        let ok = |u: &str| c.judge(&Url::parse(u).unwrap());
        ok("http://127.0.0.1:9/o/m/resolve/x/f").unwrap();
        ok("https://cdn.example.org/blob").unwrap();
        ok("http://cdn.example.org/blob").unwrap();
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/x",
            "https://[::1]:9/x",
            "file:///etc/passwd",
            "https://user:pw@cdn.example.org/x",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        let tls = HubClient::new(HubEnv::with_endpoint(
            Url::parse("https://hub.example.org").unwrap(),
        ))
        .unwrap();
        assert!(
            tls.judge(&Url::parse("http://cdn.example.org/blob").unwrap())
                .is_err(),
            "no downgrade from an HTTPS hub"
        );
        assert_eq!(
            tls.url(&["o/m", "resolve", "abc", "d/x y.gguf"]).as_str(),
            "https://hub.example.org/o/m/resolve/abc/d/x%20y.gguf"
        );
    }
}
