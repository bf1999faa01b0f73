//! Proof serving: SPV proofs of accounts and of committed transactions, from the block log and the
//! state tree, for light clients (`crate::spv` checks them).

use super::ShardApp;
use crate::address::Address;
use crate::bft::App;
use crate::bft::{Bls, QuorumCertificate};
use crate::block::Block;
use crate::crypto::Hash;
use crate::smt::list_prove;
use crate::state::State;
use crate::store::Store;
use crate::store::StoreError;
use crate::types::proof::{AccountProof, CertifiedHeader, DealProof, TxProof, VolumeProof};
use crate::types::volume::volume_id;

impl<St: Store> ShardApp<St> {
    /// The certified header of a committed block (None at genesis, or if the stored certificate is not a BLS
    /// quorum certificate).
    pub(super) fn certified(&self, height: u64) -> Option<(Block, CertifiedHeader)> {
        let (block, cert) = self.committed(height)?;
        let qc = QuorumCertificate::<Bls>::decode(&cert).ok()?;
        let header = block.header.clone();
        Some((block, CertifiedHeader { header, qc }))
    }

    /// An SPV proof of `address`'s state (present or absent) at the tip; None before the first block.
    pub fn prove_account(&self, address: &Address) -> Option<AccountProof> {
        let (_, certified) = self.certified(self.tip.height)?;
        Some(AccountProof {
            certified,
            address: *address,
            account: self.state.account(address).cloned(),
            proof: self.state.prove(address),
        })
    }

    /// A durability receipt for deal `id` at the tip; None before the first block or if no deal has that id.
    pub fn prove_deal(&self, id: &Hash) -> Result<Option<DealProof>, StoreError> {
        let Some((_, certified)) = self.certified(self.tip.height) else {
            return Ok(None);
        };
        let Some(record) = self.state.deal(id).cloned() else {
            return Ok(None);
        };
        let Some(terms) = State::deal_terms(&self.store, id)? else {
            return Ok(None);
        };
        Ok(Some(DealProof {
            certified,
            id: *id,
            record,
            terms,
            proof: self.state.prove_deal(id),
        }))
    }

    /// A proof of version `version` of the volume `(owner, name)` against the newest certified state, with
    /// the proof of version + 1 that tells whether it is the newest; None if the state holds no such version.
    pub fn prove_volume(&self, owner: &Address, name: &str, version: u64) -> Option<VolumeProof> {
        let (_, certified) = self.certified(self.tip.height)?;
        let id = volume_id(owner, name);
        let record = self.state.volume_version(&id, version)?.clone();
        let next = self
            .state
            .prove_volume_version(&id, version.checked_add(1)?);
        Some(VolumeProof {
            certified,
            owner: *owner,
            name: name.to_string(),
            version,
            record,
            proof: self.state.prove_volume_version(&id, version),
            next,
        })
    }

    /// An SPV proof that the transaction `id` is in a committed block of this shard; None if it is not.
    pub fn prove_tx(&self, id: &Hash) -> Option<TxProof> {
        let height = self.height_of_tx(id)?;
        let (block, certified) = self.certified(height)?;
        let ids = Block::body_items(&block.transactions, &block.inbound, &block.proofs);
        let index = block.transactions.iter().position(|t| t.id() == *id)?;
        Some(TxProof {
            certified,
            tx: block.transactions[index].clone(),
            path: list_prove(&ids, index),
        })
    }
}
