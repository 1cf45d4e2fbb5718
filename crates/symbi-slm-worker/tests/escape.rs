//! Escape tests: the worker's own sandbox (the plan `LocalGgufRunner`
//! applies for a profile) against probes run inside it, through the
//! worker's probe mode (same `symbiont_sandbox::apply` as a launch). Every
//! denial is paired with an allowed case that proves the probe works: the
//! same probe on an allowed target, or the same probe without the sandbox.
//!
//! Runs as root in CI and again as an unprivileged user (.ci/run); cases
//! whose allowed half needs root say so and check only the denial when not
//! root.

mod common;

use common::{model_path, worker};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use symbiont_runtime::config::SandboxProfile;
use symbiont_runtime::models::sandbox_plan_for;
use symbiont_slm_protocol::{
    read_message, write_message, FromWorker, ProbeAction, SandboxPlan, ToWorker,
};

#[derive(Debug)]
enum Outcome {
    Allowed(String),
    Denied(String),
    /// The worker ended without a result (exec'd, or killed).
    Ended(std::process::ExitStatus),
    SetupFailed(#[allow(dead_code)] String),
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A scratch dir for the plan, and the plan for `profile`.
fn plan(profile: &SandboxProfile) -> (tempfile::TempDir, SandboxPlan) {
    let scratch = tempfile::Builder::new()
        .prefix("escape-")
        .tempdir()
        .unwrap();
    let plan = sandbox_plan_for(profile, &model_path(), Some(scratch.path()), 1).unwrap();
    (scratch, plan)
}

fn probe_with(cmd: &mut Command, plan: &SandboxPlan, action: ProbeAction) -> Outcome {
    probe_pid(cmd, plan, action).1
}

/// Like `probe_with`, also returning the worker's pid.
fn probe_pid(cmd: &mut Command, plan: &SandboxPlan, action: ProbeAction) -> (u32, Outcome) {
    let mut child = cmd
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let mut stdin = child.stdin.take().unwrap();
    write_message(
        &mut stdin,
        &ToWorker::Probe {
            plan: plan.clone(),
            action,
        },
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let msg = read_message::<_, FromWorker>(&mut stdout);
    drop(stdin);
    let pid = child.id();
    let status = child.wait().unwrap();
    let outcome = match msg {
        Ok(FromWorker::ProbeResult { outcome: Ok(s), .. }) => Outcome::Allowed(s),
        Ok(FromWorker::ProbeResult {
            outcome: Err(e), ..
        }) => Outcome::Denied(e),
        Ok(FromWorker::LoadFailed { detail, .. }) => Outcome::SetupFailed(detail),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => Outcome::Ended(status),
    };
    (pid, outcome)
}

fn probe(plan: &SandboxPlan, action: ProbeAction) -> Outcome {
    probe_with(&mut Command::new(worker()), plan, action)
}

#[track_caller]
fn denied(o: Outcome, what: &str) -> String {
    match o {
        Outcome::Denied(e) => e,
        other => panic!("{what}: expected a denial, got {other:?}"),
    }
}

#[track_caller]
fn allowed(o: Outcome, what: &str) -> String {
    match o {
        Outcome::Allowed(s) => s,
        other => panic!("{what}: expected success, got {other:?}"),
    }
}

fn secure() -> SandboxProfile {
    SandboxProfile::secure()
}

#[test]
fn sandbox_applies_every_layer_without_gaps() {
    let (_d, p) = plan(&secure());
    let mut cmd = Command::new(worker());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write_message(
        &mut stdin,
        &ToWorker::Probe {
            plan: p,
            action: ProbeAction::Spin(0),
        },
    )
    .unwrap();
    match read_message::<_, FromWorker>(&mut child.stdout.take().unwrap()).unwrap() {
        FromWorker::ProbeResult { applied, .. } => {
            let names: Vec<&str> = applied.layers.iter().map(|l| l.name.as_str()).collect();
            for want in [
                "landlock",
                "seccomp allow-list",
                "network namespace",
                "scratch tmpfs (size-limited)",
                "memory: RLIMIT_AS",
                "no_new_privs",
            ] {
                assert!(names.contains(&want), "{want} missing from {names:?}");
            }
            assert_eq!(applied.gaps().count(), 0, "{:?}", applied.layers);
            assert!(
                applied.setup_micros < 10_000,
                "set-up took {} µs",
                applied.setup_micros
            );
        }
        other => panic!("{other:?}"),
    }
    child.wait().unwrap();
}

#[test]
fn filesystem_reads_only_the_model_path() {
    let (_d, p) = plan(&secure());
    let model = model_path();
    allowed(
        probe(&p, ProbeAction::Read(model.clone())),
        "read the model",
    );
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[slm]\n").unwrap();
    let world_readable = ["/etc/passwd", "/etc/hostname"];
    for path in world_readable {
        allowed(
            probe(&SandboxPlan::unconfined(), ProbeAction::Read(path.into())),
            path,
        );
        denied(probe(&p, ProbeAction::Read(path.into())), path);
    }
    for path in ["/etc/shadow", "/proc/1/environ"] {
        denied(probe(&p, ProbeAction::Read(path.into())), path);
    }
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::Read(config.path().into()),
        ),
        "config",
    );
    denied(
        probe(&p, ProbeAction::Read(config.path().into())),
        "the config file",
    );
    denied(probe(&p, ProbeAction::ListDir("/root".into())), "/root");
    denied(probe(&p, ProbeAction::ListDir("/".into())), "/");
    // No device node is reachable (gpu_access = None).
    denied(
        probe(&p, ProbeAction::Read("/dev/zero".into())),
        "/dev/zero",
    );
    if is_root() {
        allowed(
            probe(
                &SandboxPlan::unconfined(),
                ProbeAction::Read("/etc/shadow".into()),
            ),
            "root reads /etc/shadow unconfined",
        );
    }
}

#[test]
fn writes_only_in_scratch_and_within_size_limits() {
    let mut prof = secure();
    prof.resources.max_disk_mb = 20;
    prof.filesystem.max_file_size_mb = 15;
    let (d, p) = plan(&prof);
    let scratch = d.path();
    allowed(
        probe(&p, ProbeAction::Write(scratch.join("ok"), 1 << 20)),
        "write in scratch",
    );
    let outside = std::env::temp_dir().join(format!("escape-outside-{}", std::process::id()));
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::Write(outside.clone(), 10),
        ),
        "unconfined write",
    );
    std::fs::remove_file(&outside).ok();
    denied(
        probe(&p, ProbeAction::Write(outside.clone(), 10)),
        "write outside scratch",
    );
    assert!(!outside.exists());
    // Bigger than max_file_size_mb: EFBIG.
    let e = denied(
        probe(&p, ProbeAction::Write(scratch.join("big"), 16 << 20)),
        "file over max_file_size_mb",
    );
    assert!(
        e.contains("too large") || e.contains("File too large"),
        "{e}"
    );
    allowed(
        probe(&p, ProbeAction::Write(scratch.join("fits"), 14 << 20)),
        "file under max_file_size_mb",
    );
    // The scratch tmpfs is private: nothing lands in the host directory.
    assert_eq!(std::fs::read_dir(scratch).unwrap().count(), 0);
    // Past max_disk_mb: the tmpfs is full (two files of 12 MB in one probe
    // would need two actions; one file of 14 MB under a 10 MB disk does).
    prof.resources.max_disk_mb = 10;
    let (d2, p2) = plan(&prof);
    let e = denied(
        probe(&p2, ProbeAction::Write(d2.path().join("fill"), 14 << 20)),
        "fill past max_disk_mb",
    );
    assert!(e.contains("No space"), "{e}");
}

#[test]
fn no_network() {
    let (_d, p) = plan(&secure());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::ConnectTcp(addr.clone()),
        ),
        "unconfined connect",
    );
    denied(
        probe(&p, ProbeAction::ConnectTcp(addr.clone())),
        "connect to loopback",
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uaddr = udp.local_addr().unwrap().to_string();
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::SendUdp(uaddr.clone()),
        ),
        "unconfined udp",
    );
    denied(probe(&p, ProbeAction::SendUdp(uaddr)), "udp socket");
    // The deny-list profile (standard) blocks inet sockets too.
    let (_d2, p2) = plan(&SandboxProfile::standard());
    denied(
        probe(&p2, ProbeAction::ConnectTcp(addr)),
        "connect under the deny-list",
    );
    // A non-loopback address: this host's own interface address (the one
    // it would use to reach a documentation address; UDP connect sends
    // nothing), with a listener on all addresses, so no traffic leaves.
    let probe_sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe_sock
        .connect("203.0.113.1:9")
        .expect("this test needs a non-loopback IPv4 route (none on this host)");
    let own = probe_sock.local_addr().unwrap().ip();
    assert!(!own.is_loopback(), "no non-loopback address: {own}");
    let wide = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let target = format!("{own}:{}", wide.local_addr().unwrap().port());
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::ConnectTcp(target.clone()),
        ),
        "unconfined connect to a non-loopback address",
    );
    denied(
        probe(&p, ProbeAction::ConnectTcp(target.clone())),
        "connect to a non-loopback address",
    );
    denied(
        probe(&p2, ProbeAction::ConnectTcp(target)),
        "non-loopback connect under the deny-list",
    );
}

#[test]
fn no_processes() {
    let (_d, p) = plan(&secure());
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Fork),
        "unconfined fork",
    );
    denied(probe(&p, ProbeAction::Fork), "fork");
    match probe(
        &SandboxPlan::unconfined(),
        ProbeAction::Exec("/bin/true".into()),
    ) {
        Outcome::Ended(s) => assert!(s.success(), "{s}"),
        other => panic!("unconfined exec: {other:?}"),
    }
    denied(
        probe(&p, ProbeAction::Exec("/bin/sh".into())),
        "execve /bin/sh",
    );
    let (_d2, p2) = plan(&SandboxProfile::standard());
    denied(probe(&p2, ProbeAction::Fork), "fork under the deny-list");
    denied(
        probe(&p2, ProbeAction::Exec("/bin/sh".into())),
        "exec under the deny-list",
    );
}

#[test]
fn memory_and_cpu_limits() {
    let (_d, p) = plan(&secure()); // 512 MB
    allowed(probe(&p, ProbeAction::Allocate(64 << 20)), "64 MB");
    denied(
        probe(&p, ProbeAction::Allocate(600 << 20)),
        "600 MB past 512 MB",
    );
    let mut cpu = p.clone();
    cpu.cpu_seconds = Some(1);
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Spin(2)),
        "unconfined spin",
    );
    match probe(&cpu, ProbeAction::Spin(4)) {
        Outcome::Ended(s) => {
            use std::os::unix::process::ExitStatusExt;
            assert!(
                matches!(s.signal(), Some(libc_sigxcpu) if libc_sigxcpu == 24 || libc_sigxcpu == 9),
                "{s:?}"
            );
        }
        other => panic!("spin past RLIMIT_CPU: {other:?}"),
    }
}

struct Sleeper(std::process::Child);
impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn no_debugging_no_namespaces_no_mounts() {
    let target = Sleeper(Command::new("/bin/sleep").arg("30").spawn().unwrap());
    let pid = target.0.id();
    let (_d, p) = plan(&secure());
    denied(probe(&p, ProbeAction::Ptrace(pid)), "ptrace");
    denied(probe(&p, ProbeAction::ReadMemory(pid)), "process_vm_readv");
    let mnt = tempfile::tempdir().unwrap();
    denied(
        probe(&p, ProbeAction::Mount(_d.path().to_path_buf())),
        "mount",
    );
    denied(probe(&p, ProbeAction::Unshare), "unshare");
    denied(probe(&p, ProbeAction::Setns(pid)), "setns");
    let (_d2, p2) = plan(&SandboxProfile::standard());
    for a in [
        ProbeAction::Ptrace(pid),
        ProbeAction::ReadMemory(pid),
        ProbeAction::Mount(_d2.path().to_path_buf()),
        ProbeAction::Unshare,
        ProbeAction::Setns(pid),
    ] {
        denied(probe(&p2, a.clone()), &format!("{a:?} under the deny-list"));
    }
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Unshare),
        "unconfined unshare",
    );
    if is_root() {
        allowed(
            probe(&SandboxPlan::unconfined(), ProbeAction::Ptrace(pid)),
            "unconfined ptrace",
        );
        allowed(
            probe(&SandboxPlan::unconfined(), ProbeAction::ReadMemory(pid)),
            "unconfined process_vm_readv",
        );
        allowed(
            probe(&SandboxPlan::unconfined(), ProbeAction::Setns(pid)),
            "unconfined setns",
        );
        allowed(
            probe(
                &SandboxPlan::unconfined(),
                ProbeAction::Mount(mnt.path().to_path_buf()),
            ),
            "unconfined mount",
        );
    } else {
        eprintln!("not root: the allowed halves of ptrace, process_vm_readv, setns and mount need root; only the denials were checked");
    }
}

#[test]
fn inherited_descriptors_are_closed() {
    let (_d, p) = plan(&secure());
    let leak = tempfile::NamedTempFile::new().unwrap();
    // A shell opens fd 5 on a file, then becomes the worker: fd 5 leaks in.
    let script = format!("exec 5>>'{}'; exec '{}'", leak.path().display(), worker());
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(&script);
    denied(
        probe_with(&mut sh, &p, ProbeAction::UseFd(5)),
        "leaked fd 5",
    );
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(&script);
    allowed(
        probe_with(&mut sh, &p, ProbeAction::UseFd(2)),
        "stderr stays usable",
    );
    assert_eq!(std::fs::read(leak.path()).unwrap().len(), 0);
}

#[test]
fn strict_profile_refuses_a_denied_path_inside_an_allowed_one() {
    let mut prof = secure();
    let model = model_path();
    let dir: &Path = model.parent().unwrap();
    prof.filesystem.read_paths = vec![dir.display().to_string()];
    prof.filesystem.denied_paths = vec![dir.join("secret").display().to_string()];
    let scratch = tempfile::tempdir().unwrap();
    assert!(sandbox_plan_for(&prof, &model, Some(scratch.path()), 1).is_err());
}

/// Every call the seccomp filter refuses is also a kernel audit record
/// (SECCOMP_FILTER_FLAG_LOG): `audit: type=1326 … pid=N … syscall=272`.
/// Reading the kernel log needs root; the unprivileged run says so.
#[test]
fn refused_syscalls_are_kernel_audit_records() {
    if !is_root() {
        eprintln!("not root: the kernel log is not readable; checked in the root run");
        return;
    }
    let records = |pid: u32| -> Vec<String> {
        let out = Command::new("dmesg").output().expect("dmesg");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("type=1326") && l.contains(&format!(" pid={pid} ")))
            .map(str::to_string)
            .collect()
    };
    let (_d, p) = plan(&secure());
    // The kernel rate-limits audit lines it prints (10 per 5 s) when no
    // audit daemon reads them, and the other escape tests make many: try
    // again after a quiet spell before calling it missing.
    let mut found = Vec::new();
    for _ in 0..4 {
        let (pid, o) = probe_pid(&mut Command::new(worker()), &p, ProbeAction::Unshare);
        denied(o, "unshare");
        std::thread::sleep(std::time::Duration::from_millis(200));
        found = records(pid);
        if !found.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(6));
    }
    let unshare = symbiont_sandbox::syscall_number("unshare").unwrap();
    assert!(
        found
            .iter()
            .any(|l| l.contains(&format!(" syscall={unshare} "))),
        "no audit record of the refused unshare: {found:?}"
    );
    // The allowed case: the same probe unconfined makes no record.
    let (pid, o) = probe_pid(
        &mut Command::new(worker()),
        &SandboxPlan::unconfined(),
        ProbeAction::Unshare,
    );
    allowed(o, "unconfined unshare");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(records(pid).is_empty(), "{:?}", records(pid));
}
