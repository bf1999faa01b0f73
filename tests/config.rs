//! What an operator configures: `huds config show` names where each value came from (flag, environment,
//! config.toml, default); `--log-format json` writes one JSON object per line; a running `huds node` re-reads
//! config.toml on SIGHUP and applies the new log level and storage limit without a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config_show(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(common::huds());
    cmd.arg("--data")
        .arg(home)
        .args(args)
        .args(["--json", "config", "show"]);
    for var in [
        "HUDS_LOG_LEVEL",
        "HUDS_LOG_FORMAT",
        "HUDS_API",
        "HUDS_API_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("huds runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn config_show_names_each_source_in_order_flag_env_file_default() {
    let (_dir, home) = common::new_home();
    let v = config_show(&home, &[], &[]);
    assert_eq!(v["log.level"]["value"], "warn");
    assert_eq!(v["log.level"]["source"], "default");
    assert_eq!(v["node.storage_max"]["value"], serde_json::Value::Null);
    assert!(
        v["storage.k"]["source"]
            .as_str()
            .expect("source")
            .ends_with("config.toml storage.k")
    );
    assert_eq!(v["api.token"]["value"], "set", "the token is never printed");
    assert_eq!(v["home"]["source"], "flag --data");

    let path = home.join("config.toml");
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str("\n[log]\nlevel = \"info\"\n\n[node]\nstorage_max = \"64M\"\n");
    std::fs::write(&path, text).expect("write config");
    let v = config_show(&home, &[], &[]);
    assert_eq!(v["log.level"]["value"], "info");
    assert!(
        v["log.level"]["source"]
            .as_str()
            .expect("source")
            .ends_with("config.toml log.level")
    );
    assert_eq!(v["node.storage_max"]["value"], 64 << 20);

    let v = config_show(&home, &[("HUDS_LOG_LEVEL", "debug")], &[]);
    assert_eq!(v["log.level"]["value"], "debug");
    assert_eq!(v["log.level"]["source"], "environment $HUDS_LOG_LEVEL");
    let v = config_show(
        &home,
        &[("HUDS_LOG_LEVEL", "debug")],
        &["--log-level", "error", "--log-format", "json"],
    );
    assert_eq!(v["log.level"]["value"], "error");
    assert_eq!(v["log.level"]["source"], "flag --log-level");
    assert_eq!(v["log.format"]["value"], "json");

    // A config that does not parse is an error that names the file, not a silent default.
    std::fs::write(&path, "[storage]\nk = \"four\"\n").expect("write config");
    let out = common::run(&home, &["config", "show"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.toml"));
}

/// Sends the node SIGHUP and returns the first log line after it that contains `needle`.
fn hang_up_until(pid: &str, rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    assert!(
        Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .expect("kill")
            .success()
    );
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a log line after SIGHUP");
        if line.contains(needle) {
            return line;
        }
    }
}

/// The node's `storage_bytes_max` as its API reports it.
fn storage_max(home: &std::path::Path, api: &str) -> Option<u64> {
    common::status(home, api)["storage_bytes_max"].as_u64()
}

#[test]
fn sighup_reloads_log_level_and_storage_limit_and_json_logs_parse() {
    let (_dir, home) = common::new_home();
    let path = home.join("config.toml");
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(
        "\n[log]\nlevel = \"warn\"\nformat = \"json\"\n\n[node]\nstorage_max = \"64M\"\n",
    );
    std::fs::write(&path, &text).expect("write config");
    let mut child = Command::new(common::huds())
        .arg("--data")
        .arg(&home)
        .args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .env_remove("HUDS_LOG_LEVEL")
        .env_remove("HUDS_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huds node");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let child = Kill(child);
    let api = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("api ").map(str::to_string))
        .expect("an api line");
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    assert_eq!(storage_max(&home, &api), Some(64 << 20));

    text = text
        .replace("level = \"warn\"", "level = \"info\"")
        .replace("\"64M\"", "\"1M\"");
    std::fs::write(&path, &text).expect("write config");
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // The reload's own line comes at info, the new level, as JSON.
    let started = Instant::now();
    let reloaded = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a log line after SIGHUP");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON: {line:?}: {e}"));
        if v["fields"]["message"] == "reloaded config.toml on SIGHUP" {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    };
    assert_eq!(reloaded["level"], "INFO");
    assert_eq!(reloaded["fields"]["log_level"], "info");
    assert_eq!(reloaded["fields"]["storage_max"], "1048576 bytes");
    assert_eq!(storage_max(&home, &api), Some(1 << 20));
    let metrics = common::scrape(&api);
    assert_eq!(
        common::sample_value(&metrics, "huds_store_capacity_bytes", &[]),
        f64::from(1u32 << 20)
    );

    // A broken config changes nothing, and says so.
    std::fs::write(&path, "[node]\nstorage_max = \"lots\"\n").expect("write config");
    let complaint = hang_up_until(&pid, &rx, "not reloaded");
    assert!(complaint.contains("\"level\":\"ERROR\""), "{complaint}");
    assert_eq!(storage_max(&home, &api), Some(1 << 20));

    // A config.toml that is gone (moved away mid-edit) changes nothing either: the limit stays.
    std::fs::remove_file(&path).expect("remove config");
    let gone = hang_up_until(&pid, &rx, "not reloaded");
    assert!(gone.contains("is gone"), "{gone}");
    assert_eq!(storage_max(&home, &api), Some(1 << 20));
    drop(child);
}

/// Under systemd (`Type=notify`) a reload waits for the node's READY=1: the node sends it on `$NOTIFY_SOCKET`
/// once it handles SIGHUP, so a reload right after it (a `systemctl reload` racing `start`) does not kill it.
#[test]
fn the_node_tells_systemd_when_a_reload_is_safe() {
    let (dir, home) = common::new_home();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut child = Command::new(common::huds())
        .arg("--data")
        .arg(&home)
        .args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn huds node");
    let mut buf = [0u8; 64];
    let got = socket.recv(&mut buf);
    let pid = child.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status();
    std::thread::sleep(Duration::from_millis(300));
    let alive = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("the node sent a notification");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(hup.expect("kill runs").success());
    assert!(alive, "a SIGHUP right after READY=1 killed the node");
}

/// An init cut short (keys written, no config.toml) runs again and keeps the key it made.
#[test]
fn an_init_cut_short_runs_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(home.join("node.key"), [5u8; 32]).expect("write key");
    std::fs::write(home.join("config.toml.tmp"), b"half").expect("write");
    let out = common::run(&home, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(home.join("node.key")).expect("key"),
        [5u8; 32]
    );
    assert!(!home.join("config.toml.tmp").exists());
    // A key of the wrong size is not silently replaced.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("node.key"), b"short").expect("write");
    let out = common::run(&other, &["init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32-byte key"));
}

/// The completions and the manual page need no home, and so no $HOME (package builds run without one).
#[test]
fn completions_and_man_need_no_home() {
    for args in [&["man"][..], &["completions", "bash"][..]] {
        let out = Command::new(common::huds())
            .args(args)
            .env_clear()
            .output()
            .expect("huds runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty());
    }
}

/// An upload cut off by a crash leaves its spool directory behind; the next start of the node clears it.
#[test]
fn a_node_clears_what_killed_uploads_left_in_its_spool() {
    let (_dir, home) = common::new_home();
    let left = home.join("spool").join("00000000deadbeef");
    std::fs::create_dir_all(&left).expect("mkdir");
    std::fs::write(left.join("upload"), vec![7u8; 1 << 20]).expect("write");
    let node = common::start(&home, None);
    assert!(!left.exists(), "the spool was not cleared at start");
    drop(node);
}
