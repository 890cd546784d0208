//! The shared Dockerfile conformance cases (`../shared/conformance`, run by its own `run.sh`)
//! against this build of strata, on kernel overlayfs and on the FUSE union. A checkout without
//! `../shared` beside it (a CI machine) runs the snapshot in `tests/conformance-cases`;
//! refresh it with `cp -r ../shared/conformance/. tests/conformance-cases/`.

#![allow(clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{is_root_or_skip, repo_root, strata_bin};

/// Where the cases are: `$STRATA_CONFORMANCE`, else `shared/conformance` beside the checkout
/// (the maintained copy), else the snapshot of it in `tests/conformance-cases`.
fn cases_dir() -> Option<PathBuf> {
    let candidates = match std::env::var_os("STRATA_CONFORMANCE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![
            repo_root().join("../shared/conformance"),
            repo_root().join("tests/conformance-cases"),
        ],
    };
    candidates
        .into_iter()
        .find(|dir| dir.join("run.sh").is_file())
}

/// Copies the cases to a scratch dir, restoring what the shared copy lost: case 05 checks
/// `app.log` (ignored by its `*.log` rule) and `keep.log` (kept by `!keep.log`), files that a
/// `*.log` rule of the repository the cases come from kept out of it.
fn staged_cases(src: &Path, dst: &Path) {
    common::sh(&format!("cp -r '{}/.' '{}'", src.display(), dst.display()));
    common::sh(&format!("chmod -R u+w '{}'", dst.display()));
    let case05 = dst.join("05-dockerignore");
    if case05.is_dir() {
        for (name, content) in [("app.log", "ignored\n"), ("keep.log", "kept\n")] {
            if !case05.join(name).exists() {
                std::fs::write(case05.join(name), content).unwrap();
            }
        }
    }
}

/// One run of the cases at a time: case 12 counts the host's mounts before and after its
/// failing builds, and a run on the FUSE union mounts its daemons in the host's namespace.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_cases(driver: Option<&str>) {
    let _one_at_a_time = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(src) = cases_dir() else {
        eprintln!(
            "SKIP conformance: no run.sh in $STRATA_CONFORMANCE, ../shared/conformance or tests/conformance-cases"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    staged_cases(&src, tmp.path());
    let mut cmd = Command::new("bash");
    cmd.arg(src.join("run.sh"))
        .arg(strata_bin())
        .arg(tmp.path());
    match driver {
        Some(d) => cmd.env("STRATA_STORAGE_DRIVER", d),
        None => cmd.env_remove("STRATA_STORAGE_DRIVER"),
    };
    let out = cmd.output().expect("run.sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "conformance cases failed ({driver:?}):\n{text}"
    );
    assert!(!text.contains("mounts left under the store"), "{text}");
}

#[test]
fn conformance_cases_pass_on_overlayfs() {
    if !is_root_or_skip("conformance_cases_pass_on_overlayfs") {
        return;
    }
    run_cases(Some("overlay"));
}

#[test]
fn conformance_cases_pass_on_the_fuse_union() {
    if !common::is_root_with_fuse_or_skip("conformance_cases_pass_on_the_fuse_union") {
        return;
    }
    run_cases(Some("fuse"));
}
