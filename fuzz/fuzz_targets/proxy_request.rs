//! The egress proxy's reading of a client's request head (a program under
//! `sandbox exec` writes it): it is refused or judged, never panics. Oracle
//! against request smuggling: for a plain request, the head forwarded to
//! the destination parses as one complete HTTP/1.1 request whose only
//! `Host` is the judged host, with no proxy or hop-by-hop header, and a
//! `Content-Length` only as the proxy judged it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbiont_egress::{canonical_host, forward_head, parse_head, Kind};

fuzz_target!(|data: &[u8]| {
    let Ok(head) = parse_head(data) else {
        return;
    };
    let Ok(target) = head.target() else {
        return;
    };
    assert!(!target.host.is_empty(), "an empty host was judged");
    assert!(!target.host.contains('@'), "userinfo in the host");
    if target.kind == Kind::Tunnel {
        return;
    }
    let fwd = forward_head(&head, &target);
    let mut headers = [httparse::EMPTY_HEADER; 80];
    let mut req = httparse::Request::new(&mut headers);
    let end = match req.parse(&fwd) {
        Ok(httparse::Status::Complete(end)) => end,
        other => panic!("the forwarded head does not parse: {other:?}"),
    };
    assert_eq!(end, fwd.len(), "bytes after the forwarded head");
    let named = |n: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value.to_vec())
            .collect::<Vec<_>>()
    };
    let hosts = named("host");
    assert_eq!(hosts.len(), 1, "one Host");
    let host = String::from_utf8_lossy(&hosts[0]).into_owned();
    let judged = canonical_host(&target.host);
    assert!(
        host == format!("{judged}:{}", target.port)
            || host == format!("[{judged}]:{}", target.port),
        "Host {host:?} is not the judged {judged:?}"
    );
    let lengths = named("content-length");
    match target.body {
        Some(n) => assert_eq!(lengths, vec![n.to_string().into_bytes()]),
        None => assert!(lengths.is_empty(), "a Content-Length the proxy did not judge"),
    }
    for banned in [
        "transfer-encoding",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
        "te",
        "keep-alive",
    ] {
        assert!(named(banned).is_empty(), "{banned} forwarded");
    }
});
