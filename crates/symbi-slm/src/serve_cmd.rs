//! `symbi-slm serve` (the HTTP service of `symbiont-service`) and
//! `symbi-slm agents token` (a new agent token and its config line).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use symbiont_runtime::config::Slm;
use symbiont_runtime::models::{defaults, ModelCatalog, ModelPool};
use symbiont_service::Service;

use crate::catalog_cmds;
use crate::config_source::Source;
use crate::output::{note, out};
use crate::Failure;

/// `symbi-slm serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT (a name such as localhost is
    /// looked up; default: slm.service.listen, 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Worker executable (default: $SYMBI_SLM_WORKER, else beside symbi-slm).
    #[arg(long, value_name = "PATH")]
    worker: Option<PathBuf>,
    /// Serve this GGUF file (or hub model, hf:org/repo[:QUANT], pulled
    /// into the Hugging Face cache when missing) without a config, on
    /// loopback only: under the secure profile's controls sized to fit it,
    /// for one agent, `local`, whose fresh token is printed once with a
    /// curl to try (to the terminal; otherwise into a file only this user
    /// can read).
    #[arg(long, short = 'm', value_name = "FILE.gguf|hf:ORG/REPO")]
    model: Option<PathBuf>,
    /// With --model: no token; whoever can connect to the loopback address
    /// is the agent `local`.
    #[arg(long, requires = "model")]
    no_auth: bool,
}

/// A model file served without a config: its id, and the token of its
/// agent (none with --no-auth).
struct FileServe {
    model_id: String,
    token: Option<String>,
}

/// The agent a model file is served to.
const LOCAL_AGENT: &str = "local";

/// `symbi-slm agents …`
#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// Make a random token for AGENT (256 bits), print it once, and print
    /// the line that gives it to AGENT in [slm.service.agent_tokens]. The
    /// config holds only the token's SHA-256.
    Token {
        /// The agent id.
        agent: String,
    },
    /// Make a random token for the metrics scraper (Prometheus), print it
    /// once, and print the `metrics_token` line for [slm.service]. It
    /// reads `GET /metrics` and proves no agent.
    MetricsToken,
    /// Print the keys a load balancer knows the agents by (the file
    /// deploy/haproxy.cfg reads as $SYMBI_SLM_AGENTS): the hex SHA-256 of
    /// each token of [slm.service.agent_tokens], one per line, each after
    /// a comment line naming its agent. No token is needed or shown.
    BalancerKeys,
    /// Make a random token for the operator (`symbi-slm ps`, GET /v1/ps),
    /// print it once, and print the `operator_token` line for
    /// [slm.service]. It proves no agent.
    OperatorToken,
}

pub fn serve(args: ServeArgs, config: Option<&Path>) -> Result<(), Failure> {
    // The file a SIGHUP reloads (none for a model file or the built-in).
    let mut config_file: Option<PathBuf> = None;
    let (source, catalog, file) = match &args.model {
        Some(path) => {
            if let Some(c) = config {
                return Err(Failure::Input(anyhow!(
                    "--model {} serves a file without a config, and --config {} was given: leave one out",
                    path.display(),
                    c.display()
                )));
            }
            let (catalog, file) = file_catalog(path, args.no_auth)?;
            (
                format!("no config (model file {})", path.display()),
                catalog,
                Some(file),
            )
        }
        None => {
            let (source, catalog) = catalog_cmds::catalog(config)?;
            if let Source::Flag(p) | Source::Env(p) = &source {
                config_file = Some(p.clone());
            }
            (source.to_string(), catalog, None)
        }
    };
    if !catalog.config().enabled {
        return Err(Failure::Input(anyhow!(
            "small language models are disabled: set `slm.enabled = true` in {source}"
        )));
    }
    let audit = catalog_cmds::serve_audit_log(&catalog)?;
    STDOUT_IS_AUDIT.store(
        audit.path() == Some(Path::new(symbiont_runtime::audit::STDOUT)),
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut pool = ModelPool::builder(catalog).audit_log(audit);
    if let Some(w) = &args.worker {
        pool = pool.worker_path(w);
    }
    let pool = pool.build().map_err(|e| Failure::Input(e.into()))?;
    let service = Service::new(pool);
    let addr = match &args.listen {
        Some(a) => listen_address(a).map_err(|e| Failure::Input(anyhow!("--listen {a}: {e}")))?,
        None => listen_address(&service.settings().listen)
            .map_err(|e| Failure::Input(anyhow!("slm.service.listen: {e}")))?,
    };
    if file.is_some() && !addr.ip().is_loopback() {
        return Err(Failure::Input(anyhow!(
            "refusing to listen on {addr}: a model file served without a config listens on loopback only; to serve other hosts, write a config with agent tokens (`symbi-slm agents token AGENT`)"
        )));
    }
    service
        .check_listen(addr)
        .map_err(|e| Failure::Input(e.into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::Runtime(anyhow!("listening on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::Runtime(e.into()))?;
        // Pinned models load now, under the profile the service runs
        // them with (its requests' workers, not the default profile's);
        // one that cannot load stops the start, naming it.
        let profile = service.profile().to_string();
        for id in &service.pool().catalog().config().pool.pinned_models {
            let loaded = match service.pool().runner(id, Some(&profile)).await {
                Ok(runner) => runner.preload().await,
                Err(e) => Err(e),
            };
            loaded.map_err(|e| {
                Failure::Runtime(anyhow!(
                    "pinned model `{id}` (slm.pool.pinned_models) cannot load under the service's profile `{profile}`: {e}"
                ))
            })?;
        }
        // The signals are ours before anyone is told the service is up: a
        // SIGHUP that follows the line below reloads, never kills.
        let signals = Signals::install();
        // One line on stdout once the socket is bound (scripts and tests
        // wait for it); the rest goes to the log on stderr.
        say(&format!(
            "symbi-slm serve: listening on http://{local} ({source}, profile {})",
            service.profile()
        ));
        tracing::info!(%local, "listening");
        // Under systemd (Type=notify): ready once the socket is bound and
        // the pinned models loaded, which is when /ready answers 200.
        sd_notify("READY=1\nSTATUS=listening");
        let token_dir = match &file {
            Some(f) => try_it(f, local)?,
            None => None,
        };
        let settings = service.settings();
        if settings.agent_tokens.is_empty() && settings.anonymous_agent.is_none() {
            // Loud: every request would be a 401 and nothing else says why.
            note(true, &format!(
                "symbi-slm serve: WARNING: no agent can authenticate ({source} has no [slm.service.agent_tokens] and no anonymous_agent), so every request will be answered 401. Make a token with `symbi-slm agents token AGENT` and add its line under [slm.service.agent_tokens], or set slm.service.anonymous_agent for local development."
            ));
        }
        let reloader = Reloader {
            live: service.live(),
            file: config_file,
            worker: args.worker.clone(),
            local,
        };
        let served = service
            .serve(listener, shutdown_signal(signals, reloader))
            .await
            .map_err(|e| Failure::Runtime(e.into()));
        drop(token_dir);
        served
    })?;
    // The runtime and with it the pool and its workers are gone here.
    drop(rt);
    note(false, "symbi-slm serve: stopped");
    Ok(())
}

/// The catalog of a model file served without a config: the file sized
/// for the default slots, one agent `local` with a fresh token (or, with
/// `no_auth`, as the anonymous agent).
fn file_catalog(path: &Path, no_auth: bool) -> Result<(ModelCatalog, FileServe), Failure> {
    let fc = crate::run_cmd::config_for(&path.to_string_lossy(), defaults::SLOTS)?;
    note(false, &format!("symbi-slm serve: {}", fc.summary));
    let mut slm = fc.slm;
    slm.model_allow_lists
        .agent_model_maps
        .insert(LOCAL_AGENT.into(), vec![fc.model_id.clone()]);
    let token = if no_auth {
        slm.service.anonymous_agent = Some(LOCAL_AGENT.into());
        None
    } else {
        let (token, hash) = new_token()?;
        slm.service.agent_tokens.insert(LOCAL_AGENT.into(), hash);
        Some(token)
    };
    let catalog = ModelCatalog::new(slm).map_err(|e| Failure::Input(e.into()))?;
    Ok((
        catalog,
        FileServe {
            model_id: fc.model_id,
            token,
        },
    ))
}

/// Where the token's header file lives while the service runs: a private
/// directory (0700, a random name) in `$XDG_RUNTIME_DIR`, else the temp
/// directory; removed when the service stops (dropped), or by the second
/// signal's exit, which skips the drop.
static TOKEN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Prints a curl that works as pasted. The token never goes on a command
/// line (where `ps` would show it): it is written, as the header line
/// `Authorization: Bearer …`, into a file only this user can read, which
/// the curl sends with `-H @FILE`. On a terminal the token itself is also
/// shown once, for other clients. Returns the directory that holds the
/// file.
fn try_it(file: &FileServe, local: SocketAddr) -> Result<Option<tempfile::TempDir>, Failure> {
    use std::io::{IsTerminal, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let (auth, dir) = match &file.token {
        None => (String::new(), None),
        Some(token) => {
            let base = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|d| d.is_dir())
                .unwrap_or_else(std::env::temp_dir);
            let dir = tempfile::Builder::new()
                .prefix("symbi-slm-serve-")
                .tempdir_in(&base)
                .map_err(|e| {
                    Failure::Runtime(anyhow!("a private directory in {}: {e}", base.display()))
                })?;
            // Only this user may list it (its file is 0600 as well).
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Failure::Runtime(anyhow!("{}: {e}", dir.path().display())))?;
            let path = dir.path().join("authorization");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| writeln!(f, "Authorization: Bearer {token}"))
                .map_err(|e| Failure::Runtime(anyhow!("{}: {e}", path.display())))?;
            let _ = TOKEN_DIR.set(dir.path().to_path_buf());
            if std::io::stdout().is_terminal() {
                say(&format!(
                    "symbi-slm serve: agent `{LOCAL_AGENT}`'s token (shown only now): {token}"
                ));
            }
            say(&format!(
                "symbi-slm serve: agent `{LOCAL_AGENT}`'s token is in {} as a header line (this user only; removed when the service stops)",
                path.display()
            ));
            (
                format!(" -H @{}", shell_quote(&path.display().to_string())),
                Some(dir),
            )
        }
    };
    say(&format!(
        "curl -s http://{local}/v1/chat/completions{auth} -H 'Content-Type: application/json' -d '{{\"model\": \"{}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'",
        file.model_id
    ));
    Ok(dir)
}

/// Whether standard output holds the audit events (`slm.audit_log_path =
/// "-"`): then nothing else is written there.
static STDOUT_IS_AUDIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line on stdout for whoever started the service (on stderr, through
/// the log, when stdout holds the audit events). A reader that went away
/// (`serve … | head -1`) must not stop the service: the error is ignored.
fn say(line: &str) {
    use std::io::Write;
    if STDOUT_IS_AUDIT.load(std::sync::atomic::Ordering::Relaxed) {
        return note(false, line);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// `text` as one shell word: bare when it holds only safe characters,
/// else in single quotes.
fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `HOST:PORT` as an address to bind: an IP address as it is, a name
/// looked up (its first IPv4 address, else its first: `localhost` is
/// 127.0.0.1).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    let all: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("not HOST:PORT, or the name does not resolve ({e})"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| "the name resolves to no address".to_string())
}

/// Tells systemd (`$NOTIFY_SOCKET`, `Type=notify` units) how the service
/// is: a datagram to the socket it names (a path, or `@` for an abstract
/// name). Nothing without the variable; a failure is logged, never fatal.
fn sd_notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    let sent = (|| {
        let out = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = socket.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            out.send_to_addr(state.as_bytes(), &addr)
        } else {
            out.send_to(state.as_bytes(), &socket)
        }
    })();
    if let Err(e) = sent {
        tracing::warn!("NOTIFY_SOCKET {}: {e}", socket.to_string_lossy());
    }
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it beside.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// What a SIGHUP reloads: the service's config file.
struct Reloader {
    /// The config in force (holding on to none: an old one's workers go
    /// with its last request).
    live: symbiont_service::Live,
    file: Option<PathBuf>,
    worker: Option<PathBuf>,
    /// The address the service listens on (a new config must be one the
    /// service would start with there).
    local: SocketAddr,
}

impl Reloader {
    /// Reads the config file again and, if `serve` would start with it,
    /// puts it in force for the requests that come after (see
    /// `Service::reload`); otherwise says every problem and keeps the
    /// config in force. Runners whose model and profile did not change
    /// keep their loaded workers; the others' workers stop once the
    /// requests in progress on them end.
    async fn reload(&self) {
        sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        self.reload_file().await;
        sd_notify("READY=1");
    }

    async fn reload_file(&self) {
        let Some(path) = &self.file else {
            tracing::warn!("SIGHUP: no config file to reload (a model file served without one, or the built-in config): nothing changes");
            return;
        };
        match self.try_reload(path).await {
            Ok(said) => tracing::info!("SIGHUP: {} reloaded: {said}", path.display()),
            Err(problems) => {
                for p in &problems {
                    tracing::warn!("SIGHUP: {}: {p}", path.display());
                }
                tracing::warn!(
                    "SIGHUP: {} has {} problem(s): the config in force stays",
                    path.display(),
                    problems.len()
                );
            }
        }
    }

    async fn try_reload(&self, path: &Path) -> Result<String, Vec<String>> {
        let one = |e: String| vec![e];
        let (slm, issues) = Slm::diagnose_file(path).map_err(|e| one(e.to_string()))?;
        if !issues.is_empty() {
            return Err(issues.iter().map(ToString::to_string).collect());
        }
        let slm = slm.ok_or_else(|| one("nothing could be read".into()))?;
        if !slm.enabled {
            return Err(one(
                "slm.enabled = false: the service would stop serving".into()
            ));
        }
        let old = self.live.current();
        let old_pool = old.pool();
        let old_c = old_pool.catalog().config();
        let catalog = ModelCatalog::new(slm).map_err(|e| one(e.to_string()))?;
        let new_c = catalog.config();
        // One host budget for the old workers and the new: what it was
        // made with applies until the next start.
        let budget_keys = [
            (
                "memory_budget_mb",
                new_c.pool.memory_budget_mb != old_c.pool.memory_budget_mb,
            ),
            ("cores", new_c.pool.cores != old_c.pool.cores),
            (
                "max_loaded_workers",
                new_c.pool.max_loaded_workers != old_c.pool.max_loaded_workers,
            ),
        ];
        let audit = if new_c.audit_log_path == old_c.audit_log_path {
            old_pool.audit().clone()
        } else {
            catalog_cmds::serve_audit_log(&catalog).map_err(|e| one(e.to_string()))?
        };
        let mut pool = ModelPool::builder(catalog)
            .audit_log(audit)
            .budget(old_pool.budget().clone());
        if let Some(w) = &self.worker {
            pool = pool.worker_path(w);
        }
        let pool = pool.build().map_err(|e| one(e.to_string()))?;
        // What `serve` checks at its start, on the address it has.
        let trial = Service::new(pool.clone());
        trial
            .check_listen(self.local)
            .map_err(|e| one(e.to_string()))?;
        let profile = trial.profile().to_string();
        if pool.catalog().get_sandbox_profile(&profile).is_none() {
            return Err(one(format!(
                "no sandbox profile `{profile}` for the service"
            )));
        }
        let kept = pool.adopt(old_pool).await;
        // Pinned models must fit and check out now (file, pin, memory,
        // profile); they load once the config is in force: the old
        // config's pinned worker of a changed model cannot make room for
        // its successor before that.
        let mut pinned = Vec::new();
        for id in &pool.catalog().config().pool.pinned_models {
            let runner = pool.runner(id, Some(&profile)).await.map_err(|e| {
                one(format!(
                    "pinned model `{id}` cannot load under the service's profile `{profile}`: {e}"
                ))
            })?;
            pinned.push((id.clone(), runner));
        }
        let models = pool.catalog().list_models().len();
        let agents = pool.catalog().config().service.agent_tokens.len();
        let mut fixed: Vec<String> = self
            .live
            .reload(pool.clone())
            .into_iter()
            .map(|k| format!("slm.service.{k}"))
            .collect();
        fixed.extend(
            budget_keys
                .iter()
                .filter(|(_, changed)| *changed)
                .map(|(k, _)| format!("slm.pool.{k}")),
        );
        // The old config is let go of (its last request gone, its pinned
        // workers with it): the new pinned models load now, in the
        // background, each failure said.
        tokio::spawn(async move {
            for (id, runner) in pinned {
                if let Err(e) = runner.preload().await {
                    tracing::warn!("SIGHUP: pinned model `{id}` did not load: {e}");
                }
            }
            drop(pool);
        });
        Ok(format!(
            "{models} model(s), {agents} agent token(s), profile `{profile}`; {} runner(s) kept loaded{}{}",
            kept.len(),
            if kept.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    kept.iter()
                        .map(|(m, p)| format!("{m} under {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if fixed.is_empty() {
                String::new()
            } else {
                format!(
                    "; changed, in force at the next start: {}",
                    fixed.join(", ")
                )
            }
        ))
    }
}

/// SIGTERM or SIGINT. SIGHUP reloads the config file (see
/// [`Reloader::reload`]); the service never dies of it.
/// SIGTERM, SIGINT and SIGHUP, taken over from their default actions.
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

impl Signals {
    /// Installs the handlers now (inside the runtime).
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => Signals(Some((t, i, h))),
            _ => Signals(None),
        }
    }
}

async fn shutdown_signal(signals: Signals, reloader: Reloader) {
    let Signals(Some((mut term, mut int, mut hup))) = signals else {
        tracing::error!(
            "cannot install the SIGTERM/SIGINT/SIGHUP handlers; stop the service with SIGKILL"
        );
        return std::future::pending().await;
    };
    let drain = loop {
        tokio::select! {
            _ = term.recv() => break true,
            _ = int.recv() => break false,
            _ = hup.recv() => {
                // A stop is not kept waiting by a reload: the reload is
                // abandoned (nothing is in force until its very end).
                let reload = reloader.reload();
                tokio::pin!(reload);
                tokio::select! {
                    () = &mut reload => {}
                    _ = term.recv() => { tracing::info!("SIGTERM during a reload: the reload is abandoned"); break true }
                    _ = int.recv() => { tracing::info!("SIGINT during a reload: the reload is abandoned"); break false }
                }
            }
        }
    };
    sd_notify("STOPPING=1");
    // SIGTERM (a service manager, Kubernetes, a rolling restart) drains:
    // /ready fails at once, so that the balancer takes this replica out,
    // while whatever it still sends is served. SIGINT (Ctrl-C at a
    // terminal) stops accepting at once.
    let seconds = reloader.live.current().settings().drain_seconds;
    if drain && seconds > 0 {
        reloader.live.drain();
        tracing::info!(
            "SIGTERM: draining: /ready answers 503; requests are still served for {seconds} s (slm.service.drain_seconds), then no new connections are accepted"
        );
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                _ = term.recv() => { tracing::info!("SIGTERM while draining: the drain ends now"); break }
                _ = int.recv() => { tracing::info!("SIGINT while draining: the drain ends now"); break }
                _ = hup.recv() => tracing::warn!("SIGHUP while draining: not reloaded (the service is stopping)"),
            }
        }
    } else {
        tracing::info!("{}", if drain { "SIGTERM" } else { "SIGINT" });
    }
    // A second signal does not wait for the grace: the process exits now,
    // and its workers with it (their parent-death signal).
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => tracing::warn!("SIGHUP while stopping: not reloaded"),
            }
        }
        note(true, "symbi-slm serve: second signal, stopping now");
        // The exit skips the drops: the token's directory goes here.
        if let Some(dir) = TOKEN_DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(1);
    });
}

pub fn agents(cmd: AgentsCmd, config: Option<&Path>) -> Result<(), Failure> {
    let agent = match cmd {
        AgentsCmd::Token { agent } => agent,
        AgentsCmd::OperatorToken => {
            let (token, hash) = new_token()?;
            out!("{token}");
            out!("operator_token = \"{hash}\"");
            eprintln!("The first line is the operator's token: it is shown only now; `symbi-slm ps` reads it from $SYMBI_SLM_OPERATOR_TOKEN or --token-file.");
            eprintln!("Add the second line under [slm.service] in the config.");
            return Ok(());
        }
        AgentsCmd::BalancerKeys => {
            let (source, catalog) = catalog_cmds::catalog(config)?;
            let tokens = &catalog.config().service.agent_tokens;
            if tokens.is_empty() {
                return Err(Failure::Input(anyhow!(
                    "{source} has no [slm.service.agent_tokens]: no agent to list"
                )));
            }
            out!("# symbi-slm agents balancer-keys, from {source}");
            for (agent, hash) in tokens {
                let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
                out!("# {}", agent.escape_debug());
                out!("{hex}");
            }
            return Ok(());
        }
        AgentsCmd::MetricsToken => {
            let (token, hash) = new_token()?;
            out!("{token}");
            out!("metrics_token = \"{hash}\"");
            eprintln!("The first line is the scraper's token: it is shown only now; give it to Prometheus (authorization: {{ credentials_file: … }}).");
            eprintln!("Add the second line under [slm.service] in the config.");
            return Ok(());
        }
    };
    if agent.is_empty()
        || !agent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Failure::Input(anyhow!(
            "`{agent}` is not a valid agent id (letters, digits, `_` and `-`)"
        )));
    }
    let (token, hash) = new_token()?;
    out!("{token}");
    out!("\"{agent}\" = \"{hash}\"");
    eprintln!(
        "The first line is {agent}'s token: it is shown only now; give it to the agent as its API key (Authorization: Bearer …)."
    );
    eprintln!("Add the second line under [slm.service.agent_tokens] in the config.");
    if let Ok((source, catalog)) = catalog_cmds::catalog(config) {
        if catalog.get_models_for_agent(&agent).is_empty() {
            eprintln!(
                "Note: in {source}, `{agent}` may use no model yet: add it to [slm.model_allow_lists.agent_model_maps]."
            );
        }
    }
    Ok(())
}

/// A new token and its hash, the form the config holds.
fn new_token() -> Result<(String, String), Failure> {
    let token = symbiont_service::auth::new_token()
        .map_err(|e| Failure::Runtime(anyhow!("reading random bytes from the kernel: {e}")))?;
    let hash = symbiont_service::auth::token_hash(&token);
    Ok((token, hash))
}
