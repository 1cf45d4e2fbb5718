//! The config loader (TOML, the raw layer, validation, error locations)
//! and the catalog built from a valid config: any text gives a config or a
//! list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbiont_runtime::config::Slm;
use symbiont_runtime::models::ModelCatalog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Slm::from_toml_str(text) {
        Ok(slm) => {
            // A valid config validates again and builds a catalog.
            slm.validate().expect("a loaded config is valid");
            let _ = ModelCatalog::new(slm);
        }
        Err(e) => {
            // Every error renders (with its locations) without panicking.
            let _ = e.to_string();
        }
    }
});
