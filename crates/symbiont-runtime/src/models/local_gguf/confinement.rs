//! The supervisor's check of a worker's report of its confinement
//! against what the kernel shows of it from outside.

use symbiont_sandbox::LayerKind;

/// Checks a worker's report of its confinement against what the kernel
/// shows of it from outside (`/proc/<pid>/status`, readable for any
/// process): `no_new_privs` set; with a syscall policy, seccomp in filter
/// mode with every filter `apply` installs (beyond the supervisor's own)
/// and a policy in the report; no capability in the effective, permitted,
/// inheritable or ambient set; Landlock at least named in the report. A worker whose report claims
/// more than the kernel shows is refused.
pub(super) fn verify_confinement(
    pid: u32,
    plan: &symbiont_slm_protocol::SandboxPlan,
    reported: &symbiont_slm_protocol::Applied,
) -> Result<(), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Option<&str> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("NoNewPrivs") != Some("1") {
        return Err(format!(
            "NoNewPrivs is {:?}, not 1",
            field("NoNewPrivs").unwrap_or("missing")
        ));
    }
    let in_force = |kind: LayerKind| reported.in_force(kind);
    if plan.syscalls != symbiont_sandbox::SyscallPolicy::Off {
        if field("Seccomp") != Some("2") {
            return Err(format!(
                "the plan asks for a seccomp filter; the kernel shows Seccomp: {}",
                field("Seccomp").unwrap_or("missing")
            ));
        }
        // The x32 filter, the clone3 filter and the policy itself, beyond
        // any the supervisor runs under (a container's) and passed on.
        // Kernels before 5.9 do not show the count.
        if let Some(filters) = field("Seccomp_filters").and_then(|v| v.parse::<u32>().ok()) {
            let inherited = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|own| {
                    own.lines()
                        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
                        .and_then(|v| v.trim().parse::<u32>().ok())
                })
                .unwrap_or(0);
            if filters < inherited + 3 {
                return Err(format!(
                    "the kernel shows {filters} seccomp filter(s); the sandbox installs 3 beyond the supervisor's {inherited}"
                ));
            }
        }
        if !in_force(LayerKind::SeccompAllowList) && !in_force(LayerKind::SeccompDenyList) {
            return Err("the report names no seccomp policy".into());
        }
    }
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"]
        .iter()
        .filter(|_| plan.drop_capabilities)
    {
        let v = field(set).unwrap_or("missing");
        if u64::from_str_radix(v, 16) != Ok(0) {
            return Err(format!("{set} is {v}: the worker kept capabilities"));
        }
    }
    if plan.confine_filesystem && !in_force(LayerKind::Landlock) && !plan.strict {
        // A lenient plan may run without Landlock; the report must say so
        // as a gap, not leave it out.
        if !reported.reports(LayerKind::Landlock) {
            return Err("the report leaves out Landlock".into());
        }
    }
    if plan.strict && plan.confine_filesystem && !in_force(LayerKind::Landlock) {
        return Err("a strict plan's report does not show Landlock in force".into());
    }
    let policy = match plan.syscalls {
        symbiont_sandbox::SyscallPolicy::AllowList { .. } => Some(LayerKind::SeccompAllowList),
        symbiont_sandbox::SyscallPolicy::DenyList => Some(LayerKind::SeccompDenyList),
        symbiont_sandbox::SyscallPolicy::Off => None,
    };
    if let Some(policy) = policy.filter(|p| !in_force(*p)) {
        return Err(format!(
            "the plan asks for a {policy}; the report does not show it"
        ));
    }
    if plan.strict && reported.gaps().next().is_some() {
        return Err("a strict plan reported a gap instead of refusing to start".into());
    }
    if plan.network == symbiont_sandbox::NetworkMode::None
        && !reported.reports(LayerKind::NetworkNamespace)
    {
        return Err("the plan asks for no network; the report leaves out the namespace".into());
    }
    if plan.user_namespace && !reported.reports(LayerKind::UserNamespace) {
        return Err("the plan asks for a user namespace; the report leaves it out".into());
    }
    if plan.ipc_namespace && !reported.reports(LayerKind::IpcNamespace) {
        return Err("the plan asks for an IPC namespace; the report leaves it out".into());
    }
    let root = nix::unistd::geteuid().is_root();
    // The bounding set is empty whenever the worker could empty it: as
    // root, or inside a user namespace of its own.
    if plan.drop_capabilities && (plan.user_namespace || root) {
        let v = field("CapBnd").unwrap_or("missing");
        if u64::from_str_radix(v, 16) != Ok(0) {
            return Err(format!("CapBnd is {v}: the worker kept its bounding set"));
        }
    }
    // Started by root, the worker gave root up for the plan's ids (a uid
    // of its own, made from its pid).
    if let Some(gid) = plan.unprivileged_id.filter(|_| root) {
        let uid = if plan.per_process_uid {
            symbiont_sandbox::per_process_uid(pid)
        } else {
            gid
        };
        for (name, id) in [("Uid", uid), ("Gid", gid)] {
            let ids = field(name).unwrap_or("");
            if ids.is_empty() || !ids.split_whitespace().all(|u| u == id.to_string()) {
                return Err(format!("{name} is {ids:?}: the worker did not become {id}"));
            }
        }
        if field("Groups").is_some_and(|g| !g.is_empty()) {
            return Err(format!(
                "Groups is {:?}: the worker kept supplementary groups",
                field("Groups").unwrap_or("")
            ));
        }
    }
    // Nobody traces it.
    if field("TracerPid") != Some("0") {
        return Err(format!(
            "TracerPid is {}: something traces the worker",
            field("TracerPid").unwrap_or("missing")
        ));
    }
    // Namespaces: what the report says is in force must show in the
    // worker's namespace links (which differ from ours only if it really
    // entered new ones). An unprivileged supervisor cannot read the links
    // of an undumpable worker (the kernel asks for CAP_SYS_PTRACE): then
    // this part is not checked, and says so once.
    if !root
        && std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    {
        // The id map is readable, though: a worker in our user namespace
        // shows ours.
        let map = |p: &str| std::fs::read_to_string(format!("/proc/{p}/uid_map"));
        if in_force(LayerKind::UserNamespace) {
            match (map(&pid.to_string()), map("self")) {
                (Ok(theirs), Ok(ours)) if theirs == ours => {
                    return Err(
                        "the report says user namespace is in force, but the worker has the supervisor's id map"
                            .into(),
                    )
                }
                (Err(e), _) => return Err(format!("cannot read /proc/{pid}/uid_map: {e}")),
                _ => {}
            }
        }
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            tracing::warn!(
                "the worker's network and mount namespaces are not checked from outside (its user namespace is, by its id map): an unprivileged supervisor cannot read an undumpable process's /proc/<pid>/ns (run as root to check them)"
            )
        });
        return Ok(());
    }
    let ns = |pid: &str, kind: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .map_err(|e| format!("cannot read /proc/{pid}/ns/{kind}: {e}"))
    };
    let own = pid.to_string();
    for (layer, kind) in [
        (LayerKind::UserNamespace, "user"),
        (LayerKind::NetworkNamespace, "net"),
        (LayerKind::IpcNamespace, "ipc"),
        (LayerKind::ScratchTmpfs, "mnt"),
    ] {
        if in_force(layer) && ns(&own, kind)? == ns("self", kind)? {
            return Err(format!(
                "the report says {layer} is in force, but the worker shares the supervisor's {kind} namespace"
            ));
        }
    }
    Ok(())
}
