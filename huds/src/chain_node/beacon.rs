//! The beacon's view the validators and clients need: the registry, the epoch, its randomness and each
//! shard's committee.
//!
//! This slice computes epoch 0 from genesis alone: the registry is the genesis validators (stake, BLS key),
//! the randomness is `pol::epoch_randomness(0, "IOS genesis" || chain_id)` and the committees are
//! `pol::select_committees` of it (`specs/consensus.md` §1.4). Every node computes the same result, so no
//! message is needed to agree on it. Epoch changes (randomness from the beacon chain's certificates,
//! rotation) come with the beacon chain's own consensus.

use chain::bft::{Bls, Committee, Member};
use chain::crypto::Hash;
use chain::genesis::Genesis;
use chain::pol::{self, Candidate};
use chain::{Address, ShardId};

#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    #[error(
        "genesis has {validators} validators, too few for {shards} shards of {size}: add validators or lower the shard count"
    )]
    TooFewValidators {
        validators: usize,
        shards: u16,
        size: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Beacon {
    pub epoch: u64,
    pub randomness: Hash,
    pub committees: Vec<Committee<Bls>>,
}

impl Beacon {
    /// Epoch 0: committees of `size` for every shard, drawn from the genesis registry.
    pub fn from_genesis(genesis: &Genesis, size: usize) -> Result<Self, BeaconError> {
        let shards = genesis.params.shard_count;
        let registry: Vec<(Candidate, chain::crypto::bls::PublicKey)> = genesis
            .accounts
            .iter()
            .filter_map(|(id, a)| {
                let key = a.validator_key?;
                let candidate = Candidate {
                    id: *id,
                    stake: a.validator_stake,
                    reputation_ppm: 0,
                };
                Some((candidate, key))
            })
            .collect();
        let eligible = registry.iter().filter(|(c, _)| c.weight() > 0).count();
        if eligible < usize::from(shards) * size {
            return Err(BeaconError::TooFewValidators {
                validators: eligible,
                shards,
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
        let candidates: Vec<Candidate> = registry.iter().map(|(c, _)| c.clone()).collect();
        let seats = pol::select_committees(&randomness, &candidates, &[], shards, size);
        let committees = seats
            .iter()
            .map(|ids| {
                let members = ids
                    .iter()
                    .map(|id| {
                        let (c, key) = registry
                            .iter()
                            .find(|(c, _)| c.id == *id)
                            .expect("committees are drawn from the registry");
                        Member {
                            id: *id,
                            public: *key,
                            weight: c.weight(),
                        }
                    })
                    .collect();
                Committee::new(members, randomness)
            })
            .collect();
        Ok(Self {
            epoch: 0,
            randomness,
            committees,
        })
    }

    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.committees.len()).expect("one committee per shard, shards are u16")
    }

    /// The committee seat (shard, member index) of a validator, if it has one this epoch.
    pub fn seat_of(&self, validator: &Address) -> Option<(ShardId, u16)> {
        self.committees.iter().enumerate().find_map(|(s, c)| {
            let i = c.members.iter().position(|m| m.id == *validator)?;
            Some((
                u16::try_from(s).expect("shards are u16"),
                u16::try_from(i).expect("committees have at most 1024 members"),
            ))
        })
    }
}
