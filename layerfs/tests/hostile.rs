//! Hostile layer tars: each attack is refused or confined, checked on the host filesystem.

mod support;

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use layerfs::Error;
use layerfs::layer::apply::{ApplyOptions, Target, apply};
use support::{Raw, raw_tar};

struct Scene {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    /// A host directory outside the root that attacks aim at.
    outside: std::path::PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"original").unwrap();
    Scene {
        _tmp: tmp,
        root,
        outside,
    }
}

fn run(s: &Scene, entries: &[Raw<'_>], target: Target) -> Result<(), Error> {
    apply(
        Cursor::new(raw_tar(entries)),
        &s.root,
        &ApplyOptions::for_this_process(target),
    )
    .map(drop)
}

fn outside_untouched(s: &Scene) {
    let names: Vec<_> = fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["victim"], "something was written outside the root");
    assert_eq!(fs::read(s.outside.join("victim")).unwrap(), b"original");
}

fn assert_hostile(r: Result<(), Error>, entry: &str) {
    match r {
        Err(Error::HostileEntry { entry: e, reason }) => {
            assert!(e.contains(entry), "error names {e:?}, wanted {entry:?}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a refusal naming {entry:?}, got {other:?}"),
    }
}

#[test]
fn dot_dot_is_refused_and_names_the_entry() {
    for target in [Target::LayerDir, Target::Rootfs] {
        let s = scene();
        let rel = format!("../outside/pwned-{target:?}");
        let r = run(&s, &[Raw::file(&rel, b"x")], target);
        assert_hostile(r, "../outside");
        outside_untouched(&s);
    }
}

#[test]
fn absolute_paths_are_confined_to_the_root() {
    let s = scene();
    let abs = format!("{}/pwned", s.outside.display());
    run(&s, &[Raw::file(&abs, b"x")], Target::Rootfs).unwrap();
    outside_untouched(&s);
    let inside = s.root.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"x");
}

#[test]
fn symlink_then_write_stays_inside() {
    for target in [Target::LayerDir, Target::Rootfs] {
        let s = scene();
        let out = s.outside.to_str().unwrap().to_owned();
        let inside = s.root.join(out.trim_start_matches('/'));
        // A link to a host directory: resolved in the root it dangles, so the write is refused.
        let r = run(
            &s,
            &[Raw::symlink("abs", &out), Raw::file("abs/pwned", b"x")],
            target,
        );
        assert!(r.is_err(), "{target:?}: {r:?}");
        outside_untouched(&s);
        // Once that path exists inside the root, the same link leads there: confined.
        fs::create_dir_all(&inside).unwrap();
        run(
            &s,
            &[Raw::symlink("abs2", &out), Raw::file("abs2/pwned", b"x")],
            target,
        )
        .unwrap();
        assert!(inside.join("pwned").is_file());
        // A relative link climbing above the root stops at the root.
        let deep = format!("rel{out}/pwned2");
        run(
            &s,
            &[
                Raw::symlink("rel", "../../../../../../.."),
                Raw::file(&deep, b"y"),
            ],
            target,
        )
        .unwrap();
        assert!(inside.join("pwned2").is_file());
        outside_untouched(&s);
    }
}

#[test]
fn a_file_entry_replaces_a_symlink_instead_of_writing_through_it() {
    let s = scene();
    let victim = s.outside.join("victim");
    run(
        &s,
        &[
            Raw::symlink("v", victim.to_str().unwrap()),
            Raw::file("v", b"overwritten?"),
        ],
        Target::Rootfs,
    )
    .unwrap();
    outside_untouched(&s);
    let md = s.root.join("v").symlink_metadata().unwrap();
    assert!(
        md.is_file(),
        "the symlink must have been replaced by the file"
    );
}

#[test]
fn hard_links_cannot_reach_outside() {
    let s = scene();
    let victim = s.outside.join("victim");
    let before = victim.metadata().unwrap().nlink();
    // An absolute target resolves inside the root, where it does not exist.
    let r = run(
        &s,
        &[Raw::hardlink("hl", victim.to_str().unwrap())],
        Target::LayerDir,
    );
    assert!(
        matches!(r, Err(Error::HostileEntry { .. }) | Err(Error::Io { .. })),
        "{r:?}"
    );
    // `..` in the target is refused outright.
    assert_hostile(
        run(
            &s,
            &[Raw::hardlink("hl2", "../outside/victim")],
            Target::LayerDir,
        ),
        "hl2",
    );
    // Through a symlink planted by the same tar: still inside.
    let r = run(
        &s,
        &[
            Raw::symlink("out", s.outside.to_str().unwrap()),
            Raw::hardlink("hl3", "out/victim"),
        ],
        Target::LayerDir,
    );
    assert!(r.is_err(), "{r:?}");
    assert_eq!(victim.metadata().unwrap().nlink(), before);
    outside_untouched(&s);
}

#[test]
fn bad_whiteouts_are_refused() {
    let s = scene();
    assert_hostile(run(&s, &[Raw::file(".wh..", b"")], Target::Rootfs), ".wh..");
    assert_hostile(
        run(&s, &[Raw::file("a/.wh.", b"")], Target::LayerDir),
        ".wh.",
    );
    outside_untouched(&s);
}

#[test]
fn whiteout_through_a_symlink_stays_inside() {
    let s = scene();
    run(
        &s,
        &[
            Raw::symlink("link", s.outside.to_str().unwrap()),
            Raw::file("link/.wh.victim", b""),
        ],
        Target::Rootfs,
    )
    .unwrap();
    outside_untouched(&s);
}

#[test]
fn devices_need_cap_mknod_and_modes_are_exactly_the_tars() {
    let s = scene();
    let mut dev = Raw::file("dev/sda", b"");
    dev.kind = tar::EntryType::Block;
    let mut suid = Raw::file("suid", b"x");
    suid.mode = 0o4755;
    let plain = Raw::file("plain", b"y");
    let tar = raw_tar(&[Raw::dir("dev"), dev, suid, plain]);
    let mut opts = ApplyOptions::for_this_process(Target::LayerDir);
    opts.mknod = false;
    let stats = apply(Cursor::new(tar), &s.root, &opts).unwrap();
    assert_eq!(stats.skipped_devices, 1);
    assert!(!s.root.join("dev/sda").exists());
    assert_eq!(
        fs::metadata(s.root.join("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(s.root.join("plain"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );
}

#[test]
fn overlay_xattrs_in_a_tar_are_dropped() {
    if !support::is_root_or_skip("overlay_xattrs_in_a_tar_are_dropped") {
        return;
    }
    let s = scene();
    let mut d = Raw::dir("d");
    d.pax = vec![
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.user.kept", b"1"),
    ];
    run(&s, &[d], Target::LayerDir).unwrap();
    let names: Vec<String> = layerfs::layer::diff::read_xattrs(&s.root.join("d"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(names, ["user.kept"]);
}

#[test]
fn a_failed_extraction_leaves_no_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = layerfs::store::Store::open(tmp.path().join("store")).unwrap();
    let tar = raw_tar(&[Raw::file("ok", b"fine"), Raw::file("../bad", b"evil")]);
    let diff_id = layerfs::digest::digest_of(&tar);
    let blob = diff_id.clone();
    let r = layerfs::layer::commit::extract_stream(&store, Cursor::new(tar), &diff_id, None, &blob);
    assert!(matches!(r, Err(Error::HostileEntry { .. })), "{r:?}");
    assert!(store.layer_record(&diff_id).is_none());
    assert_eq!(
        fs::read_dir(store.root().join("layers")).unwrap().count(),
        0
    );
    assert_eq!(
        fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "staging left behind"
    );
    let _ = Path::new("");
}

#[test]
fn a_layer_whose_tar_does_not_match_its_diff_id_is_not_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = layerfs::store::Store::open(tmp.path().join("store")).unwrap();
    let tar = raw_tar(&[Raw::file("f", b"content")]);
    let wrong = layerfs::digest::digest_of(b"something else");
    let r = layerfs::layer::commit::extract_stream(&store, Cursor::new(tar), &wrong, None, &wrong);
    match r {
        Err(Error::DigestMismatch { expected, .. }) => assert_eq!(expected, wrong),
        other => panic!("{other:?}"),
    }
    assert!(store.layer_record(&wrong).is_none());
    assert_eq!(
        fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "staging left behind"
    );
}
