//! Which destinations a process may reach, judged on the address it will
//! really connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the connection will carry, as the proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `CONNECT` tunnel: any bytes, usually TLS (HTTPS).
    Tunnel,
    /// A plain `http://` request forwarded by the proxy.
    Http,
}

/// The protocol a rule is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleProtocol {
    /// Tunnels and plain HTTP alike.
    Tcp,
    /// Plain `http://` requests only.
    Http,
    /// `CONNECT` tunnels only (what HTTPS clients ask for).
    Https,
}

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: Host,
    port: Option<u16>,
    protocol: Option<RuleProtocol>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    /// An address, IPv4-mapped IPv6 folded to IPv4.
    Addr(IpAddr),
}

/// A rule the policy cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a host name nor an address.
    #[error("`{0}` is not a host name or an IP address")]
    BadHost(String),
    /// A protocol other than TCP (the proxy carries nothing else).
    #[error("the egress proxy carries TCP only")]
    NotTcp,
}

impl Rule {
    /// A rule for `host` (a DNS name or an IP address, IPv6 with or without
    /// brackets), on `port` (any when `None`), for `protocol` (any TCP
    /// traffic when `None`).
    pub fn new(
        host: &str,
        port: Option<u16>,
        protocol: Option<RuleProtocol>,
    ) -> Result<Self, PolicyError> {
        let host = parse_host(host).ok_or_else(|| PolicyError::BadHost(host.to_string()))?;
        Ok(Self {
            host,
            port,
            protocol,
        })
    }

    fn admits(&self, kind: Kind, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
            && match self.protocol {
                None | Some(RuleProtocol::Tcp) => true,
                Some(RuleProtocol::Http) => kind == Kind::Http,
                Some(RuleProtocol::Https) => kind == Kind::Tunnel,
            }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(n) => f.write_str(n)?,
            Host::Addr(IpAddr::V6(a)) => write!(f, "[{a}]")?,
            Host::Addr(a) => write!(f, "{a}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

/// Why a destination was refused. `destination` is what the client asked
/// for (`host:port`), `reason` a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `host:port` as asked.
    pub destination: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.destination, self.reason)
    }
}

/// The allow-list of one sandbox profile (and who it is applied for, for
/// the reports).
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    /// The profile's name, for refusals.
    pub profile: String,
    /// The agent the process runs for, when known.
    pub agent: Option<String>,
    /// Bytes per second in each direction, shared by every connection.
    pub bytes_per_second: Option<u64>,
}

impl Policy {
    /// A policy of `rules`, for `profile`.
    pub fn new(profile: impl Into<String>, rules: Vec<Rule>) -> Self {
        Self {
            rules,
            profile: profile.into(),
            agent: None,
            bytes_per_second: None,
        }
    }

    /// Caps each direction at `mbps` megabits (10^6 bits) per second.
    pub fn with_bandwidth_mbps(mut self, mbps: Option<u64>) -> Self {
        self.bytes_per_second = mbps.map(|m| m.saturating_mul(1_000_000) / 8);
        self
    }

    /// Names the agent in refusals.
    pub fn for_agent(mut self, agent: Option<String>) -> Self {
        self.agent = agent;
        self
    }

    /// The rules, for reports.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `host:port` could be allowed at all, before any lookup: a
    /// rule names it. A remote model's endpoint is checked with this when
    /// its runner is built, so that a profile that can never reach it is an
    /// error then, not at the first request.
    pub fn admits_name(&self, host: &str, port: u16, kind: Kind) -> Result<(), Refusal> {
        let refuse = |reason: String| Refusal {
            destination: destination(host, port),
            reason,
        };
        let Some(asked) = parse_host(host) else {
            return Err(refuse("not a host name or an IP address".into()));
        };
        if self
            .rules
            .iter()
            .any(|r| r.host == asked && r.admits(kind, port))
        {
            Ok(())
        } else {
            Err(refuse(self.not_listed()))
        }
    }

    /// Judges `host:port`: the addresses the connection may go to, in the
    /// resolver's order. A name is looked up once, here; the caller
    /// connects only to what this returns.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        kind: Kind,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        self.admits_name(host, port, kind)?;
        let refuse = |reason: String| Refusal {
            destination: destination(host, port),
            reason,
        };
        let asked = parse_host(host).ok_or_else(|| refuse("not a host name".into()))?;
        let name = match asked {
            // Listed literally (admits_name): whatever kind of address.
            Host::Addr(a) => return Ok(vec![SocketAddr::new(a, port)]),
            Host::Name(n) => n,
        };
        // The system resolver (with /etc/hosts and its search domains): the
        // address it gives is what gets checked below, wherever it came
        // from.
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| refuse(format!("cannot resolve the name: {e}")))?
            .collect();
        let mut refused = Vec::new();
        let mut allowed = Vec::new();
        for a in found {
            let ip = fold(a.ip());
            match special(ip) {
                Some(class) if !self.lists_address(ip, port, kind) => {
                    refused.push(format!("{ip} ({class})"))
                }
                _ => allowed.push(SocketAddr::new(ip, port)),
            }
        }
        if allowed.is_empty() {
            return Err(refuse(if refused.is_empty() {
                "the name has no address".into()
            } else {
                format!(
                    "the name resolves to {}, which no rule names literally (a name must lead to public addresses)",
                    refused.join(", ")
                )
            }));
        }
        Ok(allowed)
    }

    fn lists_address(&self, ip: IpAddr, port: u16, kind: Kind) -> bool {
        self.rules
            .iter()
            .any(|r| r.host == Host::Addr(ip) && r.admits(kind, port))
    }

    fn not_listed(&self) -> String {
        format!("not in allowed_destinations of profile `{}`", self.profile)
    }
}

/// A destination as refusals name it (in audit events, logs and the
/// client's 403): at most 300 characters of the host, control characters
/// and bidirectional overrides replaced (the client chose the name).
fn destination(host: &str, port: u16) -> String {
    let mut clean: String = host
        .chars()
        .take(300)
        .map(|c| {
            if c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
            {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if host.chars().nth(300).is_some() {
        clean.push('…');
    }
    if clean.contains(':') && !clean.starts_with('[') {
        format!("[{clean}]:{port}")
    } else {
        format!("{clean}:{port}")
    }
}

/// A host as a rule or a request names it.
fn parse_host(host: &str) -> Option<Host> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(Host::Addr(fold(ip)));
    }
    if bare != host {
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return None;
    }
    // Something like `2130706433`, `0x7f.1` or `127.1` is an address to
    // some resolvers (inet_aton): never a name here. A label is a number
    // when it is all digits, or `0x` and hex digits.
    let numeric = |l: &str| {
        l.bytes().all(|b| b.is_ascii_digit())
            || l.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
                && l[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    if name.split('.').all(numeric) {
        return None;
    }
    Some(Host::Name(name))
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry.
fn fold(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The class of an address that is not public (`loopback`, `private`,
/// `cloud metadata`, …), if it is one; an IPv4-mapped IPv6 address is
/// judged as the IPv4 address it carries. Clients outside the proxy (the
/// model hub's downloads) judge their destinations with this.
pub fn address_class(ip: IpAddr) -> Option<&'static str> {
    special(fold(ip))
}

/// The class of an address that is not public, if it is one.
pub(crate) fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    Some(if a.is_loopback() {
        "loopback"
    } else if a.is_unspecified() || o[0] == 0 {
        "this network"
    } else if o == [169, 254, 169, 254] || o == [168, 63, 129, 16] {
        "cloud metadata"
    } else if a.is_link_local() {
        "link-local"
    } else if a.is_private() {
        "private"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared address space (carrier NAT, some cloud metadata)"
    } else if a.is_multicast() || a.is_broadcast() || o[0] >= 240 {
        "multicast, broadcast or reserved"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "IETF protocol assignments"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "benchmarking"
    } else {
        return None;
    })
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    Some(if a.is_loopback() {
        "loopback"
    } else if a.is_unspecified() {
        "unspecified"
    } else if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        "cloud metadata"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "unique local (private)"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "site-local (deprecated, private)"
    } else if a.is_multicast() {
        "multicast"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        "NAT64 (may lead to any IPv4 address)"
    } else if s[0] == 0x2002 {
        "6to4 (may lead to any IPv4 address)"
    } else if s[0] == 0x2001 && s[1] == 0 {
        "Teredo"
    } else if let Some(v4) = a.to_ipv4() {
        // IPv4-compatible (deprecated) addresses.
        return special_v4(v4).or(Some("IPv4-compatible"));
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(&str, Option<u16>, Option<RuleProtocol>)]) -> Policy {
        Policy::new(
            "tools",
            rules
                .iter()
                .map(|(h, p, k)| Rule::new(h, *p, *k).unwrap())
                .collect(),
        )
    }

    #[test]
    fn hosts_parse_strictly() {
        assert_eq!(
            parse_host("API.Example.com."),
            Some(Host::Name("api.example.com".into()))
        );
        assert_eq!(
            parse_host("[::1]"),
            Some(Host::Addr("::1".parse().unwrap()))
        );
        assert_eq!(
            parse_host("::ffff:127.0.0.1"),
            Some(Host::Addr("127.0.0.1".parse().unwrap()))
        );
        for bad in [
            "",
            "a b",
            "2130706433",
            "0x7f.1",
            "127.1",
            "a..b",
            "[api.example.com]",
            "ex/ample",
        ] {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
        assert!(Rule::new("not a host", None, None).is_err());
        // Names whose labels only look like hex are names.
        for good in ["db1.de", "a1.ca", "3dfx.be", "0xdead.example"] {
            assert_eq!(parse_host(good), Some(Host::Name(good.into())), "{good}");
        }
    }

    #[test]
    fn ports_and_protocols_are_matched() {
        let p = policy(&[
            ("api.example.com", Some(443), Some(RuleProtocol::Https)),
            ("127.0.0.1", Some(9000), None),
            ("plain.example.com", None, Some(RuleProtocol::Http)),
        ]);
        assert!(p.admits_name("api.example.com", 443, Kind::Tunnel).is_ok());
        assert!(p.admits_name("API.EXAMPLE.COM", 443, Kind::Tunnel).is_ok());
        assert!(p.admits_name("api.example.com", 443, Kind::Http).is_err());
        assert!(p.admits_name("api.example.com", 444, Kind::Tunnel).is_err());
        assert!(p
            .admits_name("other.example.com", 443, Kind::Tunnel)
            .is_err());
        assert!(p.admits_name("127.0.0.1", 9000, Kind::Http).is_ok());
        assert!(p
            .admits_name("[::ffff:127.0.0.1]", 9000, Kind::Tunnel)
            .is_ok());
        assert!(p.admits_name("127.0.0.2", 9000, Kind::Http).is_err());
        assert!(p.admits_name("127.0.0.1", 9001, Kind::Http).is_err());
        assert!(p.admits_name("plain.example.com", 8080, Kind::Http).is_ok());
        assert!(p
            .admits_name("plain.example.com", 8080, Kind::Tunnel)
            .is_err());
        let r = p
            .admits_name("evil.example", 443, Kind::Tunnel)
            .unwrap_err();
        assert_eq!(r.destination, "evil.example:443");
        assert!(r.reason.contains("profile `tools`"), "{}", r.reason);
        // Row 12 of issue 18: a name the client chose goes into audit
        // events and logs without its direction overrides or escapes.
        let r = p
            .admits_name("evil\u{202e}moc.x\u{1b}[2J", 443, Kind::Tunnel)
            .unwrap_err();
        assert_eq!(r.destination, "evil\u{fffd}moc.x\u{fffd}[2J:443");
        let long = "a".repeat(400);
        let r = p.admits_name(&long, 443, Kind::Tunnel).unwrap_err();
        assert!(r.destination.chars().count() < 310, "{}", r.destination);
    }

    #[test]
    fn special_addresses_are_classed() {
        for (a, class) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "cloud metadata"),
            ("168.63.129.16", "cloud metadata"),
            ("fec0::1", "site-local (deprecated, private)"),
            ("169.254.1.1", "link-local"),
            ("10.1.2.3", "private"),
            ("192.168.0.1", "private"),
            (
                "100.100.100.200",
                "shared address space (carrier NAT, some cloud metadata)",
            ),
            ("0.0.0.0", "this network"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fc00::1", "unique local (private)"),
            ("64:ff9b::a9fe:a9fe", "NAT64 (may lead to any IPv4 address)"),
        ] {
            assert_eq!(special(fold(a.parse().unwrap())), Some(class), "{a}");
        }
        for a in [
            "93.184.215.14",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "1.1.1.1",
        ] {
            assert_eq!(special(a.parse().unwrap()), None, "{a}");
        }
    }

    #[tokio::test]
    async fn a_name_leading_to_a_special_address_needs_that_address_listed() {
        let only_name = policy(&[("localhost", Some(9000), None)]);
        let r = only_name
            .resolve("localhost", 9000, Kind::Http)
            .await
            .unwrap_err();
        assert!(r.reason.contains("loopback"), "{}", r.reason);
        // The same name with its address listed: allowed, to that address.
        let both = policy(&[
            ("localhost", Some(9000), None),
            ("127.0.0.1", Some(9000), None),
        ]);
        let to = both.resolve("localhost", 9000, Kind::Http).await.unwrap();
        assert!(to.contains(&"127.0.0.1:9000".parse().unwrap()), "{to:?}");
        assert!(to.iter().all(|a| a.ip().is_loopback() && a.port() == 9000));
        // A literal address listed: no lookup, whatever its class.
        let lit = policy(&[("169.254.169.254", Some(80), None)]);
        assert_eq!(
            lit.resolve("169.254.169.254", 80, Kind::Http)
                .await
                .unwrap(),
            vec!["169.254.169.254:80".parse().unwrap()]
        );
    }
}
