//! Six `huds node` processes on 127.0.0.1, each with its own home, driven through the CLI's `--api`: a file added
//! on one is read on another; nodes holding shards are killed with SIGKILL (m of them: still readable; one more:
//! a clear error within 30 s); restarted on their homes they serve their shards again.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{NodeProc, start, status, wait_for_mesh};

use sha2::{Digest, Sha256};

const NODES: usize = 6;

fn homes(dir: &Path) -> Vec<PathBuf> {
    (0..NODES)
        .map(|i| {
            let h = dir.join(format!("node-{i}"));
            let out = common::run(&h, &["init"]);
            assert!(out.status.success(), "init node {i}");
            h
        })
        .collect()
}

/// `huds --api API cat CAP`: the bytes' sha256, or the error the CLI printed, and how long it took.
fn cat(home: &Path, api: &str, cap: &str) -> (Result<[u8; 32], String>, Duration) {
    let started = Instant::now();
    let out = common::run(home, &["--api", api, "cat", cap]);
    let took = started.elapsed();
    if out.status.success() {
        (Ok(Sha256::digest(&out.stdout).into()), took)
    } else {
        (Err(String::from_utf8_lossy(&out.stderr).into_owned()), took)
    }
}

#[test]
fn nodes_killed_with_sigkill_leave_files_readable_until_k_and_serve_again_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let homes = homes(dir.path());
    let first = start(&homes[0], None);
    let boot = first.addr.clone();
    let mut nodes: Vec<Option<NodeProc>> = vec![Some(first)];
    for h in &homes[1..] {
        nodes.push(Some(start(h, Some(&boot))));
    }
    wait_for_mesh(&homes[0], &nodes);

    let mut data = vec![0u8; 20 << 20];
    common::Xorshift(77).fill(&mut data);
    let expected: [u8; 32] = Sha256::digest(&data).into();
    let file = dir.path().join("input.bin");
    std::fs::write(&file, &data).expect("write input");
    let api = |i: usize, nodes: &[Option<NodeProc>]| nodes[i].as_ref().expect("up").api.clone();
    let added = common::run_json(
        &homes[0],
        &[
            "--api",
            &api(0, &nodes),
            "add",
            file.to_str().expect("utf-8 path"),
        ],
    );
    let cap = added["cap"].as_str().expect("cap").to_string();

    let reader = NODES - 1;
    let (got, _) = cat(&homes[reader], &api(reader, &nodes), &cap);
    assert_eq!(got.expect("read on another node"), expected);

    // The nodes that hold shards, other than the reader, in the order we will kill them.
    let holders: Vec<usize> = (0..reader)
        .filter(|&i| status(&homes[i], &api(i, &nodes))["shards"].as_u64() > Some(0))
        .collect();
    assert!(
        holders.len() >= 3,
        "shards on only {holders:?} besides the reader"
    );

    for &i in &holders[..2] {
        drop(nodes[i].take()); // SIGKILL
    }
    let (got, _) = cat(&homes[reader], &api(reader, &nodes), &cap);
    assert_eq!(got.expect("readable with m = 2 nodes killed"), expected);

    drop(nodes[holders[2]].take());
    let (got, took) = cat(&homes[reader], &api(reader, &nodes), &cap);
    let err = got.expect_err("unreadable with m + 1 nodes killed");
    assert!(took < Duration::from_secs(30), "the error took {took:?}");
    eprintln!("after {took:?}: {err}");
    assert!(
        err.contains("could not be rebuilt") || err.contains("shards found"),
        "{err}"
    );

    // Restarted on their homes, the killed nodes rejoin and serve their shards again: with two nodes that were
    // never killed now down, the read needs them.
    let boot = nodes[reader].as_ref().expect("up").addr.clone();
    for &i in &holders[..3] {
        nodes[i] = Some(start(&homes[i], Some(&boot)));
    }
    wait_for_mesh(&homes[0], &nodes);
    let never_killed: Vec<usize> = (0..reader).filter(|i| !holders[..3].contains(i)).collect();
    for &i in never_killed.iter().take(2) {
        drop(nodes[i].take());
    }
    let (got, _) = cat(&homes[reader], &api(reader, &nodes), &cap);
    assert_eq!(got.expect("readable from the restarted nodes"), expected);
}
