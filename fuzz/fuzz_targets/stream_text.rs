//! Streaming a token's bytes as text: whole UTF-8 characters only, and stop
//! sequences held back and cut. Checked against the whole text at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbi_slm_worker::text::{Matched, StopMatcher, Utf8Stream};

fuzz_target!(|data: &[u8]| {
    // stops (up to 3, split by 0xff) | 0xfe | the token bytes, cut into
    // pieces at every 0xfd.
    let (head, body) = match data.iter().position(|&b| b == 0xfe) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let stops: Vec<String> = head
        .split(|&b| b == 0xff)
        .take(3)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();

    // 1. UTF-8: the pieces' text is the whole text, decoded at once.
    let mut utf8 = Utf8Stream::default();
    let mut pieces = Vec::new();
    for chunk in body.split(|&b| b == 0xfd) {
        pieces.push(utf8.push(chunk));
    }
    pieces.push(utf8.finish());
    let whole: Vec<u8> = body.iter().copied().filter(|&b| b != 0xfd).collect();
    let expected = String::from_utf8_lossy(&whole);
    assert_eq!(pieces.concat(), expected);

    // 2. Stops: what is emitted never contains a stop sequence; without a
    // match everything comes out; with one, the text emitted is followed
    // by that stop in the whole text.
    let mut m = StopMatcher::new(&stops);
    let mut emitted = String::new();
    let mut matched = None;
    let mut pushed = String::new();
    for piece in &pieces {
        pushed.push_str(piece);
        match m.push(piece) {
            Matched::Continue(t) => emitted.push_str(&t),
            Matched::Stop { text, stop, rest } => {
                emitted.push_str(&text);
                // Nothing lost: the text, the stop and what followed it
                // are what was pushed.
                assert_eq!(format!("{emitted}{stop}{rest}"), pushed);
                matched = Some(stop);
                break;
            }
        }
    }
    let live: Vec<&String> = stops.iter().filter(|s| !s.is_empty()).collect();
    for s in &live {
        assert!(!emitted.contains(s.as_str()), "emitted a stop sequence");
    }
    match matched {
        None => {
            emitted.push_str(&m.finish());
            assert_eq!(emitted, expected);
        }
        Some(stop) => {
            assert!(live.contains(&&stop));
            assert!(expected[emitted.len()..].starts_with(&stop));
            assert!(expected.starts_with(&emitted));
        }
    }
});
