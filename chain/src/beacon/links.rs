//! Cross-links: shard heads certified by their committees, checked and recorded by the beacon chain, and
//! the signals (duties, votes, proposer slots) and randomness they carry into Proof of Likelihood; and the
//! certifier that checks other shards' headers for Atomix with the committees the beacon state keeps.

use super::{BeaconState, LinkError, PROPOSER_ROUNDS_CREDITED_MAX};
use crate::atomix::{Certifier, CertifyError, certify_with};
use crate::bft::{Bls, Committee, QuorumCertificate, bitmap_signers};
use crate::block::{BlockHeader, CrossLink};
use crate::crypto::{Hash, domain, hash_with};
use crate::ids::MemberIndex;
use crate::pol::Signals;
use crate::registry::{Cursor, RegistryEvent};
use std::collections::HashSet;

/// A cross-link checked against a beacon state: what [`BeaconState::record_link`] records.
#[derive(Debug, Clone)]
pub struct CheckedLink {
    pub qc: QuorumCertificate<Bls>,
    pub committee: Committee<Bls>,
    /// The shard's registry events the beacon has not applied yet, and its outbox cursor after them.
    pub events: Vec<RegistryEvent>,
    pub registry: Cursor,
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

impl BeaconState {
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
        // The committee of the era of this height: after a stalled shard's redraw, a block its old
        // committee certified above the linked one is of the new era and fails here.
        let committee = self
            .committee_at(h.shard, h.height)
            .ok_or(LinkError::UnknownEpoch {
                shard: h.shard,
                height: h.height,
                epoch: self.epoch() + 1,
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
    pub(super) fn record_link(&mut self, checked: &CheckedLink, header: &BlockHeader) {
        let CheckedLink { qc, committee, .. } = checked;
        let signers: HashSet<MemberIndex> = bitmap_signers(&qc.signers).collect();
        let mut credit = |index: MemberIndex, f: &dyn Fn(&mut Signals)| {
            let id = committee.members[usize::from(index)].id;
            if let Ok(i) = self.validators.binary_search_by_key(&id, |v| v.id) {
                f(&mut self.validators[i].signals);
            }
        };
        for index in (0..committee.len()).filter_map(MemberIndex::at) {
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
}

/// Certifies other shards' headers for Atomix inbounds with the committees this beacon state keeps. A
/// header of the next epoch waits ([`CertifyError::UnknownCommittee`]); one further ahead, or older than every
/// kept epoch, is refused. A lock stays in its shard's state, so a relay proving it against a newer header still commits it.
impl Certifier for BeaconState {
    fn certify(&self, header: &BlockHeader, certificate: &[u8]) -> Result<(), CertifyError> {
        if header.shard >= self.shard_count() {
            return Err(CertifyError::Invalid(format!(
                "shard {} does not exist",
                header.shard
            )));
        }
        if let Some(committee) = self.committee_at(header.shard, header.height) {
            return certify_with(self.chain_id, &committee, header, certificate);
        }
        let eras = self.eras_of(header.shard);
        let last = eras.last().map_or(0, |e| e.last);
        match eras.first() {
            // Older than every era kept here.
            Some(e) if header.height < e.first => Err(CertifyError::Invalid(format!(
                "height {} is older than every era this node keeps",
                header.height
            ))),
            // The next era may be scheduled any moment: its headers wait. Anything further ahead cannot be
            // certified by any committee that exists, so it is refused rather than kept.
            _ if header.height <= last.saturating_add(self.epoch_length) => {
                Err(CertifyError::UnknownCommittee {
                    shard: header.shard,
                    height: header.height,
                })
            }
            _ => Err(CertifyError::Invalid(format!(
                "height {} is past the next era of shard {}",
                header.height, header.shard
            ))),
        }
    }
}
