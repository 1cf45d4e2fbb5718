//! The protocol decoder on both sides: frames from a hostile worker
//! (`FromWorker`, read by the supervisor) and from a confused supervisor
//! (`ToWorker`, read by the worker). Any bytes decode or fail cleanly, and
//! whatever decodes encodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbiont_slm_protocol::{decode, encode, read_message, FromWorker, ToWorker};

fuzz_target!(|data: &[u8]| {
    // As a payload.
    if let Ok(m) = decode::<FromWorker>(data) {
        let again: FromWorker = decode(&encode(&m).unwrap()[4..]).unwrap();
        assert_eq!(again, m);
    }
    if let Ok(m) = decode::<ToWorker>(data) {
        let again: ToWorker = decode(&encode(&m).unwrap()[4..]).unwrap();
        assert_eq!(again, m);
    }
    // As a stream of frames (length prefixes included).
    let mut r = data;
    while read_message::<_, FromWorker>(&mut r).is_ok() {}
    let mut r = data;
    while read_message::<_, ToWorker>(&mut r).is_ok() {}
});
