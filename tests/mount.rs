//! `strata mount` / `strata umount` on both storage drivers, the automatic fallback to FUSE,
//! the FUSE daemon's lifetime, and `strata-unionfs` as fuse-overlayfs-style program and as a
//! `mount -t fuse.strata-unionfs` helper.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestStore;
use layerfs::config::ImageConfig;
use layerfs::layer::commit::{CommitOptions, commit_dir};
use layerfs::layer::compress::Compression;
use layerfs::reference::Reference;
use layerfs::store::Store;

fn can_run(test: &str) -> bool {
    common::is_root_with_fuse_or_skip(test)
}

/// Tags `name` as an image of `n` layers: layer `i` adds `/layers/i`, rewrites `/shared`, and
/// every third layer deletes the file the layer below added (a whiteout).
fn many_layer_image(t: &TestStore, name: &str, n: usize) {
    let store = Store::open(t.root()).unwrap();
    let mut parent = None;
    let mut descriptors = Vec::new();
    let mut config = ImageConfig::new_for_host();
    for i in 0..n {
        let dir = store.tmp_path("test-layer");
        std::fs::create_dir_all(dir.join("layers")).unwrap();
        std::fs::write(dir.join("shared"), format!("layer {i}")).unwrap();
        std::fs::write(dir.join(format!("layers/{i}")), "").unwrap();
        if i % 3 == 0 && i > 0 {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join(format!("layers/{}", i - 1)),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
        }
        let opts = CommitOptions {
            compression: Compression::None,
            clamp_mtime: None,
        };
        let layer = commit_dir(&store, &dir, parent.as_ref(), opts).unwrap();
        config.rootfs.diff_ids.push(layer.blob.diff_id.clone());
        descriptors.push(layer.blob.descriptor);
        parent = Some(layer.chain_id);
    }
    let manifest = store.put_image(&config, &descriptors).unwrap();
    store
        .tag(&Reference::parse(name).unwrap(), &manifest)
        .unwrap();
}

/// The filesystem type mounted at `dir`, if any.
fn mounted_type(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (Path::new(f[4]) == dir).then(|| f[sep + 1].to_owned())
    })
}

/// A store holding busybox, and an empty directory to mount it at.
fn busybox_and_mount_point() -> (TestStore, PathBuf) {
    let t = TestStore::with_busybox();
    let dir = t.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    (t, dir)
}

fn containers(t: &TestStore) -> Vec<PathBuf> {
    match std::fs::read_dir(t.root().join("containers")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_image_of_150_layers_mounts_and_unmounts_on_both_drivers() {
    if !can_run("an_image_of_150_layers_mounts_and_unmounts_on_both_drivers") {
        return;
    }
    let t = TestStore::new();
    many_layer_image(&t, "many:150", 150);
    let dir = t.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let dir_s = dir.to_str().unwrap();
    for (driver, fstype) in [("overlay", "overlay"), ("fuse", "fuse.strata-unionfs")] {
        let out = t.ok(&["--storage-driver", driver, "mount", "many:150", dir_s]);
        assert_eq!(out.trim(), dir_s);
        assert_eq!(mounted_type(&dir).as_deref(), Some(fstype), "{driver}");
        assert_eq!(
            std::fs::read_to_string(dir.join("shared")).unwrap(),
            "layer 149"
        );
        let mut names: Vec<usize> = std::fs::read_dir(dir.join("layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        names.sort();
        let expected: Vec<usize> = (0..150).filter(|i| (i + 1) % 3 != 0 || *i == 149).collect();
        assert_eq!(
            names, expected,
            "{driver}: whiteouts of every third layer apply"
        );
        std::fs::write(dir.join("written"), "w").unwrap();
        std::fs::remove_file(dir.join("layers/0")).unwrap();
        t.ok(&["umount", dir_s]);
        assert_eq!(mounted_type(&dir), None, "{driver}: unmounted");
        assert!(
            containers(&t).is_empty(),
            "{driver}: the writable layer is gone: {:?}",
            containers(&t)
        );
        assert!(!dir.join("written").exists());
    }
    // Mounted again, the writable layer is a fresh one.
    t.ok(&["--storage-driver", "fuse", "mount", "many:150", dir_s]);
    assert!(dir.join("layers/0").exists() && !dir.join("written").exists());
    t.ok(&["umount", dir_s]);
}

#[test]
fn the_storage_driver_comes_from_the_environment_too() {
    if !can_run("the_storage_driver_comes_from_the_environment_too") {
        return;
    }
    let (t, dir) = busybox_and_mount_point();
    let out = t
        .cmd(&["mount", "busybox", dir.to_str().unwrap()])
        .env("STRATA_STORAGE_DRIVER", "fuse")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mounted_type(&dir).as_deref(), Some("fuse.strata-unionfs"));
    assert!(dir.join("bin/busybox").is_file());
    t.ok(&["umount", dir.to_str().unwrap()]);
}

#[test]
fn a_fuse_mount_outlives_its_command_and_a_killed_daemon_leaves_nothing_hung() {
    if !can_run("a_fuse_mount_outlives_its_command_and_a_killed_daemon_leaves_nothing_hung") {
        return;
    }
    let (t, dir) = busybox_and_mount_point();
    let dir_s = dir.to_str().unwrap();
    t.ok(&["--storage-driver", "fuse", "mount", "busybox", dir_s]);
    let record = containers(&t).pop().unwrap().join("mount.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let pid = record["daemon_pid"]
        .as_u64()
        .expect("the daemon's pid is recorded") as i32;
    assert!(
        dir.join("bin/busybox").is_file(),
        "served after strata mount exited"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // What the kernel has cached still answers; anything that needs the daemon fails at once.
    wait_for("the dead mount to fail", || {
        std::fs::read_dir(&dir).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
    });
    t.ok(&["umount", dir_s]);
    assert_eq!(mounted_type(&dir), None);
    assert!(containers(&t).is_empty());
    assert!(std::fs::metadata(&dir).unwrap().is_dir());
}

#[test]
fn overlay_falls_back_to_fuse_where_it_cannot_mount() {
    if !can_run("overlay_falls_back_to_fuse_where_it_cannot_mount") {
        return;
    }
    // overlayfs takes at most 500 lower layers.
    let t = TestStore::new();
    many_layer_image(&t, "toomany:latest", 501);
    let dir = t.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = t.output(&["mount", "toomany", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line of notice: {stderr}");
    assert!(
        stderr.contains("overlayfs cannot be mounted") && stderr.contains("FUSE"),
        "{stderr}"
    );
    assert_eq!(mounted_type(&dir).as_deref(), Some("fuse.strata-unionfs"));
    assert_eq!(
        std::fs::read_to_string(dir.join("shared")).unwrap(),
        "layer 500"
    );
    t.ok(&["umount", dir.to_str().unwrap()]);
}

#[test]
fn mount_errors_name_what_is_wrong_and_leave_nothing_behind() {
    if !can_run("mount_errors_name_what_is_wrong_and_leave_nothing_behind") {
        return;
    }
    let (t, dir) = busybox_and_mount_point();
    let dir_s = dir.to_str().unwrap();
    let err = t.fails(&["mount", "no-such-image", dir_s]);
    assert!(err.contains("no-such-image"), "{err}");
    let missing = t.path("missing");
    let err = t.fails(&["mount", "busybox", missing.to_str().unwrap()]);
    assert!(err.contains("missing"), "{err}");
    let err = t.fails(&["umount", dir_s]);
    assert!(err.contains("not mounted by strata"), "{err}");
    t.ok(&["--storage-driver", "fuse", "mount", "busybox", dir_s]);
    let err = t.fails(&["mount", "busybox", dir_s]);
    assert!(err.contains("already mounted"), "{err}");
    t.ok(&["umount", dir_s]);
    assert!(containers(&t).is_empty(), "{:?}", containers(&t));
    assert_eq!(mounted_type(&dir), None);
}

/// `strata-unionfs`, as users install it: a link to the strata binary, in `t`'s `bin` dir.
fn unionfs_bin(t: &TestStore) -> PathBuf {
    let link = t.path("bin/strata-unionfs");
    if !link.exists() {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(common::strata_bin(), &link).unwrap();
    }
    link
}

/// Layers for the `strata-unionfs` tests: `lower` (top) over `base`.
fn small_union(t: &TestStore) -> (String, PathBuf, PathBuf) {
    for d in ["base", "lower", "upper", "work", "mnt"] {
        std::fs::create_dir_all(t.path(d)).unwrap();
    }
    std::fs::write(t.path("base/a"), "base").unwrap();
    std::fs::write(t.path("base/b"), "b").unwrap();
    std::fs::write(t.path("lower/a"), "lower").unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        t.path("lower").display(),
        t.path("base").display(),
        t.path("upper").display(),
        t.path("work").display()
    );
    (opts, t.path("mnt"), t.path("upper"))
}

/// Starts `strata-unionfs -o OPTS MNT` in the foreground, as `user` sets the command up, and
/// waits for the mount.
fn serve_in_foreground(
    t: &TestStore,
    opts: &str,
    mnt: &Path,
    user: fn(&mut Command) -> &mut Command,
) -> std::process::Child {
    let daemon = user(
        Command::new(unionfs_bin(t))
            .args(["-o", opts])
            .arg(mnt)
            .stdin(Stdio::null()),
    )
    .spawn()
    .unwrap();
    wait_for("the mount", || mounted_type(mnt).is_some());
    daemon
}

/// Ends a foreground daemon with SIGTERM: it exits 0 and the mount is gone.
fn stop_with_sigterm(mut daemon: std::process::Child, mnt: &Path) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(mounted_type(mnt), None, "SIGTERM unmounts");
}

#[test]
fn strata_unionfs_serves_in_the_foreground_until_signalled() {
    if !can_run("strata_unionfs_serves_in_the_foreground_until_signalled") {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, upper) = small_union(&t);
    let mut child = serve_in_foreground(&t, &opts, &mnt, |c| c);
    assert_eq!(
        std::fs::read_to_string(mnt.join("a")).unwrap(),
        "lower",
        "the leftmost lower is the top"
    );
    std::fs::write(mnt.join("b"), "changed").unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "still in the foreground"
    );
    stop_with_sigterm(child, &mnt);
    assert_eq!(std::fs::read_to_string(upper.join("b")).unwrap(), "changed");
}

#[test]
fn strata_unionfs_is_a_mount_helper() {
    if !can_run("strata_unionfs_is_a_mount_helper")
        || !common::have_or_skip("mount.fuse3", "strata_unionfs_is_a_mount_helper")
    {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, upper) = small_union(&t);
    let path = format!(
        "{}:{}",
        unionfs_bin(&t).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // What `mount -t fuse.strata-unionfs none MNT -o …` runs once it finds the program (mount(8)
    // itself looks for it on a fixed PATH of system dirs only).
    let out = Command::new("mount.fuse3")
        .arg("strata-unionfs#none")
        .arg(&mnt)
        .args(["-o", &opts])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mounted_type(&mnt).as_deref(), Some("fuse.strata-unionfs"));
    std::fs::remove_file(mnt.join("a")).unwrap();
    assert_eq!(std::fs::read_to_string(mnt.join("b")).unwrap(), "b");
    let st = std::fs::symlink_metadata(upper.join("a")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()) && st.rdev() == 0,
        "a whiteout"
    );
    let out = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mounted_type(&mnt), None);
}

#[test]
fn strata_unionfs_refuses_bad_options_by_name() {
    let t = TestStore::new();
    let (opts, mnt, _) = small_union(&t);
    for (bad, says) in [
        (format!("{opts},bogus=1"), "bogus"),
        ("upperdir=/u,workdir=/w".to_owned(), "lowerdir"),
        (format!("lowerdir={}", t.path("nope").display()), "nope"),
    ] {
        let out = Command::new(unionfs_bin(&t))
            .args(["-o", &bad])
            .arg(&mnt)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{bad}: {err}");
    }
    assert_eq!(mounted_type(&mnt), None);
}

/// Regression: without passthrough (an older kernel, or a daemon not running as root) the
/// daemon itself serves reads, from a buffer each session thread keeps. A buffer grown by one
/// read was filled to its whole capacity on the next, smaller request, and the kernel refused
/// the oversized reply: `cat` of files failed with EIO. And an O_DIRECT open made the daemon
/// read into its unaligned buffer with O_DIRECT: every read failed with EINVAL.
#[test]
fn reads_served_by_the_daemon_return_what_the_kernel_asked_for() {
    if !can_run("reads_served_by_the_daemon_return_what_the_kernel_asked_for") {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, upper) = small_union(&t);
    let pattern = |seed: u32, len: u32| -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    };
    let files = [
        ("big1", pattern(1, 6 << 20)),
        ("big2", pattern(2, 5 << 20)),
        ("mid", pattern(3, 300_000)),
        ("big3", pattern(4, 3 << 20)),
    ];
    for (name, data) in &files {
        std::fs::write(t.path("base").join(name), data).unwrap();
    }
    // One session thread, so every read uses the buffer the reads before it grew.
    let daemon = serve_in_foreground(
        &t,
        &format!("{opts},passthrough=off,threads=1"),
        &mnt,
        |c| c,
    );
    let mut failures = Vec::new();
    for (name, data) in &files {
        match std::fs::read(mnt.join(name)) {
            Ok(read) if &read == data => {}
            Ok(read) => failures.push(format!("{name}: {} bytes, not the file's", read.len())),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    // O_DIRECT reads reach the daemon at the reader's sizes: growing, then small again.
    for bs in [4096, 135_168, 262_144, 4096] {
        let out = Command::new("dd")
            .arg(format!("if={}", mnt.join("big1").display()))
            .args(["iflag=direct", "count=1", "status=none"])
            .arg(format!("bs={bs}"))
            .output()
            .unwrap();
        if !out.status.success() || out.stdout != files[0].1[..bs] {
            failures.push(format!(
                "O_DIRECT read of {bs} bytes: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    // Writes go through the daemon too, and read back whole.
    let written = pattern(5, 4 << 20);
    std::fs::write(mnt.join("new"), &written).unwrap();
    if std::fs::read(mnt.join("new")).ok().as_ref() != Some(&written) {
        failures.push("new: does not read back as written".to_owned());
    }
    stop_with_sigterm(daemon, &mnt);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(std::fs::read(upper.join("new")).unwrap(), written);
}

/// Restores a file's permission bits when dropped.
struct ModeGuard {
    path: PathBuf,
    mode: u32,
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode));
    }
}

/// A small lower file opened again is read through the kernel's page cache (put there whole),
/// a middling one too (its reads served by the daemon), and a large one keeps its passthrough
/// backing registered after its last close (parked), so that reopening skips the `openat` and
/// the registration. None may serve a file copied up since, the kernel's one I/O mode per
/// inode must hold (a mismatch fails the `open` with EIO), and the daemon keeps only a
/// bounded number of parked files open.
#[test]
fn reopened_files_read_their_current_data_and_parked_backings_stay_bounded() {
    if !can_run("reopened_files_read_their_current_data_and_parked_backings_stay_bounded") {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, upper) = small_union(&t);
    std::fs::write(t.path("base/small"), "small").unwrap();
    // Larger than what is stored in the page cache whole, smaller than what always passes
    // through; it starts with its name, as the large files do.
    let mut middling = b"middling".to_vec();
    middling.resize(2 << 20, 0);
    std::fs::write(t.path("base/middling"), &middling).unwrap();
    // Large (sparse) files, each starting with its name.
    let large: Vec<String> = (0..600).map(|i| format!("large/f{i}")).collect();
    std::fs::create_dir(t.path("base/large")).unwrap();
    for name in &large {
        let f = std::fs::File::create(t.path("base").join(name)).unwrap();
        f.set_len(5 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, name.as_bytes(), 0).unwrap();
    }
    let daemon = serve_in_foreground(&t, &opts, &mnt, |c| c);
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.id()))
            .unwrap()
            .count()
    };
    let idle_fds = open_fds();
    let mut failures = Vec::new();
    let expect = |name: &str, want: &str, failures: &mut Vec<String>| {
        let mut got = vec![0; want.len() + 1];
        match std::fs::File::open(mnt.join(name)).and_then(|mut f| f.read(&mut got)) {
            // A large file goes on with zeros.
            Ok(n) if got[..n].strip_suffix(b"\0").unwrap_or(&got[..n]) == want.as_bytes() => {}
            Ok(n) => failures.push(format!("{name}: {:?}, want {want:?}", &got[..n])),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    };
    // Read, closed, read again (through the page cache): then written (a copy-up), read again.
    for _ in 0..3 {
        expect("b", "b", &mut failures);
    }
    std::fs::write(mnt.join("b"), "written after reads").unwrap();
    expect("b", "written after reads", &mut failures);
    // Read, closed, copied up by a chmod, then appended to through a new open.
    for _ in 0..2 {
        expect("a", "lower", &mut failures);
    }
    std::fs::set_permissions(mnt.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("a"))
        .and_then(|mut f| f.write_all(b" and more"))
        .unwrap();
    expect("a", "lower and more", &mut failures);
    // A first open (passed through) held while the file is opened again (passed through
    // too); then read whole through the page cache, from the daemon, while held once more.
    let held = std::fs::File::open(mnt.join("middling")).unwrap();
    expect("middling", "middling", &mut failures);
    drop(held);
    let held = std::fs::File::open(mnt.join("middling")).unwrap();
    match std::fs::read(mnt.join("middling")) {
        Ok(read) if read == middling => {}
        Ok(read) => failures.push(format!("middling: {} bytes, not the file's", read.len())),
        Err(e) => failures.push(format!("middling: {e}")),
    }
    drop(held);
    // A lower file held open, passed through (small: its first open since) or through the
    // page cache (middling): writers wait for it to close, whichever way it is read.
    for (name, was) in [("small", "small"), ("middling", "middling")] {
        let held = std::fs::File::open(mnt.join(name)).unwrap();
        expect(name, was, &mut failures);
        match std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join(name))
        {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
            other => failures.push(format!(
                "writer beside a lower reader of {name}: {other:?}, want ETXTBSY"
            )),
        }
        drop(held);
        std::fs::write(mnt.join(name), "rewritten").unwrap();
        expect(name, "rewritten", &mut failures);
    }
    // A large file read, closed (parked), then rewritten and read again.
    expect("large/f0", "large/f0", &mut failures);
    std::fs::write(mnt.join("large/f0"), "rewritten").unwrap();
    expect("large/f0", "rewritten", &mut failures);
    // More large files than stay parked, twice over.
    for _ in 0..2 {
        for name in &large[1..] {
            expect(name, name, &mut failures);
        }
    }
    let held = open_fds() - idle_fds;
    stop_with_sigterm(daemon, &mnt);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        held <= 300,
        "the daemon holds {held} more files after reading 600"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("b")).unwrap(),
        "written after reads"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("a")).unwrap(),
        "lower and more"
    );
    for name in ["small", "middling"] {
        assert_eq!(
            std::fs::read_to_string(upper.join(name)).unwrap(),
            "rewritten"
        );
    }
}

/// Regression: the kernel sends RELEASE after `close` returns, so a file read, closed and at
/// once opened for writing could still count as read by its lower file when the write's OPEN
/// arrived, and the writer got ETXTBSY (the unionmount-testsuite's `rmdir`, `--ov=3`, about
/// once in 600 tries). Writers now wait briefly for releases on their way.
#[test]
fn a_file_read_closed_and_then_written_is_not_busy() {
    if !can_run("a_file_read_closed_and_then_written_is_not_busy") {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, _upper) = small_union(&t);
    let names: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
    for name in &names {
        std::fs::write(t.path("base").join(name), "").unwrap();
    }
    let daemon = serve_in_foreground(&t, &opts, &mnt, |c| c);
    let mut busy = Vec::new();
    for name in &names {
        // Once through passthrough, once through the page cache.
        for _ in 0..2 {
            std::fs::read(mnt.join(name)).unwrap();
        }
        if let Err(e) = std::fs::write(mnt.join(name), "written") {
            busy.push(format!("{name}: {e}"));
        }
    }
    stop_with_sigterm(daemon, &mnt);
    assert!(busy.is_empty(), "{busy:?}");
}

/// How many bytes of `path` the page cache holds (`fincore`, which reads nothing itself).
fn cached_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Whether `test` can mount and tell what the page cache holds (`fincore`); says why not.
fn can_run_and_see_the_page_cache(test: &str) -> bool {
    can_run(test) && common::have_or_skip("fincore", test)
}

/// Writes `data` to each of `files` (creating their directories) and drops them from the page
/// cache. Skips `test` and says false where the filesystem keeps them in memory (tmpfs).
fn write_uncached(test: &str, files: &[PathBuf], data: &[u8]) -> bool {
    for file in files {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, data).unwrap();
    }
    // Written back, so that the page cache can let go of the files.
    rustix::fs::sync();
    for path in files {
        let file = std::fs::File::open(path).unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
    let cached_after_dontneed = cached_bytes(&files[0]).unwrap();
    if cached_after_dontneed != 0 {
        let reason = format!(
            "{} keeps files in memory ({cached_after_dontneed} bytes cached after DONTNEED)",
            files[0].parent().unwrap().display()
        );
        common::skip(test, &reason);
        return false;
    }
    true
}

/// Whether every file of `files` is wholly in the page cache within 10 s (`size` bytes each).
fn all_cached_soon(files: &[PathBuf], size: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = files.iter().all(|f| cached_bytes(f) == Some(size));
        if read || Instant::now() > deadline {
            break read;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program reading a directory's files one after the other, on a cold cache, has the next
/// ones read from the layer before it asks for them, and only those.
#[test]
fn reading_a_directory_s_files_in_turn_reads_the_next_ones_ahead() {
    let test = "reading_a_directory_s_files_in_turn_reads_the_next_ones_ahead";
    if !can_run_and_see_the_page_cache(test) {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, _upper) = small_union(&t);
    let lower = t.path("base/many");
    let data = vec![b'x'; 16 << 10];
    let files: Vec<_> = (0..100).map(|i| lower.join(format!("f{i:03}"))).collect();
    if !write_uncached(test, &files, &data) {
        return;
    }
    let daemon = serve_in_foreground(&t, &opts, &mnt, |c| c);
    // The union's order, which is the layer's.
    let names: Vec<_> = std::fs::read_dir(mnt.join("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for name in &names[..2] {
        assert_eq!(std::fs::read(mnt.join("many").join(name)).unwrap(), data);
    }
    let cached = |name: &std::ffi::OsStr| cached_bytes(&lower.join(name)) == Some(16 << 10);
    // Whether all of `names` get cached (no panic while the mount is up).
    let read_ahead = |names: &[std::ffi::OsString]| {
        let paths: Vec<_> = names.iter().map(|n| lower.join(n)).collect();
        all_cached_soon(&paths, 16 << 10)
    };
    let next_read = read_ahead(&names[2..18]);
    // The third file, read ahead, is cached when opened: the window still moves on.
    assert_eq!(
        std::fs::read(mnt.join("many").join(&names[2])).unwrap(),
        data
    );
    let window_moved = read_ahead(&names[18..30]);
    let far: Vec<_> = names[40..].iter().filter(|n| cached(n)).collect();
    stop_with_sigterm(daemon, &mnt);
    assert!(
        next_read,
        "the 16 files after the second were not read ahead"
    );
    assert!(
        window_moved,
        "the files after those were not read ahead as the reader went on"
    );
    assert!(far.is_empty(), "read ahead far beyond the reader: {far:?}");
}

/// A program reading a tree's files in the order a walk lists it (`find | xargs cat`, `tar`,
/// `cp -r`), on a cold cache, has the first files of the directories it enters next read
/// before it gets there, and not the whole tree.
#[test]
fn reading_a_tree_s_files_in_walk_order_reads_the_next_directories_ahead() {
    let test = "reading_a_tree_s_files_in_walk_order_reads_the_next_directories_ahead";
    if !can_run_and_see_the_page_cache(test) {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, _upper) = small_union(&t);
    let data = vec![b'x'; 16 << 10];
    let files: Vec<_> = (0..10)
        .flat_map(|d| (0..6).map(move |f| format!("tree/d{d}/f{f}")))
        .map(|f| t.path("base").join(f))
        .collect();
    if !write_uncached(test, &files, &data) {
        return;
    }
    let daemon = serve_in_foreground(&t, &opts, &mnt, |c| c);
    // The walk, in the union's order: each directory listed, then the ones below it.
    let listed = |dir: &Path| -> Vec<std::ffi::OsString> {
        let names = std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().file_name()).collect());
        names.unwrap_or_default()
    };
    let dirs = listed(&mnt.join("tree"));
    let walk: Vec<Vec<std::ffi::OsString>> = dirs
        .iter()
        .map(|d| listed(&mnt.join("tree").join(d)))
        .collect();
    // The reader goes through the first directory's files.
    let first_read = walk[0]
        .iter()
        .all(|f| std::fs::read(mnt.join("tree").join(&dirs[0]).join(f)).is_ok_and(|d| d == data));
    let lower_files = |i: usize| -> Vec<PathBuf> {
        let dir = t.path("base/tree").join(&dirs[i]);
        walk[i].iter().map(|f| dir.join(f)).collect()
    };
    let next_read = all_cached_soon(&lower_files(1), 16 << 10);
    // 16 files: the next three directories of six; then a pause for anything further.
    std::thread::sleep(Duration::from_millis(200));
    let far: Vec<PathBuf> = (4..dirs.len())
        .flat_map(lower_files)
        .filter(|f| cached_bytes(f) != Some(0))
        .collect();
    stop_with_sigterm(daemon, &mnt);
    assert_eq!(walk.iter().map(Vec::len).sum::<usize>(), files.len());
    assert!(first_read, "the first directory's files read wrong");
    assert!(
        next_read,
        "the next directory's files were not read ahead of the reader"
    );
    assert!(far.is_empty(), "read ahead far beyond the reader: {far:?}");
}

/// The daemon keeps a directory's listing from the request that reaches its end to the empty
/// one after it that ends the kernel's pass (instead of reading the directory twice); a pass
/// that starts after a change, or after a reader stopped halfway, must still see the change.
#[test]
fn listings_follow_changes_between_passes() {
    if !can_run("listings_follow_changes_between_passes") {
        return;
    }
    let t = TestStore::new();
    let (opts, mnt, _upper) = small_union(&t);
    // More entries than one reply holds, in both layers.
    let mut expected: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (layer, count) in [("base", 1500), ("lower", 20)] {
        std::fs::create_dir_all(t.path(layer).join("d")).unwrap();
        for i in 0..count {
            let name = format!("{layer}-{i:04}");
            std::fs::write(t.path(layer).join("d").join(&name), "").unwrap();
            expected.insert(name);
        }
    }
    let daemon = serve_in_foreground(&t, &opts, &mnt, |c| c);
    let d = mnt.join("d");
    let listed = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert_eq!(listed(), expected, "first pass");
    std::fs::write(d.join("new"), "").unwrap();
    std::fs::remove_file(d.join("base-0007")).unwrap();
    std::fs::remove_file(d.join("lower-0019")).unwrap();
    expected.insert("new".into());
    expected.remove("base-0007");
    expected.remove("lower-0019");
    assert_eq!(listed(), expected, "after a create and two removals");
    // A reader that stops halfway, then a change, then a whole pass.
    assert_eq!(std::fs::read_dir(&d).unwrap().take(10).count(), 10);
    std::fs::write(d.join("newer"), "").unwrap();
    expected.insert("newer".into());
    assert_eq!(listed(), expected, "after a pass left halfway");
    // An empty directory: its one pass is a single empty reply.
    std::fs::create_dir(d.join("e")).unwrap();
    assert_eq!(std::fs::read_dir(d.join("e")).unwrap().count(), 0);
    std::fs::write(d.join("e/x"), "").unwrap();
    let in_e: Vec<_> = std::fs::read_dir(d.join("e"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(in_e, ["x"]);
    stop_with_sigterm(daemon, &mnt);
}

/// An unprivileged user mounts the union (through fuser and fusermount3) where `/dev/fuse` is
/// open to users, and is told it is not where it is not (some images make it 0600), rather
/// than a bare "Permission denied". Both cases run: the device is opened up for the second.
#[test]
fn an_unprivileged_user_mounts_the_union_where_dev_fuse_allows_it() {
    let test = "an_unprivileged_user_mounts_the_union_where_dev_fuse_allows_it";
    if !can_run(test) || !common::have_or_skip("fusermount3", test) {
        return;
    }
    const NOBODY: u32 = 65534;
    let t = TestStore::new();
    let (opts, mnt, upper) = small_union(&t);
    let bin = unionfs_bin(&t);
    common::sh(&format!(
        "chmod 755 {dir} && chown -R {NOBODY}:{NOBODY} {dir}/base {dir}/lower {dir}/upper \
         {dir}/work {dir}/mnt",
        dir = t.dir.path().display()
    ));
    fn as_nobody(cmd: &mut Command) -> &mut Command {
        use std::os::unix::process::CommandExt;
        cmd.uid(NOBODY).gid(NOBODY).stdin(Stdio::null())
    }
    let mode = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777;
    let _restore = ModeGuard {
        path: PathBuf::from("/dev/fuse"),
        mode,
    };
    if mode & 0o006 != 0o006 {
        let out = as_nobody(Command::new(&bin).args(["-o", &opts]).arg(&mnt))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mounted without /dev/fuse: {err}");
        assert!(
            err.contains("/dev/fuse"),
            "the error names the device: {err}"
        );
        assert_eq!(mounted_type(&mnt), None);
        common::sh("chmod 666 /dev/fuse");
    }
    let daemon = serve_in_foreground(&t, &opts, &mnt, as_nobody);
    let out = as_nobody(Command::new("sh").arg("-c").arg(format!(
        "cd {} && cat a && rm a && echo changed > b",
        mnt.display()
    )))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "lower");
    stop_with_sigterm(daemon, &mnt);
    let st = std::fs::symlink_metadata(upper.join("a")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()) && st.rdev() == 0,
        "a whiteout, made by an unprivileged daemon"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("b")).unwrap(),
        "changed\n"
    );
    // Without its upper dir, the union is mounted read-only (through fusermount3 here).
    let daemon = serve_in_foreground(&t, &format!("{opts},ro"), &mnt, as_nobody);
    let read_only = rustix::fs::statvfs(&mnt)
        .unwrap()
        .f_flag
        .contains(rustix::fs::StatVfsMountFlags::RDONLY);
    let out = as_nobody(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && cat a && echo again > b", mnt.display())),
    )
    .output()
    .unwrap();
    stop_with_sigterm(daemon, &mnt);
    assert!(
        read_only,
        "a union without an upper dir is mounted read-only"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "lower");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
