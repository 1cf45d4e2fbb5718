//! A model file's SHA-256 against the pin of its config entry
//! (`LocalFile = { file_path, sha256 }`), computed once per version of the
//! file.
//!
//! The digest is of the very descriptor the worker is handed (read with
//! `pread`, its offset untouched), as the file is when each worker starts.
//! The worker maps the file shared, so a pinned file must be writable by
//! no one but its owner, root or this user: no one else can change a
//! running worker's weights after the check.
//!
//! A file's version is known by this boot, its mount, device, inode,
//! size, mtime and ctime: its digest is kept under that key in a cache
//! directory only this user can write (`$XDG_CACHE_HOME/symbiont/digests`,
//! else `~/.cache/symbiont/digests`, mode 0700, one 0600 file per key;
//! every directory above it root's or this user's), so a later start costs
//! a `stat` and a small read. A write through the file system changes its
//! ctime, which the kernel keeps: a changed file is hashed again and
//! refused, with both digests named. Only on local file systems whose
//! times the kernel keeps (ext4, xfs, btrfs, f2fs, tmpfs, overlay) is a
//! cached digest trusted; elsewhere (FUSE, NFS, a stick prepared
//! elsewhere) the file is hashed at every start, as it is when the cache
//! is not this user's alone.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// The cache directory of digests: `$XDG_CACHE_HOME` (absolute) or
/// `~/.cache`, then `symbiont/digests`.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
                .filter(|p| p.is_absolute())
        })?;
    Some(resolved(&base).join("symbiont").join("digests"))
}

/// `base` with its symbolic links resolved when each link on the way is
/// root's or this user's (systemd's `CacheDirectory=` under `DynamicUser=`
/// is a link of root's to `/var/cache/private/…`); as it is otherwise,
/// for [`safe_path`] to judge.
fn resolved(base: &Path) -> PathBuf {
    let me = nix::unistd::geteuid().as_raw();
    let links_ok = base
        .ancestors()
        .all(|d| match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() => m.uid() == 0 || m.uid() == me,
            _ => true,
        });
    match std::fs::canonicalize(base) {
        Ok(real) if links_ok => real,
        _ => base.to_path_buf(),
    }
}

/// Whether `meta` is this user's alone to write (owner us, no group or
/// world write).
fn ours(meta: &std::fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

/// Whether no one but this user and root can change what `dir` names: it
/// and every directory above it owned by one of them and not writable by
/// others (a sticky directory of root's, such as `/tmp`, may be: no one
/// renames another's entry there).
fn safe_path(dir: &Path) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    dir.ancestors().all(|d| match std::fs::symlink_metadata(d) {
        Ok(m) if m.is_dir() => {
            let owner_ok = m.uid() == me || m.uid() == 0;
            let sticky_root = m.uid() == 0 && m.mode() & 0o1000 != 0;
            owner_ok && (m.mode() & 0o022 == 0 || sticky_root)
        }
        _ => false,
    })
}

/// Filesystems whose inode times the kernel keeps (no server or image
/// reports them): only on these is a cached digest trusted.
const LOCAL_FILESYSTEMS: &[&str] = &[
    "ext4", "ext3", "ext2", "xfs", "btrfs", "f2fs", "tmpfs", "overlay",
];

/// The mount id and filesystem type of an open file (`/proc`), if known.
fn mount_of(file: &File) -> Option<(u64, String)> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).ok()?;
    let id: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))?
        .trim()
        .parse()
        .ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let fstype = mounts.lines().find_map(|l| {
        let mut fields = l.split(' ');
        (fields.next()?.parse::<u64>().ok()? == id)
            .then(|| l.split(" - ").nth(1)?.split(' ').next().map(str::to_string))
            .flatten()
    })?;
    Some((id, fstype))
}

/// The cache key of `file`'s version, or `None` when a cached digest of
/// it could not be trusted (a filesystem whose times someone else
/// reports, an unknown mount): this boot, its mount, device, inode, size,
/// mtime and ctime.
fn version_key(file: &File, m: &std::fs::Metadata) -> Option<String> {
    let (mount, fstype) = mount_of(file)?;
    if !LOCAL_FILESYSTEMS.contains(&fstype.as_str()) {
        return None;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(format!(
        "{}-{mount}-{}-{}-{}-{}.{}-{}.{}",
        boot.trim(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The digest of `file`, from the cache when its version is there, else
/// computed (and kept, when the cache is this user's alone).
pub fn digest_of(file: &File) -> std::io::Result<String> {
    digest_with(file, cache_dir().as_deref(), false)
}

/// The digest of `file`, computed from every byte whatever the cache
/// holds, and kept for its version (`models verify`: bytes that changed
/// under an unchanged version, bit rot, say, are caught and the cache
/// corrected).
pub fn rehash(file: &File) -> std::io::Result<String> {
    digest_with(file, cache_dir().as_deref(), true)
}

fn digest_with(file: &File, dir: Option<&Path>, fresh: bool) -> std::io::Result<String> {
    let m = file.metadata()?;
    let key = version_key(file, &m);
    let trusted = dir.filter(|d| {
        if !d.exists() {
            let _ = std::fs::create_dir_all(d);
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        }
        let ok = std::fs::symlink_metadata(d).is_ok_and(|meta| meta.is_dir() && ours(&meta))
            && safe_path(d);
        if !ok {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "the digest cache {} is not this user's alone (or cannot be made): pinned model files are hashed at every worker start",
                    d.display()
                )
            });
        }
        ok
    });
    if let (Some(d), Some(key), false) = (trusted, &key, fresh) {
        let entry = d.join(key);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&entry)
        {
            let mut hex = String::new();
            use std::io::Read;
            if f.metadata().is_ok_and(|meta| meta.is_file() && ours(&meta))
                && f.read_to_string(&mut hex).is_ok()
                && hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Ok(hex);
            }
        }
    }
    let hex = sha256_hex(file)?;
    if let (Some(d), Some(key)) = (trusted, &key) {
        // Written whole, then renamed: a reader sees all of it or none.
        if let Ok(mut tmp) = tempfile::Builder::new().prefix(".part-").tempfile_in(d) {
            if tmp.write_all(hex.as_bytes()).is_ok() {
                let _ = tmp.persist(d.join(key));
            }
        }
    }
    Ok(hex)
}

/// Checks `file` against the config's pin `expected` (64 hex digits): an
/// `InvalidModelFile` naming both digests when they differ.
pub fn check_pin(file: &File, path: &Path, expected: &str) -> Result<(), SlmRunnerError> {
    // The worker maps the file shared: whoever may write it could change
    // a running model's weights after the check. A pinned file is
    // writable by its owner alone, and that owner is root or this user.
    let meta = file
        .metadata()
        .map_err(|e| SlmRunnerError::InvalidModelFile {
            path: path.to_path_buf(),
            reason: format!("cannot stat: {e}"),
        })?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.mode() & 0o022 != 0 || (meta.uid() != me && meta.uid() != 0) {
        return Err(SlmRunnerError::InvalidModelFile {
            path: path.to_path_buf(),
            reason: format!(
                "it is pinned, but others could change its bytes under a running worker (owner uid {}, mode {:o}): make it owned by root or this user (uid {me}) and not writable by group or others (chmod go-w)",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        });
    }
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

    #[test]
    fn a_cache_dir_behind_a_link_of_ours_is_its_target() {
        // systemd's CacheDirectory= under DynamicUser= is such a link.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("private/cache");
        std::fs::create_dir_all(&real).unwrap();
        let link = dir.path().join("cache");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(resolved(&link), std::fs::canonicalize(&real).unwrap());
        assert!(safe_path(&resolved(&link)) || !safe_path(dir.path()));
    }

    fn hex_of(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The digest of known bytes; the cache is read for the same version
    /// of a file (a planted entry shows it), never for a changed one (same
    /// size), nor when the cache directory is not this user's alone.
    #[test]
    fn digests_follow_the_file_s_versions_and_a_cache_of_ours_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("digests");
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"abc").unwrap();
        let f = File::open(&path).unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(&f).unwrap(), abc);
        assert_eq!(digest_with(&f, Some(&cache), false).unwrap(), abc);
        let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        // A planted digest for this version is what comes back: the cache
        // is read (so a later start does not hash again).
        let planted = "0".repeat(64);
        std::fs::write(entries[0].path(), &planted).unwrap();
        assert_eq!(digest_with(&f, Some(&cache), false).unwrap(), planted);
        // A fresh hash (`models verify`) reads every byte and corrects it.
        assert_eq!(digest_with(&f, Some(&cache), true).unwrap(), abc);
        assert_eq!(digest_with(&f, Some(&cache), false).unwrap(), abc);
        std::fs::write(entries[0].path(), &planted).unwrap();
        // Not ours alone: not trusted.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(digest_with(&f, Some(&cache), false).unwrap(), abc);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A new version, same size: hashed, whatever the cache holds.
        std::fs::write(&path, b"abd").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            digest_with(&f, Some(&cache), false).unwrap(),
            hex_of(b"abd")
        );
        let err = check_pin(&f, &path, abc).unwrap_err().to_string();
        assert!(err.contains(abc) && err.contains(&hex_of(b"abd")), "{err}");
        // A pinned file others may write is refused, whatever its bytes.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let f = File::open(&path).unwrap();
        let err = check_pin(&f, &path, &hex_of(b"abd"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod go-w"), "{err}");
    }
}
