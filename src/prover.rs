//! The prover of a storage node: proves the deals it signed, period by period, through a chain API
//! (`specs/economics.md` §5). A thread per node, since the API client blocks; it wakes every
//! [`PROVER_TICK`], asks the chain where each held deal stands, and submits a proof when a period of the deal
//! is provable and this node has not proven it yet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chain::crypto::{Hash, SecretKey};
use chain::hex;
use huds_net::NodeHandle;
use huds_net::prover::{self, HeldDeal};

/// Periods a holder keeps a deal's shards past its last proof window before it collects them: a margin
/// against a chain API that runs ahead of the chain (the data cannot come back; the wait costs little).
pub const SETTLE_MARGIN_PERIODS: u64 = 1;

/// How often the prover looks at its deals: well within a devnet period (16 blocks).
pub const PROVER_TICK: Duration = Duration::from_millis(500);

/// A running prover; stops when dropped.
pub type Prover = crate::worker::Worker;

/// Starts proving the deals kept in `held_dir` that name `key`'s public key (and the slots it took over
/// through repair orders, whose first proof it signs as their taker), from `node`'s store, through the chain
/// API `api`; settled deals' shards, and those of slots another node took over, are released there and the
/// node counts its store again.
pub fn start(node: NodeHandle, held_dir: PathBuf, key: SecretKey, api: String) -> Prover {
    let me = key.public();
    let store = node.store().clone();
    crate::worker::Worker::spawn(move |stop| {
        if let Err(e) = prover::hold_kept(&store, &held_dir, &me) {
            tracing::warn!("prover: {e}");
        }
        let mut sent = HashMap::new();
        let mut said = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = round(&node, &held_dir, &key, &api, &mut sent, &mut said) {
                tracing::warn!("prover: {e:#}");
            }
            std::thread::sleep(PROVER_TICK);
        }
    })
}

/// One look at every held deal.
fn round(
    node: &NodeHandle,
    held_dir: &std::path::Path,
    key: &SecretKey,
    api: &str,
    sent: &mut HashMap<Hash, (u64, Vec<u8>)>,
    said: &mut HashMap<Hash, String>,
) -> Result<()> {
    let (held, skipped) = prover::held_deals(held_dir, &key.public())
        .with_context(|| format!("reading {}", held_dir.display()))?;
    for s in skipped {
        tracing::warn!("prover: skipping {s}");
    }
    let held_ids: std::collections::HashSet<Hash> = held.iter().map(|d| d.id).collect();
    for deal in held {
        // A deal that cannot be proven (its shards are gone) fails the same way every round: said once per
        // period (the message names it), not twice a second.
        if let Err(e) = prove_deal(node, held_dir, &deal, key, api, sent) {
            let message = format!("{e:#}");
            if said.get(&deal.id) != Some(&message) {
                tracing::warn!("prover: {message}");
                said.insert(deal.id, message);
            }
        }
    }
    // Deals no longer held (settled) are forgotten here too.
    if said.len() > held_ids.len() {
        said.retain(|id, _| held_ids.contains(id));
    }
    Ok(())
}

/// Proves `deal`'s provable period if this node has not yet. A proof already built for that period is sent
/// again as it is (the node gossips it once more) rather than rebuilt; a deal whose last proof window has
/// closed is forgotten.
fn prove_deal(
    node: &NodeHandle,
    held_dir: &std::path::Path,
    deal: &HeldDeal,
    key: &SecretKey,
    api: &str,
    sent: &mut HashMap<Hash, (u64, Vec<u8>)>,
) -> Result<()> {
    let id = hex(&deal.id);
    let status = match crate::api_client::json(api, &format!("/api/v0/chain/deal?id={id}")) {
        Ok(s) => s,
        // Not final yet (or the shard's validator is not here): nothing to prove now.
        Err(_) => return Ok(()),
    };
    let field = |k: &str| status[k].as_u64();
    if let (Some(start), Some(period_blocks), Some(periods), Some(next_height)) = (
        field("start_height"),
        field("period_blocks"),
        field("periods"),
        field("next_height"),
    ) && next_height > start + (periods + 1 + SETTLE_MARGIN_PERIODS) * period_blocks
    {
        // Over and its last window closed: nothing more can be proven or paid, and its shards are free.
        let deleted = release(node, held_dir, deal, sent)?;
        tracing::info!(deal = %id, shards_deleted = deleted, "deal settled: its shards are released");
        return Ok(());
    }
    // Who holds the slot now: this node, or (through a repair order) another; a slot this node rebuilt
    // is claimed by signing its first proof while its order is open.
    let slot = &status["holders"][usize::from(deal.holder)];
    let holds = slot["key"].as_str() == Some(hex(&key.public().0).as_str());
    let taker = match (holds, deal.taken, slot["repair_order"].as_bool()) {
        (true, _, _) => false,
        (false, true, Some(true)) => true,
        (false, _, Some(_)) => {
            let deleted = release(node, held_dir, deal, sent)?;
            tracing::info!(
                deal = %id,
                slot = deal.holder,
                shards_deleted = deleted,
                "another node holds this slot of the deal now: its shards are released"
            );
            return Ok(());
        }
        (false, _, None) => bail!("the deal's status names no holder slot {}", deal.holder),
    };
    let Some(period) = status["provable"].as_u64() else {
        return Ok(());
    };
    let next = slot["next"]
        .as_u64()
        .context("the deal's status names no such holder")?;
    if next > period {
        return Ok(());
    }
    let bytes = match sent.get(&deal.id) {
        Some((p, bytes)) if *p == period => bytes.clone(),
        _ => {
            let seed = status["seed"]
                .as_str()
                .and_then(chain::hex_decode)
                .and_then(|b| Hash::try_from(b).ok())
                .context("the deal's status has no seed")?;
            let claim = taker.then_some((key, deal.request.chain_id));
            let proof = prover::prove(node.store(), deal, &seed, period, claim)
                .map_err(anyhow::Error::msg)?;
            let bytes = proof.encode();
            sent.insert(deal.id, (period, bytes.clone()));
            bytes
        }
    };
    match crate::wallet::post(
        api,
        "/api/v0/chain/deal/proof",
        &bytes,
        "the proof was refused",
    ) {
        Ok(v) => {
            if v["already_waiting"] != true {
                if taker {
                    tracing::info!(deal = %id, period, slot = deal.holder, "repair claim submitted");
                } else {
                    tracing::info!(deal = %id, period, "storage proof submitted");
                }
            }
            Ok(())
        }
        // The seed moved on between the status and the proof (a period boundary): the next round retries.
        Err(e) if e.to_string().contains("cannot be proven at height") => {
            sent.remove(&deal.id);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Lets go of a held slot that is no longer this node's to prove (its deal settled, or another node took
/// it over): its shards' marks are released, its record forgotten, and the store counted again when shards
/// were deleted. Returns how many were.
fn release(
    node: &NodeHandle,
    held_dir: &std::path::Path,
    deal: &HeldDeal,
    sent: &mut HashMap<Hash, (u64, Vec<u8>)>,
) -> Result<usize> {
    sent.remove(&deal.id);
    let deleted = prover::settle(node.store(), held_dir, deal)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("releasing deal {}", hex(&deal.id)))?;
    if deleted > 0 {
        node.recount_storage()
            .context("counting the store after releasing a deal's shards")?;
    }
    Ok(deleted)
}
