//! A remote endpoint's server-sent events (OpenAI, Anthropic, Custom):
//! split into events, never panics. Oracle: the events do not depend on
//! how the bytes were cut into reads (the input cut at every 0xff, against
//! the same bytes in one read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbiont_runtime::models::SseParser;

fuzz_target!(|data: &[u8]| {
    let whole: Vec<u8> = data.iter().copied().filter(|&b| b != 0xff).collect();
    let mut one = SseParser::default();
    let at_once = one.feed(&whole);
    let mut cut = SseParser::default();
    let mut pieces = Vec::new();
    let mut failed = false;
    for part in data.split(|&b| b == 0xff) {
        match cut.feed(part) {
            Ok(events) => pieces.extend(events),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    // Too long an event fails either way (perhaps at another read).
    match at_once {
        Ok(events) if !failed => assert_eq!(events, pieces),
        _ => {}
    }
});
