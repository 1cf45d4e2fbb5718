//! A Hugging Face hub on loopback that speaks the real protocol, serving
//! local files, for trying `symbi-slm models pull` (and `huggingface_hub`)
//! where no hub is reachable:
//!
//! ```sh
//! cargo run -p symbiont-runtime --features test-hub --example loopback_hub -- \
//!     HuggingFaceTB/SmolLM2-135M-Instruct-GGUF=~/.cache/symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf
//! # prints HF_ENDPOINT=http://127.0.0.1:PORT; serves until stopped
//! ```
//!
//! Each argument is `org/repo=FILE` (the file is published under its own
//! name on the repository's `main`).

use std::sync::Arc;

use symbiont_runtime::models::hub::loopback::LoopbackHub;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = LoopbackHub::spawn()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        return Err("usage: loopback_hub org/repo=FILE.gguf ...".into());
    }
    for a in args {
        let (repo, path) = a
            .split_once('=')
            .ok_or_else(|| format!("`{a}`: expected org/repo=FILE"))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let name = std::path::Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{path}: no file name"))?
            .to_string();
        let commit = hub.publish(repo, "main", vec![(name.clone(), Arc::new(bytes))]);
        eprintln!("{repo}: {name} at commit {commit}");
    }
    println!("HF_ENDPOINT={}", hub.endpoint);
    loop {
        std::thread::park();
    }
}
