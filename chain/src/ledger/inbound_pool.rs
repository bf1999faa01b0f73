//! Atomix in and out of one shard: the pool of relayed inbounds waiting for a block (their proofs and
//! certificates checked once), and the outbound inbounds a shard's committed locks make for other shards.

use super::{CERTIFIED_HEADERS_MAX, INBOUND_POOL_MAX, ShardApp};
use crate::address::ShardId;
use crate::address::shard_of;
use crate::atomix::{
    BLOCK_INBOUND_BYTES_MAX, BLOCK_INBOUND_MAX, Certifier, CertifyError, Inbound, InboundError,
    Lock,
};
use crate::bft::App;
use crate::crypto::Hash;
use crate::smt;
use crate::state::State;
use crate::store::Store;
use crate::tx::TxKind;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Checks the certificate of another shard's header with `certifier`, once per header (`certified` holds
/// the hashes of the headers checked already).
fn certify_once(
    certifier: Option<&dyn Certifier>,
    certified: &mut HashSet<Hash>,
    inbound: &Inbound,
) -> Result<(), CertifyError> {
    let hash = inbound.header.hash();
    if certified.contains(&hash) {
        return Ok(());
    }
    let certifier = certifier.ok_or(CertifyError::Invalid(
        "this node does not check other shards' certificates".into(),
    ))?;
    certifier.certify(&inbound.header, &inbound.certificate)?;
    if certified.len() >= CERTIFIED_HEADERS_MAX {
        certified.clear();
    }
    certified.insert(hash);
    Ok(())
}

impl<St: Store> ShardApp<St> {
    /// Sets what checks other shards' certificates (the node replaces it as its beacon view advances).
    pub fn set_certifier(&mut self, certifier: Arc<dyn Certifier>) {
        self.certifier = Some(certifier);
    }

    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Checks the certificate of another shard's header, once per header.
    pub(super) fn certify(&mut self, inbound: &Inbound) -> Result<(), CertifyError> {
        certify_once(
            self.certifier.as_deref(),
            &mut self.certified_headers,
            inbound,
        )
    }

    /// Admits a relayed Atomix inbound for a later block: its proofs hold, some lock is not committed yet,
    /// and its certificate verifies (or its committee is not known here yet: it waits and is checked
    /// again when a block would include it). Relays of the same locks are admitted once.
    pub fn submit_inbound(&mut self, inbound: Inbound) -> Result<(), InboundError> {
        // Most relays repeat what is committed or pooled already: those are answered before any proof is
        // checked.
        let Some(first) = inbound.locks.first().map(|(l, _)| l.tx_id) else {
            return Err(InboundError::Empty);
        };
        let Some(inbound) = inbound.without(|id| self.state.is_committed(id)) else {
            return Err(InboundError::AlreadyCommitted(
                first[..8].iter().map(|b| format!("{b:02x}")).collect(),
            ));
        };
        let id = inbound.content_id();
        if self.inbound.contains_key(&id) && self.certified_headers.contains(&inbound.header.hash())
        {
            return Ok(());
        }
        let params = self.state.params();
        inbound.check_proofs(params.chain_id, self.state.shard(), params.shard_count)?;
        match self.certify(&inbound) {
            Ok(()) | Err(CertifyError::UnknownCommittee { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if self.inbound.len() >= INBOUND_POOL_MAX && !self.inbound.contains_key(&id) {
            return Err(InboundError::PoolFull);
        }
        self.inbound.insert(id, inbound);
        Ok(())
    }

    /// The pool's inbounds that apply on top of `state`, in pool order, at most [`BLOCK_INBOUND_MAX`];
    /// applied to `state`. Inbounds whose certificate is invalid leave the pool.
    pub(super) fn take_inbound(&mut self, state: &mut State) -> Vec<Inbound> {
        let mut included = Vec::new();
        let mut bytes = 0;
        let mut invalid = Vec::new();
        for (id, inbound) in &self.inbound {
            if included.len() >= BLOCK_INBOUND_MAX {
                break;
            }
            let Some(inbound) = inbound.without(|tx| state.is_committed(tx)) else {
                continue;
            };
            let size = inbound.encode().len();
            if bytes + size > BLOCK_INBOUND_BYTES_MAX {
                continue;
            }
            match certify_once(
                self.certifier.as_deref(),
                &mut self.certified_headers,
                &inbound,
            ) {
                Ok(()) => {}
                Err(CertifyError::UnknownCommittee { .. }) => continue,
                Err(_) => {
                    invalid.push(*id);
                    continue;
                }
            }
            if state.apply_inbound(&inbound).is_ok() {
                bytes += size;
                included.push(inbound);
            } else {
                invalid.push(*id);
            }
        }
        for id in invalid {
            self.inbound.remove(&id);
        }
        included
    }

    /// The Atomix locks made in the committed blocks `from..=to` (clamped to the tip), as inbounds for their
    /// output shards, proven against the tip's certified header: a lock stays in the state once made, so the
    /// newest header proves every older lock too. Empty at genesis.
    pub fn outbound(&self, from: u64, to: u64) -> Vec<(ShardId, Inbound)> {
        let tip = self.tip.height;
        let Some((tip_block, certificate)) = self.committed(tip) else {
            return Vec::new();
        };
        let shards = self.state.params().shard_count;
        let mut by_shard: BTreeMap<ShardId, Vec<(Lock, smt::Proof)>> = BTreeMap::new();
        for height in from.max(1)..=to.min(tip) {
            let Some((block, _)) = self.committed(height) else {
                continue;
            };
            for tx in &block.transactions {
                let TxKind::Transfer { to, amount } = &tx.tx.kind else {
                    continue;
                };
                let shard = shard_of(to, shards);
                if shard == self.state.shard() {
                    continue;
                }
                let lock = Lock {
                    tx_id: tx.id(),
                    from: tx.tx.sender_address(),
                    to: *to,
                    amount: *amount,
                };
                let proof = self.state.prove_lock(&lock.tx_id);
                by_shard.entry(shard).or_default().push((lock, proof));
            }
        }
        by_shard
            .into_iter()
            .flat_map(|(shard, locks)| {
                Inbound::split(&tip_block.header, &certificate, locks)
                    .into_iter()
                    .map(move |i| (shard, i))
            })
            .collect()
    }
}
