//! Denied paths inside allowed ones. Landlock only adds rights to a
//! hierarchy: a rule for `/data` covers `/data/secrets`. So, at plan time,
//! an allowed directory that holds a denied path is replaced by rules for
//! its other entries, and so on down the way to the denied path: every
//! entry off the way keeps the allowed right, the denied subtree gets none,
//! and the directories on the way get no rule of their own (a right on
//! them would reach into the denied subtree again).
//!
//! Entries are matched by file (device and inode) as well as by name, so a
//! name that differs only in case on a case-folding file system, or a
//! bind mount of the denied directory among the entries, is still the
//! denied one. What this cannot cover, and so refuses or leaves out:
//! - an allowed path inside a denied one is refused (the operator's
//!   `--read /etc/x` under a denied `/etc`);
//! - a symlink among the entries gets no rule (Landlock follows it, so a
//!   rule would reach its target, which may be the denied path; a target
//!   elsewhere keeps the rules it has);
//! - a mount point on the way, or a mount inside any allowed path that
//!   shows a denied path's file system (a bind mount could show the denied
//!   subtree under another name), is refused;
//! - a denied subtree holding a file with more than one link, or that
//!   cannot be read whole, is refused (the other name may be among the
//!   allowed entries; Landlock follows names, not files);
//! - entries created later directly in a directory on the way, listing a
//!   directory on the way, and creating entries in it are refused (no rule
//!   covers them).

use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::models::SlmRunnerError;

/// Most rules one plan gets from expanding allowed directories.
pub const MAX_EXPANDED_ENTRIES: usize = 1024;
/// Most entries of a denied subtree checked for other links.
pub const MAX_DENIED_ENTRIES: usize = 10_000;

fn refused(detail: String) -> SlmRunnerError {
    SlmRunnerError::SandboxViolation {
        control: "filesystem.denied_paths".into(),
        detail,
    }
}

/// A file, as the kernel tells files apart.
type FileId = (u64, u64);

/// What expanding has made so far for one plan: how many rules, and the
/// file each entry is (`SandboxPlan::pinned`).
#[derive(Debug, Default)]
pub struct Expansion {
    /// Rules made (see [`MAX_EXPANDED_ENTRIES`]).
    pub count: usize,
    /// Each entry made, with its device and inode.
    pub pinned: Vec<(PathBuf, u64, u64)>,
}

fn file_id(m: &std::fs::Metadata) -> FileId {
    (m.dev(), m.ino())
}

/// The denied paths, by name and, where they exist, by file, with the
/// files of their ancestors (the directories on the way).
struct Denied<'a> {
    names: &'a [PathBuf],
    files: Vec<FileId>,
    ways: Vec<FileId>,
}

impl<'a> Denied<'a> {
    fn new(names: &'a [PathBuf]) -> Self {
        let mut files = Vec::new();
        let mut ways = Vec::new();
        for d in names {
            if let Ok(m) = std::fs::metadata(d) {
                files.push(file_id(&m));
            }
            for a in d.ancestors().skip(1) {
                if let Ok(m) = std::fs::metadata(a) {
                    ways.push(file_id(&m));
                }
            }
        }
        Self { names, files, ways }
    }

    fn is_denied(&self, path: &Path, m: &std::fs::Metadata) -> bool {
        self.names.iter().any(|d| d == path) || self.files.contains(&file_id(m))
    }

    fn on_the_way(&self, path: &Path, m: &std::fs::Metadata) -> bool {
        self.names.iter().any(|d| d.starts_with(path)) || self.ways.contains(&file_id(m))
    }
}

/// `allowed` (canonical paths) with each directory that holds one of
/// `denied` (canonical) replaced by its entries off the way to it. An
/// allowed path that is, or lies inside, a denied one is refused, and so
/// is a mount inside an allowed path that shows a denied path's file
/// system. `expanded` keeps the rules made across calls for one plan.
pub fn expand(
    allowed: Vec<PathBuf>,
    denied: &[PathBuf],
    expanded: &mut Expansion,
) -> Result<Vec<PathBuf>, SlmRunnerError> {
    if denied.is_empty() {
        return Ok(allowed);
    }
    let d = Denied::new(denied);
    let mut out = Vec::new();
    for a in allowed {
        if let Some(x) = denied.iter().find(|x| a.starts_with(x)) {
            return Err(refused(format!(
                "the allowed path {} lies inside the denied path {}",
                a.display(),
                x.display()
            )));
        }
        let meta = std::fs::metadata(&a).map_err(|e| refused(format!("{}: {e}", a.display())))?;
        if d.is_denied(&a, &meta) {
            return Err(refused(format!(
                "the allowed path {} is a denied path under another name",
                a.display()
            )));
        }
        if !d.on_the_way(&a, &meta) {
            expanded.pinned.push((a.clone(), meta.dev(), meta.ino()));
            out.push(a);
            continue;
        }
        walk(&a, meta.dev(), &d, &mut out, expanded)?;
    }
    no_mount_shows_a_denied_file_system(&out, denied)?;
    Ok(out)
}

/// The entries of `dir`, a directory on the way to a denied path.
fn walk(
    dir: &Path,
    device: u64,
    denied: &Denied<'_>,
    out: &mut Vec<PathBuf>,
    expanded: &mut Expansion,
) -> Result<(), SlmRunnerError> {
    let read = |e: std::io::Error| refused(format!("listing {}: {e}", dir.display()));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if denied.is_denied(&path, &meta) {
            no_other_links(&path, &meta)?;
            continue;
        }
        if meta.is_dir() && denied.on_the_way(&path, &meta) {
            if meta.dev() != device {
                return Err(refused(format!(
                    "{} is a mount point on the way to a denied path: the other file system's entries cannot be told apart from the denied ones",
                    path.display()
                )));
            }
            walk(&path, device, denied, out, expanded)?;
            continue;
        }
        expanded.count += 1;
        if expanded.count > MAX_EXPANDED_ENTRIES {
            return Err(refused(format!(
                "denying a path inside an allowed one takes a rule per entry beside the way to it: more than {MAX_EXPANDED_ENTRIES} here (in {}); allow narrower paths",
                dir.display()
            )));
        }
        expanded.pinned.push((path.clone(), meta.dev(), meta.ino()));
        out.push(path);
    }
    Ok(())
}

/// Refuses a mount inside an allowed path (`/proc/self/mountinfo`) whose
/// file system is one a denied path lies on: a bind mount would show the
/// denied subtree under another name.
fn no_mount_shows_a_denied_file_system(
    allowed: &[PathBuf],
    denied: &[PathBuf],
) -> Result<(), SlmRunnerError> {
    let devices: Vec<u64> = denied
        .iter()
        .filter_map(|d| d.ancestors().find_map(|a| std::fs::metadata(a).ok()))
        .map(|m| m.dev())
        .collect();
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Err(refused(
            "cannot read /proc/self/mountinfo to check for mounts inside the allowed paths".into(),
        ));
    };
    for line in table.lines() {
        let Some(point) = line.split(' ').nth(4).map(unescape_mount_path) else {
            continue;
        };
        let point = PathBuf::from(std::ffi::OsString::from_vec(point));
        // At an allowed path too: a bind mount of part of the denied
        // subtree onto an entry would carry the entry's rule.
        let Some(a) = allowed.iter().find(|a| point.starts_with(a)) else {
            continue;
        };
        let shown = std::fs::metadata(&point).map(|m| m.dev()).map_err(|e| {
            refused(format!(
                "{}, a mount inside the allowed path {}, cannot be checked: {e}",
                point.display(),
                a.display()
            ))
        })?;
        if devices.contains(&shown) {
            return Err(refused(format!(
                "{} is a mount inside the allowed path {} that shows the file system of a denied path (a bind mount could show the denied subtree under another name)",
                point.display(),
                a.display()
            )));
        }
    }
    Ok(())
}

/// A mount point as mountinfo writes it: space, tab, newline and backslash
/// as octal escapes.
fn unescape_mount_path(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(byte) = octal {
            out.push(byte);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Refuses a denied subtree holding a file (anything but a directory)
/// with another link, or that cannot be read whole.
fn no_other_links(top: &Path, meta: &std::fs::Metadata) -> Result<(), SlmRunnerError> {
    let linked = |p: &Path| {
        refused(format!(
            "the denied file {} has another link, which Landlock would not deny (it follows names); remove the link or deny its directory too",
            p.display()
        ))
    };
    if !meta.is_dir() {
        return if meta.nlink() > 1 {
            Err(linked(top))
        } else {
            Ok(())
        };
    }
    let unreadable = |p: &Path, e: std::io::Error| {
        refused(format!(
            "{} in the denied path cannot be checked for files with other links: {e}",
            p.display()
        ))
    };
    let mut todo = vec![top.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| unreadable(&dir, e))? {
            let e = e.map_err(|e| unreadable(&dir, e))?;
            seen += 1;
            if seen > MAX_DENIED_ENTRIES {
                return Err(refused(format!(
                    "{} holds more than {MAX_DENIED_ENTRIES} entries to check for other links; deny a smaller path or allow narrower ones",
                    top.display()
                )));
            }
            let path = e.path();
            let m = std::fs::symlink_metadata(&path).map_err(|e| unreadable(&path, e))?;
            if m.is_dir() {
                todo.push(path);
            } else if m.nlink() > 1 {
                return Err(linked(&path));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for dir in ["data/secrets/deep", "data/public", "data/more/inner"] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
        }
        for f in [
            "data/a.txt",
            "data/secrets/key",
            "data/secrets/deep/k2",
            "data/more/b.txt",
            "data/more/inner/c.txt",
        ] {
            std::fs::write(d.join(f), f).unwrap();
        }
        t
    }

    fn canon(p: PathBuf) -> PathBuf {
        std::fs::canonicalize(p).unwrap()
    }

    #[test]
    fn an_allowed_directory_is_replaced_by_its_entries_off_the_way() {
        let t = tree();
        let data = canon(t.path().join("data"));
        let secrets = data.join("secrets");
        std::os::unix::fs::symlink(&secrets, data.join("link")).unwrap();
        let mut n = Expansion::default();
        let out = expand(vec![data.clone()], &[secrets.join("deep")], &mut n).unwrap();
        let names: Vec<_> = out
            .iter()
            .map(|p| p.strip_prefix(&data).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            ["a.txt", "more", "public", "secrets/key"].map(PathBuf::from),
            "the symlink gets no rule; the way (data, secrets) none either"
        );
        assert_eq!(n.count, 4);
        assert_eq!(n.pinned.len(), 4);
        // Nothing denied inside: the path itself.
        let more = data.join("more");
        assert_eq!(
            expand(vec![more.clone()], std::slice::from_ref(&secrets), &mut n).unwrap(),
            [more]
        );
        // The denied path itself is refused.
        assert!(expand(
            vec![secrets.clone()],
            std::slice::from_ref(&secrets),
            &mut n
        )
        .is_err());
    }

    #[test]
    fn a_denied_file_with_another_link_is_refused() {
        let t = tree();
        let data = canon(t.path().join("data"));
        let secrets = data.join("secrets");
        std::fs::hard_link(secrets.join("key"), data.join("public/key-again")).unwrap();
        let e = expand(
            vec![data.clone()],
            std::slice::from_ref(&secrets),
            &mut Expansion::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("another link"), "{e}");
        // The twin: without the link it expands.
        std::fs::remove_file(data.join("public/key-again")).unwrap();
        assert!(expand(vec![data], &[secrets], &mut Expansion::default()).is_ok());
    }

    #[test]
    fn an_allowed_path_inside_a_denied_one_is_refused() {
        let t = tree();
        let data = canon(t.path().join("data"));
        let e = expand(
            vec![data.join("secrets/deep")],
            &[data.join("secrets")],
            &mut Expansion::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("lies inside the denied path"), "{e}");
    }

    #[test]
    fn mount_points_are_unescaped_as_mountinfo_writes_them() {
        assert_eq!(unescape_mount_path("/a\\040b\\011c\\134d"), b"/a b\tc\\d");
        assert_eq!(unescape_mount_path("/x\\9\\"), b"/x\\9\\");
        assert_eq!(unescape_mount_path("/y\\777"), b"/y\\777");
        assert_eq!(unescape_mount_path("/z\\377"), b"/z\xff");
    }

    #[test]
    fn too_many_entries_are_refused_naming_the_limit() {
        let t = tempfile::tempdir().unwrap();
        let d = canon(t.path().to_path_buf());
        std::fs::create_dir(d.join("deny")).unwrap();
        let mut n = Expansion {
            count: MAX_EXPANDED_ENTRIES - 1,
            ..Expansion::default()
        };
        for i in 0..3 {
            std::fs::write(d.join(format!("f{i}")), "").unwrap();
        }
        let e = expand(vec![d.clone()], &[d.join("deny")], &mut n).unwrap_err();
        assert!(
            e.to_string().contains(&MAX_EXPANDED_ENTRIES.to_string()),
            "{e}"
        );
    }
}
