//! Epochs: the committees' seats, the draw of an epoch's committees, the epoch change as a pure function
//! of the state, and which committee certifies a shard block of a given height.

use super::{BeaconState, EPOCHS_KEPT};
use crate::address::{Address, ShardId};
use crate::bft::{Bls, Committee, Member};
use crate::block::BEACON_SHARD;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls};
use crate::ids::MemberIndex;
use crate::pol::{self, Candidate, Signals};
use std::collections::BTreeSet;

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
    pub member: MemberIndex,
}

/// Where an epoch's committee of a shard takes the shard over: the first height it certifies and, when the
/// beacon chain fixed it at a block it had linked (a stalled shard's redraw, or a shard waiting at the end of
/// its era), that block's hash, which the first block of the new committee extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub first: u64,
    pub parent: Option<Hash>,
}

/// One epoch: its randomness, its committees (the shards' in order, then the beacon's) and, per shard, where
/// its committee takes the shard over (`None`: this epoch's committee of that shard never serves, the shard
/// kept the committee of an earlier epoch; see [`eras`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch: u64,
    pub randomness: Hash,
    pub committees: Vec<Vec<Seat>>,
    pub starts: Vec<Option<Start>>,
}

/// A stretch of a shard's heights, `first ..= last`, and the epoch whose committee certifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Era {
    pub epoch: u64,
    pub first: u64,
    pub last: u64,
    pub parent: Option<Hash>,
}

/// The eras of shard `shard` (its index among the shards) that `records` (in epoch order, consecutive)
/// define, for `epoch_length` heights per era (0: one era forever). Each record that starts the shard at some
/// height replaces every era of an earlier record from that height on (a stalled shard's redraw supersedes
/// an era that was scheduled but never linked); an era ends where the next begins, and after
/// `epoch_length` heights at most: a committee never certifies more than that many heights, so where a
/// live shard's next committee takes over is known before the old one could get there. A suffix of a chain's
/// records (what a state or a light client keeps) gives the same era as all of them for every height it
/// covers, and none for the others, so it never names a committee the whole history would not.
pub fn eras<'a>(
    records: impl IntoIterator<Item = &'a EpochRecord>,
    shard: usize,
    epoch_length: u64,
) -> Vec<Era> {
    let mut eras: Vec<Era> = Vec::new();
    for record in records {
        let Some(Some(start)) = record.starts.get(shard) else {
            continue;
        };
        eras.retain(|e| e.first < start.first);
        let last = match epoch_length {
            0 => u64::MAX,
            m => start.first.saturating_add(m - 1),
        };
        eras.push(Era {
            epoch: record.epoch,
            first: start.first,
            last,
            parent: start.parent,
        });
    }
    for i in 1..eras.len() {
        let next = eras[i].first;
        eras[i - 1].last = eras[i - 1].last.min(next - 1);
    }
    eras
}

/// The era that certifies `height`, among `eras`.
pub fn era_at(eras: &[Era], height: u64) -> Option<Era> {
    eras.iter()
        .rev()
        .find(|e| e.first <= height && height <= e.last)
        .copied()
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
        w.u32(u32::try_from(self.starts.len()).expect("shards are u16"));
        for start in &self.starts {
            match start {
                None => {
                    w.u8(0);
                }
                Some(Start { first, parent }) => {
                    w.u8(1).u64(*first);
                    match parent {
                        None => w.u8(0),
                        Some(p) => w.u8(1).fixed(p),
                    };
                }
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
        let count = r.count("epoch starts", 1 << 16, 1)?;
        let mut starts = Vec::with_capacity(count);
        for _ in 0..count {
            starts.push(match r.u8()? {
                0 => None,
                1 => {
                    let first = r.u64()?;
                    let parent = match r.u8()? {
                        0 => None,
                        1 => Some(r.array()?),
                        tag => {
                            return Err(DecodeError::UnknownTag {
                                what: "start parent",
                                tag,
                            });
                        }
                    };
                    if first == 0 {
                        return Err(DecodeError::Invalid("an era starts at height 1 or later"));
                    }
                    Some(Start { first, parent })
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "epoch start",
                        tag,
                    });
                }
            });
        }
        Ok(Self {
            epoch,
            randomness,
            committees,
            starts,
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

/// The beacon blocks per epoch a chain uses unless told otherwise: an eighth of the shard heights of an era
/// (a beacon block takes at least 500 ms and a shard block about 160 ms, so a shard passes the middle of its
/// era, where its next committee is scheduled, about once per beacon epoch and seldom waits for one), and never
/// fewer than [`EPOCH_BLOCKS_MIN`]. 0 when epochs are off.
pub fn default_epoch_blocks(epoch_length: u64) -> u64 {
    if epoch_length == 0 {
        0
    } else {
        (epoch_length / 8).max(EPOCH_BLOCKS_MIN)
    }
}

/// The fewest beacon blocks an epoch lasts by default: about 8 s, four times the 2 s at which members of a
/// shard whose link lags repeat its head (`node::schedule::HEAD_REPEAT_MS`), so that a shard that is alive
/// gets its newest block linked within an epoch and is not taken for stalled.
pub const EPOCH_BLOCKS_MIN: u64 = 16;

impl BeaconState {
    /// The record of `epoch`: committees drawn from the registry as it is now (the `benched` validators
    /// only when no one else is left, see `pol::select_committees_benching`), and where each shard's
    /// committee takes over.
    pub(super) fn draw(
        &self,
        epoch: u64,
        randomness: Hash,
        previous: &[Vec<Address>],
        benched: &BTreeSet<Address>,
        starts: Vec<Option<Start>>,
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
            kept.starts = starts;
            return kept;
        };
        let ids = pol::select_committees_benching(
            &randomness,
            &candidates,
            previous,
            count,
            size,
            benched,
        );
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
            starts,
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

    /// The eras of a shard that the kept epoch records define (see [`eras`]); none for an unknown shard.
    pub fn eras_of(&self, shard: ShardId) -> Vec<Era> {
        if shard >= self.shard_count() {
            return Vec::new();
        }
        eras(&self.epochs, usize::from(shard), self.epoch_length)
    }

    /// The era of `shard` that certifies `height`, if the kept records define one.
    pub fn era_of(&self, shard: ShardId, height: u64) -> Option<Era> {
        era_at(&self.eras_of(shard), height)
    }

    /// The epoch whose committee certifies block `height` of `shard`, if the kept records define one.
    pub fn epoch_at(&self, shard: ShardId, height: u64) -> Option<u64> {
        self.era_of(shard, height).map(|e| e.epoch)
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

    /// The committee that certifies block `height` of `shard`, if its era is kept (see [`eras`]).
    pub fn committee_at(&self, shard: ShardId, height: u64) -> Option<Committee<Bls>> {
        self.committee_in(shard, self.epoch_at(shard, height)?)
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
                ShardId::at(i).expect("shards are u16")
            };
            Some(Assignment {
                shard,
                member: MemberIndex::at(member).expect("committees have at most 1024 members"),
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

    /// Whether the next epoch is due after the beacon block of `height`: epochs are on, `epoch_blocks`
    /// beacon blocks have passed since the last draw, and the registry can fill every committee. The beacon
    /// chain's own height is the clock: no shard's progress holds an epoch back.
    pub fn next_epoch_due(&self, height: u64) -> bool {
        self.epoch_length > 0
            && self.epoch_blocks > 0
            && height >= self.drawn_at.saturating_add(self.epoch_blocks)
            && self.drawable_size().is_some()
    }

    /// The next epoch, drawn by the beacon block of `height`, as a pure function of this state: each
    /// validator's reputation from its signals sets its new weight, the randomness is
    /// `pol::epoch_randomness(epoch + 1, mix)`, the committees are redrawn from the newest ones (at most a
    /// third of each rotates), and each shard is handed over by [`hand_off`]: a shard whose link did not
    /// move since the last draw gets a committee drawn afresh (its old members benched), taking over right
    /// after the linked block. Records older than [`EPOCHS_KEPT`] are dropped unless a shard's era still
    /// needs them.
    pub fn next_epoch(&self, height: u64) -> Self {
        let mut next = self.clone();
        for v in &mut next.validators {
            v.reputation_ppm = pol::reputation_ppm(&v.signals);
            v.signals = Signals::default();
        }
        // A storage node's faults count for this epoch and the next.
        for n in &mut next.storage_nodes {
            n.faults_before = n.faults;
            n.faults = 0;
        }
        let epoch = self.epoch() + 1;
        let randomness = pol::epoch_randomness(epoch, &self.mix);
        let mut previous = self.newest().ids();
        let mut benched = BTreeSet::new();
        let mut starts = Vec::with_capacity(self.links.len());
        for (i, link) in self.links.iter().enumerate() {
            let linked = link.as_ref().map_or(0, |l| l.height);
            let block = link.as_ref().map(|l| l.block);
            let before = self.linked_at_draw.get(i).copied().unwrap_or(0);
            let eras = eras(&self.epochs, i, self.epoch_length);
            let start = match hand_off(&eras, linked, block, before, self.epoch_length) {
                HandOff::Keep => None,
                HandOff::Next(start) => Some(start),
                HandOff::Redraw(start) => {
                    // The committee that was to certify the next height stopped: none of it is kept, and
                    // its members are drawn only if nobody else is left.
                    let stuck = era_at(&eras, linked.saturating_add(1)).or(eras.last().copied());
                    if let Some(seats) = stuck
                        .and_then(|e| self.record(e.epoch))
                        .and_then(|r| r.committees.get(i))
                    {
                        benched.extend(seats.iter().map(|s| s.id));
                    }
                    if let Some(p) = previous.get_mut(i) {
                        p.clear();
                    }
                    Some(start)
                }
            };
            starts.push(start);
        }
        let record = next.draw(epoch, randomness, &previous, &benched, starts);
        next.epochs.push(record);
        next.drawn_at = height;
        next.linked_at_draw = self
            .links
            .iter()
            .map(|l| l.as_ref().map_or(0, |l| l.height))
            .collect();
        // The oldest epoch any shard still needs: the one certifying the height after its link.
        let floor = (0..next.links.len())
            .filter_map(|i| {
                let eras = eras(&next.epochs, i, next.epoch_length);
                let linked = next.links[i].as_ref().map_or(0, |l| l.height);
                era_at(&eras, linked.saturating_add(1))
                    .or(eras.last().copied())
                    .map(|e| e.epoch)
            })
            .min()
            .unwrap_or(epoch);
        // With epochs off no record is ever needed beyond the kept ones (the state draws none then; only
        // tests call this).
        let floor = if next.epoch_length == 0 { epoch } else { floor };
        while next.epochs.len() > EPOCHS_KEPT && next.epochs[0].epoch < floor {
            next.epochs.remove(0);
        }
        next.mix = [0; 32];
        next.faults.retain(|_, e| *e + 1 >= epoch);
        next
    }
}

/// What the draw of a new epoch does with one shard (see [`hand_off`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// The shard keeps the committees it has: this epoch's committee of it never serves.
    Keep,
    /// The new committee takes over where the shard's current era ends (with a regular rotation).
    Next(Start),
    /// The shard stalled: a committee drawn afresh takes over right after the linked block.
    Redraw(Start),
}

/// The epoch rule for one shard at a draw. `eras` are the shard's eras so far, `linked` the height of its
/// newest linked block (`block`, its hash; 0 and `None` before any link), `before` the linked height at the
/// previous draw.
///
/// - **Stalled** (the link did not move since the last draw, and the shard is not waiting at the end of its
///   last era for a next committee): `Redraw`, from `linked + 1`, extending the linked block. The old
///   committee's authority ends at the linked block: a block it certified above it, which no beacon block
///   linked, is never accepted once this record exists (the new era certifies those heights).
/// - **Waiting at the end** of its last era (linked = the era's last height): `Next` from `linked + 1`.
/// - **Past the middle** of its last era (the era has started and `linked + 1 >= first + epoch_length / 2`):
///   `Next` from the height after the era's last, where the old committee stops by itself, so no block of
///   either committee is ever orphaned; a member newly seated there has half an era to catch up.
/// - Otherwise `Keep`: an era was scheduled and not reached yet, or the shard is early in its era.
pub fn hand_off(
    eras: &[Era],
    linked: u64,
    block: Option<Hash>,
    before: u64,
    epoch_length: u64,
) -> HandOff {
    let cut = Start {
        first: linked.saturating_add(1),
        parent: block,
    };
    if epoch_length == 0 {
        return HandOff::Keep;
    }
    let Some(latest) = eras.last() else {
        return HandOff::Redraw(cut);
    };
    let scheduled = latest.first > cut.first;
    let at_end = !scheduled && linked >= latest.last;
    if at_end {
        return HandOff::Next(cut);
    }
    if linked == before {
        return HandOff::Redraw(cut);
    }
    if !scheduled && cut.first >= latest.first.saturating_add(epoch_length / 2) {
        return HandOff::Next(Start {
            first: latest.last.saturating_add(1),
            parent: None,
        });
    }
    HandOff::Keep
}
