//! Building a remote runner: the provider's endpoint and key, the
//! profile's network policy checked before any byte leaves, the egress
//! proxy under `Restricted`.

use super::*;

impl RemoteRunner {
    pub(super) async fn build(
        model_id: &str,
        provider: &ModelProvider,
        profile_name: &str,
        profile: SandboxProfile,
        requirements: ModelResourceRequirements,
        audit: Option<AuditLog>,
    ) -> Result<Self, SlmRunnerError> {
        let join = |base: &str, path: &str| {
            let base = base.trim_end_matches('/');
            if base.ends_with(path) {
                base.to_string()
            } else {
                format!("{base}{path}")
            }
        };
        let (kind, api, url, model_name, key_var, key_needed) = match provider {
            ModelProvider::OpenAI {
                model_name,
                base_url,
                api_key_env,
            } => (
                "OpenAI",
                Api::OpenAi,
                join(
                    base_url.as_deref().unwrap_or("https://api.openai.com/v1"),
                    "/chat/completions",
                ),
                model_name.clone(),
                Some(
                    api_key_env
                        .clone()
                        .unwrap_or_else(|| "OPENAI_API_KEY".into()),
                ),
                true,
            ),
            ModelProvider::Anthropic {
                model_name,
                base_url,
                api_key_env,
            } => (
                "Anthropic",
                Api::Anthropic,
                join(
                    base_url.as_deref().unwrap_or("https://api.anthropic.com"),
                    "/v1/messages",
                ),
                model_name.clone(),
                Some(
                    api_key_env
                        .clone()
                        .unwrap_or_else(|| "ANTHROPIC_API_KEY".into()),
                ),
                true,
            ),
            ModelProvider::Custom {
                endpoint_url,
                model_name,
                api_key_env,
            } => (
                "Custom",
                Api::Compatible,
                join(endpoint_url, "/chat/completions"),
                model_name.clone().unwrap_or_else(|| model_id.to_string()),
                api_key_env.clone(),
                api_key_env.is_some(),
            ),
            other => {
                return Err(SlmRunnerError::InvalidInput {
                    field: "model",
                    reason: format!(
                        "model `{model_id}` has provider {}, which is not a remote endpoint",
                        other.kind()
                    ),
                })
            }
        };
        let url = reqwest::Url::parse(&url)
            .map_err(|e| init(format!("model `{model_id}`: endpoint URL {url}: {e}")))?;
        let (host, port) = match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) if matches!(url.scheme(), "http" | "https") => (h.to_string(), p),
            _ => {
                return Err(init(format!(
                    "model `{model_id}`: endpoint URL {url} needs http(s), a host and a port"
                )))
            }
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_string)
            .unwrap_or(host);
        let destination = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };

        // The key: from the environment, never the config.
        let mut headers = Vec::new();
        let mut key = None;
        if let Some(var) = &key_var {
            match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => {
                    key = Some(Secret(k.trim().to_string()));
                    let (name, value) = match api {
                        Api::Anthropic => ("x-api-key", k.trim().to_string()),
                        _ => ("authorization", format!("Bearer {}", k.trim())),
                    };
                    let mut value = HeaderValue::from_str(&value).map_err(|_| {
                        init(format!(
                            "model `{model_id}`: the key in ${var} is not a valid header value"
                        ))
                    })?;
                    value.set_sensitive(true);
                    headers.push((HeaderName::from_static(name), value));
                }
                _ if key_needed => {
                    return Err(init(format!(
                        "model `{model_id}` ({kind}) needs its API key in the environment variable {var}, which is not set"
                    )))
                }
                _ => {}
            }
        }
        if api == Api::Anthropic {
            headers.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(wire::ANTHROPIC_VERSION),
            ));
        }

        // The network policy decides before anything is sent.
        let refuse = |reason: String| {
            let event = AuditEvent::new(
                AuditKind::EgressRefused,
                "network.allowed_destinations",
                format!("model `{model_id}`: {reason}"),
            )
            .about(None, Some(model_id), Some(profile_name));
            if let Some(audit) = &audit {
                audit.record(&event, profile.security.enable_audit_logging);
            }
            SlmRunnerError::InvalidInput {
                field: "sandbox_profile",
                reason,
            }
        };
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        let (client, egress) = match profile.network.access_mode {
            NetworkAccessMode::Full => (builder.build(), None),
            // A preflight: the policy admits the endpoint; nothing starts.
            NetworkAccessMode::Restricted if audit.is_none() => {
                let policy = egress::policy_for(profile_name, &profile, None)
                    .ok_or_else(|| init("a Restricted profile without a policy".into()))?;
                let how = if url.scheme() == "https" { Kind::Tunnel } else { Kind::Http };
                if let Err(r) = policy.admits_name(&host, port, how) {
                    return Err(refuse(format!(
                        "remote model `{model_id}` cannot reach {}: {}",
                        r.destination, r.reason
                    )));
                }
                (builder.build(), None)
            }
            NetworkAccessMode::Restricted => {
                let policy = egress::policy_for(profile_name, &profile, None).ok_or_else(|| {
                    init("a Restricted profile without a policy".into())
                })?;
                let how = if url.scheme() == "https" {
                    Kind::Tunnel
                } else {
                    Kind::Http
                };
                if let Err(r) = policy.admits_name(&host, port, how) {
                    return Err(refuse(format!(
                        "remote model `{model_id}` cannot reach {}: {}",
                        r.destination, r.reason
                    )));
                }
                let (user, secret) = ("symbiont", random_secret()?);
                let proxy = Proxy::new(policy)
                    .observed_by(Arc::new(AuditRefusals::new(
                        audit.clone().unwrap_or_default(),
                        profile.security.enable_audit_logging,
                        Some(model_id.to_string()),
                    )))
                    .require_credential(user, &secret)
                    // Another local user cannot even hold a connection
                    // (issue 18, row 8).
                    .only_for_user(nix::unistd::geteuid().as_raw());
                let stats = proxy.stats();
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .map_err(|e| init(format!("egress proxy: {e}")))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| init(format!("egress proxy: {e}")))?;
                let task = tokio::spawn(Arc::new(proxy).serve(listener));
                let via = reqwest::Proxy::all(format!("http://{addr}"))
                    .map_err(|e| init(format!("egress proxy: {e}")))?
                    .basic_auth(user, &secret);
                (builder.proxy(via).build(), Some(EgressTask { stats, task }))
            }
            _ => {
                return Err(refuse(format!(
                    "profile `{profile_name}` allows no network (access_mode = None): remote model `{model_id}` cannot reach {destination}; use a Restricted profile whose allowed_destinations list it"
                )))
            }
        };
        let client = client.map_err(|e| init(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model_id: model_id.to_string(),
                provider: kind,
                api,
                url,
                destination,
                model_name,
                key_var,
                key,
                headers,
                client,
                profile_name: profile_name.to_string(),
                profile,
                requirements,
                egress,
                slots: Arc::new(Semaphore::new(REMOTE_CONCURRENCY)),
                waiting: AtomicUsize::new(0),
                counters: Mutex::new(RunnerMetrics {
                    slots: REMOTE_CONCURRENCY,
                    ..RunnerMetrics::default()
                }),
            }),
        })
    }
}

fn random_secret() -> Result<String, SlmRunnerError> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b)
        .map_err(|e| init(format!("no randomness for the proxy credential: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
