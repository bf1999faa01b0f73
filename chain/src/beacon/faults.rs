//! Faults: evidence of a double vote or a double proposal, checked against the committee of its epoch and
//! recorded once, so that it lowers the offender's reputation at the next epoch.

use super::{BeaconState, EvidenceError, FAULTS_KEPT_MAX};
use crate::address::Address;
use crate::bft::Bls;
use crate::crypto::{Hash, hash_with};

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
            &shard.0.to_be_bytes(),
            &height.to_be_bytes(),
            &round.to_be_bytes(),
            &[kind],
        ],
    )
}

impl BeaconState {
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
        let oldest = self.epoch().saturating_sub(1);
        let epoch = self.epoch_at(shard, height).unwrap_or(0);
        let committee = self
            .committee_in(shard, epoch)
            .filter(|_| epoch >= oldest && self.epoch_at(shard, height).is_some())
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
    pub(super) fn record_fault(&mut self, offender: &Address, key: Hash, epoch: u64) {
        self.faults.insert(key, epoch);
        if let Ok(i) = self.validators.binary_search_by_key(offender, |v| v.id) {
            let s = &mut self.validators[i].signals;
            s.faults_proven = s.faults_proven.saturating_add(1);
        }
    }
}
