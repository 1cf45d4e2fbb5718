//! The Hugging Face cache, laid out as `huggingface_hub` lays it out so
//! that both tools share files: `models--org--name/blobs/<etag>` holds the
//! bytes, `snapshots/<commit>/<file>` is a relative link to its blob,
//! `refs/<revision>` names a branch's or tag's commit; a download grows in
//! `blobs/<etag>.incomplete` under an exclusive `flock` of
//! `.locks/models--org--name/<etag>.lock`.
//!
//! Every name joined to a path here passed the config's rules
//! (`config::provider`): a repository id, a revision and a file path
//! cannot climb out of the cache.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::config::provider::is_commit;

/// One Hugging Face hub cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfCache {
    root: PathBuf,
}

impl HfCache {
    /// The cache at `root` (a `hub` directory).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache `huggingface_hub` uses: `$HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
            .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from("/nonexistent/huggingface/hub"));
        Self { root }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn folder(repo: &str) -> String {
        format!("models--{}", repo.replace('/', "--"))
    }

    /// `models--org--name`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(Self::folder(repo))
    }

    /// Where a blob's finished bytes live.
    pub fn blob(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// Where a blob grows while it is downloaded.
    pub fn incomplete(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    /// A file of a snapshot (a link to its blob once pulled).
    pub fn snapshot_file(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("snapshots")
            .join(commit)
            .join(file)
    }

    /// The commit `revision` means in this cache: itself when it is a
    /// full commit id, else what `refs/<revision>` holds (`None` when the
    /// ref was never pulled or holds no commit id).
    pub fn commit_of(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        // Not through a link, and no more than a commit id and a newline.
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(self.repo_dir(repo).join("refs").join(revision))
            .ok()?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return None;
        }
        // A commit id and some white space: more than 64 bytes is no ref.
        let mut buf = [0u8; 65];
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return None,
            }
        }
        if n > 64 {
            return None;
        }
        let c = std::str::from_utf8(&buf[..n]).ok()?.trim();
        is_commit(c).then(|| c.to_string())
    }

    /// Records that `revision` means `commit` (`refs/<revision>`, replaced
    /// whole), unless the revision is that commit.
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        io::Write::write_all(&mut tmp, commit.as_bytes())?;
        // Readable as huggingface_hub's refs are (a commit id is no
        // secret; the temporary file was 0600).
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The files of a snapshot, as paths inside the repository, sorted.
    pub fn snapshot_files(&self, repo: &str, commit: &str) -> Vec<String> {
        let base = self.repo_dir(repo).join("snapshots").join(commit);
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(_) => {
                        if let Some(rel) = p.strip_prefix(&base).ok().and_then(Path::to_str) {
                            out.push(rel.to_string());
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }

    /// The blob a snapshot's file links to, if the link leads to a file
    /// in this repository's `blobs` (and nowhere else): its path and
    /// name (the etag, for an LFS file the SHA-256 of its bytes).
    pub fn blob_of(&self, repo: &str, commit: &str, file: &str) -> Option<(PathBuf, String)> {
        let link = self.snapshot_file(repo, commit, file);
        let target = fs::read_link(&link).ok()?;
        // `../../blobs/<etag>` (with one more `..` per folder of `file`):
        // only the last part counts, and only as a name in `blobs`.
        if target.is_absolute()
            || target
                .components()
                .any(|c| !matches!(c, Component::ParentDir | Component::Normal(_)))
        {
            return None;
        }
        let etag = target.file_name()?.to_str()?.to_string();
        let parent = target.parent()?.file_name()?;
        if parent != "blobs" || etag.ends_with(".incomplete") {
            return None;
        }
        let blob = self.blob(repo, &etag);
        blob.is_file().then_some((blob, etag))
    }

    /// Links `snapshots/<commit>/<file>` to `blobs/<etag>` (relative, as
    /// `huggingface_hub` does), replacing what was there.
    pub fn link(&self, repo: &str, commit: &str, file: &str, etag: &str) -> io::Result<()> {
        let link = self.snapshot_file(repo, commit, file);
        let dir = link.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let depth = file.split('/').count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        // A name of this call's own: links made at once (two files of one
        // snapshot) never swap targets.
        // (random: processes in containers sharing a cache share pids),
        // made anew if the name is taken, never removing another's.
        let tmp = loop {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| io::Error::other(e.to_string()))?;
            let tmp = dir.join(format!(".{:016x}.symbi-link", u64::from_le_bytes(r)));
            match std::os::unix::fs::symlink(&target, &tmp) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                r => break r.map(|()| tmp)?,
            }
        };
        fs::rename(&tmp, &link)
    }

    /// The lock `huggingface_hub` takes for a blob.
    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(Self::folder(repo))
            .join(format!("{etag}.lock"))
    }

    /// Takes the blob's lock (`flock`, exclusive, as Python's `filelock`
    /// does), waiting while another process holds it; `waiting` is called
    /// once if it has to wait.
    pub async fn lock(
        &self,
        repo: &str,
        etag: &str,
        waiting: impl FnOnce(),
    ) -> io::Result<BlobLock> {
        let path = self.lock_path(repo, etag);
        if let Some(d) = path.parent() {
            fs::create_dir_all(d)?;
        }
        // 0664 less the umask, as Python's filelock makes it; never
        // through a link planted in its place.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o664)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("the lock is not a regular file"));
        }
        let mut waiting = Some(waiting);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(BlobLock { _lock: lock }),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    file = f;
                    if let Some(w) = waiting.take() {
                        w();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((_, e)) => return Err(io::Error::from(e)),
            }
        }
    }
}

/// A blob's lock, held until dropped.
#[derive(Debug)]
pub struct BlobLock {
    _lock: Flock<fs::File>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn layout_is_huggingface_hubs() {
        let d = tempfile::tempdir().unwrap();
        let c = HfCache::at(d.path());
        assert_eq!(c.repo_dir("org/m"), d.path().join("models--org--m"));
        assert_eq!(
            c.lock_path("org/m", "ab"),
            d.path().join(".locks/models--org--m/ab.lock")
        );
        fs::create_dir_all(c.blob("org/m", "ab").parent().unwrap()).unwrap();
        fs::write(c.blob("org/m", "ab"), b"x").unwrap();
        c.link("org/m", C, "sub/x.gguf", "ab").unwrap();
        let l = c.snapshot_file("org/m", C, "sub/x.gguf");
        assert_eq!(
            fs::read_link(&l).unwrap(),
            PathBuf::from("../../../blobs/ab")
        );
        assert_eq!(fs::read(&l).unwrap(), b"x", "the relative link resolves");
        assert_eq!(c.blob_of("org/m", C, "sub/x.gguf").unwrap().1, "ab");
        assert_eq!(c.snapshot_files("org/m", C), vec!["sub/x.gguf"]);
        c.write_ref("org/m", "main", C).unwrap();
        assert_eq!(c.commit_of("org/m", "main").as_deref(), Some(C));
        assert_eq!(c.commit_of("org/m", "other"), None);
    }

    #[test]
    fn a_link_out_of_blobs_is_not_a_blob() {
        let d = tempfile::tempdir().unwrap();
        let c = HfCache::at(d.path());
        let snap = c.snapshot_file("org/m", C, "x.gguf");
        fs::create_dir_all(snap.parent().unwrap()).unwrap();
        fs::write(d.path().join("elsewhere"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &snap).unwrap();
        assert_eq!(c.blob_of("org/m", C, "x.gguf"), None, "absolute target");
        fs::remove_file(&snap).unwrap();
        std::os::unix::fs::symlink("../../../../elsewhere", &snap).unwrap();
        assert_eq!(c.blob_of("org/m", C, "x.gguf"), None, "not in blobs");
    }

    #[tokio::test]
    async fn a_blob_lock_excludes_a_second_holder() {
        let d = tempfile::tempdir().unwrap();
        let c = HfCache::at(d.path());
        let first = c.lock("org/m", "ab", || {}).await.unwrap();
        let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = waited.clone();
        let c2 = c.clone();
        let second = tokio::spawn(async move {
            c2.lock("org/m", "ab", move || {
                w.store(true, std::sync::atomic::Ordering::SeqCst)
            })
            .await
            .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second waits");
        assert!(waited.load(std::sync::atomic::Ordering::SeqCst));
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second gets the lock once the first lets go")
            .unwrap();
    }
}
