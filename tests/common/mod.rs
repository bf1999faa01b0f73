//! Helpers for tests that run the real `huds` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn huds() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_huds"))
}

/// Runs `huds --data HOME ARGS...` and returns its output.
pub fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(huds())
        .arg("--data")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("huds runs")
}

/// Runs a command that must succeed and parses its `--json` stdout.
pub fn run_json(home: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = run(home, &full);
    assert!(
        out.status.success(),
        "huds {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("huds {args:?}: bad JSON ({e}): {:?}", out.stdout))
}

/// A fresh initialised home in a temp dir.
pub fn new_home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let out = run(&home, &["init"]);
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, home)
}

/// Fast deterministic bytes (xorshift64).
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Starts `huds --data HOME [--json] add -` with standard input on a pipe and stdout as given.
pub fn spawn_add_stdin(home: &Path, json: bool, stdout: Stdio) -> std::process::Child {
    let mut cmd = Command::new(huds());
    cmd.arg("--data").arg(home);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["add", "-"])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("huds add runs")
}

/// A running `huds node`; killed with SIGKILL when dropped, so a failing test leaves no process behind.
pub struct NodeProc {
    child: Child,
    pub api: String,
    /// `/ip4/127.0.0.1/tcp/PORT/p2p/PEER`: how others join through it.
    pub addr: String,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(home: &Path, bootstrap: Option<&str>) -> NodeProc {
    let mut cmd = Command::new(huds());
    cmd.arg("--data").arg(home).args([
        "node",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
    ]);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn huds node");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut addr, mut api) = (None, None);
    while api.is_none() {
        let line = lines
            .next()
            .expect("huds node printed its api line")
            .expect("utf-8 output");
        // "peer <peer-id> listening on <multiaddr>"
        if let ["peer", peer, "listening", "on", a] = line.split(' ').collect::<Vec<_>>()[..] {
            addr = Some(format!("{a}/p2p/{peer}"));
        } else if let Some(a) = line.strip_prefix("api ") {
            api = Some(a.to_string());
        }
    }
    NodeProc {
        child,
        api: api.expect("api line"),
        addr: addr.expect("a listening line before the api line"),
    }
}

pub fn status(home: &Path, api: &str) -> serde_json::Value {
    run_json(home, &["--api", api, "node", "status"])
}

pub fn wait_for_mesh(home: &Path, nodes: &[Option<NodeProc>]) {
    let live: Vec<&NodeProc> = nodes.iter().flatten().collect();
    let started = Instant::now();
    for n in &live {
        while status(home, &n.api)["peers"].as_u64() != Some(live.len() as u64 - 1) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nodes did not find each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
