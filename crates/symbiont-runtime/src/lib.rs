//! Symbiont runtime support for small language models (SLMs).
//!
//! - [`config`]: the `[slm]` TOML schema, its defaults and validation.
//! - [`models`]: the [`models::ModelCatalog`], the [`models::SlmRunner`] API
//!   and its runners.
//! - [`exec`]: any program under a sandbox profile, confined as a worker
//!   is.
//!
//! This crate never links llama.cpp: models run in a separate worker
//! executable (`symbi-slm-worker`) that a runner supervises.
#![deny(missing_docs)]

pub mod audit;
pub mod config;
pub mod egress;
pub mod exec;
pub mod models;
