//! Evidence of a fault: two conflicting messages one member signed for one step (a double vote, or a double
//! proposal), and its encoding, which beacon blocks carry:
//! ```text
//! evidence        := version:u8 (=1) (1 vote_body vote_body | 2 proposal_header proposal_header)
//! vote_body       := kind:u8 shard:u16 height:u64 round:u32 block:opt<[32]> voter:u16 signature:var
//! proposal_header := shard:u16 height:u64 round:u32 block:[32] valid_round:opt<u32> proposer:u16 signature:var
//! ```
//! The vote and proposal-header codecs here are shared with the consensus messages' encoding ([`super::wire`]).

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Hash;
use crate::ids::{MemberIndex, ShardId};
use crate::types::vote::{Committee, SignedProposalHeader, Vote, VoteKind, VoteScheme};

/// The version byte of evidence and of consensus messages.
pub(super) const WIRE_VERSION: u8 = 1;
pub(super) const SIGNATURE_BYTES_MAX: usize = 256;

/// Two conflicting messages signed by one member for one step: proof of a fault, for reputation and
/// slashing. Anyone holding the committee can check it with [`Evidence::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence<S: VoteScheme> {
    DoubleVote(Vote<S>, Vote<S>),
    DoubleProposal(SignedProposalHeader<S>, SignedProposalHeader<S>),
}

impl<S: VoteScheme> Evidence<S> {
    /// The step both messages are for: (shard, height, round).
    pub fn step(&self) -> (ShardId, u64, u32) {
        match self {
            Evidence::DoubleVote(a, _) => (a.shard, a.height, a.round),
            Evidence::DoubleProposal(a, _) => (a.shard, a.height, a.round),
        }
    }

    /// The hash of its encoding ([`encode_evidence`]).
    pub fn hash(&self) -> Hash {
        crate::crypto::hash_with("IOS evidence v1", &[&encode_evidence(self)])
    }

    /// The committee index of the member at fault.
    pub fn offender(&self) -> MemberIndex {
        match self {
            Evidence::DoubleVote(a, _) => a.voter,
            Evidence::DoubleProposal(a, _) => a.proposer,
        }
    }

    /// Both messages are for the same step, differ, and carry the offender's valid signatures.
    pub fn verify(&self, chain_id: u32, committee: &Committee<S>) -> bool {
        match self {
            Evidence::DoubleVote(a, b) => {
                (a.voter, a.kind, a.shard, a.height, a.round)
                    == (b.voter, b.kind, b.shard, b.height, b.round)
                    && a.block != b.block
                    && a.verify(chain_id, committee)
                    && b.verify(chain_id, committee)
            }
            Evidence::DoubleProposal(a, b) => {
                (a.proposer, a.shard, a.height, a.round) == (b.proposer, b.shard, b.height, b.round)
                    && (a.block, a.valid_round) != (b.block, b.valid_round)
                    && a.verify(chain_id, committee)
                    && b.verify(chain_id, committee)
            }
        }
    }
}

pub(super) fn encode_vote_body<S: VoteScheme>(w: &mut Writer, v: &Vote<S>) {
    w.u8(v.kind.tag()).shard(v.shard).u64(v.height).u32(v.round);
    match &v.block {
        Some(h) => w.u8(1).fixed(h),
        None => w.u8(0),
    };
    w.member(v.voter).var(&S::sig_to_bytes(&v.signature));
}

pub(super) fn decode_vote_body<S: VoteScheme>(r: &mut Reader<'_>) -> Result<Vote<S>, DecodeError> {
    let kind = VoteKind::from_tag(r.u8()?)?;
    let (shard, height, round) = (r.shard()?, r.u64()?, r.u32()?);
    let block = if opt_flag(r)? { Some(r.array()?) } else { None };
    let voter = r.member()?;
    let signature = signature::<S>(r)?;
    Ok(Vote {
        kind,
        shard,
        height,
        round,
        block,
        voter,
        signature,
    })
}

pub(super) fn encode_proposal_header<S: VoteScheme>(w: &mut Writer, p: &SignedProposalHeader<S>) {
    w.shard(p.shard).u64(p.height).u32(p.round).fixed(&p.block);
    match p.valid_round {
        Some(r) => w.u8(1).u32(r),
        None => w.u8(0),
    };
    w.member(p.proposer).var(&S::sig_to_bytes(&p.signature));
}

pub(super) fn decode_proposal_header<S: VoteScheme>(
    r: &mut Reader<'_>,
) -> Result<SignedProposalHeader<S>, DecodeError> {
    let (shard, height, round, block) = (r.shard()?, r.u64()?, r.u32()?, r.array()?);
    let valid_round = if opt_flag(r)? { Some(r.u32()?) } else { None };
    Ok(SignedProposalHeader {
        shard,
        height,
        round,
        block,
        valid_round,
        proposer: r.member()?,
        signature: signature::<S>(r)?,
    })
}

/// The largest encoded evidence: two proposal headers with their signatures.
pub const EVIDENCE_BYTES_MAX: usize = 2 + 2 * (2 + 8 + 4 + 32 + 5 + 2 + 4 + SIGNATURE_BYTES_MAX);

pub fn encode_evidence<S: VoteScheme>(e: &Evidence<S>) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION);
    match e {
        Evidence::DoubleVote(a, b) => {
            w.u8(1);
            encode_vote_body(&mut w, a);
            encode_vote_body(&mut w, b);
        }
        Evidence::DoubleProposal(a, b) => {
            w.u8(2);
            encode_proposal_header(&mut w, a);
            encode_proposal_header(&mut w, b);
        }
    }
    w.finish()
}

/// Decodes evidence from untrusted bytes (its signatures are checked by [`Evidence::verify`]).
pub fn decode_evidence<S: VoteScheme>(bytes: &[u8]) -> Result<Evidence<S>, DecodeError> {
    if bytes.len() > EVIDENCE_BYTES_MAX {
        return Err(DecodeError::TooLong {
            what: "evidence",
            len: bytes.len(),
            max: EVIDENCE_BYTES_MAX,
        });
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let e = match r.u8()? {
        1 => Evidence::DoubleVote(decode_vote_body(&mut r)?, decode_vote_body(&mut r)?),
        2 => Evidence::DoubleProposal(
            decode_proposal_header(&mut r)?,
            decode_proposal_header(&mut r)?,
        ),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "evidence",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(e)
}

pub(super) fn opt_flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(DecodeError::UnknownTag {
            what: "option",
            tag,
        }),
    }
}

pub(super) fn signature<S: VoteScheme>(r: &mut Reader<'_>) -> Result<S::Sig, DecodeError> {
    S::sig_from_bytes(r.var("signature", SIGNATURE_BYTES_MAX)?)
        .ok_or(DecodeError::Invalid("signature"))
}
