//! Epoch 0 as validators and clients need it at start: its randomness, every shard's committee and the
//! beacon chain's own, as `chain::beacon::BeaconState::genesis` computes them from genesis
//! (`specs/consensus.md` §1.4, §4.6). Every node computes the same result, so no message is needed to agree
//! on it; the beacon chain's validators then run that state forward (cross-links, reputation signals).

use chain::Address;
use chain::ShardId;
pub use chain::beacon::BeaconError;
use chain::beacon::{Assignment, BeaconState};
use chain::bft::{Bls, Committee};
use chain::block::BEACON_SHARD;
use chain::crypto::Hash;
use chain::genesis::Genesis;

#[derive(Debug, Clone)]
pub struct Beacon {
    pub epoch: u64,
    pub randomness: Hash,
    /// One committee per shard, in shard order.
    pub committees: Vec<Committee<Bls>>,
    /// The beacon chain's own committee.
    pub beacon_committee: Committee<Bls>,
    pub state: BeaconState,
}

impl Beacon {
    /// Epoch 0: committees of `size` for every shard and the beacon, drawn from the genesis registry;
    /// `epoch_length` shard heights per epoch (0: no epoch changes).
    pub fn from_genesis(
        genesis: &Genesis,
        size: usize,
        epoch_length: u64,
    ) -> Result<Self, BeaconError> {
        let state = BeaconState::genesis(genesis, size, epoch_length)?;
        let mut committees = state.committees();
        let beacon_committee = committees.pop().expect("the beacon's committee comes last");
        Ok(Self {
            epoch: state.epoch(),
            randomness: state.randomness(),
            committees,
            beacon_committee,
            state,
        })
    }

    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.committees.len()).expect("one committee per shard, shards are u16")
    }

    /// The committee of a shard, or the beacon's for `BEACON_SHARD`.
    pub fn committee(&self, shard: ShardId) -> Option<&Committee<Bls>> {
        if shard == BEACON_SHARD {
            Some(&self.beacon_committee)
        } else {
            self.committees.get(usize::from(shard))
        }
    }

    /// The committee seat (shard or `BEACON_SHARD`, member index) of a validator, if it has one this epoch.
    pub fn seat_of(&self, validator: &Address) -> Option<Assignment> {
        self.state.seat_of(validator)
    }
}
