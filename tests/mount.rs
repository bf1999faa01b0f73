//! `huds mount` on real FUSE mounts (`/dev/fuse`, `fusermount3`): a tree reads back exactly as it was added
//! (`diff -r`), large directories list in full, inode numbers hold still, bad targets and directories mount
//! nothing, a stale mount of a killed process is cleared, and a mount through a node's API reads content that
//! other nodes hold. Every mount is unmounted when its guard drops, whether the test passed or not.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{Mounted, Unmount, mounted};
use common::{new_home, run, run_json};

/// A tree with a multi-segment file, small and empty files, an empty directory, nested directories and
/// symlinks (one dangling).
fn make_tree(root: &Path) -> Vec<u8> {
    std::fs::create_dir_all(root.join("docs/deep/er")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    let mut big = vec![0u8; 9_000_000 + 17];
    common::Xorshift(5).fill(&mut big);
    std::fs::write(root.join("big.bin"), &big).expect("write");
    std::fs::write(root.join("docs/a.txt"), b"alpha\n").expect("write");
    std::fs::write(root.join("docs/deep/er/b.txt"), vec![b'b'; 300_000]).expect("write");
    std::fs::write(root.join("empty"), b"").expect("write");
    std::os::unix::fs::symlink("docs/a.txt", root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("../nowhere", root.join("docs/dangling")).expect("symlink");
    big
}

fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff runs");
    assert!(
        out.status.success(),
        "diff -r {} {}:\n{}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_mounted_tree_reads_back_exactly_and_unmounts_on_sigterm() {
    let (dir, home) = new_home();
    let src = dir.path().join("src");
    let big = make_tree(&src);
    let cap = run_json(&home, &["add", src.to_str().expect("utf-8")])["cap"]
        .as_str()
        .expect("cap")
        .to_string();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mut m = Mounted::start(&home, &[], &cap, &mnt);
    assert!(mounted(&mnt));

    diff_r(&src, &mnt);
    assert_eq!(
        std::fs::read_link(mnt.join("docs/dangling")).expect("readlink"),
        Path::new("../nowhere")
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("link")).expect("a symlink inside the mount resolves"),
        "alpha\n"
    );

    // Reads at any offset, across segment boundaries, match the file.
    let mut f = std::fs::File::open(mnt.join("big.bin")).expect("open");
    for &(at, len) in &[
        (0u64, 10usize),
        (4_194_300, 20_000),
        (8_999_990, 27),
        (9_000_017, 5),
    ] {
        f.seek(SeekFrom::Start(at)).expect("seek");
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match f.read(&mut buf[got..]).expect("read") {
                0 => break,
                n => got += n,
            }
        }
        let end = (at as usize + len).min(big.len());
        assert_eq!(&buf[..got], &big[(at as usize).min(end)..end], "at {at}");
    }

    // Inode numbers hold still: across stats, in the listing, and for the root.
    let a = std::fs::symlink_metadata(mnt.join("docs/a.txt")).expect("stat");
    // (A DirEntry holds its directory open: only the number is kept.)
    let listed = std::fs::read_dir(mnt.join("docs"))
        .expect("readdir")
        .map(|e| e.expect("entry"))
        .find(|e| e.file_name() == "a.txt")
        .map(|e| std::os::unix::fs::DirEntryExt::ino(&e))
        .expect("a.txt listed");
    assert_eq!(listed, a.ino());
    assert_eq!(
        std::fs::symlink_metadata(mnt.join("docs/a.txt"))
            .expect("stat")
            .ino(),
        a.ino()
    );
    assert_eq!(std::fs::metadata(&mnt).expect("stat root").ino(), 1);
    assert_eq!(a.mode() & 0o777, 0o444);

    // statfs answers with the DAG's size; writes are refused as on any read-only filesystem.
    let df = Command::new("stat")
        .args(["-f", "-c", "%b %S"])
        .arg(&mnt)
        .output()
        .expect("stat -f runs");
    let df = String::from_utf8_lossy(&df.stdout).trim().to_string();
    let total: u64 = 9_000_017 + 6 + 300_000;
    assert_eq!(df, format!("{} 4096", total.div_ceil(4096)));
    let err = std::fs::write(mnt.join("new.txt"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("docs/a.txt"))
        .expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");

    // SIGTERM with a file still open: the mount is detached at once, the open file still reads, and the
    // process exits cleanly once it is closed.
    m.term();
    let started = std::time::Instant::now();
    while mounted(&mnt) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "SIGTERM detaches"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_dir(&mnt).expect("readdir").count(), 0);
    f.seek(SeekFrom::Start(0)).expect("seek");
    let mut head = [0u8; 10];
    f.read_exact(&mut head).expect("an open file still reads");
    assert_eq!(head, big[..10]);
    assert!(
        m.exited(Duration::from_millis(200)).is_none(),
        "it serves the open file"
    );
    drop(f);
    let status = m
        .exited(Duration::from_secs(30))
        .expect("exits once the file is closed");
    assert!(status.success(), "huds mount exits 0 on SIGTERM: {status}");
}

#[test]
fn a_large_directory_lists_every_entry_and_a_file_or_path_mounts_alone() {
    let (dir, home) = new_home();
    let src = dir.path().join("many");
    std::fs::create_dir(&src).expect("mkdir");
    const FILES: usize = 2_500;
    for i in 0..FILES {
        std::fs::write(src.join(format!("f{i:05}.txt")), format!("{i}\n")).expect("write");
    }
    let added = run_json(&home, &["add", "--public", src.to_str().expect("utf-8")]);
    let cid = added["cid"].as_str().expect("cid").to_string();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    {
        // By its CID alone: a public tree.
        let _m = Mounted::start(&home, &[], &cid, &mnt);
        let mut names: Vec<String> = std::fs::read_dir(&mnt)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names.len(), FILES, "every entry is listed, page after page");
        assert_eq!(names[0], "f00000.txt");
        assert_eq!(names[FILES - 1], format!("f{:05}.txt", FILES - 1));
        assert_eq!(
            std::fs::read_to_string(mnt.join("f01234.txt")).expect("read"),
            "1234\n"
        );
    }
    assert!(!mounted(&mnt));

    // A path inside the DAG: the file alone, under its name.
    let _m = Mounted::start(&home, &[], &format!("{cid}/f00042.txt"), &mnt);
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["f00042.txt"]);
    assert_eq!(
        std::fs::read_to_string(mnt.join("f00042.txt")).expect("read"),
        "42\n"
    );
}

#[test]
fn bad_targets_and_directories_mount_nothing() {
    let (dir, home) = new_home();
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"hello").expect("write");
    let cap = run_json(&home, &["add", f.to_str().expect("utf-8")])["cap"]
        .as_str()
        .expect("cap")
        .to_string();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mnt_s = mnt.to_str().expect("utf-8");

    let fails = |target: &str, on: &str, says: &str| {
        let out = run(&home, &["mount", target, on]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mount {target} {on} succeeded");
        assert!(err.contains(says), "mount {target} {on}: {err}");
        assert!(!mounted(&mnt), "nothing is mounted half-way");
    };
    fails("huds:not-a-capability", mnt_s, "capability");
    fails(
        "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        mnt_s,
        "not",
    );
    fails(&format!("{cap}/nope"), mnt_s, "");
    fails(
        &cap,
        dir.path().join("missing").to_str().expect("utf-8"),
        "no such directory",
    );
    fails(&cap, f.to_str().expect("utf-8"), "not a directory");
    std::fs::write(mnt.join("occupied"), b"x").expect("write");
    fails(&cap, mnt_s, "is not empty");
    std::fs::remove_file(mnt.join("occupied")).expect("rm");

    // A directory already mounted is refused, and the mount on it is untouched.
    let m = Mounted::start(&home, &[], &cap, &mnt);
    let out = run(&home, &["mount", &cap, mnt_s]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already a mount point"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = std::fs::read_dir(&mnt)
        .expect("readdir")
        .next()
        .expect("one entry")
        .expect("entry")
        .file_name();
    assert_eq!(
        std::fs::read(mnt.join(name)).expect("still reads"),
        b"hello"
    );
    drop(m);
}

#[test]
fn a_stale_mount_left_by_a_killed_process_is_cleared_by_the_next_mount() {
    let (dir, home) = new_home();
    let src = dir.path().join("src");
    make_tree(&src);
    let cap = run_json(&home, &["add", src.to_str().expect("utf-8")])["cap"]
        .as_str()
        .expect("cap")
        .to_string();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let _cleanup = Unmount(mnt.clone());
    let first = Mounted::start(&home, &[], &cap, &mnt);
    let ino = std::fs::symlink_metadata(mnt.join("docs/deep/er/b.txt"))
        .expect("stat")
        .ino();
    first.kill_9();
    let err = std::fs::read_dir(&mnt).expect_err("the mount's process is gone");
    assert_eq!(err.raw_os_error(), Some(107), "ENOTCONN: {err}");

    let mut m = Mounted::start(&home, &[], &cap, &mnt);
    diff_r(&src, &mnt);
    assert_eq!(
        std::fs::symlink_metadata(mnt.join("docs/deep/er/b.txt"))
            .expect("stat")
            .ino(),
        ino,
        "a path keeps its inode number across mounts"
    );
    assert!(m.stop().success());
    let err = m
        .stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    assert!(
        err.contains("cleared a stale mount"),
        "the user is told: {err}"
    );
}

#[test]
fn a_mount_through_a_node_reads_what_other_nodes_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let homes: Vec<PathBuf> = (0..3)
        .map(|i| {
            let h = dir.path().join(format!("node-{i}"));
            assert!(run(&h, &["init"]).status.success(), "init node {i}");
            h
        })
        .collect();
    let first = common::start(&homes[0], None);
    let boot = first.addr.clone();
    let nodes = vec![
        Some(first),
        Some(common::start(&homes[1], Some(&boot))),
        Some(common::start(&homes[2], Some(&boot))),
    ];
    common::wait_for_mesh(&homes[0], &nodes);
    let api = |i: usize| nodes[i].as_ref().expect("up").api.clone();

    let src = dir.path().join("src");
    make_tree(&src);
    let cap = run_json(
        &homes[0],
        &[
            "--api",
            &api(0),
            "add",
            "-k",
            "2",
            "-m",
            "1",
            src.to_str().expect("utf-8"),
        ],
    )["cap"]
        .as_str()
        .expect("cap")
        .to_string();

    // Through node 2, which added nothing: every segment it needs comes from the others.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mut m = Mounted::start(&homes[2], &["--api", &api(2)], &cap, &mnt);
    diff_r(&src, &mnt);
    assert!(m.stop().success());
    assert!(!mounted(&mnt));

    // A CID no node holds is a clear error, with nothing mounted.
    let out = run(
        &homes[2],
        &[
            "--api",
            &api(2),
            "mount",
            "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
            mnt.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a public file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mounted(&mnt));
}
