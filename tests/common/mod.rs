//! Helpers for tests that run the real `huds` binary.
#![allow(dead_code)]

pub mod lying;
pub mod mount;

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
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

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

/// `GET {api}/metrics` of a running node, parsed by a Prometheus text-format parser (not the crate that wrote
/// it).
pub fn scrape(api: &str) -> prometheus_parse::Scrape {
    let mut resp = ureq::get(&format!("{api}/metrics"))
        .call()
        .expect("GET /metrics answers");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp
        .body_mut()
        .read_to_string()
        .expect("the metrics are text");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the metrics parse as the Prometheus text format")
}

/// The repository's root as cargo names it when it runs the test (a binary built from another clone into a
/// shared target directory would otherwise read that clone's files).
pub fn repo() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// The sample names `specs/metrics.md` lists in the section whose heading starts with `section`.
pub fn spec_metric_names(section: &str) -> Vec<String> {
    let spec = std::fs::read_to_string(repo().join("specs/metrics.md")).expect("specs/metrics.md");
    let body = spec
        .split("\n## ")
        .find(|s| s.starts_with(section))
        .unwrap_or_else(|| panic!("no section {section:?} in specs/metrics.md"));
    let names: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("| `huds_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("huds_{n}"))
        .collect();
    assert!(!names.is_empty(), "section {section:?} names no metric");
    names
}

/// The value of the sample `name` whose labels include every pair of `labels` (summed over the others).
pub fn sample_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Panics unless every name of `names` has a sample in `scrape` (a histogram by its base name).
pub fn assert_metrics_present(scrape: &prometheus_parse::Scrape, names: &[String]) {
    for name in names {
        assert!(
            scrape.samples.iter().any(|s| &s.metric == name),
            "/metrics has no {name} (specs/metrics.md names it); it has: {:?}",
            scrape
                .samples
                .iter()
                .map(|s| s.metric.as_str())
                .collect::<std::collections::BTreeSet<_>>()
        );
    }
}
