//! `symbi-slm models pull`: Hugging Face models of the config into the
//! Hugging Face cache, with progress (a redrawn line at a terminal, plain
//! lines otherwise, JSON events with `--json`), every model at once.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::anyhow;
use symbiont_runtime::config::ModelProvider;
use symbiont_runtime::models::hub::{
    self, pull, HfCache, HubClient, HubEnv, HubError, HubModel, PullEvent, PullPlan, Pulled,
};

use crate::output::out;
use crate::Failure;

/// `symbi-slm models pull`
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The models to pull (their catalog ids).
    ids: Vec<String>,
    /// Every Hugging Face model of the config.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// JSON events on stdout, one per line, instead of progress on stderr.
    #[arg(long)]
    json: bool,
}

/// How progress is shown.
#[derive(Debug)]
enum Style {
    Json,
    Terminal,
    Lines,
}

/// Progress of every file being pulled.
#[derive(Debug)]
struct Progress {
    style: Style,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// (model, file) → (done, total, bytes done when this run started it,
    /// done at the last plain line).
    files: Vec<((String, String), [u64; 4])>,
    /// When each file started downloading.
    began: Vec<((String, String), Instant)>,
    /// Bytes of every file to pull (known once each model resolved), and
    /// of those found already in the cache.
    total: u64,
    present: u64,
    /// (when, bytes fetched by this run): the last seconds' samples, for
    /// the rate now.
    samples: std::collections::VecDeque<(Instant, u64)>,
    line_shown: bool,
}

/// The rate over the last samples, bytes per second (`None` before there
/// is half a second of them).
fn rate_now(samples: &std::collections::VecDeque<(Instant, u64)>) -> Option<f64> {
    let (t0, b0) = samples.front()?;
    let (t1, b1) = samples.back()?;
    let span = t1.duration_since(*t0).as_secs_f64();
    (span >= 0.5).then(|| (b1 - b0) as f64 / span)
}

fn eta(left: u64, rate: Option<f64>) -> String {
    match rate {
        Some(r) if r > 0.0 => format!("{:.0} s", left as f64 / r),
        _ => "?".into(),
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

impl Progress {
    fn event(&self, e: PullEvent) {
        if let Style::Json = self.style {
            if let Ok(s) = serde_json::to_string(&e) {
                out!("{s}");
            }
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = |m: &str, f: &str| (m.to_string(), f.to_string());
        let say = |st: &mut State, line: String| {
            if st.line_shown {
                eprint!("\r\x1b[2K");
                st.line_shown = false;
            }
            eprintln!("{line}");
        };
        match e {
            PullEvent::Resolved {
                model,
                repo,
                revision,
                commit,
                files,
            } => {
                let total: u64 = files.iter().map(|f| f.1).sum();
                st.total += total;
                say(
                    &mut st,
                    format!(
                        "{model}: {repo}@{revision} is commit {commit}: {} file{} , {}",
                        files.len(),
                        if files.len() == 1 { "" } else { "s" },
                        mb(total)
                    )
                    .replace(" ,", ","),
                );
            }
            PullEvent::Waiting { model, file } => say(
                &mut st,
                format!("{model}: {file}: another process is downloading it; waiting for it"),
            ),
            PullEvent::Started {
                model,
                file,
                from,
                total,
            } => {
                let line = if from > 0 {
                    format!("{model}: {file}: resuming at {} of {}", mb(from), mb(total))
                } else {
                    format!("{model}: {file}: downloading {}", mb(total))
                };
                st.files
                    .push((key(&model, &file), [from, total, from, from]));
                st.began.push((key(&model, &file), Instant::now()));
                say(&mut st, line);
            }
            PullEvent::Progress {
                model,
                file,
                done,
                total,
            } => {
                let k = key(&model, &file);
                if let Some((_, v)) = st.files.iter_mut().find(|(f, _)| f == &k) {
                    v[0] = done;
                    v[1] = total;
                }
                self.show(&mut st, Some(&k));
            }
            PullEvent::Done {
                model,
                file,
                sha256,
                bytes,
                present,
            } => {
                if present {
                    st.present += bytes;
                }
                let how = if present {
                    "already in the cache"
                } else {
                    "downloaded"
                };
                say(
                    &mut st,
                    format!(
                        "{model}: {file}: {how}, {} , sha256 {sha256} verified",
                        mb(bytes)
                    )
                    .replace(" ,", ","),
                );
            }
            _ => {}
        }
    }

    /// The figures: at a terminal one line for everything (bytes of all
    /// files, the rate over the last 5 s, the time left at that rate);
    /// otherwise a line per tenth of a file, with that file's figures.
    fn show(&self, st: &mut State, changed: Option<&(String, String)>) {
        let now = Instant::now();
        let fetched: u64 = st
            .files
            .iter()
            .map(|(_, v)| v[0].saturating_sub(v[2]))
            .sum();
        st.samples.push_back((now, fetched));
        while st
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t).as_secs_f64() > 5.0)
        {
            st.samples.pop_front();
        }
        match self.style {
            Style::Terminal => {
                let done: u64 = st.present + st.files.iter().map(|(_, v)| v[0]).sum::<u64>();
                let total = st.total.max(done);
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                let rate = rate_now(&st.samples);
                eprint!(
                    "\r\x1b[2K{} / {} ({pct}%) · {}/s · ETA {}",
                    mb(done),
                    mb(total),
                    rate.map_or("?".into(), |r| mb(r as u64)),
                    eta(total - done, rate)
                );
                let _ = std::io::stderr().flush();
                st.line_shown = true;
            }
            Style::Lines => {
                let Some(k) = changed else { return };
                let began = st
                    .began
                    .iter()
                    .find(|(f, _)| f == k)
                    .map_or(self.started, |(_, t)| *t);
                if let Some((_, v)) = st.files.iter_mut().find(|(f, _)| f == k) {
                    let step = (v[1] / 10).max(1);
                    if v[0] >= v[3] + step || v[0] == v[1] {
                        v[3] = v[0];
                        let secs = began.elapsed().as_secs_f64();
                        let rate = (secs >= 0.5).then(|| v[0].saturating_sub(v[2]) as f64 / secs);
                        eprintln!(
                            "{}: {}: {} / {} ({}%) · {}/s · ETA {}",
                            k.0,
                            k.1,
                            mb(v[0]),
                            mb(v[1]),
                            (v[0] * 100).checked_div(v[1]).unwrap_or(100),
                            rate.map_or("?".into(), |r| mb(r as u64)),
                            eta(v[1] - v[0], rate)
                        );
                    }
                }
            }
            Style::Json => {}
        }
    }
}

/// One model's pull.
type Outcome = Result<(PullPlan, Pulled, std::time::Duration), HubError>;

/// The Hugging Face models to pull: those named, or every one with
/// `--all`.
fn chosen(
    c: &symbiont_runtime::models::ModelCatalog,
    args: &PullArgs,
) -> Result<Vec<HubModel>, Failure> {
    let hf = |m: &symbiont_runtime::config::Model| HubModel::of(&m.id, &m.provider);
    if args.all {
        let v: Vec<HubModel> = c.list_models().iter().filter_map(hf).collect();
        if v.is_empty() {
            return Err(Failure::Input(anyhow!(
                "the config has no HuggingFace model to pull"
            )));
        }
        return Ok(v);
    }
    if args.ids.is_empty() {
        return Err(Failure::Input(anyhow!(
            "name the models to pull, or --all for every HuggingFace model of the config"
        )));
    }
    args.ids
        .iter()
        .map(|id| {
            let m = c
                .get_model(id)
                .ok_or_else(|| Failure::Input(anyhow!("unknown model `{id}`")))?;
            match &m.provider {
                ModelProvider::HuggingFace { .. } => hf(m)
                    .ok_or_else(|| Failure::Input(anyhow!("model `{id}`: its `file` is refused"))),
                p => Err(Failure::Input(anyhow!(
                    "model `{id}` has provider {}: only HuggingFace models are pulled",
                    p.kind()
                ))),
            }
        })
        .collect()
}

/// The largest memory of any profile (a file larger than every profile's
/// memory can run under none of them, so it is refused before download).
fn largest_profile(c: &symbiont_runtime::models::ModelCatalog) -> Option<(String, u64)> {
    c.config()
        .sandbox_profiles
        .iter()
        .map(|(n, p)| (n.clone(), p.resources.max_memory_mb))
        .max_by_key(|(_, m)| *m)
}

impl Progress {
    fn new(json: bool) -> Self {
        let style = if json {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Terminal
        } else {
            Style::Lines
        };
        Self {
            style,
            started: Instant::now(),
            state: Mutex::default(),
        }
    }
}

/// Resolves and pulls one model; a file larger than the largest profile's
/// memory is refused before anything is downloaded.
async fn pull_one(
    client: &HubClient,
    cache: &HfCache,
    m: &HubModel,
    largest: Option<&(String, u64)>,
    progress: &Progress,
) -> Outcome {
    let began = Instant::now();
    let plan = PullPlan::resolve(client, m).await?;
    if let Some((name, max_mb)) = largest {
        if plan.bytes() > max_mb * 1024 * 1024 {
            return Err(HubError::Select {
                repo: m.describe(),
                reason: format!(
                    "`{}` is {} MiB, more than the memory of every sandbox profile (the largest, `{name}`, has max_memory_mb = {max_mb}): no profile could run it, so nothing was downloaded",
                    plan.files[0].file,
                    plan.bytes().div_ceil(1024 * 1024)
                ),
            });
        }
    }
    let pulled = pull(client, cache, &plan, &|e| progress.event(e)).await?;
    Ok((plan, pulled, began.elapsed()))
}

/// `hf:org/repo[:QUANT|:FILE.gguf][@REVISION]` (also `hf.co/…`, as Ollama
/// writes it), as a model of the hub.
pub(crate) fn parse_spec(spec: &str) -> Option<Result<HubModel, Failure>> {
    let rest = ["hf:", "hf.co/", "huggingface.co/"]
        .iter()
        .find_map(|p| spec.strip_prefix(p))?;
    let (rest, revision) = match rest.rsplit_once('@') {
        Some((r, rev)) => (r, Some(rev.to_string())),
        None => (rest, None),
    };
    let (repo, file) = match rest.split_once(':') {
        Some((r, f)) => (r, Some(f.to_string())),
        None => (rest, None),
    };
    let provider = ModelProvider::HuggingFace {
        model_path: repo.to_string(),
        file,
        revision,
        sha256: None,
    };
    let id = repo.rsplit('/').next().unwrap_or(repo);
    let mut slm = symbiont_runtime::config::Slm::builtin();
    if let Some(m) = slm.model_allow_lists.global_models.first_mut() {
        m.id = id.to_string();
        m.provider = provider.clone();
    }
    Some(match slm.validate() {
        Err(e) => Err(Failure::Input(anyhow!(
            "{spec}: {e} (the form is hf:org/repo[:QUANT|:FILE.gguf][@REVISION])"
        ))),
        Ok(()) => HubModel::of(id, &provider)
            .ok_or_else(|| Failure::Input(anyhow!("{spec}: not a hub model"))),
    })
}

/// A hub model for `run`/`serve` without a config: from the cache, else
/// pulled now with progress on stderr (the command named the hub, as
/// `ollama run` and `llama-server -hf` pull).
pub(crate) fn fetch_for_run(m: &HubModel) -> Result<hub::Located, Failure> {
    let cache = HfCache::from_env();
    match hub::locate(&cache, m) {
        Ok(found) => return Ok(found),
        // Only a model that is not there is pulled (a split model, say,
        // is there and cannot run: said as it is).
        Err(HubError::Missing { .. }) => {}
        Err(e) => return Err(Failure::Input(e.into())),
    }
    let env = HubEnv::from_env().map_err(|e| Failure::Input(e.into()))?;
    let client = HubClient::new(env).map_err(|e| Failure::Input(e.into()))?;
    let progress = Progress::new(false);
    let rt = crate::run_cmd::runtime()?;
    rt.block_on(pull_one(&client, &cache, m, None, &progress))
        .map_err(|e| Failure::Runtime(anyhow!("{}: {e}", m.describe())))?;
    hub::locate(&cache, m).map_err(|e| Failure::Runtime(e.into()))
}

pub fn pull_models(args: PullArgs, config: Option<&Path>) -> Result<(), Failure> {
    let (_, c) = crate::catalog_cmds::catalog(config)?;
    let models = chosen(&c, &args)?;
    let env = HubEnv::from_env().map_err(|e| Failure::Input(e.into()))?;
    let client = HubClient::new(env).map_err(|e| Failure::Input(e.into()))?;
    let cache = HfCache::from_env();
    let progress = Progress::new(args.json);
    let largest = largest_profile(&c);
    let rt = crate::run_cmd::runtime()?;
    let results: Vec<(String, Outcome)> = rt.block_on(async {
        futures::future::join_all(models.iter().map(|m| async {
            let r = pull_one(&client, &cache, m, largest.as_ref(), &progress).await;
            (m.id.clone(), r)
        }))
        .await
    });
    let mut failed = 0;
    for (id, r) in results {
        match r {
            Ok((plan, pulled, took)) => {
                let secs = took.as_secs_f64();
                if args.json {
                    out!(
                        "{}",
                        serde_json::json!({
                            "event": "pulled",
                            "model": id,
                            "commit": pulled.commit,
                            "files": plan.files.iter().map(|f| serde_json::json!({
                                "file": f.file, "bytes": f.size, "sha256": f.sha256,
                                "checked_against": f.expected_from,
                            })).collect::<Vec<_>>(),
                            "downloaded_bytes": pulled.downloaded,
                            "blobs": pulled.blobs,
                        })
                    );
                } else {
                    out!(
                        "{id}: {} at {} · {} · {}",
                        plan.model.repo,
                        pulled.commit,
                        plan.files
                            .iter()
                            .map(|f| f.file.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if pulled.downloaded == 0 {
                            "nothing to download".to_string()
                        } else {
                            format!(
                                "{} downloaded in {secs:.1} s ({}/s)",
                                mb(pulled.downloaded),
                                mb((pulled.downloaded as f64 / secs.max(0.001)) as u64)
                            )
                        }
                    );
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    out!(
                        "{}",
                        serde_json::json!({"event": "failed", "model": id, "error": e.to_string()})
                    );
                } else {
                    eprintln!("symbi-slm: {id}: {e}");
                }
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Runtime(anyhow!(
            "{failed} of {} models not pulled",
            models.len()
        )));
    }
    Ok(())
}
