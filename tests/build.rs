//! End to end: `strata build` beyond the conformance cases — the cache, reproducibility,
//! progress output, and what a failed or interrupted build leaves (nothing).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{TestStore, is_root_or_skip, repo_root, sh};

fn bench_context(s: &TestStore) -> std::path::PathBuf {
    let ctx = s.path("bench-ctx");
    sh(&format!(
        "{} {}",
        repo_root()
            .join("Dockerfiles/bench/make-context.sh")
            .display(),
        ctx.display()
    ));
    ctx
}

fn mounts() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

fn tmp_entries(s: &TestStore) -> Vec<String> {
    match fs::read_dir(s.root().join("tmp")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn an_unchanged_rebuild_of_the_bench_dockerfile_is_cached_at_every_step() {
    if !is_root_or_skip("an_unchanged_rebuild_of_the_bench_dockerfile_is_cached_at_every_step") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = bench_context(&s);
    let c = ctx.to_str().unwrap();
    let first = s.output(&["build", "--progress", "plain", "-t", "bench:a", c]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = s.output(&["build", "--progress", "plain", "-t", "bench:b", c]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let steps: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" ["))
        .collect();
    assert!(steps.len() >= 10, "{log}");
    for step in steps {
        let id = step.split(' ').next().unwrap();
        assert!(
            log.lines().any(|l| l == format!("{id} CACHED")),
            "step not cached: {step}\n{log}"
        );
    }
    let id = |t: &str| s.ok(&["inspect", "--format", "id", t]);
    assert_eq!(id("bench:a"), id("bench:b"));
    // The image is what the Dockerfile says.
    let n = s.ok(&["run", "--rm", "bench:a"]);
    assert_eq!(
        n.trim(),
        "2502",
        "files under /app: 1,000 deps, sums.txt, 1,000 generated, 501 sources"
    );
    let user = s.ok(&[
        "run",
        "--rm",
        "bench:a",
        "stat",
        "-c",
        "%U",
        "/app/src/README",
    ]);
    assert_eq!(user.trim(), "bench");
}

#[test]
fn source_date_epoch_makes_builds_bit_for_bit_reproducible() {
    if !is_root_or_skip("source_date_epoch_makes_builds_bit_for_bit_reproducible") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f.txt"), "content\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY f.txt /f.txt\nRUN mkdir /made && echo x > /made/x && touch /made\nENV A=b\n",
    )
    .unwrap();
    let digest = |tag: &str| {
        let out = s
            .cmd(&["build", "--no-cache", "-t", tag, ctx.to_str().unwrap()])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.ok(&["inspect", "--format", "digest", tag])
    };
    let a = digest("repro:a");
    std::thread::sleep(Duration::from_millis(1100));
    let b = digest("repro:b");
    assert_eq!(a, b, "two --no-cache builds of the same inputs differ");
    let cfg: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "repro:a"])).unwrap();
    assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn a_failed_build_tags_nothing_and_leaves_nothing() {
    if !is_root_or_skip("a_failed_build_tags_nothing_and_leaves_nothing") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo one > /one\nRUN echo two && exit 9\n",
    )
    .unwrap();
    let before = mounts();
    let out = s.output(&[
        "build",
        "-t",
        "broken",
        "--progress",
        "plain",
        ctx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:3") && err.contains("code: 9") && err.contains("RUN echo two"),
        "{err}"
    );
    assert!(err.contains("#3 two"), "the step's output is shown: {err}");
    assert!(s.output(&["inspect", "broken"]).status.code() != Some(0));
    assert_eq!(mounts(), before, "a mount was left behind");
    assert_eq!(
        tmp_entries(&s),
        Vec::<String>::new(),
        "temporary files were left behind"
    );
    // The step before the failure is cached.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo one > /one\n",
    )
    .unwrap();
    let out = s.output(&[
        "build",
        "-t",
        "fixed",
        "--progress",
        "plain",
        ctx.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("#2 CACHED"));
}

#[test]
fn an_interrupted_build_stops_promptly_and_leaves_nothing() {
    if !is_root_or_skip("an_interrupted_build_stops_promptly_and_leaves_nothing") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo started && sleep 60\n",
    )
    .unwrap();
    let before = mounts();
    let mut child = s
        .cmd(&[
            "build",
            "-t",
            "never",
            "--progress",
            "plain",
            ctx.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the step to start, then Ctrl-C.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stderr, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        all
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20)
        && !sh("ps -eo args").lines().any(|l| l.trim() == "sleep 60")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupted = Instant::now();
    kill(child.id() as i32, 2);
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        interrupted.elapsed()
    );
    assert!(s.output(&["inspect", "never"]).status.code() != Some(0));
    assert_eq!(mounts(), before);
    assert_eq!(tmp_entries(&s), Vec::<String>::new());
    assert!(
        !sh("ps -eo args").lines().any(|l| l.trim() == "sleep 60"),
        "the step's process survived"
    );
}

/// Sends signal `sig` to `pid` (a child we spawned and have not reaped).
fn kill(pid: i32, sig: i32) {
    let pid = rustix::process::Pid::from_raw(pid).expect("a child's pid is positive");
    let sig = rustix::process::Signal::from_named_raw(sig).expect("a known signal");
    rustix::process::kill_process(pid, sig).expect("kill");
}

#[test]
fn json_progress_is_one_event_per_line() {
    if !is_root_or_skip("json_progress_is_one_event_per_line") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo hello-json\nENV X=1\n",
    )
    .unwrap();
    let out = s.output(&[
        "build",
        "--progress",
        "json",
        "-t",
        "j",
        "--iidfile",
        s.path("iid").to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["line"] == "hello-json")
    );
    assert_eq!(events.iter().filter(|e| e["event"] == "start").count(), 3);
    assert_eq!(events.iter().filter(|e| e["event"] == "done").count(), 3);
    let iid = fs::read_to_string(s.path("iid")).unwrap();
    assert_eq!(iid, s.ok(&["inspect", "--format", "id", "j"]).trim());
}

#[test]
fn run_mounts_bind_cache_and_tmpfs_leave_nothing_in_the_image() {
    if !is_root_or_skip("run_mounts_bind_cache_and_tmpfs_leave_nothing_in_the_image") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("data.txt"), "ctx-data\n").unwrap();
    fs::write(ctx.join("secret.txt"), "hidden\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS gen\n\
         RUN mkdir /out && echo from-stage > /out/f\n\
         FROM busybox\n\
         RUN --mount=type=bind,target=/ctx cat /ctx/data.txt > /from-ctx && ! test -e /ctx/secret.txt\n\
         RUN --mount=type=bind,from=gen,source=/out,target=/g cat /g/f > /from-stage\n\
         RUN --mount=type=cache,target=/cache,id=counter sh -c 'echo run >> /cache/log; wc -l < /cache/log > /cache-count'\n\
         RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/y && ls /scratch > /tmpfs-ls'\n\
         RUN --mount=type=bind,target=/ro sh -c 'echo x > /ro/new' || echo refused > /ro-refused\n",
    )
    .unwrap();
    let c = ctx.to_str().unwrap();
    s.ok(&["build", "-t", "mnt", c]);
    let cat = |img: &str, f: &str| s.ok(&["run", "--rm", img, "cat", f]).trim().to_owned();
    assert_eq!(cat("mnt", "/from-ctx"), "ctx-data");
    assert_eq!(cat("mnt", "/from-stage"), "from-stage");
    assert_eq!(cat("mnt", "/cache-count"), "1");
    assert_eq!(cat("mnt", "/tmpfs-ls"), "y");
    assert_eq!(cat("mnt", "/ro-refused"), "refused");
    assert!(
        !ctx.join("new").exists(),
        "a read-only bind of the context was written"
    );
    let root = s.ok(&["run", "--rm", "mnt", "ls", "/"]);
    for stub in ["ctx", "g", "cache", "scratch", "ro"] {
        assert!(
            !root.lines().any(|l| l == stub),
            "mount point /{stub} leaked into the image: {root}"
        );
    }
    // The cache outlives the build; a changed context file reruns the step that binds it.
    s.ok(&["build", "--no-cache", "-t", "mnt2", c]);
    assert_eq!(cat("mnt2", "/cache-count"), "2");
    fs::write(ctx.join("data.txt"), "changed\n").unwrap();
    s.ok(&["build", "-t", "mnt3", c]);
    assert_eq!(cat("mnt3", "/from-ctx"), "changed");
    fs::write(
        ctx.join("Dockerfile.secret"),
        "FROM busybox\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n",
    )
    .unwrap();
    let err = s.fails(&[
        "build",
        "-t",
        "x",
        "-f",
        ctx.join("Dockerfile.secret").to_str().unwrap(),
        c,
    ]);
    assert!(
        err.contains("Dockerfile.secret:2") && err.contains("type=secret"),
        "{err}"
    );
}
