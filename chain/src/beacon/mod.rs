//! The beacon chain: the registry of validators (stake, BLS key, reputation), the epoch and its randomness,
//! every committee's seats, and the certified heads of every shard (cross-links). It runs the same BFT
//! replica as a shard (`crate::bft`) with its own committee, over [`BeaconApp`]. The normative text is
//! `specs/consensus.md` §4.6.
//!
//! A beacon block carries cross-links: a shard block header with the precommit certificate that finalised
//! it. The beacon accepts a link only if it is for a known shard, higher than the shard's last linked
//! height, and its certificate is a precommit quorum of that shard's committee for exactly that header.
//! Each accepted certificate is also the on-chain record Proof of Likelihood reads: every member of the
//! shard's committee gets a certificate duty, the signers in its bitmap a vote, the proposer of each round up
//! to the certified one a proposer slot and the certified round's proposer a proposed block
//! (`pol::Signals`); and its aggregate signature is mixed into the next epoch's randomness.
//!
//! [`BeaconState::next_epoch`] is the epoch change as a pure function: reputations from the epoch's signals
//! become the next epoch's weights, the randomness is derived from the mix of aggregate signatures, and
//! the committees are redrawn with at most a third of each rotating (`pol::select_committees`).
//!
//! The module is split along its seams: `registry.rs` (validators and storage nodes), `epoch.rs` (seats, the
//! draw and the epoch change), `links.rs` (cross-links, the signals and randomness they carry, the Atomix
//! certifier), `faults.rs` (evidence), `codec.rs` (the state's encoding) and `app.rs` (the BFT application).
//! [`BeaconState`] is defined here and each seam adds its methods.

mod app;
mod codec;
mod epoch;
mod faults;
mod links;
mod registry;

pub use app::BeaconApp;
pub use epoch::{
    Assignment, EPOCH_BLOCKS_MIN, EpochRecord, Era, HandOff, Seat, Start, default_epoch_blocks,
    era_at, eras, hand_off,
};
pub use faults::fault_key;
pub use links::{CheckedLink, LinkedHead};
pub use registry::{StorageNodeRecord, ValidatorRecord};

use crate::crypto::{Hash, bls};
use crate::genesis::Genesis;
use crate::pol::{self, Signals};
use std::collections::{BTreeMap, BTreeSet};

/// 3 since epochs advance on the beacon's height (`epoch_blocks`, `drawn_at`, `linked_at_draw`, and each
/// epoch record's starts).
const STATE_VERSION: u8 = 4;
const KEY_STATE: &[u8] = b"beacon/state";
/// `beacon/epoch/<epoch:u64 BE>` -> every epoch record this node's beacon chain ever drew (the archive).
const KEY_EPOCH_PREFIX: &[u8] = b"beacon/epoch/";
/// `beacon/drawn/<epoch:u64 BE>` -> `height:u64 BE` and the encoded state after the block at that height,
/// the one that drew the epoch: what a light client's epoch proof is made of (`crate::spv::EpochProof`).
const KEY_DRAWN_PREFIX: &[u8] = b"beacon/drawn/";
/// Verified cross-links waiting for a beacon block, at most.
pub const PENDING_LINKS_MAX: usize = 1024;
/// Evidence waiting for a beacon block, at most.
pub const PENDING_EVIDENCE_MAX: usize = 256;
/// Faults the state remembers (to refuse the same fault twice), at most; evidence beyond is refused.
pub const FAULTS_KEPT_MAX: usize = 4096;
/// Rounds of one certificate credited as proposer slots, at most (a certificate from round 1,000 would
/// otherwise cost 1,000 proposer draws).
const PROPOSER_ROUNDS_CREDITED_MAX: u32 = 64;
const VALIDATORS_MAX: usize = 1 << 16;
const STORAGE_NODES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    #[error(
        "genesis has {validators} validators, too few for {committees} committees of {size} ({shards} shards and the beacon): add validators or lower the shard count"
    )]
    TooFewValidators {
        validators: usize,
        shards: u16,
        committees: usize,
        size: usize,
    },
    #[error("committee size must be 1 to 1024, not {0}")]
    CommitteeSize(usize),
}

pub use crate::bft::{EvidenceError, LinkError};

/// Epoch records kept in the state, at least: shards may still be finishing an older epoch while the newest
/// is drawn, and links are checked against the era of their height (see [`BeaconState::committee_at`]). An
/// older record stays while a shard's era still needs it (a slow shard), so at most this many plus one per
/// shard.
pub const EPOCHS_KEPT: usize = 4;

/// Everything the beacon chain agrees on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconState {
    pub chain_id: u32,
    pub committee_size: u16,
    /// Shard heights an era lasts at most: a committee certifies at most this many heights of its shard
    /// before the next takes over (see [`eras`]). 0: one epoch forever.
    pub epoch_length: u64,
    /// Beacon blocks per epoch: the beacon chain draws the next epoch this many blocks after the last draw,
    /// whatever the shards did (0: never).
    pub epoch_blocks: u64,
    /// The beacon height of the block that drew the newest epoch (0 for genesis).
    pub drawn_at: u64,
    /// Per shard, the linked height when the newest epoch was drawn: a shard whose link has not moved from
    /// it by the next draw is stalled (see [`hand_off`]).
    pub linked_at_draw: Vec<u64>,
    /// Sorted by id, no duplicates.
    pub validators: Vec<ValidatorRecord>,
    /// Registered storage nodes, sorted by id, no duplicates.
    pub storage_nodes: Vec<StorageNodeRecord>,
    /// The kept epochs, oldest first; the last is the newest.
    pub epochs: Vec<EpochRecord>,
    /// Per shard, the last linked head.
    pub links: Vec<Option<LinkedHead>>,
    /// The aggregate signatures linked since the newest epoch began, hashed in order: the next epoch's
    /// randomness input.
    pub mix: Hash,
    /// Faults recorded from evidence, by [`fault_key`], with the epoch they happened in: a fault counts
    /// once. Kept for the newest epoch and the one before (older evidence is refused).
    pub faults: BTreeMap<Hash, u64>,
    /// The BLS key of every validator record, which the registry holds once each (`registry.rs`). Not
    /// encoded: it follows from `validators` (built at genesis and on decode, kept by `apply_event`), and
    /// answers "is this key taken?" without a scan of up to 65,536 records per registration.
    validator_keys: BTreeSet<bls::PublicKey>,
}

impl BeaconState {
    /// Epoch 0: the genesis validators with reputation 0, randomness from the chain id, committees of `size`
    /// for every shard and for the beacon drawn by `pol::select_committees`.
    pub fn genesis(genesis: &Genesis, size: usize, epoch_length: u64) -> Result<Self, BeaconError> {
        if size == 0 || size > crate::bft::COMMITTEE_SIZE_MAX {
            return Err(BeaconError::CommitteeSize(size));
        }
        let shards = genesis.params.shard_count;
        let mut validators: Vec<ValidatorRecord> = genesis
            .accounts
            .iter()
            .filter_map(|(id, a)| {
                Some(ValidatorRecord {
                    id: *id,
                    stake: a.validator_stake,
                    key: a.validator_key?,
                    reputation_ppm: 0,
                    signals: Signals::default(),
                })
            })
            .collect();
        validators.sort_by_key(|v| v.id);
        validators.dedup_by_key(|v| v.id);
        // A key is registered once (the rule `apply_event` keeps): of accounts sharing one, the lowest id
        // keeps it. A checked genesis has none (`GenesisError::DuplicateValidatorKey`).
        let mut validator_keys = BTreeSet::new();
        validators.retain(|v| validator_keys.insert(v.key));
        let mut storage_nodes: Vec<StorageNodeRecord> = genesis
            .accounts
            .iter()
            .filter(|(_, a)| a.storage_registered)
            .map(|(id, a)| StorageNodeRecord::new(*id, a.storage_stake))
            .collect();
        storage_nodes.sort_by_key(|n| n.id);
        storage_nodes.dedup_by_key(|n| n.id);
        let committees = usize::from(shards) + 1;
        let eligible = validators.iter().filter(|v| v.weight() > 0).count();
        if eligible < committees * size {
            return Err(BeaconError::TooFewValidators {
                validators: eligible,
                shards,
                committees,
                size,
            });
        }
        let randomness = pol::epoch_randomness(
            0,
            &[
                b"IOS genesis".as_slice(),
                &genesis.params.chain_id.to_be_bytes(),
            ]
            .concat(),
        );
        let mut state = Self {
            chain_id: genesis.params.chain_id,
            committee_size: u16::try_from(size).expect("checked above: at most 1024"),
            epoch_length,
            epoch_blocks: default_epoch_blocks(epoch_length),
            drawn_at: 0,
            linked_at_draw: vec![0; usize::from(shards)],
            validators,
            storage_nodes,
            epochs: Vec::new(),
            links: vec![None; usize::from(shards)],
            mix: [0; 32],
            faults: BTreeMap::new(),
            validator_keys,
        };
        let starts = vec![
            Some(Start {
                first: 1,
                parent: None,
            });
            usize::from(shards)
        ];
        let record = state.draw(0, randomness, &[], &Default::default(), starts);
        state.epochs.push(record);
        Ok(state)
    }

    /// The same state with `blocks` beacon blocks per epoch (0: [`default_epoch_blocks`]). A chain
    /// parameter: every validator of a chain uses the same.
    pub fn with_epoch_blocks(mut self, blocks: u64) -> Self {
        if blocks > 0 && self.epoch_length > 0 {
            self.epoch_blocks = blocks;
        }
        self
    }
}

#[cfg(test)]
mod tests;
