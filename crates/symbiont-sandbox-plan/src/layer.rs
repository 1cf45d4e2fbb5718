//! What a process reports after applying a plan: one row per layer.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::SocketPolicy;

/// Where `RLIMIT_NPROC` counts a process's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadCount {
    /// In a user namespace of its own.
    OwnUserNamespace,
    /// Under a uid no other process has.
    OwnUid,
}

/// One layer of the sandbox. The supervisor checks a worker's report by
/// these, so that a layer cannot go unchecked through a change of wording;
/// [`fmt::Display`] gives the words `sandbox report` and the metadata show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayerKind {
    /// Every inherited descriptor closed but the plan's.
    InheritedDescriptorsClosed,
    /// The nice value set.
    Priority,
    /// A user namespace of its own.
    UserNamespace,
    /// A network namespace of its own.
    NetworkNamespace,
    /// A System V IPC namespace of its own.
    IpcNamespace,
    /// The only network is the egress proxy's listener on this port.
    EgressProxyOnly {
        /// The listener's port on the namespace's loopback.
        port: u16,
    },
    /// The scratch directory as a size-limited tmpfs.
    ScratchTmpfs,
    /// Root given up for this unprivileged id.
    Identity {
        /// The user id.
        uid: u32,
        /// The group id.
        gid: u32,
    },
    /// A PID namespace whose init is the sandbox's.
    PidNamespace,
    /// A thread cap (`RLIMIT_NPROC`).
    Threads(ThreadCount),
    /// `RLIMIT_SIGPENDING`.
    QueuedSignals,
    /// `RLIMIT_AS`.
    Memory,
    /// `RLIMIT_CPU`.
    CpuTime,
    /// `RLIMIT_NOFILE`.
    OpenFiles,
    /// `RLIMIT_FSIZE`.
    FileSize,
    /// An inherited `READ_IMPLIES_EXEC` persona cleared.
    ReadImpliesExecCleared,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Not dumpable, not traceable.
    Undumpable,
    /// CPU affinity.
    Cpus,
    /// Landlock's filesystem (and TCP, scope) rules.
    Landlock,
    /// Every capability set emptied.
    Capabilities,
    /// The seccomp allow-list.
    SeccompAllowList,
    /// The seccomp deny-list.
    SeccompDenyList,
    /// x32 and foreign-architecture calls kill.
    SeccompForeignArchitectures,
    /// Calls that name another process refused.
    SeccompOtherProcesses,
    /// `TIOCSTI` refused.
    SeccompTerminalInjection,
    /// No new executable memory.
    SeccompNoExecMemory,
    /// No file mode, owner, time or attribute changes.
    SeccompNoFileMetadata,
    /// No System V IPC.
    SeccompNoSysvIpc,
    /// The parent-death signal cannot be changed.
    SeccompParentDeathSignal,
    /// Which sockets may be made.
    SeccompSockets(SocketPolicy),
}

impl LayerKind {
    /// Whether this is the seccomp policy itself (allow- or deny-list).
    pub fn is_seccomp_policy(self) -> bool {
        matches!(self, Self::SeccompAllowList | Self::SeccompDenyList)
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InheritedDescriptorsClosed => f.write_str("inherited file descriptors closed"),
            Self::Priority => f.write_str("priority: setpriority"),
            Self::UserNamespace => f.write_str("user namespace"),
            Self::NetworkNamespace => f.write_str("network namespace"),
            Self::IpcNamespace => f.write_str("IPC namespace"),
            Self::EgressProxyOnly { port } => write!(
                f,
                "network: only the egress proxy (127.0.0.1:{port} in its own namespace)"
            ),
            Self::ScratchTmpfs => f.write_str("scratch tmpfs (size-limited)"),
            Self::Identity { uid, gid } => {
                write!(f, "identity: root gave up for uid {uid}, gid {gid}")
            }
            Self::PidNamespace => {
                f.write_str("PID namespace (the whole tree dies with the caller)")
            }
            Self::Threads(ThreadCount::OwnUserNamespace) => {
                f.write_str("threads: RLIMIT_NPROC (own user namespace)")
            }
            Self::Threads(ThreadCount::OwnUid) => {
                f.write_str("threads: RLIMIT_NPROC (a uid of its own)")
            }
            Self::QueuedSignals => f.write_str("queued signals: RLIMIT_SIGPENDING"),
            Self::Memory => f.write_str("memory: RLIMIT_AS"),
            Self::CpuTime => f.write_str("cpu time: RLIMIT_CPU (lifetime backstop)"),
            Self::OpenFiles => f.write_str("open files: RLIMIT_NOFILE"),
            Self::FileSize => f.write_str("file size: RLIMIT_FSIZE"),
            Self::ReadImpliesExecCleared => {
                f.write_str("inherited READ_IMPLIES_EXEC persona cleared")
            }
            Self::NoNewPrivs => f.write_str("no_new_privs"),
            Self::Undumpable => f.write_str("undumpable (no ptrace, no /proc/<pid>/mem)"),
            Self::Cpus => f.write_str("cpus: sched_setaffinity"),
            Self::Landlock => f.write_str("landlock"),
            Self::Capabilities => f.write_str(
                "capabilities: none (effective, permitted, inheritable, ambient, bounding)",
            ),
            Self::SeccompAllowList => f.write_str("seccomp allow-list"),
            Self::SeccompDenyList => f.write_str("seccomp deny-list"),
            Self::SeccompForeignArchitectures => {
                f.write_str("seccomp: x32 and foreign-architecture calls kill")
            }
            Self::SeccompOtherProcesses => {
                f.write_str("seccomp: other processes unreachable (pid arguments)")
            }
            Self::SeccompTerminalInjection => {
                f.write_str("seccomp: no terminal input injection (TIOCSTI)")
            }
            Self::SeccompNoExecMemory => {
                f.write_str("seccomp: no new executable memory (PROT_EXEC)")
            }
            Self::SeccompNoFileMetadata => {
                f.write_str("seccomp: no file mode, owner, time or attribute changes")
            }
            Self::SeccompNoSysvIpc => f.write_str("seccomp: no System V IPC"),
            Self::SeccompParentDeathSignal => f.write_str("seccomp: the parent-death signal stays"),
            Self::SeccompSockets(SocketPolicy::None) => f.write_str("seccomp: no sockets"),
            Self::SeccompSockets(SocketPolicy::PairsOnly) => {
                f.write_str("seccomp: socket pairs only")
            }
            Self::SeccompSockets(SocketPolicy::Any) => {
                f.write_str("seccomp: sockets as the network allows")
            }
            Self::SeccompSockets(SocketPolicy::InetOnly) => {
                f.write_str("seccomp: inet sockets and socket pairs only")
            }
        }
    }
}

/// One layer and whether it is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The layer.
    pub kind: LayerKind,
    /// In force, or the gap and why.
    pub enforced: Result<(), String>,
}

/// What applying a plan put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Every layer the plan asked for, in order.
    pub layers: Vec<Layer>,
    /// Time the whole set-up took, in microseconds.
    pub setup_micros: u64,
}

impl Applied {
    /// The layers that are not in force.
    pub fn gaps(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| l.enforced.is_err())
    }

    /// Whether `kind` is reported, in force or as a gap.
    pub fn reports(&self, kind: LayerKind) -> bool {
        self.layers.iter().any(|l| l.kind == kind)
    }

    /// Whether `kind` is reported in force.
    pub fn in_force(&self, kind: LayerKind) -> bool {
        self.layers
            .iter()
            .any(|l| l.kind == kind && l.enforced.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_travels_as_kinds_and_reads_as_words() {
        let applied = Applied {
            layers: vec![
                Layer {
                    kind: LayerKind::EgressProxyOnly { port: 4100 },
                    enforced: Ok(()),
                },
                Layer {
                    kind: LayerKind::Landlock,
                    enforced: Err("PartiallyEnforced on this kernel".into()),
                },
            ],
            setup_micros: 7,
        };
        let json = serde_json::to_string(&applied).unwrap();
        let back: Applied = serde_json::from_str(&json).unwrap();
        assert_eq!(back, applied);
        assert!(back.in_force(LayerKind::EgressProxyOnly { port: 4100 }));
        assert!(!back.in_force(LayerKind::Landlock));
        assert!(back.reports(LayerKind::Landlock));
        assert!(!back.reports(LayerKind::SeccompAllowList));
        assert_eq!(
            LayerKind::EgressProxyOnly { port: 4100 }.to_string(),
            "network: only the egress proxy (127.0.0.1:4100 in its own namespace)"
        );
        assert_eq!(back.gaps().count(), 1);
    }
}
