//! What BFT replicas vote with and what they certify: vote schemes, committees, votes, signed proposal
//! headers and quorum certificates. Evidence of faults is in [`super::evidence`], and the messages that
//! carry whole blocks in [`super::message`].

use crate::address::Address;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls, domain};
use crate::ids::{MemberIndex, ShardId};
use crate::pol::{Draws, weighted_pick};
use crate::types::header::BlockHeader;
use std::fmt::Debug;

/// The signature scheme of votes. Production uses [`Bls`]; the simulator may plug in a cheaper stand-in so
/// that it can run many seeds, as long as it has the same aggregate semantics.
pub trait VoteScheme: Clone + Debug + PartialEq + Eq + Send + Sync + 'static {
    type Secret: Clone + Debug + Send + Sync;
    type Public: Clone + Eq + Debug + Send + Sync;
    type Sig: Clone + Eq + Debug + Send + Sync;
    fn public(secret: &Self::Secret) -> Self::Public;
    fn sign(secret: &Self::Secret, message: &[u8]) -> Self::Sig;
    fn verify(public: &Self::Public, message: &[u8], sig: &Self::Sig) -> bool;
    /// `None` if any input is not a valid signature.
    fn aggregate(sigs: &[Self::Sig]) -> Option<Self::Sig>;
    fn verify_aggregate(publics: &[Self::Public], message: &[u8], sig: &Self::Sig) -> bool;
    fn sig_to_bytes(sig: &Self::Sig) -> Vec<u8>;
    fn sig_from_bytes(bytes: &[u8]) -> Option<Self::Sig>;
}

/// BLS12-381 `min_pk` votes; keys were registered with proofs of possession, which makes fast aggregate
/// verification sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bls;

impl VoteScheme for Bls {
    type Secret = bls::SecretKey;
    type Public = bls::PublicKey;
    type Sig = bls::Signature;

    fn public(secret: &Self::Secret) -> Self::Public {
        secret.public()
    }
    fn sign(secret: &Self::Secret, message: &[u8]) -> Self::Sig {
        secret.sign(message)
    }
    fn verify(public: &Self::Public, message: &[u8], sig: &Self::Sig) -> bool {
        public.verify(message, sig).is_ok()
    }
    fn aggregate(sigs: &[Self::Sig]) -> Option<Self::Sig> {
        bls::aggregate(sigs).ok()
    }
    fn verify_aggregate(publics: &[Self::Public], message: &[u8], sig: &Self::Sig) -> bool {
        bls::verify_aggregate(publics, message, sig).is_ok()
    }
    fn sig_to_bytes(sig: &Self::Sig) -> Vec<u8> {
        sig.0.to_vec()
    }
    fn sig_from_bytes(bytes: &[u8]) -> Option<Self::Sig> {
        Some(bls::Signature(bytes.try_into().ok()?))
    }
}

pub const COMMITTEE_SIZE_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct Member<S: VoteScheme> {
    pub id: Address,
    pub public: S::Public,
    /// Likelihood weight (see [`crate::pol::weight`]).
    pub weight: u128,
}

/// A shard's committee for an epoch: who votes, with what weight, and the seed of proposer rotation.
#[derive(Debug, Clone)]
pub struct Committee<S: VoteScheme> {
    pub members: Vec<Member<S>>,
    pub seed: Hash,
    total: u128,
}

impl<S: VoteScheme> Committee<S> {
    /// Whether member `index` exists and signed `message` with `signature`.
    pub fn member_signed(&self, index: MemberIndex, message: &[u8], signature: &S::Sig) -> bool {
        self.members
            .get(index.index())
            .is_some_and(|m| S::verify(&m.public, message, signature))
    }

    /// A committee, or `None` if it has no member, more than [`COMMITTEE_SIZE_MAX`], or no weight: for
    /// committees built from bytes read from a disk or a peer.
    pub fn try_new(members: Vec<Member<S>>, seed: Hash) -> Option<Self> {
        let total: u128 = members
            .iter()
            .try_fold(0u128, |t, m| t.checked_add(m.weight))?;
        (!members.is_empty() && members.len() <= COMMITTEE_SIZE_MAX && total > 0).then(|| Self {
            members,
            seed,
            total,
        })
    }

    pub fn new(members: Vec<Member<S>>, seed: Hash) -> Self {
        assert!(
            !members.is_empty() && members.len() <= COMMITTEE_SIZE_MAX,
            "committee size in 1..=1024"
        );
        let total = members.iter().map(|m| m.weight).sum();
        assert!(total > 0, "a committee has weight");
        Self {
            members,
            seed,
            total,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn total_weight(&self) -> u128 {
        self.total
    }

    pub fn weight_of(&self, signers: impl IntoIterator<Item = MemberIndex>) -> u128 {
        signers
            .into_iter()
            .filter_map(|i| self.members.get(i.index()))
            .map(|m| m.weight)
            .sum()
    }

    /// More than two thirds of the total weight.
    pub fn is_quorum(&self, weight: u128) -> bool {
        weight.saturating_mul(3) > self.total.saturating_mul(2)
    }

    /// More than one third: at least one honest member is among them.
    pub fn is_one_third(&self, weight: u128) -> bool {
        weight.saturating_mul(3) > self.total
    }

    /// The proposer of (height, round), drawn in proportion to weight.
    pub fn proposer(&self, shard: ShardId, height: u64, round: u32) -> MemberIndex {
        let mut draws = Draws::new(
            domain::PROPOSER,
            &[
                &self.seed,
                &shard.0.to_be_bytes(),
                &height.to_be_bytes(),
                &round.to_be_bytes(),
            ],
        );
        let weights: Vec<u128> = self.members.iter().map(|m| m.weight).collect();
        let i = weighted_pick(&weights, &mut draws).expect("a committee has weight");
        MemberIndex::at(i).expect("committees have at most 1024 members")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

impl VoteKind {
    /// Its byte in every encoding: 1 prevote, 2 precommit.
    pub fn tag(self) -> u8 {
        match self {
            VoteKind::Prevote => 1,
            VoteKind::Precommit => 2,
        }
    }

    pub fn from_tag(tag: u8) -> Result<Self, DecodeError> {
        match tag {
            1 => Ok(VoteKind::Prevote),
            2 => Ok(VoteKind::Precommit),
            tag => Err(DecodeError::UnknownTag {
                what: "vote kind",
                tag,
            }),
        }
    }
}

/// What a vote signs: domain tag, chain, shard, kind, height, round and the block (or nil).
pub fn vote_message(
    chain_id: u32,
    shard: ShardId,
    kind: VoteKind,
    height: u64,
    round: u32,
    block: Option<&Hash>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed(domain::VOTE)
        .u32(chain_id)
        .shard(shard)
        .u8(kind.tag())
        .u64(height)
        .u32(round);
    match block {
        Some(h) => w.u8(1).fixed(h),
        None => w.u8(0),
    };
    w.finish()
}

pub(super) fn proposal_message(
    chain_id: u32,
    shard: ShardId,
    height: u64,
    round: u32,
    block: &Hash,
    valid_round: Option<u32>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed(domain::PROPOSAL)
        .u32(chain_id)
        .shard(shard)
        .u64(height)
        .u32(round)
        .fixed(block);
    match valid_round {
        Some(r) => w.u8(1).u32(r),
        None => w.u8(0),
    };
    w.finish()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote<S: VoteScheme> {
    pub kind: VoteKind,
    pub shard: ShardId,
    pub height: u64,
    pub round: u32,
    pub block: Option<Hash>,
    pub voter: MemberIndex,
    pub signature: S::Sig,
}

impl<S: VoteScheme> Vote<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        chain_id: u32,
        shard: ShardId,
        kind: VoteKind,
        height: u64,
        round: u32,
        block: Option<Hash>,
        voter: MemberIndex,
        secret: &S::Secret,
    ) -> Self {
        let signature = S::sign(
            secret,
            &vote_message(chain_id, shard, kind, height, round, block.as_ref()),
        );
        Self {
            kind,
            shard,
            height,
            round,
            block,
            voter,
            signature,
        }
    }

    pub fn verify(&self, chain_id: u32, committee: &Committee<S>) -> bool {
        let msg = vote_message(
            chain_id,
            self.shard,
            self.kind,
            self.height,
            self.round,
            self.block.as_ref(),
        );
        committee.member_signed(self.voter, &msg, &self.signature)
    }
}

/// Why a quorum certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QcError {
    #[error("signer bitmap has {got} bytes for a committee of {members} (needs {expected})")]
    BitmapLength {
        got: usize,
        expected: usize,
        members: usize,
    },
    #[error("signer bitmap names members beyond the committee")]
    BitmapPadding,
    #[error("signers hold {weight} of {total} weight, not more than two thirds")]
    NoQuorum { weight: u128, total: u128 },
    #[error("aggregate signature does not verify")]
    BadSignature,
}

/// More than two thirds of a committee's weight signed the same vote: an aggregate signature and the bitmap
/// of who signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumCertificate<S: VoteScheme> {
    pub kind: VoteKind,
    pub shard: ShardId,
    pub height: u64,
    pub round: u32,
    pub block: Hash,
    pub signers: Vec<u8>,
    pub signature: S::Sig,
}

pub fn bitmap_len(members: usize) -> usize {
    members.div_ceil(8)
}

pub fn bitmap_signers(bitmap: &[u8]) -> impl Iterator<Item = MemberIndex> + '_ {
    bitmap.iter().enumerate().flat_map(|(byte, bits)| {
        (0..8u16)
            .filter(move |bit| bits & (0x80 >> bit) != 0)
            .map(move |bit| MemberIndex(byte as u16 * 8 + bit))
    })
}

impl<S: VoteScheme> QuorumCertificate<S> {
    /// Aggregates `votes` (all for `block` in one (kind, height, round)). `None` if a signature is invalid.
    pub fn aggregate(committee: &Committee<S>, votes: &[&Vote<S>], block: Hash) -> Option<Self> {
        let first = votes.first()?;
        let mut signers = vec![0u8; bitmap_len(committee.len())];
        for v in votes {
            signers[v.voter.index() / 8] |= 0x80 >> (v.voter.0 % 8);
        }
        let sigs: Vec<S::Sig> = votes.iter().map(|v| v.signature.clone()).collect();
        Some(Self {
            kind: first.kind,
            shard: first.shard,
            height: first.height,
            round: first.round,
            block,
            signers,
            signature: S::aggregate(&sigs)?,
        })
    }

    /// Whether this is a precommit certificate for exactly `header` (its shard, height and hash): the form
    /// that finalises a block. The quorum itself is checked by [`QuorumCertificate::verify`].
    pub fn finalises(&self, header: &BlockHeader) -> bool {
        self.kind == VoteKind::Precommit
            && self.shard == header.shard
            && self.height == header.height
            && self.block == header.hash()
    }

    pub fn signer_weight(&self, committee: &Committee<S>) -> u128 {
        committee.weight_of(bitmap_signers(&self.signers))
    }

    /// Checks the bitmap, the quorum of weight and the aggregate signature against `committee`.
    pub fn verify(&self, chain_id: u32, committee: &Committee<S>) -> Result<(), QcError> {
        let expected = bitmap_len(committee.len());
        if self.signers.len() != expected {
            return Err(QcError::BitmapLength {
                got: self.signers.len(),
                expected,
                members: committee.len(),
            });
        }
        if bitmap_signers(&self.signers).any(|i| usize::from(i) >= committee.len()) {
            return Err(QcError::BitmapPadding);
        }
        let weight = self.signer_weight(committee);
        if !committee.is_quorum(weight) {
            return Err(QcError::NoQuorum {
                weight,
                total: committee.total_weight(),
            });
        }
        let publics: Vec<S::Public> = bitmap_signers(&self.signers)
            .map(|i| committee.members[usize::from(i)].public.clone())
            .collect();
        let msg = vote_message(
            chain_id,
            self.shard,
            self.kind,
            self.height,
            self.round,
            Some(&self.block),
        );
        if S::verify_aggregate(&publics, &msg, &self.signature) {
            Ok(())
        } else {
            Err(QcError::BadSignature)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1)
            .u8(self.kind.tag())
            .shard(self.shard)
            .u64(self.height)
            .u32(self.round)
            .fixed(&self.block);
        w.var(&self.signers).var(&S::sig_to_bytes(&self.signature));
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != 1 {
            return Err(DecodeError::UnknownVersion(version));
        }
        let kind = VoteKind::from_tag(r.u8()?)?;
        let shard = r.shard()?;
        let height = r.u64()?;
        let round = r.u32()?;
        let block = r.array()?;
        let signers = r
            .var("signer bitmap", bitmap_len(COMMITTEE_SIZE_MAX))?
            .to_vec();
        let signature =
            S::sig_from_bytes(r.var("signature", 256)?).ok_or(DecodeError::Invalid("signature"))?;
        r.finish()?;
        Ok(Self {
            kind,
            shard,
            height,
            round,
            block,
            signers,
            signature,
        })
    }
}

/// What a proposer signs, without the block itself: enough to prove that it equivocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProposalHeader<S: VoteScheme> {
    pub shard: ShardId,
    pub height: u64,
    pub round: u32,
    pub block: Hash,
    pub valid_round: Option<u32>,
    pub proposer: MemberIndex,
    pub signature: S::Sig,
}

impl<S: VoteScheme> SignedProposalHeader<S> {
    pub fn verify(&self, chain_id: u32, committee: &Committee<S>) -> bool {
        let msg = proposal_message(
            chain_id,
            self.shard,
            self.height,
            self.round,
            &self.block,
            self.valid_round,
        );
        committee.member_signed(self.proposer, &msg, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::evidence::Evidence;

    fn committee(weights: &[u128]) -> (Committee<Bls>, Vec<bls::SecretKey>) {
        let keys: Vec<_> = (0..weights.len())
            .map(|i| bls::SecretKey::dev(&format!("c{i}")))
            .collect();
        let members = keys
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (k, w))| Member {
                id: Address([i as u8; 32]),
                public: k.public(),
                weight: *w,
            })
            .collect();
        (Committee::new(members, [9; 32]), keys)
    }

    fn votes(keys: &[bls::SecretKey], who: &[u16], block: Hash) -> Vec<Vote<Bls>> {
        who.iter()
            .map(|i| {
                Vote::sign(
                    5,
                    ShardId(0),
                    VoteKind::Precommit,
                    3,
                    0,
                    Some(block),
                    MemberIndex(*i),
                    &keys[usize::from(*i)],
                )
            })
            .collect()
    }

    #[test]
    fn certificates_need_more_than_two_thirds_of_weight() {
        let (c, keys) = committee(&[1, 1, 1, 1]);
        let b = [1; 32];
        let three = votes(&keys, &[0, 1, 3], b);
        let qc = QuorumCertificate::aggregate(&c, &three.iter().collect::<Vec<_>>(), b)
            .expect("valid sigs");
        assert_eq!(qc.verify(5, &c), Ok(()));
        assert_eq!(
            QuorumCertificate::<Bls>::decode(&qc.encode()),
            Ok(qc.clone())
        );
        assert_eq!(
            qc.verify(6, &c),
            Err(QcError::BadSignature),
            "wrong chain id"
        );

        let two = votes(&keys, &[0, 1], b);
        let weak = QuorumCertificate::aggregate(&c, &two.iter().collect::<Vec<_>>(), b)
            .expect("valid sigs");
        assert_eq!(
            weak.verify(5, &c),
            Err(QcError::NoQuorum {
                weight: 2,
                total: 4
            })
        );

        // Claim a signer who did not sign.
        let mut lying = qc.clone();
        lying.signers[0] |= 0x80 >> 2;
        assert_eq!(lying.verify(5, &c), Err(QcError::BadSignature));
        let mut padded = qc.clone();
        padded.signers[0] |= 0x01;
        assert_eq!(padded.verify(5, &c), Err(QcError::BitmapPadding));
        let mut short = qc;
        short.signers.clear();
        assert!(matches!(
            short.verify(5, &c),
            Err(QcError::BitmapLength { .. })
        ));
    }

    #[test]
    fn quorum_is_by_weight_not_by_count() {
        let (c, keys) = committee(&[10, 1, 1, 1]);
        let b = [2; 32];
        let heavy = votes(&keys, &[0], b);
        let qc =
            QuorumCertificate::aggregate(&c, &heavy.iter().collect::<Vec<_>>(), b).expect("valid");
        assert_eq!(qc.verify(5, &c), Ok(()));
        let light = votes(&keys, &[1, 2, 3], b);
        let qc =
            QuorumCertificate::aggregate(&c, &light.iter().collect::<Vec<_>>(), b).expect("valid");
        assert!(matches!(qc.verify(5, &c), Err(QcError::NoQuorum { .. })));
    }

    #[test]
    fn evidence_proves_equivocation_and_nothing_else() {
        let (c, keys) = committee(&[1, 1, 1, 1]);
        let vote = |voter: MemberIndex, block: Option<Hash>| {
            Vote::<Bls>::sign(
                5,
                ShardId(0),
                VoteKind::Prevote,
                3,
                1,
                block,
                voter,
                &keys[usize::from(voter)],
            )
        };
        let double = Evidence::DoubleVote(
            vote(MemberIndex(2), Some([1; 32])),
            vote(MemberIndex(2), None),
        );
        assert!(double.verify(5, &c));
        assert_eq!(double.offender(), MemberIndex(2));
        assert!(
            !Evidence::DoubleVote(vote(MemberIndex(2), None), vote(MemberIndex(2), None))
                .verify(5, &c),
            "same vote twice"
        );
        assert!(
            !Evidence::DoubleVote(
                vote(MemberIndex(2), None),
                vote(MemberIndex(3), Some([1; 32]))
            )
            .verify(5, &c),
            "two voters"
        );
        let mut forged = vote(MemberIndex(2), Some([1; 32]));
        forged.block = Some([9; 32]);
        assert!(
            !Evidence::DoubleVote(vote(MemberIndex(2), None), forged).verify(5, &c),
            "a forged signature"
        );
        assert!(!double.verify(6, &c), "another chain");
    }

    #[test]
    fn proposer_rotation_follows_weight() {
        let (c, _) = committee(&[1, 3]);
        let heavy = (0..4000u64)
            .filter(|h| c.proposer(ShardId(0), *h, 0) == MemberIndex(1))
            .count();
        assert!(
            (2850..3150).contains(&heavy),
            "{heavy} of 4000, expected about 3000"
        );
        assert_eq!(c.proposer(ShardId(0), 7, 2), c.proposer(ShardId(0), 7, 2));
    }

    #[test]
    fn certificate_decoding_never_panics_on_garbage() {
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            if let Ok(qc) = QuorumCertificate::<Bls>::decode(&bytes) {
                assert_eq!(qc.encode(), bytes);
            }
        }
    }
}
