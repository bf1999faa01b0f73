//! The prover of a storage node: proves the deals it signed, period by period, through a chain API
//! (`specs/economics.md` §5). A thread per node, since the API client blocks; it wakes every
//! [`PROVER_TICK`], asks the chain where each held deal stands (settled, or taken over by another node: its
//! shards are released; a slot this node rebuilt for a repair order: it signs the claim), then asks the
//! chain what its holder proof must answer on each shard, and submits one holder proof per shard and period
//! for all its slots there.

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
        let mut memory = Memory::default();
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = round(&node, &held_dir, &key, &api, &mut memory) {
                tracing::warn!("prover: {e:#}");
            }
            std::thread::sleep(PROVER_TICK);
        }
    })
}

/// What the prover remembers between rounds: the proofs it built (sent again as they are while the same
/// period is due, rather than rebuilt), and the last warning said per deal or shard (said once, not twice a
/// second).
#[derive(Default)]
struct Memory {
    /// Per deal: the period of its claim built, and the claim.
    sent: HashMap<Hash, (u64, Vec<u8>)>,
    said: HashMap<Hash, String>,
    /// Per chain shard: the end of the period its holder proof answers, and the proof.
    sent_holder: HashMap<u64, (u64, Vec<u8>)>,
    said_holder: HashMap<u64, String>,
}

/// One look at every held deal, then at what the holder proofs must answer.
fn round(
    node: &NodeHandle,
    held_dir: &std::path::Path,
    key: &SecretKey,
    api: &str,
    memory: &mut Memory,
) -> Result<()> {
    let (held, skipped) = prover::held_deals(held_dir, &key.public())
        .with_context(|| format!("reading {}", held_dir.display()))?;
    for s in skipped {
        tracing::warn!("prover: skipping {s}");
    }
    let held_ids: std::collections::HashSet<Hash> = held.iter().map(|d| d.id).collect();
    let mut kept = Vec::with_capacity(held.len());
    for deal in held {
        // A deal that cannot be proven (its shards are gone) fails the same way every round: said once per
        // period (the message names it), not twice a second.
        match look_at_deal(node, held_dir, &deal, key, api, &mut memory.sent) {
            // Released: no longer this node's to prove.
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                let message = format!("{e:#}");
                if memory.said.get(&deal.id) != Some(&message) {
                    tracing::warn!("prover: {message}");
                    memory.said.insert(deal.id, message);
                }
            }
        }
        kept.push(deal);
    }
    let held = kept;
    // Deals no longer held (settled) are forgotten here too.
    if memory.said.len() > held_ids.len() {
        memory.said.retain(|id, _| held_ids.contains(id));
    }
    let due = match crate::api_client::json(
        api,
        &format!("/api/v0/chain/challenge?key={}", hex(&key.public().0)),
    ) {
        Ok(v) => v,
        // The API is not up yet: nothing to prove now.
        Err(_) => return Ok(()),
    };
    for due in due["due"].as_array().into_iter().flatten() {
        let shard = due["shard"].as_u64().unwrap_or(u64::MAX);
        if let Err(e) = prove_holder(node, &held, due, key, api, &mut memory.sent_holder) {
            let message = format!("{e:#}");
            if memory.said_holder.get(&shard) != Some(&message) {
                tracing::warn!("prover: {message}");
                memory.said_holder.insert(shard, message);
            }
        }
    }
    Ok(())
}

/// Sends the holder proof a shard's `due` (one entry of `GET /api/v0/chain/challenge`) asks of this node,
/// built from its held slots, unless every slot there already proved the period.
fn prove_holder(
    node: &NodeHandle,
    held: &[HeldDeal],
    due: &serde_json::Value,
    key: &SecretKey,
    api: &str,
    sent: &mut HashMap<u64, (u64, Vec<u8>)>,
) -> Result<()> {
    let (Some(shard), Some(end), Some(unproven)) = (
        due["shard"].as_u64(),
        due["end"].as_u64(),
        due["unproven"].as_u64(),
    ) else {
        bail!("the chain's challenge has no shard, end or unproven count");
    };
    if unproven == 0 {
        return Ok(());
    }
    let bytes = match sent.get(&shard) {
        Some((e, bytes)) if *e == end => bytes.clone(),
        _ => {
            let drawn = due["drawn"]
                .as_array()
                .context("the chain's challenge draws nothing")?
                .iter()
                .map(|d| {
                    let deal = d["deal"]
                        .as_str()
                        .and_then(chain::hex_decode)
                        .and_then(|b| Hash::try_from(b).ok())?;
                    let holder = u8::try_from(d["holder"].as_u64()?).ok()?;
                    let position = u16::try_from(d["position"].as_u64()?).ok()?;
                    Some((deal, holder, position, d["piece"].as_u64()?))
                })
                .collect::<Option<Vec<_>>>()
                .context("the chain's challenge has a malformed draw")?;
            let proof = prover::prove_holder(node.store(), held, &key.public(), end, drawn)
                .map_err(anyhow::Error::msg)
                .with_context(|| {
                    format!("cannot prove the period ending at {end} on shard {shard}")
                })?;
            let bytes = chain::types::storage_proof::ProofTx::Holder(proof).encode();
            sent.insert(shard, (end, bytes.clone()));
            bytes
        }
    };
    match crate::wallet::post(
        api,
        &format!("/api/v0/chain/deal/proof?shard={shard}"),
        &bytes,
        "the proof was refused",
    ) {
        Ok(v) => {
            if v["already_waiting"] != true {
                tracing::info!(shard, end, slots = unproven, "holder proof submitted");
            }
            Ok(())
        }
        // Refused: the next round asks for the challenge again and builds a new proof (the seed moved on at a
        // period boundary, or a repair claim changed this node's slots, so the draw is another).
        Err(e) => {
            sent.remove(&shard);
            if e.to_string().contains("cannot be proven at height") {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Looks at one held slot: a deal whose last proof window has closed, or whose slot another node took over,
/// is released; a slot this node rebuilt for an open repair order is claimed with its signed proof of the
/// provable period (a claim already built for that period is sent again as it is: the node gossips it once
/// more). A slot this node holds is proven by its holder proof (`prove_holder`). Returns whether the slot
/// was released.
fn look_at_deal(
    node: &NodeHandle,
    held_dir: &std::path::Path,
    deal: &HeldDeal,
    key: &SecretKey,
    api: &str,
    sent: &mut HashMap<Hash, (u64, Vec<u8>)>,
) -> Result<bool> {
    let id = hex(&deal.id);
    let status = match crate::api_client::json(api, &format!("/api/v0/chain/deal?id={id}")) {
        Ok(s) => s,
        // Not final yet (or the shard's validator is not here): nothing to prove now.
        Err(_) => return Ok(false),
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
        return Ok(true);
    }
    // Who holds the slot now: this node, or (through a repair order) another; a slot this node rebuilt
    // is claimed by signing its first proof while its order is open.
    let slot = &status["holders"][usize::from(deal.holder)];
    let holds = slot["key"].as_str() == Some(hex(&key.public().0).as_str());
    match (holds, deal.taken, slot["repair_order"].as_bool()) {
        // This node's slot: its holder proof proves it.
        (true, _, _) => return Ok(false),
        // Rebuilt for the slot's open order: claimed below.
        (false, true, Some(true)) => {}
        (false, _, Some(_)) => {
            let deleted = release(node, held_dir, deal, sent)?;
            tracing::info!(
                deal = %id,
                slot = deal.holder,
                shards_deleted = deleted,
                "another node holds this slot of the deal now: its shards are released"
            );
            return Ok(true);
        }
        (false, _, None) => bail!("the deal's status names no holder slot {}", deal.holder),
    }
    let Some(period) = status["provable"].as_u64() else {
        return Ok(false);
    };
    let next = slot["next"]
        .as_u64()
        .context("the deal's status names no such holder")?;
    if next > period {
        return Ok(false);
    }
    let bytes = match sent.get(&deal.id) {
        Some((p, bytes)) if *p == period => bytes.clone(),
        _ => {
            let seed = status["seed"]
                .as_str()
                .and_then(chain::hex_decode)
                .and_then(|b| Hash::try_from(b).ok())
                .context("the deal's status has no seed")?;
            let claim = (key, deal.request.chain_id);
            let proof = prover::prove(node.store(), deal, &seed, period, Some(claim))
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
                tracing::info!(deal = %id, period, slot = deal.holder, "repair claim submitted");
            }
            Ok(false)
        }
        // The seed moved on between the status and the proof (a period boundary): the next round retries.
        Err(e) if e.to_string().contains("cannot be proven at height") => {
            sent.remove(&deal.id);
            Ok(false)
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
