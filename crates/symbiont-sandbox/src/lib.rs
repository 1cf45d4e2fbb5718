//! Kernel-enforced confinement of the model worker.
//!
//! This crate turns a concrete [`SandboxPlan`] into kernel state for the
//! calling process, in one ordered sequence ([`apply`]), and describes what
//! a plan enforces on this host ([`report`]). It owns the seccomp policy as
//! reviewed data (`syscalls.rs`). It never decides policy from config (the
//! runtime builds the plan) and never weakens a plan: a layer that cannot be
//! put in place fails closed when the plan is strict, and is reported as a
//! gap otherwise.
//!
//! Apply it before the process starts any thread and before it parses
//! untrusted input: Landlock binds only the calling thread and threads
//! created later.

mod apply;
pub mod exec;
mod filesystem;
mod handoff;
mod identity;
mod report;
mod seccomp;
pub mod spawn;
mod syscalls;

pub use apply::{apply, SandboxError};
pub use handoff::{proxy_handoff, receive_listener};
pub use identity::SCRATCH_INODES;
// The plan and the report are data in a crate of their own, which the
// protocol carries without compiling any of this crate's kernel code.
pub use report::{
    kernel_counts_threads_per_namespace, report, ControlRow, Enforcement, HostSupport, Need,
};
use symbiont_sandbox_plan as plan;
pub use symbiont_sandbox_plan::{
    per_process_uid, Applied, Layer, LayerKind, NetworkMode, SandboxPlan, SocketPolicy,
    SyscallPolicy, ThreadCount, PER_PROCESS_UID_BASE,
};
pub use syscalls::{never_allowed, syscall_number, WORKER_ALLOW_LIST, X32_SYSCALL_BIT};
