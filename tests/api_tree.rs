//! Trees through a node's `--api`, with real `huds node` processes on 127.0.0.1: a site folder of 1,000 files
//! added through one node has the CID a local `huds add` gives it, and `get` through another node restores it
//! byte for byte, a path ending at a symlink comes back as the link; the gateway takes a tree as the node API
//! does; hostile tar streams are refused with a clear error and leave nothing behind, and so is an upload larger
//! than the spool's disk (a real, small tmpfs), with 507.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{NodeProc, start, wait_for_mesh};

const NODES: usize = 3;

fn init(dir: &Path, name: &str) -> PathBuf {
    let h = dir.join(name);
    let out = common::run(&h, &["init"]);
    assert!(
        out.status.success(),
        "init {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h
}

/// A site folder: 1,000 files in nested directories, a few empty files, one file larger than a 4 MiB segment,
/// names with spaces and non-ASCII letters, an empty directory and a symlink.
fn make_site(root: &Path) {
    let mut rng = common::Xorshift(2026);
    let mut files = 0;
    for d in 0..10 {
        for s in 0..4 {
            let dir = root
                .join(format!("section {d}"))
                .join(format!("päge-{s} ✓"));
            fs::create_dir_all(&dir).expect("mkdir");
            for f in 0..25 {
                let len = match f {
                    0 if s == 0 => 0, // ten empty files
                    _ => (f * 997 + d * 31 + s * 7) % 20_000,
                };
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                fs::write(dir.join(format!("file {f} ünï.html")), &data).expect("write");
                files += 1;
            }
        }
    }
    assert_eq!(files, 1000);
    // One more file, larger than a segment, replaces one of the thousand.
    let mut big = vec![0u8; 5 * 1024 * 1024 + 12_345];
    rng.fill(&mut big);
    fs::write(root.join("section 0/päge-1 ✓/file 3 ünï.html"), &big).expect("write");
    fs::create_dir(root.join("empty dir")).expect("mkdir");
    std::os::unix::fs::symlink("section 0/päge-0 ✓", root.join("latest")).expect("symlink");
}

/// Every entry under `root`: its relative path and what it is (file bytes' hash, directory, symlink target).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            let what = if ft.is_symlink() {
                format!("symlink {}", fs::read_link(&path).expect("link").display())
            } else if ft.is_dir() {
                stack.push(path);
                "dir".to_string()
            } else {
                let bytes = fs::read(&path).expect("read");
                format!("file {} {}", bytes.len(), blake3::hash(&bytes).to_hex())
            };
            out.insert(rel, what);
        }
    }
    out
}

#[test]
fn a_tree_added_through_one_node_has_the_local_cid_and_comes_back_whole_through_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("my site");
    fs::create_dir(&site).expect("mkdir");
    make_site(&site);
    let site_arg = site.to_str().expect("utf-8 path");

    let (_scratch, local) = common::new_home();
    let local_added = common::run_json(&local, &["add", site_arg]);
    let local_cid = local_added["cid"].as_str().expect("cid").to_string();

    let homes: Vec<PathBuf> = (0..NODES)
        .map(|i| init(dir.path(), &format!("node-{i}")))
        .collect();
    let first = start(&homes[0], None);
    let boot = first.addr.clone();
    let mut nodes: Vec<Option<NodeProc>> = vec![Some(first)];
    for h in &homes[1..] {
        nodes.push(Some(start(h, Some(&boot))));
    }
    wait_for_mesh(&homes[0], &nodes);
    let api = |i: usize| nodes[i].as_ref().expect("up").api.clone();

    let added = common::run_json(&homes[0], &["--api", &api(0), "add", site_arg]);
    assert_eq!(
        added["cid"].as_str(),
        Some(local_cid.as_str()),
        "through --api: {added}"
    );
    assert_eq!(added["size"], local_added["size"]);
    let cap = added["cap"].as_str().expect("cap").to_string();

    let out = dir.path().join("restored");
    let got = common::run_json(
        &homes[NODES - 1],
        &[
            "--api",
            &api(NODES - 1),
            "get",
            &cap,
            "-o",
            out.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(got["kind"], "directory", "{got}");
    assert_eq!(got["cid"].as_str(), Some(local_cid.as_str()));
    let (want, have) = (snapshot(&site), snapshot(&out));
    assert_eq!(want.len(), 1000 + 51 + 1, "files, directories, the symlink");
    assert_eq!(want, have, "the restored tree differs");
    assert!(!dir.path().join("restored.huds-partial").exists());

    // A subdirectory by path, and a single file, through the same route.
    let sub = dir.path().join("sub");
    let target = format!("{cap}/section 3");
    common::run_json(
        &homes[1],
        &[
            "--api",
            &api(1),
            "get",
            &target,
            "-o",
            sub.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(
        snapshot(&sub),
        snapshot(&site.join("section 3")),
        "subdirectory"
    );
    let one = dir.path().join("one.html");
    let target = format!("{cap}/section 0/päge-1 ✓/file 3 ünï.html");
    let got = common::run_json(
        &homes[1],
        &[
            "--api",
            &api(1),
            "get",
            &target,
            "-o",
            one.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(got["kind"], "file");
    assert_eq!(
        fs::read(&one).expect("read"),
        fs::read(site.join("section 0/päge-1 ✓/file 3 ünï.html")).expect("read")
    );

    // A path that ends at a symlink gets the link itself, not followed, as a local `huds get` makes it.
    let link = dir.path().join("link through api");
    let target = format!("{cap}/latest");
    let got = common::run_json(
        &homes[1],
        &[
            "--api",
            &api(1),
            "get",
            &target,
            "-o",
            link.to_str().expect("utf-8 path"),
        ],
    );
    let local_link = dir.path().join("link locally");
    let local_target = format!("{}/latest", local_added["cap"].as_str().expect("cap"));
    let local_got = common::run_json(
        &local,
        &[
            "get",
            &local_target,
            "-o",
            local_link.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(got["kind"], "symlink", "{got}");
    assert_eq!(got["kind"], local_got["kind"]);
    assert_eq!(got["cid"], local_got["cid"]);
    for l in [&link, &local_link] {
        assert!(
            fs::symlink_metadata(l)
                .expect("stat")
                .file_type()
                .is_symlink(),
            "{} is a symlink",
            l.display()
        );
        assert_eq!(
            fs::read_link(l).expect("link"),
            Path::new("section 0/päge-0 ✓")
        );
    }
    assert!(!dir.path().join("link through api.huds-partial").exists());

    // Options reach the node as they would a local add: a public tree with k=2, m=1 has the same CID.
    let small = dir.path().join("small");
    fs::create_dir_all(small.join("a/b")).expect("mkdir");
    fs::write(small.join("a/b/c.txt"), b"hello tree").expect("write");
    fs::write(small.join("index.html"), b"<h1>hi</h1>").expect("write");
    let args = ["add", "--public", "-k", "2", "-m", "1"];
    let small_arg = small.to_str().expect("utf-8 path");
    let local_small = common::run_json(&local, &[&args[..], &[small_arg]].concat());
    let remote_small = common::run_json(
        &homes[0],
        &[&["--api", &api(0)][..], &args[..], &[small_arg]].concat(),
    );
    assert_eq!(local_small["cid"], remote_small["cid"]);
    let cid = remote_small["cap"].as_str().expect("cap");
    let back = dir.path().join("small back");
    common::run_json(
        &homes[2],
        &[
            "--api",
            &api(2),
            "get",
            cid,
            "-o",
            back.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(snapshot(&small), snapshot(&back));

    // The spool keeps nothing of the uploads.
    let spool = homes[0].join("spool");
    let left = spool_left(&spool);
    assert!(left.is_empty(), "left in the spool: {left:?}");
}

/// A tar entry written byte by byte: the tar crate's builder refuses to write hostile paths.
fn raw_entry(out: &mut Vec<u8>, path: &[u8], kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// What the node's spool holds once it is done: an upload broken off by the client is cleaned up by the
/// node's worker when it notices, a moment after the client has gone.
fn spool_left(spool: &Path) -> Vec<PathBuf> {
    let started = std::time::Instant::now();
    loop {
        let left: Vec<PathBuf> = fs::read_dir(spool)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() || started.elapsed() > std::time::Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn token(home: &Path) -> String {
    let text = fs::read_to_string(home.join("config.toml")).expect("config");
    let config: toml::Value = toml::from_str(&text).expect("toml");
    config["api"]["token"]
        .as_str()
        .expect("a token")
        .to_string()
}

/// POSTs `body` as a tree upload; returns the status and the answer's text.
fn post_tree(api: &str, token: &str, body: &[u8]) -> (u16, String) {
    let mut resp = ureq::post(format!("{api}/api/v0/add?format=tar&name=site"))
        .header("authorization", format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .expect("the node answers");
    let status = resp.status().as_u16();
    (
        status,
        resp.body_mut().read_to_string().expect("answer text"),
    )
}

#[test]
fn hostile_tar_streams_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = init(dir.path(), "node");
    let node = start(&home, None);
    let token = token(&home);
    let outside = dir.path().join("absolute-target");
    let outside_bytes = outside.to_str().expect("utf-8 path").as_bytes().to_vec();

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut escape = Vec::new();
    raw_entry(&mut escape, b"ok.txt", tar::EntryType::Regular, b"fine");
    raw_entry(&mut escape, b"../escape", tar::EntryType::Regular, b"out");
    escape.extend_from_slice(&[0u8; 1024]);
    cases.push(("dot-dot", escape, "`..`"));
    let mut absolute = Vec::new();
    raw_entry(
        &mut absolute,
        &outside_bytes,
        tar::EntryType::Regular,
        b"out",
    );
    absolute.extend_from_slice(&[0u8; 1024]);
    cases.push(("absolute", absolute, "absolute path"));
    let mut link = Vec::new();
    raw_entry(&mut link, b"hard", tar::EntryType::Link, b"");
    link.extend_from_slice(&[0u8; 1024]);
    cases.push(("hard link", link, "hard link"));
    cases.push(("garbage", vec![0x42u8; 4096], "reading the tar stream"));
    let mut cut = Vec::new();
    raw_entry(&mut cut, b"a.txt", tar::EntryType::Regular, b"a");
    cases.push(("cut short", cut, "cut short"));

    for (what, body, why) in cases {
        let (status, text) = post_tree(&node.api, &token, &body);
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(why), "{what}: {text}");
    }
    assert!(!dir.path().join("escape").exists());
    assert!(!home.join("escape").exists());
    assert!(!outside.exists());
    let spool = home.join("spool");
    let left = spool_left(&spool);
    assert!(left.is_empty(), "left in the spool: {left:?}");

    // Without the token the upload is refused before anything is spooled.
    let (status, _) = post_tree(&node.api, "wrong", &[0u8; 1024]);
    assert_eq!(status, 401);

    // The CLI refuses to send a tree holding what cannot be stored, and says what it is.
    let tree = dir.path().join("with fifo");
    fs::create_dir(&tree).expect("mkdir");
    fs::write(tree.join("a.txt"), b"a").expect("write");
    let fifo = tree.join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs")
            .success()
    );
    let out = common::run(
        &home,
        &[
            "--api",
            &node.api,
            "add",
            tree.to_str().expect("utf-8 path"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("special file"), "{err}");
    let left = spool_left(&spool);
    assert!(left.is_empty(), "left in the spool: {left:?}");
}

/// A `huds node` started with its gateway; killed when dropped.
struct GatewayNode {
    child: std::process::Child,
    api: String,
    gateway: String,
}

impl Drop for GatewayNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_with_gateway(home: &Path) -> GatewayNode {
    use std::io::BufRead;
    let mut child = std::process::Command::new(common::huds())
        .arg("--data")
        .arg(home)
        .args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn huds node");
    let stdout = child.stdout.take().expect("stdout");
    let mut node = GatewayNode {
        child,
        api: String::new(),
        gateway: String::new(),
    };
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 output");
        if let Some(g) = line.strip_prefix("gateway ") {
            node.gateway = g.to_string();
        } else if let Some(a) = line.strip_prefix("api ") {
            node.api = a.to_string();
            break;
        }
    }
    assert!(
        !node.api.is_empty() && !node.gateway.is_empty(),
        "huds node printed its gateway and api lines"
    );
    node
}

#[test]
fn a_tree_uploaded_through_the_gateway_has_the_local_cid_and_is_served_by_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    fs::create_dir_all(site.join("docs/guide")).expect("mkdir");
    fs::write(site.join("index.html"), b"<h1>home</h1>").expect("write");
    let mut page = vec![0u8; 300_000];
    common::Xorshift(7).fill(&mut page);
    fs::write(site.join("docs/guide/intro ü.bin"), &page).expect("write");
    std::os::unix::fs::symlink("docs/guide", site.join("guide")).expect("symlink");
    let site_arg = site.to_str().expect("utf-8 path");

    let (_scratch, local) = common::new_home();
    let local_added = common::run_json(&local, &["add", "--public", site_arg]);

    let home = init(dir.path(), "node");
    let node = start_with_gateway(&home);
    // The CLI's `--api` pointed at the gateway: its upload route takes the tar stream as the node API does.
    let added = common::run_json(
        &home,
        &["--api", &node.gateway, "add", "--public", site_arg],
    );
    assert_eq!(added["cid"], local_added["cid"], "{added}");
    let cid = added["cid"].as_str().expect("cid");

    let get = |path: &str| -> (u16, Vec<u8>) {
        let mut resp = ureq::get(format!("{}{path}", node.gateway))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .expect("the gateway answers");
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .expect("the body");
        (status, body)
    };
    assert_eq!(
        get(&format!("/ipfs/{cid}/docs/guide/intro%20%C3%BC.bin")),
        (200, page.clone())
    );
    assert_eq!(
        get(&format!("/ipfs/{cid}/")),
        (200, b"<h1>home</h1>".to_vec())
    );
    let cap = added["cap"].as_str().expect("cap");
    assert_eq!(
        get(&format!("/huds/{cap}/docs/guide/intro%20%C3%BC.bin")),
        (200, page)
    );

    // Without the token the gateway refuses the tree before the node sees it.
    let mut resp = ureq::post(format!("{}/api/v0/add?format=tar", node.gateway))
        .config()
        .http_status_as_error(false)
        .build()
        .send(&[0u8; 1024][..])
        .expect("the gateway answers");
    assert_eq!(resp.status().as_u16(), 401);
    let _ = resp.body_mut().read_to_string();
    let left = spool_left(&home.join("spool"));
    assert!(left.is_empty(), "left in the spool: {left:?}");
}

/// A tmpfs mounted for a test, unmounted when dropped (the test failing included).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it) on `path`; the reason it could not, if not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount cannot run: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(path.to_path_buf()))
        } else {
            Err(format!(
                "mount is not permitted here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.0).status().is_ok_and(|s| s.success())
        };
        // A process still holding a file there makes a plain unmount fail; detach it then.
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs at {}", self.0.display());
        }
    }
}

/// POSTs `body` to the node's add route with `query`; returns the status and the answer's text.
fn post_add(api: &str, token: &str, query: &str, body: &[u8]) -> (u16, String) {
    let mut resp = ureq::post(format!("{api}/api/v0/add?{query}"))
        .header("authorization", format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .expect("the node answers");
    let status = resp.status().as_u16();
    (
        status,
        resp.body_mut().read_to_string().expect("answer text"),
    )
}

#[test]
fn a_full_spool_answers_507_keeps_nothing_and_the_node_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = init(dir.path(), "node");
    let spool = home.join("spool");
    fs::create_dir_all(&spool).expect("mkdir");
    // Declared before the node, so the node is stopped before the tmpfs is unmounted.
    let _tmpfs = match Tmpfs::mount(&spool, "2m") {
        Ok(m) => m,
        Err(why) => {
            println!("skipping the disk-full test: {why}");
            return;
        }
    };
    let node = start(&home, None);
    let token = token(&home);
    let before = dir.path().join("before.txt");
    fs::write(&before, b"stored before the disk filled").expect("write");
    let stored = common::run_json(
        &home,
        &["--api", &node.api, "add", before.to_str().expect("utf-8")],
    );

    // A file larger than the spool's 2 MiB.
    let mut big = vec![0u8; 3 * 1024 * 1024];
    common::Xorshift(507).fill(&mut big);
    let (status, text) = post_add(&node.api, &token, "name=big.bin", &big);
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("the node's disk is full"), "{text}");
    assert!(spool_left(&spool).is_empty(), "the file's spool is removed");

    // A tree larger than the spool, through the CLI, which says why.
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).expect("mkdir");
    for i in 0..3 {
        fs::write(
            tree.join(format!("part {i}")),
            &big[i * 1_048_576..][..1_048_576],
        )
        .expect("write");
    }
    let out = common::run(
        &home,
        &["--api", &node.api, "add", tree.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("507") && err.contains("the node's disk is full"),
        "{err}"
    );
    let left = spool_left(&spool);
    assert!(left.is_empty(), "left in the spool: {left:?}");

    // The node still serves what it had and takes an upload that fits.
    let cat = |target: &str| -> Vec<u8> {
        let out = common::run(&home, &["--api", &node.api, "cat", target]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        cat(stored["cap"].as_str().expect("cap")),
        b"stored before the disk filled"
    );
    let (status, text) = post_add(&node.api, &token, "name=small.txt", b"fits after all");
    assert_eq!(status, 200, "{text}");
    let small: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(cat(small["cap"].as_str().expect("cap")), b"fits after all");
    assert!(spool_left(&spool).is_empty());
}
