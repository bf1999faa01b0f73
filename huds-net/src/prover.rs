//! A holder's side of proofs of storage (`specs/economics.md` §5): the deals this node signed, kept on disk
//! when it signs, and its answer to a period's challenge, built from the shards in its store.
//!
//! Asking the chain which period is provable and submitting the proof are the caller's (the node binary's
//! prover loop speaks to a chain API); everything here is synchronous and reads one shard at a time.

use std::io::Write;
use std::path::Path;

use cid::Cid;

use chain::crypto::{Hash, PublicKey};
use chain::types::storage_proof::{self, HolderChallenge, HolderProof, StorageProof};
use huds::{BlockStore, Store};

use crate::deals::SignRequest;

/// A deal this node holds a slot of: its id, the slot (its place among the holders), and the request it
/// signed (terms, and per shard of its own the CID, commitment and list proof); or, for a slot it rebuilt
/// to take over through a repair order (`taken`), the same built by the repairer.
#[derive(Debug, Clone)]
pub struct HeldDeal {
    pub id: Hash,
    pub holder: u8,
    pub request: SignRequest,
    /// Whether this node came to the slot through a repair order rather than by signing the deal.
    pub taken: bool,
}

fn file_name(id: &Hash) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.deal")
}

/// A slot taken through a repair order: `<deal id>.<slot>.taken`, holding the slot index and the request.
fn taken_name(id: &Hash, slot: u8) -> String {
    file_name(id).replace(".deal", &format!(".{slot}.taken"))
}

/// The file a held deal is recorded in.
fn held_name(held: &HeldDeal) -> String {
    if held.taken {
        taken_name(&held.id, held.holder)
    } else {
        file_name(&held.id)
    }
}

/// Records a slot of deal `id` this node rebuilt to take over through its repair order, like [`keep`]:
/// the slot index, then `request` (the deal's terms and owner, and this slot's shards).
pub fn keep_taken(dir: &Path, id: &Hash, slot: u8, request: &SignRequest) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(taken_name(id, slot));
    let tmp = dir.join(format!("{}.tmp", taken_name(id, slot)));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&[slot])?;
        f.write_all(&request.encode())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The encoded sign request this node keeps for deal `id` (signed or taken over), if any: what it answers a
/// repairer that asks for the deal.
pub fn kept_request(dir: &Path, id: &Hash) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(dir.join(file_name(id))) {
        Ok(b) => return Ok(Some(b)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    for slot in 0..=u8::MAX {
        match std::fs::read(dir.join(taken_name(id, slot))) {
            Ok(b) if !b.is_empty() => return Ok(Some(b[1..].to_vec())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if usize::from(slot) + 1 >= chain::types::deal::DEAL_HOLDERS_MAX {
            break;
        }
    }
    Ok(None)
}

/// Records a signed deal in `dir` before the signature leaves the node: written to a temporary file,
/// synced and renamed into place, so a crash leaves the old state or the whole record.
pub fn keep(dir: &Path, id: &Hash, request: &SignRequest) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name(id));
    let tmp = dir.join(format!("{}.tmp", file_name(id)));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&request.encode())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Marks the shards of every deal kept in `dir` held for it (a deal signed before the marks existed has
/// none): what a prover does when it starts. A shard already gone stays gone (its periods will be missed);
/// returns how many shards are marked.
pub fn hold_kept(store: &Store, dir: &Path, me: &PublicKey) -> Result<usize, String> {
    let (held, _) = held_deals(dir, me).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut marked = 0;
    for deal in &held {
        for c in &deal.request.claims {
            match store.hold_for_deal(&deal.id, &[c.cid]) {
                Ok(()) => marked += 1,
                Err(huds::store::StoreError::ShardMissing(_)) => {}
                Err(e) => return Err(format!("marking the shards of kept deals: {e}")),
            }
        }
    }
    Ok(marked)
}

/// Lets go of a deal that is over and whose last proof window has closed: its shards' marks in `store` are
/// released (those nothing else holds are deleted), then its record. A crash between the two leaves the
/// record, and the next look releases again (which deletes nothing more) before forgetting it. Returns how
/// many shards were deleted.
pub fn settle(store: &Store, dir: &Path, held: &HeldDeal) -> Result<usize, String> {
    let cids: Vec<Cid> = held.request.claims.iter().map(|c| c.cid).collect();
    let deleted = store
        .release_deal(&held.id, &cids)
        .map_err(|e| format!("releasing the shards of a settled deal: {e}"))?;
    forget(dir, held).map_err(|e| format!("forgetting a settled deal: {e}"))?;
    Ok(deleted)
}

/// Forgets a held slot of a deal (once the deal has settled, or the slot is no longer this node's): its
/// record only, not the node's other slots of the deal.
pub fn forget(dir: &Path, held: &HeldDeal) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(held_name(held))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The deals recorded in `dir` that name `me` as a holder. A file that does not decode, or whose terms do
/// not name this node, is reported in the second list and skipped.
pub fn held_deals(dir: &Path, me: &PublicKey) -> std::io::Result<(Vec<HeldDeal>, Vec<String>)> {
    let mut held = Vec::new();
    let mut skipped = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((held, skipped)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let taken = match path.extension().and_then(|e| e.to_str()) {
            Some("deal") => false,
            Some("taken") => true,
            _ => continue,
        };
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                let (slot, body) = match (taken, b.split_first()) {
                    (false, _) => (None, &b[..]),
                    (true, Some((slot, body))) => (Some(*slot), body),
                    (true, None) => return Err("empty".to_string()),
                };
                let request = SignRequest::decode(body).map_err(|e| e.to_string())?;
                let holder = match slot {
                    Some(s) if usize::from(s) < request.terms.holders.len() => s,
                    Some(s) => return Err(format!("the deal has no holder slot {s}")),
                    None => request
                        .terms
                        .holders
                        .iter()
                        .position(|h| h.key == *me)
                        .ok_or("the deal does not name this node")?
                        as u8,
                };
                Ok(HeldDeal {
                    id: request.terms.id(&request.owner),
                    holder,
                    request,
                    taken,
                })
            });
        match parsed {
            Ok(h) => held.push(h),
            Err(e) => skipped.push(format!("{}: {e}", path.display())),
        }
    }
    held.sort_by_key(|h| h.id);
    Ok((held, skipped))
}

/// This node's proof of `held` for `period` under `seed`, from the shards in `store` (each read and hashed
/// when drawn); with `taker`, the repair claim of the slot by that key on chain `chain_id`. Fails naming the
/// shards it no longer has or cannot read.
pub fn prove(
    store: &Store,
    held: &HeldDeal,
    seed: &Hash,
    period: u64,
    taker: Option<(&chain::crypto::SecretKey, u32)>,
) -> Result<StorageProof, String> {
    let claims = &held.request.claims;
    let shard = |position: u16| {
        let claim = claims.iter().find(|c| c.position == u32::from(position))?;
        let bytes = store.shard(&claim.cid).ok().flatten()?;
        Some((claim.cid.to_bytes(), bytes, claim.path.clone()))
    };
    let (terms, id) = (&held.request.terms, &held.id);
    match taker {
        None => storage_proof::prove(terms, seed, id, held.holder, period, shard),
        Some((key, chain_id)) => {
            storage_proof::prove_claim(terms, seed, id, held.holder, period, key, chain_id, shard)
        }
    }
    .map_err(|missing| {
        let cids: Vec<String> = missing
            .iter()
            .filter_map(|p| claims.iter().find(|c| c.position == u32::from(*p)))
            .map(|c| Cid::to_string(&c.cid))
            .collect();
        format!(
            "cannot prove period {period} of deal {}: shards missing or unreadable: {}",
            file_name(&held.id).trim_end_matches(".deal"),
            cids.join(", ")
        )
    })
}

/// This node's holder proof (key `key`) of the period ending at `end` on one chain shard: the answer to the
/// `drawn` (deal, slot, position, piece)s of its challenge, from the slots it holds (`held`) and the shards in
/// `store`. Fails naming the shards it no longer has, or the deals it keeps no record of.
pub fn prove_holder(
    store: &Store,
    held: &[HeldDeal],
    key: &PublicKey,
    end: u64,
    drawn: HolderChallenge,
) -> Result<HolderProof, String> {
    let claim_of = |deal: &Hash, holder: u8, position: u16| {
        held.iter()
            .find(|h| h.id == *deal && h.holder == holder)?
            .request
            .claims
            .iter()
            .find(|c| c.position == u32::from(position))
    };
    storage_proof::answer_holder(drawn, key, end, |deal, holder, position| {
        let claim = claim_of(deal, holder, position)?;
        let bytes = store.shard(&claim.cid).ok().flatten()?;
        Some((claim.cid.to_bytes(), bytes, claim.path.clone()))
    })
    .map_err(|missing| {
        let what: Vec<String> = missing
            .iter()
            .map(|(deal, position)| {
                let name = file_name(deal);
                let deal_hex = name.trim_end_matches(".deal");
                let cid = held
                    .iter()
                    .filter(|h| h.id == *deal)
                    .flat_map(|h| &h.request.claims)
                    .find(|c| c.position == u32::from(*position));
                match cid {
                    Some(c) => format!("shard {} of deal {deal_hex}", Cid::to_string(&c.cid)),
                    None => format!("shard {position} of deal {deal_hex} (no record of it here)"),
                }
            })
            .collect();
        // The first few name the trouble; a node that lost its store would list every draw.
        let more = match what.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        format!(
            "cannot prove the period ending at {end}: missing or unreadable: {}{more}",
            what[..what.len().min(3)].join(", ")
        )
    })
}
