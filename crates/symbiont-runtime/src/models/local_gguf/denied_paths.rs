//! Denied paths inside allowed ones. Landlock only adds rights to a
//! hierarchy: a rule for `/data` covers `/data/secrets`. So, at plan time,
//! an allowed directory that holds a denied path is replaced by rules for
//! its other entries, and so on down the way to the denied path: every
//! entry off the way keeps the allowed right, the denied subtree gets none,
//! and the directories on the way get no rule of their own (a right on
//! them would reach into the denied subtree again).
//!
//! What this cannot cover, and so refuses or leaves out:
//! - a symlink among the entries gets no rule (Landlock follows it, so a
//!   rule would reach its target, which may be the denied path; a target
//!   elsewhere keeps the rules it has);
//! - a mount point on the way is refused (another file system's entries
//!   may be the denied ones under other names);
//! - a regular file with more than one link in the denied subtree is
//!   refused (the other name may be among the allowed entries; Landlock
//!   follows names, not files);
//! - entries created later directly in a directory on the way, listing a
//!   directory on the way, and creating entries in it are refused (no rule
//!   covers them).

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

/// `allowed` (canonical paths) with each directory that holds one of
/// `denied` (canonical) replaced by its entries off the way to it. An
/// allowed path that is itself denied is refused. `expanded` counts the
/// rules made so far across calls (see [`MAX_EXPANDED_ENTRIES`]).
pub fn expand(
    allowed: Vec<PathBuf>,
    denied: &[PathBuf],
    expanded: &mut usize,
) -> Result<Vec<PathBuf>, SlmRunnerError> {
    let mut out = Vec::new();
    for a in allowed {
        if let Some(d) = denied.iter().find(|d| **d == a) {
            return Err(refused(format!(
                "the allowed path {} is the denied path {}",
                a.display(),
                d.display()
            )));
        }
        if !denied.iter().any(|d| d.starts_with(&a)) {
            out.push(a);
            continue;
        }
        let device = std::fs::metadata(&a)
            .map_err(|e| refused(format!("{}: {e}", a.display())))?
            .dev();
        walk(&a, device, denied, &mut out, expanded)?;
    }
    Ok(out)
}

/// The entries of `dir`, a directory on the way to a denied path.
fn walk(
    dir: &Path,
    device: u64,
    denied: &[PathBuf],
    out: &mut Vec<PathBuf>,
    expanded: &mut usize,
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
        if denied.contains(&path) {
            no_other_links(&path, &meta)?;
            continue;
        }
        if meta.file_type().is_symlink() {
            continue;
        }
        if denied.iter().any(|d| d.starts_with(&path)) {
            if meta.dev() != device {
                return Err(refused(format!(
                    "{} is a mount point on the way to a denied path: the other file system's entries cannot be told apart from the denied ones",
                    path.display()
                )));
            }
            walk(&path, device, denied, out, expanded)?;
            continue;
        }
        *expanded += 1;
        if *expanded > MAX_EXPANDED_ENTRIES {
            return Err(refused(format!(
                "denying a path inside an allowed one takes a rule per entry beside the way to it: more than {MAX_EXPANDED_ENTRIES} here (in {}); allow narrower paths",
                dir.display()
            )));
        }
        out.push(path);
    }
    Ok(())
}

/// Refuses a denied subtree holding a regular file with another link.
fn no_other_links(top: &Path, meta: &std::fs::Metadata) -> Result<(), SlmRunnerError> {
    let linked = |p: &Path| {
        refused(format!(
            "the denied file {} has another link, which Landlock would not deny (it follows names); remove the link or deny its directory too",
            p.display()
        ))
    };
    if meta.file_type().is_file() {
        return if meta.nlink() > 1 {
            Err(linked(top))
        } else {
            Ok(())
        };
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let mut todo = vec![top.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_DENIED_ENTRIES {
                return Err(refused(format!(
                    "{} holds more than {MAX_DENIED_ENTRIES} entries to check for other links; deny a smaller path or allow narrower ones",
                    top.display()
                )));
            }
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.file_type().is_file() && m.nlink() > 1 {
                return Err(linked(&e.path()));
            }
            if m.is_dir() {
                todo.push(e.path());
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
        let mut n = 0;
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
        assert_eq!(n, 4);
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
        let e = expand(vec![data.clone()], std::slice::from_ref(&secrets), &mut 0).unwrap_err();
        assert!(e.to_string().contains("another link"), "{e}");
        // The twin: without the link it expands.
        std::fs::remove_file(data.join("public/key-again")).unwrap();
        assert!(expand(vec![data], &[secrets], &mut 0).is_ok());
    }

    #[test]
    fn too_many_entries_are_refused_naming_the_limit() {
        let t = tempfile::tempdir().unwrap();
        let d = canon(t.path().to_path_buf());
        std::fs::create_dir(d.join("deny")).unwrap();
        let mut n = MAX_EXPANDED_ENTRIES - 1;
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
