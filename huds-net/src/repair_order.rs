//! Taking a repair order (`specs/economics.md` §5.8): rebuilding the shards of a deal's holder slot whose
//! holder missed its proof, from the deal's other holders, with no owner online and no key.
//!
//! The chain knows a deal's terms only by their hash and its shards only by the root over their leaves
//! (each shard's CID and commitment). The other holders keep what they signed: the terms, the owner, and for
//! each of their own shards its CID, commitment and list proof. A repairer asks each of them for it
//! ([`NodeHandle::kept_deal`]), which gives it the terms and every leaf but the lost slot's; it fetches k
//! shards of each segment the slot has a shard in, checks each against its CID, recomputes the slot's
//! shard with the erasure code (sealed bytes: no key needed), and computes its CID and commitment. The
//! rebuilt leaves complete the list: its root must be the deal's `commitments_root`, or nothing is kept.
//! What comes out is the request the repairer keeps for its prover, as a holder keeps the one it signed.

use cid::Cid;
use libp2p::PeerId;

use chain::crypto::{Hash, PublicKey};
use chain::pieces::{self, Commitment};
use chain::smt;
use chain::types::deal::DealTerms;
use huds::segment::{self, Coding};
use huds::{BlockStore, cids};

use crate::NodeHandle;
use crate::deals::{ShardClaim, SignRequest, shard_leaf};

/// The peer whose identity is chain account key `key`.
pub fn peer_of(key: &PublicKey) -> Option<PeerId> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// Why a slot could not be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("no other holder of the deal answered with its terms")]
    NoTerms,
    #[error("the deal has no holder slot {0}")]
    NoSlot(u8),
    #[error("shard {0} of the deal is unknown: its holder did not answer")]
    UnknownLeaf(usize),
    #[error("segment {segment}: only {found} of its shards could be fetched, {needed} needed")]
    TooFew {
        segment: usize,
        found: usize,
        needed: usize,
    },
    #[error("the rebuilt shards do not complete the deal's commitments (a holder lied)")]
    RootMismatch,
    #[error("storing a rebuilt shard: {0}")]
    Store(String),
}

/// Rebuilds slot `slot` of deal `id` on chain `chain_id` into this node's store. `keys` is who holds each
/// slot now (the chain's view: a slot taken over earlier is asked of its taker). Returns the request the
/// node keeps for its prover. On a failed check every shard it stored that it did not have before is
/// deleted again.
pub async fn rebuild_slot(
    node: &NodeHandle,
    chain_id: u32,
    id: Hash,
    slot: u8,
    keys: &[PublicKey],
) -> Result<SignRequest, SlotError> {
    // What the other holders keep: the terms, the owner, and their shards' leaves.
    let mut kept: Vec<(usize, PeerId, SignRequest)> = Vec::new();
    for (s, key) in keys.iter().enumerate() {
        if s == usize::from(slot) {
            continue;
        }
        let Some(peer) = peer_of(key) else { continue };
        if let Ok(Some(request)) = node.kept_deal(peer, id).await {
            kept.push((s, peer, request));
        }
    }
    let (_, _, first) = kept.first().ok_or(SlotError::NoTerms)?;
    let (terms, owner) = (first.terms.clone(), first.owner);
    if usize::from(slot) >= terms.holders.len() {
        return Err(SlotError::NoSlot(slot));
    }
    let mut leaves: Vec<Option<(Cid, Commitment, PeerId)>> = vec![None; terms.placement.len()];
    for (s, peer, request) in &kept {
        for c in &request.claims {
            let position = c.position as usize;
            // Only a holder's own shards, and only leaves that prove under the deal's root.
            if terms.placement.get(position).map(|&h| usize::from(h)) != Some(*s)
                || !smt::list_verify(
                    &terms.commitments_root,
                    &shard_leaf(&c.cid, &c.commitment),
                    &c.path,
                )
                || c.path.index != c.position as u64
            {
                continue;
            }
            leaves[position] = Some((c.cid, c.commitment, *peer));
        }
    }
    let n = terms.segment_shards();
    let coding = Coding::new(usize::from(terms.k), usize::from(terms.m))
        .map_err(|_| SlotError::NoSlot(slot))?;
    let mut rebuilt: Vec<Rebuilt> = Vec::new();
    let result = rebuild_into(node, &terms, slot, coding, n, &mut leaves, &mut rebuilt).await;
    let checked = result.and_then(|()| {
        let hashes = leaves
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.as_ref()
                    .map(|(cid, c, _)| shard_leaf(cid, c))
                    .ok_or(SlotError::UnknownLeaf(i))
            })
            .collect::<Result<Vec<Hash>, _>>()?;
        if smt::list_root(&hashes) != terms.commitments_root {
            return Err(SlotError::RootMismatch);
        }
        Ok(hashes)
    });
    let hashes = match checked {
        Ok(h) => h,
        Err(e) => {
            // Only what this rebuild added: a shard the node already had (held for another deal, or
            // pinned) stays.
            for r in rebuilt.iter().filter(|r| !r.had) {
                let _ = node.store().delete_shard(&r.cid);
            }
            return Err(e);
        }
    };
    let claims = rebuilt
        .iter()
        .map(|r| ShardClaim {
            position: r.position as u32,
            cid: r.cid,
            commitment: r.commitment,
            path: smt::list_prove(&hashes, r.position),
        })
        .collect::<Vec<_>>();
    let cids: Vec<Cid> = claims.iter().map(|c| c.cid).collect();
    node.store()
        .hold_for_deal(&id, &cids)
        .map_err(|e| SlotError::Store(e.to_string()))?;
    Ok(SignRequest {
        chain_id,
        owner,
        terms,
        claims,
    })
}

/// A shard of the slot rebuilt and stored here.
struct Rebuilt {
    position: usize,
    cid: Cid,
    commitment: Commitment,
    /// Whether the store had it before (then a failed rebuild must not delete it).
    had: bool,
}

/// Rebuilds each of the slot's shards, segment by segment (one segment's shards in memory at a time), stores
/// it here and fills in its leaf. A segment where another holder did not answer is decoded too, to fill in
/// its missing leaves (so that two lost holders of one deal are repaired one after the other).
async fn rebuild_into(
    node: &NodeHandle,
    terms: &DealTerms,
    slot: u8,
    coding: Coding,
    n: usize,
    leaves: &mut [Option<(Cid, Commitment, PeerId)>],
    rebuilt: &mut Vec<Rebuilt>,
) -> Result<(), SlotError> {
    for (segment, &len) in terms.segment_lens.iter().enumerate() {
        let base = segment * n;
        let mine = terms.placement[base..base + n]
            .iter()
            .position(|&h| h == slot);
        let unknown = (0..n).any(|j| Some(j) != mine && leaves[base + j].is_none());
        if mine.is_none() && !unknown {
            continue;
        }
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut found = 0;
        for j in 0..n {
            if found == coding.k {
                break;
            }
            let Some((cid, _, peer)) = leaves[base + j] else {
                continue;
            };
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            if let Some(d) = crate::repair::fetch_checked(node, peer, cid, len).await {
                shards[j] = Some(d);
                found += 1;
            }
        }
        let too_few = SlotError::TooFew {
            segment,
            found,
            needed: coding.k,
        };
        if found < coding.k {
            return Err(too_few);
        }
        let mut shards = tokio::task::spawn_blocking(move || {
            segment::rebuild_shards(coding, &mut shards).map(|()| shards)
        })
        .await
        .map_err(|e| SlotError::Store(e.to_string()))?
        .map_err(|_| too_few.clone())?;
        for j in 0..n {
            if leaves[base + j].is_some() && Some(j) != mine {
                continue;
            }
            let data = shards[j].take().ok_or(too_few.clone())?;
            let cid = cids::blake3_cid(&data);
            let commitment = pieces::commit(&data).map_err(|e| SlotError::Store(e.to_string()))?;
            leaves[base + j] = Some((cid, commitment, node.peer_id()));
            if Some(j) != mine {
                continue;
            }
            let had = matches!(node.store().shard(&cid), Ok(Some(_)));
            node.put_shard(node.peer_id(), cid, data)
                .await
                .map_err(|e| SlotError::Store(e.to_string()))?;
            rebuilt.push(Rebuilt {
                position: base + j,
                cid,
                commitment,
                had,
            });
        }
    }
    Ok(())
}
