//! seccomp: the policy of `syscalls.rs` turned into filters, argument rules
//! (clone, pids, ioctl, fcntl, prctl, sockets, create modes, executable
//! memory) and the x32 and ENOSYS filters, installed last.

use std::collections::BTreeMap;
use std::io;

use seccompiler::SeccompCmpArgLen::{Dword, Qword};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::apply::SandboxError;
use crate::plan::{NetworkMode, SandboxPlan, SocketPolicy, SyscallPolicy};
use crate::syscalls::{
    never_allowed, syscall_number, PidArg, ALLOWED_PRCTL, CHILD_ALLOW_LIST, CLONE_NEW_FLAGS,
    DENIED_FCNTL, DENIED_IOCTLS, DENIED_PRCTL, DENY_LIST, EXEC_ALLOW_LIST, EXEC_NET_ALLOW_LIST,
    METADATA_WRITES, PID_CALLS, SYSV_IPC, WORKER_ALLOW_LIST, X32_SYSCALL_BIT,
};

fn rules_for(
    names: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut rules = BTreeMap::new();
    for n in names {
        let n = n.as_ref();
        let nr = syscall_number(n).ok_or_else(|| SandboxError::UnknownSyscall(n.to_string()))?;
        rules.insert(nr, Vec::new());
    }
    Ok(rules)
}

fn seccomp_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Seccomp(e.to_string())
}

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, len, op, value).map_err(seccomp_err)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conditions).map_err(seccomp_err)
}

fn nr(name: &str) -> Result<i64, SandboxError> {
    syscall_number(name).ok_or_else(|| SandboxError::UnknownSyscall(name.into()))
}

/// Allow-list: when `clone` is allowed, it is allowed only without any
/// `CLONE_NEW*` flag, and only for threads when `threads_only`.
fn clone_allowed(threads_only: bool) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut all = Vec::new();
    if threads_only {
        let thread = libc::CLONE_THREAD as u64;
        all.push(cond(0, Qword, SeccompCmpOp::MaskedEq(thread), thread)?);
    }
    for (_, flag) in CLONE_NEW_FLAGS {
        all.push(cond(0, Qword, SeccompCmpOp::MaskedEq(*flag), 0)?);
    }
    Ok(vec![rule(all)?])
}

/// Deny-list: `clone` is refused with any `CLONE_NEW*` flag, and without
/// `CLONE_THREAD` when `threads_only`.
fn clone_denied(threads_only: bool) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    if threads_only {
        let thread = libc::CLONE_THREAD as u64;
        rules.push(rule(vec![cond(
            0,
            Qword,
            SeccompCmpOp::MaskedEq(thread),
            0,
        )?])?);
    }
    for (_, flag) in CLONE_NEW_FLAGS {
        rules.push(rule(vec![cond(
            0,
            Qword,
            SeccompCmpOp::MaskedEq(*flag),
            *flag,
        )?])?);
    }
    Ok(rules)
}

/// Allow-list rules for a pid call: the caller itself only (`me`, or 0).
/// pids are `int`s: only the low 32 bits count, as in the kernel.
fn own_pid_allowed(arg: PidArg, me: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    let (which, pid_arg, targets) = match arg {
        PidArg::OwnOnly(i) => (None, i, vec![me]),
        PidArg::Pid(i) => (None, i, vec![0, me]),
        PidArg::WhichWho(w) => (Some(w), 1, vec![0, me]),
    };
    let mut rules = Vec::new();
    for target in targets {
        let mut c = vec![cond(pid_arg, Dword, SeccompCmpOp::Eq, target)?];
        if let Some(w) = which {
            c.push(cond(0, Dword, SeccompCmpOp::Eq, w)?);
        }
        rules.push(rule(c)?);
    }
    Ok(rules)
}

/// Allow-list rules for a pid call of a plan with child processes, which
/// has a PID namespace of its own (apply.rs refuses such a plan without
/// one): any process of the namespace, the sandboxed tree, but its init
/// (pid 1, ours). For the `which, who` calls, `which` still names a single
/// process.
fn tree_pid_allowed(arg: PidArg) -> Result<Vec<SeccompRule>, SandboxError> {
    let (which, pid_arg) = match arg {
        PidArg::OwnOnly(i) | PidArg::Pid(i) => (None, i),
        PidArg::WhichWho(w) => (Some(w), 1),
    };
    let mut c = vec![cond(pid_arg, Dword, SeccompCmpOp::Ne, 1)?];
    if let Some(w) = which {
        c.push(cond(0, Dword, SeccompCmpOp::Eq, w)?);
    }
    Ok(vec![rule(c)?])
}

/// Deny-list rules for a pid call of a plan with child processes: the
/// namespace's init, or (`which, who` calls) anything but one process.
fn init_pid_denied(arg: PidArg) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    let pid_arg = match arg {
        PidArg::OwnOnly(i) | PidArg::Pid(i) => i,
        PidArg::WhichWho(w) => {
            rules.push(rule(vec![cond(0, Dword, SeccompCmpOp::Ne, w)?])?);
            1
        }
    };
    rules.push(rule(vec![cond(pid_arg, Dword, SeccompCmpOp::Eq, 1)?])?);
    Ok(rules)
}

/// Deny-list rules for a pid call: anything but the caller itself.
fn other_pid_denied(arg: PidArg, me: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    let pid_arg = match arg {
        PidArg::OwnOnly(i) => {
            rules.push(rule(vec![cond(i, Dword, SeccompCmpOp::Ne, me)?])?);
            return Ok(rules);
        }
        PidArg::Pid(i) => i,
        PidArg::WhichWho(w) => {
            rules.push(rule(vec![cond(0, Dword, SeccompCmpOp::Ne, w)?])?);
            1
        }
    };
    rules.push(rule(vec![
        cond(pid_arg, Dword, SeccompCmpOp::Ne, 0)?,
        cond(pid_arg, Dword, SeccompCmpOp::Ne, me)?,
    ])?);
    Ok(rules)
}

/// Allow-list: a listed call is allowed only under `conditions`; an
/// unlisted one stays refused.
fn restrict(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, conditions: Vec<SeccompRule>) {
    if let Some(r) = rules.get_mut(&nr) {
        *r = conditions;
    }
}

/// Calls that create a file with a mode: the argument holding the mode,
/// and for `open`/`openat` the one holding the flags (the mode counts only
/// with `O_CREAT` or `O_TMPFILE`; without them a caller may pass anything).
const CREATE_MODE_CALLS: &[(&str, u8, Option<u8>)] = &[
    ("open", 2, Some(1)),
    ("openat", 3, Some(2)),
    ("creat", 1, None),
    ("mknod", 1, None),
    ("mknodat", 2, None),
];

/// The flags under which `open` uses its mode: `O_CREAT`, `__O_TMPFILE`.
const CREATING_FLAGS: [u64; 2] = [libc::O_CREAT as u64, 0o2000_0000];

/// The set-user-ID and set-group-ID mode bits.
const SET_ID_BITS: u64 = (libc::S_ISUID | libc::S_ISGID) as u64;

/// Allow-list rules: the call with a mode holding neither set-id bit, or
/// (`open`/`openat`) without a flag that creates.
fn no_set_id_mode(arg: u8, flags: Option<u8>) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = vec![rule(vec![cond(
        arg,
        Dword,
        SeccompCmpOp::MaskedEq(SET_ID_BITS),
        0,
    )?])?];
    if let Some(f) = flags {
        let creating = CREATING_FLAGS.iter().fold(0, |a, b| a | b);
        rules.push(rule(vec![cond(
            f,
            Dword,
            SeccompCmpOp::MaskedEq(creating),
            0,
        )?])?);
    }
    Ok(rules)
}

/// Deny-list rules: the call with a mode holding either set-id bit (and,
/// for `open`/`openat`, a flag that creates).
fn set_id_mode(arg: u8, flags: Option<u8>) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    for bit in [libc::S_ISUID as u64, libc::S_ISGID as u64] {
        let with_bit = cond(arg, Dword, SeccompCmpOp::MaskedEq(bit), bit)?;
        match flags {
            None => rules.push(rule(vec![with_bit])?),
            Some(f) => {
                for flag in CREATING_FLAGS {
                    rules.push(rule(vec![
                        cond(arg, Dword, SeccompCmpOp::MaskedEq(bit), bit)?,
                        cond(f, Dword, SeccompCmpOp::MaskedEq(flag), flag)?,
                    ])?);
                }
            }
        }
    }
    Ok(rules)
}

/// `personality` flag that makes every readable mapping executable.
pub(crate) const READ_IMPLIES_EXEC: libc::c_int = 0x0400000;

/// The calls that can make memory executable, the argument that carries
/// the protection, and the bit that asks for it.
const EXEC_MEMORY_CALLS: &[(&str, u8, u64)] = &[
    ("mmap", 2, libc::PROT_EXEC as u64),
    ("mprotect", 2, libc::PROT_EXEC as u64),
    ("pkey_mprotect", 2, libc::PROT_EXEC as u64),
    ("shmat", 2, libc::SHM_EXEC as u64),
];

/// `socketpair` of stream or seqpacket sockets only. A datagram pair's
/// end can `sendto` any socket path (`/dev/log`, a journal), which
/// Landlock does not govern and a network namespace does not isolate;
/// stream and seqpacket ends ignore or refuse an address.
const PAIR_TYPES: [libc::c_int; 2] = [libc::SOCK_STREAM, libc::SOCK_SEQPACKET];
/// The type bits of `socketpair`'s second argument (without `SOCK_CLOEXEC`
/// and `SOCK_NONBLOCK`).
const SOCK_TYPE_MASK: u64 = 0xf;

/// Allow-list rules: `socketpair` of the types in [`PAIR_TYPES`].
fn pairs_allowed() -> Result<Vec<SeccompRule>, SandboxError> {
    PAIR_TYPES
        .iter()
        .map(|&t| {
            rule(vec![cond(
                1,
                Dword,
                SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
                t as u64,
            )?])
        })
        .collect()
}

/// Deny-list rules: `socketpair` of every other type (one rule per value
/// of the type bits: seccomp compares masked arguments for equality only).
fn pairs_denied() -> Result<Vec<SeccompRule>, SandboxError> {
    (0..=SOCK_TYPE_MASK)
        .filter(|t| !PAIR_TYPES.contains(&(*t as libc::c_int)))
        .map(|t| {
            rule(vec![cond(
                1,
                Dword,
                SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
                t,
            )?])
        })
        .collect()
}

/// The only families `SocketPolicy::InetOnly` lets `socket` create.
const INET_FAMILIES: [libc::c_int; 2] = [libc::AF_INET, libc::AF_INET6];

/// Socket families a plan refuses when sockets follow the network mode.
fn refused_families(plan: &SandboxPlan) -> Vec<libc::c_int> {
    match plan.network {
        NetworkMode::None => vec![
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_PACKET,
            libc::AF_NETLINK,
        ],
        // Netlink talks to the kernel's configuration interfaces.
        NetworkMode::Full => vec![libc::AF_NETLINK],
        // `SocketPolicy::InetOnly` allows families rather than refusing
        // them; with `Any` these are refused.
        NetworkMode::Proxy { .. } => vec![
            libc::AF_UNIX,
            libc::AF_PACKET,
            libc::AF_NETLINK,
            libc::AF_VSOCK,
        ],
    }
}

/// Builds and installs the filters. Beside the policy's list, both
/// policies restrict the same calls by argument: `clone` (no namespaces,
/// threads only), calls aimed at a pid (the caller only), `ioctl` (no
/// terminal injection), `prctl`, and `socket` (by [`SocketPolicy`]); the
/// allow-list keeps a restricted call only where it lists it.
pub(crate) fn install_seccomp(
    plan: &SandboxPlan,
    policy: &SyscallPolicy,
) -> Result<(), SandboxError> {
    let arch = TargetArch::x86_64;
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u64;
    let clone = nr("clone")?;
    let (socket, socketpair, ioctl, prctl, fcntl) = (
        nr("socket")?,
        nr("socketpair")?,
        nr("ioctl")?,
        nr("prctl")?,
        nr("fcntl")?,
    );
    let filter = match policy {
        SyscallPolicy::AllowList { extra } => {
            // What a profile's `allowed_syscalls` cannot add (the config
            // refuses such names too; a plan built in code may not have
            // been through it) is left out of the extras.
            let mut rules = rules_for(
                WORKER_ALLOW_LIST.iter().map(|(n, _)| *n).chain(
                    extra
                        .iter()
                        .map(String::as_str)
                        .filter(|n| !never_allowed(n)),
                ),
            )?;
            if !plan.no_child_processes {
                rules.extend(rules_for(CHILD_ALLOW_LIST.iter().map(|(n, _)| *n))?);
            }
            if plan.allow_exec {
                rules.extend(rules_for(EXEC_ALLOW_LIST.iter().map(|(n, _)| *n))?);
                if plan.network != NetworkMode::None {
                    rules.extend(rules_for(EXEC_NET_ALLOW_LIST.iter().map(|(n, _)| *n))?);
                }
            }
            if (plan.no_child_processes || plan.no_exec_memory) && !plan.allow_exec {
                rules.remove(&nr("execve")?);
                rules.remove(&nr("execveat")?);
            }
            let mut fcntl_ok = Vec::new();
            for (_, command) in DENIED_FCNTL {
                fcntl_ok.push(cond(1, Dword, SeccompCmpOp::Ne, *command)?);
            }
            restrict(&mut rules, fcntl, vec![rule(fcntl_ok)?]);
            // Entries allowed only with some arguments. An entry absent
            // from the list stays absent (refused).
            restrict(&mut rules, clone, clone_allowed(plan.no_child_processes)?);
            for (name, arg) in PID_CALLS {
                let allowed = if plan.no_child_processes {
                    own_pid_allowed(*arg, me)?
                } else {
                    tree_pid_allowed(*arg)?
                };
                restrict(&mut rules, nr(name)?, allowed);
            }
            let mut not_denied = Vec::new();
            for (_, req) in DENIED_IOCTLS {
                not_denied.push(cond(1, Dword, SeccompCmpOp::Ne, *req)?);
            }
            restrict(&mut rules, ioctl, vec![rule(not_denied)?]);
            let mut options = Vec::new();
            for (_, option) in ALLOWED_PRCTL {
                options.push(rule(vec![cond(0, Dword, SeccompCmpOp::Eq, *option)?])?);
            }
            restrict(&mut rules, prctl, options);
            if plan.no_exec_memory {
                for (name, arg, bit) in EXEC_MEMORY_CALLS {
                    let without = cond(*arg, Qword, SeccompCmpOp::MaskedEq(*bit), 0)?;
                    restrict(&mut rules, nr(name)?, vec![rule(vec![without])?]);
                }
            }
            match plan.sockets {
                SocketPolicy::None => {
                    rules.remove(&socket);
                    rules.remove(&socketpair);
                }
                SocketPolicy::PairsOnly => {
                    rules.remove(&socket);
                    restrict(&mut rules, socketpair, pairs_allowed()?);
                }
                SocketPolicy::Any => {
                    let mut allowed = Vec::new();
                    for family in refused_families(plan) {
                        allowed.push(cond(0, Dword, SeccompCmpOp::Ne, family as u64)?);
                    }
                    restrict(&mut rules, socket, vec![rule(allowed)?]);
                }
                SocketPolicy::InetOnly => {
                    let mut families = Vec::new();
                    for family in INET_FAMILIES {
                        families.push(rule(vec![cond(
                            0,
                            Dword,
                            SeccompCmpOp::Eq,
                            family as u64,
                        )?])?);
                    }
                    restrict(&mut rules, socket, families);
                    restrict(&mut rules, socketpair, pairs_allowed()?);
                }
            }
            // No set-user-ID or set-group-ID file made through a create
            // mode (a chmod by other means). openat2 hides its mode in a
            // struct a filter cannot read: the ENOSYS filter answers it
            // (so that callers fall back to openat), this one lets it by.
            for (name, arg, flags) in CREATE_MODE_CALLS {
                restrict(&mut rules, nr(name)?, no_set_id_mode(*arg, *flags)?);
            }
            rules.insert(nr("openat2")?, Vec::new());
            // Whatever a profile's extras list: modes, owners, times and
            // attributes stay unchanged, and the worker makes no System V
            // IPC object.
            for name in METADATA_WRITES {
                rules.remove(&nr(name)?);
            }
            if plan.no_sysv_ipc {
                for name in SYSV_IPC {
                    rules.remove(&nr(name)?);
                }
            }
            SeccompFilter::new(rules, eperm, SeccompAction::Allow, arch).map_err(seccomp_err)?
        }
        SyscallPolicy::DenyList => {
            let mut rules = rules_for(DENY_LIST.iter())?;
            if plan.no_child_processes {
                rules.extend(rules_for(["fork", "vfork", "execveat"])?);
                if !plan.allow_exec {
                    rules.extend(rules_for(["execve"])?);
                }
            }
            // A program the kernel maps is executable memory too.
            if plan.no_exec_memory && !plan.allow_exec {
                rules.extend(rules_for(["execve", "execveat"])?);
            }
            // Modes, owners, times and attributes, which Landlock does not
            // govern: no sandboxed process changes any (by path or by
            // descriptor: seccomp cannot tell a write path from another),
            // nor makes a set-user-ID or set-group-ID file through a
            // create mode (openat2's mode is out of a filter's reach: the
            // ENOSYS filter answers it).
            rules.extend(rules_for(METADATA_WRITES.iter())?);
            for (name, arg, flags) in CREATE_MODE_CALLS {
                rules.insert(nr(name)?, set_id_mode(*arg, *flags)?);
            }
            rules.insert(clone, clone_denied(plan.no_child_processes)?);
            for (name, arg) in PID_CALLS {
                let denied = if plan.no_child_processes {
                    other_pid_denied(*arg, me)?
                } else {
                    init_pid_denied(*arg)?
                };
                rules.insert(nr(name)?, denied);
            }
            let mut ioctls = Vec::new();
            for (_, req) in DENIED_IOCTLS {
                ioctls.push(rule(vec![cond(1, Dword, SeccompCmpOp::Eq, *req)?])?);
            }
            rules.insert(ioctl, ioctls);
            let mut fcntls = Vec::new();
            for (_, command) in DENIED_FCNTL {
                fcntls.push(rule(vec![cond(1, Dword, SeccompCmpOp::Eq, *command)?])?);
            }
            rules.insert(fcntl, fcntls);
            let mut prctls = Vec::new();
            for (name, option) in DENIED_PRCTL {
                if *name == "PR_SET_DUMPABLE" && !plan.disable_debugging {
                    continue;
                }
                prctls.push(rule(vec![cond(0, Dword, SeccompCmpOp::Eq, *option)?])?);
            }
            rules.insert(prctl, prctls);
            if plan.no_exec_memory {
                for (name, arg, bit) in EXEC_MEMORY_CALLS {
                    let with = cond(*arg, Qword, SeccompCmpOp::MaskedEq(*bit), *bit)?;
                    rules.insert(nr(name)?, vec![rule(vec![with])?]);
                }
            }
            // After the PROT_EXEC rules: refused outright, shmat included.
            if plan.no_sysv_ipc {
                rules.extend(rules_for(SYSV_IPC.iter())?);
            }
            match plan.sockets {
                SocketPolicy::None => {
                    rules.insert(socket, Vec::new());
                    rules.insert(socketpair, Vec::new());
                }
                SocketPolicy::PairsOnly => {
                    rules.insert(socket, Vec::new());
                    rules.insert(socketpair, pairs_denied()?);
                }
                SocketPolicy::Any => {
                    let mut families = Vec::new();
                    for family in refused_families(plan) {
                        families.push(rule(vec![cond(
                            0,
                            Dword,
                            SeccompCmpOp::Eq,
                            family as u64,
                        )?])?);
                    }
                    rules.insert(socket, families);
                }
                SocketPolicy::InetOnly => {
                    let [v4, v6] = INET_FAMILIES;
                    rules.insert(
                        socket,
                        vec![rule(vec![
                            cond(0, Dword, SeccompCmpOp::Ne, v4 as u64)?,
                            cond(0, Dword, SeccompCmpOp::Ne, v6 as u64)?,
                        ])?],
                    );
                    rules.insert(socketpair, pairs_denied()?);
                }
            }
            SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch).map_err(seccomp_err)?
        }
        SyscallPolicy::Off => return Ok(()),
    };
    let prog: BpfProgram = filter.try_into().map_err(seccomp_err)?;
    // clone3 cannot be filtered by its flags, nor openat2 by its mode (both
    // sit behind a pointer): answer ENOSYS so that glibc and other callers
    // fall back to clone and openat, which are filtered.
    let clone3 = SeccompFilter::new(
        rules_for(["clone3", "openat2"])?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(seccomp_err)?;
    let clone3: BpfProgram = clone3.try_into().map_err(seccomp_err)?;
    // The x32 and clone3 filters first: once the main filter is in, the
    // allow-list no longer permits installing another one. The kernel runs
    // every filter and takes the strictest answer.
    load_filter(&x32_filter(), 0)?;
    seccompiler::apply_filter_all_threads(&clone3).map_err(seccomp_err)?;
    // The main filter with SECCOMP_FILTER_FLAG_LOG: every call it refuses
    // with EPERM is also an audit record of the kernel (`audit: type=1326
    // … syscall=N`, in the audit log or the kernel log), naming the process
    // and the syscall.
    let main: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    load_filter(&main, libc::SECCOMP_FILTER_FLAG_LOG)
}

/// A filter of our own, ahead of seccompiler's (which checks only the
/// architecture): foreign-architecture calls and x32 numbers kill the
/// process. On a kernel without x32 support such a number would only fail
/// with ENOSYS; on one with it, it would reach a syscall table the other
/// filters never name.
fn x32_filter() -> [libc::sock_filter; 7] {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let ld_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    [
        // struct seccomp_data: int nr at 0, u32 arch at 4.
        op(ld_abs, 4, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        op(ret, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        op(ld_abs, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        op(ret, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]
}

/// Installs a filter program on every thread (`flags` beside TSYNC).
fn load_filter(prog: &[libc::sock_filter], flags: libc::c_ulong) -> Result<(), SandboxError> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| SandboxError::Seccomp("filter too long".into()))?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel copies the program from `fprog`, which points into
    // `prog`, alive and unchanged for this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC | flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SandboxError::Seccomp(format!(
            "installing a filter: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}
