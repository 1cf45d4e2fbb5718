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
use symbiont_runtime::models::{sandbox_exec_plan_for, sandbox_plan_for};
use symbiont_slm_protocol::{
    read_message, write_message, FromWorker, LayerKind, ProbeAction, SandboxPlan, ToWorker,
    MODEL_FD,
};

#[derive(Debug)]
enum Outcome {
    Allowed(String),
    Denied(String),
    /// The worker ended without a result (exec'd, or killed).
    Ended(std::process::ExitStatus),
    SetupFailed(String),
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

/// Like `probe_with`, also returning the worker's pid. A plan that reads the
/// model through its descriptor gets the model's, as the runner gives it.
fn probe_pid(cmd: &mut Command, plan: &SandboxPlan, action: ProbeAction) -> (u32, Outcome) {
    if plan.read_fds.contains(&MODEL_FD) {
        let model = std::fs::File::open(model_path()).expect("open the model");
        symbiont_sandbox::spawn::inherit_fd(cmd, model.into(), MODEL_FD);
    }
    probe_run(cmd, plan, action)
}

/// Spawns `cmd` (descriptors already arranged) in probe mode.
fn probe_run(cmd: &mut Command, plan: &SandboxPlan, action: ProbeAction) -> (u32, Outcome) {
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

/// Starts the worker in probe mode with the model as its descriptor and
/// sends the probe; its stdout is left to read (stderr is dropped), and
/// its stdin stays open while the second value lives.
fn start_probe(
    plan: SandboxPlan,
    action: ProbeAction,
) -> (std::process::Child, std::process::ChildStdin) {
    let mut cmd = Command::new(worker());
    let model = std::fs::File::open(model_path()).unwrap();
    symbiont_sandbox::spawn::inherit_fd(&mut cmd, model.into(), MODEL_FD);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write_message(&mut stdin, &ToWorker::Probe { plan, action }).unwrap();
    (child, stdin)
}

#[test]
fn sandbox_applies_every_layer_without_gaps() {
    let (_d, p) = plan(&secure());
    let (mut child, _stdin) = start_probe(p, ProbeAction::Spin(0));
    match read_message::<_, FromWorker>(&mut child.stdout.take().unwrap()).unwrap() {
        FromWorker::ProbeResult { applied, .. } => {
            for want in [
                LayerKind::Landlock,
                LayerKind::SeccompAllowList,
                LayerKind::NetworkNamespace,
                LayerKind::IpcNamespace,
                LayerKind::ScratchTmpfs,
                LayerKind::Memory,
                LayerKind::NoNewPrivs,
            ] {
                assert!(
                    applied.in_force(want),
                    "{want} missing from {:?}",
                    applied.layers
                );
            }
            assert_eq!(applied.gaps().count(), 0, "{:?}", applied.layers);
            // How long set-up takes is measured by the sandbox_cost bench,
            // not asserted here: a busy host would make it noise.
        }
        other => panic!("{other:?}"),
    }
    child.wait().unwrap();
}

/// The model is the file the supervisor opened and checked: Landlock's rule
/// is made from that descriptor (the inode), so a model path swapped for
/// another file after the check opens nothing, while the descriptor still
/// reads what was checked.
#[test]
fn a_model_swapped_after_the_check_is_not_readable() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    // The plan for this very model: were its path a rule, the swapped-in
    // file would open by name.
    let scratch = tempfile::tempdir().unwrap();
    let p = sandbox_plan_for(&secure(), &model, Some(scratch.path()), 1).unwrap();
    // Open to anyone, so that only the sandbox can refuse.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&model, b"checked").unwrap();
    let checked = std::fs::File::open(&model).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, b"swapped in!").unwrap();
    std::fs::rename(&other, &model).unwrap();

    let with_checked = |action| {
        let mut cmd = Command::new(worker());
        symbiont_sandbox::spawn::inherit_fd(
            &mut cmd,
            checked.try_clone().unwrap().into(),
            MODEL_FD,
        );
        probe_run(&mut cmd, &p, action).1
    };
    let via_fd = allowed(
        with_checked(ProbeAction::Read(
            format!("/proc/self/fd/{MODEL_FD}").into(),
        )),
        "the checked file through its descriptor",
    );
    assert_eq!(
        via_fd, "read 7 bytes",
        "the descriptor reads the checked file"
    );
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Read(model.clone())),
        "the swapped-in file, unconfined",
    );
    denied(
        with_checked(ProbeAction::Read(model.clone())),
        "the swapped-in file by the model's name",
    );
}

#[test]
fn filesystem_reads_only_the_model() {
    let (_d, p) = plan(&secure());
    let model = model_path();
    allowed(
        probe(
            &p,
            ProbeAction::Read(format!("/proc/self/fd/{MODEL_FD}").into()),
        ),
        "read the model through its descriptor",
    );
    // Nothing beside it: its directory stays closed.
    let models_dir = model.parent().unwrap().to_path_buf();
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::ListDir(models_dir.clone()),
        ),
        "the model's directory, unconfined",
    );
    denied(
        probe(&p, ProbeAction::ListDir(models_dir)),
        "the model's directory",
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
    // RLIMIT_CPU counts CPU time, and the probe spins for CPU time, so a
    // busy host only stretches the wall time. The secure profile's nice 19
    // is not the layer under test here: on a busy host it would leave the
    // probe a sliver of a core, so this plan keeps the default priority.
    let mut cpu = p.clone();
    cpu.cpu_seconds = Some(1);
    cpu.nice = None;
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Spin(2)),
        "unconfined spin of 2 s of CPU time",
    );
    match probe(&cpu, ProbeAction::Spin(3)) {
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
    // setns itself, reached without opening anything: EINVAL from the
    // kernel unconfined, EPERM from the filter under both policies.
    let e = denied(
        probe(&SandboxPlan::unconfined(), ProbeAction::SetnsOnStdin),
        "unconfined setns on a pipe",
    );
    assert!(e.contains("Invalid argument"), "{e}");
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
    for plan in [&p, &p2] {
        refused_by_filter(probe(plan, ProbeAction::SetnsOnStdin), "setns on a pipe");
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

/// Issue 25: a denied directory inside a read path. The plan replaces the
/// read path by its entries off the way to the denied one: the siblings
/// stay readable (the twins), while the denied file is refused by its
/// path, through `..` and through a symlink in an allowed directory; a
/// denied file with another link in an allowed directory is refused when
/// the plan is made. Both built-in profiles, through the worker's plan and
/// `sandbox exec`'s.
#[test]
fn a_denied_path_inside_an_allowed_one_stays_denied() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path()).unwrap();
    let data = root.join("data");
    for d in ["data/public", "data/secrets/deep"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in [
        "data/a.txt",
        "data/public/p.txt",
        "data/secrets/key",
        "data/secrets/deep/k2",
    ] {
        std::fs::write(root.join(f), "x").unwrap();
    }
    std::os::unix::fs::symlink("../secrets/key", data.join("public/link")).unwrap();
    for d in [
        &root,
        &data,
        &data.join("public"),
        &data.join("secrets"),
        &data.join("secrets/deep"),
    ] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let secrets = data.join("secrets");
    let scratch = tempfile::tempdir().unwrap();
    for (name, mut prof) in [
        ("secure", SandboxProfile::secure()),
        ("standard", SandboxProfile::standard()),
    ] {
        prof.filesystem.read_paths = vec![data.display().to_string()];
        prof.filesystem.denied_paths = vec![secrets.display().to_string()];
        let worker_plan = sandbox_plan_for(&prof, &model_path(), Some(scratch.path()), 1).unwrap();
        let exec_plan = sandbox_exec_plan_for(
            &prof,
            Path::new(&worker()),
            &[],
            &[],
            &[],
            Some(scratch.path()),
            1,
        )
        .unwrap();
        for (kind, p) in [("worker", &worker_plan), ("sandbox exec", &exec_plan)] {
            let what = |w: &str| format!("{name}, {kind}: {w}");
            for (action, w) in [
                (ProbeAction::Read(data.join("a.txt")), "a sibling file"),
                (
                    ProbeAction::Read(data.join("public/p.txt")),
                    "a file in a sibling directory",
                ),
                (
                    ProbeAction::ListDir(data.join("public")),
                    "a sibling directory",
                ),
            ] {
                allowed(probe(p, action), &what(w));
            }
            for (action, w) in [
                (ProbeAction::Read(secrets.join("key")), "the denied file"),
                (
                    ProbeAction::Read(secrets.join("deep/k2")),
                    "deeper in the denied directory",
                ),
                (
                    ProbeAction::Read(data.join("public/../secrets/key")),
                    "the denied file through ..",
                ),
                (
                    ProbeAction::Read(data.join("public/link")),
                    "the denied file through a symlink",
                ),
                (
                    ProbeAction::ListDir(secrets.clone()),
                    "listing the denied directory",
                ),
            ] {
                denied(probe(p, action), &what(w));
            }
        }
        // A denied file with another name in an allowed directory: refused
        // when the plan is made (Landlock follows names, not files).
        std::fs::hard_link(secrets.join("key"), data.join("public/key-again")).unwrap();
        let e = sandbox_plan_for(&prof, &model_path(), Some(scratch.path()), 1).unwrap_err();
        assert!(e.to_string().contains("another link"), "{name}: {e}");
        std::fs::remove_file(data.join("public/key-again")).unwrap();
        // The denied directory renamed into an entry's place between the
        // plan and its application: refused, the entry is not the file it
        // was (the twin: the same plan, nothing swapped, applied above).
        let p = sandbox_exec_plan_for(
            &prof,
            Path::new(&worker()),
            &[],
            &[],
            &[],
            Some(scratch.path()),
            1,
        )
        .unwrap();
        std::fs::rename(data.join("public"), root.join("public.away")).unwrap();
        std::fs::rename(&secrets, data.join("public")).unwrap();
        let o = probe(&p, ProbeAction::Read(data.join("public/key")));
        assert!(
            matches!(&o, Outcome::SetupFailed(e) if e.contains("no longer the file")),
            "{name}: swapped entry: {o:?}"
        );
        std::fs::rename(data.join("public"), &secrets).unwrap();
        std::fs::rename(root.join("public.away"), data.join("public")).unwrap();
        // A bind mount of part of the denied subtree onto an entry (root
        // only: nobody cannot mount): refused when the plan is made.
        if is_root() {
            let mount = |args: &[&str]| {
                assert!(
                    Command::new("mount").args(args).status().unwrap().success(),
                    "mount {args:?}"
                );
            };
            let public = data.join("public");
            mount(&[
                "--bind",
                secrets.join("deep").to_str().unwrap(),
                public.to_str().unwrap(),
            ]);
            let r = sandbox_plan_for(&prof, &model_path(), Some(scratch.path()), 1);
            let unmounted = Command::new("umount").arg(&public).status().unwrap();
            assert!(unmounted.success(), "umount {}", public.display());
            let e = r.unwrap_err();
            assert!(
                e.to_string()
                    .contains("shows the file system of a denied path"),
                "{name}: {e}"
            );
        } else {
            eprintln!("{name}: the bind-mount case needs root (run as root by scripts/test)");
        }
    }
    // A denied file in a library directory of `sandbox exec`, reached
    // through the `/lib` link (Landlock follows it to /usr/lib): denied by
    // both names, while the libraries beside it stay readable.
    let os_release = Path::new("/usr/lib/os-release");
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    assert!(
        os_release.exists() && libc.exists(),
        "this test needs Debian's /usr/lib/os-release and libc"
    );
    let mut prof = SandboxProfile::standard();
    prof.filesystem
        .denied_paths
        .push(os_release.display().to_string());
    let p = sandbox_exec_plan_for(
        &prof,
        Path::new(&worker()),
        &[],
        &[],
        &[],
        Some(scratch.path()),
        1,
    )
    .unwrap();
    allowed(
        probe(&p, ProbeAction::Read(libc.to_path_buf())),
        "a library beside it",
    );
    for name in ["/usr/lib/os-release", "/lib/os-release"] {
        denied(
            probe(&p, ProbeAction::Read(name.into())),
            &format!("{name}, denied"),
        );
    }
}

/// Every call the seccomp filter refuses is also a kernel audit record
/// (SECCOMP_FILTER_FLAG_LOG): `audit: type=1326 … pid=N … syscall=272`.
#[test]
fn refused_syscalls_are_kernel_audit_records() {
    // Reading the kernel log needs root: as another user this test fails
    // (scripts/test-unprivileged skips it by name; the root run covers it).
    assert!(is_root(), "this test reads the kernel log and needs root");
    // Only records from now on: a pid seen in an older record may be a
    // reused one. The log stamps lines with seconds since boot.
    let uptime = |s: &str| -> f64 {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let since = uptime(&std::fs::read_to_string("/proc/uptime").unwrap()) - 1.0;
    let records = |pid: u32| -> Vec<String> {
        let out = Command::new("dmesg").output().expect("dmesg");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                let stamp = l.trim_start_matches('[').split(']').next().unwrap_or("");
                uptime(stamp) >= since
            })
            .filter(|l| l.contains("type=1326") && l.contains(&format!(" pid={pid} ")))
            .map(str::to_string)
            .collect()
    };
    let (_d, p) = plan(&secure());
    // The allowed case first: the same probe unconfined. Its records, if
    // there were any, reach the log before those of the later probe.
    let (quiet_pid, o) = probe_pid(
        &mut Command::new(worker()),
        &SandboxPlan::unconfined(),
        ProbeAction::Unshare,
    );
    allowed(o, "unconfined unshare");
    // The kernel rate-limits audit lines it prints (10 per 5 s) when no
    // audit daemon reads them, and the other escape tests make many: poll
    // the log, and probe again every few seconds, for up to a minute.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut found = Vec::new();
    while found.is_empty() && std::time::Instant::now() < give_up {
        let (pid, o) = probe_pid(&mut Command::new(worker()), &p, ProbeAction::Unshare);
        denied(o, "unshare");
        let next_probe = std::time::Instant::now() + std::time::Duration::from_secs(6);
        while std::time::Instant::now() < next_probe {
            found = records(pid);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let unshare = symbiont_sandbox::syscall_number("unshare").unwrap();
    assert!(
        found
            .iter()
            .any(|l| l.contains(&format!(" syscall={unshare} "))),
        "no audit record of the refused unshare: {found:?}"
    );
    assert!(records(quiet_pid).is_empty(), "{:?}", records(quiet_pid));
}

/// The plans the hardening tests attack: the worker's under both built-in
/// profiles (allow-list and deny-list), and `sandbox exec`'s under both
/// (the same `apply`, with `execve` and the program's libraries allowed).
fn hardened_plans() -> Vec<(String, tempfile::TempDir, SandboxPlan)> {
    let mut plans = Vec::new();
    for (name, prof) in [
        ("secure", SandboxProfile::secure()),
        ("standard", SandboxProfile::standard()),
    ] {
        let (d, p) = plan(&prof);
        plans.push((format!("worker under {name}"), d, p));
        let d = tempfile::Builder::new()
            .prefix("escape-exec-")
            .tempdir()
            .unwrap();
        let p = sandbox_exec_plan_for(
            &prof,
            Path::new(&worker()),
            &[],
            &[],
            &[],
            Some(d.path()),
            1,
        )
        .unwrap();
        plans.push((format!("sandbox exec under {name}"), d, p));
    }
    plans
}

const EPERM: &str = "Operation not permitted";

#[track_caller]
fn refused_by_filter(o: Outcome, what: &str) {
    let e = denied(o, what);
    assert!(
        e.contains(EPERM),
        "{what}: refused, but not by the filter: {e}"
    );
}

/// x32 system call numbers (the x86-64 number with bit 30 set) reach a
/// second syscall table that a filter written for x86-64 numbers never
/// names: every such call kills the process. On this kernel x32 is off, so
/// unconfined the call only fails with ENOSYS: the kill proves the filter.
#[test]
fn x32_system_calls_kill_the_process() {
    use std::os::unix::process::ExitStatusExt;
    match probe(&SandboxPlan::unconfined(), ProbeAction::X32Syscall) {
        Outcome::Allowed(_) | Outcome::Denied(_) => {}
        other => panic!("unconfined x32 getpid: {other:?}"),
    }
    for (name, _d, p) in hardened_plans() {
        match probe(&p, ProbeAction::X32Syscall) {
            Outcome::Ended(s) => assert_eq!(s.signal(), Some(nix::libc::SIGSYS), "{name}: {s:?}"),
            other => panic!("{name}: x32 getpid: {other:?}"),
        }
    }
}

/// Kernel attack surface no worker or ordinary program needs: io_uring
/// (its own path around seccomp), memfd_create (executable anonymous
/// files), modify_ldt.
#[test]
fn kernel_attack_surface_is_refused() {
    for action in [
        ProbeAction::IoUringSetup,
        ProbeAction::MemfdCreate,
        ProbeAction::ModifyLdt,
    ] {
        allowed(
            probe(&SandboxPlan::unconfined(), action.clone()),
            &format!("unconfined {action:?}"),
        );
        for (name, _d, p) in hardened_plans() {
            refused_by_filter(probe(&p, action.clone()), &format!("{action:?}, {name}"));
        }
    }
}

/// A worker cannot start threads without end: RLIMIT_NPROC, counted in its
/// own user namespace (root in the initial one would be exempt), stops it
/// well short of 200, under both built-in profiles; unconfined the same
/// probe starts them all. What llama.cpp needs fits (every runner test).
#[test]
fn the_worker_cannot_start_threads_without_end() {
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Threads(200)),
        "unconfined",
    );
    for (name, prof) in [
        ("secure", secure()),
        ("standard", SandboxProfile::standard()),
    ] {
        let (_d, p) = plan(&prof);
        let cap = p.max_threads.expect("worker plans cap threads");
        assert!(cap < 200, "{cap}");
        let e = denied(probe(&p, ProbeAction::Threads(200)), name);
        assert!(
            e.contains("Resource temporarily unavailable"),
            "{name}: {e}"
        );
        // The allowed twin: as many as the cap leaves beside the probe's
        // own main thread.
        allowed(
            probe(&p, ProbeAction::Threads(cap as u32 - 2)),
            &format!("{name}: below the cap"),
        );
        // Where unprivileged user namespaces are restricted, a worker
        // that gave root up has no user namespace of its own to count its
        // threads in: a strict plan refuses to start, a lenient one runs
        // uncapped with the gap reported (the twin that shows why the cap
        // needs the namespace). Only root can leave it out: another user
        // gets one with the network namespace anyway.
        if is_root() {
            // Without a user namespace but with a uid of its own (no other
            // process has it), the cap holds all the same.
            let mut own_uid = p.clone();
            own_uid.user_namespace = false;
            let e = denied(
                probe(&own_uid, ProbeAction::Threads(200)),
                &format!("{name}: own uid, no user namespace"),
            );
            assert!(e.contains("Resource temporarily unavailable"), "{e}");
            let mut kept = own_uid.clone();
            kept.per_process_uid = false;
            match probe(&kept, ProbeAction::Threads(200)) {
                Outcome::SetupFailed(e) if kept.strict => {
                    assert!(e.contains("RLIMIT_NPROC"), "{name}: {e}")
                }
                Outcome::Allowed(_) if !kept.strict => {
                    // Root emptied the bounding set before giving root up
                    // (as 65534 outside a user namespace it no longer
                    // could), so the supervisor's CapBnd check passes.
                    let held = allowed(probe(&kept, ProbeAction::BoundingSet), name);
                    assert_eq!(held, "0", "{name}: bounding set");
                    let unconfined = allowed(
                        probe(&SandboxPlan::unconfined(), ProbeAction::BoundingSet),
                        name,
                    );
                    assert_ne!(unconfined, "0", "the probe sees root's bounding set");
                }
                other => panic!("{name}, no user namespace: {other:?}"),
            }
        }
    }
}

/// Root widens nothing: started by root, the worker is `nobody` outside its
/// user namespace, so a root-only file in a read path stays closed (with
/// every capability dropped, root would still read a file it owns). A
/// world-readable file in the same place opens (the twin). As another user
/// only the twin is checked: the file is that user's own.
#[test]
fn root_widens_nothing_for_the_worker() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = dir.path().join("private");
    let public = dir.path().join("public");
    std::fs::write(&private, "root only").unwrap();
    std::fs::write(&public, "anyone").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut prof = SandboxProfile::standard();
    prof.filesystem.read_paths = vec![dir.path().display().to_string()];
    let (_d, p) = plan(&prof);
    allowed(
        probe(&p, ProbeAction::Read(public.clone())),
        "a world-readable file in a read path",
    );
    if is_root() {
        allowed(
            probe(
                &SandboxPlan::unconfined(),
                ProbeAction::Read(private.clone()),
            ),
            "root reads its own file unconfined",
        );
        let e = denied(
            probe(&p, ProbeAction::Read(private)),
            "a root-only file in a read path",
        );
        assert!(e.contains("Permission denied"), "{e}");
    } else {
        eprintln!("not root: nothing for root to widen; only the twin was checked");
    }
}

/// A confined worker makes no memory executable (no code of its own after
/// the model is parsed: `mmap` and `mprotect` with PROT_EXEC are refused),
/// while a program under `sandbox exec` may (its loader maps libraries):
/// the rule is the worker's. The runner tests show llama.cpp loads and
/// generates under it.
#[test]
fn the_worker_makes_no_memory_executable() {
    let routes = ["mmap", "mprotect", "pkey_mprotect", "shmat", "personality"];
    for route in routes {
        let action = || ProbeAction::ExecutableMemory(route.into());
        allowed(
            probe(&SandboxPlan::unconfined(), action()),
            &format!("{route}, unconfined"),
        );
        for (name, _d, p) in hardened_plans() {
            let o = probe(&p, action());
            if name.starts_with("worker") || route == "personality" {
                refused_by_filter(o, &format!("{route}, {name}"));
            } else if matches!(route, "mmap" | "mprotect") {
                // A program's loader maps its libraries so.
                allowed(o, &format!("{route}, {name}"));
            }
        }
    }
    // The routes are refused by their own rules, not by a call before
    // them: under the deny-list, with System V IPC allowed (the worker's
    // plan refuses it altogether), shmget works and shmat with SHM_EXEC
    // is what fails.
    let (_d, mut p) = plan(&SandboxProfile::standard());
    p.no_sysv_ipc = false;
    let e = denied(
        probe(&p, ProbeAction::ExecutableMemory("shmat".into())),
        "shmat",
    );
    assert!(!e.starts_with("shmget"), "{e}");
}

/// Row 1 of the attack (issue 18): Landlock governs no mode, owner, time
/// or attribute change, so seccomp refuses every route to them under every
/// plan, `sandbox exec`'s included. Each probe makes the file first in its
/// own scratch dir (its own file on a path it may write: only the filter
/// can refuse), and unconfined the same probe changes its own file.
/// Started by root, a file of root's outside every allowed path keeps its
/// mode (the attack's chmod 04755).
#[test]
fn no_file_metadata_changes_anywhere() {
    use std::os::unix::fs::PermissionsExt;
    let routes = [
        "chmod",
        "fchmod",
        "chown",
        "utimensat",
        "setxattr",
        "chattr",
        "create_suid",
        "mknod_suid",
    ];
    let twin = tempfile::tempdir().unwrap();
    for how in routes {
        let action = |path: std::path::PathBuf| ProbeAction::Metadata {
            path,
            how: how.into(),
            create: true,
        };
        allowed(
            probe(&SandboxPlan::unconfined(), action(twin.path().join(how))),
            &format!("{how} of its own file, unconfined"),
        );
        for (name, d, p) in hardened_plans() {
            refused_by_filter(
                probe(&p, action(d.path().join(how))),
                &format!("{how} of its own file in its scratch dir, {name}"),
            );
        }
    }
    // The twin of the create-mode rule: opening a file without creating it
    // is not refused, whatever mode the caller passes (the kernel ignores
    // it then).
    for (name, d, p) in hardened_plans() {
        allowed(
            probe(
                &p,
                ProbeAction::Metadata {
                    path: d.path().join("plain"),
                    how: "open_suid_mode".into(),
                    create: true,
                },
            ),
            &format!("open without O_CREAT, a set-id mode, {name}"),
        );
    }
    // A file of the caller's outside every path the plans allow.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "secret").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&key).unwrap();
    for (name, _d, p) in hardened_plans() {
        for how in ["chmod", "utimensat", "setxattr"] {
            denied(
                probe(
                    &p,
                    ProbeAction::Metadata {
                        path: key.clone(),
                        how: how.into(),
                        create: false,
                    },
                ),
                &format!("{how} of the caller's file outside, {name}"),
            );
        }
    }
    let after = std::fs::metadata(&key).unwrap();
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    assert_eq!(
        after.modified().unwrap(),
        before.modified().unwrap(),
        "the time stayed"
    );
}

/// Row 2: System V IPC. A 0600 segment of the caller's, made by an
/// unconfined probe, is readable by another unconfined one; under every
/// plan the filter refuses the calls (a segment's pages would be outside
/// RLIMIT_AS). Behind the filter, the IPC namespace: the same plan with
/// System V allowed finds no host segment under the key, and a segment it
/// makes and leaves dies with the namespace, while unconfined the same
/// probe's stays on the host (one page each, removed by the test).
#[test]
fn system_v_ipc_stays_inside() {
    let key = 0x5e_0000 + (std::process::id() as i32 & 0xffff) * 16;
    let _gone = ShmRemoved(vec![key]);
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::SysvShm { key, create: true },
        ),
        "unconfined, a segment left behind",
    );
    assert!(
        host_has_segment(key),
        "the unconfined probe's segment stays on the host"
    );
    let read = ProbeAction::SysvShm { key, create: false };
    let got = allowed(
        probe(&SandboxPlan::unconfined(), read.clone()),
        "unconfined read",
    );
    assert_eq!(got, "left behind");
    for (i, (name, _d, p)) in hardened_plans().into_iter().enumerate() {
        refused_by_filter(
            probe(&p, read.clone()),
            &format!("the host's segment, {name}"),
        );
        let k = key + 1 + i as i32;
        let _gone = ShmRemoved(vec![k]);
        refused_by_filter(
            probe(
                &p,
                ProbeAction::SysvShm {
                    key: k,
                    create: true,
                },
            ),
            &format!("a new segment, {name}"),
        );
        // The second wall: the namespace, with the filter's rule off.
        if name == "sandbox exec under standard" {
            let mut open = p.clone();
            open.no_sysv_ipc = false;
            let e = denied(
                probe(&open, read.clone()),
                &format!("{name}, System V allowed"),
            );
            assert!(e.contains("No such file"), "{name}: not its namespace? {e}");
            allowed(
                probe(
                    &open,
                    ProbeAction::SysvShm {
                        key: k,
                        create: true,
                    },
                ),
                &format!("{name}: a segment in its own namespace"),
            );
        }
        assert!(
            !host_has_segment(k),
            "{name}: a segment outlived the program on the host"
        );
    }
}

/// Whether the host's IPC namespace holds a shared memory segment under
/// `key` (`ipcs -m`).
fn host_has_segment(key: i32) -> bool {
    let out = Command::new("ipcs").arg("-m").output().expect("ipcs");
    String::from_utf8_lossy(&out.stdout).contains(&format!("0x{key:08x} "))
}

/// Removes the host's segments under these keys when dropped.
struct ShmRemoved(Vec<i32>);
impl Drop for ShmRemoved {
    fn drop(&mut self) {
        for key in &self.0 {
            if host_has_segment(*key) {
                let _ = Command::new("ipcrm")
                    .args(["-M", &format!("0x{key:08x}")])
                    .status();
            }
        }
    }
}

/// Row 3: quotas counted per user. Under every plan a process queues at
/// most RLIMIT_SIGPENDING signals (the attack queued 96,367 as root, so
/// that every other root process got EAGAIN); unconfined the same probe
/// queues more (bounded: 200). A program under `sandbox exec` starts at
/// most its thread cap, counted in its own user namespace; started by
/// root it is a uid of its own (not root, not the host's nobody), so what
/// it spends is charged to that uid.
#[test]
fn per_user_quotas_are_the_sandbox_s_own() {
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::QueueSignals(200)),
        "unconfined, 200 pending signals",
    );
    for (name, _d, p) in hardened_plans() {
        let cap = p
            .max_pending_signals
            .expect("every plan caps pending signals");
        assert!(cap < 200);
        let e = denied(probe(&p, ProbeAction::QueueSignals(200)), &name);
        assert!(
            e.contains("Resource temporarily unavailable"),
            "{name}: {e}"
        );
        allowed(
            probe(&p, ProbeAction::QueueSignals(cap as u32 / 2)),
            &format!("{name}: below the cap"),
        );
    }
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::Threads(200)),
        "unconfined, 200 threads",
    );
    for (name, _d, p) in hardened_plans()
        .into_iter()
        .filter(|(n, ..)| n.starts_with("sandbox exec"))
    {
        let cap = p.max_threads.expect("sandbox exec caps threads");
        let e = denied(probe(&p, ProbeAction::Threads(200)), &name);
        assert!(
            e.contains("Resource temporarily unavailable"),
            "{name}: {e}"
        );
        // The cap counts the waiter and the PID namespace's init beside
        // the probe's main thread.
        allowed(
            probe(&p, ProbeAction::Threads(cap as u32 - 4)),
            &format!("{name}: below the cap"),
        );
        let (pid, o) = probe_pid(&mut Command::new(worker()), &p, ProbeAction::Identity);
        let ids = allowed(o, &name);
        if is_root() {
            let uid = symbiont_sandbox::per_process_uid(pid);
            assert_eq!(ids, format!("{uid} 65534"), "{name}");
        } else {
            assert_eq!(
                ids,
                format!("{} {}", nix::unistd::getuid(), nix::unistd::getgid()),
                "{name}: the caller's ids"
            );
        }
    }
}

/// Row 4: the parent-death signal cannot be cleared (the program would
/// outlive a killed caller and its time limit); unconfined it can.
#[test]
fn the_parent_death_signal_cannot_be_cleared() {
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::ClearParentDeathSignal,
        ),
        "unconfined",
    );
    for (name, _d, p) in hardened_plans() {
        refused_by_filter(probe(&p, ProbeAction::ClearParentDeathSignal), &name);
    }
}

/// Row 11: inotify reports the names of files other processes create or
/// open in a watched directory, and Landlock governs no watch: refused
/// under every plan; unconfined a watch on /etc works.
#[test]
fn no_file_watches() {
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::Inotify("/etc".into()),
        ),
        "unconfined",
    );
    for (name, d, p) in hardened_plans() {
        refused_by_filter(probe(&p, ProbeAction::Inotify("/etc".into())), &name);
        refused_by_filter(
            probe(&p, ProbeAction::Inotify(d.path().to_path_buf())),
            &format!("{name}: its own scratch dir"),
        );
    }
}

/// Row 9: started by root, a worker's uid is its own, so the host's
/// `nobody` (and any other account) can neither signal nor re-limit it,
/// while the same commands as `nobody` reach a process of `nobody`'s.
#[test]
fn the_host_s_nobody_cannot_reach_a_worker() {
    use std::os::unix::process::CommandExt;
    let (_d, p) = plan(&SandboxProfile::standard());
    let (mut child, _stdin) = start_probe(p, ProbeAction::Sleep(30_000));
    let pid = child.id();
    if !is_root() {
        // Started by another user, the worker keeps that user's ids: its
        // owner's processes may signal it (documented; nothing else may).
        let ok = Command::new("/bin/kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        let _ = child.kill();
        let _ = child.wait();
        assert!(ok, "the worker's own user cannot signal it");
        return;
    }
    let uid = symbiont_sandbox::per_process_uid(pid);
    // Wait until it has given root up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if status.contains(&format!("Uid:\t{uid}\t")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let nobody = Sleeper(
        Command::new("/bin/sleep")
            .arg("30")
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap(),
    );
    let as_nobody = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let np = nobody.0.id().to_string();
    let wp = pid.to_string();
    assert!(
        as_nobody(&["/bin/kill", "-0", &np]),
        "nobody signals its own process"
    );
    assert!(
        as_nobody(&["/usr/bin/prlimit", "--pid", &np, "--as=50000000"]),
        "nobody re-limits its own process"
    );
    assert!(
        !as_nobody(&["/bin/kill", "-STOP", &wp]),
        "nobody stopped the worker"
    );
    assert!(
        !as_nobody(&["/usr/bin/prlimit", "--pid", &wp, "--as=50000000"]),
        "nobody re-limited the worker"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The worker dies with its supervisor, also after giving root up (a
/// change of ids clears the parent-death signal; the sandbox sets it
/// again).
#[test]
fn the_parent_death_signal_survives_the_sandbox() {
    // Under the deny-list, which lets the probe ask (PR_GET_PDEATHSIG).
    let (_d, p) = plan(&SandboxProfile::standard());
    let sig = allowed(probe(&p, ProbeAction::ParentDeathSignal), "confined");
    assert_eq!(sig, "9", "SIGKILL when the supervisor dies");
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::ParentDeathSignal),
        "unconfined",
    );
}

/// `clone` with a CLONE_NEW* flag is refused by the filter (EPERM) before
/// the kernel's own checks (EINVAL for a thread in a new user namespace,
/// the combination the probe uses so that nothing is ever created).
#[test]
fn clone_cannot_make_namespaces() {
    let e = denied(
        probe(&SandboxPlan::unconfined(), ProbeAction::CloneNewNamespace),
        "unconfined clone",
    );
    assert!(e.contains("Invalid argument"), "the kernel's answer: {e}");
    for (name, _d, p) in hardened_plans() {
        refused_by_filter(probe(&p, ProbeAction::CloneNewNamespace), &name);
    }
}

/// TIOCSTI is refused by the filter under every plan. The probe's stdin is
/// a pipe: unconfined the call reaches the terminal layer (ENOTTY);
/// confined it never gets there (EPERM).
#[test]
fn terminal_input_cannot_be_injected() {
    let e = denied(
        probe(&SandboxPlan::unconfined(), ProbeAction::PushTerminalInput),
        "unconfined TIOCSTI on a pipe",
    );
    assert!(e.contains("Inappropriate ioctl"), "{e}");
    for (name, _d, p) in hardened_plans() {
        refused_by_filter(probe(&p, ProbeAction::PushTerminalInput), &name);
        // Other ioctls reach the kernel where the policy lists ioctl (all
        // but the worker under `secure`): the rule is about TIOCSTI only.
        if name != "worker under secure" {
            let e = denied(probe(&p, ProbeAction::TerminalQuery), &name);
            assert!(e.contains("Inappropriate ioctl"), "{name}: {e}");
        }
    }
}

/// Calls aimed at another process by pid (here a `sleep` of the same user,
/// which any unconfined process of that user may reach) are refused; the
/// same call aimed at the probe itself goes through.
#[test]
fn other_processes_are_out_of_reach() {
    let target = Sleeper(Command::new("/bin/sleep").arg("30").spawn().unwrap());
    let pid = target.0.id();
    let attacks = [
        ProbeAction::LimitsOf(pid),
        ProbeAction::Deprioritize(pid),
        ProbeAction::PidfdOpen(pid),
    ];
    for a in &attacks {
        allowed(
            probe(&SandboxPlan::unconfined(), a.clone()),
            &format!("unconfined {a:?}"),
        );
    }
    for (name, _d, p) in hardened_plans() {
        for a in &attacks {
            refused_by_filter(probe(&p, a.clone()), &format!("{a:?}, {name}"));
        }
        // The same calls aimed at the probe itself pass the pid rules
        // where the policy lists them (the deny-list; `secure`'s
        // allow-list has no prlimit64 or setpriority for the worker).
        if name.ends_with("standard") {
            for own in [ProbeAction::LimitsOf(0), ProbeAction::Deprioritize(0)] {
                allowed(
                    probe(&p, own.clone()),
                    &format!("{own:?} on itself, {name}"),
                );
            }
        }
        // Signals: Landlock's scope refuses them to outside processes too;
        // without Landlock, the pid rule alone refuses another process and
        // lets the probe signal itself (abort() does that).
        let mut no_landlock = p.clone();
        no_landlock.confine_filesystem = false;
        refused_by_filter(
            probe(&no_landlock, ProbeAction::SignalZero(pid)),
            &format!("signal another process without Landlock, {name}"),
        );
        allowed(
            probe(&no_landlock, ProbeAction::SignalZero(0)),
            &format!("signal itself, {name}"),
        );
        // Signals by other routes: through a pidfd of the target's /proc
        // directory, or by making it the owner of a descriptor.
        refused_by_filter(
            probe(&no_landlock, ProbeAction::PidfdSignal(pid)),
            &format!("pidfd_send_signal without Landlock, {name}"),
        );
        refused_by_filter(
            probe(&p, ProbeAction::SignalOwner(pid)),
            &format!("F_SETOWN, {name}"),
        );
        // Its CPU set was narrowed to the profile's cores; it cannot grow.
        refused_by_filter(probe(&p, ProbeAction::WidenAffinity), &name);
        // disable_debugging cannot be undone.
        refused_by_filter(probe(&p, ProbeAction::SetDumpable), &name);
    }
    for a in [
        ProbeAction::SignalZero(pid),
        ProbeAction::PidfdSignal(pid),
        ProbeAction::SignalOwner(pid),
    ] {
        allowed(
            probe(&SandboxPlan::unconfined(), a.clone()),
            &format!("unconfined {a:?}"),
        );
    }
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::WidenAffinity),
        "unconfined affinity",
    );
    allowed(
        probe(&SandboxPlan::unconfined(), ProbeAction::SetDumpable),
        "unconfined dumpable",
    );
}

/// A UNIX socket with a path reaches whatever listens there (a session
/// bus, a container daemon): the worker creates no socket at all, and a
/// program under `sandbox exec` without network only socket pairs.
#[test]
fn no_unix_socket_by_path() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("daemon.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::ConnectUnix(path.clone()),
        ),
        "unconfined connect",
    );
    for (name, _d, p) in hardened_plans() {
        refused_by_filter(probe(&p, ProbeAction::ConnectUnix(path.clone())), &name);
    }
}

/// Writable paths get no right to make special files (a device node would
/// be a way around every other rule; fifos and sockets are rendezvous
/// points): Landlock refuses them under the deny-list profile, and seccomp
/// too under the allow-list.
#[test]
fn write_paths_cannot_hold_special_files() {
    let dir = tempfile::tempdir().unwrap();
    allowed(
        probe(
            &SandboxPlan::unconfined(),
            ProbeAction::MakeFifo(dir.path().join("fifo")),
        ),
        "unconfined mkfifo",
    );
    for (name, d, p) in hardened_plans() {
        denied(
            probe(&p, ProbeAction::MakeFifo(d.path().join("fifo"))),
            &format!("mkfifo in the scratch dir, {name}"),
        );
    }
    // The same plan writes a plain file there.
    let (d, p) = plan(&SandboxProfile::standard());
    allowed(
        probe(&p, ProbeAction::Write(d.path().join("plain"), 10)),
        "plain file in the scratch dir",
    );
}

/// No capability survives the sandbox, for root too: giving a file to
/// another owner needs CAP_CHOWN, which root has unconfined. Confined, the
/// filter refuses `chown` outright (`no_file_metadata_changes_anywhere`);
/// behind it the process is an unprivileged id in a user namespace of its
/// own where uid 4242 is not even mapped (EINVAL), with no capability left
/// (EPERM). The supervisor also checks every capability set of every
/// worker from outside (`no_capabilities` in the runner tests).
#[test]
fn no_capabilities_even_for_root() {
    for (name, d, p) in [
        {
            let (d, p) = plan(&SandboxProfile::standard());
            ("worker", d, p)
        },
        {
            let d = tempfile::tempdir().unwrap();
            let p = sandbox_exec_plan_for(
                &SandboxProfile::standard(),
                Path::new(&worker()),
                &[],
                &[],
                &[],
                Some(d.path()),
                1,
            )
            .unwrap();
            ("sandbox exec", d, p)
        },
    ] {
        let e = denied(
            probe(&p, ProbeAction::GiveAway(d.path().join("mine"))),
            &format!("{name}: chown to another user, confined"),
        );
        assert!(
            e.contains(EPERM) || e.contains("Invalid argument"),
            "{name}: not chown's refusal: {e}"
        );
        if is_root() && name == "sandbox exec" {
            assert!(e.contains(EPERM), "{name}: {e}");
        }
    }
    if is_root() {
        let dir = tempfile::tempdir().unwrap();
        allowed(
            probe(
                &SandboxPlan::unconfined(),
                ProbeAction::GiveAway(dir.path().join("mine")),
            ),
            "root gives a file away unconfined",
        );
    } else {
        eprintln!("not root: giving a file away is refused by the kernel anyway; only the denial was checked");
    }
}

/// Read paths are resolved before they are compared with the denied ones:
/// a symlink (or a `..`) in `read_paths` that leads into a denied directory
/// makes the profile a refused one, as the direct path does; an unrelated
/// read path is fine, and the denied directory stays unreadable.
#[test]
fn symlinks_in_read_paths_cannot_reopen_a_denied_directory() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("key"), "k").unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let dotdot = format!("{}/../secret", public.display());
    let scratch = tempfile::tempdir().unwrap();
    for (name, strict) in [("secure", true), ("standard", false)] {
        let mut prof = if strict {
            SandboxProfile::secure()
        } else {
            SandboxProfile::standard()
        };
        prof.filesystem.denied_paths = vec![secret.display().to_string()];
        for read in [
            secret.display().to_string(),
            link.display().to_string(),
            dotdot.clone(),
        ] {
            prof.filesystem.read_paths = vec![read.clone()];
            assert!(
                sandbox_plan_for(&prof, &model_path(), Some(scratch.path()), 1).is_err(),
                "{name}: read path {read} reopens the denied directory"
            );
        }
        // The allowed twin: an unrelated read path builds, and the denied
        // directory stays closed under it.
        prof.filesystem.read_paths = vec![public.display().to_string()];
        let p = sandbox_plan_for(&prof, &model_path(), Some(scratch.path()), 1).unwrap();
        denied(
            probe(&p, ProbeAction::Read(secret.join("key"))),
            &format!("{name}: the denied file"),
        );
    }
}
