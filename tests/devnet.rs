//! `huds devnet` as a user runs it: a real process, six nodes, the demo file stored and read back over the
//! network; SIGTERM stops it cleanly; started again on the same directory it resumes the same network and data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs the devnet until it prints its API line, runs `during` against it, then stops it with SIGTERM; returns
/// what it printed.
fn run_once(dir: &std::path::Path, during: impl FnOnce(&[String])) -> Vec<String> {
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
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
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
                let done = line.starts_with("devnet ready");
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
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| during(&lines)));
    if let Err(panic) = result {
        let _ = child.kill();
        std::panic::resume_unwind(panic);
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
    let first = run_once(dir.path(), |lines| {
        api_and_gateway(dir.path(), lines);
        hints_run_as_printed(lines);
        metrics_name_storage_and_chain(lines);
    });
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

    let second = run_once(dir.path(), |_| {});
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

fn http_get(addr: &str, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    (
        String::from_utf8_lossy(&buf[..end]).into_owned(),
        buf[end + 4..].to_vec(),
    )
}

/// The CLI's `--api` uploads with the token of the home it is given; the gateway serves what it added.
fn api_and_gateway(dir: &std::path::Path, lines: &[String]) {
    let api = line(lines, "api ").trim_start_matches("api ").to_string();
    let gateway = line(lines, "gateway http://")
        .trim_start_matches("gateway http://")
        .to_string();
    let file = dir.join("upload.txt");
    std::fs::write(&file, b"through the API, with the token").expect("write");
    let node0 = dir.join("node-0");
    let file_arg = file.to_str().expect("utf-8 path");
    let added = common::run_json(&node0, &["--api", &api, "add", file_arg]);
    let cap = added["cap"].as_str().expect("cap");
    let (head, body) = http_get(&gateway, &format!("/huds/{cap}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"through the API, with the token");
    let (head, page) = http_get(&gateway, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&page).contains("HUDS network"));
    page_shows_nodes_and_shard_heights(dir, &gateway, lines);

    let out = Command::new(common::huds())
        .args(["--data"])
        .arg(dir.join("no-home"))
        .args(["--api", &api, "add", file_arg])
        .env("HUDS_API_TOKEN", "wrong")
        .output()
        .expect("huds runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
}

/// The status page in headless Chromium, against the whole devnet: every node, and each shard chain with a
/// height above zero (the validators are finalising blocks).
fn page_shows_nodes_and_shard_heights(dir: &std::path::Path, gateway: &str, lines: &[String]) {
    let api = line(lines, "api ").trim_start_matches("api ").to_string();
    let chain_status =
        || common::run_json(&dir.join("no-home"), &["--api", &api, "chain", "status"]);
    let before = chain_status();
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(format!("http://{gateway}/"))
        .output()
        .expect("chromium runs (scripts/setup.sh installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    for l in lines.iter().filter(|l| l.starts_with("node ")) {
        let peer = l.split_whitespace().nth(3).expect("node N peer ID ...");
        assert!(
            dom.contains(peer),
            "the page does not show node {peer}:\n{dom}"
        );
    }
    assert!(
        dom.contains("<div id=\"chain\" class=\"\">"),
        "the chain is connected:\n{dom}"
    );
    let heights: Vec<u64> = dom
        .split("<td class=\"num height\">")
        .skip(1)
        .filter_map(|rest| rest.split('<').next()?.trim().parse().ok())
        .collect();
    assert_eq!(heights.len(), 2, "one row per shard chain:\n{dom}");
    assert!(heights.iter().all(|h| *h > 0), "shard heights {heights:?}");
    // The page and `huds chain status` read one source: what the page shows lies between two statuses taken
    // just before and just after it rendered.
    let after = chain_status();
    let epoch: u64 = dom
        .split("<p>epoch ")
        .nth(1)
        .and_then(|rest| rest.split('<').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no epoch on the page:\n{dom}"));
    let (e0, e1) = (before["epoch"].as_u64(), after["epoch"].as_u64());
    assert!(
        e0 <= Some(epoch) && Some(epoch) <= e1,
        "page epoch {epoch}, chain status {e0:?}..{e1:?}"
    );
    for (i, h) in heights.iter().enumerate() {
        let (h0, h1) = (
            before["shards"][i]["height"].as_u64(),
            after["shards"][i]["height"].as_u64(),
        );
        assert!(
            h0 <= Some(*h) && Some(*h) <= h1,
            "shard {i}: page height {h}, chain status {h0:?}..{h1:?}"
        );
    }
    assert!(dom.contains("%)"), "committee weights as shares:\n{dom}");
}

/// Runs `sh -c LINE` with nothing on the PATH but the system's, as a user pasting it would.
fn shell(line: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", line])
        .env_remove("HUDS_HOME")
        .env_remove("HUDS_API")
        .env_remove("HUDS_API_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{line}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every command the devnet suggests runs verbatim and does what it says: the demo file read through the API
/// (its hash matches the gateway's bytes), an upload with node 0's token, the chain's status, a transfer from
/// the funded wallet that node 0's account then holds.
fn hints_run_as_printed(lines: &[String]) {
    let start = lines
        .iter()
        .position(|l| l.starts_with("try "))
        .expect("a try line");
    let hints: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim())
        .collect();
    assert_eq!(hints.len(), 6, "{hints:?}");
    let gateway = line(lines, "gateway http://").trim_start_matches("gateway http://");
    let cap = line(lines, "capability ").trim_start_matches("capability ");
    let (_, body) = http_get(gateway, &format!("/huds/{cap}"));
    let sum = shell(hints[0]);
    use sha2::Digest;
    let expected = hex(&sha2::Sha256::digest(&body));
    assert_eq!(sum, format!("{expected}  -\n"), "{}", hints[0]);

    let added = shell(hints[1]);
    let new_cap = added
        .lines()
        .find_map(|l| l.strip_prefix("capability "))
        .unwrap_or_else(|| panic!("{added}"));
    let (_, hello) = http_get(gateway, &format!("/huds/{new_cap}"));
    assert_eq!(hello, b"hello\n");

    let status = shell(hints[2]);
    assert!(status.contains("epoch"), "{status}");
    let funded = shell(hints[3]);
    // Amounts for people: grouped, with the unit.
    assert!(funded.starts_with("1,000,000 IOST "), "{funded}");
    shell(hints[4]);
    let node0 = shell(hints[5]);
    assert!(node0.starts_with("1.5 IOST "), "{node0}");
}

/// Node 0's `/metrics` (the devnet runs the validators in its process) has every name `specs/metrics.md` lists,
/// storage and chain, and its epoch and heights are the chain's: after the transfer the hints made, the shards
/// have committed blocks and some validator timed a transaction's finality.
fn metrics_name_storage_and_chain(lines: &[String]) {
    let api = line(lines, "api ").trim_start_matches("api ");
    let scrape = common::scrape(api);
    let mut names = common::spec_metric_names("Storage node");
    names.extend(common::spec_metric_names("Chain"));
    common::assert_metrics_present(&scrape, &names);
    assert!(common::sample_value(&scrape, "huds_chain_height", &[("shard", "0")]) > 0.0);
    assert!(common::sample_value(&scrape, "huds_chain_height", &[("shard", "beacon")]) > 0.0);
    assert!(common::sample_value(&scrape, "huds_chain_validator_stake_iost", &[]) > 0.0);
    assert!(
        common::sample_value(&scrape, "huds_chain_finality_seconds", &[]) >= 1.0,
        "the hints' transfer was timed from admission to commit"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
