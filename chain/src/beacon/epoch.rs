//! Epochs: the committees' seats, the draw of an epoch's committees, the epoch change as a pure function
//! of the state, and which committee certifies a shard block of a given height.

use super::{BeaconState, EPOCHS_KEPT};
use crate::address::{Address, ShardId};
use crate::bft::{Bls, Committee, Member};
use crate::block::BEACON_SHARD;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls};
use crate::pol::{self, Candidate, Signals};

/// What every seat votes with: one vote per seat. Likelihood weight decides who is drawn to a seat (sampling
/// without replacement, so a validator holds at most one seat of an epoch), never how much a seat's vote
/// counts: counting it twice would let one heavy staker halt or finalise a committee alone (see
/// `specs/consensus.md`, "Committee size and capture").
pub const SEAT_WEIGHT: u128 = 1;

/// The fewest seats a committee of a new epoch may have: four tolerate one faulty member. When unstakes leave
/// too few validators to fill every committee at the configured size, the committees of the next epoch shrink
/// evenly, never below this (nor above the configured size); with too few for that, the epoch does not change.
pub const COMMITTEE_SEATS_MIN: usize = 4;

/// A committee seat of an epoch, with the weight it votes with for the whole epoch ([`SEAT_WEIGHT`] for every
/// seat this chain draws; the field stays in the encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub id: Address,
    pub key: bls::PublicKey,
    pub weight: u128,
}

/// Where a validator sits in an epoch: the chain whose committee it is on (a shard, or `BEACON_SHARD`) and
/// its member index in that committee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub shard: ShardId,
    pub member: u16,
}

/// One epoch: its randomness and its committees (the shards' in order, then the beacon's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u64,
    pub randomness: Hash,
    pub committees: Vec<Vec<Seat>>,
}

impl EpochRecord {
    pub fn encode_into(&self, w: &mut Writer) {
        w.u64(self.epoch).fixed(&self.randomness);
        w.u32(u32::try_from(self.committees.len()).expect("shards are u16"));
        for seats in &self.committees {
            w.u32(u32::try_from(seats.len()).expect("committees have at most 1024 members"));
            for seat in seats {
                w.fixed(&seat.id.0)
                    .fixed(&seat.key.0)
                    .fixed(&seat.weight.to_be_bytes());
            }
        }
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = r.u64()?;
        let randomness = r.array()?;
        let committees_count = r.count("epoch committees", 1 << 16, 4)?;
        let mut committees = Vec::with_capacity(committees_count);
        for _ in 0..committees_count {
            let members = r.count(
                "committee seats",
                crate::bft::COMMITTEE_SIZE_MAX,
                32 + 48 + 16,
            )?;
            let mut seats = Vec::with_capacity(members);
            for _ in 0..members {
                seats.push(Seat {
                    id: Address(r.array()?),
                    key: bls::PublicKey(r.array()?),
                    weight: u128::from_be_bytes(r.array()?),
                });
            }
            committees.push(seats);
        }
        Ok(Self {
            epoch,
            randomness,
            committees,
        })
    }

    /// The committee of a shard (or of the beacon, `BEACON_SHARD`), given the number of shards.
    pub fn committee_of(&self, shard: ShardId, shards: u16) -> Option<Committee<Bls>> {
        let index = if shard == BEACON_SHARD {
            usize::from(shards)
        } else if shard < shards {
            usize::from(shard)
        } else {
            return None;
        };
        self.committee(index)
    }

    pub(super) fn committee(&self, index: usize) -> Option<Committee<Bls>> {
        let seats = self.committees.get(index)?;
        let members = seats
            .iter()
            .map(|s| Member {
                id: s.id,
                public: s.key,
                weight: s.weight,
            })
            .collect();
        // A record decoded from disk or a peer may hold an empty committee: no committee, not a panic.
        Committee::try_new(members, self.randomness)
    }

    pub(super) fn ids(&self) -> Vec<Vec<Address>> {
        self.committees
            .iter()
            .map(|c| c.iter().map(|s| s.id).collect())
            .collect()
    }
}

/// The epoch of shard block `height` for an epoch length (0: always epoch 0).
pub fn epoch_of_height(epoch_length: u64, height: u64) -> u64 {
    height
        .saturating_sub(1)
        .checked_div(epoch_length)
        .unwrap_or(0)
}

impl BeaconState {
    /// The record of `epoch`: committees drawn from the registry as it is now.
    pub(super) fn draw(
        &self,
        epoch: u64,
        randomness: Hash,
        previous: &[Vec<Address>],
    ) -> EpochRecord {
        let candidates: Vec<Candidate> = self
            .validators
            .iter()
            .map(|v| Candidate {
                id: v.id,
                stake: v.stake,
                reputation_ppm: v.reputation_ppm,
            })
            .collect();
        let count = u16::try_from(self.links.len() + 1).expect("shards + 1 committees fit u16");
        let Some(size) = self.drawable_size() else {
            // Too few validators for any committee of the minimum size: the seats stay as they are (only
            // reached when called although `next_epoch_due` said no).
            let mut kept = self.newest().clone();
            kept.epoch = epoch;
            kept.randomness = randomness;
            return kept;
        };
        let ids = pol::select_committees(&randomness, &candidates, previous, count, size);
        let committees = ids
            .iter()
            .map(|c| {
                c.iter()
                    .map(|id| {
                        let v = self
                            .validator(id)
                            .expect("seats are drawn from the registry");
                        Seat {
                            id: v.id,
                            key: v.key,
                            weight: SEAT_WEIGHT,
                        }
                    })
                    .collect()
            })
            .collect();
        EpochRecord {
            epoch,
            randomness,
            committees,
        }
    }

    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.links.len()).expect("shards are u16")
    }

    /// The newest epoch.
    pub fn newest(&self) -> &EpochRecord {
        self.epochs.last().expect("the state always holds an epoch")
    }

    pub fn epoch(&self) -> u64 {
        self.newest().epoch
    }

    pub fn randomness(&self) -> Hash {
        self.newest().randomness
    }

    pub fn record(&self, epoch: u64) -> Option<&EpochRecord> {
        self.epochs.iter().find(|r| r.epoch == epoch)
    }

    /// The epoch a shard block of `height` belongs to (and whose committee certifies it).
    pub fn epoch_of_height(&self, height: u64) -> u64 {
        epoch_of_height(self.epoch_length, height)
    }

    pub(super) fn committee_index(&self, shard: ShardId) -> Option<usize> {
        if shard == BEACON_SHARD {
            Some(self.links.len())
        } else if shard < self.shard_count() {
            Some(usize::from(shard))
        } else {
            None
        }
    }

    /// The committee of a shard (or of the beacon, `BEACON_SHARD`) in `epoch`, if that epoch is kept.
    pub fn committee_in(&self, shard: ShardId, epoch: u64) -> Option<Committee<Bls>> {
        self.record(epoch)?.committee(self.committee_index(shard)?)
    }

    /// The committee of a shard (or of the beacon) in the newest epoch.
    pub fn committee(&self, shard: ShardId) -> Option<Committee<Bls>> {
        self.committee_in(shard, self.epoch())
    }

    /// The committee that certifies block `height` of `shard`, if its epoch is kept.
    pub fn committee_at(&self, shard: ShardId, height: u64) -> Option<Committee<Bls>> {
        self.committee_in(shard, self.epoch_of_height(height))
    }

    /// Every committee of the newest epoch: the shards' in order, then the beacon's.
    pub fn committees(&self) -> Vec<Committee<Bls>> {
        (0..self.links.len() + 1)
            .map(|i| {
                self.newest()
                    .committee(i)
                    .expect("every shard and the beacon have seats")
            })
            .collect()
    }

    /// The seat (shard or `BEACON_SHARD`, member index) of a validator in `epoch`.
    pub fn seat_in(&self, epoch: u64, validator: &Address) -> Option<Assignment> {
        let record = self.record(epoch)?;
        record.committees.iter().enumerate().find_map(|(i, seats)| {
            let member = seats.iter().position(|s| s.id == *validator)?;
            let shard = if i == self.links.len() {
                BEACON_SHARD
            } else {
                u16::try_from(i).expect("shards are u16")
            };
            Some(Assignment {
                shard,
                member: u16::try_from(member).expect("committees have at most 1024 members"),
            })
        })
    }

    /// The seat of a validator in the newest epoch.
    pub fn seat_of(&self, validator: &Address) -> Option<Assignment> {
        self.seat_in(self.epoch(), validator)
    }

    /// The reputation each validator would carry into the next epoch if it began now.
    pub fn reputation_now(&self, id: &Address) -> Option<u64> {
        self.validator(id).map(|v| pol::reputation_ppm(&v.signals))
    }

    /// The seats per committee the registry can fill now: the configured size, or fewer when unstakes left too
    /// few validators to fill every committee at it (evenly shrunk); `None` below [`COMMITTEE_SEATS_MIN`].
    pub fn drawable_size(&self) -> Option<usize> {
        let committees = self.links.len() + 1;
        let eligible = self.validators.iter().filter(|v| v.weight() > 0).count();
        let configured = usize::from(self.committee_size);
        let size = configured.min(eligible / committees);
        (size >= COMMITTEE_SEATS_MIN.min(configured) && size > 0).then_some(size)
    }

    /// Whether the next epoch is due: epochs are on, and every shard has linked a head at least halfway
    /// through the newest epoch, so that the next epoch's committees are known well before any shard needs
    /// them, and no shard runs more than about an epoch ahead of the slowest.
    pub fn next_epoch_due(&self) -> bool {
        if self.epoch_length == 0 || self.drawable_size().is_none() {
            return false;
        }
        let halfway = self
            .epoch()
            .saturating_mul(self.epoch_length)
            .saturating_add(self.epoch_length / 2);
        self.links
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| l.height >= halfway))
    }

    /// The next epoch, as a pure function of this state: each validator's reputation from its signals sets
    /// its new weight, the randomness is `pol::epoch_randomness(epoch + 1, mix)`, and the committees are
    /// redrawn from the newest ones (at most a third of each rotates). The oldest record beyond
    /// [`EPOCHS_KEPT`] is dropped.
    pub fn next_epoch(&self) -> Self {
        let mut next = self.clone();
        for v in &mut next.validators {
            v.reputation_ppm = pol::reputation_ppm(&v.signals);
            v.signals = Signals::default();
        }
        let epoch = self.epoch() + 1;
        let randomness = pol::epoch_randomness(epoch, &self.mix);
        let record = next.draw(epoch, randomness, &self.newest().ids());
        next.epochs.push(record);
        if next.epochs.len() > EPOCHS_KEPT {
            next.epochs.remove(0);
        }
        next.mix = [0; 32];
        next.faults.retain(|_, e| *e + 1 >= epoch);
        next
    }
}
