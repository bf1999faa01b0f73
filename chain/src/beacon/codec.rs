//! The beacon state's versioned encoding, and its root (the hash of the encoding).

use super::{
    BeaconState, EPOCHS_KEPT, EpochRecord, FAULTS_KEPT_MAX, LinkedHead, STATE_VERSION,
    STORAGE_NODES_MAX, StorageNodeRecord, VALIDATORS_MAX, ValidatorRecord,
};
use crate::address::Address;
use crate::amount::Amount;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls, domain, hash_with};
use crate::pol::Signals;
use crate::registry::Cursor;
use std::collections::{BTreeMap, BTreeSet};

impl BeaconState {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(STATE_VERSION)
            .u32(self.chain_id)
            .u16(self.committee_size)
            .u64(self.epoch_length)
            .u64(self.epoch_blocks)
            .u64(self.drawn_at)
            .fixed(&self.mix);
        w.u32(u32::try_from(self.linked_at_draw.len()).expect("shards are u16"));
        for height in &self.linked_at_draw {
            w.u64(*height);
        }
        w.u32(u32::try_from(self.validators.len()).expect("at most VALIDATORS_MAX validators"));
        for v in &self.validators {
            let s = &v.signals;
            w.fixed(&v.id.0)
                .u64(v.stake.0)
                .fixed(&v.key.0)
                .u64(v.reputation_ppm)
                .u64(s.votes_in_certificates)
                .u64(s.certificates)
                .u64(s.blocks_proposed)
                .u64(s.proposer_slots)
                .u32(s.faults_proven)
                .u32(s.storage_faults);
        }
        w.u32(u32::try_from(self.storage_nodes.len()).expect("at most STORAGE_NODES_MAX nodes"));
        for n in &self.storage_nodes {
            w.fixed(&n.id.0)
                .u64(n.stake.0)
                .u32(n.faults)
                .u32(n.faults_before);
        }
        w.u32(u32::try_from(self.epochs.len()).expect("at most EPOCHS_KEPT epochs"));
        for e in &self.epochs {
            e.encode_into(&mut w);
        }
        w.u32(u32::try_from(self.links.len()).expect("shards are u16"));
        for link in &self.links {
            match link {
                None => {
                    w.u8(0);
                }
                Some(l) => {
                    w.u8(1)
                        .u64(l.height)
                        .fixed(&l.block)
                        .fixed(&l.state_root)
                        .u64(l.registry.count)
                        .fixed(&l.registry.head);
                }
            }
        }
        w.u32(u32::try_from(self.faults.len()).expect("at most FAULTS_KEPT_MAX faults"));
        for (key, epoch) in &self.faults {
            w.fixed(key).u64(*epoch);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != STATE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let chain_id = r.u32()?;
        let committee_size = r.u16()?;
        let epoch_length = r.u64()?;
        let epoch_blocks = r.u64()?;
        let drawn_at = r.u64()?;
        let mix = r.array()?;
        let count = r.count("linked heights at the draw", 1 << 16, 8)?;
        let mut linked_at_draw = Vec::with_capacity(count);
        for _ in 0..count {
            linked_at_draw.push(r.u64()?);
        }
        let count = r.count(
            "beacon validators",
            VALIDATORS_MAX,
            32 + 8 + 48 + 8 * 5 + 4 + 4,
        )?;
        let mut validators = Vec::with_capacity(count);
        for _ in 0..count {
            validators.push(ValidatorRecord {
                id: Address(r.array()?),
                stake: Amount(r.u64()?),
                key: bls::PublicKey(r.array()?),
                reputation_ppm: r.u64()?,
                signals: Signals {
                    votes_in_certificates: r.u64()?,
                    certificates: r.u64()?,
                    blocks_proposed: r.u64()?,
                    proposer_slots: r.u64()?,
                    faults_proven: r.u32()?,
                    storage_faults: r.u32()?,
                },
            });
        }
        let count = r.count("beacon storage nodes", STORAGE_NODES_MAX, 32 + 8 + 8)?;
        let mut storage_nodes = Vec::with_capacity(count);
        for _ in 0..count {
            storage_nodes.push(StorageNodeRecord {
                id: Address(r.array()?),
                stake: Amount(r.u64()?),
                faults: r.u32()?,
                faults_before: r.u32()?,
            });
        }
        let count = r.count("beacon epochs", EPOCHS_KEPT + (1 << 16), 8 + 32 + 4)?;
        if count == 0 {
            return Err(DecodeError::Invalid("beacon state without an epoch"));
        }
        let mut epochs = Vec::with_capacity(count);
        for _ in 0..count {
            epochs.push(EpochRecord::decode_from(&mut r)?);
        }
        let count = r.count("beacon links", 1 << 16, 1)?;
        let mut links = Vec::with_capacity(count);
        for _ in 0..count {
            links.push(match r.u8()? {
                0 => None,
                1 => Some(LinkedHead {
                    height: r.u64()?,
                    block: r.array()?,
                    state_root: r.array()?,
                    registry: Cursor {
                        count: r.u64()?,
                        head: r.array()?,
                    },
                }),
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "linked head",
                        tag,
                    });
                }
            });
        }
        let count = r.count("beacon faults", FAULTS_KEPT_MAX, 40)?;
        let mut faults = BTreeMap::new();
        for _ in 0..count {
            let key = r.array()?;
            faults.insert(key, r.u64()?);
        }
        r.finish()?;
        // One record per id and per key, ids in order: what `apply_event` keeps. Bytes that break it are not
        // a state this chain could have reached.
        if validators.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(DecodeError::Invalid("beacon validators out of order"));
        }
        let validator_keys: BTreeSet<bls::PublicKey> = validators.iter().map(|v| v.key).collect();
        if validator_keys.len() != validators.len() {
            return Err(DecodeError::Invalid("beacon validators sharing a key"));
        }
        if linked_at_draw.len() != links.len() {
            return Err(DecodeError::Invalid(
                "linked heights at the draw, one per shard",
            ));
        }
        Ok(Self {
            chain_id,
            committee_size,
            epoch_length,
            epoch_blocks,
            drawn_at,
            linked_at_draw,
            validators,
            storage_nodes,
            epochs,
            links,
            mix,
            faults,
            validator_keys,
        })
    }

    /// The state root in a beacon block header: a domain-separated hash of the whole encoded state (the
    /// beacon state is small: one record per validator, per kept epoch's seat and per shard).
    pub fn root(&self) -> Hash {
        hash_with(domain::BEACON_STATE, &[&self.encode()])
    }
}
