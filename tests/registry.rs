//! strata pull/push/login/logout against the real CNCF distribution registry: anonymous, with
//! htpasswd basic auth and with bearer tokens; interop with skopeo both ways; faults injected
//! by a loopback proxy (dropped connections, 500, 429, corrupted blobs, a slow registry).

mod common;
#[path = "registry/layout.rs"]
mod layout;
#[path = "registry/listener.rs"]
mod listener;
#[path = "registry/proxy.rs"]
mod proxy;
#[path = "registry/server.rs"]
mod server;
#[path = "registry/token.rs"]
mod token;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestStore, have_or_skip, is_root_or_skip};
use layerfs::digest::digest_of;
use layerfs::store::Store;
use proxy::{Fault, FaultProxy, Rule};
use serde_json::Value;
use server::{RegistryAuth, TestRegistry};
use token::TokenServer;

/// Whether the tools these tests drive are here; prints why not.
fn tools_or_skip(test: &str) -> bool {
    ["docker-registry", "skopeo", "htpasswd", "openssl"]
        .iter()
        .all(|t| have_or_skip(t, test))
}

/// `strata login` with the password on stdin; returns the output.
fn login(store: &TestStore, registry: &str, user: &str, password: &str) -> Output {
    let mut c = store.cmd(&["login", "-u", user, "--password-stdin", registry]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The manifest digest skopeo sees on the registry (logging in with `creds`, `user:password`).
fn skopeo_digest(reference: &str, creds: Option<&str>) -> String {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let image = format!("docker://{reference}");
    args.push(&image);
    digest_of(skopeo(&args).as_bytes()).to_string()
}

/// The store is whole: `strata fsck` passes, nothing is left half-written under tmp and every
/// layer dir is recorded.
fn assert_store_whole(store: &TestStore) {
    store.ok(&["fsck"]);
    let root = store.root();
    let tmp: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(tmp.is_empty(), "left under tmp: {tmp:?}");
    let s = Store::open(&root).unwrap();
    for entry in std::fs::read_dir(root.join("layers")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let chain = layerfs::digest::parse_sha256(&format!("sha256:{name}")).unwrap();
        assert!(
            s.layer_record(&chain).is_some(),
            "layer dir {name} has no record"
        );
    }
}

/// `strata run --rm IMAGE CMD…`: its stdout.
fn run_in_image(store: &TestStore, image: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", image];
    args.extend(cmd);
    store.ok(&args)
}

/// An anonymous registry holding `repo:v1`, an image of `layers` layers of `size`
/// incompressible bytes each (pushed by skopeo). Returns the registry, the manifest digest and
/// the first layer's digest.
fn registry_with_noisy_image(
    repo: &str,
    layers: usize,
    size: usize,
) -> (TestRegistry, String, String) {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let dir = tempfile::tempdir().unwrap();
    let image = layout::Image {
        architecture: layerfs::config::host_architecture(),
        variant: None,
        layers: (0..layers)
            .map(|i| {
                vec![(
                    format!("data/layer{i}.bin"),
                    layout::noise(size, i as u64 + 1),
                )]
            })
            .collect(),
    };
    let digest = layout::write_layout(dir.path(), "v1", &[image]);
    skopeo_push(
        dir.path(),
        "v1",
        &format!("{}/{repo}:v1", registry.host),
        false,
    );
    let manifest = std::fs::read(
        dir.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    (registry, digest, layer)
}

/// Pushes a layout to the registry with skopeo; returns the manifest digest.
fn skopeo_push(dir: &Path, tag: &str, dest: &str, all: bool) {
    let src = format!("oci:{}:{tag}", dir.display());
    let dst = format!("docker://{dest}");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&args);
}

#[test]
fn anonymous_push_is_what_skopeo_pulls_and_pull_gives_a_runnable_image() {
    if !tools_or_skip("anonymous_push_is_what_skopeo_pulls_and_pull_gives_a_runnable_image") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let a = TestStore::with_busybox();
    let dest = format!("{}/strata/busybox:v1", registry.host);
    let out = a.ok(&["push", "busybox", &dest]);
    let local = a
        .ok(&["inspect", "--format", "digest", "busybox"])
        .trim()
        .to_owned();
    assert_eq!(out.trim(), format!("{dest}@{local}"));
    assert_eq!(
        skopeo_digest(&dest, None),
        local,
        "the registry has the store's manifest, byte for byte"
    );
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], local.as_str());
    assert_eq!(
        inspect["Architecture"],
        layerfs::config::host_architecture()
    );
    let oci = a.path("skopeo-oci");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:v1", oci.display()),
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], local.as_str());

    // Pushing again uploads nothing.
    let again = json_lines(&a.ok(&["push", "--progress", "json", "busybox", &dest]));
    assert!(
        again
            .iter()
            .filter(|e| e["event"] == "skip")
            .all(|e| e["reason"] == "exists")
    );
    assert_eq!(again.last().unwrap()["bytes"], 0);

    let b = TestStore::new();
    let pulled = b.ok(&["pull", &dest]);
    assert_eq!(pulled.trim(), dest);
    assert_eq!(
        b.ok(&["inspect", "--format", "digest", &dest]).trim(),
        local
    );
    assert_eq!(
        b.ok(&["inspect", "--format", "id", &dest]),
        a.ok(&["inspect", "--format", "id", "busybox"])
    );
    assert_store_whole(&b);
    if is_root_or_skip("running the pulled image") {
        assert_eq!(
            run_in_image(&b, &dest, &["/bin/sh", "-c", "echo pulled-and-running"]).trim(),
            "pulled-and-running"
        );
    }
    // A second pull finds everything in the store.
    let events = json_lines(&b.ok(&["pull", "--progress", "json", &dest]));
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["manifest"], local.as_str());
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "skip" && e["reason"] == "exists")
    );
    assert!(!events.iter().any(|e| e["event"] == "start"));
}

#[test]
fn an_image_pushed_by_skopeo_from_the_store_is_pulled_and_runs() {
    if !tools_or_skip("an_image_pushed_by_skopeo_from_the_store_is_pulled_and_runs") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let a = TestStore::with_busybox();
    let dest = format!("{}/skopeo/busybox:latest", registry.host);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!(
            "oci:{}:docker.io/library/busybox:latest",
            a.root().display()
        ),
        &format!("docker://{dest}"),
    ]);
    let b = TestStore::new();
    b.ok(&["pull", &dest]);
    assert_eq!(
        b.ok(&["inspect", "--format", "digest", &dest]).trim(),
        skopeo_digest(&dest, None)
    );
    assert_store_whole(&b);
    if is_root_or_skip("running the pulled image") {
        assert!(run_in_image(&b, &dest, &["/bin/busybox", "ls", "/bin"]).contains("busybox"));
    }
}

#[test]
fn multi_layer_images_pull_concurrently_through_a_slow_registry() {
    if !tools_or_skip("multi_layer_images_pull_concurrently_through_a_slow_registry") {
        return;
    }
    let (registry, digest, _) = registry_with_noisy_image("multi/layers", 6, 256 << 10);
    // Every blob trickles in: 16 KiB every 20 ms, about 0.3 s a layer.
    let slow = Fault::Slow {
        chunk: 16 << 10,
        pause: Duration::from_millis(20),
    };
    let proxy = FaultProxy::start(
        &registry.host,
        vec![Rule::new("GET", "/blobs/sha256:", 0, slow)],
    );
    let s = TestStore::new();
    let reference = format!("{}/multi/layers:v1", proxy.host);
    s.ok(&["pull", &reference]);
    assert_eq!(
        s.ok(&["inspect", "--format", "digest", &reference]).trim(),
        digest
    );
    let in_flight = proxy.max_blob_gets_in_flight();
    assert!(
        (2..=4).contains(&in_flight),
        "layers in flight at once: {in_flight} (want 2 to 4)"
    );
    let st = Store::open(s.root()).unwrap();
    let img = st.resolve_image(&reference).unwrap();
    for (i, chain) in img.chain_ids().iter().enumerate() {
        let file = st.layer_dir(chain).join(format!("data/layer{i}.bin"));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            layout::noise(256 << 10, i as u64 + 1),
            "{}",
            file.display()
        );
    }
    assert_store_whole(&s);
}

/// Regression: two pulls of the same image into one store at once (parallel CI jobs) used to
/// write the same partial blob file together.
#[test]
fn two_pulls_of_one_image_at_once_download_each_blob_once() {
    if !tools_or_skip("two_pulls_of_one_image_at_once_download_each_blob_once") {
        return;
    }
    let (registry, digest, _) = registry_with_noisy_image("twice/at-once", 3, 512 << 10);
    let slow = Fault::Slow {
        chunk: 32 << 10,
        pause: Duration::from_millis(20),
    };
    let proxy = FaultProxy::start(
        &registry.host,
        vec![Rule::new("GET", "/blobs/sha256:", 0, slow)],
    );
    let s = TestStore::new();
    let reference = format!("{}/twice/at-once:v1", proxy.host);
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            s.cmd(&["pull", &reference])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        let out = pull.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        s.ok(&["inspect", "--format", "digest", &reference]).trim(),
        digest
    );
    let manifest: Value =
        serde_json::from_str(&s.ok(&["inspect", "--format", "manifest", &reference])).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let layer = layer["digest"].as_str().unwrap();
        let gets = proxy
            .log()
            .iter()
            .filter(|l| l.starts_with("GET") && l.contains(layer))
            .count();
        assert_eq!(gets, 1, "GETs of {layer}: {:?}", proxy.log());
    }
    assert_store_whole(&s);
}

#[test]
fn a_multi_platform_index_pushed_by_skopeo_pulls_the_right_platform() {
    if !tools_or_skip("a_multi_platform_index_pushed_by_skopeo_pulls_the_right_platform") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let dir = tempfile::tempdir().unwrap();
    three_platform_layout(dir.path(), "multi");
    let reference = format!("{}/multi/platform:v1", registry.host);
    skopeo_push(dir.path(), "multi", &reference, true);
    let platform_of = |s: &TestStore| -> (String, String) {
        let config: Value = serde_json::from_str(&s.ok(&["inspect", &reference])).unwrap();
        let st = Store::open(s.root()).unwrap();
        let img = st.resolve_image(&reference).unwrap();
        let file = st.layer_dir(&img.chain_ids()[0]).join("platform");
        (
            config["architecture"].as_str().unwrap().to_owned(),
            std::fs::read_to_string(file).unwrap().trim().to_owned(),
        )
    };
    let arm = TestStore::new();
    arm.ok(&["pull", "--platform", "linux/arm64", &reference]);
    assert_eq!(platform_of(&arm), ("arm64".to_owned(), "arm64".to_owned()));
    let host = TestStore::new();
    host.ok(&["pull", &reference]);
    let arch = layerfs::config::host_architecture();
    if ["amd64", "arm64", "s390x"].contains(&arch) {
        assert_eq!(platform_of(&host), (arch.to_owned(), arch.to_owned()));
    }
    let none = TestStore::new();
    let err = none.fails(&["pull", "--platform", "linux/riscv64", &reference]);
    assert!(
        err.contains("linux/riscv64")
            && err.contains("linux/arm64/v8")
            && err.contains("linux/s390x"),
        "{err}"
    );
    let err = none.fails(&["pull", "--platform", "linux", &reference]);
    assert!(err.contains("invalid platform"), "{err}");
    assert_store_whole(&arm);

    // Inspected in the registry, the index resolves to the same platform pull picked, and
    // `--format raw` is the index skopeo sees.
    let remote = format!("docker://{reference}");
    let inspect = |args: &[&str]| {
        let mut all = vec!["inspect"];
        all.extend(args);
        all.push(&remote);
        none.ok(&all)
    };
    let arm_config: Value = serde_json::from_str(&inspect(&[
        "--platform",
        "linux/arm64",
        "--format",
        "config",
    ]))
    .unwrap();
    assert_eq!(arm_config["architecture"], "arm64");
    assert_eq!(
        inspect(&["--platform", "linux/arm64", "--format", "id"]).trim(),
        arm.ok(&["inspect", "--format", "id", &reference]).trim()
    );
    let arm_digest = inspect(&["--platform", "linux/arm64", "--format", "digest"]);
    assert_eq!(
        arm_digest.trim(),
        arm.ok(&["inspect", "--format", "digest", &reference])
            .trim()
    );
    let raw = inspect(&["--format", "raw"]);
    assert_eq!(
        digest_of(raw.as_bytes()).to_string(),
        skopeo_digest(&reference, None)
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&arm_digest.trim()), "{listed:?}");
    let err = none.fails(&["inspect", "--platform", "linux/riscv64", &remote]);
    assert!(
        err.contains("linux/riscv64") && err.contains("linux/s390x"),
        "{err}"
    );

    // `run --platform` pulls that platform's image, and again when the store's is another.
    if is_root_or_skip(
        "run --platform (a_multi_platform_index_pushed_by_skopeo_pulls_the_right_platform)",
    ) {
        let arch_after_run = |platform: &str| {
            // These images hold one file and no program: the run itself fails with 127.
            let out = none.output(&["run", "--rm", "--platform", platform, &reference, "/none"]);
            assert_eq!(
                out.status.code(),
                Some(127),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            none.ok(&["inspect", "--format", "{{.Architecture}}", &reference])
        };
        assert_eq!(arch_after_run("linux/s390x"), "s390x\n");
        assert_eq!(arch_after_run("linux/arm64"), "arm64\n");
    }
}

/// `push --all-tags REPOSITORY`, as docker's: every local tag of it goes to its own name, and
/// skopeo lists them all; a tag or a destination is refused.
#[test]
fn push_all_tags_pushes_every_tag_of_the_repository() {
    if !tools_or_skip("push_all_tags_pushes_every_tag_of_the_repository") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let s = TestStore::with_busybox();
    let repo = format!("{}/all/tags", registry.host);
    for tag in ["a", "b", "c"] {
        s.ok(&["tag", "busybox", &format!("{repo}:{tag}")]);
    }
    s.ok(&["tag", "busybox", &format!("{}/other/repo:z", registry.host)]);
    let out = s.ok(&["push", "--all-tags", &repo]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let listed: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{repo}"),
    ]))
    .unwrap();
    let mut tags: Vec<&str> = listed["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["a", "b", "c"]);
    let err = s.fails(&["push", "--all-tags", &format!("{repo}:a")]);
    assert!(err.contains("takes a repository"), "{err}");
    let err = s.fails(&[
        "push",
        "--all-tags",
        &format!("{}/none/here", registry.host),
    ]);
    assert!(err.contains("no tag of"), "{err}");
}

/// Three single-layer images, one per platform, as an index in an OCI layout at `dir`.
fn three_platform_layout(dir: &Path, tag: &str) {
    let image = |arch: &'static str, variant| layout::Image {
        architecture: arch,
        variant,
        layers: vec![vec![(
            "platform".to_owned(),
            format!("{arch}\n").into_bytes(),
        )]],
    };
    layout::write_layout(
        dir,
        tag,
        &[
            image("amd64", None),
            image("arm64", Some("v8")),
            image("s390x", None),
        ],
    );
}

/// `copy docker://A docker://B`, as skopeo's: with `--all` the index and every platform arrive
/// with the source's digests; without it, one platform's manifest; within one registry every
/// blob is mounted; the store is left as it was (nothing spooled is left behind).
#[test]
fn copy_between_registries_keeps_digests_and_mounts_within_one() {
    if !tools_or_skip("copy_between_registries_keeps_digests_and_mounts_within_one") {
        return;
    }
    let a = TestRegistry::start(RegistryAuth::Anonymous);
    let b = TestRegistry::start(RegistryAuth::Anonymous);
    let dir = tempfile::tempdir().unwrap();
    three_platform_layout(dir.path(), "multi");
    let source = format!("{}/multi/platform:v1", a.host);
    skopeo_push(dir.path(), "multi", &source, true);
    let s = TestStore::new();

    // Every platform, to another registry: the index digest is the source's, and each
    // platform pulls from the copy.
    let mirror = format!("{}/mirror/platform:v1", b.host);
    let out = s.ok(&[
        "copy",
        "--all",
        &format!("docker://{source}"),
        &format!("docker://{mirror}"),
    ]);
    let index_digest = skopeo_digest(&source, None);
    assert_eq!(out.trim(), format!("{mirror}@{index_digest}"));
    assert_eq!(skopeo_digest(&mirror, None), index_digest);
    let arm = TestStore::new();
    arm.ok(&["pull", "--platform", "linux/arm64", &mirror]);
    let image = Store::open(arm.root())
        .unwrap()
        .resolve_image(&mirror)
        .unwrap();
    let file = Store::open(arm.root())
        .unwrap()
        .layer_dir(&image.chain_ids()[0])
        .join("platform");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "arm64\n");
    assert!(
        s.ok(&["images", "-q"]).trim().is_empty(),
        "a copy between registries stores no image"
    );
    assert_store_whole(&s);

    // One platform: its image manifest, byte for byte (so the same digest), under the tag.
    let single = format!("{}/single/s390x:v1", b.host);
    let digestfile = s.path("digest");
    s.ok(&[
        "copy",
        "--platform",
        "linux/s390x",
        "--digestfile",
        digestfile.to_str().unwrap(),
        &format!("docker://{source}"),
        &format!("docker://{single}"),
    ]);
    let s390x = s.ok(&[
        "inspect",
        "--platform",
        "linux/s390x",
        "--format",
        "digest",
        &format!("docker://{source}"),
    ]);
    assert_eq!(skopeo_digest(&single, None), s390x.trim());
    assert_eq!(std::fs::read_to_string(&digestfile).unwrap(), s390x.trim());
    let config: Value = serde_json::from_str(&s.ok(&[
        "inspect",
        "--format",
        "config",
        &format!("docker://{single}"),
    ]))
    .unwrap();
    assert_eq!(config["architecture"], "s390x");

    // Within one registry: every blob is mounted from the source repository; nothing moves.
    let events = json_lines(&s.ok(&[
        "copy",
        "--all",
        "--progress",
        "json",
        &format!("docker://{source}"),
        &format!("docker://{}/other/name:v2", a.host),
    ]));
    let mounted = events
        .iter()
        .filter(|e| e["event"] == "skip" && e["reason"] == "mounted")
        .inspect(|e| assert_eq!(e["from"], "multi/platform"))
        .count();
    assert_eq!(mounted, 6, "three configs and three layers: {events:?}");
    assert_eq!(events.last().unwrap()["bytes"], 0);
    assert_eq!(
        skopeo_digest(&format!("{}/other/name:v2", a.host), None),
        index_digest
    );
    assert_store_whole(&s);

    // Clear errors: a tag the source lacks, a platform it lacks, --all into the store.
    let err = s.fails(&[
        "copy",
        &format!("docker://{}/multi/platform:nope", a.host),
        &format!("docker://{mirror}"),
    ]);
    assert!(err.contains("multi/platform:nope"), "{err}");
    let err = s.fails(&[
        "copy",
        "--platform",
        "linux/riscv64",
        &format!("docker://{source}"),
        &format!("docker://{mirror}"),
    ]);
    assert!(
        err.contains("linux/riscv64") && err.contains("linux/s390x"),
        "{err}"
    );
    let err = s.fails(&["copy", "--all", &format!("docker://{source}"), "local"]);
    assert!(
        err.contains("--all") && err.contains("one platform"),
        "{err}"
    );
    assert_store_whole(&s);
}

/// `umoci unpack` of the image `name` of the OCI layout `dir` into the bundle `bundle`.
fn umoci_unpack(dir: &Path, name: &str, bundle: &Path) {
    let unpacked = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{name}", dir.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        unpacked.status.success(),
        "{}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
}

/// `copy` to and from an OCI layout directory (`oci:DIR:NAME`), as skopeo's: what strata
/// writes skopeo and umoci read, what skopeo writes strata pushes, digests kept both ways; a
/// damaged blob leaves the layout as it was.
#[test]
fn copy_to_and_from_an_oci_layout_as_skopeo_does() {
    if !tools_or_skip("copy_to_and_from_an_oci_layout_as_skopeo_does")
        || !have_or_skip("umoci", "copy_to_and_from_an_oci_layout_as_skopeo_does")
    {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let host = registry.host.as_str();
    let written = tempfile::tempdir().unwrap();
    three_platform_layout(written.path(), "multi");
    let source = format!("{host}/multi/platform:v1");
    skopeo_push(written.path(), "multi", &source, true);
    let index_digest = skopeo_digest(&source, None);
    let s = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let oci = |name: &str| format!("oci:{}:{name}", dir.display());

    // Registry → layout: the whole index, and one platform's image beside it.
    let out = s.ok(&["copy", "--all", &format!("docker://{source}"), &oci("all")]);
    assert_eq!(out.trim(), format!("{}@{index_digest}", oci("all")));
    let raw = skopeo(&["inspect", "--raw", &oci("all")]);
    assert_eq!(digest_of(raw.as_bytes()).to_string(), index_digest);
    s.ok(&[
        "copy",
        "--platform",
        "linux/arm64",
        &format!("docker://{source}"),
        &oci("arm"),
    ]);
    let bundle = work.path().join("bundle");
    umoci_unpack(&dir, "arm", &bundle);
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/platform")).unwrap(),
        "arm64\n"
    );
    skopeo(&[
        "copy",
        "--all",
        &oci("all"),
        &format!("oci:{}:again", work.path().join("again").display()),
    ]);

    // Layout → registry, from strata's layout and from one skopeo wrote.
    s.ok(&[
        "copy",
        "--all",
        &oci("all"),
        &format!("docker://{host}/back/multi:v1"),
    ]);
    assert_eq!(
        skopeo_digest(&format!("{host}/back/multi:v1"), None),
        index_digest
    );
    let by_skopeo = work.path().join("by-skopeo");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{source}"),
        &format!("oci:{}:v1", by_skopeo.display()),
    ]);
    s.ok(&[
        "copy",
        "--all",
        &format!("oci:{}:v1", by_skopeo.display()),
        &format!("docker://{host}/from-skopeo/multi:v1"),
    ]);
    assert_eq!(
        skopeo_digest(&format!("{host}/from-skopeo/multi:v1"), None),
        index_digest
    );

    // Clear errors: a name the layout lacks (its names listed), no name in a layout of several,
    // a directory that is no layout, a layout and the store.
    let err = s.fails(&["copy", &oci("nope"), &format!("docker://{host}/x/y:v1")]);
    assert!(
        err.contains("\"nope\"") && err.contains("all, arm"),
        "{err}"
    );
    let err = s.fails(&[
        "copy",
        &format!("oci:{}", dir.display()),
        &format!("docker://{host}/x/y:v1"),
    ]);
    assert!(err.contains("holds 2 images"), "{err}");
    let err = s.fails(&[
        "copy",
        &format!("oci:{}:v1", work.path().join("bundle").display()),
        &format!("docker://{host}/x/y:v1"),
    ]);
    assert!(err.contains("not an OCI image layout"), "{err}");
    let err = s.fails(&["copy", &oci("all"), "local:v1"]);
    assert!(err.contains("strata load"), "{err}");

    // Store → layout: the store's image beside the others, which umoci unpacks, and which
    // goes on to a registry with the store's digest.
    let b = TestStore::with_busybox();
    let local = b.ok(&["inspect", "--format", "digest", "busybox"]);
    let out = b.ok(&["copy", "busybox", &oci("bb")]);
    assert_eq!(out.trim(), format!("{}@{}", oci("bb"), local.trim()));
    let bb_bundle = work.path().join("bb-bundle");
    umoci_unpack(&dir, "bb", &bb_bundle);
    assert!(bb_bundle.join("rootfs/bin/busybox").is_file());
    b.ok(&[
        "copy",
        &oci("bb"),
        &format!("docker://{host}/from-layout/bb:v1"),
    ]);
    assert_eq!(
        skopeo_digest(&format!("{host}/from-layout/bb:v1"), None),
        local.trim()
    );
    assert_store_whole(&b);

    // A Docker schema 2 image goes into a layout in its OCI form, as skopeo writes it (OCI
    // readers take nothing else): from a registry, from the store, and by `save`.
    let docker = format!("{host}/docker/bb:v1");
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &oci("bb"),
        &format!("docker://{docker}"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{docker}"),
    ]);
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    b.ok(&["copy", &format!("docker://{docker}"), &oci("from-docker")]);
    umoci_unpack(&dir, "from-docker", &work.path().join("from-docker"));
    assert!(work.path().join("from-docker/rootfs/bin/busybox").is_file());
    b.ok(&["pull", &docker]);
    b.ok(&["copy", &docker, &oci("stored-docker")]);
    umoci_unpack(&dir, "stored-docker", &work.path().join("stored-docker"));
    let saved = work.path().join("saved");
    b.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        saved.to_str().unwrap(),
        &docker,
    ]);
    let config: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:v1", saved.display()),
    ]))
    .unwrap();
    assert_eq!(config["rootfs"]["type"], "layers");

    // A blob damaged on the way: an error naming it; the layout keeps only what it had.
    let (noisy, _, layer) = registry_with_noisy_image("noisy/app", 1, 1_500_000);
    let proxy = FaultProxy::start(
        &noisy.host,
        vec![Rule::new(
            "GET",
            format!("/blobs/{layer}"),
            0,
            Fault::Corrupt,
        )],
    );
    let index_before = std::fs::read(dir.join("index.json")).unwrap();
    let err = s.fails(&[
        "copy",
        &format!("docker://{}/noisy/app:v1", proxy.host),
        &oci("noisy"),
    ]);
    assert!(err.contains(&layer), "{err}");
    assert_eq!(std::fs::read(dir.join("index.json")).unwrap(), index_before);
    assert!(!dir.join("blobs/sha256").join(&layer[7..]).exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_store_whole(&s);
}

/// A blob that does not match its digest on the way is caught before it is uploaded: the copy
/// fails naming it, and the destination gets no manifest.
#[test]
fn a_copy_refuses_a_damaged_blob_and_tags_nothing() {
    if !tools_or_skip("a_copy_refuses_a_damaged_blob_and_tags_nothing") {
        return;
    }
    // Layers past the monolithic limit: they go up in a streamed PATCH.
    let (source, _, layer) = registry_with_noisy_image("noisy/app", 2, 1_500_000);
    let proxy = FaultProxy::start(
        &source.host,
        vec![Rule::new(
            "GET",
            format!("/blobs/{layer}"),
            0,
            Fault::Corrupt,
        )],
    );
    let dest = TestRegistry::start(RegistryAuth::Anonymous);
    let s = TestStore::new();
    let err = s.fails(&[
        "copy",
        &format!("docker://{}/noisy/app:v1", proxy.host),
        &format!("docker://{}/copied/app:v1", dest.host),
    ]);
    assert!(
        err.contains(&layer) && err.contains("does not match its digest"),
        "{err}"
    );
    let tags = s.output(&["list-tags", &format!("docker://{}/copied/app", dest.host)]);
    assert!(
        String::from_utf8_lossy(&tags.stdout).trim().is_empty(),
        "no tag at the destination"
    );
    assert_store_whole(&s);

    // Without the fault the same copy goes through, with the source's digest.
    s.ok(&[
        "copy",
        &format!("docker://{}/noisy/app:v1", source.host),
        &format!("docker://{}/copied/app:v1", dest.host),
    ]);
    assert_eq!(
        skopeo_digest(&format!("{}/copied/app:v1", dest.host), None),
        skopeo_digest(&format!("{}/noisy/app:v1", source.host), None)
    );
    assert_store_whole(&s);
}

/// `copy` with the store at one end is a push (store → registry), a pull under the name given
/// (registry → store) or a tag (store → store); and `list-tags` lists what the registry has,
/// as skopeo does.
#[test]
fn copy_to_and_from_the_store_and_list_tags() {
    if !tools_or_skip("copy_to_and_from_the_store_and_list_tags") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let host = registry.host.as_str();
    let s = TestStore::with_busybox();
    let busybox_digest = s.ok(&["inspect", "--format", "digest", "busybox"]);
    for tag in ["v1", "v2", "latest"] {
        let out = s.ok(&[
            "copy",
            "busybox",
            &format!("docker://{host}/tools/box:{tag}"),
        ]);
        assert_eq!(
            out.trim(),
            format!("{host}/tools/box:{tag}@{}", busybox_digest.trim())
        );
    }
    let listed = s.ok(&["list-tags", &format!("docker://{host}/tools/box")]);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort_unstable();
    assert_eq!(listed, ["latest", "v1", "v2"]);
    let json: Value = serde_json::from_str(&s.ok(&[
        "list-tags",
        "--format",
        "json",
        &format!("{host}/tools/box"),
    ]))
    .unwrap();
    let skopeo_json: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/tools/box"),
    ]))
    .unwrap();
    assert_eq!(json, skopeo_json);
    let err = s.fails(&["list-tags", &format!("{host}/tools/box:v1")]);
    assert!(err.contains("a repository, not the tag"), "{err}");
    let err = s.fails(&["list-tags", &format!("{host}/no/such")]);
    assert!(err.contains("no/such"), "{err}");

    // Registry → store: stored under the name given, not the source's.
    let t = TestStore::new();
    let out = t.ok(&[
        "copy",
        &format!("docker://{host}/tools/box:v2"),
        "mybox:dev",
    ]);
    assert_eq!(out.trim(), "docker.io/library/mybox:dev");
    assert_eq!(
        t.ok(&["inspect", "--format", "digest", "mybox:dev"]),
        busybox_digest
    );
    let names = t.ok(&["images", "--format", "json"]);
    assert!(!names.contains("tools/box"), "{names}");
    assert_store_whole(&t);
    // Store → store: a tag.
    t.ok(&["copy", "mybox:dev", "mybox:release"]);
    assert_eq!(
        t.ok(&["inspect", "--format", "digest", "mybox:release"]),
        busybox_digest
    );
}

/// `imagetools create`, as buildx's: images built one per platform (here in two registries)
/// become one index at the target, with every image it lists copied there first; an index
/// given as a source adds its images; two images for one platform are refused.
#[test]
fn imagetools_create_merges_images_into_one_multi_platform_index() {
    if !tools_or_skip("imagetools_create_merges_images_into_one_multi_platform_index") {
        return;
    }
    let a = TestRegistry::start(RegistryAuth::Anonymous);
    let b = TestRegistry::start(RegistryAuth::Anonymous);
    let push_single = |arch: &'static str, variant, content: &str, dest: &str| {
        let dir = tempfile::tempdir().unwrap();
        let image = layout::Image {
            architecture: arch,
            variant,
            layers: vec![vec![("platform".to_owned(), content.as_bytes().to_vec())]],
        };
        layout::write_layout(dir.path(), "one", &[image]);
        skopeo_push(dir.path(), "one", dest, false);
    };
    let amd64 = format!("{}/app:amd64", a.host);
    let arm64 = format!("{}/builds/app:arm64", b.host);
    let s390x = format!("{}/app:s390x", a.host);
    push_single("amd64", None, "amd64\n", &amd64);
    push_single("arm64", Some("v8"), "arm64\n", &arm64);
    push_single("s390x", None, "s390x\n", &s390x);
    let s = TestStore::new();
    let multi = format!("{}/app:multi", a.host);

    let planned = s.ok(&[
        "imagetools",
        "create",
        "--dry-run",
        &amd64,
        &format!("docker://{arm64}"),
    ]);
    let index: Value = serde_json::from_str(&planned).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            match p["variant"].as_str() {
                Some(v) => format!(
                    "{}/{}/{v}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
                None => format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
            }
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    assert_eq!(
        index["manifests"][0]["digest"].as_str().unwrap(),
        skopeo_digest(&amd64, None)
    );
    let listed = s.ok(&["list-tags", &format!("{}/app", a.host)]);
    assert!(
        !listed.contains("multi"),
        "a dry run pushes nothing: {listed}"
    );

    let out = s.ok(&[
        "imagetools",
        "create",
        "-t",
        &multi,
        &amd64,
        &format!("docker://{arm64}"),
    ]);
    let index_digest = digest_of(planned.trim_end().as_bytes()).to_string();
    assert_eq!(out.trim(), format!("{multi}@{index_digest}"));
    assert_eq!(skopeo_digest(&multi, None), index_digest);
    // `imagetools inspect` shows the index and each platform's manifest; `--raw` is the index.
    let shown = s.ok(&["imagetools", "inspect", &multi]);
    let amd64_digest = skopeo_digest(&amd64, None);
    for line in [
        format!("Digest:    {index_digest}"),
        format!("  Name:      {}/app@{amd64_digest}", a.host),
        "  Platform:  linux/amd64".to_owned(),
        "  Platform:  linux/arm64/v8".to_owned(),
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line:?} not in:\n{shown}"
        );
    }
    let raw = s.ok(&[
        "imagetools",
        "inspect",
        "--raw",
        &format!("docker://{multi}"),
    ]);
    assert_eq!(digest_of(raw.as_bytes()).to_string(), index_digest);
    // Every image the index lists is in its repository: skopeo copies it whole, and each
    // platform pulls.
    let whole = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{multi}"),
        &format!("oci:{}:all", whole.path().display()),
    ]);
    for (platform, expected) in [("linux/arm64", "arm64\n"), ("linux/amd64", "amd64\n")] {
        let t = TestStore::new();
        t.ok(&["pull", "--platform", platform, &multi]);
        let st = Store::open(t.root()).unwrap();
        let image = st.resolve_image(&multi).unwrap();
        let file = st.layer_dir(&image.chain_ids()[0]).join("platform");
        assert_eq!(std::fs::read_to_string(file).unwrap(), expected);
    }
    assert_store_whole(&s);

    // An index as a source adds what it lists; naming the same image twice adds it once.
    let more = format!("{}/app:more", a.host);
    s.ok(&["imagetools", "create", "-t", &more, &multi, &s390x, &amd64]);
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{more}"),
    ]))
    .unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 3, "{raw}");

    // Annotations on the index and on each entry, as buildx's `--annotation` puts them; the
    // same command gives the same index (a dry run's digest is the pushed one's).
    let annotated = format!("{}/app:annotated", a.host);
    let args = [
        "--annotation",
        "org.opencontainers.image.description=two platforms",
        "--annotation",
        "index:org.example.z=last",
        "--annotation",
        "manifest-descriptor:org.example.built-by=strata",
        &amd64,
        &arm64,
    ];
    let planned = s.ok(&[&["imagetools", "create", "--dry-run"][..], &args].concat());
    s.ok(&[&["imagetools", "create", "-t", &annotated][..], &args].concat());
    let raw_text = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{annotated}"),
    ]);
    assert_eq!(
        digest_of(raw_text.as_bytes()),
        digest_of(planned.trim_end().as_bytes())
    );
    let raw: Value = serde_json::from_str(&raw_text).unwrap();
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.description"],
        "two platforms"
    );
    assert_eq!(raw["annotations"]["org.example.z"], "last");
    for entry in raw["manifests"].as_array().unwrap() {
        assert_eq!(
            entry["annotations"]["org.example.built-by"], "strata",
            "{raw}"
        );
    }
    let err = s.fails(&[
        "imagetools",
        "create",
        "--dry-run",
        "--annotation",
        "manifest:k=v",
        &amd64,
    ]);
    assert!(err.contains("manifest:k=v"), "{err}");

    // Another image for a platform the index has: refused, naming both.
    let other = format!("{}/other:amd64", a.host);
    push_single("amd64", None, "another amd64\n", &other);
    let err = s.fails(&["imagetools", "create", "--dry-run", &multi, &other]);
    assert!(
        err.contains("linux/amd64") && err.contains("other:amd64") && err.contains("app:multi"),
        "{err}"
    );
    let err = s.fails(&["imagetools", "create", &amd64]);
    assert!(err.contains("--tag"), "{err}");
}

#[test]
fn inspect_of_a_docker_reference_reads_the_registry_and_stores_nothing() {
    if !tools_or_skip("inspect_of_a_docker_reference_reads_the_registry_and_stores_nothing") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let s = TestStore::with_busybox();
    let reference = format!("{}/inspect/me:v1", registry.host);
    s.ok(&["push", "busybox", &reference]);
    let remote = format!("docker://{reference}");
    let elsewhere = TestStore::new();
    for format in [
        "config",
        "manifest",
        "id",
        "digest",
        "raw",
        "{{.Id}} {{.Digest}} {{.Os}}",
    ] {
        assert_eq!(
            elsewhere.ok(&["inspect", "--format", format, &remote]),
            s.ok(&["inspect", "--format", format, "busybox"]),
            "--format {format}"
        );
    }
    let raw = elsewhere.ok(&["inspect", "--format", "raw", &remote]);
    assert_eq!(
        digest_of(raw.as_bytes()).to_string(),
        skopeo_digest(&reference, None)
    );
    assert!(
        !elsewhere.root().join("blobs").exists()
            || std::fs::read_dir(elsewhere.root().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none(),
        "inspect stored blobs"
    );
    let images: Value =
        serde_json::from_str(&elsewhere.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(images, serde_json::json!([]));

    let err = elsewhere.fails(&[
        "inspect",
        &format!("docker://{}/absent/image:v9", registry.host),
    ]);
    assert!(
        err.contains("not found") && err.contains("absent/image"),
        "{err}"
    );
    let err = elsewhere.fails(&["inspect", "docker://Not/Valid:ref"]);
    assert!(err.contains("invalid image reference"), "{err}");
}

#[test]
fn basic_auth_login_push_pull_logout_and_wrong_credentials() {
    if !tools_or_skip("basic_auth_login_push_pull_logout_and_wrong_credentials") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Basic {
        user: "alice",
        password: "correct horse",
    });
    let host = registry.host.as_str();
    let s = TestStore::with_busybox();
    let dest = format!("{host}/private/busybox:v1");

    let err = s.fails(&["push", "busybox", &dest]);
    assert!(
        err.contains("unauthorized") && err.contains(host) && err.contains("strata login"),
        "{err}"
    );

    let wrong = login(&s, host, "alice", "battery staple");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("unauthorized") && err.contains(host), "{err}");
    assert!(
        !s.path("docker/config.json").exists(),
        "a refused login stores nothing"
    );

    let good = login(&s, host, "alice", "correct horse");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&good.stdout).trim(),
        "Login Succeeded"
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(s.path("docker/config.json")).unwrap()).unwrap();
    assert!(config["auths"][host]["auth"].is_string(), "{config}");

    // Nothing secret in the output, even at the most verbose log level.
    let out = s.output(&["--log-level", "trace", "push", "busybox", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let b64 = config["auths"][host]["auth"].as_str().unwrap();
    assert!(
        !everything.contains("correct horse") && !everything.contains(b64),
        "a secret was printed"
    );

    let other = TestStore::new();
    std::fs::create_dir_all(other.path("docker")).unwrap();
    std::fs::copy(
        s.path("docker/config.json"),
        other.path("docker/config.json"),
    )
    .unwrap();
    other.ok(&["pull", &dest]);
    assert_eq!(
        other.ok(&["inspect", "--format", "digest", &dest]),
        s.ok(&["inspect", "--format", "digest", "busybox"])
    );
    assert_store_whole(&other);

    assert!(other.ok(&["logout", host]).contains("Removed"));
    assert!(other.ok(&["logout", host]).contains("Not logged in"));
    let err = other.fails(&["pull", &dest]);
    assert!(err.contains("unauthorized") && err.contains(host), "{err}");
}

#[test]
fn bearer_tokens_with_mounts_across_repositories_and_refreshed_tokens() {
    if !tools_or_skip("bearer_tokens_with_mounts_across_repositories_and_refreshed_tokens") {
        return;
    }
    let tokens = TokenServer::start("bob", "t0ken-pass");
    let registry = TestRegistry::start(RegistryAuth::Token(&tokens));
    let host = registry.host.as_str();
    let s = TestStore::with_busybox();
    let first = format!("{host}/team/base:v1");

    let err = s.fails(&["push", "busybox", &first]);
    assert!(err.contains("unauthorized") && err.contains(host), "{err}");
    let wrong = login(&s, host, "bob", "nope");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && err.contains("unauthorized") && err.contains(host),
        "{err}"
    );
    let good = login(&s, host, "bob", "t0ken-pass");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    s.ok(&["push", "busybox", &first]);
    // Another repository of the same registry: the blobs are mounted, not uploaded, with one
    // token for both repositories.
    let second = format!("{host}/team/app:v2");
    s.ok(&["tag", "busybox", &first]);
    let events = json_lines(&s.ok(&["push", "--progress", "json", &first, &second]));
    let mounted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "skip" && e["reason"] == "mounted")
        .collect();
    assert_eq!(mounted.len(), 2, "config and layer mounted: {events:?}");
    assert!(mounted.iter().all(|e| e["from"] == "team/base"));
    assert_eq!(events.last().unwrap()["bytes"], 0);
    let last_scopes = tokens.scopes().last().unwrap().clone();
    assert!(
        last_scopes.contains(&"repository:team/app:pull,push".to_owned())
            && last_scopes.contains(&"repository:team/base:pull".to_owned()),
        "{last_scopes:?}"
    );
    assert_eq!(
        skopeo_digest(&second, Some("bob:t0ken-pass")),
        s.ok(&["inspect", "--format", "digest", "busybox"]).trim()
    );

    // A token the registry finds expired is replaced, mid-transfer, and the pull goes on.
    tokens.issue_expired(1);
    let before = tokens.issued();
    let b = TestStore::new();
    std::fs::create_dir_all(b.path("docker")).unwrap();
    std::fs::copy(s.path("docker/config.json"), b.path("docker/config.json")).unwrap();
    b.ok(&["pull", &second]);
    assert!(tokens.issued() >= before + 2, "a fresh token was fetched");
    assert_store_whole(&b);
}

#[test]
fn credential_helpers_store_and_supply_credentials() {
    if !tools_or_skip("credential_helpers_store_and_supply_credentials") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Basic {
        user: "carol",
        password: "helper-secret",
    });
    let host = registry.host.as_str();
    let s = TestStore::with_busybox();
    // A helper speaking docker's protocol, keeping one credential in a file.
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let vault = s.path("vault.json");
    let helper = bin.join("docker-credential-strata-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nvault={}\ncase \"$1\" in\n  store) cat > \"$vault\" ;;\n  get) read url; if [ -s \"$vault\" ]; then cat \"$vault\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  erase) read url; rm -f \"$vault\" ;;\nesac\n",
            vault.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(s.path("docker")).unwrap();
    std::fs::write(
        s.path("docker/config.json"),
        r#"{"credsStore":"strata-test"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut c = s.cmd(&["login", "-u", "carol", "--password-stdin", host]);
    c.env("PATH", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"helper-secret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(s.path("docker/config.json")).unwrap();
    assert!(
        !config.contains("helper-secret") && !config.contains("\"auth\""),
        "the helper keeps the secret: {config}"
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(&vault).unwrap()).unwrap();
    assert_eq!(
        (kept["Username"].as_str(), kept["Secret"].as_str()),
        (Some("carol"), Some("helper-secret"))
    );

    let mut push = s.cmd(&["push", "busybox", &format!("{host}/helped/busybox:v1")]);
    push.env("PATH", &path);
    let out = push.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut logout = s.cmd(&["logout", host]);
    logout.env("PATH", &path);
    assert!(logout.output().unwrap().status.success());
    assert!(!vault.exists(), "logout erased the helper's credential");
}

#[test]
fn a_connection_dropped_mid_blob_resumes_with_range() {
    if !tools_or_skip("a_connection_dropped_mid_blob_resumes_with_range") {
        return;
    }
    let (registry, digest, layer) = registry_with_noisy_image("faults/drop", 1, 2 << 20);
    let proxy = FaultProxy::start(
        &registry.host,
        vec![Rule::new(
            "GET",
            format!("/blobs/{layer}"),
            2,
            Fault::DropAfter(700_000),
        )],
    );
    let s = TestStore::new();
    let reference = format!("{}/faults/drop:v1", proxy.host);
    let events = json_lines(&s.ok(&["pull", "--progress", "json", &reference]));
    assert_eq!(proxy.fired(), vec![2]);
    let ranges: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|l| l.contains(&layer))
        .collect();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert!(
        ranges[1].ends_with("Range: bytes=700000-") && ranges[2].ends_with("Range: bytes=1400000-"),
        "{ranges:?}"
    );
    assert_eq!(events.iter().filter(|e| e["event"] == "retry").count(), 2);
    assert_eq!(
        s.ok(&["inspect", "--format", "digest", &reference]).trim(),
        digest
    );
    assert_store_whole(&s);
}

#[test]
fn an_interrupted_pull_resumes_in_the_next_one() {
    if !tools_or_skip("an_interrupted_pull_resumes_in_the_next_one") {
        return;
    }
    let (registry, digest, layer) = registry_with_noisy_image("faults/resume", 1, 2 << 20);
    // The download is cut after 500,000 bytes and the registry then fails until this pull
    // gives up, keeping what came.
    let proxy = FaultProxy::start(
        &registry.host,
        vec![
            Rule::new(
                "GET",
                format!("/blobs/{layer}"),
                1,
                Fault::DropAfter(500_000),
            ),
            Rule::new(
                "GET",
                format!("/blobs/{layer}"),
                0,
                Fault::Status {
                    code: 503,
                    retry_after: None,
                },
            ),
        ],
    );
    let s = TestStore::new();
    let err = s.fails(&["pull", &format!("{}/faults/resume:v1", proxy.host)]);
    assert!(err.contains("503") && err.contains(&layer), "{err}");
    let st = Store::open(s.root()).unwrap();
    assert!(st.records().unwrap().is_empty(), "nothing is tagged");
    assert!(!st.has_blob(&layerfs::digest::parse_sha256(&layer).unwrap()));
    drop(proxy);
    let proxy = FaultProxy::start(&registry.host, vec![]);
    let reference = format!("{}/faults/resume:v1", proxy.host);
    s.ok(&["pull", &reference]);
    let gets: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|l| l.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(
        gets[0].ends_with("Range: bytes=500000-"),
        "the next pull resumed: {gets:?}"
    );
    assert_eq!(
        s.ok(&["inspect", "--format", "digest", &reference]).trim(),
        digest
    );
    assert_store_whole(&s);
}

#[test]
fn server_errors_and_429_are_tried_again() {
    if !tools_or_skip("server_errors_and_429_are_tried_again") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let a = TestStore::with_busybox();
    let proxy = FaultProxy::start(
        &registry.host,
        vec![
            Rule::new(
                "GET",
                "/manifests/",
                2,
                Fault::Status {
                    code: 500,
                    retry_after: None,
                },
            ),
            Rule::new(
                "GET",
                "/blobs/sha256:",
                1,
                Fault::Status {
                    code: 429,
                    retry_after: Some(1),
                },
            ),
            Rule::new(
                "POST",
                "/blobs/uploads/",
                1,
                Fault::Status {
                    code: 503,
                    retry_after: None,
                },
            ),
            Rule::new(
                "PUT",
                "/manifests/",
                1,
                Fault::Status {
                    code: 502,
                    retry_after: None,
                },
            ),
        ],
    );
    let dest = format!("{}/faults/retry:v1", proxy.host);
    let push = json_lines(&a.ok(&["push", "--progress", "json", "busybox", &dest]));
    assert!(
        push.iter().filter(|e| e["event"] == "retry").count() >= 2,
        "{push:?}"
    );
    let b = TestStore::new();
    let started = Instant::now();
    let events = json_lines(&b.ok(&["pull", "--progress", "json", &dest]));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let retries: Vec<_> = events.iter().filter(|e| e["event"] == "retry").collect();
    assert_eq!(retries.len(), 3, "{events:?}");
    assert!(
        retries
            .iter()
            .any(|e| e["delay_ms"] == 1000 && e["reason"].as_str().unwrap().contains("429"))
    );
    assert_eq!(proxy.fired(), vec![2, 1, 1, 1]);
    assert_eq!(
        b.ok(&["inspect", "--format", "digest", &dest]),
        a.ok(&["inspect", "--format", "digest", "busybox"])
    );
    assert_store_whole(&b);
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused_and_nothing_is_stored() {
    if !tools_or_skip("a_blob_that_does_not_match_its_digest_is_refused_and_nothing_is_stored") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let a = TestStore::with_busybox();
    a.ok(&[
        "push",
        "busybox",
        &format!("{}/faults/corrupt:v1", registry.host),
    ]);
    let layer = Store::open(a.root())
        .unwrap()
        .resolve_image("busybox")
        .unwrap()
        .manifest
        .layers()[0]
        .digest()
        .to_string();
    let proxy = FaultProxy::start(
        &registry.host,
        vec![Rule::new(
            "GET",
            format!("/blobs/{layer}"),
            0,
            Fault::Corrupt,
        )],
    );
    let s = TestStore::new();
    let err = s.fails(&["pull", &format!("{}/faults/corrupt:v1", proxy.host)]);
    assert!(
        err.contains(&layer) && err.contains("does not match its digest"),
        "{err}"
    );
    let st = Store::open(s.root()).unwrap();
    assert!(
        !st.has_blob(&layerfs::digest::parse_sha256(&layer).unwrap()),
        "the bad blob is not stored"
    );
    assert!(st.records().unwrap().is_empty(), "nothing is tagged");
    assert_eq!(
        std::fs::read_dir(s.root().join("layers")).unwrap().count(),
        0,
        "no layer was installed"
    );
    assert_store_whole(&s);
}

#[test]
fn push_falls_back_when_the_registry_refuses_an_upload_style() {
    if !tools_or_skip("push_falls_back_when_the_registry_refuses_an_upload_style") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let a = TestStore::with_busybox();
    // No streamed PATCH (without Content-Range), then no PATCH at all.
    let mut streamed = Rule::new(
        "PATCH",
        "/blobs/uploads/",
        0,
        Fault::Status {
            code: 416,
            retry_after: None,
        },
    );
    streamed.without_header = Some("content-range");
    let proxy = FaultProxy::start(&registry.host, vec![streamed]);
    let dest = format!("{}/styles/chunked:v1", proxy.host);
    let out = a.output(&["push", "--progress", "plain", "busybox", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("using chunked uploads"));
    assert!(proxy.log().iter().any(|l| l.starts_with("PATCH")));
    let local = a
        .ok(&["inspect", "--format", "digest", "busybox"])
        .trim()
        .to_owned();
    assert_eq!(
        skopeo_digest(&format!("{}/styles/chunked:v1", registry.host), None),
        local
    );

    let no_patch = FaultProxy::start(
        &registry.host,
        vec![Rule::new(
            "PATCH",
            "/blobs/uploads/",
            0,
            Fault::Status {
                code: 405,
                retry_after: None,
            },
        )],
    );
    let dest = format!("{}/styles/monolithic:v1", no_patch.host);
    let out = a.output(&["push", "--progress", "plain", "busybox", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("using monolithic uploads"));
    assert_eq!(
        skopeo_digest(&format!("{}/styles/monolithic:v1", registry.host), None),
        local
    );

    // A copy from another registry falls back the same way; its chunks come from the spool.
    let other = TestRegistry::start(RegistryAuth::Anonymous);
    let mut streamed = Rule::new(
        "PATCH",
        "/blobs/uploads/",
        0,
        Fault::Status {
            code: 416,
            retry_after: None,
        },
    );
    streamed.without_header = Some("content-range");
    let chunked_only = FaultProxy::start(&other.host, vec![streamed]);
    let out = a.output(&[
        "copy",
        "--progress",
        "plain",
        &format!("docker://{}/styles/chunked:v1", registry.host),
        &format!("docker://{}/copied/chunked:v1", chunked_only.host),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("using chunked uploads"));
    assert_eq!(
        skopeo_digest(&format!("{}/copied/chunked:v1", other.host), None),
        local
    );
    assert_store_whole(&a);
}

#[test]
fn clear_errors_for_bad_references_unknown_images_and_unreachable_registries() {
    if !tools_or_skip("clear_errors_for_bad_references_unknown_images_and_unreachable_registries") {
        return;
    }
    let s = TestStore::with_busybox();
    let err = s.fails(&["pull", "Not/Valid:ref"]);
    assert!(err.contains("invalid image reference"), "{err}");
    let port = server::free_port();
    let started = Instant::now();
    let err = s.fails(&["pull", &format!("127.0.0.1:{port}/nothing/here:v1")]);
    assert!(
        err.contains(&format!("cannot reach 127.0.0.1:{port}")) && err.contains("nothing/here"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up quickly"
    );
    let err = s.fails(&[
        "push",
        "no-such-local-image",
        &format!("127.0.0.1:{port}/x:v1"),
    ]);
    assert!(err.contains("no-such-local-image"), "{err}");

    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let err = s.fails(&["pull", &format!("{}/absent/image:v9", registry.host)]);
    assert!(
        err.contains("not found") && err.contains("absent/image"),
        "{err}"
    );
    s.ok(&[
        "push",
        "busybox",
        &format!("{}/single/platform:v1", registry.host),
    ]);
    let err = s.fails(&[
        "pull",
        "--platform",
        "linux/mips64le",
        &format!("{}/single/platform:v1", registry.host),
    ]);
    assert!(err.contains("linux/mips64le"), "{err}");
    assert_store_whole(&s);
}

#[test]
fn a_loopback_registry_with_its_own_certificate_is_spoken_to_over_https() {
    if !tools_or_skip("a_loopback_registry_with_its_own_certificate_is_spoken_to_over_https") {
        return;
    }
    let registry = TestRegistry::start_with(RegistryAuth::Anonymous, true);
    let a = TestStore::with_busybox();
    let dest = format!("{}/tls/busybox:v1", registry.host);
    a.ok(&["push", "busybox", &dest]);
    let local = a.ok(&["inspect", "--format", "digest", "busybox"]);
    // The registry speaks only TLS: skopeo reaching it over https sees what strata pushed.
    assert_eq!(skopeo_digest(&dest, None), local.trim());
    let b = TestStore::new();
    b.ok(&["pull", &dest]);
    assert_eq!(b.ok(&["inspect", "--format", "digest", &dest]), local);
    assert_store_whole(&b);
}

#[test]
fn an_image_listing_the_same_layer_twice_downloads_it_once() {
    if !tools_or_skip("an_image_listing_the_same_layer_twice_downloads_it_once") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let dir = tempfile::tempdir().unwrap();
    let same = vec![("data/same.bin".to_owned(), layout::noise(300 << 10, 7))];
    let image = layout::Image {
        architecture: layerfs::config::host_architecture(),
        variant: None,
        layers: vec![
            same.clone(),
            vec![("other".to_owned(), b"x".to_vec())],
            same,
        ],
    };
    let digest = layout::write_layout(dir.path(), "v1", &[image]);
    skopeo_push(
        dir.path(),
        "v1",
        &format!("{}/twice/same:v1", registry.host),
        false,
    );
    let proxy = FaultProxy::start(&registry.host, vec![]);
    let s = TestStore::new();
    let reference = format!("{}/twice/same:v1", proxy.host);
    s.ok(&["pull", &reference]);
    assert_eq!(
        s.ok(&["inspect", "--format", "digest", &reference]).trim(),
        digest
    );
    let blob_gets = proxy
        .log()
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("/blobs/"))
        .count();
    assert_eq!(
        blob_gets,
        3,
        "config and two distinct layers: {:?}",
        proxy.log()
    );
    let st = Store::open(s.root()).unwrap();
    let img = st.resolve_image(&reference).unwrap();
    assert_eq!(img.chain_ids().len(), 3);
    for chain in img.chain_ids() {
        assert!(st.layer_record(&chain).is_some(), "layer {chain} extracted");
    }
    assert_store_whole(&s);
}

/// `--cache-to`/`--cache-from` (buildx's registry cache, in strata's own format): a build
/// pushes its steps' cache entries; a fresh store (a new CI machine) building the same context
/// with `--cache-from` takes every step from it (all CACHED, the same image id); a changed
/// step runs again from there; a cache that is not there is a warning, not a failure.
#[test]
fn a_registry_cache_makes_a_fresh_machines_build_cached() {
    if !tools_or_skip("a_registry_cache_makes_a_fresh_machines_build_cached")
        || !is_root_or_skip("a_registry_cache_makes_a_fresh_machines_build_cached")
    {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let cache = format!("{}/team/app:buildcache", registry.host);
    // The base comes from the registry, as on CI machines: the same digest everywhere, so the
    // same step keys.
    let base = format!("{}/base/busybox:v1", registry.host);
    TestStore::with_busybox().ok(&["push", "busybox", &base]);
    let build = |s: &TestStore, extra: &[&str]| -> String {
        let context = s.path("context");
        let mut args = vec!["build", "--progress", "plain", "-t", "app"];
        args.extend_from_slice(extra);
        args.push(context.to_str().unwrap());
        let out = s.output(&args);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        log
    };
    let machine = |greeting: &str| {
        let s = TestStore::new();
        let context = s.path("context");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("greeting.txt"), greeting).unwrap();
        std::fs::write(
            context.join("Dockerfile"),
            format!(
                "FROM {base}\nRUN echo one > /one\nRUN echo two > /two\n\
                 COPY greeting.txt /greeting.txt\n"
            ),
        )
        .unwrap();
        s
    };
    let first = machine("hello\n");
    let log = build(
        &first,
        &["--cache-to", &format!("type=registry,ref={cache}")],
    );
    assert!(
        log.contains("cache exported to") && log.contains("(3 steps)"),
        "{log}"
    );
    let id = first.ok(&["inspect", "--format", "id", "app"]);

    let fresh = machine("hello\n");
    let log = build(
        &fresh,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    for step in 2..=4 {
        assert!(
            log.contains(&format!("#{step} CACHED")),
            "step {step}: {log}"
        );
    }
    assert_eq!(fresh.ok(&["inspect", "--format", "id", "app"]), id);
    assert_eq!(
        fresh.ok(&["run", "--rm", "app", "cat", "/two", "/greeting.txt"]),
        "two\nhello\n"
    );
    fresh.ok(&["fsck"]);

    let changed = machine("changed\n");
    let log = build(&changed, &["--cache-from", &cache]);
    assert!(
        log.contains("#2 CACHED") && log.contains("#3 CACHED") && !log.contains("#4 CACHED"),
        "{log}"
    );
    assert_eq!(
        changed.ok(&["run", "--rm", "app", "cat", "/greeting.txt"]),
        "changed\n"
    );

    let missing = format!("{}/no/cache:here", registry.host);
    let log = build(&machine("x\n"), &["--cache-from", &missing]);
    assert!(
        log.contains(&format!("warning: --cache-from {missing}")) && !log.contains("#2 CACHED"),
        "{log}"
    );
}

#[test]
fn build_pulls_its_base_image_and_pushes_with_push() {
    if !tools_or_skip("build_pulls_its_base_image_and_pushes_with_push")
        || !is_root_or_skip("build_pulls_its_base_image_and_pushes_with_push")
    {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let host = registry.host.as_str();
    let a = TestStore::with_busybox();
    a.ok(&["push", "busybox", &format!("{host}/base/busybox:v1")]);
    let b = TestStore::new();
    let context = b.path("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("greeting.txt"), "hello from the registry\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {host}/base/busybox:v1\nCOPY greeting.txt /greeting.txt\n"),
    )
    .unwrap();
    let app = format!("{host}/team/app:v1");
    let out = b.output(&[
        "build",
        "--progress",
        "plain",
        "--push",
        "-t",
        &app,
        context.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("mounted from base/busybox"), "{stderr}");
    // The base came from the registry; the image went back, its base layer mounted.
    assert_eq!(
        b.ok(&[
            "inspect",
            "--format",
            "digest",
            &format!("{host}/base/busybox:v1")
        ]),
        a.ok(&["inspect", "--format", "digest", "busybox"])
    );
    let digest = b.ok(&["inspect", "--format", "digest", &app]);
    assert_eq!(skopeo_digest(&app, None), digest.trim());
    let c = TestStore::new();
    c.ok(&["pull", &app]);
    assert_eq!(
        run_in_image(&c, &app, &["/bin/cat", "/greeting.txt"]),
        "hello from the registry\n"
    );
    let err = b.fails(&["build", "--push", context.to_str().unwrap()]);
    assert!(err.contains("--push needs"), "{err}");
}

/// `strata run` of an image the store does not have pulls it first (`--pull missing`, docker's
/// and podman's default); `--pull never` refuses, naming the image; `--pull always` pulls a
/// tag again and runs what it names now.
#[test]
fn run_pulls_a_missing_image_as_docker_does() {
    let test = "run_pulls_a_missing_image_as_docker_does";
    if !tools_or_skip(test) || !is_root_or_skip(test) {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let image = format!("{}/tools/box:v1", registry.host);
    let a = TestStore::with_busybox();
    let digestfile = a.path("digest");
    a.ok(&[
        "push",
        "--digestfile",
        digestfile.to_str().unwrap(),
        "busybox",
        &image,
    ]);
    assert_eq!(
        std::fs::read_to_string(&digestfile).unwrap(),
        a.ok(&["inspect", "--format", "digest", "busybox"]).trim(),
        "--digestfile holds the pushed manifest's digest"
    );

    let b = TestStore::new();
    let err = b.fails(&["run", "--rm", "--pull", "never", &image, "true"]);
    assert!(err.contains("tools/box:v1"), "names the image: {err}");
    let out = b.output(&["run", "--rm", &image, "echo", "pulled and ran"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled and ran\n");
    assert!(stderr.contains("pulled"), "the pull is shown: {stderr}");
    // Present now: the next run does not pull.
    let out = b.output(&["run", "--rm", &image, "true"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("pulled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The tag moves on the registry: `--pull always` runs the new image.
    let ctx = a.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo second > /which\n",
    )
    .unwrap();
    a.ok(&["build", "-t", &image, ctx.to_str().unwrap()]);
    a.ok(&["push", &image]);
    let stale = b.output(&["run", "--rm", &image, "cat", "/which"]);
    assert!(!stale.status.success(), "the store still has the old image");
    let fresh = b.output(&["run", "--rm", "--pull", "always", &image, "cat", "/which"]);
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&fresh.stdout), "second\n");
    assert_store_whole(&b);
}

/// `build --pull` pulls the base again even though the store has it, once per build, and
/// builds on what the tag names now; without it the store's copy (and the cache) is used.
#[test]
fn build_pull_builds_on_what_the_tag_names_now() {
    let test = "build_pull_builds_on_what_the_tag_names_now";
    if !tools_or_skip(test) || !is_root_or_skip(test) {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let base = format!("{}/base/moving:v1", registry.host);
    let a = TestStore::with_busybox();
    a.ok(&["push", "busybox", &base]);

    let b = TestStore::new();
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nRUN (cat /which 2>/dev/null || echo first) > /seen\n\
             FROM {base}\nCOPY --from=0 /seen /seen\n"
        ),
    )
    .unwrap();
    let seen = |args: &[&str]| -> String {
        let mut all = vec!["build", "--progress", "plain", "-t", "app"];
        all.extend_from_slice(args);
        all.push(ctx.to_str().unwrap());
        let out = b.output(&all);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        run_in_image(&b, "app", &["cat", "/seen"])
    };
    assert_eq!(seen(&[]), "first\n");

    let next = a.path("next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(
        next.join("Dockerfile"),
        "FROM busybox\nRUN echo second > /which\n",
    )
    .unwrap();
    a.ok(&["build", "-t", &base, next.to_str().unwrap()]);
    a.ok(&["push", &base]);

    assert_eq!(
        seen(&[]),
        "first\n",
        "without --pull the store's base is used"
    );
    let mut all = vec!["build", "--progress", "plain", "--pull", "-t", "app"];
    all.push(ctx.to_str().unwrap());
    let out = b.output(&all);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        log.matches("/base/moving:v1 (linux/").count(),
        1,
        "two FROMs of one image, one pull: {log}"
    );
    assert_eq!(run_in_image(&b, "app", &["cat", "/seen"]), "second\n");
    assert_store_whole(&b);
}
