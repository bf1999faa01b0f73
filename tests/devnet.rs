//! `huds devnet` as a user runs it: a real process, six nodes, the demo file stored and read back over the
//! network; SIGTERM stops it cleanly; started again on the same directory it resumes the same network and data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs the devnet until it prints its API line; returns what it printed, then stops it with SIGTERM.
fn run_once(dir: &std::path::Path) -> Vec<String> {
    let mut child = Command::new(common::huds())
        .args([
            "devnet",
            "--nodes",
            "6",
            "--api",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn devnet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let done = line.starts_with("api http://");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("devnet never became ready; it printed {lines:?}");
            }
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("devnet exits");
    assert!(status.success(), "devnet exited with {status} on SIGTERM");
    lines
}

fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}

#[test]
fn devnet_stores_and_reads_back_then_resumes_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = run_once(dir.path());
    assert_eq!(first.iter().filter(|l| l.starts_with("node ")).count(), 6);
    assert!(
        line(&first, "demo file").contains("stored: 18 shards on 6 nodes"),
        "{first:?}"
    );
    let read = first
        .iter()
        .find(|l| l.contains("read back through node 5"))
        .expect("read back line");
    assert!(read.ends_with("identical"), "{read}");
    let cap = line(&first, "capability ").to_string();

    let second = run_once(dir.path());
    let peers = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("node "))
            .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        peers(&first),
        peers(&second),
        "same peer ids after a restart"
    );
    assert!(
        !second.iter().any(|l| l.contains("stored:")),
        "the demo is not stored twice"
    );
    assert!(
        line(&second, "demo file").ends_with("identical"),
        "{second:?}"
    );
    assert_eq!(line(&second, "capability "), cap);
}
