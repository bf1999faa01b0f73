//! Storage proofs waiting for a block (`specs/economics.md` §5).
//!
//! Anyone may submit a proof: it needs no signature, since whoever sends it the pay goes to the holder. So
//! the pool admits only proofs that would apply to the committed state now (checked in full, about as costly
//! as one signature), one per slot (or storage node key) and period, and holds at most [`POOL_PROOFS_MAX`] of them; a
//! proof whose window has passed or whose period was proven is dropped at the next commit.

use super::ShardApp;
use crate::block::{BLOCK_PROOF_BYTES_MAX, BLOCK_PROOFS_MAX};
use crate::crypto::Hash;
use crate::state::{ProofRefused, State};
use crate::store::Store;
use crate::types::storage_proof::{ProofKey, ProofTx};
use std::collections::BTreeMap;

/// Proofs one pool holds, at most (about 20 MB of the largest shape).
pub const POOL_PROOFS_MAX: usize = 1_024;

/// Why the pool did not take a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Refused(#[from] ProofRefused),
    #[error("a proof of that slot (or key) and period is already waiting")]
    Duplicate,
    #[error("the proof pool is full")]
    Full,
}

/// The waiting proofs in the order they arrived: blocks take them first come, first served, so that nobody
/// can put theirs ahead of others' by the choice of a deal id, and a proof too large for what is left of a
/// block stops the block's proofs there rather than letting smaller later ones past it (which would let a
/// stream of small proofs keep a large one out for its whole window).
#[derive(Debug, Default)]
pub(super) struct ProofPool {
    /// Arrival number -> proof.
    waiting: BTreeMap<u64, ProofTx>,
    /// What it proves (a slot and period, or a key and period) -> arrival number.
    slots: BTreeMap<ProofKey, u64>,
    arrivals: u64,
}

impl ProofPool {
    fn insert(&mut self, proof: ProofTx) {
        let n = self.arrivals;
        self.arrivals += 1;
        self.slots.insert(proof.key(), n);
        self.waiting.insert(n, proof);
    }

    /// Moves into a block the waiting proofs that apply to `state` (the block's state so far, which they
    /// change), oldest first, within the block's bounds.
    pub(super) fn take(&mut self, state: &mut State, height: u64) -> Vec<ProofTx> {
        let mut included = Vec::new();
        let mut bytes = 0;
        for proof in self.waiting.values() {
            let size = proof.encode().len();
            if included.len() >= BLOCK_PROOFS_MAX || bytes + size > BLOCK_PROOF_BYTES_MAX {
                break;
            }
            if state.apply_proof_tx(proof, height).is_ok() {
                bytes += size;
                included.push(proof.clone());
            }
        }
        included
    }

    /// Drops what can no longer apply in a block at `height` on `state`, whose newest block has hash
    /// `parent`.
    pub(super) fn prune(&mut self, state: &State, height: u64, parent: &Hash) {
        let slots = &mut self.slots;
        self.waiting.retain(|_, proof| {
            let keep = !matches!(
                state.check_proof_tx_next(proof, height, parent, false),
                Err(ProofRefused::NotProvable { .. }
                    | ProofRefused::AlreadyProven { .. }
                    | ProofRefused::UnknownDeal
                    | ProofRefused::NoRepairOrder { .. }
                    | ProofRefused::TakerHoldsShards
                    | ProofRefused::HolderNotProvable { .. }
                    | ProofRefused::NoSlots { .. }
                    | ProofRefused::AllProven { .. })
            );
            if !keep {
                slots.remove(&proof.key());
            }
            keep
        });
    }
}

impl<St: Store> ShardApp<St> {
    /// Admits a storage proof for the next block: it must apply to the committed state at the next height.
    pub fn submit_proof(&mut self, proof: ProofTx) -> Result<(), PoolError> {
        let slot = proof.key();
        let (height, parent) = (self.tip.height + 1, self.tip.hash);
        if let Some(&n) = self.proofs.slots.get(&slot) {
            // A holder proof waiting since a repair claim moved one of the key's slots away no longer answers
            // the key's challenge: checked in full again, it gives way to a new one rather than block the key
            // for the rest of the window.
            let stale = matches!(slot, ProofKey::Holder(..))
                && self.proofs.waiting.get(&n).is_some_and(|waiting| {
                    self.state
                        .check_proof_tx_next(waiting, height, &parent, true)
                        .is_err()
                });
            if !stale {
                return Err(PoolError::Duplicate);
            }
            self.state
                .check_proof_tx_next(&proof, height, &parent, true)?;
            self.proofs.waiting.remove(&n);
            self.proofs.slots.remove(&slot);
            self.proofs.insert(proof);
            return Ok(());
        }
        if self.proofs.waiting.len() >= POOL_PROOFS_MAX {
            return Err(PoolError::Full);
        }
        self.state
            .check_proof_tx_next(&proof, height, &parent, true)?;
        self.proofs.insert(proof);
        Ok(())
    }

    /// Proofs waiting for a block.
    pub fn proofs_waiting(&self) -> usize {
        self.proofs.waiting.len()
    }
}
