//! Layer round trips: an overlay-format tree → layer tar → extracted tree gives the same tree,
//! and the same tree always gives the same digest.

mod support;

use std::ffi::CString;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use layerfs::digest::digest_of;
use layerfs::layer::OverlayXattrs;
use layerfs::layer::apply::{ApplyOptions, Target, apply, verify};
use layerfs::layer::diff::{write_changes, write_layer};
use layerfs::layer::tarball::TarWriter;
use rustix::fs::{FileType, Mode, Timespec, Timestamps, XattrFlags};

use support::{assert_same_tree, is_root_or_skip};

fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    rustix::fs::lsetxattr(path, n.as_c_str(), value, XattrFlags::empty()).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn file(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with one of everything a layer must carry.
fn rich_tree(root: &Path) {
    let long_dir = "d".repeat(120);
    fs::create_dir_all(root.join("etc/empty")).unwrap();
    fs::create_dir_all(root.join(&long_dir)).unwrap();
    fs::create_dir_all(root.join("opaque/sub")).unwrap();
    file(
        &root.join("etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
        0o644,
    );
    file(&root.join("etc/shadow"), b"secret", 0o600);
    file(&root.join("setuid"), b"#!/bin/sh\n", 0o4755);
    file(&root.join("setgid-sticky"), b"x", 0o3775);
    file(
        &root.join(format!("{long_dir}/{}", "f".repeat(150))),
        b"long name",
        0o644,
    );
    file(
        &root.join("big-ish"),
        &vec![7u8; 3 * 1024 * 1024 + 17],
        0o640,
    );
    file(&root.join("opaque/sub/kept"), b"k", 0o644);
    fs::hard_link(root.join("etc/passwd"), root.join("passwd-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("etc/passwd", root.join("rel-link")).unwrap();
    symlink("t".repeat(300), root.join("long-target")).unwrap();
    symlink("dangling/nowhere", root.join("dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    // A whiteout and an opaque dir, in overlay format.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("etc/removed"),
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    set_xattr(&root.join("opaque"), "trusted.overlay.opaque", b"y");
    set_xattr(&root.join("etc/passwd"), "user.note", b"hello");
    set_xattr(
        &root.join("setuid"),
        "security.capability",
        &[
            1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    set_xattr(&root.join("etc"), "trusted.note", b"on a dir");
    chown(&root.join("etc/shadow"), 0, 42);
    chown(&root.join("opaque/sub/kept"), 70_000, 70_001);
    chown(&root.join("rel-link"), 1000, 1000);
    for (p, t) in [
        ("etc/passwd", 981_173_106),
        ("setuid", 1),
        ("big-ish", 4_102_444_800),
        ("abs-link", 1_500_000_000),
        ("etc/empty", 1_234_567_890),
        ("etc", 1_111_111_111),
        (long_dir.as_str(), 1_222_222_222),
        ("opaque/sub", 1_300_000_000),
        ("opaque", 1_300_000_001),
    ] {
        set_mtime(&root.join(p), t);
    }
}

fn tar_of(dir: &Path) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new(), None);
    write_layer(dir, &mut w).unwrap();
    w.finish().unwrap()
}

#[test]
fn round_trip_keeps_every_kind_of_entry_and_digests_are_stable() {
    if !is_root_or_skip("round_trip_keeps_every_kind_of_entry_and_digests_are_stable") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    rich_tree(&src);
    let tar1 = tar_of(&src);
    assert_eq!(
        digest_of(&tar1),
        digest_of(&tar_of(&src)),
        "the same tree gave two digests"
    );
    let stats = apply(
        Cursor::new(&tar1),
        &dst,
        &ApplyOptions::for_this_process(Target::LayerDir),
    )
    .unwrap();
    assert_eq!(stats.skipped_devices, 0);
    assert_same_tree(&src, &dst);
    // The extracted tree serializes to the very same tar.
    assert_eq!(digest_of(&tar_of(&dst)), digest_of(&tar1));
    // And verifies clean against it…
    assert_eq!(
        verify(Cursor::new(&tar1), &dst, OverlayXattrs::Trusted).unwrap(),
        vec![]
    );
    // …until something changes.
    fs::write(dst.join("etc/shadow"), b"tampered").unwrap();
    set_mtime(&dst.join("etc/shadow"), 0);
    fs::remove_file(dst.join("fifo")).unwrap();
    fs::write(dst.join("intruder"), b"x").unwrap();
    let found = verify(Cursor::new(&tar1), &dst, OverlayXattrs::Trusted).unwrap();
    let paths: Vec<String> = found
        .iter()
        .map(|m| format!("{}: {}", m.path.display(), m.what))
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("etc/shadow: content differs")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("fifo: missing")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("intruder: not in the layer tar")),
        "{paths:?}"
    );
}

#[test]
fn layer_tar_has_whiteouts_opaque_markers_pax_and_hardlinks() {
    if !is_root_or_skip("layer_tar_has_whiteouts_opaque_markers_pax_and_hardlinks") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let tar = tar_of(&src);
    let mut archive = tar::Archive::new(Cursor::new(&tar));
    let mut names = Vec::new();
    let mut overlay_xattr_seen = false;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                overlay_xattr_seen |= x.unwrap().key().unwrap().contains("overlay");
            }
        }
        if name == "passwd-link" {
            assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("etc/passwd"));
        }
        names.push(name);
    }
    assert!(
        !overlay_xattr_seen,
        "overlay's own xattrs must not reach the tar"
    );
    assert!(names.contains(&"etc/.wh.removed".to_owned()), "{names:?}");
    assert!(
        names.contains(&"opaque/.wh..wh..opq".to_owned()),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.len() > 250),
        "the long name is missing: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    // Depth-first with sorted names: parents before children, siblings in byte order.
    let dirs: Vec<&String> = names.iter().filter(|n| n.ends_with('/')).collect();
    for d in dirs {
        let pos = names.iter().position(|n| n == d).unwrap();
        assert!(
            names[pos + 1..]
                .iter()
                .all(|n| !d.starts_with(n.as_str()) || n == d)
        );
    }
}

#[test]
fn clamped_mtimes_make_the_digest_independent_of_when_files_were_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, t) in [(&a, 1_700_000_000), (&b, 1_800_000_000)] {
        fs::create_dir_all(dir.join("x")).unwrap();
        fs::write(dir.join("x/f"), b"same").unwrap();
        set_mtime(&dir.join("x/f"), t);
        set_mtime(&dir.join("x"), t);
    }
    let clamp = |dir: &Path| {
        let mut w = TarWriter::new(Vec::new(), Some(1_000_000_000));
        write_layer(dir, &mut w).unwrap();
        digest_of(&w.finish().unwrap())
    };
    assert_eq!(clamp(&a), clamp(&b));
    assert_ne!(digest_of(&tar_of(&a)), digest_of(&tar_of(&b)));
}

#[test]
fn flattening_applies_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    let opts = ApplyOptions::for_this_process(Target::Rootfs);
    let lower = support::raw_tar(&[
        support::Raw::dir("d"),
        support::Raw::file("d/f", b"1"),
        support::Raw::file("d/g", b"2"),
        support::Raw::dir("o"),
        support::Raw::file("o/old", b"3"),
    ]);
    apply(Cursor::new(lower), &rootfs, &opts).unwrap();
    let upper = support::raw_tar(&[
        support::Raw::file("d/.wh.f", b""),
        support::Raw::dir("o"),
        support::Raw::file("o/new", b"4"),
        support::Raw::file("o/.wh..wh..opq", b""),
    ]);
    apply(Cursor::new(upper), &rootfs, &opts).unwrap();
    assert!(!rootfs.join("d/f").exists());
    assert_eq!(fs::read(rootfs.join("d/g")).unwrap(), b"2");
    let mut o: Vec<_> = fs::read_dir(rootfs.join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    o.sort();
    assert_eq!(
        o,
        ["new"],
        "the opaque marker keeps what this layer wrote, even before it"
    );
}

#[test]
fn generic_tree_diff_reproduces_the_new_tree() {
    if !is_root_or_skip("generic_tree_diff_reproduces_the_new_tree") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, out) = (
        tmp.path().join("old"),
        tmp.path().join("new"),
        tmp.path().join("out"),
    );
    for d in [&old, &new, &out] {
        fs::create_dir(d).unwrap();
    }
    rich_tree(&old);
    // rich_tree leaves overlay markers in place; in plain trees they are just entries.
    rich_tree(&new);
    fs::remove_file(new.join("etc/shadow")).unwrap();
    fs::write(new.join("etc/passwd"), b"changed\n").unwrap();
    fs::remove_dir_all(new.join("opaque/sub")).unwrap();
    fs::create_dir(new.join("brand-new")).unwrap();
    fs::write(new.join("brand-new/f"), b"n").unwrap();
    set_mtime(&new.join("etc"), 1_111_111_111);
    let mut w = TarWriter::new(Vec::new(), None);
    let stats = write_changes(&old, &new, &mut w).unwrap();
    assert!(stats.whiteouts >= 2, "{stats:?}");
    let tar = w.finish().unwrap();
    // Apply the changes on a copy of the old tree: the result is the new tree.
    apply(
        Cursor::new(tar_of(&old)),
        &out,
        &ApplyOptions::for_this_process(Target::LayerDir),
    )
    .unwrap();
    apply(
        Cursor::new(&tar),
        &out,
        &ApplyOptions::for_this_process(Target::Rootfs),
    )
    .unwrap();
    let mut d_new = support::describe(&new);
    let mut d_out = support::describe(&out);
    // Hard-link groups can split when one name of the group changed; compare the rest.
    for d in [&mut d_new, &mut d_out] {
        for v in d.values_mut() {
            if let Some(i) = v.find(" link-group=") {
                let end = v[i + 1..].find(' ').map_or(v.len(), |j| i + 1 + j);
                v.replace_range(i..end, "");
            }
        }
    }
    assert_eq!(d_new, d_out);
}

#[test]
fn a_private_mount_is_invisible_outside_its_thread_and_gone_after() {
    if !is_root_or_skip("a_private_mount_is_invisible_outside_its_thread_and_gone_after") {
        return;
    }
    use layerfs::mount::{UnionSpec, with_private_mount};
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| {
        let d = tmp.path().join(n);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let (lower, upper, work, target) = (p("lower"), p("upper"), p("work"), p("merged"));
    fs::write(lower.join("from-lower"), b"l").unwrap();
    // A second thread keeps running, as a progress bar would in the builder.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let spec = UnionSpec {
        lowers: vec![lower],
        upper: upper.clone(),
        work,
    };
    let seen_outside = with_private_mount(&spec, &target, |merged| {
        assert!(merged.join("from-lower").is_file());
        fs::write(merged.join("written"), b"w").unwrap();
        // /proc/self is the process (its main thread's namespace); thread-self is this one.
        let mine = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(mine.contains(merged.to_str().unwrap()));
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(merged.to_str().unwrap())
    })
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    assert!(!seen_outside, "another thread saw the private mount");
    assert!(!layerfs::mount::is_mount_point(&target));
    assert_eq!(fs::read(upper.join("written")).unwrap(), b"w");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(target.to_str().unwrap()));
}
