//! Models: the catalog and the runners that execute them.

mod agent;
mod catalog;
mod local_gguf;
mod pool;
mod remote;
mod runner;
mod stream;

pub use agent::{AgentModels, AgentRunner};
pub use catalog::{
    CatalogStatistics, DenialReason, ModelCatalog, ModelCatalogError, UNMAPPED_AGENT_ACCESS_KEY,
};
pub use local_gguf::{
    default_slots, defaults, embed_context_mb, gguf, physical_memory_mb, sandbox_exec_plan_for,
    sandbox_plan_for, sandbox_report, threads_for, Budget, GgufError, GgufSummary, HostBudget,
    LocalGgufRunner, LocalGgufRunnerBuilder, RunnerLoad, RunnerMetrics, EMBED_ADDRESS_EXTRA_MB,
    WORKER_ENV, WORKER_FILE,
};
pub use pool::{ModelPool, ModelPoolBuilder, PoolRunner};
pub use remote::{RemoteRunner, SseParser, MAX_SSE_LINE, REMOTE_CONCURRENCY, REMOTE_QUEUE};
pub use runner::{
    ChatMessage, ChatRole, EmbeddingResult, ExecutionMetadata, ExecutionOptions, ExecutionResult,
    FinishReason, PromptMode, ResourceLimit, RunnerInfo, SlmRunner, SlmRunnerError, StreamEvent,
    WorkerLoss,
};
