//! Landlock: the paths a plan allows, opened (before root is given up) and
//! turned into one ruleset with the network and scope rules.

use std::io;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::apply::SandboxError;
use crate::plan::{NetworkMode, SandboxPlan};

/// The Landlock ABI whose rights we ask for: filesystem (incl. truncate and
/// ioctl on devices), TCP ports (ABI 4) and scoping (ABI 6).
const LANDLOCK_ABI: ABI = ABI::V6;

/// The plan's read, exec and write paths, opened (`O_PATH`), each with the
/// rights it is to get: only the rights that apply to files for a path
/// that is not a directory.
pub(crate) fn open_landlock_paths(
    plan: &SandboxPlan,
) -> Result<Vec<(PathFd, BitFlags<AccessFs>)>, SandboxError> {
    let abi = LANDLOCK_ABI;
    // `from_read` includes Execute: a worker that maps no new executable
    // memory executes no file either.
    let read = if plan.no_exec_memory {
        AccessFs::from_read(abi) & !AccessFs::Execute
    } else {
        AccessFs::from_read(abi)
    };
    let exec = read | AccessFs::Execute;
    // Writable paths get every right but making device nodes, fifos and
    // sockets: a device node is a way around every other rule.
    let nodes = AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::MakeFifo | AccessFs::MakeSock;
    let write = if plan.no_exec_memory {
        AccessFs::from_all(abi) & !nodes & !AccessFs::Execute
    } else {
        AccessFs::from_all(abi) & !nodes
    };
    let groups = [
        (&plan.read_paths, read),
        (&plan.exec_paths, exec),
        (&plan.write_paths, write),
    ];
    let mut opened = Vec::new();
    for (paths, access) in groups {
        for path in paths.iter() {
            let fd = PathFd::new(path).map_err(|e| SandboxError::Path {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            // SAFETY: stat is plain data; fstat writes into it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            use std::os::fd::{AsFd, AsRawFd};
            // SAFETY: an open O_PATH descriptor (fstat accepts one).
            if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), &mut st) } != 0 {
                return Err(SandboxError::Path {
                    path: path.clone(),
                    source: io::Error::last_os_error(),
                });
            }
            if let Some((_, dev, ino)) = plan.pinned.iter().find(|p| p.0 == *path) {
                if (st.st_dev, st.st_ino) != (*dev, *ino) {
                    return Err(SandboxError::Path {
                        path: path.clone(),
                        source: io::Error::other(
                            "no longer the file the plan was made for (renamed or replaced since): refused, since it stood beside a denied path",
                        ),
                    });
                }
            }
            let access = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            opened.push((fd, access));
        }
    }
    Ok(opened)
}

pub(crate) fn landlock(
    plan: &SandboxPlan,
    paths: Vec<(PathFd, BitFlags<AccessFs>)>,
) -> Result<RulesetStatus, SandboxError> {
    let ll = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let abi = LANDLOCK_ABI;
    let level = if plan.strict {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll)?;
    if plan.network != NetworkMode::Full {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(ll)?;
    }
    let mut created = ruleset
        .scope(Scope::from_all(abi))
        .map_err(ll)?
        .create()
        .map_err(ll)?;
    for (fd, access) in paths {
        created = created.add_rule(PathBeneath::new(fd, access)).map_err(ll)?;
    }
    let read = if plan.no_exec_memory {
        AccessFs::from_read(abi) & !AccessFs::Execute
    } else {
        AccessFs::from_read(abi)
    };
    for &fd in &plan.read_fds {
        // SAFETY: `close_inherited` checked that `fd` is an open regular
        // file, and nothing closes it while the borrow lives (this call).
        let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        created = created
            .add_rule(PathBeneath::new(file, read & AccessFs::from_file(abi)))
            .map_err(ll)?;
    }
    if let NetworkMode::Proxy { port } = plan.network {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(ll)?;
    }
    let status = created.restrict_self().map_err(ll)?;
    Ok(status.ruleset)
}
