//! One model pulled: its revision resolved to a commit, its files picked,
//! each file downloaded once (under the blob's lock, resumed from its
//! `.incomplete` with `Range`), its size and SHA-256 checked against the
//! pin or the hub's LFS digest while it streams, then moved into `blobs`
//! and linked from the snapshot. Bad bytes are removed; bytes cut short are
//! kept, named `.incomplete`, to resume from, and never taken for a model.

use std::io::{Read, Seek, SeekFrom, Write};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{select, HfCache, HubClient, HubError, HubModel};
use crate::config::provider::is_commit;
use crate::models::digest::digest_of;

/// Most bytes kept in memory before they are written.
const WRITE_CHUNK: usize = 1 << 20;
/// A download slower than this many bytes per window is cut off.
const STALL_BYTES: u64 = 64 * 1024;
const STALL_WINDOW: Duration = Duration::from_secs(60);
/// Files of one model downloaded at once (a split model may have hundreds).
const PARALLEL_FILES: usize = 4;
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What happens during a pull, for a progress display or `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PullEvent {
    /// The revision is a commit and the files are known.
    Resolved {
        /// Catalog id.
        model: String,
        /// `org/name`.
        repo: String,
        /// As configured.
        revision: String,
        /// What it is now.
        commit: String,
        /// The files and their sizes.
        files: Vec<(String, u64)>,
    },
    /// Another process (this tool or `huggingface_hub`) is downloading
    /// the file; this pull waits for it.
    Waiting {
        /// Catalog id.
        model: String,
        /// The file.
        file: String,
    },
    /// A download starts (`from` > 0: resumed).
    Started {
        /// Catalog id.
        model: String,
        /// The file.
        file: String,
        /// Bytes already there.
        from: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Bytes arrived.
    Progress {
        /// Catalog id.
        model: String,
        /// The file.
        file: String,
        /// Bytes there now.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The file is in the cache, checked.
    Done {
        /// Catalog id.
        model: String,
        /// The file.
        file: String,
        /// Its SHA-256.
        sha256: String,
        /// Its size.
        bytes: u64,
        /// Whether it was there already (nothing downloaded).
        present: bool,
    },
}

/// One file to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path in the repository.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// The blob's name in the cache (the hub's etag: an LFS file's
    /// SHA-256, else its git blob id).
    pub etag: String,
    /// The SHA-256 the bytes must have.
    pub sha256: String,
    /// Where that comes from.
    pub expected_from: &'static str,
}

/// A model's files at a commit, before anything is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPlan {
    /// The model.
    pub model: HubModel,
    /// The commit its revision is at.
    pub commit: String,
    /// Its files, a split model's first part first.
    pub files: Vec<PlannedFile>,
}

impl PullPlan {
    /// Asks the hub which commit and files `model` means.
    pub async fn resolve(client: &HubClient, model: &HubModel) -> Result<Self, HubError> {
        let info = client.revision(&model.repo, &model.revision).await?;
        if is_commit(&model.revision) && info.sha != model.revision {
            return Err(HubError::Select {
                repo: model.describe(),
                reason: format!(
                    "asked for commit {} and the hub answered with commit {}: refused",
                    model.revision, info.sha
                ),
            });
        }
        let names: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
        let chosen = select(&names, &model.file).map_err(|reason| HubError::Select {
            repo: model.describe(),
            reason,
        })?;
        if model.sha256.is_some() && chosen.files.len() > 1 {
            return Err(HubError::Select {
                repo: model.describe(),
                reason: format!(
                    "`{}` is split into {} files and a pin covers one: remove `sha256` (each part is checked against the hub's LFS digest)",
                    chosen.first(),
                    chosen.files.len()
                ),
            });
        }
        let mut files = Vec::new();
        for name in &chosen.files {
            let s = info
                .siblings
                .iter()
                .find(|s| &s.rfilename == name)
                .expect("selected from the listing");
            let listed = s.lfs.as_ref().map(|l| l.sha256.clone());
            let size =
                s.lfs
                    .as_ref()
                    .map(|l| l.size)
                    .or(s.size)
                    .ok_or_else(|| HubError::Select {
                        repo: model.describe(),
                        reason: format!("the hub gives no size for `{name}`"),
                    })?;
            let (sha256, expected_from) = match (&model.sha256, &listed) {
                (Some(pin), Some(l)) if pin != l => {
                    return Err(HubError::Select {
                        repo: model.describe(),
                        reason: format!(
                            "the hub lists `{name}` with SHA-256 {l}, but the config pins {pin}: nothing was downloaded (the revision moved, or the pin is wrong)"
                        ),
                    })
                }
                (Some(pin), _) => (pin.clone(), "the config's pin"),
                (None, Some(l)) => (l.clone(), "the hub's LFS digest"),
                (None, None) => {
                    return Err(HubError::Select {
                        repo: model.describe(),
                        reason: format!(
                            "`{name}` is not an LFS file, so the hub gives no SHA-256 to check it against: pin it with `sha256`"
                        ),
                    })
                }
            };
            let etag = listed
                .or_else(|| s.blob_id.clone())
                .filter(|e| {
                    !e.is_empty() && e.len() <= 128 && e.bytes().all(|b| b.is_ascii_alphanumeric())
                })
                .ok_or_else(|| HubError::Select {
                    repo: model.describe(),
                    reason: format!("the hub gives `{name}` no usable blob id"),
                })?;
            files.push(PlannedFile {
                file: name.clone(),
                size,
                etag,
                sha256,
                expected_from,
            });
        }
        Ok(Self {
            model: model.clone(),
            commit: info.sha,
            files,
        })
    }

    /// Bytes in all.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A pulled model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The commit.
    pub commit: String,
    /// Each file's blob.
    pub blobs: Vec<PathBuf>,
    /// Bytes downloaded now (0 when everything was there).
    pub downloaded: u64,
}

/// Pulls `plan` into `cache`: every file at once, each reported through
/// `events`.
pub async fn pull(
    client: &HubClient,
    cache: &HfCache,
    plan: &PullPlan,
    events: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<Pulled, HubError> {
    let m = &plan.model;
    events(PullEvent::Resolved {
        model: m.id.clone(),
        repo: m.repo.clone(),
        revision: m.revision.clone(),
        commit: plan.commit.clone(),
        files: plan
            .files
            .iter()
            .map(|f| (f.file.clone(), f.size))
            .collect(),
    });
    use futures::stream::StreamExt;
    // Made first, then driven a few at a time (a closure inside the
    // stream would make the future not `Send` for the service's handlers).
    let mut files = Vec::new();
    for f in &plan.files {
        files.push(pull_file(client, cache, plan, f, events));
    }
    let results: Vec<_> = futures::stream::iter(files)
        .buffered(PARALLEL_FILES)
        .collect()
        .await;
    let mut blobs = Vec::new();
    let mut downloaded = 0;
    for r in results {
        let (blob, bytes) = r?;
        blobs.push(blob);
        downloaded += bytes;
    }
    cache
        .write_ref(&m.repo, &m.revision, &plan.commit)
        .map_err(HubError::io(cache.repo_dir(&m.repo).join("refs")))?;
    Ok(Pulled {
        commit: plan.commit.clone(),
        blobs,
        downloaded,
    })
}

/// Checks a blob that is there already (pulled earlier, or by another
/// tool): its size, then its digest (cached per file version).
fn check_present(blob: &std::path::Path, f: &PlannedFile) -> Result<bool, HubError> {
    use std::os::unix::fs::OpenOptionsExt;
    // A blob may be another tool's link into a shared store (Xet), but
    // never a FIFO that would hang this pull.
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(blob)
    else {
        return Ok(false);
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(HubError::io(blob)(std::io::Error::other(
            "not a regular file: remove it and pull again",
        )));
    }
    let len = file.metadata().map_err(HubError::io(blob))?.len();
    let actual = if len == f.size {
        digest_of(&file).map_err(HubError::io(blob))?
    } else {
        format!("of a file of {len} bytes, not {}", f.size)
    };
    if actual != f.sha256 {
        return Err(HubError::Digest {
            file: blob.display().to_string(),
            expected: f.sha256.clone(),
            expected_from: f.expected_from,
            actual: format!("{actual} (a blob already in the cache: remove it and pull again)"),
        });
    }
    Ok(true)
}

async fn pull_file(
    client: &HubClient,
    cache: &HfCache,
    plan: &PullPlan,
    f: &PlannedFile,
    events: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<(PathBuf, u64), HubError> {
    let m = &plan.model;
    let blob = cache.blob(&m.repo, &f.etag);
    let done = |present: bool| PullEvent::Done {
        model: m.id.clone(),
        file: f.file.clone(),
        sha256: f.sha256.clone(),
        bytes: f.size,
        present,
    };
    let link = || {
        cache
            .link(&m.repo, &plan.commit, &f.file, &f.etag)
            .map_err(HubError::io(cache.snapshot_file(
                &m.repo,
                &plan.commit,
                &f.file,
            )))
    };
    // Under the blob's lock from the first look to the link: a `models
    // gc` (which takes it too) never removes a blob between the two.
    let _lock = cache
        .lock(&m.repo, &f.etag, || {
            events(PullEvent::Waiting {
                model: m.id.clone(),
                file: f.file.clone(),
            })
        })
        .await
        .map_err(HubError::io(cache.lock_path(&m.repo, &f.etag)))?;
    // There already (pulled before, by whoever held the lock, or by
    // another tool): checked, linked.
    // Hashed off the async threads (a blob may be many GB).
    let (b, pf) = (blob.clone(), f.clone());
    let present = tokio::task::spawn_blocking(move || check_present(&b, &pf))
        .await
        .map_err(|e| HubError::io(&blob)(std::io::Error::other(e.to_string())))??;
    if present {
        link()?;
        events(done(true));
        return Ok((blob, 0));
    }
    let part = cache.incomplete(&m.repo, &f.etag);
    let downloaded = download(client, plan, f, &part, events).await?;
    std::fs::rename(&part, &blob).map_err(HubError::io(&blob))?;
    link()?;
    // Nothing fetched now (the bytes were all there): said as present.
    events(done(downloaded == 0));
    Ok((blob, downloaded))
}

/// Downloads into `part`, resuming from what it holds; the bytes are
/// checked before this returns. Returns the bytes fetched now.
async fn download(
    client: &HubClient,
    plan: &PullPlan,
    f: &PlannedFile,
    part: &std::path::Path,
    events: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<u64, HubError> {
    let m = &plan.model;
    if let Some(d) = part.parent() {
        std::fs::create_dir_all(d).map_err(HubError::io(d))?;
    }
    let mut out = open_part(part)?;
    let mut have = out.metadata().map_err(HubError::io(part))?.len();
    if have > f.size {
        out.set_len(0).map_err(HubError::io(part))?;
        have = 0;
    }
    // The digest covers the bytes kept from before.
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; WRITE_CHUNK];
    out.seek(SeekFrom::Start(0)).map_err(HubError::io(part))?;
    let mut left = have;
    while left > 0 {
        let n = out
            .read(&mut buf[..WRITE_CHUNK.min(left as usize)])
            .map_err(HubError::io(part))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    if have == f.size {
        // Every byte arrived before (the body failed after its last byte,
        // or the process stopped before the rename): nothing to ask for.
        if hex(&hasher.clone().finalize()) == f.sha256 {
            out.sync_all().map_err(HubError::io(part))?;
            return Ok(0);
        }
        out.set_len(0).map_err(HubError::io(part))?;
        hasher = Sha256::new();
        have = 0;
    }
    let file_name = || part.display().to_string();
    let (url, mut resp) = client.file(&m.repo, &plan.commit, &f.file, have).await?;
    let bad = |what: String| HubError::Answer {
        url: super::client::shown(&url),
        what,
    };
    if have > 0 && resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        let range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let want = format!("bytes {have}-{}/{}", f.size.saturating_sub(1), f.size);
        if range != want {
            // Not the range asked for: its bytes cannot be trusted to
            // continue the file.
            out.set_len(0).map_err(HubError::io(part))?;
            return Err(bad(format!(
                "asked for bytes {have}- and got Content-Range `{range}`, not `{want}`; the partial file was removed"
            )));
        }
    } else if resp.status() == reqwest::StatusCode::OK {
        if have > 0 {
            // The hub sends the whole file: start over.
            out.set_len(0).map_err(HubError::io(part))?;
            hasher = Sha256::new();
            have = 0;
        }
    } else {
        return Err(bad(format!("status {} for a file", resp.status())));
    }
    if let Some(len) = resp.content_length() {
        if have + len != f.size {
            out.set_len(0).map_err(HubError::io(part))?;
            return Err(bad(format!(
                "Content-Length {len} from byte {have} does not make the {} bytes the listing gives; the partial file was removed",
                f.size
            )));
        }
    }
    out.seek(SeekFrom::Start(have))
        .map_err(HubError::io(part))?;
    events(PullEvent::Started {
        model: m.id.clone(),
        file: f.file.clone(),
        from: have,
        total: f.size,
    });
    let start = have;
    let mut last = Instant::now();
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let interrupted = |done: u64, reason: String| HubError::Interrupted {
        file: f.file.clone(),
        done,
        total: f.size,
        reason,
    };
    // A hub that trickles (a byte a minute keeps each read alive) is cut
    // off: less than STALL_BYTES in a STALL_WINDOW ends the download,
    // resumable.
    let mut window = (Instant::now(), have);
    loop {
        let chunk = match tokio::time::timeout(STALL_WINDOW, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                out.write_all(&pending).map_err(HubError::io(part))?;
                return Err(interrupted(
                    have + pending.len() as u64,
                    super::client::chain(&e.without_url()),
                ));
            }
            Err(_) => {
                out.write_all(&pending).map_err(HubError::io(part))?;
                return Err(interrupted(
                    have + pending.len() as u64,
                    format!("nothing arrived for {} s", STALL_WINDOW.as_secs()),
                ));
            }
        };
        let now_at = have + pending.len() as u64 + chunk.len() as u64;
        if window.0.elapsed() >= STALL_WINDOW {
            if now_at - window.1 < STALL_BYTES {
                out.write_all(&pending).map_err(HubError::io(part))?;
                return Err(interrupted(
                    have + pending.len() as u64,
                    format!(
                        "less than {} KiB in {} s",
                        STALL_BYTES / 1024,
                        STALL_WINDOW.as_secs()
                    ),
                ));
            }
            window = (Instant::now(), now_at);
        }
        if have + pending.len() as u64 + chunk.len() as u64 > f.size {
            drop(out);
            let _ = std::fs::remove_file(part);
            return Err(bad(format!(
                "more bytes than the {} the listing gives; the partial file was removed",
                f.size
            )));
        }
        hasher.update(&chunk);
        pending.extend_from_slice(&chunk);
        if pending.len() >= WRITE_CHUNK {
            out.write_all(&pending)
                .map_err(|e| interrupted(have, format!("writing {}: {e}", file_name())))?;
            have += pending.len() as u64;
            pending.clear();
        }
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            events(PullEvent::Progress {
                model: m.id.clone(),
                file: f.file.clone(),
                done: have + pending.len() as u64,
                total: f.size,
            });
        }
    }
    out.write_all(&pending)
        .map_err(|e| interrupted(have, format!("writing {}: {e}", file_name())))?;
    have += pending.len() as u64;
    events(PullEvent::Progress {
        model: m.id.clone(),
        file: f.file.clone(),
        done: have,
        total: f.size,
    });
    if have < f.size {
        return Err(interrupted(have, "the hub closed the body early".into()));
    }
    let actual = hex(&hasher.finalize());
    if actual != f.sha256 {
        drop(out);
        let _ = std::fs::remove_file(part);
        return Err(HubError::Digest {
            file: format!("{}/{}", m.repo, f.file),
            expected: f.sha256.clone(),
            expected_from: f.expected_from,
            actual,
        });
    }
    out.sync_all().map_err(HubError::io(part))?;
    Ok(have - start)
}

/// Opens (or makes) a download's `.incomplete` without following a link
/// planted in its place (a link is removed, never written through), and
/// only as a regular file of this user's. A new one gets 0644 less the
/// umask, as `huggingface_hub` makes its files.
fn open_part(part: &std::path::Path) -> Result<std::fs::File, HubError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(part)
    };
    let file = match open() {
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            std::fs::remove_file(part).map_err(HubError::io(part))?;
            open().map_err(HubError::io(part))?
        }
        r => r.map_err(HubError::io(part))?,
    };
    let meta = file.metadata().map_err(HubError::io(part))?;
    // One link only: a hard link planted to another file of ours would
    // be cut and overwritten through it.
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.nlink() != 1 {
        return Err(HubError::io(part)(std::io::Error::other(
            "not a regular file of this user's with one link: refused (remove it)",
        )));
    }
    Ok(file)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
