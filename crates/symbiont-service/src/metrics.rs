//! Prometheus metrics (text format, `GET /metrics`), through the
//! `prometheus-client` crate: the service's own counters and histograms,
//! and at each scrape the pool's runners' counters and load.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use symbiont_runtime::models::{ExecutionMetadata, RunnerMetrics};

/// One answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The authenticated agent (`-` before authentication).
    pub agent: String,
    /// A model of the catalog (`-` for none or an unknown name: clients
    /// cannot create label values).
    pub model: String,
    /// The route, such as `/v1/chat/completions`.
    pub endpoint: String,
    /// The HTTP status; 499 when the client went away first.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentModel {
    agent: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    model: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunnerLabels {
    model: String,
    profile: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 5 ms … ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    input_tokens: Family<AgentModel, Counter>,
    cached_tokens: Family<AgentModel, Counter>,
    output_tokens: Family<AgentModel, Counter>,
    ttft: HistogramFamily<ModelLabel>,
    duration: HistogramFamily<ModelLabel>,
    limit_hits: Family<LimitLabels, Counter>,
    sandbox_denials: Family<ModelLabel, Counter>,
    connections_refused: Counter,
    runners: Arc<Mutex<Vec<(String, String, RunnerMetrics)>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("symbi_slm");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by agent, model, endpoint and status (499: the client went away)",
            requests.clone(),
        );
        let input_tokens = Family::<AgentModel, Counter>::default();
        registry.register(
            "input_tokens",
            "Prompt tokens of completed requests, from the model's tokenizer",
            input_tokens.clone(),
        );
        let cached_tokens = Family::<AgentModel, Counter>::default();
        registry.register(
            "cached_tokens",
            "Prompt tokens found in a worker's prefix cache (part of input_tokens)",
            cached_tokens.clone(),
        );
        let output_tokens = Family::<AgentModel, Counter>::default();
        registry.register(
            "output_tokens",
            "Generated tokens of completed requests",
            output_tokens.clone(),
        );
        let ttft: HistogramFamily<ModelLabel> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from the request to its first generated token, as the runner measured it",
            ttft.clone(),
        );
        let duration: HistogramFamily<ModelLabel> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request to its complete result, as the service measured it (successful requests; a stream's last chunks are written after)",
            duration.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Requests stopped or shaped by a limit (max_tokens, context size, execution time, memory, …)",
            limit_hits.clone(),
        );
        let sandbox_denials = Family::<ModelLabel, Counter>::default();
        registry.register(
            "sandbox_denials",
            "Requests failed because the sandbox denied the worker something",
            sandbox_denials.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections answered 503 and closed because max_connections were open",
            connections_refused.clone(),
        );
        let runners = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(Box::new(RunnerCollector(runners.clone())));
        Self {
            registry,
            requests,
            input_tokens,
            cached_tokens,
            output_tokens,
            ttft,
            duration,
            limit_hits,
            sandbox_denials,
            connections_refused,
            runners,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, labels: RequestLabels) {
        self.requests.get_or_create(&labels).inc();
    }

    /// Records a completed execution.
    pub fn completed(&self, agent: &str, model: &str, m: &ExecutionMetadata, seconds: f64) {
        let am = AgentModel {
            agent: agent.into(),
            model: model.into(),
        };
        let ml = ModelLabel {
            model: model.into(),
        };
        self.input_tokens
            .get_or_create(&am)
            .inc_by(u64::from(m.input_tokens.unwrap_or(0)));
        self.cached_tokens
            .get_or_create(&am)
            .inc_by(u64::from(m.cached_tokens.unwrap_or(0)));
        self.output_tokens
            .get_or_create(&am)
            .inc_by(u64::from(m.output_tokens.unwrap_or(0)));
        if let Some(t) = m.time_to_first_token_ms {
            self.ttft.get_or_create(&ml).observe(t / 1e3);
        }
        self.duration.get_or_create(&ml).observe(seconds);
        for limit in &m.limits_hit {
            self.limit_hit(model, &format!("{limit:?}"));
        }
    }

    /// Counts a limit that stopped a request.
    pub fn limit_hit(&self, model: &str, limit: &str) {
        self.limit_hits
            .get_or_create(&LimitLabels {
                model: model.into(),
                limit: limit.into(),
            })
            .inc();
    }

    /// Counts a connection refused at the connection cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a sandbox denial.
    pub fn sandbox_denial(&self, model: &str) {
        self.sandbox_denials
            .get_or_create(&ModelLabel {
                model: model.into(),
            })
            .inc();
    }

    /// The text exposition, with the runners' figures as given.
    pub fn render(&self, runners: Vec<(String, String, RunnerMetrics)>) -> String {
        *self.runners.lock().unwrap_or_else(|p| p.into_inner()) = runners;
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding the metrics: {e}");
        }
        out
    }
}

/// OpenMetrics text as Prometheus' classic text format (0.0.4): a
/// counter's `HELP` and `TYPE` name its `_total` samples, `unknown` is
/// `untyped`, and `# UNIT` and `# EOF` go. The samples are the same lines.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let Some(rest) = line.strip_prefix("# HELP ") else {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|t| t.strip_suffix(" unknown"))
            {
                out.push_str(&format!("# TYPE {name} untyped\n"));
            } else if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|t| t.strip_suffix(" counter"))
            {
                out.push_str(&format!("# TYPE {name}_total counter\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        };
        // A family: its HELP, then its TYPE, whose kind says the name.
        let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
        let counter = lines
            .peek()
            .is_some_and(|t| *t == format!("# TYPE {name} counter"));
        let help = help.replace("\\\"", "\"");
        if counter {
            out.push_str(&format!("# HELP {name}_total {help}\n"));
        } else {
            out.push_str(&format!("# HELP {name} {help}\n"));
        }
    }
    out
}

type GetCount = fn(&RunnerMetrics) -> u64;
type GetGauge = fn(&RunnerMetrics) -> i64;

/// The pool's runners, as of the scrape.
#[derive(Debug)]
struct RunnerCollector(Arc<Mutex<Vec<(String, String, RunnerMetrics)>>>);

impl Collector for RunnerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runners = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let counters: [(&str, &str, GetCount); 11] = [
            ("runner_requests_cancelled", "Requests the worker stopped because their caller went away", |m| m.requests_cancelled),
            ("runner_requests_overloaded", "Requests refused because the model's queue was full", |m| m.requests_overloaded),
            ("runner_requests_expired_in_queue", "Requests whose deadline passed while they waited for a slot", |m| m.requests_expired_in_queue),
            ("worker_loads", "Workers started", |m| m.loads),
            ("worker_failures", "Workers lost (crashed, or killed for a protocol violation or an ignored cancel) and restarted on the next request", |m| m.worker_failures),
            ("worker_evictions", "Idle workers evicted for another's room in the host budget", |m| m.evictions),
            ("worker_unloads_keep_alive", "Workers unloaded after their keep-alive", |m| m.unloads_keep_alive),
            ("worker_retirements", "Workers retired near their CPU-time backstop", |m| m.retirements),
            ("egress_refused", "A remote model's connections refused by its profile's egress policy (each also an audit event)", |m| m.egress_refused),
            ("egress_sent_bytes", "Bytes a remote model's egress proxy sent to the endpoint", |m| m.egress_bytes_out),
            ("egress_received_bytes", "Bytes a remote model's egress proxy received from the endpoint", |m| m.egress_bytes_in),
        ];
        for (name, help, get) in counters {
            let probe = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for (model, profile, m) in runners.iter() {
                let labels = RunnerLabels {
                    model: model.clone(),
                    profile: profile.clone(),
                };
                ConstCounter::new(get(m)).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges: [(&str, &str, GetGauge); 8] = [
            ("queue_depth", "Requests waiting for a slot now", |m| m.queued as i64),
            ("slots_busy", "Slots running a request now", |m| m.slots_busy as i64),
            ("kv_cache_reserved_tokens", "Tokens of KV cache the running requests hold now (each its prompt plus max_tokens, at most the context)", |m| m.cache_tokens_reserved as i64),
            ("requests_not_started", "Requests holding a slot of a local model that its worker has not started: waiting for room in the KV cache, for the worker to load, or an embedding (0 for remote models)", |m| if m.cache_tokens == 0 { 0 } else { (m.slots_busy as u64).saturating_sub(m.requests_started) as i64 }),
            ("kv_cache_free_tokens", "Tokens of KV cache the loaded workers have left for new requests", |m| (m.cache_tokens.saturating_mul(m.workers as u64)).saturating_sub(m.cache_tokens_reserved) as i64),
            ("workers_loaded", "Worker processes loaded now", |m| m.workers as i64),
            ("worker_memory_estimate_bytes", "Resident memory each worker leases from the host budget (model + KV caches + buffers)", |m| (m.memory_estimate_mb as i64) << 20),
            ("worker_memory_peak_bytes", "Highest resident peak (VmHWM, from the kernel) measured of the model's workers; 0 before one ran", |m| m.memory_peak_mb.map_or(0, |mb| (mb * 1048576.0) as i64)),
        ];
        for (name, help, get) in gauges {
            let probe = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for (model, profile, m) in runners.iter() {
                let labels = RunnerLabels {
                    model: model.clone(),
                    profile: profile.clone(),
                };
                ConstGauge::new(get(m)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_text_names_counters_by_their_total_samples() {
        let m = Metrics::new();
        m.request(RequestLabels {
            agent: "a1".into(),
            model: "smollm2".into(),
            endpoint: "/v1/chat/completions".into(),
            status: "200".into(),
        });
        let done = ExecutionMetadata {
            time_to_first_token_ms: Some(12.0),
            ..Default::default()
        };
        m.completed("a1", "smollm2", &done, 0.5);
        let om = m.render(vec![]);
        assert!(om.contains("# TYPE symbi_slm_requests counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = classic_text(&om);
        assert!(
            text.contains("# HELP symbi_slm_requests_total HTTP requests answered")
                && text.contains("# TYPE symbi_slm_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "symbi_slm_requests_total{agent=\"a1\",model=\"smollm2\",endpoint=\"/v1/chat/completions\",status=\"200\"} 1\n"
        ), "{text}");
        // Histograms and gauges keep their names; nothing OpenMetrics-only
        // stays.
        assert!(text.contains("# TYPE symbi_slm_time_to_first_token_seconds histogram\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT") && !text.contains("unknown"));
        // Every sample line of the one is in the other.
        let samples = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(samples(&om), samples(&text));
    }
}
