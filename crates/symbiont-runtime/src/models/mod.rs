//! Models: the catalog and the runners that execute them.

mod agent;
mod catalog;
mod file_config;
pub mod hub;
mod local_gguf;
mod pool;
mod remote;
mod runner;
mod stream;
mod tools;

pub use agent::{AgentModels, AgentRunner};
pub use catalog::{
    CatalogStatistics, DenialReason, ModelCatalog, ModelCatalogError, UNMAPPED_AGENT_ACCESS_KEY,
};
pub use file_config::{config_for_file, config_for_hub, FileConfig, FILE_PROFILE};
pub(crate) use local_gguf::threads_for;
pub use local_gguf::{
    defaults, digest, find_worker, gguf, sandbox_exec_plan_for, sandbox_plan_for, sandbox_report,
    Budget, GgufError, GgufSummary, HostBudget, LocalGgufRunner, LocalGgufRunnerBuilder,
    RunnerLoad, RunnerMetrics, WorkerStatus,
};
pub use pool::{ModelPool, ModelPoolBuilder, PoolRunner};
pub use remote::{RemoteRunner, SseParser};
pub use runner::{
    ChatMessage, ChatRole, EmbeddingResult, ExecutionMetadata, ExecutionOptions, ExecutionResult,
    FinishReason, PromptMode, ResourceLimit, ResponseFormat, RunnerInfo, SlmRunner, SlmRunnerError,
    StreamEvent, WorkerLoss, MAX_RESPONSE_FORMAT_BYTES,
};
pub use tools::{ToolCall, ToolCallDelta, ToolChoice, ToolDefinition, MAX_TOOLS};
