//! The union semantics suite: every case runs the same operations on a kernel overlayfs mount
//! and on strata's FUSE union mount of the same layers, and asserts the same results — what
//! each operation returned (errno values included), the merged view, the upper dir written,
//! and the layer (diff id) that upper dir makes. The FUSE side runs twice, with passthrough
//! and with the daemon serving the file data (`passthrough=off`), and the two must agree. A
//! few cases check where FUSE deliberately does more than overlayfs with
//! `redirect_dir=off, index=off`, as strata mounts it.

mod common;
#[path = "unionfs/harness.rs"]
mod harness;

use std::os::unix::fs::{DirEntryExt, MetadataExt};

use harness::{Layers, Ops, Union, assert_logged, assert_same, both, has_content, run_read_only};
use layerfs::mount::StorageDriver;
use rustix::fs::RenameFlags;

fn can_run(test: &str) -> bool {
    common::is_root_with_fuse_or_skip(test)
}

fn layers(n: usize) -> (common::TestStore, Layers) {
    let t = common::TestStore::new();
    let l = Layers::new(&t.path("layers"), n);
    (t, l)
}

#[test]
fn lookup_and_read_through_layers() {
    if !can_run("lookup_and_read_through_layers") {
        return;
    }
    let (_t, l) = layers(3);
    l.file(0, "a", "a0").file(0, "b", "b0").file(0, "d/x", "x0");
    l.file(1, "a", "a1")
        .file(1, "d/y", "y1")
        .symlink(1, "c", "a")
        .symlink(1, "dangling", "nowhere");
    l.file(2, "b", "b2")
        .file(2, "d/z", "z2")
        .fifo(2, "e")
        .file(2, "f", "f2");
    l.xattr(2, "f", "user.k", b"v");
    l.file_mode(2, "suid", "#!/bin/sh\n", 0o4755, (0, 0));
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        for p in [
            "a", "b", "c", "d/x", "d/y", "d/z", "dangling", "nope", "d/nope/x",
        ] {
            o.read(p);
        }
        o.ls("");
        o.ls("d");
        o.getxattr("f", "user.k");
        o.getxattr("f", "user.none");
        o.exists("e");
    });
    assert_same(&k, &f);
    assert_logged(&f, &["read a: \"a1\""]);
}

#[test]
fn whiteouts_and_opaque_directories() {
    if !can_run("whiteouts_and_opaque_directories") {
        return;
    }
    let (_t, l) = layers(3);
    l.file(0, "gone", "x")
        .file(0, "kept", "k")
        .file(0, "d/p", "p")
        .file(0, "d/q", "q");
    l.file(0, "o/old1", "1")
        .file(0, "o/old2", "2")
        .file(0, "x/xw", "hidden")
        .file(0, "x/shown", "s");
    l.file(0, "deep/o/a", "a");
    l.whiteout(1, "gone")
        .whiteout(1, "d/p")
        .opaque(1, "o")
        .file(1, "o/new", "n");
    l.xattr_whiteout(1, "x/xw");
    l.file(1, "gone2", "g");
    l.whiteout(2, "gone2")
        .opaque(2, "deep/o")
        .file(2, "deep/o/b", "b");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.ls("");
        o.ls("d");
        o.ls("o");
        o.ls("x");
        o.ls("deep/o");
        for p in [
            "gone", "gone2", "d/p", "o/old1", "x/xw", "x/shown", "deep/o/a",
        ] {
            o.exists(p);
        }
        o.getxattr("o", "trusted.overlay.opaque");
        // Writing beside and over hidden names.
        o.write("gone", "back");
        o.mkdir("o/old1", 0o755);
        o.ls("o/old1");
        o.write("d/p", "new p");
    });
    assert_same(&k, &f);
    assert_logged(&f, &["ls o: [\"new\"]"]);
}

#[test]
fn copy_up_keeps_data_mode_owner_xattrs_and_times() {
    if !can_run("copy_up_keeps_data_mode_owner_xattrs_and_times") {
        return;
    }
    let (_t, l) = layers(2);
    for i in 1..=9 {
        l.file_mode(
            0,
            &format!("d/f{i}"),
            &format!("content {i}\n"),
            0o640,
            (1000, 1001),
        );
        l.xattr(
            0,
            &format!("d/f{i}"),
            "user.tag",
            format!("t{i}").as_bytes(),
        );
    }
    l.file_mode(0, "d/suid", "binary", 0o4755, (0, 0));
    l.symlink(0, "d/sl", "f1")
        .dir(0, "d/sub")
        .file(1, "d/sub/top", "t");
    // A sparse file: holes stay holes.
    let big = l.dirs[0].join("d/sparse");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (64 << 20) - 3).unwrap();
    drop(f);
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.write_at("d/f1", 2, "XY");
        o.truncate("d/f2", 3);
        o.chmod("d/f3", 0o600);
        o.chown("d/f4", 2000, 2001);
        o.utimes("d/f5", 1_000_000_000);
        o.setxattr("d/f6", "user.new", b"n");
        o.removexattr("d/f7", "user.tag");
        o.append("d/f8", "more\n");
        o.link("d/f9", "d/f9-link");
        o.chmod("d/sub", 0o700);
        o.chown("d/sl", 3, 4);
        o.write_at("d/sparse", 0, "start");
        o.write_at("d/suid", 0, "B");
        let blocks = std::fs::metadata(o.p("d/sparse"))
            .map(|m| m.blocks())
            .unwrap_or(0);
        o.log(format!("sparse stays sparse: {}", blocks < 1024));
        for i in 1..=9 {
            o.read(&format!("d/f{i}"));
        }
        o.read("d/f9-link");
        o.getxattr("d/f1", "user.tag");
        o.getxattr("d/f7", "user.tag");
    });
    assert_same(&k, &f);
    assert_logged(&f, &["sparse stays sparse: true"]);
}

#[test]
fn writes_and_truncates_kill_suid_sgid_and_capabilities() {
    if !can_run("writes_and_truncates_kill_suid_sgid_and_capabilities") {
        return;
    }
    // security.capability v2: cap_net_raw permitted.
    let cap: &[u8] = &[
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let kinds = [
        ("suid", 0o4777),
        ("sgid", 0o2777),
        ("sgid-nox", 0o2767),
        ("cap", 0o777),
    ];
    let ops = [
        ("append", "printf x >> \"$F\""),
        ("truncate", "truncate -s 1 \"$F\""),
    ];
    let (_t, l) = layers(1);
    let mut files = Vec::new();
    for (kind, mode) in kinds {
        for (op, script) in ops {
            for (who, uid) in [("nobody", 65534), ("root", 0)] {
                let name = format!("{op}-{who}-{kind}");
                l.file_mode(0, &name, "data", mode, (0, 0));
                if kind == "cap" {
                    l.xattr(0, &name, "security.capability", cap);
                }
                // A setgid file without group execute loses the bit to a writer outside its
                // group on overlayfs; the kernel's FUSE module keeps it (it kills setgid only
                // with group execute), which no daemon can change: that writer stays in the
                // file's group here.
                let gid = if kind == "sgid-nox" { 0 } else { uid };
                files.push((name, mode, script, uid, gid));
            }
        }
    }
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        for (name, mode, script, uid, gid) in &files {
            // Once on the lower file (copy-up), once more on the upper one.
            for _ in 0..2 {
                o.sh_as(*uid, *gid, name, script);
                o.mode(name);
                o.getxattr(name, "security.capability");
                o.chmod(name, *mode);
                if name.ends_with("-cap") {
                    o.setxattr(name, "security.capability", cap);
                }
            }
        }
        // A file created in the union, which the daemon knows to have no capability, given
        // one: the next write must find it, and drop it.
        o.sh_as(0, 0, "new-cap", "printf x > \"$F\"");
        o.getxattr("new-cap", "security.capability");
        o.setxattr("new-cap", "security.capability", cap);
        o.getxattr("new-cap", "security.capability");
        o.sh_as(0, 0, "new-cap", "printf x >> \"$F\"");
        o.getxattr("new-cap", "security.capability");
    });
    assert_same(&k, &f);
    assert_logged(
        &f,
        &[
            "mode append-nobody-suid: 777",
            "mode append-nobody-sgid-nox: 2767",
            "mode append-root-suid: 4777",
            "mode truncate-nobody-sgid: 777",
            "getxattr append-root-cap security.capability: Os { code: 61, kind: Uncategorized, message: \"No data available\" }",
        ],
    );
}

#[test]
fn creating_entries() {
    if !can_run("creating_entries") {
        return;
    }
    let (_t, l) = layers(2);
    l.file(0, "d/a", "a")
        .file(0, "gone_dir/x", "x")
        .file(0, "gone_file", "g")
        .dir(0, "sgid");
    l.whiteout(1, "gone_dir").whiteout(1, "gone_file");
    std::os::unix::fs::chown(l.dirs[0].join("sgid"), Some(0), Some(1234)).unwrap();
    std::fs::set_permissions(
        l.dirs[0].join("sgid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o2775),
    )
    .unwrap();
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.write("d/new", "n");
        o.mkdir("d/newdir", 0o750);
        o.mkfifo("d/fifo");
        o.symlink("a", "d/sl");
        o.mkdir("gone_dir", 0o755);
        o.ls("gone_dir");
        o.write("gone_file", "again");
        o.mknod_whiteout("d/wh");
        o.create_excl("d/a");
        o.mkdir("d", 0o755);
        o.write("sgid/file", "f");
        o.mkdir("sgid/dir", 0o755);
        o.write("nowhere/file", "x");
        o.write("d/a/under-a-file", "x");
    });
    assert_same(&k, &f);
}

#[test]
fn removing_entries() {
    if !can_run("removing_entries") {
        return;
    }
    let (_t, l) = layers(2);
    l.file(0, "f", "f")
        .file(0, "d/x", "x")
        .file(0, "both", "b0")
        .dir(0, "e");
    l.file(0, "m/a", "a")
        .file(0, "m/b", "b")
        .file(1, "m/c", "c")
        .file(1, "both", "b1");
    l.file(0, "dd/inner/z", "z");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.unlink("f");
        o.write("up", "u");
        o.unlink("up");
        o.append("both", "+");
        o.unlink("both");
        o.rmdir("d");
        o.unlink("d/x");
        o.rmdir("d");
        o.rmdir("e");
        o.rmdir("m");
        for p in ["m/a", "m/b", "m/c"] {
            o.unlink(p);
        }
        o.rmdir("m");
        o.mkdir("m", 0o755);
        o.ls("m");
        o.mkdir("newdir", 0o755);
        o.rmdir("newdir");
        o.unlink("nope");
        o.rmdir("f");
        o.unlink("dd");
        let r = std::fs::remove_dir_all(o.p("dd"));
        o.log(format!("rm -r dd: {}", r.is_ok()));
        o.ls("");
    });
    assert_same(&k, &f);
}

#[test]
fn renaming_files() {
    if !can_run("renaming_files") {
        return;
    }
    let (_t, l) = layers(2);
    l.file(0, "a", "a")
        .file(0, "b", "b")
        .file(0, "c", "c")
        .file(0, "w", "w")
        .file(0, "d/x", "x");
    l.file(0, "e1", "e1").file(0, "e2", "e2").dir(0, "dir");
    l.whiteout(1, "w");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.rename("a", "a2");
        o.write("u", "u");
        o.rename("u", "u2");
        o.rename("b", "c");
        o.rename("a2", "w");
        o.rename2("c", "w", RenameFlags::NOREPLACE);
        o.rename2("c", "fresh", RenameFlags::NOREPLACE);
        o.rename("d/x", "x");
        o.rename("nope", "y");
        o.rename2("e1", "e2", RenameFlags::EXCHANGE);
        o.rename2("e1", "none", RenameFlags::EXCHANGE);
        o.rename("e1", "dir");
        o.rename("x", "x");
        o.ls("");
        o.ls("d");
        for p in ["a", "a2", "b", "c", "w", "fresh", "x", "e1", "e2"] {
            o.read(p);
        }
    });
    assert_same(&k, &f);
}

#[test]
fn renaming_directories() {
    if !can_run("renaming_directories") {
        return;
    }
    let (_t, l) = layers(2);
    l.file(0, "ld/f", "f")
        .file(0, "ld/sub/g", "g")
        .file(0, "ld/sub/h", "h");
    l.file(0, "md/a", "a")
        .file(1, "md/b", "b")
        .dir(0, "into")
        .dir(0, "occupied");
    l.file(0, "wd/old", "o")
        .whiteout(1, "wd")
        .file(0, "ld2/hidden", "h")
        .whiteout(1, "ld2");
    l.file(0, "nonempty/x", "x");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        // A pure upper directory moves natively on both.
        o.mkdir("pure", 0o755);
        o.write("pure/x", "x");
        o.mv("pure", "moved");
        o.mv("moved", "into/moved");
        // Directories with lower parts: overlayfs says EXDEV and `mv` copies; FUSE renames.
        o.unlink("ld/sub/h");
        o.mv("ld", "ld2");
        o.mv("md", "into/md");
        o.mv("into/md", "wd");
        o.mv("ld2/sub", "occupied");
        o.mv("into", "nonempty");
        o.rename("ld2", "ld2/sub2");
        o.ls("");
        o.ls("ld2");
        o.ls("occupied");
        o.ls("wd");
        o.ls("into");
        o.ls("into/moved");
        o.read("occupied/g");
    });
    assert_same(&k, &f);
}

#[test]
fn links_made_in_the_union_are_one_inode() {
    if !can_run("links_made_in_the_union_are_one_inode") {
        return;
    }
    let (_t, l) = layers(1);
    l.file(0, "f", "original").file(0, "d/g", "g");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        let before = o.ino("f");
        o.link("f", "d/f-link");
        o.same_inode("f", "d/f-link");
        o.log(format!(
            "f keeps its inode number: {}",
            before == o.ino("f")
        ));
        o.nlink("f");
        o.write_at("d/f-link", 0, "CHANGED");
        o.read("f");
        o.unlink("f");
        o.nlink("d/f-link");
        o.link("d/g", "g2");
        o.link("d/g", "g2");
        o.link("d", "dlink");
    });
    assert_same(&k, &f);
    assert_logged(&f, &["same inode f d/f-link: true"]);
}

#[test]
fn deep_and_wide_trees() {
    if !can_run("deep_and_wide_trees") {
        return;
    }
    let (_t, l) = layers(2);
    let deep = "a/b/c/d/e/f/g/h/i/j/k/l";
    l.file(0, &format!("{deep}/file"), "deep");
    for i in 0..3000 {
        l.file(0, &format!("wide/f{i:04}"), &i.to_string());
    }
    for i in (0..3000).step_by(3) {
        l.whiteout(1, &format!("wide/f{i:04}"));
    }
    for i in 3000..3500 {
        l.file(1, &format!("wide/f{i:04}"), &i.to_string());
    }
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        let n = std::fs::read_dir(o.p("wide"))
            .map(|d| d.count())
            .unwrap_or(0);
        o.log(format!("wide has {n} entries"));
        o.append(&format!("{deep}/file"), "+");
        o.write(&format!("{deep}/new"), "n");
        for i in (1..3000).step_by(7) {
            o.unlink(&format!("wide/f{i:04}"));
        }
        let r = std::fs::remove_dir_all(o.p("a/b/c/d/e"));
        o.log(format!("rm -r a/b/c/d/e: {}", r.is_ok()));
        o.ls("a/b/c/d");
    });
    assert_same(&k, &f);
    assert_logged(&f, &["wide has 2500 entries"]);
}

#[test]
fn many_layers() {
    if !can_run("many_layers") {
        return;
    }
    let n = 40;
    let (_t, l) = layers(n);
    for i in 0..n {
        l.file(i, "shared", &format!("layer {i}"))
            .file(i, &format!("only{i}"), "o");
        l.file(i, &format!("common/f{i}"), "c");
        if i % 2 == 1 {
            l.whiteout(i, &format!("only{}", i - 1));
        }
        if i == 30 {
            l.opaque(i, "common");
        }
    }
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.read("shared");
        o.ls("");
        o.ls("common");
        o.write("common/new", "n");
        o.unlink("common/f35");
        o.unlink("only38");
        o.ls("common");
    });
    assert_same(&k, &f);
}

#[test]
fn errors_are_the_same() {
    if !can_run("errors_are_the_same") {
        return;
    }
    let (_t, l) = layers(1);
    l.file(0, "file", "f")
        .file(0, "d/sub/x", "x")
        .dir(0, "empty")
        .file(0, "full/y", "y");
    l.opaque(0, "opq");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.rmdir("file");
        o.unlink("d");
        o.mkdir("d", 0o755);
        o.rename("d", "d/sub/inside");
        o.mkdir("made", 0o755);
        o.rename("made", "full");
        o.rename("file", "empty");
        o.rename("empty", "file");
        o.getxattr("file", "user.missing");
        o.getxattr("opq", "trusted.overlay.opaque");
        o.setxattr("file", "trusted.overlay.mine", b"v");
        o.getxattr("file", "trusted.overlay.mine");
        o.read("missing");
        o.write("file/child", "x");
        o.read("d");
        o.symlink("x", "file");
        o.link("missing", "l");
        o.fsync("file");
    });
    assert_same(&k, &f);
}

/// A union of layers alone (`COPY --from`'s and `RUN --mount=from=`'s source) is a read-only
/// mount, as overlayfs makes it: every change fails with EROFS, and the view is the layers'.
#[test]
fn read_only_unions_refuse_every_change() {
    if !can_run("read_only_unions_refuse_every_change") {
        return;
    }
    let (_t, l) = layers(2);
    l.file(0, "file", "bottom")
        .file(1, "file", "top")
        .file(0, "d/x", "x")
        .dir(1, "empty")
        .symlink(1, "link", "file")
        .xattr(0, "d/x", "user.k", b"v");
    l.whiteout(1, "d/gone");
    let ops = |o: &Ops<'_>| {
        o.read("file");
        o.ls("d");
        o.getxattr("d/x", "user.k");
        o.write("file", "changed");
        o.append("d/x", "more");
        o.truncate("file", 0);
        o.create_excl("new");
        o.mkdir("newdir", 0o755);
        o.rmdir("empty");
        o.unlink("file");
        o.rename("file", "moved");
        o.symlink("file", "newlink");
        o.link("file", "newhard");
        o.chmod("file", 0o600);
        o.chown("file", 1, 1);
        o.utimes("file", 1_000_000_000);
        o.setxattr("d/x", "user.k", b"w");
        o.removexattr("d/x", "user.k");
        o.mkfifo("fifo");
        o.read("file");
    };
    let (kernel_ops, kernel_ro, kernel_view) = run_read_only(StorageDriver::Overlay, &l, &ops);
    let (fuse_ops, fuse_ro, fuse_view) = run_read_only(StorageDriver::Fuse, &l, &ops);
    assert_eq!(kernel_ops, fuse_ops, "what the operations returned differs");
    assert_eq!(kernel_view, fuse_view, "the merged views differ");
    assert!(
        kernel_ro && fuse_ro,
        "statvfs read-only: overlayfs {kernel_ro}, FUSE {fuse_ro}"
    );
    let erofs = format!("{:?}", rustix::io::Errno::ROFS);
    for op in ["write file", "mkdir newdir", "setxattr d/x user.k"] {
        let line = format!("{op}: {erofs}");
        assert!(fuse_ops.contains(&line), "{line:?} not in {fuse_ops:#?}");
    }
}

#[test]
fn inode_numbers_are_stable_and_readdir_agrees() {
    if !can_run("inode_numbers_are_stable_and_readdir_agrees") {
        return;
    }
    let (_t, l) = layers(2);
    l.file(0, "d/a", "a")
        .file(0, "d/b", "b")
        .file(1, "d/c", "c")
        .hardlink(0, "d/a", "d/a-link");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        let before: Vec<_> = ["d", "d/a", "d/b", "d/c"]
            .iter()
            .map(|p| o.ino(p))
            .collect();
        o.write_at("d/b", 0, "B");
        o.chmod("d/c", 0o600);
        o.write("d/new", "n");
        let after: Vec<_> = ["d", "d/a", "d/b", "d/c"]
            .iter()
            .map(|p| o.ino(p))
            .collect();
        o.log(format!(
            "inode numbers survive copy-up: {}",
            before == after
        ));
        o.same_inode("d/a", "d/a-link");
        let agree = std::fs::read_dir(o.p("d")).unwrap().all(|e| {
            let e = e.unwrap();
            e.ino() == std::fs::symlink_metadata(e.path()).unwrap().ino()
        });
        o.log(format!("readdir inode numbers match stat: {agree}"));
    });
    assert_same(&k, &f);
    assert_logged(
        &f,
        &[
            "inode numbers survive copy-up: true",
            "readdir inode numbers match stat: true",
        ],
    );
}

#[test]
fn statfs_reports_the_upper_filesystem() {
    if !can_run("statfs_reports_the_upper_filesystem") {
        return;
    }
    let (_t, l) = layers(1);
    l.file(0, "f", "f");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        let union = rustix::fs::statvfs(o.root).unwrap();
        let upper = rustix::fs::statvfs(o.root.parent().unwrap().join("upper")).unwrap();
        o.log(format!(
            "statfs like the upper: {}",
            union.f_blocks == upper.f_blocks
                && union.f_bsize == upper.f_bsize
                && union.f_namemax == upper.f_namemax
        ));
    });
    assert_same(&k, &f);
    assert_logged(&f, &["statfs like the upper: true"]);
}

/// overlayfs with `index=off` breaks a lower hard link when one of its names is written (the
/// other name keeps the old data); strata's FUSE union copies every name up as one inode,
/// as on any other filesystem. The only place the two upper dirs differ on purpose.
#[test]
fn lower_hard_links_stay_one_inode_after_copy_up_on_fuse() {
    if !can_run("lower_hard_links_stay_one_inode_after_copy_up_on_fuse") {
        return;
    }
    let (_t, l) = layers(1);
    l.file(0, "d/a", "same")
        .hardlink(0, "d/a", "e/b")
        .hardlink(0, "d/a", "c");
    let (k, f) = both(&l, &|o: &Ops<'_>| {
        o.write_at("d/a", 0, "SAME");
        o.read("e/b");
        o.read("c");
        o.same_inode("d/a", "e/b");
    });
    // overlayfs breaks the link.
    assert_logged(&k, &["read e/b: \"same\""]);
    assert_logged(
        &f,
        &[
            "read e/b: \"SAME\"",
            "read c: \"SAME\"",
            "same inode d/a e/b: true",
        ],
    );
    assert!(
        f.upper
            .iter()
            .any(|l| l.starts_with("linked: c = d/a = e/b")),
        "{:#?}",
        f.upper
    );
}

/// Lower layers written by AUFS-style tools (`.wh.NAME`, `.wh..wh..opq`) read right on FUSE;
/// kernel overlayfs does not know those forms.
#[test]
fn aufs_whiteouts_in_lower_layers_on_fuse() {
    if !can_run("aufs_whiteouts_in_lower_layers_on_fuse") {
        return;
    }
    let (t, l) = layers(2);
    l.file(0, "a", "a")
        .file(0, "keep", "k")
        .file(0, "d/x", "x")
        .file(0, "d/z", "z");
    l.file(1, ".wh.a", "")
        .file(1, "d/.wh..wh..opq", "")
        .file(1, "d/y", "y");
    l.age();
    let out = harness::run_on(Union::Fuse, &l.dirs, &t.path("run"), &|o: &Ops<'_>| {
        o.ls("");
        o.ls("d");
        o.exists("a");
        o.exists("d/x");
    });
    assert_logged(
        &out,
        &[
            "ls : [\"d\", \"keep\"]",
            "ls d: [\"y\"]",
            "exists a: false",
            "exists d/x: false",
        ],
    );
}

/// Open files see their data exactly, passed through to the layer files or served by the
/// daemon; a big file copies up whole; a file written while open for reading elsewhere reads
/// back right.
#[test]
fn file_data_round_trips() {
    if !can_run("file_data_round_trips") {
        return;
    }
    let (t, l) = layers(1);
    let data: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(l.dirs[0].join("big"), &data).unwrap();
    l.age();
    for union in [Union::Fuse, Union::FuseDaemonIo] {
        let out = harness::run_on(union, &l.dirs, &t.path("run"), &|o: &Ops<'_>| {
            o.log(format!(
                "big reads back: {}",
                std::fs::read(o.p("big")).unwrap() == data
            ));
            let mut more = data.clone();
            more.extend_from_slice(b"tail");
            o.append("big", "tail");
            o.log(format!(
                "append lands: {}",
                std::fs::read(o.p("big")).unwrap() == more
            ));
            let content: String = (0..100_000)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            o.write("new", &content);
            o.log(format!(
                "new file reads back: {}",
                has_content(&o.p("new"), &content)
            ));
            o.log(format!(
                "size is right: {}",
                std::fs::metadata(o.p("new")).unwrap().len() == 100_000
            ));
        });
        assert_logged(
            &out,
            &[
                "big reads back: true",
                "append lands: true",
                "new file reads back: true",
                "size is right: true",
            ],
        );
    }
}

/// A build on the FUSE union makes the same layers as a build on overlayfs: the upper dirs
/// both write are the same overlay format, entry for entry. A later stage reads the first
/// one's layers through a read-only union (`COPY --from`, `RUN --mount=from=`), on FUSE too.
#[test]
fn builds_on_fuse_and_on_overlayfs_make_the_same_layers() {
    if !can_run("builds_on_fuse_and_on_overlayfs_make_the_same_layers") {
        return;
    }
    let t = common::TestStore::with_busybox();
    let ctx = t.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("file.txt"), "from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox AS build
RUN mkdir -p /data/sub /data/other /keep /etc/conf.d && echo 1 > /data/a && echo 2 > /data/sub/b \
 && ln -s a /data/a-sym && echo k > /keep/k && chmod 4755 /data/a && mkfifo /data/fifo \
 && echo c > /etc/conf.d/c && ln /keep/k /keep/k-link
RUN rm /data/sub/b && mv /data/sub /data/sub2 && echo new > /data/sub2/c && rm -rf /keep \
 && mkdir /keep && echo 3 >> /data/a && chmod 700 /data/other && rm /bin/ls && echo root2 >> /etc/passwd
RUN mv /data /moved && chown 1000:1000 /moved/a && rm -rf /etc/conf.d && mkdir /etc/conf.d \
 && ln /moved/a /moved/a-link2 && touch /moved/sub2/c
COPY file.txt /moved/
RUN rm /moved/file.txt && mkdir -p /moved/file.txt/inside

FROM busybox
COPY --from=build /moved /copied
RUN --mount=type=bind,from=build,source=/moved,target=/m cat /m/a /m/sub2/c > /from-mount
"#,
    )
    .unwrap();
    let mut ids = Vec::new();
    for driver in ["overlay", "fuse"] {
        for target in ["build", "final"] {
            let tag = format!("same-{driver}-{target}");
            let mut args = vec!["--storage-driver", driver, "build", "-t", &tag];
            if target == "build" {
                args.extend(["--target", "build"]);
            }
            args.extend(["--progress", "plain", ctx.to_str().unwrap()]);
            let out = t.cmd(&args).env("SOURCE_DATE_EPOCH", "0").output().unwrap();
            assert!(
                out.status.success(),
                "build of {target} on {driver}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let config: serde_json::Value =
                serde_json::from_str(&t.ok(&["inspect", &tag])).unwrap();
            ids.push(config["rootfs"]["diff_ids"].clone());
        }
        let read = t.ok(&[
            "run",
            "--rm",
            &format!("same-{driver}-final"),
            "cat",
            "/from-mount",
            "/copied/a",
        ]);
        assert_eq!(read, "1\n3\nnew\n1\n3\n", "on {driver}");
    }
    assert_eq!(
        ids[..2],
        ids[2..],
        "layers built on overlayfs and on FUSE differ"
    );
    assert_eq!(
        ids[0].as_array().map(Vec::len),
        Some(6),
        "the base and five layers"
    );
    assert_eq!(
        ids[1].as_array().map(Vec::len),
        Some(3),
        "the base, COPY --from and RUN --mount=from="
    );
}
