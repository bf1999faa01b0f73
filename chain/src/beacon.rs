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

use crate::address::{Address, ShardId};
use crate::amount::Amount;
use crate::atomix::{Certifier, CertifyError, certify_with};
use crate::bft::{Bls, Committee, Member, QuorumCertificate, bitmap_signers};
use crate::block::{
    BEACON_SHARD, BLOCK_EVIDENCE_MAX, BLOCK_LINKS_MAX, Block, BlockHeader, CrossLink,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls, domain, hash_with};
use crate::genesis::Genesis;
use crate::ledger::{
    App, BlockError, CheckedStates, LedgerError, check_header, genesis_header, load_tip, put_commit,
};
use crate::pol::{self, Candidate, Signals};
use crate::registry::{Cursor, RegistryEvent};
use crate::smt::list_root;
use crate::store::{Store, StoreError, WriteBatch};
use crate::types::proof::{CertifiedHeader, EpochProof};
use std::collections::{BTreeMap, HashSet};

const STATE_VERSION: u8 = 2;
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

/// A cross-link checked against a beacon state: what [`BeaconState::record_link`] records.
#[derive(Debug, Clone)]
pub struct CheckedLink {
    pub qc: QuorumCertificate<Bls>,
    pub committee: Committee<Bls>,
    /// The shard's registry events the beacon has not applied yet, and its outbox cursor after them.
    pub events: Vec<RegistryEvent>,
    pub registry: Cursor,
}

/// A storage node in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNodeRecord {
    pub id: Address,
    pub stake: Amount,
}

/// A validator in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorRecord {
    pub id: Address,
    pub stake: Amount,
    pub key: bls::PublicKey,
    /// The reputation the newest epoch's weight is computed from (earned in the epoch before; 0 at genesis).
    pub reputation_ppm: u64,
    /// What the chain has recorded about it since the newest epoch began.
    pub signals: Signals,
}

impl ValidatorRecord {
    pub fn weight(&self) -> u128 {
        pol::weight(self.stake, self.reputation_ppm)
    }
}

/// The last certified block of a shard that the beacon chain recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedHead {
    pub height: u64,
    pub block: Hash,
    pub state_root: Hash,
    /// How far the beacon has applied the shard's registry outbox.
    pub registry: Cursor,
}

/// A committee seat of an epoch, with the weight it votes with for the whole epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub id: Address,
    pub key: bls::PublicKey,
    pub weight: u128,
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

    fn committee(&self, index: usize) -> Option<Committee<Bls>> {
        let seats = self.committees.get(index)?;
        let members = seats
            .iter()
            .map(|s| Member {
                id: s.id,
                public: s.key,
                weight: s.weight,
            })
            .collect();
        Some(Committee::new(members, self.randomness))
    }

    fn ids(&self) -> Vec<Vec<Address>> {
        self.committees
            .iter()
            .map(|c| c.iter().map(|s| s.id).collect())
            .collect()
    }
}

/// Epoch records kept in the state: shards may still be finishing an older epoch while the newest is
/// drawn (see [`BeaconState::epoch_of_height`]), and links are checked against the epoch of their height.
pub const EPOCHS_KEPT: usize = 4;

/// Everything the beacon chain agrees on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconState {
    pub chain_id: u32,
    pub committee_size: u16,
    /// Shard heights per epoch: shard epoch `k` covers heights `k * len + 1 ..= (k + 1) * len`. 0: one
    /// epoch forever.
    pub epoch_length: u64,
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
}

/// What identifies one fault: the offender and the step (shard, height, round) it signed twice for.
pub fn fault_key(offender: &Address, e: &crate::bft::Evidence<Bls>) -> Hash {
    let (shard, height, round) = e.step();
    let kind: u8 = match e {
        crate::bft::Evidence::DoubleVote(a, _) => a.kind.tag(),
        crate::bft::Evidence::DoubleProposal(..) => 3,
    };
    hash_with(
        "IOS fault key v1",
        &[
            &offender.0,
            &shard.to_be_bytes(),
            &height.to_be_bytes(),
            &round.to_be_bytes(),
            &[kind],
        ],
    )
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
        let mut storage_nodes: Vec<StorageNodeRecord> = genesis
            .accounts
            .iter()
            .filter(|(_, a)| a.storage_registered)
            .map(|(id, a)| StorageNodeRecord {
                id: *id,
                stake: a.storage_stake,
            })
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
            validators,
            storage_nodes,
            epochs: Vec::new(),
            links: vec![None; usize::from(shards)],
            mix: [0; 32],
            faults: BTreeMap::new(),
        };
        let record = state.draw(0, randomness, &[]);
        state.epochs.push(record);
        Ok(state)
    }

    /// The record of `epoch`: committees drawn from the registry as it is now.
    fn draw(&self, epoch: u64, randomness: Hash, previous: &[Vec<Address>]) -> EpochRecord {
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
        let ids = pol::select_committees(
            &randomness,
            &candidates,
            previous,
            count,
            usize::from(self.committee_size),
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
                            weight: v.weight(),
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

    pub fn validator(&self, id: &Address) -> Option<&ValidatorRecord> {
        self.validators
            .binary_search_by_key(id, |v| v.id)
            .ok()
            .map(|i| &self.validators[i])
    }

    fn committee_index(&self, shard: ShardId) -> Option<usize> {
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
    pub fn seat_in(&self, epoch: u64, validator: &Address) -> Option<(ShardId, u16)> {
        let record = self.record(epoch)?;
        record.committees.iter().enumerate().find_map(|(i, seats)| {
            let member = seats.iter().position(|s| s.id == *validator)?;
            let shard = if i == self.links.len() {
                BEACON_SHARD
            } else {
                u16::try_from(i).expect("shards are u16")
            };
            Some((
                shard,
                u16::try_from(member).expect("committees have at most 1024 members"),
            ))
        })
    }

    /// The seat of a validator in the newest epoch.
    pub fn seat_of(&self, validator: &Address) -> Option<(ShardId, u16)> {
        self.seat_in(self.epoch(), validator)
    }

    /// The reputation each validator would carry into the next epoch if it began now.
    pub fn reputation_now(&self, id: &Address) -> Option<u64> {
        self.validator(id).map(|v| pol::reputation_ppm(&v.signals))
    }

    /// Checks a cross-link against this state: known shard, newer than the linked head, a precommit
    /// quorum certificate of the committee of the header's epoch for exactly this header. `verified` skips
    /// the aggregate signature check (the caller already checked this very link). Returns the certificate
    /// and the committee that made it.
    pub fn check_link(&self, link: &CrossLink, verified: bool) -> Result<CheckedLink, LinkError> {
        let h = &link.header;
        if h.chain_id != self.chain_id {
            return Err(LinkError::WrongChain {
                expected: self.chain_id,
                got: h.chain_id,
            });
        }
        let linked_head = self
            .links
            .get(usize::from(h.shard))
            .ok_or(LinkError::UnknownShard(h.shard))?;
        let applied = linked_head.as_ref().map(|l| l.registry).unwrap_or_default();
        let linked = linked_head.as_ref().map_or(0, |l| l.height);
        if h.height <= linked {
            return Err(LinkError::NotNewer {
                shard: h.shard,
                height: h.height,
                linked,
            });
        }
        let epoch = self.epoch_of_height(h.height);
        let committee = self
            .committee_in(h.shard, epoch)
            .ok_or(LinkError::UnknownEpoch {
                shard: h.shard,
                height: h.height,
                epoch,
            })?;
        let qc = QuorumCertificate::<Bls>::decode(&link.certificate)?;
        if !qc.finalises(h) {
            return Err(LinkError::CertificateMismatch);
        }
        if !verified {
            qc.verify(self.chain_id, &committee)
                .map_err(|error| LinkError::Quorum {
                    shard: h.shard,
                    error,
                })?;
        }
        let (events, registry) = match &link.registry {
            None => (Vec::new(), applied),
            Some(batch) => {
                let (events, cursor) =
                    batch
                        .check(&h.state_root, &applied)
                        .map_err(|error| LinkError::Registry {
                            shard: h.shard,
                            error,
                        })?;
                (events.to_vec(), cursor)
            }
        };
        Ok(CheckedLink {
            qc,
            committee,
            events,
            registry,
        })
    }

    /// Records a checked link: the shard's head, the committee's signals, the randomness mix, and the
    /// registry events it carried (stakes take effect in the next epoch's draw).
    fn record_link(&mut self, checked: &CheckedLink, header: &BlockHeader) {
        let CheckedLink { qc, committee, .. } = checked;
        let signers: HashSet<u16> = bitmap_signers(&qc.signers).collect();
        let mut credit = |index: u16, f: &dyn Fn(&mut Signals)| {
            let id = committee.members[usize::from(index)].id;
            if let Ok(i) = self.validators.binary_search_by_key(&id, |v| v.id) {
                f(&mut self.validators[i].signals);
            }
        };
        for index in
            0..u16::try_from(committee.len()).expect("committees have at most 1024 members")
        {
            let voted = signers.contains(&index);
            credit(index, &|s: &mut Signals| {
                s.certificates += 1;
                if voted {
                    s.votes_in_certificates += 1;
                }
            });
        }
        let first = qc.round.saturating_sub(PROPOSER_ROUNDS_CREDITED_MAX - 1);
        for round in first..=qc.round {
            let proposer = committee.proposer(header.shard, header.height, round);
            let won = round == qc.round;
            credit(proposer, &|s: &mut Signals| {
                s.proposer_slots += 1;
                if won {
                    s.blocks_proposed += 1;
                }
            });
        }
        self.mix = hash_with(domain::RANDOMNESS, &[&self.mix, &qc.signature.0]);
        self.links[usize::from(header.shard)] = Some(LinkedHead {
            height: header.height,
            block: header.hash(),
            state_root: header.state_root,
            registry: checked.registry,
        });
        for event in &checked.events {
            self.apply_event(event);
        }
    }

    /// Checks evidence of a fault by a member of a shard committee: a shard that exists, an epoch this
    /// state keeps and records faults of (the newest or the one before), both messages verifying against that
    /// epoch's committee, and a fault not recorded yet. Returns the offender and the fault's key and epoch.
    pub fn check_evidence(
        &self,
        e: &crate::bft::Evidence<Bls>,
    ) -> Result<(Address, Hash, u64), EvidenceError> {
        let (shard, height, _) = e.step();
        if shard >= self.shard_count() {
            return Err(EvidenceError::UnknownShard(shard));
        }
        let epoch = self.epoch_of_height(height);
        let oldest = self.epoch().saturating_sub(1);
        let committee = self
            .committee_in(shard, epoch)
            .filter(|_| epoch >= oldest)
            .ok_or(EvidenceError::OutOfEpochs {
                epoch,
                oldest,
                newest: self.epoch(),
            })?;
        if !e.verify(self.chain_id, &committee) {
            return Err(EvidenceError::Invalid(shard));
        }
        let offender = committee
            .members
            .get(usize::from(e.offender()))
            .ok_or(EvidenceError::Invalid(shard))?
            .id;
        let key = fault_key(&offender, e);
        if self.faults.contains_key(&key) {
            return Err(EvidenceError::AlreadyRecorded);
        }
        if self.faults.len() >= FAULTS_KEPT_MAX {
            return Err(EvidenceError::Full);
        }
        Ok((offender, key, epoch))
    }

    /// Records a checked fault: it counts in the offender's signals, so its reputation (and likelihood) at
    /// the next epoch is halved for each fault.
    fn record_fault(&mut self, offender: &Address, key: Hash, epoch: u64) {
        self.faults.insert(key, epoch);
        if let Ok(i) = self.validators.binary_search_by_key(offender, |v| v.id) {
            let s = &mut self.validators[i].signals;
            s.faults_proven = s.faults_proven.saturating_add(1);
        }
    }

    /// A stake from a shard's registry outbox: the account's stake in that role is now this. A new
    /// validator joins with reputation 0 (its weight is its stake); one whose stake falls to 0 keeps its
    /// record (and signals) but is no longer drawn. A full registry ignores newcomers.
    fn apply_event(&mut self, event: &RegistryEvent) {
        match event {
            RegistryEvent::Validator { id, key, stake } => {
                match self.validators.binary_search_by_key(id, |v| v.id) {
                    Ok(i) => self.validators[i].stake = *stake,
                    Err(i) if self.validators.len() < VALIDATORS_MAX => {
                        self.validators.insert(
                            i,
                            ValidatorRecord {
                                id: *id,
                                stake: *stake,
                                key: *key,
                                reputation_ppm: 0,
                                signals: Signals::default(),
                            },
                        );
                    }
                    Err(_) => {}
                }
            }
            RegistryEvent::StorageNode { id, stake } => {
                match self.storage_nodes.binary_search_by_key(id, |n| n.id) {
                    Ok(i) => self.storage_nodes[i].stake = *stake,
                    Err(i) if self.storage_nodes.len() < STORAGE_NODES_MAX => {
                        self.storage_nodes.insert(
                            i,
                            StorageNodeRecord {
                                id: *id,
                                stake: *stake,
                            },
                        );
                    }
                    Err(_) => {}
                }
            }
        }
    }

    pub fn storage_node(&self, id: &Address) -> Option<&StorageNodeRecord> {
        self.storage_nodes
            .binary_search_by_key(id, |n| n.id)
            .ok()
            .map(|i| &self.storage_nodes[i])
    }

    /// Whether the next epoch is due: epochs are on, and every shard has linked a head at least halfway
    /// through the newest epoch, so that the next epoch's committees are known well before any shard needs
    /// them, and no shard runs more than about an epoch ahead of the slowest.
    pub fn next_epoch_due(&self) -> bool {
        if self.epoch_length == 0 {
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

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(STATE_VERSION)
            .u32(self.chain_id)
            .u16(self.committee_size)
            .u64(self.epoch_length)
            .fixed(&self.mix);
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
                .u32(s.faults_proven);
        }
        w.u32(u32::try_from(self.storage_nodes.len()).expect("at most STORAGE_NODES_MAX nodes"));
        for n in &self.storage_nodes {
            w.fixed(&n.id.0).u64(n.stake.0);
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
        let mix = r.array()?;
        let count = r.count("beacon validators", VALIDATORS_MAX, 32 + 8 + 48 + 8 * 5 + 4)?;
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
                },
            });
        }
        let count = r.count("beacon storage nodes", STORAGE_NODES_MAX, 32 + 8)?;
        let mut storage_nodes = Vec::with_capacity(count);
        for _ in 0..count {
            storage_nodes.push(StorageNodeRecord {
                id: Address(r.array()?),
                stake: Amount(r.u64()?),
            });
        }
        let count = r.count("beacon epochs", EPOCHS_KEPT, 8 + 32 + 4)?;
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
        Ok(Self {
            chain_id,
            committee_size,
            epoch_length,
            validators,
            storage_nodes,
            epochs,
            links,
            mix,
            faults,
        })
    }

    /// The state root in a beacon block header: a domain-separated hash of the whole encoded state (the
    /// beacon state is small: one record per validator, per kept epoch's seat and per shard).
    pub fn root(&self) -> Hash {
        hash_with(domain::BEACON_STATE, &[&self.encode()])
    }
}

/// The epoch of shard block `height` for an epoch length (0: always epoch 0).
/// Certifies other shards' headers for Atomix inbounds with the committees this beacon state keeps. A
/// header of a newer epoch waits ([`CertifyError::UnknownCommittee`]); one older than every kept epoch is
/// refused. A lock stays in its shard's state, so a relay proving it against a newer header still commits it.
impl Certifier for BeaconState {
    fn certify(&self, header: &BlockHeader, certificate: &[u8]) -> Result<(), CertifyError> {
        if header.shard >= self.shard_count() {
            return Err(CertifyError::Invalid(format!(
                "shard {} does not exist",
                header.shard
            )));
        }
        let epoch = self.epoch_of_height(header.height);
        match self.committee_in(header.shard, epoch) {
            Some(committee) => certify_with(self.chain_id, &committee, header, certificate),
            None if epoch > self.epoch() => Err(CertifyError::UnknownCommittee {
                shard: header.shard,
                height: header.height,
            }),
            None => Err(CertifyError::Invalid(format!(
                "epoch {epoch} is older than every epoch this node keeps"
            ))),
        }
    }
}

pub fn epoch_of_height(epoch_length: u64, height: u64) -> u64 {
    height
        .saturating_sub(1)
        .checked_div(epoch_length)
        .unwrap_or(0)
}

/// The beacon chain's ledger as the BFT replica sees it.
pub struct BeaconApp<St: Store> {
    state: BeaconState,
    store: St,
    tip: (u64, Hash),
    /// Verified links waiting for a block, by (shard, height).
    pending: BTreeMap<(u16, u64), CrossLink>,
    /// Verified evidence waiting for a block, by fault key.
    pending_evidence: BTreeMap<Hash, crate::bft::Evidence<Bls>>,
    /// Hashes of links whose certificate this node verified (so executing them skips the BLS check).
    verified: HashSet<Hash>,
    checked: CheckedStates<BeaconState>,
    /// Every epoch record drawn since genesis, kept by this node (the state keeps only the last
    /// `EPOCHS_KEPT`): what a follower checks old shard blocks against.
    archive: BTreeMap<u64, EpochRecord>,
}

fn epoch_key(epoch: u64) -> Vec<u8> {
    [KEY_EPOCH_PREFIX, &epoch.to_be_bytes()].concat()
}

impl<St: Store> BeaconApp<St> {
    /// Opens the beacon chain on `store`: resumes from its tip, or writes the genesis state.
    pub fn open(
        genesis: &Genesis,
        committee_size: usize,
        epoch_length: u64,
        mut store: St,
    ) -> Result<Self, LedgerError> {
        let genesis_state =
            BeaconState::genesis(genesis, committee_size, epoch_length).map_err(|e| {
                LedgerError::Store(StoreError::Corrupt {
                    key: "genesis".into(),
                    reason: e.to_string(),
                })
            })?;
        let (state, tip) = match load_tip(&store)? {
            Some(tip) => {
                let bytes = store.get(KEY_STATE)?.ok_or_else(|| StoreError::Corrupt {
                    key: "beacon/state".into(),
                    reason: "missing".into(),
                })?;
                let state = BeaconState::decode(&bytes).map_err(|e| StoreError::Corrupt {
                    key: "beacon/state".into(),
                    reason: e.to_string(),
                })?;
                (state, tip)
            }
            None => {
                let mut header =
                    genesis_header(&genesis.params, BEACON_SHARD, genesis_state.root());
                header.transactions_root = Block::links_root(&[]);
                let hash = header.hash();
                let mut batch = WriteBatch::default();
                batch.put(KEY_STATE, genesis_state.encode());
                let mut w = Writer::new();
                genesis_state.newest().encode_into(&mut w);
                batch.put(epoch_key(0), w.finish());
                batch.put(
                    crate::ledger::KEY_TIP,
                    [0u64.to_be_bytes().as_slice(), &hash].concat(),
                );
                store.write(batch)?;
                (genesis_state, (0, hash))
            }
        };
        let mut archive = BTreeMap::new();
        for epoch in 0..=state.epoch() {
            let Some(bytes) = store.get(&epoch_key(epoch))? else {
                continue;
            };
            let record = EpochRecord::decode_from(&mut Reader::new(&bytes)).map_err(|e| {
                StoreError::Corrupt {
                    key: format!("beacon/epoch/{epoch}"),
                    reason: e.to_string(),
                }
            })?;
            archive.insert(epoch, record);
        }
        Ok(Self {
            state,
            store,
            tip,
            pending: BTreeMap::new(),
            pending_evidence: BTreeMap::new(),
            verified: HashSet::new(),
            checked: CheckedStates::new(),
            archive,
        })
    }

    /// The committee that certifies block `height` of `shard`, from the state or, for an epoch the state
    /// no longer keeps, from this node's archive.
    pub fn committee_at(&self, shard: ShardId, height: u64) -> Option<Committee<Bls>> {
        let epoch = self.state.epoch_of_height(height);
        match self.state.record(epoch) {
            Some(r) => r.committee_of(shard, self.state.shard_count()),
            None => self
                .archive
                .get(&epoch)?
                .committee_of(shard, self.state.shard_count()),
        }
    }

    pub fn state(&self) -> &BeaconState {
        &self.state
    }

    /// The proof of how `epoch` (1 or later) was drawn: the beacon block that drew it, with its certificate,
    /// and the state after it. `None` if this node has not committed that block (or the store fails).
    pub fn epoch_proof(&self, epoch: u64) -> Option<EpochProof> {
        let bytes = self
            .store
            .get(&[KEY_DRAWN_PREFIX, &epoch.to_be_bytes()].concat())
            .ok()??;
        let height = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let (block, certificate) = crate::ledger::load_committed(&self.store, height)?;
        let qc = QuorumCertificate::<Bls>::decode(&certificate).ok()?;
        Some(EpochProof {
            certified: CertifiedHeader {
                header: block.header,
                qc,
            },
            state: bytes[8..].to_vec(),
        })
    }

    /// The newest epoch's committee of a shard, or of the beacon (`BEACON_SHARD`): the beacon's certifies
    /// the next beacon block.
    pub fn committee(&self, shard: ShardId) -> Option<Committee<Bls>> {
        self.state.committee(shard)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Checks a cross-link (its certificate included) and keeps it for the next beacon block.
    pub fn offer(&mut self, link: CrossLink) -> Result<(), LinkError> {
        let key = (link.header.shard, link.header.height);
        if self.pending.get(&key) == Some(&link) {
            return Ok(());
        }
        self.state.check_link(&link, false)?;
        if self.pending.len() >= PENDING_LINKS_MAX {
            return Err(LinkError::PoolFull);
        }
        self.verified.insert(link.hash());
        self.pending.insert(key, link);
        Ok(())
    }

    pub fn pending_evidence_len(&self) -> usize {
        self.pending_evidence.len()
    }

    /// Checks evidence of a fault and keeps it for the next beacon block.
    pub fn offer_evidence(&mut self, e: crate::bft::Evidence<Bls>) -> Result<(), EvidenceError> {
        // Every validator that saw the fault sends it: the same evidence again costs no signature check.
        if self.pending_evidence.values().any(|p| *p == e) {
            return Ok(());
        }
        let (_, key, _) = self.state.check_evidence(&e)?;
        if self.pending_evidence.contains_key(&key) {
            return Ok(());
        }
        if self.pending_evidence.len() >= PENDING_EVIDENCE_MAX {
            return Err(EvidenceError::Full);
        }
        self.pending_evidence.insert(key, e);
        Ok(())
    }

    fn execute(&self, block: &Block) -> Result<BeaconState, BlockError> {
        let h = &block.header;
        check_header(h, self.state.chain_id, BEACON_SHARD, self.tip)?;
        if !block.transactions.is_empty() {
            return Err(BlockError::TooManyTransactions(block.transactions.len()));
        }
        if block.links.len() > BLOCK_LINKS_MAX {
            return Err(BlockError::TooManyTransactions(block.links.len()));
        }
        if block.evidence.len() > BLOCK_EVIDENCE_MAX || !block.inbound.is_empty() {
            return Err(BlockError::TooManyTransactions(block.evidence.len()));
        }
        if Block::beacon_root(&block.links, &block.evidence) != h.transactions_root {
            return Err(BlockError::TransactionsRoot);
        }
        let mut state = self.state.clone();
        for (index, link) in block.links.iter().enumerate() {
            let verified = self.verified.contains(&link.hash());
            let checked = state
                .check_link(link, verified)
                .map_err(|error| BlockError::Link { index, error })?;
            state.record_link(&checked, &link.header);
        }
        for (index, e) in block.evidence.iter().enumerate() {
            let (offender, key, epoch) = state
                .check_evidence(e)
                .map_err(|error| BlockError::Evidence { index, error })?;
            state.record_fault(&offender, key, epoch);
        }
        if state.next_epoch_due() {
            state = state.next_epoch();
        }
        if state.root() != h.state_root {
            return Err(BlockError::StateRoot);
        }
        if list_root(&[]) != h.receipts_root {
            return Err(BlockError::ReceiptsRoot);
        }
        Ok(state)
    }
}

impl<St: Store> App for BeaconApp<St> {
    fn tip(&self) -> (u64, Hash) {
        self.tip
    }

    fn propose(&mut self) -> Block {
        let mut state = self.state.clone();
        let mut links = Vec::new();
        for link in self.pending.values() {
            if links.len() >= BLOCK_LINKS_MAX {
                break;
            }
            if let Ok(checked) = state.check_link(link, true) {
                state.record_link(&checked, &link.header);
                links.push(link.clone());
            }
        }
        let mut evidence = Vec::new();
        for e in self.pending_evidence.values() {
            if evidence.len() >= BLOCK_EVIDENCE_MAX {
                break;
            }
            if let Ok((offender, key, epoch)) = state.check_evidence(e) {
                state.record_fault(&offender, key, epoch);
                evidence.push(e.clone());
            }
        }
        if state.next_epoch_due() {
            state = state.next_epoch();
        }
        let header = BlockHeader {
            chain_id: state.chain_id,
            shard: BEACON_SHARD,
            height: self.tip.0 + 1,
            parent: self.tip.1,
            state_root: state.root(),
            transactions_root: Block::beacon_root(&links, &evidence),
            receipts_root: list_root(&[]),
        };
        self.checked.remember(header.hash(), state);
        Block {
            header,
            transactions: Vec::new(),
            links,
            inbound: Vec::new(),
            evidence,
        }
    }

    fn check(&mut self, block: &Block) -> Result<(), BlockError> {
        let hash = block.hash();
        if self.checked.contains(&hash) {
            return Ok(());
        }
        let state = self.execute(block)?;
        self.checked.remember(hash, state);
        Ok(())
    }

    fn commit(&mut self, block: &Block, certificate: Vec<u8>) -> Result<(), LedgerError> {
        let hash = block.hash();
        let state = match self.checked.take(block, self.tip) {
            Some(state) => state,
            None => self.execute(block)?,
        };
        let mut batch = WriteBatch::default();
        let encoded = state.encode();
        let newest = state.newest();
        let new_epoch = !self.archive.contains_key(&newest.epoch);
        if new_epoch {
            let mut w = Writer::new();
            newest.encode_into(&mut w);
            batch.put(epoch_key(newest.epoch), w.finish());
            batch.put(
                [KEY_DRAWN_PREFIX, &newest.epoch.to_be_bytes()].concat(),
                [block.header.height.to_be_bytes().as_slice(), &encoded].concat(),
            );
        }
        batch.put(KEY_STATE, encoded);
        put_commit(&mut batch, block, certificate);
        self.store.write(batch)?;
        if new_epoch {
            self.archive.insert(state.epoch(), state.newest().clone());
        }
        self.state = state;
        self.tip = (block.header.height, hash);
        self.checked.clear();
        for link in &block.links {
            self.verified.remove(&link.hash());
        }
        let links = &self.state.links;
        self.pending.retain(|(shard, height), _| {
            *height > links[usize::from(*shard)].as_ref().map_or(0, |l| l.height)
        });
        let state = &self.state;
        self.pending_evidence
            .retain(|_, e| state.check_evidence(e).is_ok());
        let waiting: HashSet<Hash> = self.pending.values().map(CrossLink::hash).collect();
        self.verified.retain(|h| waiting.contains(h));
        Ok(())
    }

    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn store_ref(&self) -> &dyn Store {
        &self.store
    }

    fn committed(&self, height: u64) -> Option<(Block, Vec<u8>)> {
        crate::ledger::load_committed(&self.store, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bft::VoteKind;
    use crate::bft::{QcError, Vote};
    use crate::genesis::GenesisConfig;
    use crate::ledger::ShardApp;
    use crate::store::MemStore;
    use proptest::prelude::*;

    const SIZE: usize = 4;

    /// Two shards and the beacon, 4 seats each, and `spare` validators without a seat.
    fn genesis(spare: usize) -> Genesis {
        GenesisConfig::devnet(
            2,
            3 * SIZE + spare,
            Amount::from_iost(1_000_000).expect("small"),
            Amount::from_iost(1_000).expect("small"),
        )
        .build()
        .expect("valid genesis")
    }

    fn secret_of(id: &Address, genesis: &Genesis) -> bls::SecretKey {
        (0..genesis.accounts.len())
            .map(|i| bls::SecretKey::dev(&format!("validator/{i}")))
            .find(|k| {
                genesis
                    .accounts
                    .iter()
                    .any(|(a, acc)| a == id && acc.validator_key == Some(k.public()))
            })
            .expect("a devnet validator")
    }

    /// A certified block of `shard` at the next height of `app`, signed by the committee members in `signers`.
    fn certified(
        genesis: &Genesis,
        beacon: &BeaconState,
        app: &mut ShardApp<MemStore>,
        shard: u16,
        signers: &[u16],
        round: u32,
    ) -> CrossLink {
        let committee = beacon.committee(shard).expect("a shard");
        let (block, qc) = certified_by(genesis, &committee, app, shard, signers, round);
        CrossLink {
            header: block.header,
            certificate: qc.encode(),
            registry: None,
        }
    }

    #[test]
    fn registrations_and_unstakes_on_a_shard_reach_the_registry_through_links() {
        use crate::crypto::SecretKey;
        use crate::registry::{BatchError, RegistryBatch};
        use crate::state::State;
        use crate::tx::{Role, Transaction, TxKind};
        let g = genesis(2);
        let mut beacon = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
        let wallet = SecretKey::dev("devnet/wallet");
        let id = Address::of(&wallet.public());
        let shard = crate::shard_of(&id, 2);
        let bls_key = bls::SecretKey::dev("a new validator");
        let iost = |n: u64| Amount::from_iost(n).expect("small");
        let tx = |nonce: u64, kind: TxKind| {
            Transaction {
                chain_id: g.params.chain_id,
                sender: wallet.public(),
                nonce,
                fee: g.params.fee_min,
                expiry_height: 100,
                kind,
            }
            .sign(&wallet)
        };
        let mut app = ShardApp::open(&g, shard, MemStore::new()).expect("shard");
        app.submit(tx(
            0,
            TxKind::RegisterValidator {
                stake: iost(500),
                bls_public_key: bls_key.public(),
                proof_of_possession: bls_key.proof_of_possession(),
            },
        ))
        .expect("admitted");
        app.submit(tx(1, TxKind::RegisterStorageNode { stake: iost(100) }))
            .expect("admitted");
        let mut link = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
        assert_eq!(app.state().outbox().count, 2);
        let batch = |app: &ShardApp<MemStore>, from: u64| {
            let to = app.state().outbox().count;
            RegistryBatch {
                from,
                events: State::registry_events(app.store_ref(), from, to).expect("stored"),
                checkpoint: app.state().prove_checkpoint(to),
            }
        };
        // A forged stake does not chain to the checkpoint in the certified state root.
        let mut forged = batch(&app, 0);
        if let RegistryEvent::Validator { stake, .. } = &mut forged.events[0] {
            *stake = iost(900);
        }
        link.registry = Some(forged);
        assert!(matches!(
            beacon.check_link(&link, false),
            Err(LinkError::Registry {
                error: BatchError::ChainMismatch,
                ..
            })
        ));
        link.registry = Some(batch(&app, 0));
        let checked = beacon.check_link(&link, false).expect("a valid link");
        assert_eq!(checked.events.len(), 2);
        beacon.record_link(&checked, &link.header);
        let v = beacon.validator(&id).expect("registered");
        assert_eq!(
            (v.stake, v.key, v.reputation_ppm),
            (iost(500), bls_key.public(), 0)
        );
        assert_eq!(beacon.storage_node(&id).map(|n| n.stake), Some(iost(100)));

        // An unstake, linked by a member whose view of the beacon is stale (from 0): only it applies.
        app.submit(tx(
            2,
            TxKind::Unstake {
                role: Role::Validator,
                amount: iost(200),
            },
        ))
        .expect("admitted");
        let mut link = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
        link.registry = Some(batch(&app, 0));
        let checked = beacon.check_link(&link, false).expect("a valid link");
        assert_eq!(checked.events.len(), 1);
        beacon.record_link(&checked, &link.header);
        assert_eq!(beacon.validator(&id).map(|v| v.stake), Some(iost(300)));
        assert_eq!(
            beacon.links[usize::from(shard)]
                .as_ref()
                .map(|l| l.registry),
            Some(app.state().outbox())
        );
        // A batch starting past what the beacon applied is refused, one with nothing new is accepted.
        let mut gap = batch(&app, 3);
        gap.from = 4;
        gap.events.clear();
        let mut next = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
        next.registry = Some(gap);
        assert!(matches!(
            beacon.check_link(&next, false),
            Err(LinkError::Registry {
                error: BatchError::Gap {
                    from: 4,
                    applied: 3
                },
                ..
            })
        ));
        next.registry = Some(batch(&app, 3));
        assert!(beacon.check_link(&next, false).is_ok());
        // The registry survives the shard's restart, and the newcomer is a candidate of the next draw.
        let outbox = app.state().outbox();
        let reopened = ShardApp::open(&g, shard, app.into_store()).expect("reopens");
        assert_eq!(reopened.state().outbox(), outbox);
        assert!(beacon.next_epoch().validator(&id).is_some());
        let decoded = BeaconState::decode(&beacon.encode()).expect("round trip");
        assert_eq!(decoded, beacon);
    }

    /// The next block of `app`, committed with a precommit certificate of `committee`'s `signers`.
    fn certified_by(
        genesis: &Genesis,
        committee: &Committee<Bls>,
        app: &mut ShardApp<MemStore>,
        shard: u16,
        signers: &[u16],
        round: u32,
    ) -> (Block, QuorumCertificate<Bls>) {
        let block = app.propose();
        let votes: Vec<Vote<Bls>> = signers
            .iter()
            .map(|&i| {
                let key = secret_of(&committee.members[usize::from(i)].id, genesis);
                Vote::<Bls>::sign(
                    genesis.params.chain_id,
                    shard,
                    VoteKind::Precommit,
                    block.header.height,
                    round,
                    Some(block.hash()),
                    i,
                    &key,
                )
            })
            .collect();
        let refs: Vec<&Vote<Bls>> = votes.iter().collect();
        let qc =
            QuorumCertificate::aggregate(committee, &refs, block.hash()).expect("votes aggregate");
        app.commit(&block, qc.encode()).expect("commit");
        (block, qc)
    }

    #[test]
    fn followers_apply_certified_blocks_in_order_across_an_epoch_change() {
        use crate::bft::{Followed, Follower, Message};
        use std::sync::Arc;
        let g = genesis(6);
        let epoch0 = BeaconState::genesis(&g, SIZE, 2).expect("enough validators");
        let epoch1 = epoch0.next_epoch();
        let c0 = epoch0.committee(0).expect("shard 0");
        let c1 = epoch1.committee(0).expect("shard 0");
        assert_ne!(
            c0.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            c1.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            "a seat rotated"
        );
        let committee_at = |h: u64| match epoch_of_height(2, h) {
            0 => Some(c0.clone()),
            1 => Some(c1.clone()),
            _ => None,
        };
        let mut leader = ShardApp::open(&g, 0, MemStore::new()).expect("shard");
        let blocks: Vec<(Arc<Block>, QuorumCertificate<Bls>)> = (1..=5u64)
            .map(|h| {
                let c = committee_at(h).unwrap_or_else(|| c1.clone());
                let (b, qc) = certified_by(&g, &c, &mut leader, 0, &[0, 1, 2], 0);
                (Arc::new(b), qc)
            })
            .collect();
        let app = ShardApp::open(&g, 0, MemStore::new()).expect("shard");
        let mut f = Follower::<Bls, _>::new(g.params.chain_id, 0, app, 500);
        assert!(matches!(
            f.poll_status(0),
            Some(Message::Status {
                shard: 0,
                height: 1,
                round: 0
            })
        ));
        assert!(f.poll_status(100).is_none(), "asks again only after 500 ms");
        let take = |i: usize| blocks[i].clone();

        // Ahead: kept. Height 1 certified by the wrong epoch's committee: ignored.
        let (b3, q3) = take(2);
        assert!(matches!(
            f.on_decided(b3, q3, committee_at),
            Ok(Followed::Kept)
        ));
        let (b1, _) = take(0);
        let forged = {
            let (b, _) = take(0);
            // All four of epoch 1's members sign, the rotated-in one included.
            let votes: Vec<Vote<Bls>> = [0u16, 1, 2, 3]
                .iter()
                .map(|&i| {
                    let key = secret_of(&c1.members[usize::from(i)].id, &g);
                    Vote::<Bls>::sign(
                        g.params.chain_id,
                        0,
                        VoteKind::Precommit,
                        1,
                        0,
                        Some(b.hash()),
                        i,
                        &key,
                    )
                })
                .collect();
            let refs: Vec<&Vote<Bls>> = votes.iter().collect();
            QuorumCertificate::aggregate(&c1, &refs, b.hash()).expect("aggregates")
        };
        assert!(matches!(
            f.on_decided(b1.clone(), forged, committee_at),
            Ok(Followed::Ignored)
        ));
        assert_eq!(f.height(), 1);
        let (b2, q2) = take(1);
        assert!(matches!(
            f.on_decided(b2, q2, committee_at),
            Ok(Followed::Kept)
        ));
        // Height 1 with its certificate: 1, 2 and the kept 3 (epoch 1's committee) apply in order.
        let (_, q1) = take(0);
        match f.on_decided(b1, q1, committee_at) {
            Ok(Followed::Committed(done)) => {
                let heights: Vec<u64> = done.iter().map(|(b, _)| b.header.height).collect();
                assert_eq!(heights, vec![1, 2, 3]);
            }
            other => panic!("expected commits, got {other:?}"),
        }
        assert!(
            f.poll_status(101).is_some(),
            "progress: ask for the next ones at once"
        );
        // Height 5 is in epoch 2, whose committee this follower does not know: kept, not applied.
        let (b4, q4) = take(3);
        assert!(matches!(
            f.on_decided(b4, q4, committee_at),
            Ok(Followed::Committed(_))
        ));
        let (b5, q5) = take(4);
        assert!(matches!(
            f.on_decided(b5, q5, committee_at),
            Ok(Followed::Kept)
        ));
        assert_eq!(f.height(), 5);
        assert_eq!(f.app().tip().0, 4);
        assert_eq!(
            f.app().state().clone().root(),
            leader
                .committed(4)
                .map(|(b, _)| b.header.state_root)
                .expect("block 4"),
        );
    }

    #[test]
    fn the_beacon_draws_the_next_epoch_once_every_shard_is_halfway_and_archives_it() {
        let g = genesis(3);
        let mut beacon = BeaconApp::open(&g, SIZE, 4, MemStore::new()).expect("beacon");
        let state = beacon.state().clone();
        let mut shards: Vec<ShardApp<MemStore>> = (0..2)
            .map(|s| ShardApp::open(&g, s, MemStore::new()).expect("shard"))
            .collect();
        // Shard 0 reaches height 2 (halfway through epoch 0 of 4 heights), shard 1 only height 1.
        let mut links = Vec::new();
        for (s, heights) in [(0u16, 2), (1, 1)] {
            for _ in 0..heights {
                links.push(certified(
                    &g,
                    &state,
                    &mut shards[usize::from(s)],
                    s,
                    &[0, 1, 2],
                    0,
                ));
            }
        }
        for link in links {
            beacon.offer(link).expect("valid");
        }
        let block = beacon.propose();
        beacon.commit(&block, vec![]).expect("commit");
        assert_eq!(beacon.state().epoch(), 0, "shard 1 is not halfway yet");
        let link = certified(&g, &state, &mut shards[1], 1, &[1, 2, 3], 0);
        beacon.offer(link).expect("valid");
        let block = beacon.propose();
        let mut other = BeaconApp::open(&g, SIZE, 4, MemStore::new()).expect("beacon");
        other
            .check(&beacon.committed(1).expect("block 1").0)
            .expect("valid");
        other
            .commit(&beacon.committed(1).expect("block 1").0, vec![])
            .expect("commit");
        other
            .check(&block)
            .expect("a replica agrees on the epoch change");
        // Certified by epoch 0's beacon committee, as the block that draws epoch 1 is.
        let beacon_committee = state.committee(BEACON_SHARD).expect("the beacon's");
        let votes: Vec<Vote<Bls>> = [0u16, 1, 2]
            .iter()
            .map(|&i| {
                let key = secret_of(&beacon_committee.members[usize::from(i)].id, &g);
                Vote::<Bls>::sign(
                    g.params.chain_id,
                    BEACON_SHARD,
                    VoteKind::Precommit,
                    block.header.height,
                    0,
                    Some(block.hash()),
                    i,
                    &key,
                )
            })
            .collect();
        let refs: Vec<&Vote<Bls>> = votes.iter().collect();
        let qc = QuorumCertificate::aggregate(&beacon_committee, &refs, block.hash())
            .expect("votes aggregate");
        beacon.commit(&block, qc.encode()).expect("commit");
        // A light client trusting genesis learns epoch 1 from the proof the beacon keeps.
        let mut client = crate::spv::LightClient::from_beacon(&state);
        let proof = beacon.epoch_proof(1).expect("kept");
        assert_eq!(client.advance(&proof), Ok(1));
        assert!(beacon.epoch_proof(2).is_none());
        let state = beacon.state().clone();
        assert_eq!(state.epoch(), 1);
        assert_eq!(state.epochs.len(), 2);
        assert_ne!(state.randomness(), state.epochs[0].randomness);
        assert_eq!(state.mix, [0; 32], "the mix starts over");
        // Heights 1..=4 stay with epoch 0's committees, 5.. go to epoch 1's.
        let seats = |c: Option<Committee<Bls>>| {
            c.expect("known")
                .members
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seats(beacon.committee_at(0, 4)),
            seats(state.committee_in(0, 0))
        );
        assert_eq!(
            seats(beacon.committee_at(0, 5)),
            seats(state.committee_in(0, 1))
        );
        assert!(state.committee_in(0, 2).is_none());
        // The archive keeps every epoch after the state lets old ones go, and survives a reopen.
        let reopened = BeaconApp::open(&g, SIZE, 4, beacon.store).expect("resume");
        assert_eq!(reopened.state().epoch(), 1);
        assert_eq!(
            seats(reopened.committee_at(1, 1)),
            seats(state.committee_in(1, 0))
        );
        assert_eq!(
            seats(reopened.committee_at(1, 8)),
            seats(state.committee_in(1, 1))
        );
    }

    #[test]
    fn genesis_seats_every_shard_and_the_beacon_disjointly() {
        let g = genesis(0);
        let state = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
        let seats = state.newest().ids();
        assert_eq!(seats.len(), 3);
        let mut all: Vec<Address> = seats.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3 * SIZE, "committees are disjoint");
        for (i, seats) in seats.iter().enumerate() {
            for (m, id) in seats.iter().enumerate() {
                let shard = if i == 2 { BEACON_SHARD } else { i as u16 };
                assert_eq!(state.seat_of(id), Some((shard, m as u16)));
            }
        }
        assert_eq!(state.committees().len(), 3);
        let again = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
        assert_eq!(again, state, "a pure function of genesis");
        assert_eq!(
            BeaconState::genesis(&genesis(0), SIZE + 1, 0),
            Err(BeaconError::TooFewValidators {
                validators: 12,
                shards: 2,
                committees: 3,
                size: 5
            })
        );
    }

    #[test]
    fn evidence_of_a_double_vote_is_recorded_once_and_halves_the_next_reputation() {
        let g = genesis(0);
        let mut beacon = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
        let mut follower = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
        let state = beacon.state().clone();
        let committee = state.committee(1).expect("shard 1");
        let offender = committee.members[2].id;
        let key = secret_of(&offender, &g);
        let vote = |block: Option<Hash>, round: u32| {
            Vote::sign(
                state.chain_id,
                1,
                VoteKind::Prevote,
                5,
                round,
                block,
                2,
                &key,
            )
        };
        let double = crate::bft::Evidence::DoubleVote(vote(Some([1; 32]), 0), vote(None, 0));
        beacon
            .offer_evidence(double.clone())
            .expect("valid evidence");
        beacon
            .offer_evidence(double.clone())
            .expect("offered twice, kept once");
        assert_eq!(beacon.pending_evidence_len(), 1);

        // Refused with reasons: the same vote twice, a forged second vote, a shard that does not exist.
        let same = crate::bft::Evidence::DoubleVote(vote(None, 0), vote(None, 0));
        assert_eq!(beacon.offer_evidence(same), Err(EvidenceError::Invalid(1)));
        let mut forged = vote(None, 0);
        forged.signature = vote(Some([2; 32]), 0).signature;
        let forged = crate::bft::Evidence::DoubleVote(vote(Some([1; 32]), 0), forged);
        assert_eq!(
            beacon.offer_evidence(forged),
            Err(EvidenceError::Invalid(1))
        );
        let elsewhere = crate::bft::Evidence::DoubleVote(
            Vote::sign(state.chain_id, 9, VoteKind::Prevote, 5, 0, None, 2, &key),
            Vote::sign(
                state.chain_id,
                9,
                VoteKind::Prevote,
                5,
                0,
                Some([1; 32]),
                2,
                &key,
            ),
        );
        assert_eq!(
            beacon.offer_evidence(elsewhere),
            Err(EvidenceError::UnknownShard(9))
        );

        let block = beacon.propose();
        assert_eq!(block.evidence, vec![double.clone()]);
        let decoded = Block::decode(&block.encode()).expect("beacon blocks round-trip");
        assert_eq!(decoded, block);
        follower
            .check(&decoded)
            .expect("the follower checks the evidence");
        follower.commit(&decoded, vec![1]).expect("commit");
        beacon.commit(&block, vec![1]).expect("commit");
        assert_eq!(beacon.state(), follower.state());
        assert_eq!(beacon.pending_evidence_len(), 0);
        let signals = beacon
            .state()
            .validator(&offender)
            .expect("registered")
            .signals;
        assert_eq!(signals.faults_proven, 1);
        // The same fault is not counted twice, even with other messages as its proof.
        let again = crate::bft::Evidence::DoubleVote(vote(Some([3; 32]), 0), vote(None, 0));
        assert_eq!(
            beacon.offer_evidence(again.clone()),
            Err(EvidenceError::AlreadyRecorded)
        );
        let mut replay = beacon.propose();
        replay.evidence = vec![again];
        replay.header.transactions_root = Block::beacon_root(&replay.links, &replay.evidence);
        assert!(matches!(
            follower.check(&replay),
            Err(BlockError::Evidence {
                index: 0,
                error: EvidenceError::AlreadyRecorded
            })
        ));

        // At the next epoch the fault halves the reputation its signals earn.
        let mut with_fault = beacon.state().clone();
        let mut without = beacon.state().clone();
        for st in [&mut with_fault, &mut without] {
            for v in st.validators.iter_mut() {
                v.signals.certificates = 4;
                v.signals.votes_in_certificates = 4;
            }
        }
        let i = without
            .validators
            .iter()
            .position(|v| v.id == offender)
            .expect("registered");
        without.validators[i].signals.faults_proven = 0;
        let rep = |st: &BeaconState| {
            let next = st.next_epoch();
            next.validator(&offender).expect("known").reputation_ppm
        };
        assert_eq!(rep(&with_fault) * 2, rep(&without));
        assert!(rep(&without) > 0);
        // Faults older than the epoch before the newest are forgotten with their epoch.
        let later = beacon.state().next_epoch().next_epoch();
        assert!(later.faults.is_empty());
        assert!(beacon.state().next_epoch().faults.len() == 1);
    }

    #[test]
    fn links_are_checked_recorded_committed_and_resumed() {
        let g = genesis(0);
        let mut shard0 = ShardApp::open(&g, 0, MemStore::new()).expect("shard");
        let mut beacon = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
        let mut follower = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
        let state = beacon.state().clone();
        let committee = state.committee(0).expect("shard 0");

        // Members 0, 1, 2 sign height 1 in round 0; member 3 is missing.
        let first = certified(&g, &state, &mut shard0, 0, &[0, 1, 2], 0);
        beacon.offer(first.clone()).expect("a valid link");
        // Height 2 is certified in round 1 by members 1, 2, 3.
        let second = certified(&g, &state, &mut shard0, 0, &[1, 2, 3], 1);
        beacon.offer(second.clone()).expect("a valid link");
        assert_eq!(beacon.pending_len(), 2);

        let block = beacon.propose();
        assert_eq!(block.links, vec![first.clone(), second.clone()]);
        let decoded = Block::decode(&block.encode()).expect("beacon blocks round-trip");
        assert_eq!(decoded, block);
        follower.check(&decoded).expect("the follower agrees");
        follower.commit(&decoded, vec![1, 2, 3]).expect("commit");
        beacon.commit(&block, vec![1, 2, 3]).expect("commit");
        assert_eq!(beacon.pending_len(), 0);
        assert_eq!(beacon.state(), follower.state());
        assert_eq!(beacon.state().root(), block.header.state_root);

        let head = beacon.state().links[0].clone().expect("shard 0 linked");
        assert_eq!((head.height, head.block), (2, second.header.hash()));
        assert_eq!(beacon.state().links[1], None);
        let signals = |i: usize| {
            beacon
                .state()
                .validator(&committee.members[i].id)
                .expect("registered")
                .signals
        };
        assert_eq!(signals(0).votes_in_certificates, 1);
        assert_eq!(signals(3).votes_in_certificates, 1);
        for i in 0..4 {
            assert_eq!(signals(i).certificates, 2);
        }
        let slots: u64 = (0..4).map(|i| signals(i).proposer_slots).sum();
        let proposed: u64 = (0..4).map(|i| signals(i).blocks_proposed).sum();
        assert_eq!(
            (slots, proposed),
            (3, 2),
            "rounds 0 of height 1, 0 and 1 of height 2"
        );
        assert_ne!(beacon.state().mix, [0; 32]);

        // Old, forged and mismatched links are refused with their reason.
        assert!(matches!(
            beacon.offer(first.clone()),
            Err(LinkError::NotNewer {
                shard: 0,
                height: 1,
                linked: 2
            })
        ));
        let third = certified(&g, &state, &mut shard0, 0, &[0, 1, 2], 0);
        let mut wrong_header = third.clone();
        wrong_header.header.state_root = [9; 32];
        assert_eq!(
            beacon.offer(wrong_header),
            Err(LinkError::CertificateMismatch)
        );
        let mut unknown = third.clone();
        unknown.header.shard = 7;
        assert_eq!(beacon.offer(unknown), Err(LinkError::UnknownShard(7)));
        let weak = certified(&g, &state, &mut shard0, 0, &[0, 1], 0);
        assert!(matches!(
            beacon.offer(weak),
            Err(LinkError::Quorum {
                shard: 0,
                error: QcError::NoQuorum { .. }
            })
        ));
        let mut garbage = third.clone();
        garbage.certificate.truncate(10);
        assert!(matches!(
            beacon.offer(garbage),
            Err(LinkError::Certificate(_))
        ));

        // A block with a link nobody verified is checked in full: a bad certificate is refused.
        let mut bad = follower.propose();
        let mut forged = third.clone();
        forged.certificate = QuorumCertificate::<Bls>::decode(&second.certificate)
            .map(|mut qc| {
                qc.height = 3;
                qc.block = third.header.hash();
                qc.encode()
            })
            .expect("decodes");
        bad.links = vec![forged];
        bad.header.transactions_root = Block::links_root(&bad.links);
        assert!(matches!(
            follower.check(&bad),
            Err(BlockError::Link {
                index: 0,
                error: LinkError::Quorum { .. }
            })
        ));

        // Reopened on its store, the beacon resumes at its tip with the same state.
        let tip = beacon.tip();
        let state = beacon.state().clone();
        let store = beacon.store;
        let reopened = BeaconApp::open(&g, SIZE, 0, store).expect("resume");
        assert_eq!(reopened.tip(), tip);
        assert_eq!(reopened.state(), &state);
        assert_eq!(reopened.committed(1).map(|(b, _)| b), Some(block));
    }

    #[test]
    fn the_next_epoch_weighs_reputation_and_rotates_at_most_a_third() {
        let g = genesis(6);
        let mut state = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
        // The first member of every committee voted in every certificate, the others in half.
        for seats in state.newest().ids() {
            for (m, id) in seats.iter().enumerate() {
                let i = state
                    .validators
                    .binary_search_by_key(id, |v| v.id)
                    .expect("registered");
                state.validators[i].signals = Signals {
                    votes_in_certificates: if m == 0 { 10 } else { 5 },
                    certificates: 10,
                    blocks_proposed: 1,
                    proposer_slots: 2,
                    faults_proven: 0,
                };
            }
        }
        state.mix = [3; 32];
        let next = state.next_epoch();
        assert_eq!(next.epoch(), 1);
        assert_eq!(next.randomness(), pol::epoch_randomness(1, &[3; 32]));
        assert_eq!(next.epochs.len(), 2, "the previous epoch is kept");
        let first = state.newest().ids()[0][0];
        assert_eq!(
            next.validator(&first).expect("registered").reputation_ppm,
            (7 * 1_000_000 + 3 * 500_000) / 10
        );
        assert!(
            next.validators
                .iter()
                .all(|v| v.signals == Signals::default())
        );
        for (before, after) in state.newest().ids().iter().zip(&next.newest().ids()) {
            let kept = before.iter().filter(|id| after.contains(id)).count();
            assert!(
                kept >= SIZE - SIZE / 3,
                "at most a third rotates: kept {kept}"
            );
            assert_eq!(after.len(), SIZE);
        }
        let mut all = next.newest().ids().concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3 * SIZE, "still disjoint");
        assert_eq!(state.next_epoch(), next, "a pure function");
        let mut other = state.clone();
        other.mix = [4; 32];
        assert_ne!(other.next_epoch().randomness(), next.randomness());
        let mut far = next.clone();
        for _ in 0..EPOCHS_KEPT + 2 {
            far = far.next_epoch();
        }
        assert_eq!(far.epochs.len(), EPOCHS_KEPT);
        assert_eq!(far.epoch(), 1 + EPOCHS_KEPT as u64 + 2);
    }

    proptest! {
        #[test]
        fn states_round_trip_and_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..2000) {
            static GENESIS: std::sync::OnceLock<Genesis> = std::sync::OnceLock::new();
            let g = GENESIS.get_or_init(|| genesis(2));
            let mut state = BeaconState::genesis(g, SIZE, 0).expect("enough validators");
            state.links[1] = Some(LinkedHead {
                height: 9,
                block: [1; 32],
                state_root: [2; 32],
                registry: Cursor { count: 3, head: [4; 32] },
            });
            state.storage_nodes.push(StorageNodeRecord { id: Address([5; 32]), stake: Amount(6) });
            state.validators[0].signals.certificates = 4;
            let encoded = state.encode();
            prop_assert_eq!(BeaconState::decode(&encoded).expect("round trip"), state.clone());
            let _ = BeaconState::decode(&bytes);
            let cut = cut.min(encoded.len() - 1);
            prop_assert!(BeaconState::decode(&encoded[..cut]).is_err());
        }
    }
}
