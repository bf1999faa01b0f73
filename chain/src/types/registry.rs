//! How stakes reach the beacon chain's registry (`specs/consensus.md` §4.6, Registry).
//!
//! Registrations and unstakes are shard transactions: they move IOST on the sender's shard. Every one that
//! changes a stake appends a [`RegistryEvent`] (the account's new stake in that role) to the shard's
//! *registry outbox*, a hash chain: `head(n) = H("IOS registry event v1", head(n-1), event(n))`, `head(0) =
//! 0^32`. After each event the shard state holds a checkpoint leaf `checkpoint_key(n) -> checkpoint_value(head(n))`
//! in its sparse Merkle tree, so a block's state root commits to every event the shard has ever emitted.
//!
//! A cross-link may carry a [`RegistryBatch`]: the events `from+1 ..= from+len` and a proof of the checkpoint
//! leaf of `from+len` against the linked header's state root. The beacon keeps, per shard, how many events it
//! has applied and the chain head after them; it accepts a batch that starts at or before that count, chains
//! the events it has not applied yet from its head, and requires the result to be the proven checkpoint. So a
//! batch can only carry the shard's real events, in order, none skipped, none twice, and a shard member that
//! knows a stale count just sends a few events the beacon already has.

use crate::address::Address;
use crate::amount::Amount;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls, hash_with};
use crate::smt;

/// Events one cross-link carries, at most; more wait for the next link.
pub const LINK_EVENTS_MAX: usize = 64;
const EVENT_VALIDATOR: u8 = 1;
const EVENT_STORAGE_NODE: u8 = 2;
const EVENT_STORAGE_FAULT: u8 = 3;

/// A stake that changed on a shard: the account's stake in the role after the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A validator registered (with its BLS key, whose proof of possession the shard checked) or unstaked.
    Validator {
        id: Address,
        key: bls::PublicKey,
        stake: Amount,
    },
    /// A storage node registered or unstaked.
    StorageNode { id: Address, stake: Amount },
    /// A storage node missed a period's proof of its slots on this shard (one event per node and settled
    /// period, whatever the number of its slots): a fault against its reputation (`specs/economics.md`
    /// §5.7). Unlike stakes this is a count, not a value: the beacon applies each event once (its cursor).
    StorageFault { id: Address },
}

impl RegistryEvent {
    pub fn encode_into(&self, w: &mut Writer) {
        match self {
            RegistryEvent::Validator { id, key, stake } => {
                w.u8(EVENT_VALIDATOR)
                    .fixed(&id.0)
                    .fixed(&key.0)
                    .u64(stake.0);
            }
            RegistryEvent::StorageNode { id, stake } => {
                w.u8(EVENT_STORAGE_NODE).fixed(&id.0).u64(stake.0);
            }
            RegistryEvent::StorageFault { id } => {
                w.u8(EVENT_STORAGE_FAULT).fixed(&id.0);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            EVENT_VALIDATOR => Ok(RegistryEvent::Validator {
                id: Address(r.array()?),
                key: bls::PublicKey(r.array()?),
                stake: Amount(r.u64()?),
            }),
            EVENT_STORAGE_NODE => Ok(RegistryEvent::StorageNode {
                id: Address(r.array()?),
                stake: Amount(r.u64()?),
            }),
            EVENT_STORAGE_FAULT => Ok(RegistryEvent::StorageFault {
                id: Address(r.array()?),
            }),
            tag => Err(DecodeError::UnknownTag {
                what: "registry event",
                tag,
            }),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let event = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(event)
    }

    pub fn id(&self) -> Address {
        match self {
            RegistryEvent::Validator { id, .. }
            | RegistryEvent::StorageNode { id, .. }
            | RegistryEvent::StorageFault { id } => *id,
        }
    }
}

/// The outbox chain's head after `event`, given the head before it.
pub fn chain_next(head: &Hash, event: &RegistryEvent) -> Hash {
    hash_with("IOS registry event v1", &[head, &event.encode()])
}

/// The state-tree key of the checkpoint after the `count`-th event (counting from 1).
pub fn checkpoint_key(count: u64) -> Hash {
    hash_with("IOS registry checkpoint key v1", &[&count.to_be_bytes()])
}

/// The state-tree value hash of a checkpoint whose chain head is `head`.
pub fn checkpoint_value(head: &Hash) -> Hash {
    hash_with("IOS registry checkpoint v1", &[head])
}

/// Where a chain of events stands: how many and the head after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub count: u64,
    pub head: Hash,
}

impl Cursor {
    pub fn advance(&mut self, event: &RegistryEvent) {
        self.count += 1;
        self.head = chain_next(&self.head, event);
    }
}

/// Events of one shard's outbox carried by a cross-link, with the proof of where they end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryBatch {
    /// The count of events before the first one carried.
    pub from: u64,
    pub events: Vec<RegistryEvent>,
    /// Proof of `checkpoint_key(from + events.len())` against the linked header's state root.
    pub checkpoint: smt::Proof,
}

/// Why a registry batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "batch starts after event {from}, but the beacon has applied only {applied}: events are missing"
    )]
    Gap { from: u64, applied: u64 },
    #[error("batch carries {0} events, more than {LINK_EVENTS_MAX}")]
    TooLong(usize),
    #[error("batch events do not chain to the checkpoint proven in the shard's state")]
    ChainMismatch,
    #[error("batch checkpoint proof: {0}")]
    Proof(#[from] smt::ProofError),
}

impl RegistryBatch {
    pub fn to(&self) -> u64 {
        self.from + self.events.len() as u64
    }

    /// Checks the batch against the linked header's `state_root`, given what the beacon has `applied`;
    /// returns the events not applied yet and the cursor after them.
    pub fn check<'a>(
        &'a self,
        state_root: &Hash,
        applied: &Cursor,
    ) -> Result<(&'a [RegistryEvent], Cursor), BatchError> {
        if self.events.len() > LINK_EVENTS_MAX {
            return Err(BatchError::TooLong(self.events.len()));
        }
        if self.from > applied.count {
            return Err(BatchError::Gap {
                from: self.from,
                applied: applied.count,
            });
        }
        let to = self.to();
        if to <= applied.count {
            return Ok((&[], *applied));
        }
        let skip = usize::try_from(applied.count - self.from).expect("below events.len()");
        let new = &self.events[skip..];
        let mut cursor = *applied;
        for event in new {
            cursor.advance(event);
        }
        let proven = smt::verify(state_root, &checkpoint_key(to), &self.checkpoint)?;
        if proven != Some(checkpoint_value(&cursor.head)) {
            return Err(BatchError::ChainMismatch);
        }
        Ok((new, cursor))
    }

    pub fn encode_into(&self, w: &mut Writer) {
        w.u64(self.from)
            .u32(u32::try_from(self.events.len()).expect("at most LINK_EVENTS_MAX events"));
        for e in &self.events {
            e.encode_into(w);
        }
        self.checkpoint.encode_into(w);
    }

    /// A batch or none as the bytes of a length-delimited field: empty for none.
    pub fn encode_optional(batch: Option<&RegistryBatch>) -> Vec<u8> {
        let mut w = Writer::new();
        if let Some(batch) = batch {
            batch.encode_into(&mut w);
        }
        w.finish()
    }

    /// The inverse of [`RegistryBatch::encode_optional`]; trailing bytes are an error.
    pub fn decode_optional(bytes: &[u8]) -> Result<Option<RegistryBatch>, DecodeError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut r = Reader::new(bytes);
        let batch = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(Some(batch))
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let from = r.u64()?;
        let count = r.count("registry events", LINK_EVENTS_MAX, 1 + 32 + 8)?;
        let events = (0..count)
            .map(|_| RegistryEvent::decode_from(r))
            .collect::<Result<_, _>>()?;
        let checkpoint = smt::Proof::decode_from(r)?;
        if from.checked_add(count as u64).is_none() {
            return Err(DecodeError::Invalid("registry batch ends past u64"));
        }
        Ok(Self {
            from,
            events,
            checkpoint,
        })
    }
}

/// An empty proof, for tests building batches by hand.
#[cfg(test)]
pub(crate) fn empty_proof() -> smt::Proof {
    smt::Proof {
        siblings: Vec::new(),
        terminal: smt::Terminal::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smt::SparseMerkleTree;
    use proptest::prelude::*;

    fn event(i: u8) -> RegistryEvent {
        match i % 3 {
            0 => RegistryEvent::Validator {
                id: Address([i; 32]),
                key: bls::SecretKey::dev(&format!("k{i}")).public(),
                stake: Amount(u64::from(i) * 10),
            },
            1 => RegistryEvent::StorageNode {
                id: Address([i; 32]),
                stake: Amount(u64::from(i)),
            },
            _ => RegistryEvent::StorageFault {
                id: Address([i; 32]),
            },
        }
    }

    /// A tree holding the checkpoints of `events` (and an unrelated leaf), and the cursor after each.
    fn outbox(events: &[RegistryEvent]) -> (SparseMerkleTree, Vec<Cursor>) {
        let mut tree = SparseMerkleTree::new();
        tree.insert([9; 32], [8; 32]);
        let mut cursor = Cursor::default();
        let mut cursors = vec![cursor];
        for e in events {
            cursor.advance(e);
            tree.insert(checkpoint_key(cursor.count), checkpoint_value(&cursor.head));
            cursors.push(cursor);
        }
        (tree, cursors)
    }

    #[test]
    fn a_batch_applies_only_the_events_the_beacon_lacks() {
        let events: Vec<_> = (0..6).map(event).collect();
        let (mut tree, cursors) = outbox(&events);
        let root = tree.root();
        let batch = RegistryBatch {
            from: 1,
            events: events[1..5].to_vec(),
            checkpoint: tree.prove(&checkpoint_key(5)),
        };
        // The beacon has applied 3: events 4 and 5 are new.
        let (new, cursor) = batch.check(&root, &cursors[3]).expect("valid");
        assert_eq!(new, &events[3..5]);
        assert_eq!(cursor, cursors[5]);
        // Nothing new once applied; a gap is refused.
        assert_eq!(batch.check(&root, &cursors[5]), Ok((&[][..], cursors[5])));
        assert_eq!(
            batch.check(&root, &cursors[0]),
            Err(BatchError::Gap {
                from: 1,
                applied: 0
            })
        );
    }

    #[test]
    fn forged_reordered_or_unproven_events_are_refused() {
        let events: Vec<_> = (0..4).map(event).collect();
        let (mut tree, cursors) = outbox(&events);
        let root = tree.root();
        let proof = tree.prove(&checkpoint_key(4));
        let mut forged = events.clone();
        forged[2] = RegistryEvent::Validator {
            id: Address([2; 32]),
            key: bls::SecretKey::dev("k2").public(),
            stake: Amount(1_000_000),
        };
        let mut swapped = events.clone();
        swapped.swap(1, 2);
        for evs in [forged, swapped, events[..3].to_vec()] {
            let batch = RegistryBatch {
                from: 0,
                events: evs,
                checkpoint: proof.clone(),
            };
            assert!(batch.check(&root, &cursors[0]).is_err(), "{batch:?}");
        }
        // An absence proof (a checkpoint the shard never wrote) is refused.
        let beyond = RegistryBatch {
            from: 4,
            events: vec![event(7)],
            checkpoint: tree.prove(&checkpoint_key(5)),
        };
        assert_eq!(
            beyond.check(&root, &cursors[4]),
            Err(BatchError::ChainMismatch)
        );
        let empty = RegistryBatch {
            from: 0,
            events: events.clone(),
            checkpoint: empty_proof(),
        };
        assert!(matches!(
            empty.check(&root, &cursors[0]),
            Err(BatchError::Proof(_))
        ));
    }

    proptest! {
        #[test]
        fn batches_round_trip_and_random_bytes_never_panic(
            n in 0u8..8, from in 0u64..100, bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let events: Vec<_> = (0..n).map(event).collect();
            let (tree, _) = outbox(&events);
            let batch = RegistryBatch { from, events, checkpoint: tree.prove(&checkpoint_key(1)) };
            let mut w = Writer::new();
            batch.encode_into(&mut w);
            let bytes_of = w.finish();
            let mut r = Reader::new(&bytes_of);
            prop_assert_eq!(RegistryBatch::decode_from(&mut r), Ok(batch));
            prop_assert!(r.finish().is_ok());
            let mut r = Reader::new(&bytes);
            let _ = RegistryBatch::decode_from(&mut r);
        }
    }
}
