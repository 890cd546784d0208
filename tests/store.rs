//! End to end: the store and the image commands (import, images, inspect, tag, rmi, save, load,
//! prune, fsck), and interop with skopeo, umoci and oci-image-tool on the same files.

mod common;

use std::fs;
use std::path::Path;

use common::{TestStore, have_or_skip, is_root_or_skip, sh};

/// A fingerprint of a directory tree: every entry's type, mode, owner, size, mtime and link
/// target, and every file's content hash.
fn fingerprint(dir: &Path) -> String {
    let d = dir.display();
    sh(&format!(
        "cd '{d}' && find . -mindepth 1 -printf '%p %y %m %U:%G %s %T@ %l\\n' | sort && \
         find . -type f -print0 | sort -z | xargs -0r sha256sum"
    ))
}

/// The id (config digest) of `image` in the store.
fn image_id(s: &TestStore, image: &str) -> String {
    s.ok(&["inspect", "--format", "id", image])
        .trim()
        .to_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn import_then_images_inspect_tag_rmi() {
    if !is_root_or_skip("import_then_images_inspect_tag_rmi") {
        return;
    }
    let s = TestStore::with_busybox();
    let id = image_id(&s, "busybox");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // The id is the digest of the config blob, which is what `inspect` prints by default.
    let config = json(&s.ok(&["inspect", "docker.io/library/busybox:latest"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    let blob = fs::read(s.root().join("blobs/sha256").join(&id[7..])).unwrap();
    assert_eq!(json(&String::from_utf8(blob).unwrap()), config);
    let digest = s
        .ok(&["inspect", "--format", "digest", "busybox"])
        .trim()
        .to_owned();
    let manifest = json(&s.ok(&["inspect", "--format", "manifest", "busybox"]));
    assert_eq!(manifest["config"]["digest"], id.as_str());
    // By id prefix and by digest too.
    assert_eq!(
        s.ok(&["inspect", "--format", "digest", &id[7..19]]).trim(),
        digest
    );
    assert_eq!(image_id(&s, &format!("busybox@{digest}")), id);

    s.ok(&["tag", "busybox", "localhost:5000/mine:v1"]);
    // Go templates over docker's inspect fields, as `docker inspect --format`.
    let template = |t: &str| s.ok(&["inspect", "--format", t, "busybox"]);
    assert_eq!(template("{{.Id}}"), format!("{id}\n"));
    assert_eq!(
        template("{{json .RepoTags}}"),
        "[\"busybox:latest\",\"localhost:5000/mine:v1\"]\n"
    );
    assert_eq!(
        template("{{index .RepoDigests 0}} {{.Os}} {{len .RootFS.Layers}}"),
        format!("busybox@{digest} linux 1\n")
    );
    assert_eq!(
        template("{{range .Config.Env}}{{println .}}{{end}}"),
        format!("{}\n\n", config["config"]["Env"][0].as_str().unwrap())
    );
    let err = s.fails(&["inspect", "-f", "{{.Id", "busybox"]);
    assert!(
        err.contains("{{.Id") && err.contains("never closed"),
        "{err}"
    );
    let err = s.fails(&["inspect", "--format", "yaml", "busybox"]);
    assert!(err.contains("\"yaml\" is none of"), "{err}");
    let list = json(&s.ok(&["images", "--format", "json"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["docker.io/library/busybox:latest", "localhost:5000/mine:v1"]
    );
    // A repository, or one tag of it, as `docker images REPOSITORY[:TAG]` takes it.
    s.ok(&["tag", "busybox", "localhost:5000/mine:v2"]);
    let listed = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["images", "--format", "json"];
        args.extend(extra);
        json(&s.ok(&args))
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        listed(&["localhost:5000/mine"]),
        ["localhost:5000/mine:v1", "localhost:5000/mine:v2"]
    );
    assert_eq!(
        listed(&["localhost:5000/mine:v2"]),
        ["localhost:5000/mine:v2"]
    );
    assert_eq!(listed(&["busybox"]), ["docker.io/library/busybox:latest"]);
    assert!(listed(&["nothing-here"]).is_empty());
    // Several names at once.
    s.ok(&["tag", "busybox", "x/one:1", "x/two:2"]);
    assert_eq!(listed(&["x/one"]), ["docker.io/x/one:1"]);
    assert_eq!(listed(&["x/two"]), ["docker.io/x/two:2"]);
    // --filter, as docker's.
    assert_eq!(
        listed(&["-f", "reference=x/*"]),
        ["docker.io/x/one:1", "docker.io/x/two:2"]
    );
    assert_eq!(
        listed(&["-f", "reference=busybox", "-f", "reference=x/t?o:2"]),
        ["docker.io/library/busybox:latest", "docker.io/x/two:2"]
    );
    assert_eq!(
        listed(&["-f", "dangling=false", "-f", "reference=x/one"]),
        ["docker.io/x/one:1"]
    );
    assert!(listed(&["-f", "dangling=true"]).is_empty());
    assert!(listed(&["-f", "label=no.such.label"]).is_empty());
    assert_eq!(
        s.ok(&["images", "-q", "-f", "reference=x/*"]),
        format!("{}\n", &id[7..19])
    );
    let err = s.fails(&["images", "--filter", "color=red"]);
    assert!(err.contains("--filter color=red"), "{err}");
    s.ok(&["rmi", "x/one:1", "x/two:2"]);
    s.ok(&["rmi", "localhost:5000/mine:v2"]);
    let table = s.ok(&["images"]);
    assert!(
        table.contains("busybox")
            && table.contains("localhost:5000/mine")
            && table.contains(&id[7..19]),
        "{table}"
    );
    // `-q`: each image's id once, however many names it has (here two).
    assert_eq!(s.ok(&["images", "-q"]), format!("{}\n", &id[7..19]));
    assert_eq!(
        s.ok(&["images", "--quiet", "--no-trunc"]),
        format!("{id}\n")
    );
    assert!(s.ok(&["images", "--no-trunc"]).contains(&id));
    let with_digests = s.ok(&["images", "--digests"]);
    assert!(
        with_digests.starts_with("REPOSITORY") && with_digests.contains("DIGEST"),
        "{with_digests}"
    );
    assert!(
        with_digests.contains(&format!("{digest} {}", &id[7..19])),
        "{with_digests}"
    );

    // rmi by name drops just that name; the image stays under its other name.
    assert_eq!(s.ok(&["rmi", "busybox"]).trim(), "Untagged: busybox:latest");
    assert_eq!(image_id(&s, "localhost:5000/mine:v1"), id);
    let err = s.fails(&["inspect", "busybox"]);
    assert!(err.contains("busybox"), "{err}");
    let out = s.ok(&["rmi", "localhost:5000/mine:v1"]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    // prune drops what no image needs; fsck is clean afterwards.
    let pruned = s.ok(&["prune"]);
    assert!(
        pruned.contains("3 blob(s)") && pruned.contains("1 extracted layer(s)"),
        "{pruned}"
    );
    assert_eq!(
        fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
        0
    );
    s.ok(&["fsck"]);
}

#[test]
fn bad_names_and_missing_images_are_named_in_errors() {
    let s = TestStore::new();
    let err = s.fails(&["inspect", "Not/Valid:"]);
    assert!(err.contains("Not/Valid:"), "{err}");
    let err = s.fails(&["inspect", "nothere:v1"]);
    assert!(err.contains("nothere:v1"), "{err}");
    let err = s.fails(&["import", "/no/such/rootfs.tar", "x"]);
    assert!(err.contains("/no/such/rootfs.tar"), "{err}");
}

#[test]
fn skopeo_and_umoci_read_the_store_directly() {
    if !is_root_or_skip("skopeo_and_umoci_read_the_store_directly")
        || !have_or_skip("skopeo", "skopeo_and_umoci_read_the_store_directly")
        || !have_or_skip("umoci", "skopeo_and_umoci_read_the_store_directly")
    {
        return;
    }
    let s = TestStore::with_busybox();
    let root = s.root();
    let name = "docker.io/library/busybox:latest";
    let digest = s
        .ok(&["inspect", "--format", "digest", "busybox"])
        .trim()
        .to_owned();
    let info = json(&sh(&format!(
        "skopeo inspect oci:{}:{name}",
        root.display()
    )));
    assert_eq!(info["Digest"], digest.as_str());
    let archive = s.path("skopeo.tar");
    sh(&format!(
        "skopeo copy -q oci:{}:{name} oci-archive:{}:copied",
        root.display(),
        archive.display()
    ));
    assert!(archive.metadata().unwrap().len() > 100_000);
    let bundle = s.path("bundle");
    sh(&format!(
        "umoci unpack --image {}:{name} {}",
        root.display(),
        bundle.display()
    ));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
}

#[test]
fn saved_oci_archive_passes_oci_image_tool_and_umoci() {
    if !is_root_or_skip("saved_oci_archive_passes_oci_image_tool_and_umoci")
        || !have_or_skip(
            "oci-image-tool",
            "saved_oci_archive_passes_oci_image_tool_and_umoci",
        )
        || !have_or_skip("umoci", "saved_oci_archive_passes_oci_image_tool_and_umoci")
    {
        return;
    }
    let s = TestStore::with_busybox();
    let archive = s.path("img.tar");
    s.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        "busybox",
    ]);
    // oci-image-tool 1.0.0-rc1 cannot walk tar files (skopeo's archives fail the same way),
    // so validate the layout the archive holds.
    let layout = s.path("layout");
    fs::create_dir(&layout).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        archive.display(),
        layout.display()
    ));
    let out = sh(&format!(
        "cd {} && oci-image-tool validate --type image --ref name=latest . 2>&1",
        layout.display()
    ));
    assert!(out.contains("Validation succeeded"), "{out}");
    let bundle = s.path("bundle");
    sh(&format!(
        "umoci unpack --image {}:latest {}",
        layout.display(),
        bundle.display()
    ));
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/etc/group"))
            .unwrap()
            .lines()
            .next(),
        Some("root:x:0:")
    );
    // The oci-dir format is the same layout, written directly.
    let dir = s.path("dir");
    s.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        "busybox",
    ]);
    let out = sh(&format!(
        "cd {} && oci-image-tool validate --type image --ref name=latest . 2>&1",
        dir.display()
    ));
    assert!(out.contains("Validation succeeded"), "{out}");
}

#[test]
fn load_takes_what_skopeo_writes_and_the_rootfs_matches_byte_for_byte() {
    if !is_root_or_skip("load_takes_what_skopeo_writes_and_the_rootfs_matches_byte_for_byte")
        || !have_or_skip(
            "skopeo",
            "load_takes_what_skopeo_writes_and_the_rootfs_matches_byte_for_byte",
        )
    {
        return;
    }
    let src = TestStore::with_busybox();
    let id = image_id(&src, "busybox");
    let layer = |s: &TestStore| {
        let layers = fs::read_dir(s.root().join("layers"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect::<Vec<_>>();
        assert_eq!(layers.len(), 1, "{layers:?}");
        fingerprint(&layers[0].join("diff"))
    };
    let want = layer(&src);
    let name = "docker.io/library/busybox:latest";
    for (transport, file) in [("docker-archive", "d.tar"), ("oci-archive", "o.tar")] {
        let path = src.path(file);
        let dest = match transport {
            "docker-archive" => format!("docker-archive:{}:busybox:latest", path.display()),
            _ => format!("oci-archive:{}:{name}", path.display()),
        };
        sh(&format!(
            "skopeo copy -q oci:{}:{name} {dest}",
            src.root().display()
        ));
        let dst = TestStore::new();
        let out = dst.ok(&["load", "-i", path.to_str().unwrap()]);
        assert!(out.contains("busybox:latest"), "{transport}: {out}");
        assert_eq!(image_id(&dst, "busybox"), id, "{transport}");
        assert_eq!(layer(&dst), want, "{transport}: the loaded rootfs differs");
        dst.ok(&["fsck"]);
    }
}

#[test]
fn save_load_round_trip_in_every_format() {
    if !is_root_or_skip("save_load_round_trip_in_every_format") {
        return;
    }
    let src = TestStore::with_busybox();
    src.ok(&["tag", "busybox", "example.com/team/app:1.0"]);
    let id = image_id(&src, "busybox");
    for format in ["docker-archive", "oci-archive", "oci-dir"] {
        let out = src.path(format);
        src.ok(&[
            "save",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            "example.com/team/app:1.0",
        ]);
        let dst = TestStore::new();
        let loaded = dst.ok(&["load", "-i", out.to_str().unwrap()]);
        assert_eq!(
            loaded.trim(),
            "Loaded image: example.com/team/app:1.0",
            "{format}"
        );
        assert_eq!(image_id(&dst, "example.com/team/app:1.0"), id);
        dst.ok(&["fsck"]);
    }
}

/// `save` without `-o` writes to stdout and `load` without `-i` reads stdin, as docker's do:
/// `save > x.tar`, `save | gzip`, `load < x.tar`, `cat x.tar | load`; a truncated archive on a
/// pipe fails naming stdin and leaves nothing in tmp; an OCI layout dir cannot be a stream.
#[test]
fn save_to_stdout_and_load_from_stdin_as_docker_does() {
    if !is_root_or_skip("save_to_stdout_and_load_from_stdin_as_docker_does") {
        return;
    }
    let src = TestStore::with_busybox();
    let id = image_id(&src, "busybox");
    let strata = common::strata_bin();
    let root = |s: &TestStore| s.root().display().to_string();
    let docker = src.path("saved.tar");
    let oci = src.path("saved-oci.tar.gz");
    sh(&format!(
        "{bin} --root {r} save busybox > {docker} && \
         {bin} --root {r} save --format oci-archive -o - busybox | gzip > {oci}",
        bin = strata.display(),
        r = root(&src),
        docker = docker.display(),
        oci = oci.display()
    ));
    for (feed, load) in [
        (String::new(), format!("load < {}", docker.display())),
        (String::new(), format!("load -i - < {}", docker.display())),
        (format!("zcat {} |", oci.display()), "load".to_owned()),
    ] {
        let dst = TestStore::new();
        let out = sh(&format!(
            "{feed} {bin} --root {r} {load}",
            bin = strata.display(),
            r = root(&dst)
        ));
        assert_eq!(out.trim(), "Loaded image: busybox:latest", "{load}");
        assert_eq!(image_id(&dst, "busybox"), id, "{load}");
        dst.ok(&["fsck"]);
    }

    let dst = TestStore::new();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 100000 {} | {} --root {} load",
            docker.display(),
            strata.display(),
            root(&dst)
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stdin"), "{err}");
    assert_eq!(dst.ok(&["images", "--format", "json"]).trim(), "[]");
    let tmp = dst.root().join("tmp");
    assert!(
        !tmp.exists() || fs::read_dir(&tmp).unwrap().next().is_none(),
        "left in tmp"
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --root {} save --format oci-dir busybox | cat",
            strata.display(),
            root(&src)
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be written to a stream"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `export IMAGE` writes the image's files as one tar, to a file or to stdout (the same bytes),
/// and `import` of that tar gives back a layer with the same diff id.
#[test]
fn export_writes_the_files_as_a_tar_that_import_takes_back() {
    if !is_root_or_skip("export_writes_the_files_as_a_tar_that_import_takes_back") {
        return;
    }
    let s = TestStore::with_busybox();
    let file = s.path("rootfs.tar");
    s.ok(&["export", "busybox", "-o", file.to_str().unwrap()]);
    let listed = sh(&format!("tar -tf {}", file.display()));
    assert!(listed.lines().any(|l| l == "bin/busybox"), "{listed}");
    let out = s.output(&["export", "busybox"]);
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        fs::read(&file).unwrap(),
        "the same tar on stdout"
    );
    s.ok(&["import", file.to_str().unwrap(), "again"]);
    let layers = |image: &str| s.ok(&["inspect", "--format", "{{json .RootFS.Layers}}", image]);
    assert_eq!(layers("again"), layers("busybox"));
    let err = s.fails(&["export", "no-such-image"]);
    assert!(err.contains("no-such-image"), "{err}");
}

/// `save` of several images (as `docker save` takes them): one archive with every name, each
/// blob they share written once, in every format; `load` gives back every name with the same
/// ids, and skopeo picks one image of the OCI archive by its tag.
#[test]
fn save_writes_several_images_sharing_their_blobs_once() {
    if !is_root_or_skip("save_writes_several_images_sharing_their_blobs_once") {
        return;
    }
    let src = TestStore::with_busybox();
    let ctx = src.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY f /f\n").unwrap();
    fs::write(ctx.join("f"), "on top of busybox\n").unwrap();
    src.ok(&["build", "-t", "example.com/app:2.0", ctx.to_str().unwrap()]);
    src.ok(&["tag", "busybox", "example.com/base:1.0"]);
    let names = ["example.com/base:1.0", "busybox", "example.com/app:2.0"];
    let id = |s: &TestStore, name: &str| s.ok(&["inspect", "--format", "id", name]);
    // busybox's manifest, config and layer; the app's manifest, config and its one new layer.
    let blobs = 6;
    for format in ["docker-archive", "oci-archive", "oci-dir"] {
        let out = src.path(format);
        let mut args = vec!["save", "--format", format, "-o", out.to_str().unwrap()];
        args.extend(names);
        src.ok(&args);
        let stored = match format {
            "docker-archive" => sh(&format!("tar tf {} | grep -c layer.tar$", out.display())),
            "oci-archive" => sh(&format!(
                "tar tf {} | grep -c '^blobs/sha256/.'",
                out.display()
            )),
            _ => sh(&format!("ls {}/blobs/sha256 | wc -l", out.display())),
        };
        let expected = if format == "docker-archive" { 2 } else { blobs };
        assert_eq!(stored.trim(), expected.to_string(), "{format}");
        let dst = TestStore::new();
        let loaded = dst.ok(&["load", "-i", out.to_str().unwrap()]);
        for name in names {
            let shown = name
                .strip_prefix("example.com/")
                .map_or("busybox:latest".to_owned(), |_| name.to_owned());
            assert!(loaded.contains(&shown), "{format}: {shown} in {loaded}");
            assert_eq!(id(&dst, name), id(&src, name), "{format}: {name}");
        }
        dst.ok(&["fsck"]);
    }
    if have_or_skip(
        "skopeo",
        "save_writes_several_images_sharing_their_blobs_once",
    ) {
        let archive = src.path("oci-archive");
        let inspected = json(&sh(&format!(
            "skopeo inspect oci-archive:{}:2.0",
            archive.display()
        )));
        assert_eq!(
            inspected["Digest"].as_str().unwrap(),
            src.ok(&["inspect", "--format", "digest", "example.com/app:2.0"])
                .trim()
        );
    }
}

/// `info` tells what strata will use here: the store and what it holds, the storage driver
/// (from the environment too), the host's cgroups and kernel features.
#[test]
fn info_reports_the_store_the_driver_and_the_host() {
    if !is_root_or_skip("info_reports_the_store_the_driver_and_the_host") {
        return;
    }
    let s = TestStore::with_busybox();
    s.ok(&["tag", "busybox", "second:name"]);
    let info = json(&s.ok(&["info", "--format", "json"]));
    assert_eq!(info["root"], s.root().to_str().unwrap());
    assert_eq!(info["images"], 2);
    assert_eq!(info["blobs"], 3, "busybox's manifest, config and layer");
    assert_eq!(info["storage_driver"], "overlay");
    assert!(
        ["v1", "v2", "hybrid", "none"].contains(&info["cgroups"].as_str().unwrap()),
        "{info}"
    );
    assert_eq!(info["euid"], 0);
    let fuse = s
        .cmd(&["info", "--format", "json"])
        .env("STRATA_STORAGE_DRIVER", "fuse")
        .output()
        .unwrap();
    let fuse = json(&String::from_utf8_lossy(&fuse.stdout));
    assert_eq!(fuse["storage_driver"], "fuse");
    let table = s.ok(&["info"]);
    assert!(table.contains("2 images, 3 blobs"), "{table}");
}

#[test]
fn corrupt_blobs_are_reported_by_fsck_and_refused_by_load() {
    if !is_root_or_skip("corrupt_blobs_are_reported_by_fsck_and_refused_by_load") {
        return;
    }
    let s = TestStore::with_busybox();
    let manifest = json(&s.ok(&["inspect", "--format", "manifest", "busybox"]));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    // An OCI layout dir with one flipped byte in the layer blob.
    let dir = s.path("dir");
    s.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        "busybox",
    ]);
    let blob = dir.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let dst = TestStore::new();
    dst.ok(&["images"]);
    let index_before = fs::read(dst.root().join("index.json")).unwrap();
    let err = dst.fails(&["load", "-i", dir.to_str().unwrap()]);
    assert!(err.contains(&layer), "load must name the bad blob: {err}");
    assert_eq!(
        fs::read(dst.root().join("index.json")).unwrap(),
        index_before
    );
    assert_eq!(
        fs::read_dir(dst.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "a blob of a failed load is visible"
    );
    assert_eq!(fs::read_dir(dst.root().join("layers")).unwrap().count(), 0);

    // The same corruption inside the store: fsck names the blob and fails.
    let stored = s.root().join("blobs/sha256").join(&layer[7..]);
    fs::write(&stored, &bytes).unwrap();
    let out = s.output(&["fsck"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("blob {layer}")), "{stdout}");
}

#[test]
fn a_tampered_layer_dir_is_reported_by_fsck() {
    if !is_root_or_skip("a_tampered_layer_dir_is_reported_by_fsck") {
        return;
    }
    let s = TestStore::with_busybox();
    s.ok(&["fsck"]);
    let layer = fs::read_dir(s.root().join("layers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(layer.join("diff/etc/passwd"), b"root::0:0::/:/bin/sh\n").unwrap();
    let out = s.output(&["fsck"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/etc/passwd: content differs"), "{stdout}");
    // --repair drops the damaged dir; the next use extracts it again from the blob.
    s.ok(&["fsck", "--repair"]);
    let passwd = s.ok(&["run", "--rm", "busybox", "cat", "/etc/passwd"]);
    assert_eq!(passwd.lines().next(), Some("root:x:0:0:root:/root:/bin/sh"));
    s.ok(&["fsck"]);
}

#[test]
fn a_truncated_archive_fails_and_leaves_the_store_as_it_was() {
    if !is_root_or_skip("a_truncated_archive_fails_and_leaves_the_store_as_it_was") {
        return;
    }
    let src = TestStore::with_busybox();
    for format in ["docker-archive", "oci-archive"] {
        let full = src.path(&format!("{format}.tar"));
        src.ok(&[
            "save",
            "--format",
            format,
            "-o",
            full.to_str().unwrap(),
            "busybox",
        ]);
        let bytes = fs::read(&full).unwrap();
        let cut = src.path(&format!("{format}-cut.tar"));
        fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let dst = TestStore::with_busybox();
        let listing = |s: &TestStore| {
            sh(&format!(
                "cd {} && find . -path ./tmp -prune -o -print | sort",
                s.root().display()
            ))
        };
        let before = listing(&dst);
        let index = fs::read(dst.root().join("index.json")).unwrap();
        let err = dst.fails(&["load", "-i", cut.to_str().unwrap()]);
        assert!(
            err.contains(cut.to_str().unwrap()) && err.contains("truncated"),
            "{format}: {err}"
        );
        assert_eq!(listing(&dst), before, "{format}: the store changed");
        assert_eq!(fs::read(dst.root().join("index.json")).unwrap(), index);
    }
}

/// As docker: `rmi ID` removes every name of an image when they are tags of one repository,
/// and refuses (naming them) without `-f` when they are in several; `-f` removes them all.
#[test]
fn rmi_by_id_needs_force_when_the_image_is_named_in_several_repositories() {
    if !is_root_or_skip("rmi_by_id_needs_force_when_the_image_is_named_in_several_repositories") {
        return;
    }
    let s = TestStore::with_busybox();
    let id = image_id(&s, "busybox");
    s.ok(&["tag", "busybox", "busybox:v1"]);
    let out = s.ok(&["rmi", &id[7..19]]);
    assert!(
        out.contains("Untagged: busybox:latest")
            && out.contains("Untagged: busybox:v1")
            && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );

    let s = TestStore::with_busybox();
    let id = image_id(&s, "busybox");
    s.ok(&["tag", "busybox", "example.com/team/tool:1"]);
    let err = s.fails(&["rmi", &id]);
    assert!(
        err.contains("must be forced")
            && err.contains("busybox:latest")
            && err.contains("example.com/team/tool:1"),
        "{err}"
    );
    // Nothing was removed.
    assert_eq!(image_id(&s, "busybox"), id);
    assert_eq!(image_id(&s, "example.com/team/tool:1"), id);
    let out = s.ok(&["rmi", "-f", &id]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    s.fails(&["inspect", "busybox"]);
}
