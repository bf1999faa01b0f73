//! A 2 GiB file streams through `huds add`, `huds cat` and a `huds mount` with peak memory under 300 MiB.
#![allow(unsafe_code)] // getrusage: the only way to read children's peak RSS

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{Xorshift, new_home};
use sha2::{Digest, Sha256};

const SIZE: u64 = 2 << 30;
const PEAK_RSS_MAX_MIB: i64 = 300;

fn children_peak_rss_mib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer we pass, which is valid for writes.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss / 1024 // KiB on Linux
}

#[test]
fn two_gib_streams_in_bounded_memory() {
    let (_dir, home) = new_home();
    let mut child = common::spawn_add_stdin(&home, true, Stdio::piped());
    let mut stdin = child.stdin.take().expect("stdin");
    let mut rng = Xorshift(2026);
    let mut buf = vec![0u8; 4 << 20];
    let mut sent = Sha256::new();
    let mut left = SIZE;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        sent.update(&buf[..n]);
        stdin.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    drop(stdin);
    let out = child.wait_with_output().expect("add finishes");
    assert!(out.status.success());
    let add_peak = children_peak_rss_mib();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["size"], SIZE);

    let mut cat = Command::new(common::huds())
        .args([
            "--data",
            home.to_str().expect("utf-8"),
            "cat",
            v["cap"].as_str().expect("cap"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = cat.stdout.take().expect("stdout");
    let mut got = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.update(&buf[..n]);
        total += n as u64;
    }
    assert!(cat.wait().expect("cat finishes").success());
    let peak = children_peak_rss_mib();
    assert_eq!(total, SIZE);
    let got_digest = got.finalize();
    assert_eq!(got_digest, sent.finalize(), "bytes read back differ");
    assert!(add_peak < PEAK_RSS_MAX_MIB, "add peaked at {add_peak} MiB");
    assert!(peak < PEAK_RSS_MAX_MIB, "cat peaked at {peak} MiB");

    // The same file read through a mount: the kernel's page cache holds what it holds, the mount process
    // only its segment cache.
    let mnt = _dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mut m = common::mount::Mounted::start(&home, &[], v["cap"].as_str().expect("cap"), &mnt);
    let mut file = std::fs::File::open(mnt.join(v["cid"].as_str().expect("cid"))).expect("open");
    let mut through = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        through.update(&buf[..n]);
        total += n as u64;
    }
    drop(file);
    assert!(m.stop().success());
    let mount_peak = children_peak_rss_mib();
    assert_eq!(total, SIZE);
    assert_eq!(
        through.finalize(),
        got_digest,
        "bytes read through the mount differ"
    );
    eprintln!("peak RSS: add {add_peak} MiB, add+cat {peak} MiB, with the mount {mount_peak} MiB");
    assert!(
        mount_peak < PEAK_RSS_MAX_MIB,
        "the mount peaked at {mount_peak} MiB"
    );
}
