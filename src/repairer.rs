//! The repairer of a storage node: takes the chain's repair orders (`specs/economics.md` §5.8). A thread per
//! node, like the prover: every [`REPAIRER_TICK`] it reads the open orders through a chain API, and for an
//! order it may take rebuilds the slot's shards from the deal's other holders
//! ([`huds_net::repair_order::rebuild_slot`]) and records the slot for its prover, which claims the order
//! by signing the slot's next proof as its taker.
//!
//! So that the registered nodes do not all rebuild every order at once, each waits its turn: the nodes
//! that hold no slot of the deal are ranked by XOR distance between their placement key and the order's,
//! and the node ranked `r` starts `r` × [`TURN`] after it first saw the order. The first valid claim on
//! chain wins; a node whose claim loses lets the rebuilt shards go.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chain::crypto::{Hash, PublicKey, hash_with};
use chain::{hex, hex_decode};
use huds::BlockStore;
use huds_net::NodeHandle;
use huds_net::placement::{closest, key_of};
use huds_net::{prover, repair_order};

/// How often the repairer looks at the open orders.
pub const REPAIRER_TICK: Duration = Duration::from_secs(2);
/// How long the node ranked next waits after the one before it: about a devnet period, time enough for
/// the first to rebuild and claim.
pub const TURN: Duration = Duration::from_secs(15);
/// How long a failed attempt is not repeated.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A running repairer; stops when dropped.
pub type Repairer = crate::worker::Worker;

/// Where this node stands with one order.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// Seen at this instant; not tried yet.
    Seen(Instant),
    /// Tried and failed at this instant.
    Failed(Instant),
    /// Rebuilt and recorded: the prover claims it.
    Done,
}

/// Starts taking repair orders for `node` (whose chain key is `me`), recording taken slots in `held_dir`,
/// through the chain API `api`. Must be called inside a tokio runtime (the rebuild runs on it).
pub fn start(node: NodeHandle, held_dir: PathBuf, me: PublicKey, api: String) -> Repairer {
    let runtime = tokio::runtime::Handle::current();
    crate::worker::Worker::spawn(move |stop| {
        let mut attempts = HashMap::new();
        let mut chain_id = None;
        while !stop.load(Ordering::Relaxed) {
            // The chain's id from the chain itself, never from a peer's record.
            if chain_id.is_none() {
                chain_id = crate::api_client::json(&api, "/api/v0/chain/status")
                    .ok()
                    .and_then(|s| s["chain_id"].as_u64())
                    .and_then(|c| u32::try_from(c).ok());
            }
            let Some(chain_id) = chain_id else {
                std::thread::sleep(REPAIRER_TICK);
                continue;
            };
            let here = Here {
                runtime: &runtime,
                node: &node,
                held_dir: &held_dir,
                me: &me,
                api: &api,
                chain_id,
            };
            if let Err(e) = round(&here, &mut attempts) {
                tracing::debug!("repairer: {e:#}");
            }
            std::thread::sleep(REPAIRER_TICK);
        }
    })
}

fn order_key(deal: &Hash, slot: u8) -> Hash {
    hash_with("HUDS repair order rank v1", &[deal, &[slot]])
}

/// What a round works with.
struct Here<'a> {
    runtime: &'a tokio::runtime::Handle,
    node: &'a NodeHandle,
    held_dir: &'a std::path::Path,
    me: &'a PublicKey,
    api: &'a str,
    chain_id: u32,
}

/// One look at the open orders.
fn round(here: &Here<'_>, attempts: &mut HashMap<(Hash, u8), Attempt>) -> Result<()> {
    let Here {
        runtime,
        node,
        held_dir,
        me,
        api,
        chain_id,
    } = *here;
    let orders = crate::api_client::json(api, "/api/v0/chain/repairs")?;
    let open: Vec<(Hash, u8)> = orders["orders"]
        .as_array()
        .context("no orders in the answer")?
        .iter()
        .filter_map(|o| {
            let deal = Hash::try_from(hex_decode(o["deal"].as_str()?)?).ok()?;
            Some((deal, u8::try_from(o["holder"].as_u64()?).ok()?))
        })
        .collect();
    // An order closed by this node's claim drops out of the list, and so out of here; while it is open, no
    // other slot of the same deal is taken (its claim would hold two of the deal's shards).
    attempts.retain(|k, _| open.contains(k));
    let now = Instant::now();
    for (deal, slot) in open {
        let taking = attempts
            .iter()
            .any(|((d, s), a)| *d == deal && *s != slot && matches!(a, Attempt::Done));
        if taking {
            continue;
        }
        let attempt = *attempts.entry((deal, slot)).or_insert(Attempt::Seen(now));
        let since = match attempt {
            Attempt::Done => continue,
            Attempt::Failed(at) if now.duration_since(at) < RETRY_AFTER => continue,
            Attempt::Failed(at) => at,
            Attempt::Seen(at) => at,
        };
        let Ok(status) =
            crate::api_client::json(api, &format!("/api/v0/chain/deal?id={}", hex(&deal)))
        else {
            continue;
        };
        let Some(holders) = status["holders"].as_array() else {
            continue;
        };
        let keys: Vec<PublicKey> = holders
            .iter()
            .filter_map(|h| {
                let bytes = hex_decode(h["key"].as_str()?)?;
                Some(PublicKey(bytes.try_into().ok()?))
            })
            .collect();
        if keys.contains(me) {
            continue;
        }
        // This node's turn among the registered nodes that hold no slot of the deal.
        let peers = runtime.block_on(node.placeable_peers());
        let candidates: Vec<_> = peers
            .iter()
            .filter(|p| huds_net::deals::holder_key(p).is_some_and(|k| !keys.contains(&k)))
            .copied()
            .collect();
        let order = closest(
            &order_key(&deal, slot),
            &candidates
                .iter()
                .map(|p| key_of(&p.to_bytes()))
                .collect::<Vec<_>>(),
        );
        let rank = order
            .iter()
            .position(|&i| candidates[i] == node.peer_id())
            .unwrap_or(candidates.len());
        if now.duration_since(since) < TURN * rank as u32 {
            continue;
        }
        tracing::info!(deal = %hex(&deal), slot, rank, "taking a repair order: rebuilding the slot");
        match runtime.block_on(repair_order::rebuild_slot(
            node, chain_id, deal, slot, &keys,
        )) {
            Ok(request) => {
                if let Err(e) = prover::keep_taken(held_dir, &deal, slot, &request) {
                    // Without its record the slot cannot be proven: its shards are let go again.
                    let cids: Vec<_> = request.claims.iter().map(|c| c.cid).collect();
                    let _ = node.store().release_deal(&deal, &cids);
                    attempts.insert((deal, slot), Attempt::Failed(now));
                    return Err(e)
                        .with_context(|| format!("recording the slot in {}", held_dir.display()));
                }
                node.recount_storage().context("counting the store")?;
                tracing::info!(
                    deal = %hex(&deal),
                    slot,
                    shards = request.claims.len(),
                    "slot rebuilt: its next proof claims the order"
                );
                attempts.insert((deal, slot), Attempt::Done);
            }
            Err(e) => {
                tracing::warn!(deal = %hex(&deal), slot, "repair order not taken: {e}");
                attempts.insert((deal, slot), Attempt::Failed(now));
            }
        }
    }
    Ok(())
}
