//! Integration tests of symbiont-runtime: one binary, one module per area.

mod catalog;
mod config;
mod gguf_memory;
mod reference;
