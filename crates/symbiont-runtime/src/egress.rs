//! A profile's network policy as the egress proxy enforces it
//! (`symbiont-egress`), and its refusals as audit events.

use symbiont_egress::{Observer, Policy, PolicyError, Refusal, Rule, RuleProtocol};

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::{NetworkAccessMode, NetworkDestination, NetworkProtocol, SandboxProfile};

pub use symbiont_egress::{Kind, Proxy, ProxyStats, Throttle};

/// The port of the egress proxy's listener inside a restricted process's
/// own network namespace (`http_proxy=http://127.0.0.1:3128`). The
/// namespace holds nothing else, so a fixed port collides with nothing.
pub const PROXY_PORT: u16 = 3128;

/// One configured destination as a proxy rule.
pub fn rule(d: &NetworkDestination) -> Result<Rule, PolicyError> {
    let protocol = match d.protocol {
        None | Some(NetworkProtocol::TCP) => None,
        Some(NetworkProtocol::HTTP) => Some(RuleProtocol::Http),
        Some(NetworkProtocol::HTTPS) => Some(RuleProtocol::Https),
        // Refused by validation: the proxy carries TCP only.
        Some(NetworkProtocol::UDP) => return Err(PolicyError::NotTcp),
    };
    Rule::new(&d.host, d.port, protocol)
}

/// The egress policy of profile `name`, for `agent`; `None` unless its
/// network is `Restricted`. Rules that do not parse were refused when the
/// config was validated and are left out here.
pub fn policy_for(name: &str, profile: &SandboxProfile, agent: Option<&str>) -> Option<Policy> {
    let n = &profile.network;
    if n.access_mode != NetworkAccessMode::Restricted {
        return None;
    }
    let rules = n
        .allowed_destinations
        .iter()
        .filter_map(|d| rule(d).ok())
        .collect();
    Some(
        Policy::new(name, rules)
            .with_bandwidth_mbps(n.max_bandwidth_mbps)
            .for_agent(agent.map(str::to_string)),
    )
}

/// Writes every refusal to the audit log (`egress_refused`, control
/// `network.allowed_destinations`).
#[derive(Debug)]
pub struct AuditRefusals {
    log: AuditLog,
    to_file: bool,
    model: Option<String>,
}

impl AuditRefusals {
    /// Refusals go to `log` (and its file when `to_file`, the profile's
    /// `enable_audit_logging`), about `model` when a model's endpoint.
    pub fn new(log: AuditLog, to_file: bool, model: Option<String>) -> Self {
        Self {
            log,
            to_file,
            model,
        }
    }
}

impl Observer for AuditRefusals {
    fn refused(&self, policy: &Policy, refusal: &Refusal) {
        let event = AuditEvent::new(
            AuditKind::EgressRefused,
            "network.allowed_destinations",
            format!("refused {refusal}"),
        )
        .about(
            policy.agent.as_deref(),
            self.model.as_deref(),
            Some(&policy.profile),
        );
        self.log.record(&event, self.to_file);
    }
}
