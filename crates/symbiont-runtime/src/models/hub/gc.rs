//! Freeing the Hugging Face cache without breaking another tool's files:
//! a blob goes only when no snapshot of its repository links to it
//! (whoever made the link), and only under its `.locks` lock, so that a
//! pull between its rename and its link (which holds that lock, here and
//! in `huggingface_hub`) never loses its blob. A snapshot folder left empty
//! goes with the refs that name it (`huggingface_hub`'s `scan_cache_dir`
//! refuses a ref to a missing snapshot).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{HfCache, HubError, HubModel};
use crate::config::provider::is_commit;

/// What a collection removed, or would remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Blobs (and abandoned `.incomplete` files) removed, with their sizes.
    pub removed: Vec<(PathBuf, u64)>,
    /// Snapshot links removed.
    pub unlinked: Vec<PathBuf>,
    /// `.incomplete` files kept (resumable), with their sizes.
    pub incomplete: Vec<(PathBuf, u64)>,
    /// Blobs skipped because a pull holds their lock.
    pub busy: Vec<PathBuf>,
}

impl Collected {
    /// Bytes freed.
    pub fn freed(&self) -> u64 {
        self.removed.iter().map(|r| r.1).sum()
    }
}

/// Every etag a snapshot of the repository at `dir` links to, but for the
/// links in `except`.
fn linked(dir: &Path, except: &[PathBuf]) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stack = vec![dir.join("snapshots")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_symlink() && !except.contains(&e.path()) => {
                    if let Some(name) = fs::read_link(e.path())
                        .ok()
                        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                    {
                        out.insert(name);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Removes snapshot folders with no file left, and the refs naming them.
fn prune_snapshots(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir.join("snapshots")) else {
        return;
    };
    let mut gone = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let dir = e.file_type().is_ok_and(|t| t.is_dir());
        if dir && is_empty_tree(&p) && fs::remove_dir_all(&p).is_ok() {
            gone.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    if gone.is_empty() {
        return;
    }
    let refs = dir.join("refs");
    let mut stack = vec![refs];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                // Links are not followed: a ref is a file in `refs`.
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    let names_gone = fs::metadata(&p).is_ok_and(|m| m.len() <= 128)
                        && fs::read_to_string(&p).is_ok_and(|c| gone.iter().any(|g| g == c.trim()));
                    if names_gone {
                        let _ = fs::remove_file(&p);
                    }
                }
                _ => {}
            }
        }
    }
}

fn is_empty_tree(d: &Path) -> bool {
    match fs::read_dir(d) {
        Ok(mut it) => it.all(|e| {
            e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir()) && is_empty_tree(&e.path()))
        }),
        Err(_) => false,
    }
}

/// Collects one repository's folder: blobs no snapshot links to; with
/// `incomplete`, `.incomplete` files no pull holds the lock of.
fn collect_repo(cache: &HfCache, dir: &Path, dry_run: bool, incomplete: bool, out: &mut Collected) {
    let Some(folder) = dir.file_name().map(|f| f.to_string_lossy().into_owned()) else {
        return;
    };
    if !dry_run {
        prune_snapshots(dir);
    }
    let keep = linked(dir, &[]);
    // A `blobs` that is a link is not followed.
    if !fs::symlink_metadata(dir.join("blobs")).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(entries) = fs::read_dir(dir.join("blobs")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (etag, partial) = match name.strip_suffix(".incomplete") {
            // huggingface_hub names its own `<etag>.<uuid8>.incomplete`.
            Some(stem) => (stem.split('.').next().unwrap_or(stem).to_string(), true),
            None => (name.clone(), false),
        };
        if !partial && keep.contains(&etag) {
            continue;
        }
        let lock_path = cache
            .root()
            .join(".locks")
            .join(&folder)
            .join(format!("{etag}.lock"));
        // Held by a pull: its blob may be about to be linked, its
        // `.incomplete` is growing.
        // Made when missing (as a pull makes it), never through a link:
        // a pull that comes now waits for this collection.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = fs::create_dir_all(lock_path.parent().unwrap_or(cache.root()));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o664)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&lock_path)
            .map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock));
        let _held = match lock {
            Ok(Ok(held)) => held,
            _ => {
                out.busy.push(path);
                continue;
            }
        };
        if partial && !incomplete {
            out.incomplete.push((path, size));
            continue;
        }
        // Looked at again under the lock: a link made meanwhile keeps it.
        if !partial && linked(dir, &[]).contains(&etag) {
            continue;
        }
        if dry_run || fs::remove_file(&path).is_ok() {
            out.removed.push((path, size));
        }
    }
}

/// Collects the whole cache (every repository, whichever tool pulled it).
pub fn collect(cache: &HfCache, dry_run: bool, incomplete: bool) -> Result<Collected, HubError> {
    let mut out = Collected::default();
    let entries = match fs::read_dir(cache.root()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(HubError::io(cache.root())(e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("models--") && e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_repo(cache, &e.path(), dry_run, incomplete, &mut out);
        }
    }
    Ok(out)
}

/// Removes `model`'s files from the cache: its links in every snapshot
/// of the repository (each commit a pull of it made), then the blobs that
/// nothing links to any more. Other files of the repository, whoever
/// pulled them, stay.
pub fn remove(cache: &HfCache, model: &HubModel, dry_run: bool) -> Result<Collected, HubError> {
    let dir = cache.repo_dir(&model.repo);
    let mut links = Vec::new();
    let mut blobs = Vec::new();
    if let Ok(entries) = fs::read_dir(dir.join("snapshots")) {
        for e in entries.flatten() {
            let commit = e.file_name().to_string_lossy().into_owned();
            if !is_commit(&commit) {
                continue;
            }
            let files = cache.snapshot_files(&model.repo, &commit);
            if let Ok(chosen) = super::select(&files, &model.file) {
                for f in &chosen.files {
                    links.push(cache.snapshot_file(&model.repo, &commit, f));
                    if let Some((b, _)) = cache.blob_of(&model.repo, &commit, f) {
                        blobs.push(b);
                    }
                }
            }
        }
    }
    if links.is_empty() {
        return Err(HubError::Missing {
            model: model.id.clone(),
            what: model.describe(),
            cache: cache.root().to_path_buf(),
        });
    }
    let mut out = Collected::default();
    if dry_run {
        let keep = linked(&dir, &links);
        for b in blobs {
            let etag = b.file_name().map(|n| n.to_string_lossy().into_owned());
            if etag.is_some_and(|e| !keep.contains(&e)) && !out.removed.iter().any(|r| r.0 == b) {
                let size = fs::metadata(&b).map(|m| m.len()).unwrap_or(0);
                out.removed.push((b, size));
            }
        }
        out.unlinked = links;
        return Ok(out);
    }
    for l in links {
        if fs::remove_file(&l).is_ok() {
            out.unlinked.push(l);
        }
    }
    let mut rest = Collected::default();
    collect_repo(cache, &dir, false, false, &mut rest);
    out.removed = rest.removed;
    out.busy = rest.busy;
    out.incomplete = rest.incomplete;
    Ok(out)
}
