//! A Hugging Face hub's repository listing (`/api/models/{repo}/revision/
//! {rev}?blobs=true`), then the choice of a model's files in it: never
//! panics. Oracles: a listing that parses has a 40-digit commit, only
//! names that stay inside a snapshot folder, only SHA-256 LFS digests in
//! lowercase; every file chosen is one of the listing's, and a split
//! model's parts come whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbiont_runtime::config::provider::{is_commit, is_repo_file, is_sha256, HubFile};
use symbiont_runtime::models::hub::{select, RepoInfo};

fuzz_target!(|data: &[u8]| {
    let Ok(info) = RepoInfo::parse(data) else {
        return;
    };
    assert!(is_commit(&info.sha));
    let names: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    for s in &info.siblings {
        assert!(is_repo_file(&s.rfilename), "{:?}", s.rfilename);
        assert!(!s.rfilename.starts_with('/'));
        assert!(s.rfilename.split('/').all(|p| p != ".." && p != "."));
        if let Some(l) = &s.lfs {
            assert!(is_sha256(&l.sha256) && l.sha256 == l.sha256.to_ascii_lowercase());
        }
    }
    let mut specs = vec![HubFile::Any, HubFile::Quant("Q4_K_M".into())];
    if let Some(n) = names.first() {
        specs.push(HubFile::Name(n.clone()));
        if let Some(q) = HubFile::parse(n.rsplit(['-', '.']).nth(1)) {
            specs.push(q);
        }
    }
    for spec in &specs {
        if let Ok(chosen) = select(&names, spec) {
            assert!(!chosen.files.is_empty());
            assert!(chosen.files.iter().all(|f| names.contains(f)));
        }
    }
});
