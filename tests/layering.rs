//! The crates keep their layers (specs/ARCHITECTURE.md, "Crates and the direction of their arrows"): the
//! chain core does no IO, the storage core runs no async runtime or network, and the chain's node knows
//! nothing of storage. Checked on the resolved dependency graph, as `cargo tree` prints it.

use std::process::Command;

/// The normal (non-dev) dependencies of `package`, transitively, one crate name per line.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn check(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    assert!(
        deps.iter().any(|d| d == package),
        "cargo tree -p {package} listed nothing: {deps:?}"
    );
    let found: Vec<_> = forbidden
        .iter()
        .filter(|f| deps.iter().any(|d| d == *f))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {found:?}: see specs/ARCHITECTURE.md for the layers"
    );
}

#[test]
fn the_chain_core_does_no_io() {
    check(
        "chain",
        &["tokio", "libp2p", "rocksdb", "axum", "huds", "huds-net"],
    );
}

#[test]
fn the_storage_core_has_no_runtime_or_network() {
    check(
        "huds",
        &["tokio", "libp2p", "axum", "chain", "chain-node", "huds-net"],
    );
}

#[test]
fn the_chain_node_knows_nothing_of_storage() {
    check("chain-node", &["huds", "huds-net", "gateway"]);
}

#[test]
fn the_storage_network_and_gateway_know_nothing_of_the_chain_node() {
    check("huds-net", &["chain-node", "gateway"]);
    check("gateway", &["chain-node"]);
}

#[test]
fn the_fuse_front_door_reads_through_the_storage_core_alone() {
    check(
        "fuse-mount",
        &[
            "tokio",
            "libp2p",
            "axum",
            "chain",
            "chain-node",
            "huds-net",
            "gateway",
        ],
    );
}
