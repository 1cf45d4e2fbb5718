//! The result of a request: the worker's figures, the caller's timings
//! and the sandbox in force, as `ExecutionMetadata`; the worker's refusals
//! as runner errors.

use std::time::Duration;

use symbiont_slm_protocol::{Finish, GenerationStats, RequestError};
use tokio::time::Instant;

use crate::audit::AuditKind;

use crate::models::{
    ExecutionMetadata, ExecutionResult, FinishReason, ResourceLimit, SlmRunnerError,
};

/// Splits the applied layers into those in force and the gaps.
pub(super) fn set_sandbox_facts(
    layers: &mut Vec<String>,
    gaps: &mut Vec<String>,
    applied: &symbiont_slm_protocol::Applied,
) {
    for l in &applied.layers {
        match &l.enforced {
            Ok(()) => layers.push(l.kind.to_string()),
            Err(why) => gaps.push(format!("{}: {why}", l.kind)),
        }
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(super) fn map_request_error(e: RequestError) -> SlmRunnerError {
    match e {
        RequestError::PromptTooLong {
            tokens,
            context_size,
        } => SlmRunnerError::ContextLengthExceeded {
            prompt_tokens: tokens,
            context_size,
        },
        RequestError::BadRequest { detail } => SlmRunnerError::InvalidInput {
            field: "request",
            reason: detail,
        },
        RequestError::Constraint { detail, at } => SlmRunnerError::InvalidInput {
            field: "response_format",
            reason: match at {
                Some(at) => format!("{detail} (at {:?} in the schema)", at),
                None => detail,
            },
        },
        // The caller's format is what the engine gave up on (a grammar too
        // wide for its per-token limits): the caller's error.
        e @ RequestError::ConstrainedSampling { .. } => SlmRunnerError::InvalidInput {
            field: "response_format",
            reason: e.to_string(),
        },
        other => SlmRunnerError::ExecutionFailed {
            reason: other.to_string(),
        },
    }
}

pub(super) fn result(
    response: String,
    stats: GenerationStats,
    started: Instant,
    ttft: Option<f64>,
    peak: Option<u64>,
    model_load_ms: Option<f64>,
) -> ExecutionResult {
    let (finish_reason, limits_hit) = match stats.finish {
        Finish::EndOfText | Finish::StopSequence => (FinishReason::Stop, vec![]),
        Finish::MaxTokens => (FinishReason::Length, vec![ResourceLimit::MaxTokens]),
        Finish::ContextFull => (FinishReason::Length, vec![ResourceLimit::ContextSize]),
        Finish::Cancelled => (FinishReason::Cancelled, vec![]),
        Finish::Timeout => (FinishReason::Timeout, vec![ResourceLimit::ExecutionTime]),
        Finish::ToolCalls => (FinishReason::ToolCalls, vec![]),
    };
    let per_second = |n: f64, ms: f64| (ms > 0.0 && n > 0.0).then(|| n * 1e3 / ms);
    ExecutionResult {
        response,
        tool_calls: Vec::new(),
        metadata: ExecutionMetadata {
            input_tokens: Some(stats.input_tokens),
            output_tokens: Some(stats.output_tokens),
            execution_time_ms: ms(started.elapsed()),
            time_to_first_token_ms: ttft,
            // Only the tokens decoded: those found in the cache cost nothing.
            prompt_tokens_per_second: per_second(
                stats.input_tokens.saturating_sub(stats.cached_tokens) as f64,
                stats.prompt_ms,
            ),
            // The first token's time belongs to the prompt; the rate counts
            // the tokens decoded after it.
            generation_tokens_per_second: per_second(
                stats.output_tokens.saturating_sub(1) as f64,
                stats.generation_ms,
            ),
            worker_time_ms: Some(stats.total_ms),
            model_load_ms,
            worker_peak_memory_mb: peak.map(|b| b as f64 / (1024.0 * 1024.0)),
            cached_tokens: Some(stats.cached_tokens),
            finish_reason: Some(finish_reason),
            stop_sequence: stats.stop_sequence,
            steered_tokens: stats.steered_tokens,
            limits_hit,
            sandbox_layers: Vec::new(),
            sandbox_gaps: Vec::new(),
        },
    }
}

/// The config key a limit stands for, as audit events name it.
/// The audit event a failed request gives, if its failure matters for
/// security: kind and control.
pub(super) fn audit_event_for(e: &SlmRunnerError) -> Option<(AuditKind, String)> {
    match e {
        SlmRunnerError::WorkerCrashed { .. } => Some((AuditKind::WorkerCrash, "worker".into())),
        SlmRunnerError::ResourceLimitExceeded { limit, .. } => {
            Some((AuditKind::LimitHit, limit_key(*limit).into()))
        }
        SlmRunnerError::ExecutionTimeout { .. } => Some((
            AuditKind::LimitHit,
            "process_limits.max_execution_time_seconds".into(),
        )),
        SlmRunnerError::SandboxViolation { control, .. } => {
            Some((AuditKind::Denial, control.clone()))
        }
        SlmRunnerError::Overloaded { .. } => Some((AuditKind::LimitHit, "queue_capacity".into())),
        _ => None,
    }
}

pub(super) fn limit_key(limit: ResourceLimit) -> &'static str {
    match limit {
        ResourceLimit::Memory => "resources.max_memory_mb",
        ResourceLimit::CpuTime => "process_limits.max_execution_time_seconds (CPU time)",
        ResourceLimit::ExecutionTime => "process_limits.max_execution_time_seconds",
        ResourceLimit::Disk => "resources.max_disk_mb",
        ResourceLimit::FileSize => "filesystem.max_file_size_mb",
        ResourceLimit::ChildProcesses => "process_limits.max_child_processes",
        ResourceLimit::MaxTokens => "max_tokens",
        ResourceLimit::ContextSize => "context size",
        ResourceLimit::QueueCapacity => "queue_capacity",
        ResourceLimit::StreamBuffer => "stream buffer",
    }
}
