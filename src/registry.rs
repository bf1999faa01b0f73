//! The chain's registry of storage nodes, as placement uses it: the storage nodes the beacon chain holds with
//! at least the chain's minimum storage stake (`GET /api/v0/chain/status`, `beacon.storage_nodes` and
//! `storage_stake_min`). A node given the registry places and repairs shards only on registered peers
//! (`huds_net::NodeHandle::set_registry`); a storage node slashed below the minimum drops out of it, and one
//! that missed periods in this epoch or the one before is placed last (`huds_net::placement`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use chain::{Address, Amount};
use huds_net::NodeHandle;

/// How often the registry is read again.
const REFRESH: Duration = Duration::from_secs(2);

/// The accounts of the storage nodes placement may choose, from the chain API at `api`, each with its
/// placement tier: the periods it missed this epoch and the one before (0: good standing).
pub fn fetch(api: &str) -> Result<HashMap<Address, u32>> {
    let status = crate::api_client::json(api, "/api/v0/chain/status")?;
    let min: Amount = status["storage_stake_min"]
        .as_str()
        .context("the chain status has no storage_stake_min")?
        .parse()
        .context("the chain status's storage_stake_min")?;
    let nodes = status["beacon"]["storage_nodes"]
        .as_array()
        .context("the chain status lists no storage nodes")?;
    let mut registered = HashMap::new();
    for n in nodes {
        let id: Address = n["id"]
            .as_str()
            .context("a storage node without an id")?
            .parse()
            .context("a storage node's id")?;
        let stake: Amount = n["stake"]
            .as_str()
            .context("a storage node without a stake")?
            .parse()
            .context("a storage node's stake")?;
        let faults = |k: &str| {
            n[k].as_u64()
                .map_or(0, |f| u32::try_from(f).unwrap_or(u32::MAX))
        };
        if stake >= min {
            registered.insert(id, faults("faults").saturating_add(faults("faults_before")));
        }
    }
    Ok(registered)
}

/// Keeps `nodes`' registry current from the chain API until dropped.
pub type Refresher = crate::worker::Worker;

/// Reads the registry every [`REFRESH`] and hands it to every node. A failed read keeps the registry the
/// nodes have (it is said once, not every round, until a read succeeds again).
pub fn start(nodes: Vec<NodeHandle>, api: String) -> Refresher {
    crate::worker::Worker::spawn(move |stop| {
        let mut failing = false;
        while !stop.load(Ordering::Relaxed) {
            match fetch(&api) {
                Ok(registered) => {
                    failing = false;
                    for n in &nodes {
                        n.set_registry(registered.clone());
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        "storage-node registry: {e:#}; placement keeps the last one read"
                    );
                }
                Err(_) => {}
            }
            let mut slept = Duration::ZERO;
            while slept < REFRESH && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                slept += Duration::from_millis(100);
            }
        }
    })
}
