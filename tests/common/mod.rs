//! Helpers for tests that run the real `huds` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
