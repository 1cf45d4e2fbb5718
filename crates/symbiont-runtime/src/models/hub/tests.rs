//! Pulls from a hub on loopback that speaks the real protocol, and
//! misbehaves on request.

use std::sync::{Arc, Mutex};

use reqwest::Url;

use super::loopback::{LoopbackHub, Misbehaviour};
use super::*;
use crate::config::provider::HubFile;

const REPO: &str = "org/tiny";

fn data(n: usize) -> Arc<Vec<u8>> {
    Arc::new((0..n).map(|i| (i * 7 % 251) as u8).collect())
}

fn sha(d: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Setup {
    hub: LoopbackHub,
    client: HubClient,
    cache: HfCache,
    _dir: tempfile::TempDir,
    bytes: Arc<Vec<u8>>,
    commit: String,
}

fn setup(size: usize) -> Setup {
    let hub = LoopbackHub::spawn().unwrap();
    let bytes = data(size);
    let commit = hub.publish(
        REPO,
        "main",
        vec![
            ("tiny-Q4_K_M.gguf".into(), bytes.clone()),
            ("README.md".into(), Arc::new(b"# tiny".to_vec())),
        ],
    );
    let client = HubClient::new(HubEnv::with_endpoint(Url::parse(&hub.endpoint).unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Setup {
        hub,
        client,
        cache: HfCache::at(dir.path()),
        _dir: dir,
        bytes,
        commit,
    }
}

fn model(pin: Option<String>) -> HubModel {
    HubModel {
        id: "tiny".into(),
        repo: REPO.into(),
        file: HubFile::Quant("q4_k_m".into()),
        revision: "main".into(),
        sha256: pin,
    }
}

type Events = Arc<Mutex<Vec<PullEvent>>>;

async fn go(s: &Setup, m: &HubModel) -> (Result<Pulled, HubError>, Events) {
    let events: Events = Arc::default();
    let e = events.clone();
    let r = async {
        let plan = PullPlan::resolve(&s.client, m).await?;
        pull(&s.client, &s.cache, &plan, &move |ev| {
            e.lock().unwrap().push(ev)
        })
        .await
    }
    .await;
    (r, events)
}

fn gets(s: &Setup) -> usize {
    s.hub
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /lfs/"))
        .count()
}

#[tokio::test]
async fn a_pull_lands_in_the_cache_layout_and_a_second_pull_downloads_nothing() {
    let s = setup(300_000);
    let (r, events) = go(&s, &model(Some(sha(&s.bytes)))).await;
    let pulled = r.unwrap();
    assert_eq!(pulled.commit, s.commit);
    assert_eq!(pulled.downloaded, 300_000);
    let blob = s.cache.blob(REPO, &sha(&s.bytes));
    assert_eq!(std::fs::read(&blob).unwrap(), *s.bytes);
    let link = s.cache.snapshot_file(REPO, &s.commit, "tiny-Q4_K_M.gguf");
    assert_eq!(
        std::fs::read(&link).unwrap(),
        *s.bytes,
        "the snapshot links to it"
    );
    assert_eq!(
        std::fs::read_to_string(s.cache.repo_dir(REPO).join("refs/main")).unwrap(),
        s.commit,
        "refs/main holds the commit, no newline (as huggingface_hub writes it)"
    );
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, PullEvent::Done { present: false, .. })));
    // What a run loads: the blob, checked against the pin.
    let found = locate(&s.cache, &model(Some(sha(&s.bytes)))).unwrap();
    assert_eq!(found.blob, blob);
    assert_eq!(found.sha256, Some(sha(&s.bytes)));
    let unpinned = locate(&s.cache, &model(None)).unwrap();
    assert_eq!(
        unpinned.sha256,
        Some(sha(&s.bytes)),
        "unpinned: the blob's own name (the LFS digest) is what it must hash to"
    );

    let before = gets(&s);
    let (r, _) = go(&s, &model(None)).await;
    assert_eq!(r.unwrap().downloaded, 0);
    assert_eq!(gets(&s), before, "nothing fetched the second time");
}

#[tokio::test]
async fn an_interrupted_pull_keeps_its_bytes_and_resumes_with_a_range() {
    let s = setup(400_000);
    s.hub.misbehave(Misbehaviour {
        cut_after: Some(150_000),
        ..Misbehaviour::default()
    });
    let (r, _) = go(&s, &model(None)).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Interrupted {
                done: 150_000,
                total: 400_000,
                ..
            }
        ),
        "{e}"
    );
    let part = s.cache.incomplete(REPO, &sha(&s.bytes));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 150_000);
    assert!(
        locate(&s.cache, &model(None)).is_err(),
        "a partial file is never taken for the model"
    );
    s.hub.misbehave(Misbehaviour::default());
    let (r, events) = go(&s, &model(None)).await;
    assert_eq!(r.unwrap().downloaded, 250_000, "only the rest is fetched");
    assert!(s
        .hub
        .requests()
        .iter()
        .any(|r| r.ends_with("range=150000-")));
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, PullEvent::Started { from: 150_000, .. })));
    assert!(!part.exists());
    assert_eq!(
        std::fs::read(s.cache.blob(REPO, &sha(&s.bytes))).unwrap(),
        *s.bytes
    );
}

#[tokio::test]
async fn bad_bytes_are_refused_with_both_digests_and_nothing_is_kept() {
    let s = setup(200_000);
    s.hub.misbehave(Misbehaviour {
        corrupt: true,
        ..Misbehaviour::default()
    });
    let (r, _) = go(&s, &model(None)).await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains(&sha(&s.bytes)), "names the expected digest: {e}");
    assert!(e.contains("the hub's LFS digest"), "{e}");
    let mut bad = s.bytes.to_vec();
    bad[1000] ^= 0xff;
    assert!(e.contains(&sha(&bad)), "names the digest of what came: {e}");
    let blobs = s.cache.repo_dir(REPO).join("blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        0,
        "no blob, no .incomplete"
    );

    // A pin that the hub's listing contradicts: nothing is fetched.
    s.hub.misbehave(Misbehaviour::default());
    let before = gets(&s);
    let (r, _) = go(&s, &model(Some("ab".repeat(32)))).await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("pins") && e.contains(&"ab".repeat(32)), "{e}");
    assert_eq!(gets(&s), before);
}

#[tokio::test]
async fn a_hub_that_lies_about_lengths_or_ranges_is_refused() {
    let s = setup(100_000);
    for (m, want) in [
        (
            Misbehaviour {
                longer_content_length: 10,
                ..Misbehaviour::default()
            },
            "Content-Length",
        ),
        (
            Misbehaviour {
                extra_bytes: 5000,
                ..Misbehaviour::default()
            },
            "more bytes than",
        ),
    ] {
        s.hub.misbehave(m.clone());
        let (r, _) = go(&s, &model(None)).await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "{m:?}: {e}");
        assert!(!s.cache.blob(REPO, &sha(&s.bytes)).exists());
    }
    // A hub that ignores the range: the file starts over, and is right.
    s.hub.misbehave(Misbehaviour {
        cut_after: Some(40_000),
        ..Misbehaviour::default()
    });
    assert!(go(&s, &model(None)).await.0.is_err());
    s.hub.misbehave(Misbehaviour {
        ignore_range: true,
        ..Misbehaviour::default()
    });
    let (r, _) = go(&s, &model(None)).await;
    assert_eq!(r.unwrap().downloaded, 100_000);
    assert_eq!(
        std::fs::read(s.cache.blob(REPO, &sha(&s.bytes))).unwrap(),
        *s.bytes
    );
}

#[tokio::test]
async fn redirects_to_private_places_are_refused_and_the_proper_one_works() {
    let s = setup(10_000);
    for (to, want) in [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.1.2.3/x", "private"),
        // A name that leads to loopback: only HF_ENDPOINT's own host may.
        ("http://localhost:1/x", "loopback"),
        ("file:///etc/passwd", "scheme"),
    ] {
        s.hub.misbehave(Misbehaviour {
            redirect_to: Some(to.into()),
            ..Misbehaviour::default()
        });
        let (r, _) = go(&s, &model(None)).await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "{to}: {e}");
    }
    s.hub.misbehave(Misbehaviour::default());
    assert!(
        go(&s, &model(None)).await.0.is_ok(),
        "the CDN on the hub's host"
    );
}

#[tokio::test]
async fn two_pulls_at_once_download_once() {
    let s = setup(2_000_000);
    let m = model(None);
    let (a, b) = tokio::join!(go(&s, &m), go(&s, &m));
    let (a, b) = (a.0.unwrap(), b.0.unwrap());
    assert_eq!(
        a.downloaded + b.downloaded,
        2_000_000,
        "one downloaded, the other found it done"
    );
    assert_eq!(gets(&s), 1);
}

#[tokio::test]
async fn the_file_picked_is_named_when_there_is_none() {
    let s = setup(1000);
    let mut m = model(None);
    m.file = HubFile::Quant("Q8_0".into());
    let e = go(&s, &m).await.0.unwrap_err().to_string();
    assert!(e.contains("Q8_0") && e.contains("tiny-Q4_K_M.gguf"), "{e}");
    m.repo = "org/none".into();
    let e = go(&s, &m).await.0.unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("org/none"), "{e}");
    let e = locate(&s.cache, &model(None)).unwrap_err().to_string();
    assert!(e.contains("models pull tiny"), "{e}");
}

#[tokio::test]
async fn gc_removes_only_what_no_snapshot_links_to_and_never_a_busy_blob() {
    let s = setup(50_000);
    go(&s, &model(None)).await.0.unwrap();
    let blobs = s.cache.repo_dir(REPO).join("blobs");
    // Another tool's file of the same repository, an orphan blob, an
    // interrupted download.
    std::fs::write(blobs.join("ffff"), b"theirs").unwrap();
    s.cache.link(REPO, &s.commit, "theirs.bin", "ffff").unwrap();
    std::fs::write(blobs.join("0000"), b"orphan").unwrap();
    std::fs::write(blobs.join("1111.incomplete"), b"part").unwrap();

    let dry = collect(&s.cache, true, false).unwrap();
    assert_eq!(dry.removed, vec![(blobs.join("0000"), 6)]);
    assert!(blobs.join("0000").exists(), "a dry run removes nothing");

    // A pull holds the orphan's lock: kept.
    let held = s.cache.lock(REPO, "0000", || {}).await.unwrap();
    let done = collect(&s.cache, false, false).unwrap();
    assert_eq!(done.busy, vec![blobs.join("0000")]);
    assert!(done.removed.is_empty());
    drop(held);
    let done = collect(&s.cache, false, false).unwrap();
    assert_eq!(done.removed, vec![(blobs.join("0000"), 6)]);
    assert_eq!(done.incomplete, vec![(blobs.join("1111.incomplete"), 4)]);
    assert!(blobs.join("1111.incomplete").exists(), "resumable: kept");
    assert!(blobs.join(sha(&s.bytes)).exists() && blobs.join("ffff").exists());

    // The model goes; the other tool's file stays, and with it the
    // snapshot and its ref.
    let gone = remove(&s.cache, &model(None), false).unwrap();
    assert_eq!(gone.removed, vec![(blobs.join(sha(&s.bytes)), 50_000)]);
    assert!(blobs.join("ffff").exists());
    assert!(s.cache.commit_of(REPO, "main").is_some());
    assert!(locate(&s.cache, &model(None)).is_err());

    // Its last file unlinked, the snapshot goes with the ref naming it.
    std::fs::remove_file(s.cache.snapshot_file(REPO, &s.commit, "theirs.bin")).unwrap();
    let done = collect(&s.cache, false, true).unwrap();
    assert_eq!(done.removed.len(), 2, "{done:?}");
    assert!(!s
        .cache
        .repo_dir(REPO)
        .join("snapshots")
        .join(&s.commit)
        .exists());
    assert_eq!(s.cache.commit_of(REPO, "main"), None);
}

#[tokio::test]
async fn a_planted_link_is_never_written_through_and_a_whole_part_is_not_fetched_again() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(70_000);
    let blobs = s.cache.repo_dir(REPO).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    // Another user's link at the predictable `.incomplete` name, to a
    // file of ours.
    let victim = s._dir.path().join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let part = s.cache.incomplete(REPO, &sha(&s.bytes));
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    let (r, _) = go(&s, &model(None)).await;
    assert_eq!(r.unwrap().downloaded, 70_000);
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !std::fs::symlink_metadata(s.cache.blob(REPO, &sha(&s.bytes)))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Every byte already in the `.incomplete` (a crash before the
    // rename): checked, moved, nothing asked of the hub.
    let other = setup(60_000);
    let part = other.cache.incomplete(REPO, &sha(&other.bytes));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &*other.bytes).unwrap();
    let (r, _) = go(&other, &model(None)).await;
    assert_eq!(r.unwrap().downloaded, 0);
    assert_eq!(gets(&other), 0);
    assert_eq!(
        std::fs::read(other.cache.blob(REPO, &sha(&other.bytes))).unwrap(),
        *other.bytes
    );
}

#[tokio::test]
async fn a_hub_that_answers_another_commit_than_the_one_pinned_is_refused() {
    let s = setup(1000);
    // A hub that answers a commit id with another commit (here: a branch
    // that carries the pinned commit's name).
    let pinned = "0123456789abcdef0123456789abcdef01234567";
    let actual = s
        .hub
        .publish(REPO, pinned, vec![("tiny-Q4_K_M.gguf".into(), data(1000))]);
    let mut m = model(None);
    m.revision = pinned.into();
    let e = go(&s, &m).await.0.unwrap_err().to_string();
    assert!(e.contains(pinned) && e.contains(&actual), "{e}");
    assert_eq!(gets(&s), 0);
}

#[test]
fn a_ref_that_is_a_link_or_too_long_names_no_commit() {
    let d = tempfile::tempdir().unwrap();
    let c = HfCache::at(d.path());
    let commit = "0123456789abcdef0123456789abcdef01234567";
    c.write_ref(REPO, "main", commit).unwrap();
    assert_eq!(c.commit_of(REPO, "main").as_deref(), Some(commit));
    let refs = c.repo_dir(REPO).join("refs");
    std::fs::write(d.path().join("elsewhere"), commit).unwrap();
    std::os::unix::fs::symlink(d.path().join("elsewhere"), refs.join("linked")).unwrap();
    assert_eq!(c.commit_of(REPO, "linked"), None, "not through a link");
    std::fs::write(refs.join("long"), format!("{commit}{}", " ".repeat(100))).unwrap();
    assert_eq!(c.commit_of(REPO, "long"), None, "64 bytes at most");
}
