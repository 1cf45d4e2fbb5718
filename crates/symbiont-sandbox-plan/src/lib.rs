//! The sandbox as data, shared by the side that decides and the side that
//! confines.
//!
//! The runtime builds a [`SandboxPlan`]; the worker applies it with
//! `symbiont-sandbox` (the kernel code) and answers with [`Applied`]: one
//! [`Layer`] per control, named by a [`LayerKind`] that the supervisor
//! matches on, never by its text. The protocol crate carries both and so
//! compiles no kernel code.

mod layer;
mod plan;

pub use layer::{Applied, Layer, LayerKind, ThreadCount};
pub use plan::{
    per_process_uid, NetworkMode, SandboxPlan, SocketPolicy, SyscallPolicy, PER_PROCESS_UID_BASE,
};
