//! The worker's engine, as a library so that benchmarks can run the very
//! same decode loop in-process, without the worker process, the protocol or
//! the sandbox. The `symbi-slm-worker` binary (`main.rs`) is its only other
//! user.

pub mod constraint;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod output;
pub mod schema;
#[cfg(feature = "engine")]
pub mod slots;
pub mod template;
pub mod text;
pub mod tools;
pub mod unique;
