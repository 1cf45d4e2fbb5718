//! `config`, `models` and `profiles`: commands that only read the catalog.

use std::path::Path;

use anyhow::anyhow;
use clap::Subcommand;
use symbiont_runtime::audit::AuditLog;
use symbiont_runtime::config::{
    Model, ModelCapability, ModelProvider, SandboxProfile, UnmappedAgentAccess,
};
use symbiont_runtime::models::{gguf, hub, ModelCatalog};

use crate::config_source::{self, Source};
use crate::output::{out, out_raw};
use crate::Failure;

/// `symbi-slm config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Every problem of a config in one run, with key paths and lines:
    /// the file's own rules, then what `run` and `serve` would refuse on
    /// this host (model files, models that fit their profiles, providers
    /// that can run, the listen address against the tokens). Exit 2 on
    /// any error.
    Check(crate::check_cmd::CheckArgs),
}

/// `symbi-slm models …`
#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// List models, optionally only those an agent may use or that have a
    /// capability.
    List {
        /// Only models this agent may use.
        #[arg(long)]
        agent: Option<String>,
        /// Only models with this capability (TextGeneration, CodeGeneration,
        /// Reasoning, ToolUse, FunctionCalling, Embeddings).
        #[arg(long)]
        capability: Option<ModelCapability>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download Hugging Face models of the config into the Hugging Face
    /// cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub), shared with `huggingface_hub`: the
    /// revision resolved to a commit, each file checked against its pin
    /// (or the hub's LFS SHA-256), an interrupted download resumed.
    /// $HF_ENDPOINT, $HF_TOKEN, $HF_HUB_OFFLINE and $HTTPS_PROXY are
    /// honoured.
    Pull(crate::pull_cmd::PullArgs),
    /// Hash the files of local and Hugging Face models again, every byte
    /// (the digest cache is corrected), against their pins or LFS digests.
    /// Exit 1 when one is missing or differs.
    Verify(crate::store_cmd::VerifyArgs),
    /// Remove Hugging Face models' files from the cache: their snapshot
    /// links, then the blobs nothing else links to (another tool's files
    /// of the same repository stay).
    Rm(crate::store_cmd::RmArgs),
    /// Free the Hugging Face cache: remove every blob that no snapshot
    /// links to, whichever tool pulled it (blobs a pull is writing are
    /// kept).
    Gc(crate::store_cmd::GcArgs),
    /// Show one model as JSON.
    Show {
        /// The model's id.
        id: String,
    },
    /// Pick the best model for a set of needs: every capability, at most
    /// --max-memory MB, allowed for --agent. Ties go to the smallest memory
    /// need, then fewest preferred cores, then config order.
    Select {
        /// Required capabilities (repeat the flag for several).
        #[arg(long = "capability", required = true)]
        capabilities: Vec<ModelCapability>,
        /// Memory budget in MB.
        #[arg(long)]
        max_memory: Option<u64>,
        /// The agent that will use it.
        #[arg(long)]
        agent: Option<String>,
    },
}

/// `symbi-slm profiles …`
#[derive(Debug, Subcommand)]
pub enum ProfilesCmd {
    /// Print the effective profile (built-in defaults merged with the
    /// config) as TOML; every profile when no name is given.
    Show {
        /// The profile's name.
        name: Option<String>,
    },
}

pub(crate) fn catalog(config: Option<&Path>) -> Result<(Source, ModelCatalog), Failure> {
    let source = config_source::pick(config);
    let slm = config_source::load(&source).map_err(|e| match source {
        Source::Builtin => Failure::Input(anyhow!("{source}: {e}")),
        _ => Failure::Input(e.into()),
    })?;
    let catalog = ModelCatalog::new(slm).map_err(|e| Failure::Input(e.into()))?;
    Ok((source, catalog))
}

/// The profile `name` names, or the config's default; the error lists the
/// profiles there are.
pub(crate) fn profile<'c>(
    c: &'c ModelCatalog,
    name: Option<&str>,
) -> Result<(String, &'c SandboxProfile), Failure> {
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| c.config().default_sandbox_profile.clone());
    let p = c.get_sandbox_profile(&name).ok_or_else(|| {
        Failure::Input(anyhow!(
            "no sandbox profile `{name}` (profiles: {})",
            c.list_sandbox_profiles().join(", ")
        ))
    })?;
    Ok((name, p))
}

/// The audit log of a command whose standard output is its answer:
/// `slm.audit_log_path = "-"` sends the events to standard error there
/// (only `serve` gives them standard output: [`serve_audit_log`]).
pub(crate) fn audit_log(c: &ModelCatalog) -> Result<AuditLog, Failure> {
    match c.config().audit_log_path.as_deref() {
        Some(symbiont_runtime::audit::STDOUT) => AuditLog::to_stderr().map_err(|e| {
            Failure::Runtime(anyhow!(
                "audit log on standard error (slm.audit_log_path = \"-\"): {e}"
            ))
        }),
        _ => serve_audit_log(c),
    }
}

/// The audit log of `serve`: `slm.audit_log_path`, `-` for standard
/// output.
pub(crate) fn serve_audit_log(c: &ModelCatalog) -> Result<AuditLog, Failure> {
    Ok(match &c.config().audit_log_path {
        Some(p) => AuditLog::at(p)
            .map_err(|e| Failure::Runtime(anyhow!("audit log {p} (slm.audit_log_path): {e}")))?,
        None => AuditLog::tracing_only(),
    })
}

pub fn config(cmd: ConfigCmd, config: Option<&Path>) -> Result<(), Failure> {
    let ConfigCmd::Check(args) = cmd;
    crate::check_cmd::check(args, config)
}

fn caps(m: &Model) -> String {
    let v: Vec<&str> = m.capabilities.iter().map(|c| c.as_str()).collect();
    if v.is_empty() {
        "no capabilities".into()
    } else {
        v.join(", ")
    }
}

/// What a local model's file holds, read from its header without loading
/// it: present or not, its size, architecture, trained context, layers,
/// vocabulary, chat template; for a Hugging Face model also the commit,
/// the file and the digest it must have (from the cache, offline). `None`
/// for a model with no local file.
fn file_facts(m: &Model) -> Option<serde_json::Value> {
    let mut facts = match &m.provider {
        ModelProvider::LocalFile { file_path, .. } => gguf_facts(file_path),
        ModelProvider::HuggingFace { .. } => {
            let h = hub::HubModel::of(&m.id, &m.provider)?;
            match hub::locate(&hub::HfCache::from_env(), &h) {
                Ok(found) => {
                    let mut f = gguf_facts(&found.blob);
                    if let Some(o) = f.as_object_mut() {
                        o.insert("revision".into(), h.revision.clone().into());
                        o.insert("commit".into(), found.commit.into());
                        o.insert("file".into(), found.file.into());
                        o.insert("sha256".into(), found.sha256.into());
                        o.insert("blob".into(), found.blob.display().to_string().into());
                    }
                    f
                }
                Err(e) => serde_json::json!({ "present": false, "reason": e.to_string() }),
            }
        }
        _ => return None,
    };
    if let (Some(o), ModelProvider::LocalFile { sha256, .. }) = (facts.as_object_mut(), &m.provider)
    {
        o.insert("sha256".into(), sha256.clone().into());
    }
    Some(facts.take())
}

fn gguf_facts(file_path: &Path) -> serde_json::Value {
    if !file_path.is_file() {
        return serde_json::json!({ "present": false });
    }
    match gguf::read_summary(file_path) {
        Ok(g) => serde_json::json!({
            "present": true,
            "size_bytes": g.file_size,
            "architecture": g.architecture,
            "name": g.name,
            "trained_context": g.context_length,
            "layers": g.block_count,
            "embedding_length": g.embedding_length,
            "vocab_size": g.vocab_size,
            "quantization": g.quantization(),
            "parameters": g.parameters,
            "chat_template": g.has_chat_template,
            // The template renders tool definitions: the model was trained
            // to call tools (what the service offers of it: docs/service.md).
            "template_uses_tools": g.template_uses_tools,
        }),
        Err(e) => serde_json::json!({ "present": true, "error": e.to_string() }),
    }
}

/// The FILE column of `models list`: the size, `missing`, `not GGUF`, or
/// `-` for a model with no local file.
fn file_column(m: &Model) -> String {
    match file_facts(m) {
        None => "-".into(),
        Some(f) if f["present"] == false => "missing".into(),
        Some(f) => f["size_bytes"]
            .as_u64()
            .map(|b| format!("{} MB", b.div_ceil(1024 * 1024)))
            .unwrap_or_else(|| "not GGUF".into()),
    }
}

fn location(m: &Model) -> String {
    match &m.provider {
        ModelProvider::LocalFile { file_path, .. } => file_path.display().to_string(),
        ModelProvider::HuggingFace { model_path, .. } => model_path.clone(),
        ModelProvider::OpenAI { model_name, .. } | ModelProvider::Anthropic { model_name, .. } => {
            model_name.clone()
        }
        ModelProvider::Custom { endpoint_url, .. } => endpoint_url.clone(),
        _ => String::new(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Failure::Runtime(e.into()))?;
    out!("{s}");
    Ok(())
}

pub fn models(cmd: ModelsCmd, config: Option<&Path>) -> Result<(), Failure> {
    let (_, c) = catalog(config)?;
    match cmd {
        ModelsCmd::List {
            agent,
            capability,
            json: as_json,
        } => {
            let lists = &c.config().model_allow_lists;
            if let Some(a) = agent.as_deref().filter(|a| {
                !lists.agent_model_maps.contains_key(*a)
                    && lists.unmapped_agent_access == UnmappedAgentAccess::Deny
            }) {
                // Most likely a typo: say so rather than list nothing.
                let known: Vec<&str> = lists.agent_model_maps.keys().map(String::as_str).collect();
                return Err(Failure::Input(anyhow!(
                    "agent `{a}` has no entry in slm.model_allow_lists.agent_model_maps and unmapped_agent_access is \"deny\": it may use no model (agents with an entry: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            }
            let mut list: Vec<&Model> = match &agent {
                Some(a) => c.get_models_for_agent(a),
                None => c.list_models().iter().collect(),
            };
            if let Some(cap) = capability {
                list.retain(|m| m.capabilities.contains(&cap));
            }
            if as_json {
                // Each model as `models show` gives it: with what its file
                // holds (present, size, digest, revision, commit).
                let mut v = Vec::new();
                for m in &list {
                    let mut o = serde_json::to_value(m).map_err(|e| Failure::Runtime(e.into()))?;
                    if let (Some(obj), Some(facts)) = (o.as_object_mut(), file_facts(m)) {
                        obj.insert("file".into(), facts);
                    }
                    v.push(o);
                }
                return json(&v);
            }
            out!(
                "{:<28} {:<30} {:<11} {:>9} {:>8}  CAPABILITIES",
                "ID",
                "NAME",
                "PROVIDER",
                "FILE",
                "MIN MB"
            );
            for m in &list {
                out!(
                    "{:<28} {:<30} {:<11} {:>9} {:>8}  {}",
                    m.id,
                    m.name,
                    m.provider.kind(),
                    file_column(m),
                    m.resource_requirements.min_memory_mb,
                    caps(m)
                );
            }
            if list.is_empty() {
                eprintln!("no models match");
            }
            Ok(())
        }
        ModelsCmd::Show { id } => {
            let m = c
                .get_model(&id)
                .ok_or_else(|| Failure::Input(anyhow!("unknown model `{id}`")))?;
            let mut v = serde_json::to_value(m).map_err(|e| Failure::Runtime(e.into()))?;
            if let (Some(obj), Some(facts)) = (v.as_object_mut(), file_facts(m)) {
                obj.insert("file".into(), facts);
            }
            json(&v)?;
            eprintln!("source: {}", location(m));
            Ok(())
        }
        ModelsCmd::Select {
            capabilities,
            max_memory,
            agent,
        } => {
            match c.find_best_model_for_requirements(&capabilities, max_memory, agent.as_deref()) {
                Some(m) => {
                    out!("{}", m.id);
                    Ok(())
                }
                None => Err(Failure::Runtime(anyhow!(
                    "no model has every capability asked for{}{}",
                    max_memory
                        .map(|m| format!(" within {m} MB"))
                        .unwrap_or_default(),
                    agent
                        .map(|a| format!(" and is allowed for agent `{a}`"))
                        .unwrap_or_default()
                ))),
            }
        }
        ModelsCmd::Pull(args) => crate::pull_cmd::pull_models(args, config),
        ModelsCmd::Verify(args) => crate::store_cmd::verify(args, config),
        ModelsCmd::Rm(args) => crate::store_cmd::rm(args, config),
        ModelsCmd::Gc(args) => crate::store_cmd::gc(args, config),
    }
}

pub fn profiles(cmd: ProfilesCmd, config: Option<&Path>) -> Result<(), Failure> {
    let (_, c) = catalog(config)?;
    let ProfilesCmd::Show { name } = cmd;
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => c
            .list_sandbox_profiles()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    for n in names {
        let (_, p) = profile(&c, Some(&n))?;
        let mut wrapper = toml::Table::new();
        let value = toml::Value::try_from(p).map_err(|e| Failure::Runtime(e.into()))?;
        wrapper.insert(n.clone(), value);
        let mut outer = toml::Table::new();
        let mut sp = toml::Table::new();
        sp.insert("sandbox_profiles".into(), toml::Value::Table(wrapper));
        outer.insert("slm".into(), toml::Value::Table(sp));
        let default = if c.config().default_sandbox_profile == n {
            " (default)"
        } else {
            ""
        };
        out!("# effective profile `{n}`{default}");
        out_raw!(
            "{}",
            toml::to_string_pretty(&outer).map_err(|e| Failure::Runtime(e.into()))?
        );
        out!();
    }
    Ok(())
}
