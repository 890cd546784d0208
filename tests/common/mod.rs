//! The end-to-end test harness: a fresh store per test, the strata binary, a busybox base
//! image made from the host's static busybox, and helpers that fail with the command's output.

#![allow(dead_code, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The strata binary under test.
pub fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the test may do privileged things; prints why not when it may not.
pub fn is_root_or_skip(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        skip(test, "needs root (namespaces, mounts, cgroups)");
    }
    root
}

/// A fresh, empty store in a temporary directory (removed on drop).
pub struct TestStore {
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> Self {
        let base =
            std::env::var_os("STRATA_TEST_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
        TestStore {
            dir: tempfile::Builder::new()
                .prefix("strata-test-")
                .tempdir_in(base)
                .expect("temp dir"),
        }
    }

    /// A new store holding `busybox:latest` imported from the host's static busybox.
    pub fn with_busybox() -> Self {
        let s = TestStore::new();
        s.ok(&[
            "import",
            busybox_tarball().to_str().unwrap(),
            "busybox:latest",
        ]);
        s
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A scratch path inside the test's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `strata --root STORE ARGS…`, not yet run. Registry credentials come from a docker
    /// config of the test's own (`DOCKER_CONFIG`): the host's never leak into a test.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(Stdio::null());
        c.env("DOCKER_CONFIG", self.path("docker"))
            .env_remove("REGISTRY_AUTH_FILE");
        c
    }

    /// Runs strata and returns its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn strata")
    }

    /// Runs strata, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "strata {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs strata, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "strata {} should have failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A root filesystem tarball of the host's static busybox, made once per test binary.
pub fn busybox_tarball() -> &'static Path {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strata-busybox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("busybox.tar");
        let status = Command::new(repo_root().join("scripts/make-busybox-rootfs"))
            .arg(&out)
            .status()
            .expect("run scripts/make-busybox-rootfs");
        assert!(
            status.success(),
            "scripts/make-busybox-rootfs failed: is busybox-static installed?"
        );
        out
    })
}

/// Runs a shell command line, asserts success, returns stdout.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "sh -c {script:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Prints why `test` is skipped.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
}

/// Whether a program is on PATH; prints a skip reason when it is not.
pub fn have_or_skip(program: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        skip(
            test,
            &format!("{program} is not installed (scripts/install-deps installs it)"),
        );
    }
    found
}

/// Whether the test may mount FUSE filesystems (root and /dev/fuse); prints why not.
pub fn is_root_with_fuse_or_skip(test: &str) -> bool {
    if !is_root_or_skip(test) {
        return false;
    }
    let fuse = Path::new("/dev/fuse").exists();
    if !fuse {
        skip(test, "/dev/fuse is missing");
    }
    fuse
}
