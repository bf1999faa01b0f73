//! A `huds add` killed with SIGKILL part-way leaves the home readable and consistent: earlier files read back,
//! nothing of the killed add is listed, its shards are collected, and the next add works.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use huds::BlockStore;

use common::{Xorshift, new_home, run, run_json};

#[test]
fn killed_adds_leave_the_home_whole() {
    let (dir, home) = new_home();
    let keep = dir.path().join("keep.bin");
    let mut data = vec![0u8; 3_000_000];
    Xorshift(1).fill(&mut data);
    std::fs::write(&keep, &data).expect("write");
    let kept = run_json(&home, &["add", keep.to_str().expect("utf-8")]);
    let shards_before = huds::Store::open(&home.join("db"))
        .expect("open")
        .shard_stats()
        .expect("stats")
        .0;

    // Kill at several depths: shards only in memory, some flushed to disk, many segments in.
    for (round, kill_after_mib) in [1usize, 24, 80].into_iter().enumerate() {
        let mut child = common::spawn_add_stdin(&home, false, Stdio::null());
        let mut stdin = child.stdin.take().expect("stdin");
        let mut rng = Xorshift(100 + round as u64);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..kill_after_mib {
            rng.fill(&mut buf);
            stdin.write_all(&buf).expect("the add is still reading");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        drop(stdin);

        let out = run(&home, &["cat", kept["cap"].as_str().expect("cap")]);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data, "round {round}: earlier file changed");
    }

    // Opening the store recovers: one pin, and only the kept file's shards.
    {
        let store =
            Arc::new(huds::Store::open(&home.join("db")).expect("store opens after the kills"));
        let pins = store.pins().expect("pins");
        assert_eq!(pins.len(), 1, "only the completed add is pinned");
        let (shards, _) = store.shard_stats().expect("stats");
        assert_eq!(
            shards, shards_before,
            "orphan shards of the killed adds were collected"
        );
    }
    let again = run_json(&home, &["add", keep.to_str().expect("utf-8")]);
    assert_eq!(again["cid"], kept["cid"]);
}
