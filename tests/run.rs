//! End-to-end tests of `strata run` and of the runner's library API: real namespaces, real
//! mounts, real cgroups, on a busybox image imported from the host's static busybox.
//! They need root; each one checks afterwards that no mount, cgroup or process is left.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{TestStore, busybox_tarball, is_root_or_skip, repo_root, sh, strata_bin};
use layerfs::config::ContainerConfig;
use layerfs::reference::Reference;

/// The tests run containers one at a time, so that "nothing left behind" can be checked
/// exactly (no other test's container is running).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A store with busybox, for a root-only test; `None` (after printing why) without root.
fn setup(test: &str) -> Option<(MutexGuard<'static, ()>, TestStore)> {
    if !is_root_or_skip(test) {
        return None;
    }
    let guard = serial();
    Some((guard, TestStore::with_busybox()))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `strata run ARGS…` and its output.
fn run(store: &TestStore, args: &[&str]) -> Output {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(args);
    store.output(&full)
}

/// `strata run ARGS…`, asserting success; its stdout, trimmed.
fn run_ok(store: &TestStore, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "strata run {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_owned()
}

/// Asserts the exit code of `strata run ARGS…` and returns its stderr.
fn run_code(store: &TestStore, args: &[&str], code: i32) -> String {
    let out = run(store, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "strata run {args:?}:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The container cgroups that exist under strata's parent cgroup, in every hierarchy.
fn container_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let parents = ["/sys/fs/cgroup/strata"]
        .into_iter()
        .map(PathBuf::from)
        .chain(
            ["memory", "pids", "cpu", "cpu,cpuacct"]
                .iter()
                .map(|c| Path::new("/sys/fs/cgroup").join(c).join("strata")),
        );
    for parent in parents {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            found.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    found
}

/// Processes whose command line is `needle` (`sleep 100`: not a strata running it, and not an
/// unrelated `sleep 1000`).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = text(&cmdline).replace('\0', " ");
            if cmdline.trim_end() == needle {
                found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Asserts that no mount under the store, no container directory and no container cgroup is
/// left.
fn assert_nothing_left(store: &TestStore) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = store.root();
    let root = root.to_str().unwrap();
    let mounts: Vec<&str> = info.lines().filter(|l| l.contains(root)).collect();
    assert!(mounts.is_empty(), "mounts left behind: {mounts:#?}");
    let leftovers = container_leftovers(&store.root());
    assert!(
        leftovers.is_empty(),
        "container files left behind: {leftovers:?}"
    );
    let cgroups = container_cgroups();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
}

/// What containers left in a store: anything in `containers/` but the reusable slots' empty
/// `upper` and `work` dirs.
fn container_leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for slot in std::fs::read_dir(root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let is_slot = slot.file_name().to_string_lossy().starts_with("slot-");
        for e in std::fs::read_dir(slot.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name();
            if is_slot && (name == "upper" || name == "work") {
                found.extend(
                    std::fs::read_dir(e.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|x| x.path()),
                );
            } else {
                found.push(e.path());
            }
        }
        if !is_slot {
            found.push(slot.path());
        }
    }
    found
}

/// Tags a copy of image `from` as `name` with its container config changed by `edit`.
fn derive_image(
    store: &TestStore,
    from: &str,
    name: &str,
    edit: impl FnOnce(&mut ContainerConfig),
) {
    let s = layerfs::store::Store::open(store.root()).unwrap();
    let image = s.resolve_image(from).unwrap();
    let mut config = image.config.clone();
    edit(&mut config.config);
    let manifest = s.put_image(&config, image.manifest.layers()).unwrap();
    s.tag(&Reference::parse(name).unwrap(), &manifest).unwrap();
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_command_is_in_its_own_pid_namespace() {
    let Some((_g, store)) = setup("the_command_is_in_its_own_pid_namespace") else {
        return;
    };
    // The built-in init is PID 1 and the command PID 2; no host process is visible.
    assert_eq!(run_ok(&store, &["busybox", "sh", "-c", "echo $$"]), "2");
    let pids = run_ok(
        &store,
        &["busybox", "sh", "-c", "ls /proc | grep -c '^[0-9]'"],
    );
    assert!(
        pids.parse::<u32>().unwrap() < 5,
        "the container sees {pids} processes"
    );
    let ps = run_ok(&store, &["busybox", "ps", "-o", "pid,comm"]);
    assert!(
        ps.contains("strata-init") && ps.lines().count() <= 4,
        "ps shows:\n{ps}"
    );
    assert_nothing_left(&store);
}

#[test]
fn the_hostname_is_the_containers_own() {
    let Some((_g, store)) = setup("the_hostname_is_the_containers_own") else {
        return;
    };
    let host = sh("hostname").trim().to_owned();
    assert_eq!(
        run_ok(&store, &["--hostname", "box1", "busybox", "hostname"]),
        "box1"
    );
    assert_eq!(
        run_ok(
            &store,
            &["--hostname", "box1", "busybox", "cat", "/etc/hostname"]
        ),
        "box1"
    );
    let hosts = run_ok(
        &store,
        &["--hostname", "box1", "busybox", "cat", "/etc/hosts"],
    );
    assert!(
        hosts.contains("127.0.0.1\tlocalhost") && hosts.contains("\tbox1"),
        "{hosts}"
    );
    // By default, the first 12 hex digits of the container id.
    let default = run_ok(&store, &["busybox", "hostname"]);
    assert!(
        default.len() == 12 && default.bytes().all(|b| b.is_ascii_hexdigit()),
        "{default}"
    );
    assert_eq!(sh("hostname").trim(), host, "the host's hostname changed");
    assert_nothing_left(&store);
}

#[test]
fn network_none_leaves_only_loopback_up() {
    let Some((_g, store)) = setup("network_none_leaves_only_loopback_up") else {
        return;
    };
    let net = ["--network", "none", "busybox", "sh", "-c"];
    let ifaces = run_ok(
        &store,
        &[&net[..], &["ls /sys/class/net | tr '\\n' ' '"]].concat(),
    );
    assert_eq!(ifaces, "lo");
    // IFF_UP | IFF_LOOPBACK
    let flags = run_ok(
        &store,
        &[&net[..], &["cat /sys/class/net/lo/flags"]].concat(),
    );
    assert_eq!(
        u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap() & 0x9,
        0x9
    );
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let shared = run_ok(
        &store,
        &["busybox", "sh", "-c", "ls /sys/class/net | wc -l"],
    );
    assert_eq!(
        shared.parse::<usize>().unwrap(),
        host_ifaces,
        "--network host shares the host's"
    );
    assert_nothing_left(&store);
}

#[test]
fn mounting_and_kernel_writes_are_refused() {
    let Some((_g, store)) = setup("mounting_and_kernel_writes_are_refused") else {
        return;
    };
    let refused = |script: &str| {
        let out = run(&store, &["busybox", "sh", "-c", script]);
        assert!(
            !out.status.success(),
            "{script:?} succeeded in the container: {}",
            text(&out.stdout)
        );
    };
    refused("mount -t tmpfs none /mnt");
    refused("mount --bind /bin /mnt");
    refused("umount /proc");
    refused("echo x > /proc/sys/kernel/domainname");
    refused("echo 1 > /proc/sys/vm/drop_caches");
    refused("unshare -n true");
    refused("unshare -U true");
    if Path::new("/proc/sysrq-trigger").exists() {
        refused("echo h > /proc/sysrq-trigger");
    }
    // The masked files read as empty.
    assert_eq!(
        run_ok(
            &store,
            &[
                "busybox",
                "sh",
                "-c",
                "cat /proc/keys /proc/timer_list | wc -c"
            ]
        ),
        "0"
    );
    // A device node made in the container cannot be opened (the root and /dev are nodev):
    // only the bound null, zero, full, random, urandom and tty are usable.
    refused("mknod /tmp/null c 1 3 && echo x > /tmp/null");
    refused("mknod /dev/null2 c 1 3 && echo x > /dev/null2");
    run_ok(
        &store,
        &[
            "busybox",
            "sh",
            "-c",
            "echo x > /dev/null && head -c 1 /dev/urandom >/dev/null",
        ],
    );
    let status = run_ok(
        &store,
        &[
            "busybox",
            "grep",
            "-E",
            "^(Seccomp|NoNewPrivs)",
            "/proc/self/status",
        ],
    );
    assert!(
        status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t0"),
        "{status}"
    );
    assert_nothing_left(&store);
}

#[test]
fn capabilities_are_dockers_default_set() {
    let Some((_g, store)) = setup("capabilities_are_dockers_default_set") else {
        return;
    };
    let caps = |user: &str| {
        let out = run_ok(
            &store,
            &["-u", user, "busybox", "grep", "^Cap", "/proc/self/status"],
        );
        out.lines()
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_owned(), v.trim().to_owned())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let docker = format!("{:016x}", runner::default_capability_mask());
    assert_eq!(docker, "00000000a80425fb");
    let root = caps("root");
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(root[set], docker, "{set} of root");
    }
    assert_eq!(root["CapInh"], "0000000000000000");
    assert_eq!(root["CapAmb"], "0000000000000000");
    let app = caps("app");
    assert_eq!(app["CapEff"], "0000000000000000");
    assert_eq!(app["CapPrm"], "0000000000000000");
    assert_eq!(app["CapBnd"], docker);
    assert_nothing_left(&store);
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let Some((_g, store)) = setup("bind_mounts_read_write_and_read_only") else {
        return;
    };
    let vol = store.path("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("in.txt"), "ok\n").unwrap();
    let rw = format!("{}:/data", vol.display());
    let ro = format!("{}:/data:ro", vol.display());
    assert_eq!(
        run_ok(&store, &["-v", &ro, "busybox", "cat", "/data/in.txt"]),
        "ok"
    );
    let out = run(
        &store,
        &["-v", &ro, "busybox", "sh", "-c", "echo x > /data/new"],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("Read-only"),
        "{}",
        text(&out.stderr)
    );
    assert!(!vol.join("new").exists());
    run_ok(
        &store,
        &["-v", &rw, "busybox", "sh", "-c", "echo written > /data/new"],
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("new")).unwrap(),
        "written\n"
    );
    // A single file, a destination that does not exist in the image, a missing source.
    let file = format!("{}:/etc/motd:ro", vol.join("in.txt").display());
    assert_eq!(
        run_ok(&store, &["-v", &file, "busybox", "cat", "/etc/motd"]),
        "ok"
    );
    let deep = format!("{}:/a/b/c", vol.display());
    assert_eq!(
        run_ok(&store, &["-v", &deep, "busybox", "cat", "/a/b/c/in.txt"]),
        "ok"
    );
    let missing = store.path("made-by-run");
    let made = format!("{}:/m", missing.display());
    run_ok(&store, &["-v", &made, "busybox", "true"]);
    assert!(missing.is_dir(), "-v creates a missing source directory");
    let err = run_code(&store, &["-v", "named:/x", "busybox", "true"], 125);
    assert!(err.contains("named volumes"), "{err}");

    // The same through docker's long syntax, and a tmpfs with its size and mode.
    let long_ro = format!("type=bind,source={},target=/data,readonly", vol.display());
    assert_eq!(
        run_ok(
            &store,
            &["--mount", &long_ro, "busybox", "cat", "/data/new"]
        ),
        "written"
    );
    let out = run(
        &store,
        &[
            "--mount",
            &long_ro,
            "busybox",
            "sh",
            "-c",
            "echo x > /data/other",
        ],
    );
    assert!(!out.status.success() && text(&out.stderr).contains("Read-only"));
    let long_rw = format!("type=bind,src={},dst=/data", vol.display());
    run_ok(
        &store,
        &[
            "--mount",
            &long_rw,
            "busybox",
            "sh",
            "-c",
            "echo long > /data/other",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("other")).unwrap(),
        "long\n"
    );
    let tmpfs = "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770";
    let line = run_ok(
        &store,
        &["--mount", tmpfs, "busybox", "grep", " /t ", "/proc/mounts"],
    );
    assert!(
        line.contains("size=1024k") && line.contains("mode=1770"),
        "{line}"
    );
    for (spec, says) in [
        (
            "type=bind,source=/no/such/dir,target=/x",
            "bind source path does not exist",
        ),
        ("source=named,target=/x", "volumes are not supported"),
        ("type=tmpfs,target=relative", "absolute path"),
        (
            "type=bind,source=/tmp,target=/x,color=red",
            "unknown field \"color=red\"",
        ),
    ] {
        let err = run_code(&store, &["--mount", spec, "busybox", "true"], 125);
        assert!(err.contains(says) && err.contains(spec), "{spec}: {err}");
    }
    assert_nothing_left(&store);
}

#[test]
fn read_only_rootfs() {
    let Some((_g, store)) = setup("read_only_rootfs") else {
        return;
    };
    let out = run(&store, &["--read-only", "busybox", "touch", "/x"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("Read-only"),
        "{}",
        text(&out.stderr)
    );
    // /dev and /dev/shm stay writable, as in docker.
    run_ok(
        &store,
        &[
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "echo x > /dev/shm/f && echo y > /dev/null",
        ],
    );
    assert_nothing_left(&store);
}

#[test]
fn memory_limit_kills_a_large_allocation_with_137() {
    let Some((_g, store)) = setup("memory_limit_kills_a_large_allocation_with_137") else {
        return;
    };
    let err = run_code(
        &store,
        &[
            "--memory",
            "32m",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=200M",
            "count=1",
        ],
        137,
    );
    assert!(err.contains("out of memory (--memory 32m)"), "{err}");
    // The same allocation fits without the limit.
    run_ok(
        &store,
        &[
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=200M",
            "count=1",
        ],
    );
    // And a small one fits within it.
    run_ok(
        &store,
        &[
            "--memory",
            "32m",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=4M",
            "count=1",
        ],
    );
    assert_nothing_left(&store);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some((_g, store)) = setup("pids_limit_stops_a_fork_bomb") else {
        return;
    };
    let bomb = "i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo all-forked";
    let start = Instant::now();
    let out = run(&store, &["--pids-limit", "20", "busybox", "sh", "-c", bomb]);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(
        !text(&out.stdout).contains("all-forked"),
        "100 processes under --pids-limit 20"
    );
    assert!(
        text(&out.stderr).contains("can't fork"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        processes_with("sleep 30").is_empty(),
        "{:?}",
        processes_with("sleep 30")
    );
    // CPU limit: accepted, and the command still runs.
    assert_eq!(
        run_ok(&store, &["--cpus", "0.5", "busybox", "echo", "limited"]),
        "limited"
    );
    assert_nothing_left(&store);
}

#[test]
fn limits_are_written_to_the_containers_cgroup() {
    let Some((_g, store)) = setup("limits_are_written_to_the_containers_cgroup") else {
        return;
    };
    let limits = ["--cpus", "0.5", "--memory", "64m", "--pids-limit", "50"];
    let mut child = store
        .cmd(&[&["run", "--rm"][..], &limits, &["busybox", "sleep", "3210"]].concat())
        .spawn()
        .unwrap();
    wait_for_process("sleep 3210");
    let mut seen = std::collections::BTreeMap::new();
    for dir in container_cgroups() {
        for file in [
            "cpu.cfs_quota_us",
            "cpu.max",
            "memory.limit_in_bytes",
            "memory.max",
            "pids.max",
        ] {
            if let Ok(v) = std::fs::read_to_string(dir.join(file)) {
                seen.insert(file, v.trim().to_owned());
            }
        }
        // The container runs in it.
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        assert!(!procs.trim().is_empty(), "{} is empty", dir.display());
    }
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let cpu = seen
        .get("cpu.cfs_quota_us")
        .or(seen.get("cpu.max"))
        .expect("a cpu limit");
    assert!(cpu == "50000" || cpu == "50000 100000", "{cpu}");
    let memory = seen
        .get("memory.limit_in_bytes")
        .or(seen.get("memory.max"))
        .expect("a memory limit");
    assert_eq!(memory, "67108864");
    assert_eq!(seen.get("pids.max").map(String::as_str), Some("50"));
    // Inside, /sys/fs/cgroup shows the container's own cgroup as the root, read-only.
    let script = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; \
                  grep -c ':/$' /proc/self/cgroup >/dev/null && echo own-root; \
                  (echo 1 > /sys/fs/cgroup/memory.max || echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes) \
                  2>/dev/null || echo read-only";
    let out = run_ok(&store, &["--memory", "64m", "busybox", "sh", "-c", script]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["67108864", "own-root", "read-only"],
        "{out}"
    );
    assert_nothing_left(&store);
}

#[test]
fn exit_codes_follow_docker() {
    let Some((_g, store)) = setup("exit_codes_follow_docker") else {
        return;
    };
    run_code(&store, &["busybox", "sh", "-c", "exit 7"], 7);
    run_code(&store, &["busybox", "sh", "-c", "kill -TERM $$"], 143);
    run_code(&store, &["busybox", "sh", "-c", "kill -KILL $$"], 137);
    let err = run_code(&store, &["busybox", "no-such-command"], 127);
    assert!(
        err.contains("no-such-command: executable file not found in $PATH"),
        "{err}"
    );
    let err = run_code(&store, &["busybox", "/no/such/file"], 127);
    assert!(err.contains("/no/such/file"), "{err}");
    let err = run_code(&store, &["busybox", "/etc/passwd"], 126);
    assert!(err.contains("/etc/passwd: permission denied"), "{err}");
    let err = run_code(&store, &["busybox", "/bin"], 126);
    assert!(err.contains("/bin: is a directory"), "{err}");
    let err = run_code(&store, &["no-such-image", "true"], 125);
    assert!(err.contains("no-such-image"), "{err}");
    let err = run_code(&store, &["-u", "ghost", "busybox", "true"], 125);
    assert!(err.contains("unable to find user ghost"), "{err}");
    let err = run_code(&store, &["--memory", "lots", "busybox", "true"], 125);
    assert!(err.contains("lots"), "{err}");
    let err = run_code(&store, &["-w", "relative", "busybox", "true"], 125);
    assert!(err.contains("\"relative\""), "{err}");
    assert_nothing_left(&store);
}

#[test]
fn the_host_strata_binary_is_never_executed() {
    let Some((_g, store)) = setup("the_host_strata_binary_is_never_executed") else {
        return;
    };
    let err = run_code(&store, &["busybox", "/proc/self/exe", "--version"], 126);
    assert!(
        err.contains("refusing to execute the host's strata binary"),
        "{err}"
    );
    // A script whose interpreter is the executing process's own binary.
    let dir = store.path("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s"), "#!/proc/self/exe --version\n").unwrap();
    sh(&format!("chmod 755 {}/s", dir.display()));
    let vol = format!("{}:/x:ro", dir.display());
    let out = run(&store, &["-v", &vol, "busybox", "/x/s"]);
    assert!(
        !text(&out.stdout).contains("strata"),
        "strata ran in the container: {}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refusing to execute the host's strata binary"));
    // /proc/1 is the init, a fork of strata: not dumpable, so its exe is out of reach.
    let out = run(
        &store,
        &[
            "busybox",
            "sh",
            "-c",
            "ls -l /proc/1/exe; cat /proc/1/exe | head -c 4",
        ],
    );
    assert!(!text(&out.stdout).contains("ELF"), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(strata_bin().to_str().unwrap()));
    assert_nothing_left(&store);
}

#[test]
fn a_working_directory_through_a_leaked_descriptor_is_impossible() {
    let Some((_g, store)) = setup("a_working_directory_through_a_leaked_descriptor_is_impossible")
    else {
        return;
    };
    for dir in [
        "/proc/self/fd/3",
        "/proc/self/fd/4",
        "/proc/self/fd/5",
        "/proc/self/fd/7",
        "/proc/1/cwd",
        "/proc/1/root",
    ] {
        let out = run(&store, &["-w", dir, "busybox", "sh", "-c", "pwd; ls"]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "-w {dir}: {}",
            text(&out.stdout)
        );
    }
    // Only stdio is open in the command.
    let fds = run_ok(&store, &["busybox", "ls", "/proc/self/fd"]);
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "ls's own directory fd is 3"
    );
    assert_nothing_left(&store);
}

#[test]
fn signals_reach_the_command_and_strata_returns_promptly() {
    let Some((_g, store)) = setup("signals_reach_the_command_and_strata_returns_promptly") else {
        return;
    };
    for (sig, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
    ] {
        let mut child = store
            .cmd(&["run", "--rm", "busybox", "sleep", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_process("sleep 100");
        let start = Instant::now();
        // SAFETY: kill takes plain integers.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let status =
            wait_timeout(&mut child, Duration::from_secs(5)).expect("strata run did not return");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(status.code(), Some(code), "signal {sig}");
    }
    assert_nothing_left(&store);
}

#[test]
fn a_killed_strata_takes_its_container_along() {
    let Some((_g, store)) = setup("a_killed_strata_takes_its_container_along") else {
        return;
    };
    let mut child = store
        .cmd(&["run", "--rm", "busybox", "sleep", "4321"])
        .spawn()
        .unwrap();
    wait_for_process("sleep 4321");
    child.kill().unwrap(); // SIGKILL: strata cleans nothing up itself
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with("sleep 4321").is_empty() {
        assert!(Instant::now() < deadline, "the container outlived strata");
        std::thread::sleep(Duration::from_millis(10));
    }
    // What it wrote stays until the next `strata run` takes the slot.
    assert!(!container_leftovers(&store.root()).is_empty());
    run_ok(&store, &["busybox", "true"]);
    assert_nothing_left(&store);
}

#[test]
fn the_images_stop_signal_replaces_sigterm() {
    let Some((_g, store)) = setup("the_images_stop_signal_replaces_sigterm") else {
        return;
    };
    derive_image(&store, "busybox", "stoppable:latest", |c| {
        c.stop_signal = Some("SIGUSR1".into());
        c.cmd = Some(strings(&[
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done",
        ]));
    });
    let mut child = store
        .cmd(&["run", "--rm", "stoppable"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut child, Duration::from_secs(5)).expect("did not stop");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!((status.code(), rest.trim()), (Some(0), "got-usr1"));
    assert_nothing_left(&store);
}

#[test]
fn orphans_are_reaped_and_killed_at_the_end() {
    let Some((_g, store)) = setup("orphans_are_reaped_and_killed_at_the_end") else {
        return;
    };
    // Double-forked children end as orphans of PID 1; none may stay a zombie.
    let script = "for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 0.8; \
                  cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z";
    let out = run(&store, &["busybox", "sh", "-c", script]);
    assert_eq!(text(&out.stdout).trim(), "0", "zombies in the container");
    // A background process outlives its command only as long as the container does.
    run_ok(
        &store,
        &["busybox", "sh", "-c", "sleep 7777 & echo started"],
    );
    assert!(
        processes_with("sleep 7777").is_empty(),
        "{:?}",
        processes_with("sleep 7777")
    );
    assert_nothing_left(&store);
}

#[test]
fn a_tty_is_a_real_pseudo_terminal() {
    let Some((_g, store)) = setup("a_tty_is_a_real_pseudo_terminal") else {
        return;
    };
    assert_eq!(run_ok(&store, &["-t", "busybox", "tty"]), "/dev/pts/0");
    let out = run_ok(
        &store,
        &[
            "-t",
            "busybox",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo $TERM; stty size",
        ],
    );
    assert!(out.starts_with("xterm"), "{out}");
    // -i relays stdin to the terminal; its end is the terminal's end of file.
    let mut child = store
        .cmd(&["run", "--rm", "-i", "-t", "busybox", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo from-$((40+2))\nexit 3\n")
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("sh did not end");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(out.contains("from-42"), "{out}");
    assert_nothing_left(&store);
}

#[test]
fn the_terminal_gets_the_callers_window_size() {
    let Some((_g, store)) = setup("the_terminal_gets_the_callers_window_size") else {
        return;
    };
    if !common::have_or_skip("script", "the_terminal_gets_the_callers_window_size") {
        return;
    }
    // `script` gives strata a terminal of its own, 45 rows by 123 columns.
    let line = format!(
        "stty cols 123 rows 45; {} --root {} run --rm -t busybox stty size",
        strata_bin().display(),
        store.root().display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("45 123"),
        "{:?}",
        text(&out.stdout)
    );
    assert_nothing_left(&store);
}

#[test]
fn stdin_is_passed_only_with_interactive() {
    let Some((_g, store)) = setup("stdin_is_passed_only_with_interactive") else {
        return;
    };
    let feed = |args: &[&str]| {
        let mut child = store
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"fed\n").unwrap();
        text(&child.wait_with_output().unwrap().stdout)
    };
    assert_eq!(feed(&["run", "--rm", "-i", "busybox", "cat"]), "fed\n");
    assert_eq!(feed(&["run", "--rm", "busybox", "cat"]), "");
    assert_nothing_left(&store);
}

#[test]
fn users_working_directories_and_environment() {
    let Some((_g, store)) = setup("users_working_directories_and_environment") else {
        return;
    };
    assert_eq!(
        run_ok(
            &store,
            &["-u", "app", "busybox", "sh", "-c", "id; echo $HOME"]
        ),
        "uid=1000(app) gid=1000(app) groups=1000(app)\n/home/app"
    );
    assert_eq!(
        run_ok(&store, &["-u", "1000:nogroup", "busybox", "id"]),
        "uid=1000(app) gid=65534(nogroup) groups=65534(nogroup)"
    );
    assert_eq!(
        run_ok(
            &store,
            &[
                "-u",
                "4242",
                "busybox",
                "sh",
                "-c",
                "id -u; id -g; echo $HOME"
            ]
        ),
        "4242\n0\n/"
    );
    assert_eq!(
        run_ok(&store, &["-w", "/new/dir", "busybox", "pwd"]),
        "/new/dir"
    );
    let out = store
        .cmd(&[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "FROM_HOST",
            "-e",
            "NOT_SET_ANYWHERE",
            "busybox",
            "env",
        ])
        .env("FROM_HOST", "copied")
        .env_remove("NOT_SET_ANYWHERE")
        .output()
        .unwrap();
    let env = text(&out.stdout);
    assert!(
        env.contains("A=1\n") && env.contains("FROM_HOST=copied\n"),
        "{env}"
    );
    assert!(!env.contains("NOT_SET_ANYWHERE"), "{env}");
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{env}"
    );
    assert!(
        env.contains("HOME=/root\n") && env.contains("HOSTNAME="),
        "{env}"
    );
    assert_nothing_left(&store);
}

#[test]
fn the_image_config_is_honoured() {
    let Some((_g, store)) = setup("the_image_config_is_honoured") else {
        return;
    };
    derive_image(&store, "busybox", "configured:1", |c| {
        c.entrypoint = Some(strings(&["/bin/echo", "entry"]));
        c.cmd = Some(strings(&["default-cmd"]));
        c.env = Some(strings(&["GREETING=hello", "PATH=/bin"]));
        c.working_dir = Some("/home/app".into());
        c.user = Some("app".into());
    });
    assert_eq!(run_ok(&store, &["configured:1"]), "entry default-cmd");
    assert_eq!(run_ok(&store, &["configured:1", "given"]), "entry given");
    let out = run_ok(
        &store,
        &[
            "--entrypoint",
            "/bin/sh",
            "configured:1",
            "-c",
            "echo $GREETING $PATH; pwd; id -un",
        ],
    );
    assert_eq!(out, "hello /bin\n/home/app\napp");
    assert_eq!(
        run_ok(&store, &["--entrypoint", "", "configured:1", "id", "-u"]),
        "1000"
    );
    assert_eq!(
        run_ok(&store, &["-u", "root", "-w", "/", "configured:1"]),
        "entry default-cmd"
    );
    derive_image(&store, "busybox", "nocmd:1", |c| {
        c.cmd = None;
        c.entrypoint = None;
    });
    let err = run_code(&store, &["nocmd:1"], 125);
    assert!(err.contains("no command specified"), "{err}");
    assert_nothing_left(&store);
}

/// The `strata run` parts of the conformance cases 14-isolation and 01-basic-run, on images
/// made without the builder.
#[test]
#[allow(clippy::print_stderr)] // a skip says why, as tests/common does
fn conformance_cases_run_parts() {
    let Some((_g, store)) = setup("conformance_cases_run_parts") else {
        return;
    };
    // `$STRATA_CONFORMANCE`, or `shared/conformance` beside the checkout (as tests/conformance.rs).
    let cases = std::env::var_os("STRATA_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/conformance"));
    if !cases.join("14-isolation").is_dir() {
        eprintln!(
            "SKIP conformance_cases_run_parts: no conformance cases at {} (set STRATA_CONFORMANCE)",
            cases.display()
        );
        return;
    }
    // 01-basic-run's image: busybox, /hello, CMD cat /hello.
    let tar = store.path("hello.tar");
    std::fs::copy(busybox_tarball(), &tar).unwrap();
    let staging = store.path("hello");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("hello"), "hi\n").unwrap();
    sh(&format!(
        "tar -rf {} -C {} ./hello",
        tar.display(),
        staging.display()
    ));
    store.ok(&["import", tar.to_str().unwrap(), "basic-base:latest"]);
    derive_image(
        &store,
        "basic-base",
        "conformance-01-basic-run:latest",
        |c| {
            c.cmd = Some(strings(&["cat", "/hello"]));
        },
    );
    for (case, image) in [
        ("14-isolation", "busybox:latest"),
        ("01-basic-run", "conformance-01-basic-run:latest"),
    ] {
        let work = store.path(&format!("work-{case}"));
        std::fs::create_dir_all(&work).unwrap();
        let script = format!(
            "failed=0; fail() {{ echo \"FAIL: $*\"; failed=1; }}; . {}/expect.sh; exit $failed",
            cases.join(case).display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env(
                "STRATA",
                format!(
                    "{} --root {}",
                    strata_bin().display(),
                    store.root().display()
                ),
            )
            .env("IMAGE", image)
            .env("CASE", cases.join(case))
            .env("WORK", &work)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert_nothing_left(&store);
}

/// strata run by an unprivileged user: the container gets a user namespace where the user is
/// root (a single-id map: `nobody` has no /etc/subuid range), and its directory still goes.
#[test]
fn an_unprivileged_strata_runs_in_a_user_namespace() {
    let Some((_g, store)) = setup("an_unprivileged_strata_runs_in_a_user_namespace") else {
        return;
    };
    let nobody = 65534;
    let root = store.path("nobody-store");
    std::fs::create_dir(&root).unwrap();
    sh(&format!(
        "chmod 755 {} && chown {nobody}:{nobody} {}",
        store.dir.path().display(),
        root.display()
    ));
    let tar = store.path("busybox.tar");
    std::fs::copy(busybox_tarball(), &tar).unwrap();
    sh(&format!("chmod 644 {}", tar.display()));
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        Command::new(strata_bin())
            .arg("--root")
            .arg(&root)
            .args(args)
            .uid(nobody)
            .gid(nobody)
            .env("HOME", &root)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = as_nobody(&["import", tar.to_str().unwrap(), "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = as_nobody(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; echo x > /made && cat /made",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, ["0", "0 65534 1", "x"]);
    let err = text(&as_nobody(&["run", "--rm", "--memory", "32m", "busybox", "true"]).stderr);
    assert!(err.contains("need root"), "{err}");
    let left = container_leftovers(&root);
    assert!(left.is_empty(), "container files left behind: {left:?}");
    assert_nothing_left(&store);
}

/// The library as the builder uses it: from a multi-threaded process (through the setup
/// helper), with piped output, on an overlay whose upper dir keeps the writes.
#[test]
fn the_library_runs_steps_from_a_multithreaded_caller() {
    let Some((_g, store)) = setup("the_library_runs_steps_from_a_multithreaded_caller") else {
        return;
    };
    let lower = store.path("lower");
    std::fs::create_dir_all(&lower).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        busybox_tarball().display(),
        lower.display()
    ));
    let (upper, work, mnt) = (store.path("upper"), store.path("work"), store.path("mnt"));
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    // A second thread runs throughout, as the builder's progress view would.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let ticker =
        std::thread::spawn(
            move || while stop_rx.recv_timeout(Duration::from_millis(5)).is_err() {},
        );

    let rootfs = runner::Rootfs::Union {
        layers: layerfs::mount::UnionSpec {
            lowers: vec![lower.clone()],
            upper: upper.clone(),
            work,
        },
        mountpoint: mnt.clone(),
    };
    let mut spec = runner::Spec::new(
        rootfs,
        strings(&[
            "sh",
            "-c",
            "echo out; echo err >&2; echo built > /artifact; hostname; exit 4",
        ]),
    );
    spec.hostname = "buildbox".into();
    spec.network = runner::Network::None;
    let mut command = runner::Command::new(spec);
    command
        .setup_helper(strata_bin())
        .stdout(runner::Output::Piped)
        .stderr(runner::Output::Piped);
    let mut child = command.spawn().unwrap();
    let created = child.created_mountpoints().to_vec();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        (out.as_str(), err.as_str(), status.code()),
        ("out\nbuildbox\n", "err\n", 4)
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("artifact")).unwrap(),
        "built\n"
    );
    // The sandbox's own files are bind mounts: what lands in the upper dir is at most the
    // empty mount points it had to create, which it reports so a builder can drop them.
    assert_eq!(created, ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]);
    for f in &created {
        let len = std::fs::metadata(upper.join(&f[1..])).unwrap().len();
        assert_eq!(len, 0, "{f} in the upper dir");
    }
    assert!(
        !runner_mounted(&mnt),
        "the overlay was mounted in the host's namespace"
    );

    // A setup failure is reported as an error naming the thing, and leaves nothing.
    let mut bad = runner::Spec::new(runner::Rootfs::Dir(lower.clone()), strings(&["true"]));
    bad.user = Some("ghost".into());
    let e = runner::Command::new(bad)
        .setup_helper(strata_bin())
        .spawn()
        .unwrap_err();
    assert!(matches!(e, runner::Error::UnknownId { .. }), "{e}");

    // Dropping a running container kills it.
    let spec = runner::Spec::new(runner::Rootfs::Dir(lower), strings(&["sleep", "6543"]));
    let child = runner::Command::new(spec)
        .setup_helper(strata_bin())
        .spawn()
        .unwrap();
    assert_eq!(processes_with("sleep 6543").len(), 1);
    drop(child);
    assert!(
        processes_with("sleep 6543").is_empty(),
        "dropping the child left its process"
    );

    stop_tx.send(()).unwrap();
    ticker.join().unwrap();
    assert_nothing_left(&store);
}

/// Whether `dir` is a mount point in this (the host's) mount namespace.
fn runner_mounted(dir: &Path) -> bool {
    layerfs::mount::is_mount_point(dir)
}

/// Waits until a process whose command line is `needle` runs.
fn wait_for_process(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(needle).is_empty() {
        assert!(Instant::now() < deadline, "{needle} never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--env-file` as docker reads it: KEY=VALUE lines taken as written, KEY lines from strata's
/// environment, comments and blank lines skipped; `-e` wins over the file; a malformed line
/// is named by file and line, and nothing runs.
#[test]
fn env_files_are_read_as_docker_reads_them() {
    let Some((_g, store)) = setup("env_files_are_read_as_docker_reads_them") else {
        return;
    };
    let file = store.path("vars.env");
    std::fs::write(
        &file,
        "# settings\n\nGREETING=hello world\nQUOTED=\"kept\"\n  PASSED\nOVERRIDDEN=from file\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = store
        .cmd(&[
            "run",
            "--rm",
            "--env-file",
            f,
            "-e",
            "OVERRIDDEN=from -e",
            "busybox",
            "sh",
            "-c",
            "echo \"$GREETING|$QUOTED|$PASSED|$OVERRIDDEN\"",
        ])
        .env("PASSED", "from strata's environment")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello world|\"kept\"|from strata's environment|from -e\n"
    );
    std::fs::write(&file, "OK=1\nBAD KEY=2\n").unwrap();
    let err = run_code(&store, &["--env-file", f, "busybox", "true"], 125);
    assert!(err.contains("vars.env:2"), "names the file and line: {err}");
    let err = run_code(
        &store,
        &["--env-file", "/nonexistent.env", "busybox", "true"],
        125,
    );
    assert!(err.contains("/nonexistent.env"), "{err}");
}

/// `--cap-add` and `--cap-drop` change the capability set as docker does, and the seccomp
/// filter follows: CAP_SYS_ADMIN gives back mount and unshare, a dropped CHOWN stops chown,
/// `--cap-drop ALL` leaves nothing even in the bounding set; an unknown name is refused
/// before anything runs.
#[test]
fn cap_add_and_cap_drop_change_capabilities_and_the_filter() {
    let Some((_g, store)) = setup("cap_add_and_cap_drop_change_capabilities_and_the_filter") else {
        return;
    };
    let status_line = |args: &[&str], field: &str| -> u64 {
        let mut full = args.to_vec();
        full.extend(["busybox", "grep", field, "/proc/self/status"]);
        let out = run_ok(&store, &full);
        u64::from_str_radix(out.split_whitespace().last().unwrap(), 16).unwrap()
    };
    let default = runner::default_capability_mask();
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    assert_eq!(
        status_line(
            &["--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN"],
            "CapEff"
        ),
        (default | NET_ADMIN) & !CHOWN
    );
    assert_eq!(status_line(&["--cap-drop", "ALL"], "CapEff"), 0);
    assert_eq!(status_line(&["--cap-drop", "ALL"], "CapBnd"), 0);

    let err = run_code(
        &store,
        &[
            "--cap-drop",
            "CHOWN",
            "busybox",
            "sh",
            "-c",
            "touch /f && chown 5 /f",
        ],
        1,
    );
    assert!(err.contains("Operation not permitted"), "{err}");
    let mount = "mkdir -p /m && mount -t tmpfs none /m && unshare -n true && echo done";
    run_code(&store, &["busybox", "sh", "-c", mount], 1);
    assert_eq!(
        run_ok(
            &store,
            &["--cap-add", "SYS_ADMIN", "busybox", "sh", "-c", mount]
        ),
        "done"
    );
    let err = run_code(&store, &["--cap-add", "BOGUS", "busybox", "true"], 125);
    assert!(err.contains("unknown capability: BOGUS"), "{err}");
    assert_nothing_left(&store);
}

/// `--privileged` as docker has it: every capability the host's bounding set holds, no
/// seccomp filter, the host's devices (usable), `/sys` writable and nothing masked or read-only
/// under `/proc`; without it, none of that. It cannot be mixed with `--cap-add`/`--cap-drop`.
#[test]
fn privileged_gives_every_capability_the_host_devices_and_no_filter() {
    let Some((_g, store)) =
        setup("privileged_gives_every_capability_the_host_devices_and_no_filter")
    else {
        return;
    };
    let script = "grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -s '\\t ' ' '; \
                  for d in /dev/fuse /dev/loop-control; do [ -c $d ] && echo has $d; done; \
                  [ -c /dev/fuse ] && exec 3<>/dev/fuse && echo opened /dev/fuse; exec 3<&-; \
                  grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
                  grep -c ' /proc/sys ' /proc/mounts; \
                  mkdir -p /m && mount -t tmpfs none /m 2>/dev/null && echo mounted; true";
    let host_bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_owned();
    let host_has = |d: &str| {
        std::fs::metadata(d).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt as _;
            m.file_type().is_char_device()
        })
    };
    let mut expected = format!("CapEff: {host_bounding}\nSeccomp: 0\n");
    for d in ["/dev/fuse", "/dev/loop-control"] {
        if host_has(d) {
            expected.push_str(&format!("has {d}\n"));
        }
    }
    if host_has("/dev/fuse") {
        expected.push_str("opened /dev/fuse\n");
    }
    expected.push_str("rw\n0\nmounted");
    assert_eq!(
        run_ok(&store, &["--privileged", "busybox", "sh", "-c", script]),
        expected
    );
    assert_eq!(
        run_ok(&store, &["busybox", "sh", "-c", script]),
        format!(
            "CapEff: {:016x}\nSeccomp: 2\nro\n1",
            runner::default_capability_mask()
        )
    );
    let out = store.output(&[
        "run",
        "--privileged",
        "--cap-drop",
        "CHOWN",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--cap-drop"),
        "{}",
        text(&out.stderr)
    );
    assert_nothing_left(&store);
}

/// docker's `--device`, `--add-host`, `--dns`, `--shm-size`, `--security-opt` and `--init`:
/// each changes what the command sees as docker's does; bad values are refused with 125,
/// naming the flag.
#[test]
fn devices_hosts_dns_shm_size_and_security_opts() {
    let Some((_g, store)) = setup("devices_hosts_dns_shm_size_and_security_opts") else {
        return;
    };
    let script = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '; \
                  grep -E '[[:space:]]db$' /etc/hosts; grep nameserver /etc/resolv.conf; \
                  grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k'; \
                  for d in /dev/fuse /dev/other-fuse; do [ -c $d ] && echo has $d; done; true";
    let plain = run_ok(&store, &["busybox", "sh", "-c", script]);
    assert!(
        plain.starts_with("NoNewPrivs: 0\nSeccomp: 2\n") && plain.ends_with("size=65536k"),
        "{plain}"
    );
    let has_fuse = Path::new("/dev/fuse").exists();
    let mut args = vec![
        "--add-host",
        "db:10.0.0.5",
        "--dns",
        "9.9.9.9",
        "--shm-size",
        "128m",
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        "seccomp=unconfined",
        "--init",
    ];
    if has_fuse {
        args.extend([
            "--device",
            "/dev/fuse",
            "--device",
            "/dev/fuse:/dev/other-fuse",
        ]);
    }
    args.extend(["busybox", "sh", "-c", script]);
    let mut expected =
        "NoNewPrivs: 1\nSeccomp: 0\n10.0.0.5\tdb\nnameserver 9.9.9.9\nsize=131072k".to_owned();
    if has_fuse {
        expected.push_str("\nhas /dev/fuse\nhas /dev/other-fuse");
    }
    assert_eq!(run_ok(&store, &args), expected);
    for (flag, value, says) in [
        ("--device", "/etc/passwd", "not a character or block device"),
        ("--device", "relative", "absolute paths"),
        ("--add-host", "nocolon", "expected NAME:IP"),
        ("--dns", "not-an-ip", "not an IP address"),
        ("--security-opt", "apparmor=x", "strata knows"),
    ] {
        let err = run_code(&store, &[flag, value, "busybox", "true"], 125);
        assert!(
            err.contains(flag) && err.contains(value) && err.contains(says),
            "{err}"
        );
    }
    assert_nothing_left(&store);
}

/// `--tmpfs` as docker has it: a fresh, writable tmpfs even on a `--read-only` root, `noexec`
/// `nosuid` `nodev` unless asked otherwise, tmpfs's size and mode honoured; a bad spec is
/// refused with 125 before anything runs.
#[test]
fn tmpfs_mounts_are_fresh_writable_and_noexec_by_default() {
    let Some((_g, store)) = setup("tmpfs_mounts_are_fresh_writable_and_noexec_by_default") else {
        return;
    };
    let script = "grep -E ' /(scratch|fast) ' /proc/mounts | cut -d' ' -f2,4; \
                  echo data > /scratch/f && cat /scratch/f; \
                  cp /bin/busybox /scratch/true && /scratch/true || echo noexec; \
                  cp /bin/busybox /fast/true && /fast/true && echo exec; \
                  touch /rootfile 2>/dev/null || echo read-only root";
    let out = run_ok(
        &store,
        &[
            "--read-only",
            "--tmpfs",
            "/scratch",
            "--tmpfs",
            "/fast:size=8m,mode=700,exec",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("/scratch rw,nosuid,nodev,noexec"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("/fast rw,nosuid,nodev,relatime,size=8192k,mode=700"),
        "{out}"
    );
    assert_eq!(&lines[2..], ["data", "noexec", "exec", "read-only root"]);
    for bad in ["relative", "/x:bogus", "/x:colour=blue"] {
        let err = run_code(&store, &["--tmpfs", bad, "busybox", "true"], 125);
        assert!(err.contains(&format!("--tmpfs {bad}")), "{err}");
    }
    assert_nothing_left(&store);
}

/// `--ulimit` as docker takes it: soft and hard limits of the command, HARD defaulting to
/// SOFT; a soft limit above the hard one or an unknown name is refused with 125 before
/// anything runs.
#[test]
fn ulimits_set_the_commands_resource_limits() {
    let Some((_g, store)) = setup("ulimits_set_the_commands_resource_limits") else {
        return;
    };
    let out = run_ok(
        &store,
        &[
            "--ulimit",
            "nofile=256:512",
            "--ulimit",
            "core=0",
            "--ulimit",
            "nproc=100",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn; ulimit -c; ulimit -u; ulimit -Hu",
        ],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["256", "512", "0", "100", "100"]
    );
    for (bad, says) in [
        ("nofile=2048:1024", "above the hard one"),
        ("colour=1", "unknown limit colour"),
        ("nofile", "NAME=SOFT[:HARD]"),
        ("nofile=many", "many is not a number"),
    ] {
        let err = run_code(&store, &["--ulimit", bad, "busybox", "true"], 125);
        assert!(err.contains(says), "{bad}: {err}");
    }
    assert_nothing_left(&store);
}

/// `--group-add`: more supplementary groups for the command, by name from the image's
/// /etc/group or by gid; an unknown name is refused with 125, naming it.
#[test]
fn group_add_gives_the_command_more_groups() {
    let Some((_g, store)) = setup("group_add_gives_the_command_more_groups") else {
        return;
    };
    let out = run_ok(
        &store,
        &[
            "-u",
            "nobody",
            "--group-add",
            "app",
            "--group-add",
            "4242",
            "busybox",
            "id",
            "-G",
        ],
    );
    let mut groups: Vec<&str> = out.split_whitespace().collect();
    groups.sort_unstable();
    assert_eq!(groups, ["1000", "4242", "65534"]);
    let err = run_code(
        &store,
        &["--group-add", "no-such-group", "busybox", "true"],
        125,
    );
    assert!(err.contains("no-such-group"), "{err}");
    assert_nothing_left(&store);
}
