//! Models: the catalog and the runners that execute them.

mod catalog;
mod runner;

pub use catalog::{
    CatalogStatistics, DenialReason, ModelCatalog, ModelCatalogError, UNMAPPED_AGENT_ACCESS_KEY,
};
pub use runner::{
    ExecutionMetadata, ExecutionOptions, ExecutionResult, FinishReason, PromptMode, ResourceLimit,
    RunnerInfo, SlmRunner, SlmRunnerError,
};
