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
    // Should a bad target ever mount, the directory is still cleared when the test ends.
    let _cleanup = Unmount(mnt.clone());

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

    fails("-", mnt_s, "no target on standard input");

    // The capability on standard input (`-`) stays out of the command line every local user can read.
    {
        use std::io::{BufRead, Write};
        let mut child = Command::new(common::huds())
            .arg("--data")
            .arg(&home)
            .args(["mount", "-", mnt_s])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("huds mount runs");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{cap}").expect("write the capability");
        drop(stdin);
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).expect("cmdline");
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.starts_with("mounted "), "{line}");
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("huds:"),
            "the capability is on the command line"
        );
        let _ = Command::new("fusermount3")
            .args(["-u", "-z", mnt_s])
            .status();
    }

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

    // Named through `..`, as the mount table never writes it: still found and cleared.
    let roundabout = dir.path().join("src/../mnt");
    let mut m = Mounted::start(&home, &[], &cap, &roundabout);
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

    // The node lists what it added, to its token's holder only.
    let pins = run_json(&homes[0], &["--api", &api(0), "pins"]);
    assert_eq!(pins["pins"].as_array().expect("pins").len(), 1, "{pins}");
    assert_eq!(pins["pins"][0]["name"], "src");
    assert!(pins["pins"][0].get("cap").is_none());
    let out = run(&homes[2], &["--api", &api(0), "pins"]);
    assert!(!out.status.success(), "another home's token lists nothing");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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

/// How a stub node misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Stub {
    /// Answers `resolve` of one CID with the capability of another file.
    Swap,
    /// Answers the first 4 shard requests truly (the segment holding the root, which the mount opens before it
    /// mounts), then every shard with 32 MiB of zeros.
    Huge,
    /// Answers the first 4 shard requests truly, then never answers one.
    Stall,
}

/// A node API on 127.0.0.1 that serves manifests and shards from a home's store (opened read-only) and public
/// CIDs from a fixed table, misbehaving as `mode` says.
fn stub_node(
    home: &Path,
    public: Vec<(String, String)>,
    swap: Option<(String, String)>,
    mode: Stub,
) -> String {
    use huds::BlockStore;
    use std::io::{BufRead, BufReader, Write};
    let store =
        std::sync::Arc::new(huds::Store::open_read_only(&home.join("db")).expect("open store"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shards_served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let store = store.clone();
            let shards_served = shards_served.clone();
            let public = public.clone();
            let swap = swap.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split(' ').nth(1).unwrap_or("").to_string();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let (path, arg) = target.split_once("?arg=").unwrap_or((&target, ""));
                    let (status, body): (&str, Vec<u8>) = match path {
                        "/api/v0/resolve" => {
                            let cap = match &swap {
                                Some((asked, other)) if asked == arg => Some(other.clone()),
                                _ => public
                                    .iter()
                                    .find(|(c, _)| c == arg)
                                    .map(|(_, k)| k.clone()),
                            };
                            match cap {
                                Some(cap) => (
                                    "200 OK",
                                    format!(r#"{{"cid":"{arg}","cap":"{cap}"}}"#).into_bytes(),
                                ),
                                None => ("404 Not Found", b"{}".to_vec()),
                            }
                        }
                        "/api/v0/block" => {
                            let cid = huds::cids::parse(arg).expect("a CID");
                            match store.manifest(&cid).expect("read") {
                                Some(m) => ("200 OK", m),
                                None if mode != Stub::Swap
                                    && shards_served
                                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                                        >= 4 =>
                                {
                                    if mode == Stub::Stall {
                                        std::thread::sleep(Duration::from_secs(3600));
                                        return;
                                    }
                                    ("200 OK", vec![0u8; 32 << 20])
                                }
                                None => match store.shard(&cid).expect("read") {
                                    Some(s) => ("200 OK", s),
                                    None => ("404 Not Found", Vec::new()),
                                },
                            }
                        }
                        _ => ("404 Not Found", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n",
                        body.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Peak resident memory of a process, from `/proc/PID/status` (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

#[test]
fn a_node_that_lies_floods_or_stalls_gets_no_wrong_byte_no_memory_and_no_hang() {
    let (dir, home) = new_home();
    let file = |name: &str, bytes: &[u8]| {
        let f = dir.path().join(name);
        std::fs::write(&f, bytes).expect("write");
        let v = run_json(&home, &["add", "--public", f.to_str().expect("utf-8")]);
        (
            v["cid"].as_str().expect("cid").to_string(),
            v["cap"].as_str().expect("cap").to_string(),
        )
    };
    let (a_cid, a_cap) = file("a.txt", b"the file asked for\n");
    let (b_cid, b_cap) = file("b.txt", &vec![b'b'; 3 << 20]);
    let public = vec![(a_cid.clone(), a_cap), (b_cid.clone(), b_cap)];
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let _cleanup = Unmount(mnt.clone());
    let mnt_s = mnt.to_str().expect("utf-8");

    // A node that answers one CID with another file's capability: refused, nothing mounted.
    let api = stub_node(
        &home,
        public.clone(),
        Some((a_cid.clone(), public[1].1.clone())),
        Stub::Swap,
    );
    let out = run(&home, &["--api", &api, "mount", &a_cid, mnt_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a swapped file was mounted");
    assert!(err.contains("with another file"), "{err}");
    assert!(!mounted(&mnt));

    // A node that answers shards with 32 MiB bodies: the read fails (EIO), nothing past a shard's size is
    // read, and the mount stays small.
    let api = stub_node(&home, public.clone(), None, Stub::Huge);
    let m = Mounted::start(&home, &["--api", &api], &b_cid, &mnt);
    let err = std::fs::read(mnt.join(&b_cid)).expect_err("no shard is good");
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    let pid = m.child.as_ref().expect("running").id();
    let peak = peak_rss_mib(pid);
    assert!(peak < 150, "the mount peaked at {peak} MiB");
    drop(m);
    assert!(!mounted(&mnt));

    // A node that never answers a shard: a reader hangs on it, but SIGTERM detaches the mount and a second
    // SIGTERM ends the process at once.
    let api = stub_node(&home, public, None, Stub::Stall);
    let mut m = Mounted::start(&home, &["--api", &api], &b_cid, &mnt);
    let mut reader = Command::new("cat")
        .arg(mnt.join(&b_cid))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cat runs");
    std::thread::sleep(Duration::from_millis(500));
    m.term();
    let started = std::time::Instant::now();
    while mounted(&mnt) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGTERM detaches"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.term();
    let status = m
        .exited(Duration::from_secs(10))
        .expect("a second SIGTERM ends it at once");
    assert!(!status.success());
    let _ = reader.kill();
    let _ = reader.wait();
}
