//! Sandbox profiles: everything that confines one model execution, and
//! the built-in `secure` and `standard`.

use serde::{Deserialize, Serialize};

/// Everything that confines one model execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxProfile {
    /// Memory, CPU, disk and device limits.
    pub resources: ResourceConstraints,
    /// What the worker may read and write.
    pub filesystem: FilesystemControls,
    /// Time, children, syscalls and priority.
    pub process_limits: ProcessLimits,
    /// Network access.
    pub network: NetworkPolicy,
    /// Hardening switches.
    pub security: SecuritySettings,
}

/// Memory, CPU, disk and device limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceConstraints {
    /// Memory limit of the worker, in MB.
    pub max_memory_mb: u64,
    /// CPU cores the worker may use (fractions allowed).
    pub max_cpu_cores: f32,
    /// Scratch disk the worker may fill, in MB.
    pub max_disk_mb: u64,
    /// GPU access. Only `None` is supported.
    pub gpu_access: GpuAccess,
    /// Disk I/O bandwidth limit. Not supported yet: must be absent.
    pub max_io_bandwidth_mbps: Option<u64>,
}

/// Access to GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GpuAccess {
    /// No GPU device reachable.
    None,
    /// A share of a GPU (not supported yet).
    Shared {
        /// Video memory limit, in MB.
        max_memory_mb: u64,
    },
    /// A whole GPU (not supported yet).
    Exclusive,
}

/// What the worker may read and write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesystemControls {
    /// Paths the worker may read, besides its model file.
    pub read_paths: Vec<String>,
    /// Paths the worker may write, besides its scratch directory.
    pub write_paths: Vec<String>,
    /// Paths that stay out of reach even below an allowed path.
    pub denied_paths: Vec<String>,
    /// Whether the worker gets a private scratch directory.
    pub allow_temp_files: bool,
    /// Largest file the worker may write, in MB.
    pub max_file_size_mb: u64,
}

/// Time, children, syscalls and priority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessLimits {
    /// Child processes the worker may create (0: none).
    pub max_child_processes: u32,
    /// Wall-clock limit of one execution, in seconds.
    pub max_execution_time_seconds: u64,
    /// Syscalls allowed beyond the worker's own reviewed list.
    pub allowed_syscalls: Vec<String>,
    /// Nice value of the worker, -20 (highest) to 19 (lowest).
    pub process_priority: i8,
}

/// Network access of the worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkPolicy {
    /// None, Restricted or Full.
    pub access_mode: NetworkAccessMode,
    /// Where `Restricted` may connect to.
    pub allowed_destinations: Vec<NetworkDestination>,
    /// Bandwidth cap of the egress proxy, megabits per second (only with
    /// `Restricted`, > 0): a token bucket over the bytes it carries each
    /// way.
    pub max_bandwidth_mbps: Option<u64>,
}

/// How much network the worker gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NetworkAccessMode {
    /// No network at all.
    None,
    /// Only `allowed_destinations`, through an egress proxy that judges
    /// the address it connects to: for `sandbox exec` programs and remote
    /// models' runners; a model worker gets no network at all.
    Restricted,
    /// No restriction.
    Full,
}

/// One allowed network destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDestination {
    /// Host name or address.
    pub host: String,
    /// Port, or any port when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// Protocol, or any when absent.
    #[serde(default)]
    pub protocol: Option<NetworkProtocol>,
}

/// Network protocols a destination may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
#[non_exhaustive]
pub enum NetworkProtocol {
    /// TCP.
    TCP,
    /// UDP.
    UDP,
    /// HTTP over TCP.
    HTTP,
    /// HTTPS over TCP.
    HTTPS,
}

/// Hardening switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecuritySettings {
    /// Install a seccomp allow-list (true) or only a deny-list of dangerous
    /// calls (false).
    pub strict_syscall_filtering: bool,
    /// Make the worker undumpable and untraceable.
    pub disable_debugging: bool,
    /// Write security events to the audit log file.
    pub enable_audit_logging: bool,
    /// Require encryption (not supported yet: must be `false`).
    pub require_encryption: bool,
    /// Give every agent a worker of its own: requests of different agents
    /// never share a process, its memory or its prompt cache (a cached
    /// prefix would otherwise tell one agent, by its speed, what another
    /// agent's prompt began with; a prompt that takes the worker over would
    /// see the others'). Costs a worker's KV cache and compute buffers per
    /// agent, not the model (its weights are a shared read-only mapping).
    /// On in `secure`, off in `standard`.
    pub isolate_agents: bool,
}

impl SandboxProfile {
    /// The built-in `secure` profile: 512 MB, 1 core, 100 MB disk, no
    /// network, nice 19, no child processes, 300 s, strict syscall filtering.
    pub fn secure() -> Self {
        Self {
            resources: ResourceConstraints {
                max_memory_mb: 512,
                max_cpu_cores: 1.0,
                max_disk_mb: 100,
                gpu_access: GpuAccess::None,
                max_io_bandwidth_mbps: None,
            },
            filesystem: FilesystemControls {
                read_paths: Vec::new(),
                write_paths: Vec::new(),
                denied_paths: vec!["/etc".into(), "/proc".into(), "/sys".into()],
                allow_temp_files: true,
                max_file_size_mb: 10,
            },
            process_limits: ProcessLimits {
                max_child_processes: 0,
                max_execution_time_seconds: 300,
                allowed_syscalls: Vec::new(),
                process_priority: 19,
            },
            network: NetworkPolicy {
                access_mode: NetworkAccessMode::None,
                allowed_destinations: Vec::new(),
                max_bandwidth_mbps: None,
            },
            security: SecuritySettings {
                strict_syscall_filtering: true,
                disable_debugging: true,
                enable_audit_logging: true,
                require_encryption: false,
                isolate_agents: true,
            },
        }
    }

    /// The built-in `standard` profile: 1024 MB, 2 cores, 500 MB disk, 600 s,
    /// nice 0, no network, no child processes, deny-list syscall filtering.
    pub fn standard() -> Self {
        let mut p = Self::secure();
        p.resources.max_memory_mb = 1024;
        p.resources.max_cpu_cores = 2.0;
        p.resources.max_disk_mb = 500;
        p.filesystem.max_file_size_mb = 100;
        p.process_limits.max_execution_time_seconds = 600;
        p.process_limits.process_priority = 0;
        p.security.strict_syscall_filtering = false;
        p.security.isolate_agents = false;
        p
    }

    /// The built-in profile of that name, if there is one.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "secure" => Some(Self::secure()),
            "standard" => Some(Self::standard()),
            _ => None,
        }
    }
}

/// Names of the built-in profiles.
pub const BUILTIN_PROFILES: [&str; 2] = ["secure", "standard"];
