//! End to end: `strata build` beyond the conformance cases — the cache, reproducibility,
//! progress output, what a failed or interrupted build leaves (nothing), ADD of URLs, secrets,
//! ssh agents and cache mounts shared between builds.

mod common;
#[path = "registry/listener.rs"]
mod listener;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestStore, have_or_skip, is_root_or_skip, repo_root, sh};
use listener::LoopbackServer;

fn bench_context(s: &TestStore) -> PathBuf {
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

/// The mounts under the store of `s` (none once a build is over, whatever happened). Other
/// tests' mounts, running beside this one, are not its business.
fn mounts_of(s: &TestStore) -> Vec<String> {
    let root = s.root();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(root.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

/// The entries of `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Asserts that nothing under the store's tmp has a name containing one of `words`.
fn assert_tmp_free_of(s: &TestStore, words: &[&str]) {
    let left = tmp_entries(s);
    assert!(
        left.iter().all(|e| words.iter().all(|w| !e.contains(w))),
        "left in tmp: {left:?}"
    );
}

fn tmp_entries(s: &TestStore) -> Vec<String> {
    entries(&s.root().join("tmp"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
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
    // Quiet (`-q`, as docker's): only the failed step's output and its error.
    let quiet = s.output(&["build", "-q", "-t", "broken", ctx.to_str().unwrap()]);
    assert!(!quiet.status.success() && quiet.stdout.is_empty());
    let err = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        err.starts_with("two\nERROR: ") && err.contains("code: 9") && !err.contains('#'),
        "{err}"
    );
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
    assert_eq!(
        mounts_of(&s),
        Vec::<String>::new(),
        "a mount was left behind"
    );
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
    let quiet = s.output(&["build", "--quiet", "-t", "fixed", ctx.to_str().unwrap()]);
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "{quiet:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&quiet.stdout),
        s.ok(&["inspect", "--format", "id", "fixed"])
    );
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
    assert_eq!(
        mounts_of(&s),
        Vec::<String>::new(),
        "a mount was left behind"
    );
    assert_eq!(tmp_entries(&s), Vec::<String>::new());
    // SIGKILLed with its cgroup, the step's process may take a moment to be gone from the
    // process table on a loaded machine; it must not outlive that.
    let killed = Instant::now();
    while sh("ps -eo args").lines().any(|l| l.trim() == "sleep 60") {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the step's process survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
}

/// A plain HTTP server on 127.0.0.1 serving files from a map (path → body) with a fixed
/// `Last-Modified`, 404 for anything else; it counts the requests it answers.
struct FileServer {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    server: LoopbackServer,
}

/// The `Last-Modified` every file has: 2023-11-14T22:13:20Z.
const LAST_MODIFIED: (&str, i64) = ("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000);

impl FileServer {
    fn start() -> FileServer {
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (f, n) = (files.clone(), requests.clone());
        let server = LoopbackServer::start(move |conn| serve_file(conn, &f, &n));
        FileServer {
            files,
            requests,
            server,
        }
    }

    fn put(&self, path: &str, body: &[u8]) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.to_vec());
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port())
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve_file(mut conn: TcpStream, files: &Mutex<HashMap<String, Vec<u8>>>, n: &AtomicUsize) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    let _ = reader.read_line(&mut request);
    // The headers, up to the blank line.
    for line in reader.lines() {
        match line {
            Ok(l) if !l.is_empty() => {}
            _ => break,
        }
    }
    n.fetch_add(1, Ordering::SeqCst);
    let target = request.split(' ').nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let (status, body) = match files.lock().unwrap().get(path) {
        Some(b) => ("200 OK", b.clone()),
        None => ("404 Not Found", b"no such file\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        LAST_MODIFIED.0
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

/// The gzipped tar of the directory `dir`'s contents (as `tar czf - -C DIR .` writes it).
fn tar_gz(dir: &Path) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .args(["czf", "-", "-C"])
        .arg(dir)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A context dir holding `dockerfile` as its Dockerfile.
fn context(s: &TestStore, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = s.path(name);
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// `strata build --progress plain ARGS… -t TAG CTX`; returns (success, stderr).
fn build(s: &TestStore, tag: &str, ctx: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["build", "--progress", "plain", "-t", tag];
    all.extend_from_slice(args);
    all.push(ctx.to_str().unwrap());
    let out = s.output(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` with `input` on its stdin; its output.
fn with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Whether step `#n` of a plain build log was taken from the cache.
fn cached(log: &str, n: usize) -> bool {
    log.lines().any(|l| l == format!("#{n} CACHED"))
}

/// Asserts that a failed build tagged nothing and left no temporary files or mounts under its
/// store (other tests' commands may mount elsewhere meanwhile).
fn assert_left_nothing(s: &TestStore, tag: &str) {
    assert!(
        !s.output(&["inspect", tag]).status.success(),
        "{tag} was tagged"
    );
    assert_eq!(tmp_entries(s), Vec::<String>::new(), "temporary files left");
    assert_eq!(
        mounts_of(s),
        Vec::<String>::new(),
        "a mount was left behind"
    );
}

#[test]
fn add_of_a_url_downloads_the_file_and_keys_the_cache_by_its_content() {
    if !is_root_or_skip("add_of_a_url_downloads_the_file_and_keys_the_cache_by_its_content") {
        return;
    }
    let s = TestStore::with_busybox();
    let web = FileServer::start();
    web.put("/files/hello.txt", b"hello v1\n");
    // An archive is downloaded as it is, never extracted.
    web.put(
        "/files/tool.tar.gz",
        &fs::read(common::busybox_tarball()).unwrap()[..4096],
    );
    let ctx = context(
        &s,
        "ctx",
        &format!(
            "FROM busybox\n\
             ADD {} /dl/\n\
             ADD {} /dl/\n\
             ADD --chmod=0640 --chown=app {} /opt/renamed.txt\n",
            web.url("/files/hello.txt"),
            web.url("/files/tool.tar.gz?version=1"),
            web.url("/files/hello.txt"),
        ),
    );
    let (ok, log) = build(&s, "url:1", &ctx, &[]);
    assert!(ok, "{log}");
    let run = |img: &str, args: &[&str]| {
        let mut all = vec!["run", "--rm", img];
        all.extend_from_slice(args);
        s.ok(&all)
    };
    assert_eq!(run("url:1", &["ls", "/dl"]), "hello.txt\ntool.tar.gz\n");
    assert_eq!(run("url:1", &["cat", "/dl/hello.txt"]), "hello v1\n");
    assert_eq!(run("url:1", &["cat", "/opt/renamed.txt"]), "hello v1\n");
    let mtime = LAST_MODIFIED.1;
    assert_eq!(
        run(
            "url:1",
            &[
                "stat",
                "-c",
                "%n %a %u:%g %Y %s",
                "/dl/hello.txt",
                "/dl/tool.tar.gz",
                "/opt/renamed.txt"
            ]
        ),
        format!(
            "/dl/hello.txt 600 0:0 {mtime} 9\n/dl/tool.tar.gz 600 0:0 {mtime} 4096\n\
             /opt/renamed.txt 640 1000:1000 {mtime} 9\n"
        )
    );
    // Same content: every step cached (after downloading again to compare).
    let before = web.requests();
    let (ok, log) = build(&s, "url:2", &ctx, &[]);
    assert!(ok && (2..=4).all(|n| cached(&log, n)), "{log}");
    assert_eq!(web.requests(), before + 3, "each URL is fetched to compare");
    // New content: the step runs again.
    web.put("/files/hello.txt", b"hello v2\n");
    let (ok, log) = build(&s, "url:3", &ctx, &[]);
    assert!(ok && !cached(&log, 2), "{log}");
    assert_eq!(run("url:3", &["cat", "/dl/hello.txt"]), "hello v2\n");
    // A missing file: the error names the URL and the status; nothing is left.
    let missing = web.url("/files/missing.txt");
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nADD {missing} /m.txt\n"),
    )
    .unwrap();
    let (ok, log) = build(&s, "url:404", &ctx, &[]);
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!("Dockerfile:2: ADD {missing}"))
            && log.contains(&format!(
                "downloading {missing}: the server answered 404 Not Found"
            )),
        "{log}"
    );
    assert_left_nothing(&s, "url:404");
}

#[test]
fn add_checksum_is_verified_and_keys_the_cache_without_a_download() {
    if !is_root_or_skip("add_checksum_is_verified_and_keys_the_cache_without_a_download") {
        return;
    }
    let s = TestStore::with_busybox();
    let web = FileServer::start();
    let body = b"pinned content\n";
    web.put("/pinned.txt", body);
    let good = layerfs::digest::digest_of(body).to_string();
    let url = web.url("/pinned.txt");
    let ctx = context(
        &s,
        "ctx",
        &format!("FROM busybox\nADD --checksum={good} {url} /p.txt\n"),
    );
    let (ok, log) = build(&s, "sum:1", &ctx, &[]);
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "sum:1", "cat", "/p.txt"]),
        "pinned content\n"
    );
    let before = web.requests();
    let (ok, log) = build(&s, "sum:2", &ctx, &[]);
    assert!(ok && cached(&log, 2), "{log}");
    assert_eq!(
        web.requests(),
        before,
        "a pinned URL was downloaded for a cache hit"
    );
    // A wrong checksum fails, naming the URL and both digests.
    let bad = layerfs::digest::digest_of(b"something else").to_string();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nADD --checksum={bad} {url} /p.txt\n"),
    )
    .unwrap();
    let (ok, log) = build(&s, "sum:bad", &ctx, &[]);
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!(
            "downloading {url}: checksum mismatch: expected {bad}, got {good}"
        )) && log.contains("Dockerfile:2"),
        "{log}"
    );
    assert_left_nothing(&s, "sum:bad");
}

/// Every blob of an image (layers decompressed) as bytes.
fn image_blobs(s: &TestStore, image: &str) -> Vec<Vec<u8>> {
    let dir = s.path(&format!("saved-{}", image.replace(':', "-")));
    let d = dir.to_str().unwrap();
    s.ok(&["save", "--format", "oci-dir", "-o", d, image]);
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let f = fs::File::open(e.unwrap().path()).unwrap();
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut layerfs::layer::compress::decompress(f).unwrap(),
                &mut out,
            )
            .unwrap();
            out
        })
        .collect()
}

#[test]
fn secrets_are_mounted_read_only_and_reach_no_layer_key_or_log() {
    if !is_root_or_skip("secrets_are_mounted_read_only_and_reach_no_layer_key_or_log") {
        return;
    }
    let s = TestStore::with_busybox();
    let value = "s3cr3t-7f1d9a";
    let file = s.path("token.txt");
    fs::write(&file, value).unwrap();
    let ctx = context(
        &s,
        "ctx",
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok stat -c '%n %a %u:%g' /run/secrets/tok > /default && \
             sha256sum < /run/secrets/tok > /sum && ! touch /run/secrets/tok 2>/dev/null\n\
         RUN --mount=type=secret,id=tok,target=/etc/app/key,mode=0440,uid=1000,gid=1000 \
             stat -c '%n %a %u:%g' /etc/app/key > /custom\n\
         RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'printf %s \"$TOKEN\" | sha256sum > /env'\n\
         RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /absent\n\
         USER app\n\
         RUN --mount=type=secret,id=tok,uid=1000 sh -c 'sha256sum < /run/secrets/tok > /tmp/app'\n",
    );
    let secret = format!("id=tok,src={}", file.display());
    let (ok, log) = build(&s, "sec:1", &ctx, &["--secret", &secret]);
    assert!(ok, "{log}");
    assert!(!log.contains(value), "the secret was printed: {log}");
    let cat = |f: &str| s.ok(&["run", "--rm", "sec:1", "cat", f]);
    assert_eq!(cat("/default"), "/run/secrets/tok 400 0:0\n");
    // The file (as root, and as a user it is given to) and the variable hold the value.
    let sum = format!(
        "{}  -\n",
        layerfs::digest::digest_of(value.as_bytes()).digest()
    );
    assert_eq!(cat("/sum"), sum);
    assert_eq!(cat("/custom"), "/etc/app/key 440 1000:1000\n");
    assert_eq!(cat("/env"), sum);
    assert_eq!(cat("/absent"), "skipped\n");
    assert_eq!(cat("/tmp/app"), sum);
    // No mount point stub, no value, in any layer or the config.
    let listing = s.ok(&["run", "--rm", "sec:1", "ls", "/", "/etc"]);
    assert!(
        !listing.lines().any(|l| l == "run" || l == "app"),
        "a stub leaked: {listing}"
    );
    for blob in image_blobs(&s, "sec:1") {
        assert!(
            !blob.windows(value.len()).any(|w| w == value.as_bytes()),
            "the secret is in a blob"
        );
    }
    // The value is not in the cache key: a new one reuses every step.
    fs::write(&file, "another-value").unwrap();
    let (ok, log) = build(&s, "sec:2", &ctx, &["--secret", &secret]);
    assert!(ok && (2..=7).all(|n| cached(&log, n)), "{log}");
    // A required secret the build lacks: an error naming it; nothing left.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=npmrc,required true\n",
    )
    .unwrap();
    let (ok, log) = build(&s, "sec:3", &ctx, &["--secret", &secret]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("Dockerfile:2") && log.contains("secret \"npmrc\" is required"),
        "{log}"
    );
    assert_left_nothing(&s, "sec:3");
    // A --secret whose file is missing is refused before anything runs.
    let err = s.fails(&[
        "build",
        "--secret",
        "id=x,src=/no/such/secret",
        "-t",
        "sec:4",
        ctx.to_str().unwrap(),
    ]);
    assert!(err.contains("--secret id=x,src=/no/such/secret"), "{err}");
}

/// A root filesystem with the host's `ssh-add` and the libraries it needs, under `dir`.
fn ssh_add_rootfs(dir: &Path) {
    let bin = dir.join("usr/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/usr/bin/ssh-add", bin.join("ssh-add")).unwrap();
    for lib in sh("ldd /usr/bin/ssh-add")
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = dir.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(lib, to).unwrap();
    }
}

#[test]
fn ssh_mounts_forward_the_agent_to_root_and_to_other_users() {
    let test = "ssh_mounts_forward_the_agent_to_root_and_to_other_users";
    if !is_root_or_skip(test)
        || !["ssh-agent", "ssh-add", "ssh-keygen", "ldd"]
            .iter()
            .all(|t| have_or_skip(t, test))
    {
        return;
    }
    let s = TestStore::with_busybox();
    let key = s.path("key");
    let agent_sock = s.path("agent.sock");
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C strata-test-key -f {}",
        key.display()
    ));
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("ssh-agent listens", || agent_sock.exists());
    sh(&format!(
        "SSH_AUTH_SOCK={} ssh-add {} 2>/dev/null",
        agent_sock.display(),
        key.display()
    ));
    let ctx = context(
        &s,
        "ctx",
        "FROM busybox\n\
         COPY root/ /\n\
         RUN --mount=type=ssh sh -c 'echo $SSH_AUTH_SOCK > /sock && ssh-add -l > /keys'\n\
         USER app\n\
         RUN --mount=type=ssh,target=/tmp/agent,uid=1000 sh -c 'SSH_AUTH_SOCK=/tmp/agent ssh-add -l > /tmp/keys'\n\
         RUN --mount=type=ssh,id=absent sh -c 'test ! -e /run/buildkit/ssh_agent.0 && echo skipped > /tmp/absent'\n",
    );
    ssh_add_rootfs(&ctx.join("root"));
    let out = s
        .cmd(&[
            "build",
            "--progress",
            "plain",
            "--ssh",
            "default",
            "-t",
            "ssh:1",
        ])
        .arg(&ctx)
        .env("SSH_AUTH_SOCK", &agent_sock)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let cat = |f: &str| s.ok(&["run", "--rm", "ssh:1", "cat", f]);
    let result = out.status.success().then(|| {
        (
            cat("/sock"),
            cat("/keys"),
            cat("/tmp/keys"),
            cat("/tmp/absent"),
        )
    });
    let required = s
        .cmd(&["build", "--ssh", "default", "-t", "ssh:2"])
        .arg(context(
            &s,
            "ctx2",
            "FROM busybox\nRUN --mount=type=ssh,id=deploy,required true\n",
        ))
        .env("SSH_AUTH_SOCK", &agent_sock)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let (sock, keys, app_keys, absent) = result.unwrap_or_else(|| panic!("{log}"));
    assert_eq!(sock, "/run/buildkit/ssh_agent.0\n");
    assert!(keys.contains("strata-test-key (ED25519)"), "{keys}");
    assert_eq!(app_keys, keys, "a non-root user reaches the agent too");
    assert_eq!(absent, "skipped\n");
    let root = s.ok(&["run", "--rm", "ssh:1", "ls", "/"]);
    assert!(!root.lines().any(|l| l == "run"), "a stub leaked: {root}");
    assert!(!required.status.success());
    let err = String::from_utf8_lossy(&required.stderr);
    assert!(
        err.contains("Dockerfile:2") && err.contains("ssh agent \"deploy\" is required"),
        "{err}"
    );
}

/// Waits until `cond` holds (up to 30 s).
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cache mount instances of a store that hold a file named `name`.
fn cache_dirs_with(s: &TestStore, name: &str) -> Vec<PathBuf> {
    let mut dirs = entries(&s.root().join("cache-mounts"));
    dirs.retain(|p| p.join(name).exists());
    dirs
}

#[test]
fn locked_cache_mounts_serialise_builds_and_private_ones_get_their_own() {
    if !is_root_or_skip("locked_cache_mounts_serialise_builds_and_private_ones_get_their_own") {
        return;
    }
    let s = TestStore::with_busybox();
    let spawn = |ctx: &Path, name: &str| {
        s.cmd(&[
            "build",
            "--no-cache",
            "--build-arg",
            &format!("NAME={name}"),
            "-t",
            &format!("c:{name}"),
            ctx.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let finish = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // locked: the second build's step waits for the first one's to end.
    let locked = context(
        &s,
        "locked",
        "FROM busybox\nARG NAME\n\
         RUN --mount=type=cache,id=log,target=/c,sharing=locked \
             sh -c 'echo start-$NAME >> /c/log; sleep 2; echo end-$NAME >> /c/log'\n",
    );
    let a = spawn(&locked, "a");
    wait_until("build a's step starts", || {
        cache_dirs_with(&s, "log")
            .iter()
            .any(|d| fs::read_to_string(d.join("log")).unwrap_or_default() == "start-a\n")
    });
    let b = spawn(&locked, "b");
    finish(a);
    finish(b);
    let dirs = cache_dirs_with(&s, "log");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(
        fs::read_to_string(dirs[0].join("log")).unwrap(),
        "start-a\nend-a\nstart-b\nend-b\n"
    );
    // private: a build that finds the cache in use gets a fresh, empty one.
    let private = context(
        &s,
        "private",
        "FROM busybox\nARG NAME\n\
         RUN --mount=type=cache,id=p,target=/c,sharing=private \
             sh -c 'ls /c > /seen; touch /c/$NAME; sleep 3'\n",
    );
    let seed = context(
        &s,
        "seed",
        "FROM busybox\nRUN --mount=type=cache,id=p,target=/c touch /c/seed\n",
    );
    s.ok(&["build", "-t", "c:seed", seed.to_str().unwrap()]);
    let a = spawn(&private, "pa");
    wait_until("build pa's step starts", || {
        !cache_dirs_with(&s, "pa").is_empty()
    });
    let b = spawn(&private, "pb");
    finish(a);
    finish(b);
    let seen = |img: &str| s.ok(&["run", "--rm", img, "cat", "/seen"]);
    assert_eq!(seen("c:pa"), "seed\n");
    assert_eq!(seen("c:pb"), "", "the cache in use was shared");
    // Once free, the first instance is the one used again.
    let c = spawn(&private, "pc");
    finish(c);
    assert_eq!(seen("c:pc"), "pa\nseed\n");
}

/// `-f -` reads the Dockerfile from stdin (as `docker build -f - CONTEXT` does); the context
/// still gives the files and its `.dockerignore`, and errors name the Dockerfile's lines.
#[test]
fn a_dockerfile_from_stdin_builds_with_the_context() {
    if !is_root_or_skip("a_dockerfile_from_stdin_builds_with_the_context") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("kept.txt"), "from the context\n").unwrap();
    fs::write(ctx.join("left-out.txt"), "ignored\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "left-out.txt\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    let build = |text: &str, tag: &str| {
        with_stdin(
            s.cmd(&["build", "-f", "-", "-t", tag, "--progress", "plain"])
                .arg(&ctx),
            text.as_bytes(),
        )
    };
    let out = build(
        "FROM busybox\nCOPY . /ctx/\nRUN cat /ctx/kept.txt > /copied\n",
        "stdin:ok",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = s.ok(&["run", "--rm", "stdin:ok", "ls", "/ctx"]);
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["Dockerfile", "kept.txt"]
    );
    assert_eq!(
        s.ok(&["run", "--rm", "stdin:ok", "cat", "/copied"]),
        "from the context\n"
    );
    let out = build("FROM busybox\nFROBNICATE now\n", "stdin:bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Dockerfile:2") && err.contains("FROBNICATE"),
        "{err}"
    );
}

/// `strata history`: the steps that made an image, newest first, each layer step with its
/// layer's size and every metadata step with none; `--format json` names the layers, which
/// are the manifest's.
#[test]
fn history_lists_the_steps_newest_first_with_their_layers() {
    if !is_root_or_skip("history_lists_the_steps_newest_first_with_their_layers") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = context(
        &s,
        "ctx",
        "FROM busybox\nENV A=1\nRUN head -c 50000 /dev/urandom > /noise\nLABEL team=strata\n",
    );
    let (ok, log) = build(&s, "hist", &ctx, &[]);
    assert!(ok, "{log}");
    let text = s.ok(&["history", "hist"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("IMAGE"), "{text}");
    let id = s.ok(&["inspect", "--format", "id", "hist"]);
    let short = &id.trim().trim_start_matches("sha256:")[..12];
    assert!(
        lines[1].starts_with(short),
        "the newest step carries the id: {text}"
    );
    let by_step = |needle: &str| -> &str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} step in {text}"))
    };
    assert!(
        lines[1].contains("LABEL team=strata"),
        "newest first: {text}"
    );
    assert!(by_step("ENV A=1").contains(" 0B "), "{text}");
    assert!(!by_step("RUN /bin/sh -c head").contains(" 0B "), "{text}");

    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&s.ok(&["history", "--format", "json", "hist"])).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "--format", "manifest", "hist"])).unwrap();
    let mut from_history: Vec<&str> = steps.iter().filter_map(|st| st["layer"].as_str()).collect();
    from_history.reverse();
    let from_manifest: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(from_history, from_manifest);
    let run = steps
        .iter()
        .find(|st| {
            st["created_by"]
                .as_str()
                .unwrap_or("")
                .contains("head -c 50000")
        })
        .unwrap();
    assert!(run["size"].as_u64().unwrap() > 50_000, "{run}");
    let err = s.fails(&["history", "no-such-image"]);
    assert!(err.contains("no-such-image"), "{err}");
}

/// `build --label`: labels for the built image, over a Dockerfile LABEL of the same key, as
/// `docker build --label` gives them; a build without it keeps the Dockerfile's.
#[test]
fn labels_from_the_command_line_join_and_win_over_the_dockerfiles() {
    if !is_root_or_skip("labels_from_the_command_line_join_and_win_over_the_dockerfiles") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = context(&s, "ctx", "FROM busybox\nLABEL team=old keep=yes\n");
    let labels = |tag: &str| -> serde_json::Value {
        let cfg: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", tag])).unwrap();
        cfg["config"]["Labels"].clone()
    };
    let (ok, log) = build(
        &s,
        "labelled",
        &ctx,
        &[
            "--label",
            "team=new",
            "--label",
            "ci.run=42",
            "--label",
            "flag",
        ],
    );
    assert!(ok, "{log}");
    assert_eq!(
        labels("labelled"),
        serde_json::json!({"team": "new", "keep": "yes", "ci.run": "42", "flag": ""})
    );
    let (ok, log) = build(&s, "plain", &ctx, &[]);
    assert!(ok, "{log}");
    assert_eq!(
        labels("plain"),
        serde_json::json!({"team": "old", "keep": "yes"})
    );
    let (ok, log) = build(&s, "bad", &ctx, &["--label", "=x"]);
    assert!(!ok && log.contains("--label"), "{log}");
    // `images --filter label=…` finds them by label (and value); `dangling=true` the image
    // that lost its name when `plain` was built again with the command-line labels.
    let names = |filters: &[&str]| -> String {
        let mut args = vec!["images", "--format", "json"];
        for f in filters {
            args.extend(["-f", f]);
        }
        let list: serde_json::Value = serde_json::from_str(&s.ok(&args)).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("<none>").to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        names(&["label=keep=yes", "label=team=new"]),
        "docker.io/library/labelled:latest"
    );
    assert_eq!(
        names(&["label=keep"]),
        "docker.io/library/labelled:latest docker.io/library/plain:latest"
    );
    assert_eq!(names(&["dangling=true"]), "");
    let (ok, log) = build(&s, "plain", &ctx, &["--label", "team=new"]);
    assert!(ok, "{log}");
    assert_eq!(names(&["dangling=true", "label=team=old"]), "<none>");
}

/// `build --add-host`, as docker's: RUN steps see the line in /etc/hosts, it keys their cache
/// (so a build without it runs them again), and it never reaches the image; `--ulimit` and
/// `--shm-size` reach RUN steps too.
#[test]
fn add_host_reaches_run_steps_and_their_cache_keys() {
    if !is_root_or_skip("add_host_reaches_run_steps_and_their_cache_keys") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = context(
        &s,
        "ctx",
        "FROM busybox\nRUN (grep db /etc/hosts || echo none) > /seen\n",
    );
    let seen = |tag: &str| s.ok(&["run", "--rm", tag, "cat", "/seen"]);
    let (ok, log) = build(&s, "with", &ctx, &["--add-host", "db:10.1.2.3"]);
    assert!(ok, "{log}");
    assert_eq!(seen("with"), "10.1.2.3\tdb\n");
    let (ok, log) = build(&s, "without", &ctx, &[]);
    assert!(ok && !cached(&log, 2), "{log}");
    assert_eq!(seen("without"), "none\n");
    let (ok, log) = build(&s, "with", &ctx, &["--add-host", "db:10.1.2.3"]);
    assert!(ok && cached(&log, 2), "{log}");
    let (ok, log) = build(&s, "bad", &ctx, &["--add-host", "db"]);
    assert!(!ok && log.contains("--add-host db"), "{log}");

    // --ulimit and --shm-size reach RUN steps the same way.
    let limits = context(
        &s,
        "limits",
        "FROM busybox\nRUN ulimit -n > /nofile && \
         grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k' > /shm\n",
    );
    let (ok, log) = build(
        &s,
        "limited",
        &limits,
        &["--ulimit", "nofile=512:1024", "--shm-size", "32m"],
    );
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "limited", "cat", "/nofile", "/shm"]),
        "512\nsize=32768k\n"
    );
    let (ok, log) = build(&s, "bad", &limits, &["--ulimit", "bogus=1"]);
    assert!(!ok && log.contains("bogus"), "{log}");
}

/// `--cache-to type=local,dest=DIR` / `--cache-from type=local,src=DIR`, as buildx's: the cache
/// as an OCI layout directory (what CI caches carry between jobs); a fresh store with the same
/// base takes every step from it and gets the same image; a directory that is not there is a
/// warning.
#[test]
fn a_local_cache_directory_carries_the_build_cache_to_a_fresh_store() {
    if !is_root_or_skip("a_local_cache_directory_carries_the_build_cache_to_a_fresh_store") {
        return;
    }
    let first = TestStore::with_busybox();
    let ctx = context(
        &first,
        "ctx",
        "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n",
    );
    let cache = first.path("ci-cache");
    let flag = format!("type=local,dest={}", cache.display());
    let (ok, log) = build(&first, "app", &ctx, &["--cache-to", &flag]);
    assert!(ok && log.contains("(2 steps)"), "{log}");
    assert!(cache.join("index.json").is_file() && cache.join("oci-layout").is_file());

    // The same base image (its OCI archive loaded: the same manifest digest), so the same
    // step keys.
    let archive = first.path("busybox.tar");
    first.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        "busybox",
    ]);
    let fresh = TestStore::new();
    fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    let from = format!("type=local,src={}", cache.display());
    let (ok, log) = build(&fresh, "app", &ctx, &["--cache-from", &from]);
    assert!(ok && cached(&log, 2) && cached(&log, 3), "{log}");
    assert_eq!(
        fresh.ok(&["inspect", "--format", "id", "app"]),
        first.ok(&["inspect", "--format", "id", "app"])
    );
    assert_eq!(
        fresh.ok(&["run", "--rm", "app", "cat", "/one", "/two"]),
        "one\ntwo\n"
    );
    fresh.ok(&["fsck"]);

    // A cache whose blobs are gone: each step warns and runs; the build still succeeds.
    fs::remove_dir_all(cache.join("blobs")).unwrap();
    let broken = TestStore::new();
    broken.ok(&["load", "-i", archive.to_str().unwrap()]);
    let (ok, log) = build(&broken, "app", &ctx, &["--cache-from", &from]);
    assert!(
        ok && !cached(&log, 2) && log.contains("running the step"),
        "{log}"
    );
    assert_eq!(
        broken.ok(&["run", "--rm", "app", "cat", "/one", "/two"]),
        "one\ntwo\n"
    );

    let missing = format!("type=local,src={}", first.path("nothing").display());
    let (ok, log) = build(
        &fresh,
        "again",
        &ctx,
        &["--no-cache", "--cache-from", &missing],
    );
    assert!(ok && log.contains("warning: --cache-from"), "{log}");
}

/// `build --output` as buildx has it: `type=local` (or a bare directory) writes the image's
/// files, whiteouts carried out; `type=docker`/`type=oci` write archives that load back as
/// the same image; a non-empty directory is refused and kept as it was; a bad spec fails
/// before anything is built.
#[test]
fn build_output_writes_the_files_or_an_archive() {
    if !is_root_or_skip("build_output_writes_the_files_or_an_archive") {
        return;
    }
    let s = TestStore::with_busybox();
    let artifacts = context(
        &s,
        "artifacts",
        "FROM busybox AS build\nRUN mkdir -p /out/sub && echo artifact > /out/sub/a.txt\n\
         FROM scratch\nCOPY --from=build /out /\n",
    );
    let dist = s.path("dist");
    let (ok, log) = build(
        &s,
        "artifacts",
        &artifacts,
        &["--output", &format!("type=local,dest={}", dist.display())],
    );
    assert!(ok, "{log}");
    assert_eq!(
        fs::read_to_string(dist.join("sub/a.txt")).unwrap(),
        "artifact\n"
    );
    assert_eq!(entries(&dist).len(), 1, "only what the image holds");

    let deleting = context(
        &s,
        "deleting",
        "FROM busybox\nRUN echo x > /gone && echo kept > /kept\nRUN rm /gone\n",
    );
    let rootfs = s.path("rootfs");
    let archive = s.path("image.tar");
    let (ok, log) = build(
        &s,
        "deleting",
        &deleting,
        &[
            "-o",
            rootfs.to_str().unwrap(),
            "-o",
            &format!("type=docker,dest={}", archive.display()),
        ],
    );
    assert!(ok, "{log}");
    assert!(!rootfs.join("gone").exists(), "the whiteout is carried out");
    assert_eq!(fs::read_to_string(rootfs.join("kept")).unwrap(), "kept\n");
    assert!(rootfs.join("bin/busybox").is_file());
    let other = TestStore::new();
    other.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        other.ok(&["inspect", "--format", "id", "deleting"]),
        s.ok(&["inspect", "--format", "id", "deleting"])
    );

    // A directory with files in it is not overwritten.
    let (ok, log) = build(&s, "again", &artifacts, &["-o", dist.to_str().unwrap()]);
    assert!(!ok && log.contains("not empty"), "{log}");
    s.fails(&["inspect", "again"]);
    assert_eq!(
        fs::read_to_string(dist.join("sub/a.txt")).unwrap(),
        "artifact\n"
    );
    let (ok, log) = build(&s, "bad", &artifacts, &["-o", "type=registry,dest=x"]);
    assert!(!ok && log.contains("type registry"), "{log}");
    assert!(!log.contains("#1"), "refused before building: {log}");
    s.fails(&["inspect", "bad"]);
    let (ok, log) = build(&s, "bad", &artifacts, &["-o", "type=local,dest=-"]);
    assert!(
        !ok && log.contains("type=local writes a directory"),
        "{log}"
    );
    let err = s.fails(&[
        "build",
        "--progress",
        "json",
        "-o",
        "type=tar,dest=-",
        artifacts.to_str().unwrap(),
    ]);
    assert!(
        err.contains("--progress json writes its events to stdout"),
        "{err}"
    );

    // type=tar: the files as one tar, to a file or to stdout (then the id goes to stderr).
    let files = s.path("files.tar");
    let (ok, log) = build(
        &s,
        "deleting",
        &deleting,
        &["-o", &format!("type=tar,dest={}", files.display())],
    );
    assert!(ok, "{log}");
    let listed = sh(&format!("tar -tf {} | sort", files.display()));
    assert!(
        listed.lines().any(|l| l == "kept")
            && listed.lines().any(|l| l == "bin/busybox")
            && !listed
                .lines()
                .any(|l| l.contains("gone") || l.contains(".wh.")),
        "{listed}"
    );
    let mut cmd = s.cmd(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "deleting",
        "-o",
        "type=tar,dest=-",
        deleting.to_str().unwrap(),
    ]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        fs::read(&files).unwrap(),
        "the same tar on stdout"
    );
    let id = s.ok(&["inspect", "--format", "id", "deleting"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(id.trim()),
        "the id on stderr"
    );
    let mut cmd = s.cmd(&[
        "build",
        "-t",
        "deleting",
        "-o",
        "type=docker,dest=-",
        deleting.to_str().unwrap(),
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let piped = s.path("piped.tar");
    fs::write(&piped, &out.stdout).unwrap();
    let third = TestStore::new();
    third.ok(&["load", "-i", piped.to_str().unwrap()]);
    assert_eq!(third.ok(&["inspect", "--format", "id", "deleting"]), id);
}

/// `strata build -` as `docker build -` reads it: a tar of the context on stdin (gzip here),
/// its .dockerignore honoured and `-f` naming a file inside it; or a Dockerfile alone with an
/// empty context; a tar with an entry escaping it is refused. The same from an http(s) URL, as
/// `docker build URL`; a URL that answers 404 is named in the error. The unpacked context and
/// the download go afterwards.
#[test]
fn a_context_from_stdin_is_a_tar_or_a_dockerfile() {
    if !is_root_or_skip("a_context_from_stdin_is_a_tar_or_a_dockerfile") {
        return;
    }
    let s = TestStore::with_busybox();
    let build_from_stdin = |input: &[u8], extra: &[&str], tag: &str| {
        let mut args = vec!["build", "--progress", "plain", "-t", tag];
        args.extend_from_slice(extra);
        args.push("-");
        let out = with_stdin(&mut s.cmd(&args), input);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ctx = s.path("ctx");
    fs::create_dir_all(ctx.join("sub")).unwrap();
    fs::write(ctx.join("kept.txt"), "from a tar\n").unwrap();
    fs::write(ctx.join("secret.txt"), "ignored\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    fs::write(
        ctx.join("sub/Alt.Dockerfile"),
        "FROM busybox\nCOPY . /ctx/\n",
    )
    .unwrap();
    let tar = tar_gz(&ctx);
    let (ok, log) = build_from_stdin(&tar, &["-f", "sub/Alt.Dockerfile"], "from:tar");
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "from:tar", "cat", "/ctx/kept.txt"]),
        "from a tar\n"
    );
    assert!(
        !s.ok(&["run", "--rm", "from:tar", "ls", "/ctx"])
            .contains("secret"),
        ".dockerignore of the tar applies"
    );

    let (ok, log) = build_from_stdin(
        b"FROM busybox\nRUN echo no context > /made\n",
        &[],
        "from:dockerfile",
    );
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "from:dockerfile", "cat", "/made"]),
        "no context\n"
    );

    // An entry climbing out of the context is refused, and nothing lands outside.
    let hostile = s.path("hostile.tar");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import tarfile, io\n\
             t = tarfile.open('{}', 'w')\n\
             i = tarfile.TarInfo('../escaped'); d = b'x'; i.size = len(d)\n\
             t.addfile(i, io.BytesIO(d)); t.close()",
            hostile.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, log) = build_from_stdin(&fs::read(&hostile).unwrap(), &[], "from:hostile");
    assert!(!ok && log.contains("escaped"), "{log}");
    assert!(!s.root().join("tmp/escaped").exists() && !s.root().join("escaped").exists());
    s.fails(&["inspect", "from:hostile"]);

    // The same from a URL, as `docker build URL`: a tar, or a Dockerfile alone.
    let web = FileServer::start();
    web.put("/ctx.tar.gz", &tar);
    web.put(
        "/Dockerfile",
        b"FROM busybox\nRUN echo from a url > /made\n",
    );
    let from_url = |url: &str, extra: &[&str], tag: &str| {
        let mut args = vec!["build", "--progress", "plain", "-t", tag];
        args.extend_from_slice(extra);
        args.push(url);
        let out = s.output(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, log) = from_url(
        &web.url("/ctx.tar.gz"),
        &["-f", "sub/Alt.Dockerfile"],
        "url:tar",
    );
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "url:tar", "cat", "/ctx/kept.txt"]),
        "from a tar\n"
    );
    let (ok, log) = from_url(&web.url("/Dockerfile"), &[], "url:dockerfile");
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "url:dockerfile", "cat", "/made"]),
        "from a url\n"
    );
    let missing = web.url("/missing.tar");
    let (ok, log) = from_url(&missing, &[], "url:missing");
    assert!(
        !ok && log.contains(&missing) && log.contains("404"),
        "{log}"
    );
    s.fails(&["inspect", "url:missing"]);
    assert_tmp_free_of(&s, &["build-context", "context-download"]);
}

/// `--iidfile` and buildx's `--metadata-file`: what CI steps read after a build, naming the
/// same image `inspect` does.
#[test]
fn iidfile_and_metadata_file_name_the_built_image() {
    if !is_root_or_skip("iidfile_and_metadata_file_name_the_built_image") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = context(&s, "ctx", "FROM busybox\nENV BUILT=yes\n");
    let (iid, meta) = (s.path("iid"), s.path("meta.json"));
    let (ok, log) = build(
        &s,
        "meta:one",
        &ctx,
        &[
            "-t",
            "meta:two",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    let id = s.ok(&["inspect", "--format", "id", "meta:one"]);
    let digest = s.ok(&["inspect", "--format", "digest", "meta:two"]);
    assert_eq!(fs::read_to_string(&iid).unwrap(), id.trim());
    let m: serde_json::Value = serde_json::from_str(&fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id.trim());
    assert_eq!(m["containerimage.digest"], digest.trim());
    assert_eq!(m["containerimage.descriptor"]["digest"], digest.trim());
    assert_eq!(
        m["image.name"],
        "docker.io/library/meta:one,docker.io/library/meta:two"
    );
}

/// `--build-context NAME=DIR` as buildx has it: `COPY --from=NAME` and
/// `RUN --mount=type=bind,from=NAME` read DIR (its own .dockerignore applied), before a stage of
/// the same name; a change in DIR misses the cache; without the flag the name is an image. The
/// context can also be a tar at an http(s) URL.
#[test]
fn named_build_contexts_feed_copy_and_run_mounts() {
    if !is_root_or_skip("named_build_contexts_feed_copy_and_run_mounts") {
        return;
    }
    let s = TestStore::with_busybox();
    let assets = s.path("assets");
    fs::create_dir_all(&assets).unwrap();
    fs::write(assets.join("logo.txt"), "v1\n").unwrap();
    fs::write(assets.join("scratch.tmp"), "ignored\n").unwrap();
    fs::write(assets.join(".dockerignore"), "*.tmp\n").unwrap();
    let ctx = context(
        &s,
        "ctx",
        "FROM busybox AS assets\nRUN echo from the stage > /logo.txt\n\
         FROM busybox\nCOPY --from=assets /logo.txt /logo.txt\n\
         RUN --mount=type=bind,from=assets,target=/a ls /a > /listed\n",
    );
    let flag = format!("assets={}", assets.display());
    let (ok, log) = build(&s, "named", &ctx, &["--build-context", &flag]);
    assert!(ok, "{log}");
    let read = |path: &str| s.ok(&["run", "--rm", "named", "cat", path]);
    assert_eq!(
        read("/logo.txt"),
        "v1\n",
        "the named context wins over the stage"
    );
    let listed = read("/listed");
    assert!(
        listed.contains("logo.txt") && !listed.contains("scratch.tmp"),
        "{listed}"
    );

    fs::write(assets.join("logo.txt"), "v2\n").unwrap();
    let (ok, log) = build(&s, "named", &ctx, &["--build-context", &flag]);
    assert!(ok, "{log}");
    assert_eq!(
        read("/logo.txt"),
        "v2\n",
        "a change in the directory misses the cache"
    );

    // Without the flag, --from=assets is the stage again.
    let (ok, log) = build(&s, "staged", &ctx, &[]);
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "staged", "cat", "/logo.txt"]),
        "from the stage\n"
    );
    let (ok, log) = build(&s, "bad", &ctx, &["--build-context", "assets=/nonexistent"]);
    assert!(
        !ok && log.contains("--build-context assets=/nonexistent"),
        "{log}"
    );

    // A named context can be a tar at a URL; a file that is not a tar is refused.
    let tar = tar_gz(&assets);
    let web = FileServer::start();
    web.put("/assets.tar.gz", &tar);
    web.put("/notes.txt", b"just text\n");
    let flag = format!("assets={}", web.url("/assets.tar.gz"));
    let (ok, log) = build(&s, "from-url", &ctx, &["--build-context", &flag]);
    assert!(ok, "{log}");
    assert_eq!(
        s.ok(&["run", "--rm", "from-url", "cat", "/logo.txt"]),
        "v2\n"
    );
    let flag = format!("assets={}", web.url("/notes.txt"));
    let (ok, log) = build(&s, "bad", &ctx, &["--build-context", &flag]);
    assert!(!ok && log.contains("not a tar"), "{log}");
    assert_tmp_free_of(&s, &["build-context", "context-download"]);
}

/// `--squash` makes the build's layers one over the base image's, `--squash-all` the whole
/// image one layer; files added then removed are gone, a base file removed stays removed,
/// history still pairs with the layers, the image runs, and a rebuild is cached.
#[test]
fn squash_makes_the_new_layers_one_and_squash_all_the_whole_image() {
    if !is_root_or_skip("squash_makes_the_new_layers_one_and_squash_all_the_whole_image") {
        return;
    }
    let s = TestStore::with_busybox();
    let ctx = context(
        &s,
        "ctx",
        "FROM busybox\nRUN echo a > /a && mkdir /d && echo x > /d/x\n\
         RUN echo b > /b && rm /a\nRUN rm /bin/ls /d/x\nENV SQUASHED=yes\n",
    );
    let layers = |image: &str| -> usize {
        let manifest: serde_json::Value =
            serde_json::from_str(&s.ok(&["inspect", "--format", "manifest", image])).unwrap();
        manifest["layers"].as_array().unwrap().len()
    };
    let history_layers = |image: &str| -> usize {
        let config: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", image])).unwrap();
        config["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["empty_layer"] != true)
            .count()
    };
    let base = layers("busybox");
    let check = |image: &str| {
        let seen = s.ok(&[
            "run",
            "--rm",
            image,
            "sh",
            "-c",
            "cat /b; ls /a /bin/ls /d/x 2>&1 | wc -l; ls -d /d; echo $SQUASHED; /bin/echo ok",
        ]);
        assert_eq!(seen, "b\n3\n/d\nyes\nok\n", "{image}");
    };
    let (ok, log) = build(&s, "layered", &ctx, &[]);
    assert!(ok, "{log}");
    assert_eq!(layers("layered"), base + 3);
    check("layered");

    let (ok, log) = build(&s, "squashed", &ctx, &["--squash"]);
    assert!(ok, "{log}");
    assert_eq!(layers("squashed"), base + 1);
    assert_eq!(history_layers("squashed"), base + 1);
    check("squashed");
    let id = s.ok(&["inspect", "--format", "id", "squashed"]);
    let (ok, log) = build(&s, "squashed", &ctx, &["--squash"]);
    assert!(ok, "{log}");
    assert_eq!(s.ok(&["inspect", "--format", "id", "squashed"]), id);

    let (ok, log) = build(&s, "flat", &ctx, &["--squash-all"]);
    assert!(ok, "{log}");
    assert_eq!(layers("flat"), 1);
    assert_eq!(history_layers("flat"), 1);
    check("flat");
    s.ok(&["fsck"]);
    assert_tmp_free_of(&s, &["squash"]);

    let (ok, log) = build(&s, "both", &ctx, &["--squash", "--squash-all"]);
    assert!(!ok && log.contains("--squash"), "{log}");
}

/// `--build-context NAME=docker-image://REF` as buildx has it: `FROM NAME` and `--from=NAME`
/// use the image REF (the name matches as an image name does), and bad specs are named.
#[test]
fn named_image_contexts_stand_in_for_an_image_in_from_and_copy() {
    if !is_root_or_skip("named_image_contexts_stand_in_for_an_image_in_from_and_copy") {
        return;
    }
    let s = TestStore::with_busybox();
    let base = context(&s, "base", "FROM busybox\nRUN echo v2 > /version\n");
    let (ok, log) = build(&s, "mybase:v2", &base, &[]);
    assert!(ok, "{log}");
    // alpine is not in the store and there is no network: only the contexts make this build.
    let ctx = context(
        &s,
        "ctx",
        "FROM alpine\nRUN cat /version > /seen-by-run\n\
         COPY --from=tools:1.0 /version /copied\n",
    );
    let contexts = [
        "--build-context",
        "docker.io/library/alpine:latest=docker-image://mybase:v2",
        "--build-context",
        "tools:1.0=docker-image://mybase:v2",
    ];
    let (ok, log) = build(&s, "uses-contexts", &ctx, &contexts);
    assert!(ok, "{log}");
    let read = |path: &str| s.ok(&["run", "--rm", "uses-contexts", "cat", path]);
    assert_eq!(read("/seen-by-run"), "v2\n");
    assert_eq!(read("/copied"), "v2\n");
    let (ok, log) = build(&s, "uses-contexts", &ctx, &contexts);
    assert!(ok && cached(&log, 2) && cached(&log, 3), "{log}");

    for (spec, says) in [
        (
            "x=docker-image://Not/Valid",
            "--build-context x=docker-image://Not/Valid",
        ),
        (
            "x=git://example.com/repo",
            "only local directories, http(s) URLs of tars and docker-image://",
        ),
        (
            "Bad=docker-image://busybox",
            "--build-context Bad=docker-image://busybox",
        ),
    ] {
        let (ok, log) = build(&s, "bad", &ctx, &["--build-context", spec]);
        assert!(!ok && log.contains(says), "{spec}: {log}");
    }
    let (ok, log) = build(
        &s,
        "bad",
        &ctx,
        &[
            "--build-context",
            "a=docker-image://busybox",
            "--build-context",
            "a=/tmp",
        ],
    );
    assert!(
        !ok && log.contains("another --build-context has the name a"),
        "{log}"
    );
    let images = s.ok(&["images", "--format", "json"]);
    assert!(!images.contains("docker.io/library/bad:latest"), "{images}");
}
