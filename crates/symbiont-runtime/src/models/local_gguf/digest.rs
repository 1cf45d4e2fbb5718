//! A model file's SHA-256 against the pin of its config entry
//! (`LocalFile = { file_path, sha256 }`), computed once per version of the
//! file.
//!
//! The digest is of the very descriptor the worker is handed (read with
//! `pread`, its offset untouched), so the bytes checked are the bytes
//! loaded. A file is known by (device, inode, size, mtime, ctime): its
//! digest is kept under that key in a cache directory only this user can
//! write (`$XDG_CACHE_HOME/symbiont/digests`, else
//! `~/.cache/symbiont/digests`, mode 0700, one 0600 file per key), so a
//! later start costs a `stat` and a small read. Any write to the file
//! changes its ctime, which no user can set back: a changed file is
//! hashed again and refused, with both digests named. A cache that is
//! not this user's alone (owner, group or world write) is not trusted:
//! the file is hashed each time.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::models::SlmRunnerError;

/// The SHA-256 of `file`'s whole content, as lowercase hex (read from
/// offset 0 with `pread`, 1 MiB at a time).
pub fn sha256_hex(file: &File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The cache directory of digests.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("symbiont").join("digests"))
}

/// Whether `path` is this user's alone to write (owner us, no group or
/// world write).
fn ours(meta: &std::fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

/// The digest of `file` (its version, by device, inode, size, mtime and
/// ctime), from the cache or computed and kept there.
pub fn digest_of(file: &File) -> std::io::Result<String> {
    let m = file.metadata()?;
    let key = format!(
        "{}-{}-{}-{}.{}-{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    );
    let dir = cache_dir();
    let trusted = dir.as_ref().filter(|d| {
        if !d.exists() {
            let _ = std::fs::create_dir_all(d);
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        }
        std::fs::symlink_metadata(d).is_ok_and(|meta| meta.is_dir() && ours(&meta))
    });
    if let Some(d) = trusted {
        let entry = d.join(&key);
        if let Ok(meta) = std::fs::symlink_metadata(&entry) {
            if meta.is_file() && ours(&meta) && meta.len() == 64 {
                if let Ok(hex) = std::fs::read_to_string(&entry) {
                    if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Ok(hex);
                    }
                }
            }
        }
    }
    let hex = sha256_hex(file)?;
    if let Some(d) = trusted {
        // Written whole, then renamed: a reader sees all of it or none.
        if let Ok(mut tmp) = tempfile::Builder::new().prefix(".part-").tempfile_in(d) {
            if tmp.write_all(hex.as_bytes()).is_ok() {
                let _ = tmp.persist(d.join(&key));
            }
        }
    }
    Ok(hex)
}

/// Checks `file` against the config's pin `expected` (64 hex digits): an
/// `InvalidModelFile` naming both digests when they differ.
pub fn check_pin(file: &File, path: &Path, expected: &str) -> Result<(), SlmRunnerError> {
    let actual = digest_of(file).map_err(|e| SlmRunnerError::InvalidModelFile {
        path: path.to_path_buf(),
        reason: format!("cannot read it to check its SHA-256: {e}"),
    })?;
    if actual.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(SlmRunnerError::InvalidModelFile {
        path: path.to_path_buf(),
        reason: format!(
            "its SHA-256 is {actual}, but the config pins sha256 = \"{}\": these are not the bytes the config names (a changed or swapped file); put the pinned file back, or pin the new one if it is trusted",
            expected.to_ascii_lowercase()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of known bytes; a change (same size) is a new version,
    /// hashed again; a cache entry this user does not own alone is not
    /// trusted.
    #[test]
    fn digests_are_of_the_bytes_and_follow_their_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"abc").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            sha256_hex(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&path, b"abd").unwrap();
        let f = File::open(&path).unwrap();
        let err = check_pin(
            &f,
            &path,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ba7816bf8f01cfea") && err.contains(&sha256_hex(&f).unwrap()),
            "{err}"
        );
    }
}
