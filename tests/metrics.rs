//! `/metrics` on every node's API: three `huds node` processes, a file added through one and read through
//! another, then each node's metrics parsed with a Prometheus text-format parser. Every name `specs/metrics.md`
//! lists for a storage node is there, and the counts agree with what happened.

mod common;

use std::path::PathBuf;

use common::{NodeProc, assert_metrics_present, sample_value, scrape, spec_metric_names, start};

#[test]
fn every_node_serves_the_metrics_the_spec_names_and_they_count_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let homes: Vec<PathBuf> = (0..3)
        .map(|i| {
            let h = dir.path().join(format!("node-{i}"));
            assert!(common::run(&h, &["init"]).status.success());
            h
        })
        .collect();
    let first = start(&homes[0], None);
    let boot = first.addr.clone();
    let mut nodes: Vec<Option<NodeProc>> = vec![Some(first)];
    for h in &homes[1..] {
        nodes.push(Some(start(h, Some(&boot))));
    }
    common::wait_for_mesh(&homes[0], &nodes);
    let api: Vec<String> = nodes.iter().flatten().map(|n| n.api.clone()).collect();

    let mut data = vec![0u8; 3 << 20];
    common::Xorshift(5).fill(&mut data);
    let file = dir.path().join("input.bin");
    std::fs::write(&file, &data).expect("write input");
    let added = common::run_json(
        &homes[0],
        &["--api", &api[0], "add", file.to_str().expect("utf-8")],
    );
    let cap = added["cap"].as_str().expect("cap").to_string();
    let out = common::run(&homes[2], &["--api", &api[2], "cat", &cap]);
    assert!(out.status.success());
    assert_eq!(out.stdout, data);

    let names = spec_metric_names("Storage node");
    let scrapes: Vec<_> = api.iter().map(|a| scrape(a)).collect();
    for s in &scrapes {
        assert_metrics_present(s, &names);
    }
    // The adding node placed shards on its peers, and they stored them: what one sent, the others served.
    let put = [("op", "put"), ("outcome", "ok")];
    let sent_puts = sample_value(&scrapes[0], "huds_shard_requests_sent_total", &put);
    let served_puts: f64 = scrapes
        .iter()
        .map(|s| sample_value(s, "huds_shard_requests_served_total", &put))
        .sum();
    assert!(sent_puts > 0.0, "node 0 placed no shard on a peer");
    assert_eq!(sent_puts, served_puts, "puts sent and puts served");
    let received: f64 = scrapes
        .iter()
        .map(|s| sample_value(s, "huds_shard_received_bytes_total", &[]))
        .sum();
    assert!(
        received >= data.len() as f64,
        "{received} shard bytes received"
    );
    // The reader fetched shards; the bytes some node sent are at least the file's.
    let get = [("op", "get"), ("outcome", "ok")];
    assert!(sample_value(&scrapes[2], "huds_shard_requests_sent_total", &get) > 0.0);
    let sent: f64 = scrapes
        .iter()
        .map(|s| sample_value(s, "huds_shard_sent_bytes_total", &[]))
        .sum();
    assert!(sent > 0.0, "no shard bytes sent");
    for (i, s) in scrapes.iter().enumerate() {
        assert_eq!(
            sample_value(s, "huds_storage_peers", &[]),
            2.0,
            "node {i} knows both others"
        );
        assert!(sample_value(s, "huds_dht_routing_peers", &[]) >= 1.0);
        let status = common::status(&homes[i], &api[i]);
        assert_eq!(
            Some(sample_value(s, "huds_store_shard_bytes", &[]) as u64),
            status["stored_bytes"].as_u64(),
            "node {i}: the metric and `huds node status` agree"
        );
    }
}
