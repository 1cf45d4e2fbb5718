//! The config in force: each request runs on the one in force when it
//! came ([`Current`]); a reload ([`Live::reload`]) puts a new one in force
//! for the requests after it, and the old one goes with its last request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use symbiont_runtime::config::ServiceSettings;
use symbiont_runtime::models::ModelPool;

use crate::auth::Tokens;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::{Service, Shared};

/// The service as a request finds it: the config in force when the
/// request came, for the whole request (a reload in between changes
/// nothing for it).
#[derive(Debug)]
pub struct Current(pub Service);

impl axum::extract::FromRequestParts<Live> for Current {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        live: &Live,
    ) -> Result<Self, Self::Rejection> {
        Ok(Current(live.current()))
    }
}

/// The service's config in force, without holding on to any one config
/// (what the router, the accept loop and a reloader keep: an old config's
/// pool, and its workers, go once its last request ends).
#[derive(Debug, Clone)]
pub struct Live {
    pub(crate) current: Arc<std::sync::RwLock<Arc<Shared>>>,
    pub(crate) draining: Arc<AtomicBool>,
}

impl Live {
    /// The service on the config in force now.
    pub fn current(&self) -> Service {
        let shared = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Service {
            shared,
            live: self.current.clone(),
            draining: self.draining.clone(),
        }
    }

    /// Starts draining, for good: `/ready` answers 503 from now on (a
    /// load balancer's health check, or Kubernetes' readiness probe, takes
    /// the replica out), while requests are still served, each answer
    /// closing its connection. What stops the service is the shutdown
    /// future given to [`Service::serve`]: `symbi-slm serve` resolves it
    /// `slm.service.drain_seconds` after a SIGTERM.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the service drains.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Puts `pool`'s config in force for the requests that come after:
    /// its tokens, allow-lists, profiles, models and limits (the metrics
    /// go on counting; the concurrency limits too, unless their values
    /// changed). Requests in progress finish on the config they came
    /// with. What the listening socket was made with (`listen`, the
    /// connection limits and timeouts, the shutdown grace) stays until a
    /// restart; the returned list says which of those the new config
    /// changes, against the config the service started with. Build `pool`
    /// with this service's pool's budget and let it [`ModelPool::adopt`]
    /// the runners that did not change, so that their workers stay loaded.
    pub fn reload(&self, pool: ModelPool) -> Vec<&'static str> {
        let mut live = self.current.write().unwrap_or_else(|p| p.into_inner());
        let (old, new) = (&live.socket, &pool.catalog().config().service);
        let fixed: Vec<&'static str> = [
            ("listen", old.listen != new.listen),
            (
                "max_connections",
                old.max_connections != new.max_connections,
            ),
            (
                "max_connections_per_client",
                old.max_connections_per_client != new.max_connections_per_client,
            ),
            (
                "header_timeout_seconds",
                old.header_timeout_seconds != new.header_timeout_seconds,
            ),
            (
                "send_timeout_seconds",
                old.send_timeout_seconds != new.send_timeout_seconds,
            ),
            (
                "shutdown_grace_seconds",
                old.shutdown_grace_seconds != new.shutdown_grace_seconds,
            ),
        ]
        .into_iter()
        .filter_map(|(k, changed)| changed.then_some(k))
        .collect();
        let next = Shared::next(&live, pool);
        *live = Arc::new(next);
        fixed
    }
}

impl Shared {
    pub(crate) fn new(pool: ModelPool, metrics: Arc<Metrics>, started: i64) -> Self {
        let config = pool.catalog().config();
        let settings = config.service.clone();
        let profile = settings
            .sandbox_profile
            .clone()
            .unwrap_or_else(|| config.default_sandbox_profile.clone());
        Shared {
            tokens: Tokens::new(&settings),
            limits: Arc::new(Limits::new(
                settings.max_concurrent_requests,
                settings.max_concurrent_per_agent,
            )),
            metrics,
            started,
            socket: Arc::new(settings.clone()),
            pool,
            settings,
            profile,
        }
    }

    /// The state after a reload to `pool`'s config: the metrics, start
    /// time and socket settings carried over; the concurrency limits too
    /// while their values stay (requests in progress hold their permits).
    fn next(old: &Shared, pool: ModelPool) -> Self {
        let mut next = Shared::new(pool, old.metrics.clone(), old.started);
        next.socket = old.socket.clone();
        let limits = |s: &ServiceSettings| (s.max_concurrent_requests, s.max_concurrent_per_agent);
        if limits(&next.settings) == limits(&old.settings) {
            next.limits = old.limits.clone();
        }
        next
    }
}
