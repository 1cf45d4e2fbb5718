//! The supervisor's GGUF header check (`models::gguf`), which reads model
//! files before any worker does: any bytes give a summary or an error,
//! never a panic, a hang or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbiont_runtime::models::gguf;

fuzz_target!(|data: &[u8]| {
    // The header as a whole file, and as the start of a bigger one (the
    // size the file claims decides where tensor data may lie).
    let _ = gguf::summarize(data, data.len() as u64);
    if let Some((&extra, rest)) = data.split_last() {
        let claimed = rest.len() as u64 + (u64::from(extra) << 24);
        if let Ok(s) = gguf::summarize(rest, claimed) {
            assert_eq!(s.file_size, claimed);
        }
    }
});
