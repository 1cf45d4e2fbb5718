//! A Hugging Face hub on loopback, for tests (feature `test-hub`): the
//! real protocol as `huggingface_hub` and this crate's client speak it,
//! and the misbehaviours a hostile hub can choose.
//!
//! Two listeners, as on the real hub: the hub itself (`/api/models/{repo}
//! /revision/{rev}`, `/tree/{rev}`, `/refs`, and `/{repo}/resolve/{rev}
//! /{file}` answering an LFS file with a 302 that carries `X-Repo-Commit`,
//! `X-Linked-Etag`, `X-Linked-Size`), and a "CDN" on another port that
//! serves the bytes with `Range`. Every request is logged.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the hub does wrong (everything off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Close the connection after this many bytes of a file's body.
    pub cut_after: Option<u64>,
    /// The resolve redirect's `Location`, in place of the CDN.
    pub redirect_to: Option<String>,
    /// Serve the file with one byte changed.
    pub corrupt: bool,
    /// Answer a `Range` request with the whole file (200).
    pub ignore_range: bool,
    /// Announce this many bytes more than the file has.
    pub longer_content_length: u64,
    /// Send the body without a length, this many bytes longer.
    pub extra_bytes: u64,
}

#[derive(Debug)]
struct File {
    name: String,
    data: Arc<Vec<u8>>,
    sha256: String,
}

#[derive(Debug)]
struct Repo {
    commit: String,
    branches: HashMap<String, String>,
    files: Vec<File>,
}

#[derive(Debug, Default)]
struct State {
    repos: HashMap<String, Repo>,
    by_sha: HashMap<String, Arc<Vec<u8>>>,
    misbehaviour: Misbehaviour,
    log: Vec<String>,
    cdn: u16,
}

/// A running hub. Its threads live as long as the process.
#[derive(Debug, Clone)]
pub struct LoopbackHub {
    /// `http://127.0.0.1:<port>`: what `HF_ENDPOINT` is set to.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl LoopbackHub {
    /// Starts the hub and its CDN on loopback, in a thread of their own.
    pub fn spawn() -> io::Result<Self> {
        let hub = std::net::TcpListener::bind("127.0.0.1:0")?;
        let cdn = std::net::TcpListener::bind("127.0.0.1:0")?;
        hub.set_nonblocking(true)?;
        cdn.set_nonblocking(true)?;
        let endpoint = format!("http://{}", hub.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            cdn: cdn.local_addr()?.port(),
            ..State::default()
        }));
        let s = state.clone();
        std::thread::Builder::new()
            .name("loopback-hub".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the loopback hub");
                rt.block_on(async move {
                    let hub = TcpListener::from_std(hub).expect("hub listener");
                    let cdn = TcpListener::from_std(cdn).expect("cdn listener");
                    let s2 = s.clone();
                    tokio::spawn(accept(cdn, s2, true));
                    accept(hub, s, false).await;
                });
            })?;
        Ok(Self { endpoint, state })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `files` as repository `repo`'s branch `branch`; returns
    /// the commit (a new one per call).
    pub fn publish(&self, repo: &str, branch: &str, files: Vec<(String, Arc<Vec<u8>>)>) -> String {
        let mut st = self.state();
        let mut h = Sha256::new();
        h.update(repo.as_bytes());
        h.update(branch.as_bytes());
        h.update(st.log.len().to_le_bytes());
        h.update(st.repos.len().to_le_bytes());
        let mut files_out = Vec::new();
        for (name, data) in files {
            let sha256 = hex(&Sha256::digest(&data[..]));
            h.update(sha256.as_bytes());
            st.by_sha.insert(sha256.clone(), data.clone());
            files_out.push(File { name, data, sha256 });
        }
        let commit = hex(&h.finalize())[..40].to_string();
        let entry = st.repos.entry(repo.to_string()).or_insert_with(|| Repo {
            commit: commit.clone(),
            branches: HashMap::new(),
            files: Vec::new(),
        });
        entry.commit = commit.clone();
        entry.files = files_out;
        entry.branches.insert(branch.to_string(), commit.clone());
        commit
    }

    /// What the hub does wrong from now on.
    pub fn misbehave(&self, m: Misbehaviour) {
        self.state().misbehaviour = m;
    }

    /// Every request so far: `METHOD path [range=N-] [authorization=…]`,
    /// hub and CDN alike.
    pub fn requests(&self) -> Vec<String> {
        self.state().log.clone()
    }
}

async fn accept(l: TcpListener, state: Arc<Mutex<State>>, cdn: bool) {
    loop {
        let Ok((conn, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(serve(conn, state.clone(), cdn));
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    range: Option<u64>,
    authorization: Option<String>,
}

async fn read_head(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut byte).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let range =
        header("range").and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok());
    Some(Request {
        method,
        path,
        query,
        range,
        authorization: header("authorization"),
    })
}

async fn respond(conn: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body).await;
}

fn h(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

async fn not_found(conn: &mut TcpStream, code: &str, commit: Option<&str>) {
    let mut headers = vec![
        h("X-Error-Code", code),
        h("Content-Type", "application/json"),
    ];
    if let Some(c) = commit {
        headers.push(h("X-Repo-Commit", c));
    }
    let body = format!("{{\"error\":\"{code}\"}}");
    respond(conn, "404 Not Found", &headers, body.as_bytes()).await;
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>, cdn: bool) {
    let Some(req) = read_head(&mut conn).await else {
        return;
    };
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    lock().log.push(format!(
        "{} {}{}{}",
        req.method,
        req.path,
        req.range
            .map(|r| format!(" range={r}-"))
            .unwrap_or_default(),
        req.authorization
            .as_ref()
            .map(|a| format!(" authorization={a}"))
            .unwrap_or_default()
    ));
    if cdn {
        return serve_blob(conn, &state, &req).await;
    }
    let parts: Vec<String> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .map(pct_decode)
        .collect();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let answer = {
        let st = lock();
        route(&st, &p, &req)
    };
    match answer {
        Ok((status, headers, body)) => respond(&mut conn, status, &headers, &body).await,
        Err((code, commit)) => not_found(&mut conn, code, commit.as_deref()).await,
    }
}

type Answer =
    Result<(&'static str, Vec<(String, String)>, Vec<u8>), (&'static str, Option<String>)>;

/// The repository and the commit `rev` names in it.
fn find<'s>(
    st: &'s State,
    org: &str,
    name: &str,
    rev: &str,
) -> Result<(&'s Repo, String), (&'static str, Option<String>)> {
    let r = st
        .repos
        .get(&format!("{org}/{name}"))
        .ok_or(("RepoNotFound", None))?;
    let commit = r
        .branches
        .get(rev)
        .cloned()
        .or_else(|| (rev == r.commit).then(|| r.commit.clone()))
        .ok_or(("RevisionNotFound", None))?;
    Ok((r, commit))
}

fn json(v: serde_json::Value) -> Answer {
    Ok((
        "200 OK",
        vec![h("Content-Type", "application/json")],
        v.to_string().into_bytes(),
    ))
}

fn route(st: &State, p: &[&str], req: &Request) -> Answer {
    match p {
        ["api", "models", org, name, "revision", rev] => {
            let (r, commit) = find(st, org, name, rev)?;
            let repo = format!("{org}/{name}");
            let blobs = req
                .query
                .split('&')
                .any(|q| q == "blobs=true" || q == "blobs=True");
            let siblings: Vec<serde_json::Value> = r
                .files
                .iter()
                .map(|f| {
                    if blobs {
                        serde_json::json!({
                            "rfilename": f.name, "size": f.data.len(),
                            "blobId": &f.sha256[..40],
                            "lfs": {"sha256": f.sha256, "size": f.data.len(), "pointerSize": 134},
                        })
                    } else {
                        serde_json::json!({"rfilename": f.name})
                    }
                })
                .collect();
            json(serde_json::json!({
                "_id": &commit[..24], "id": repo, "modelId": repo, "sha": commit,
                "private": false, "disabled": false, "gated": false, "downloads": 0,
                "likes": 0, "tags": ["gguf"], "library_name": "gguf",
                "lastModified": "2026-12-01T00:00:00.000Z", "createdAt": "2026-12-01T00:00:00.000Z",
                "siblings": siblings,
            }))
        }
        ["api", "models", org, name, "tree", rev] => {
            let (r, _) = find(st, org, name, rev)?;
            let v: Vec<serde_json::Value> = r
                .files
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "type": "file", "oid": &f.sha256[..40], "size": f.data.len(), "path": f.name,
                        "lfs": {"oid": f.sha256, "size": f.data.len(), "pointerSize": 134},
                    })
                })
                .collect();
            json(serde_json::Value::Array(v))
        }
        [org, name, "resolve", rev, file @ ..] => {
            let (r, commit) = find(st, org, name, rev)?;
            let want = file.join("/");
            let Some(f) = r.files.iter().find(|f| f.name == want) else {
                return Err(("EntryNotFound", Some(commit)));
            };
            let location = st
                .misbehaviour
                .redirect_to
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{}/lfs/{}", st.cdn, f.sha256));
            Ok((
                "302 Found",
                vec![
                    h("Location", location),
                    h("X-Repo-Commit", &commit),
                    h("X-Linked-Etag", format!("\"{}\"", f.sha256)),
                    h("X-Linked-Size", f.data.len()),
                    h("ETag", format!("\"{}\"", &f.sha256[..40])),
                ],
                Vec::new(),
            ))
        }
        _ => Err(("EntryNotFound", None)),
    }
}

async fn serve_blob(mut conn: TcpStream, state: &Arc<Mutex<State>>, req: &Request) {
    let sha = req.path.trim_start_matches("/lfs/").to_string();
    let (data, m) = {
        let st = state.lock().unwrap_or_else(|p| p.into_inner());
        (st.by_sha.get(&sha).cloned(), st.misbehaviour.clone())
    };
    let Some(data) = data else {
        return not_found(&mut conn, "EntryNotFound", None).await;
    };
    let len = data.len() as u64;
    let from = match req.range {
        Some(r) if !m.ignore_range && r < len => r,
        _ => 0,
    };
    let mut headers = vec![
        h("Accept-Ranges", "bytes"),
        h("ETag", format!("\"{sha}\"")),
        h("Content-Type", "application/octet-stream"),
    ];
    let status = if from > 0 {
        headers.push(h(
            "Content-Range",
            format!("bytes {from}-{}/{len}", len - 1),
        ));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    if m.extra_bytes == 0 {
        headers.push(h("Content-Length", len - from + m.longer_content_length));
    }
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if conn.write_all(head.as_bytes()).await.is_err() || req.method == "HEAD" {
        return;
    }
    let end = m.cut_after.map_or(len, |c| c.clamp(from, len));
    let mut pos = from;
    while pos < end {
        let stop = (pos + 65536).min(end);
        let mut chunk = data[pos as usize..stop as usize].to_vec();
        if m.corrupt && (pos..stop).contains(&1000) {
            chunk[(1000 - pos) as usize] ^= 0xff;
        }
        if conn.write_all(&chunk).await.is_err() {
            return;
        }
        pos = stop;
    }
    if m.extra_bytes > 0 && m.cut_after.is_none() {
        let _ = conn.write_all(&vec![0u8; m.extra_bytes as usize]).await;
    }
    let _ = conn.shutdown().await;
}
