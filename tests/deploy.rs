//! What `deploy/` ships: the systemd unit and environment file, run by `deploy/test-service.sh` as systemd
//! runs them (start, reload on SIGHUP, stop on SIGTERM) with the binary under test; and the Grafana dashboard,
//! which may only read metrics that `specs/metrics.md` names.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

#[test]
fn the_service_unit_starts_reloads_and_stops_as_systemd_runs_it() {
    let script = common::repo().join("deploy/test-service.sh");
    let out = Command::new("sh")
        .arg(&script)
        .env("HUDS_BIN", common::huds())
        .env_remove("HUDS_HOME")
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ExecReload: storage limit now 2 MiB"),
        "{stdout}"
    );
    assert!(stdout.contains("SIGTERM: clean exit"), "{stdout}");
}

#[test]
fn the_dashboard_reads_only_metrics_the_spec_names_and_shows_each_one() {
    let path = common::repo().join("deploy/grafana-huds.json");
    let dash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the dashboard")).expect("JSON");
    let mut named: BTreeSet<String> = common::spec_metric_names("Storage node")
        .into_iter()
        .collect();
    named.extend(common::spec_metric_names("Chain"));
    let mut read = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(name) = word.strip_prefix("huds_") {
                    let name = format!("huds_{name}");
                    let base = name.strip_suffix("_bucket").unwrap_or(&name).to_string();
                    assert!(
                        named.contains(&base),
                        "{expr}: {base} is not in specs/metrics.md"
                    );
                    read.insert(base);
                }
            }
        }
    }
    let unread: Vec<_> = named.difference(&read).collect();
    assert!(unread.is_empty(), "metrics no panel shows: {unread:?}");
}
