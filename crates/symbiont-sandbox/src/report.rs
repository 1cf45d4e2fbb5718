//! What a plan enforces on this host: one row per control.

use serde::{Deserialize, Serialize};

/// What this host offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSupport {
    /// Landlock ABI version, 0 when unavailable.
    pub landlock_abi: i32,
    /// Whether seccomp filters can be installed.
    pub seccomp: bool,
    /// Whether we run as root.
    pub root: bool,
    /// Whether unprivileged user namespaces are allowed.
    pub user_namespaces: bool,
    /// Whether this process may make the namespaces a worker makes (user,
    /// network, mount, IPC), tried for real: a service manager's
    /// `RestrictNamespaces=` or a container's policy refuses them where
    /// the sysctls allow them.
    #[serde(default = "yes")]
    pub namespaces: bool,
    /// Whether a delegated cgroup v2 memory controller is usable.
    pub cgroup_memory: bool,
}

fn yes() -> bool {
    true
}

/// Tries, in a child that does nothing else, the `unshare` a worker makes
/// (user, network, mount and IPC namespaces). A definite answer (the child
/// said yes or no) is kept for the process; a probe that could not run
/// (no fork, an interrupted wait) answers no now and is tried again next
/// time, so a passing shortage never disables a strict profile for good.
fn namespaces_can_be_made() -> bool {
    static MADE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(known) = MADE.get() {
        return *known;
    }
    // SAFETY: fork in a process that may have threads: the child calls
    // only unshare and _exit (async-signal-safe, no allocation).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls in the forked child, which exits
        // at once with the answer.
        unsafe {
            let made = libc::unshare(
                libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_NEWIPC,
            ) == 0;
            libc::_exit(if made { 0 } else { 1 });
        }
    }
    let mut status = 0;
    let waited = loop {
        // SAFETY: waits for the child just forked, by its pid.
        let w = unsafe { libc::waitpid(pid, &mut status, 0) };
        if w < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break w;
    };
    if waited != pid || !libc::WIFEXITED(status) {
        return false;
    }
    let made = libc::WEXITSTATUS(status) == 0;
    let _ = MADE.set(made);
    made
}

/// Whether this kernel counts `RLIMIT_NPROC` per user namespace (5.14 and
/// later, with ucounts); before, it counts every process of the uid on the
/// host.
pub fn kernel_counts_threads_per_namespace() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (5, 14)
}

impl HostSupport {
    /// Reads the host's facts; the only side effect is a child process,
    /// once per process, that tries the namespaces a worker makes.
    pub fn probe() -> Self {
        // SAFETY: the landlock_create_ruleset version query takes a null
        // attribute pointer, size 0 and the VERSION flag; it creates nothing.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
            && std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
                .map(|s| s.trim() != "0")
                .unwrap_or(true)
            // Ubuntu's AppArmor confines unprivileged user namespaces
            // unless the program has a profile that allows them.
            && std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
                .map(|s| s.trim() != "1")
                .unwrap_or(true);
        let namespaces = namespaces_can_be_made();
        let userns = userns && namespaces;
        let cgroup_memory = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .map(|s| s.split_whitespace().any(|c| c == "memory"))
            .unwrap_or(false);
        Self {
            landlock_abi: abi.max(0) as i32,
            seccomp,
            root,
            user_namespaces: userns,
            namespaces,
            cgroup_memory,
        }
    }
}

/// Whether a control is enforced here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Enforced by the kernel.
    Yes,
    /// Partly; the string says what is missing.
    Partial(String),
    /// Not enforced; the string says why.
    No(String),
}

/// One control of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRow {
    /// The config key.
    pub control: String,
    /// The configured value.
    pub configured: String,
    /// The mechanism.
    pub mechanism: String,
    /// Whether it is enforced here.
    pub enforced: Enforcement,
}

/// Describes how each row's mechanism fares on `host`.
pub fn report(
    rows: Vec<(String, String, String, Vec<Need>)>,
    host: &HostSupport,
) -> Vec<ControlRow> {
    rows.into_iter()
        .map(|(control, configured, mechanism, needs)| {
            let missing: Vec<String> = needs.iter().filter_map(|n| n.missing(host)).collect();
            let enforced = if missing.is_empty() {
                Enforcement::Yes
            } else if missing.len() < needs.len() {
                Enforcement::Partial(missing.join("; "))
            } else {
                Enforcement::No(missing.join("; "))
            };
            ControlRow {
                control,
                configured,
                mechanism,
                enforced,
            }
        })
        .collect()
}

/// A kernel feature a mechanism needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Landlock at this ABI or later.
    Landlock(i32),
    /// seccomp filters.
    Seccomp,
    /// Namespaces (root, or unprivileged user namespaces).
    Namespaces,
    /// Unprivileged user namespaces, even for root (a process that gave
    /// root up creates one).
    UnprivilegedUserNamespaces,
    /// Nothing beyond POSIX (rlimits, prctl).
    Always,
    /// Something this project never uses here (cgroups): the string says.
    Unavailable(&'static str),
}

impl Need {
    fn missing(&self, h: &HostSupport) -> Option<String> {
        match *self {
            Need::Landlock(v) if h.landlock_abi < v => Some(format!(
                "landlock ABI {v} needed, kernel has {}",
                h.landlock_abi
            )),
            Need::Seccomp if !h.seccomp => Some("seccomp unavailable".into()),
            Need::Namespaces if !h.namespaces => Some(
                "this process may not make namespaces (a service manager's RestrictNamespaces=, a container's policy)".into(),
            ),
            Need::Namespaces if !h.root && !h.user_namespaces => {
                Some("unprivileged user namespaces are disabled".into())
            }
            Need::UnprivilegedUserNamespaces if !h.user_namespaces => {
                Some("unprivileged user namespaces are disabled or restricted on this host".into())
            }
            Need::Unavailable(why) => Some(why.into()),
            _ => None,
        }
    }
}
