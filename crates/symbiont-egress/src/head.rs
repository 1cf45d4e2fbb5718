//! The request head a client sends the proxy, parsed (every byte of it
//! comes from the client, so it is public for the fuzz target), and the
//! head forwarded to a destination for a plain `http://` request.

use crate::policy::Kind;

/// A request head as the proxy reads it. Public for the fuzz target:
/// every byte of it comes from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The minor HTTP version (1.x).
    pub version: u8,
    /// The `Proxy-Authorization: Basic` value, trimmed.
    pub credential: Option<String>,
    /// Every header, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Where a request goes, judged from its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A tunnel or a plain request.
    pub kind: Kind,
    /// The host as the client named it (brackets taken off).
    pub host: String,
    /// The port (80 when a plain URL names none).
    pub port: u16,
    /// A plain request's origin-form path (with its query).
    pub path: String,
    /// A plain request's body length (its one `Content-Length`).
    pub body: Option<u64>,
}

/// A refusal: the status and why.
pub type Reject = (u16, &'static str);

/// Parses a complete request head (at most 64 headers).
pub fn parse_head(head: &[u8]) -> Result<Head, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(head) else {
        return Err((400, "not an HTTP request (or more than 64 headers)"));
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err((400, "not an HTTP request"));
    };
    let credential = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        // The scheme is case-insensitive (RFC 9110).
        .and_then(|v| strip_prefix_ci(v, "Basic "))
        .map(|v| v.trim().to_string());
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        version,
        credential,
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
    })
}

impl Head {
    /// Where the request goes: `CONNECT host:port`, or an absolute
    /// `http://` URL with at most one `Content-Length` of ASCII digits and
    /// no `Transfer-Encoding`.
    pub fn target(&self) -> Result<Target, Reject> {
        let (kind, host, port, path) = if self.method.eq_ignore_ascii_case("CONNECT") {
            match split_authority(&self.target, None) {
                Some((h, p)) => (Kind::Tunnel, h, p, String::new()),
                None => return Err((400, "CONNECT needs host:port")),
            }
        } else if let Some(after) = strip_prefix_ci(&self.target, "http://") {
            // A fragment is the client's own; it never goes out.
            let after = after.split('#').next().unwrap_or_default();
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            let path = if path.is_empty() || path.starts_with('?') {
                format!("/{path}")
            } else {
                path.to_string()
            };
            match split_authority(authority, Some(80)) {
                Some((h, p)) => (Kind::Http, h, p, path),
                None => return Err((400, "bad host in the request URL")),
            }
        } else {
            return Err((
                400,
                "only CONNECT and absolute http:// requests are proxied",
            ));
        };
        // A plain request's body: as long as `Content-Length` says, never
        // chunked (so that where it ends, and the request with it, is known
        // before anything is sent).
        let mut body: Option<u64> = None;
        if kind == Kind::Http {
            for (name, value) in &self.headers {
                if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err((
                        411,
                        "a request body needs Content-Length (no chunked bodies)",
                    ));
                }
                if name.eq_ignore_ascii_case("content-length") {
                    // One header, ASCII digits only: a value two parsers
                    // could read differently would split the request.
                    let digits = value.trim_ascii();
                    let len = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                        .flatten();
                    match (body, len) {
                        (None, Some(len)) => body = Some(len),
                        _ => return Err((400, "one Content-Length of ASCII digits is needed")),
                    }
                }
            }
        }
        Ok(Target {
            kind,
            host,
            port,
            path,
            body,
        })
    }
}

/// A host as the destination is told it: an address in its canonical
/// form (`[::ffff:127.0.0.1]` is `127.0.0.1`), a name in lower case.
pub fn canonical_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// The head a plain request's destination gets: origin form, `Host` set to
/// the host that was judged (a shared host routes by `Host`: the client's
/// own could name another site there), the proxy's own `Content-Length`,
/// one request per connection, no proxy or hop-by-hop header.
pub fn forward_head(head: &Head, target: &Target) -> Vec<u8> {
    let mut fwd = format!(
        "{} {} HTTP/1.{}\r\n",
        head.method, target.path, head.version
    )
    .into_bytes();
    // Headers the client's `Connection` names are hop-by-hop too (RFC 9110
    // 7.6.1): they were for the proxy, not the destination.
    let named_hop: Vec<String> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, value) in &head.headers {
        let n = name.to_ascii_lowercase();
        if n.starts_with("proxy-")
            || named_hop.contains(&n)
            || matches!(
                n.as_str(),
                "connection" | "keep-alive" | "host" | "upgrade" | "te" | "content-length"
            )
        {
            continue;
        }
        fwd.extend_from_slice(name.as_bytes());
        fwd.extend_from_slice(b": ");
        fwd.extend_from_slice(value);
        fwd.extend_from_slice(b"\r\n");
    }
    let host = canonical_host(&target.host);
    let authority = if host.contains(':') {
        format!("[{host}]:{}", target.port)
    } else {
        format!("{host}:{}", target.port)
    };
    if let Some(len) = target.body {
        fwd.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
    }
    fwd.extend_from_slice(format!("Host: {authority}\r\nConnection: close\r\n\r\n").as_bytes());
    fwd
}

/// `host:port` (IPv6 in brackets); `default` when no port is given.
fn split_authority(a: &str, default: Option<u16>) -> Option<(String, u16)> {
    if a.contains('@') || a.is_empty() {
        return None;
    }
    let (host, port) = if let Some(v6) = a.strip_prefix('[') {
        let (h, tail) = v6.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p),
            None if tail.is_empty() => None,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (a.to_string(), None),
        }
    };
    // No host at all (`http://:9000/`, `CONNECT :443`, `[]`): nothing to
    // judge (a fuzz finding: it reached the policy as an empty name).
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default?,
    };
    Some((host, port))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
        .then(|| s.get(prefix.len()..))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The destination is told the host that was judged, in canonical
    /// form, whatever spelling the client used; the client's own `Host`,
    /// its proxy headers and the headers its `Connection` names never go
    /// out.
    #[test]
    fn the_forwarded_host_is_the_judged_one_in_canonical_form() {
        let head = parse_head(
            b"GET http://[0:0:0:0:0:ffff:127.0.0.1]:9000/x HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic eA==\r\nConnection: X-Secret, close\r\nX-Secret: for the proxy\r\n\r\n",
        )
        .unwrap();
        let target = head.target().unwrap();
        let fwd = String::from_utf8(forward_head(&head, &target)).unwrap();
        assert_eq!(
            fwd,
            "GET /x HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(canonical_host("API.Example.COM"), "api.example.com");
    }

    /// Regression (fuzz/artifacts/proxy_request/crash-8d007fcd…): a URL
    /// or CONNECT target with an empty host is a 400, never judged.
    #[test]
    fn an_empty_host_is_refused() {
        for head in [
            &b"POST http://:9000/v1/chat HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..],
            b"CONNECT :443 HTTP/1.1\r\n\r\n",
            b"CONNECT []:443 HTTP/1.1\r\n\r\n",
        ] {
            let h = parse_head(head).unwrap();
            assert_eq!(h.target().unwrap_err().0, 400, "{h:?}");
        }
    }

    #[test]
    fn authorities_parse() {
        assert_eq!(split_authority("a.b:443", None), Some(("a.b".into(), 443)));
        assert_eq!(split_authority("a.b", Some(80)), Some(("a.b".into(), 80)));
        assert_eq!(split_authority("a.b", None), None);
        assert_eq!(
            split_authority("[::1]:8080", None),
            Some(("::1".into(), 8080))
        );
        assert_eq!(split_authority("[::1]", Some(80)), Some(("::1".into(), 80)));
        assert_eq!(split_authority("user@a.b:80", None), None);
        assert_eq!(split_authority("a.b:0", None), None);
        assert_eq!(split_authority("a.b:99999", None), None);
        assert_eq!(split_authority("[::1]x", Some(80)), None);
    }
}
