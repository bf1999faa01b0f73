//! Atomix in and out of one shard: the pool of relayed inbounds waiting for a block (their proofs and
//! certificates checked once), and the outbound inbounds a shard's committed locks make for other shards.

use super::{CERTIFIED_HEADERS_MAX, INBOUND_POOL_BYTES_MAX, INBOUND_POOL_MAX, ShardApp};
use crate::address::ShardId;
use crate::address::shard_of;
use crate::atomix::{
    BLOCK_INBOUND_BYTES_MAX, BLOCK_INBOUND_MAX, Certifier, CertifyError, Inbound, InboundError,
    Lock, LockKind,
};
use crate::bft::App;
use crate::crypto::{Hash, hash_with};
use crate::smt;
use crate::state::State;
use crate::store::Store;
use crate::tx::TxKind;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// One inbound in the pool: its encoded size, when it came (a sequence number), and whether its certificate
/// still waits for a committee this node does not know yet.
struct Pooled {
    inbound: Inbound,
    bytes: usize,
    seq: u64,
    waiting: bool,
}

/// The inbounds waiting for a block, bounded by count ([`INBOUND_POOL_MAX`]) and bytes
/// ([`INBOUND_POOL_BYTES_MAX`]). When full, the oldest inbounds still waiting for their committee make room
/// for a newer one; checked ones are never pushed out by anything, so a peer relaying inbounds nobody can
/// check yet only ever displaces its own kind.
#[derive(Default)]
pub(super) struct InboundPool {
    entries: BTreeMap<Hash, Pooled>,
    bytes: usize,
    next_seq: u64,
}

impl InboundPool {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn contains(&self, id: &Hash) -> bool {
        self.entries.contains_key(id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Hash, &Inbound)> {
        self.entries.iter().map(|(id, p)| (id, &p.inbound))
    }

    pub(super) fn remove(&mut self, id: &Hash) {
        if let Some(p) = self.entries.remove(id) {
            self.bytes -= p.bytes;
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Inbound) -> bool) {
        let bytes = &mut self.bytes;
        self.entries.retain(|_, p| {
            let kept = keep(&p.inbound);
            if !kept {
                *bytes -= p.bytes;
            }
            kept
        });
    }

    /// Adds (or replaces) `id`, making room by dropping the oldest waiting inbounds if the bounds need it.
    fn insert(&mut self, id: Hash, inbound: Inbound, waiting: bool) -> Result<(), InboundError> {
        let bytes = inbound.encode().len();
        self.remove(&id);
        let fits = |pool: &Self| {
            pool.entries.len() < INBOUND_POOL_MAX
                && pool.bytes.saturating_add(bytes) <= INBOUND_POOL_BYTES_MAX
        };
        while !fits(self) {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, p)| p.waiting)
                .min_by_key(|(_, p)| p.seq)
                .map(|(id, _)| *id);
            match oldest {
                Some(old) => self.remove(&old),
                None => return Err(InboundError::PoolFull),
            }
        }
        self.bytes += bytes;
        self.next_seq += 1;
        self.entries.insert(
            id,
            Pooled {
                inbound,
                bytes,
                seq: self.next_seq,
                waiting,
            },
        );
        Ok(())
    }
}

/// What a certificate check is remembered by: the header and the certificate's bytes together. A header's
/// hash alone would let a relayer (or a proposer) pass any bytes as the certificate of a header some honest
/// relay had certified before: the verdict belongs to the pair, not to the header.
pub(super) fn certified_key(inbound: &Inbound) -> Hash {
    hash_with(
        "IOS atomix certified header v1",
        &[&inbound.header.hash(), &inbound.certificate],
    )
}

/// Checks the certificate of another shard's header with `certifier`, once per (header, certificate) pair
/// (`certified` holds the [`certified_key`]s checked already).
fn certify_once(
    certifier: Option<&dyn Certifier>,
    certified: &mut HashSet<Hash>,
    inbound: &Inbound,
) -> Result<(), CertifyError> {
    let hash = certified_key(inbound);
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

    /// Forgets which certificates of other shards' headers were checked: the certifier's committees changed
    /// (a new epoch may drop the era a header was certified in, or supersede it by a redraw), so each is
    /// checked again against the new ones when next used.
    pub fn forget_certified_headers(&mut self) {
        self.certified_headers.clear();
    }

    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Up to `max` of the relayed inbounds waiting here, in the pool's order: what a member leaving its
    /// committee hands on to the next one (a committee drawn afresh after a stall opened its lanes after the
    /// relays of the locks waiting for it went out).
    pub fn pooled_inbounds(&self, max: usize) -> Vec<Inbound> {
        self.inbound
            .iter()
            .take(max)
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// Checks the certificate of another shard's header, once per header and certificate.
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
        if self.inbound.contains(&id) && self.certified_headers.contains(&certified_key(&inbound)) {
            return Ok(());
        }
        let params = self.state.params();
        inbound.check_proofs(params.chain_id, self.state.shard(), params.shard_count)?;
        let waiting = match self.certify(&inbound) {
            Ok(()) => false,
            Err(CertifyError::UnknownCommittee { .. }) => true,
            Err(e) => return Err(e.into()),
        };
        self.inbound.insert(id, inbound, waiting)
    }

    /// The pool's inbounds that apply on top of `state`, in pool order, at most [`BLOCK_INBOUND_MAX`];
    /// applied to `state`. Inbounds whose certificate is invalid leave the pool.
    pub(super) fn take_inbound(&mut self, state: &mut State) -> Vec<Inbound> {
        let mut included = Vec::new();
        let mut bytes = 0;
        let mut invalid = Vec::new();
        for (id, inbound) in self.inbound.iter() {
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
                    kind: LockKind::Transfer,
                };
                let proof = self.state.prove_lock(&lock.tx_id);
                by_shard.entry(shard).or_default().push((lock, proof));
            }
            for lock in self
                .payouts_at(height)
                .into_iter()
                .chain(self.slashes_at(height))
            {
                let proof = self.state.prove_lock(&lock.tx_id);
                by_shard
                    .entry(shard_of(&lock.to, shards))
                    .or_default()
                    .push((lock, proof));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockHeader;

    /// An inbound of about `bytes` bytes (its certificate's size); the pool never looks inside.
    fn inbound(bytes: usize) -> Inbound {
        Inbound {
            header: BlockHeader {
                chain_id: 1,
                shard: ShardId(0),
                height: 1,
                parent: [0; 32],
                state_root: [0; 32],
                transactions_root: [0; 32],
                receipts_root: [0; 32],
            },
            certificate: vec![0; bytes],
            locks: Vec::new(),
        }
    }

    fn id(i: usize) -> Hash {
        let mut h = [0; 32];
        h[..8].copy_from_slice(&(i as u64).to_le_bytes());
        h
    }

    /// Inbounds nobody can check yet never crowd out checked ones: a full pool drops its oldest waiting
    /// inbound for a newer one, refuses only when everything in it is checked, and holds its byte bound.
    /// (Before, waiting inbounds were kept until the count bound and then refused everything new.)
    #[test]
    fn waiting_inbounds_give_way_by_age_and_the_pool_holds_its_bounds() {
        let mut pool = InboundPool::default();
        for i in 0..INBOUND_POOL_MAX {
            pool.insert(id(i), inbound(16), true).expect("room");
        }
        assert_eq!(pool.len(), INBOUND_POOL_MAX);
        // A checked inbound enters, pushing out the oldest waiting one.
        pool.insert(id(INBOUND_POOL_MAX), inbound(16), false)
            .expect("a checked inbound always finds room while waiting ones are there");
        assert!(!pool.contains(&id(0)) && pool.contains(&id(1)));
        assert_eq!(pool.len(), INBOUND_POOL_MAX);

        // A pool of checked inbounds only: a new one is refused, nothing is dropped.
        let mut full = InboundPool::default();
        for i in 0..INBOUND_POOL_MAX {
            full.insert(id(i), inbound(16), false).expect("room");
        }
        assert_eq!(
            full.insert(id(INBOUND_POOL_MAX), inbound(16), true),
            Err(InboundError::PoolFull)
        );
        assert_eq!(full.len(), INBOUND_POOL_MAX);

        // Bytes: big waiting inbounds give way too, and the total never passes the bound.
        let mut big = InboundPool::default();
        let size = INBOUND_POOL_BYTES_MAX / 4;
        for i in 0..4 {
            let _ = big.insert(id(i), inbound(size), true);
            assert!(big.bytes <= INBOUND_POOL_BYTES_MAX);
        }
        big.insert(id(9), inbound(size), false).expect("room made");
        assert!(big.contains(&id(9)) && big.bytes <= INBOUND_POOL_BYTES_MAX);
        let total: usize = big.iter().map(|(_, i)| i.encode().len()).sum();
        assert_eq!(
            total, big.bytes,
            "the byte count follows inserts and removals"
        );
        big.retain(|_| false);
        assert_eq!((big.len(), big.bytes), (0, 0));
    }
}
