//! The wire encoding of consensus messages, for the node's gossip (one message per gossipsub payload).
//!
//! ```text
//! message  := version:u8 (=1) tag:u8 body
//! proposal := 1 shard:u16 height:u64 round:u32 valid_round:opt<u32> polka:opt<var certificate>
//!             proposer:u16 signature:var block:var
//! vote     := 2 kind:u8 shard:u16 height:u64 round:u32 block:opt<[32]> voter:u16 signature:var
//! decided  := 3 block:var certificate:var
//! status   := 4 shard:u16 height:u64 round:u32
//! polka    := 5 block:var certificate:var
//! opt<T>   := 0 | 1 T
//! ```
//! Evidence of a fault (carried by beacon blocks, [`encode_evidence`]):
//! ```text
//! evidence        := version:u8 (=1) (1 vote_body vote_body | 2 proposal_header proposal_header)
//! vote_body       := kind:u8 shard:u16 height:u64 round:u32 block:opt<[32]> voter:u16 signature:var
//! proposal_header := shard:u16 height:u64 round:u32 block:[32] valid_round:opt<u32> proposer:u16 signature:var
//! ```
//! A message is at most [`MESSAGE_BYTES_MAX`] bytes; decoding checks every length and never panics. Decoding
//! checks only the form: signatures and certificates are checked by the replica on arrival.

use super::vote::{
    Evidence, Message, Proposal, QuorumCertificate, SignedProposalHeader, Vote, VoteKind,
    VoteScheme,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::types::block::{BLOCK_TXS_MAX, Block};
use crate::types::inbound::{BLOCK_INBOUND_BYTES_MAX, BLOCK_INBOUND_MAX};
use crate::types::tx::TX_BYTES_MAX;
use std::sync::Arc;

const WIRE_VERSION: u8 = 1;
const BLOCK_BYTES_MAX: usize =
    256 + BLOCK_TXS_MAX * (TX_BYTES_MAX + 4) + BLOCK_INBOUND_BYTES_MAX + BLOCK_INBOUND_MAX * 4;
const CERTIFICATE_BYTES_MAX: usize = 1024;
const SIGNATURE_BYTES_MAX: usize = 256;
/// The largest consensus message: a full block plus a certificate and headers.
pub const MESSAGE_BYTES_MAX: usize = BLOCK_BYTES_MAX + 2 * CERTIFICATE_BYTES_MAX + 512;

pub fn encode<S: VoteScheme>(message: &Message<S>) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION);
    match message {
        Message::Proposal(p) => {
            w.u8(1).u16(p.shard).u64(p.height).u32(p.round);
            match p.valid_round {
                Some(r) => w.u8(1).u32(r),
                None => w.u8(0),
            };
            match &p.polka {
                Some(qc) => w.u8(1).var(&qc.encode()),
                None => w.u8(0),
            };
            w.u16(p.proposer)
                .var(&S::sig_to_bytes(&p.signature))
                .var(&p.block.encode());
        }
        Message::Vote(v) => {
            w.u8(2);
            encode_vote_body(&mut w, v);
        }
        Message::Decided { block, certificate } => {
            w.u8(3).var(&block.encode()).var(&certificate.encode());
        }
        Message::Status {
            shard,
            height,
            round,
        } => {
            w.u8(4).u16(*shard).u64(*height).u32(*round);
        }
        Message::Polka { block, certificate } => {
            w.u8(5).var(&block.encode()).var(&certificate.encode());
        }
    }
    w.finish()
}

fn encode_vote_body<S: VoteScheme>(w: &mut Writer, v: &Vote<S>) {
    w.u8(v.kind.tag()).u16(v.shard).u64(v.height).u32(v.round);
    match &v.block {
        Some(h) => w.u8(1).fixed(h),
        None => w.u8(0),
    };
    w.u16(v.voter).var(&S::sig_to_bytes(&v.signature));
}

fn decode_vote_body<S: VoteScheme>(r: &mut Reader<'_>) -> Result<Vote<S>, DecodeError> {
    let kind = VoteKind::from_tag(r.u8()?)?;
    let (shard, height, round) = (r.u16()?, r.u64()?, r.u32()?);
    let block = if opt_flag(r)? { Some(r.array()?) } else { None };
    let voter = r.u16()?;
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

fn encode_proposal_header<S: VoteScheme>(w: &mut Writer, p: &SignedProposalHeader<S>) {
    w.u16(p.shard).u64(p.height).u32(p.round).fixed(&p.block);
    match p.valid_round {
        Some(r) => w.u8(1).u32(r),
        None => w.u8(0),
    };
    w.u16(p.proposer).var(&S::sig_to_bytes(&p.signature));
}

fn decode_proposal_header<S: VoteScheme>(
    r: &mut Reader<'_>,
) -> Result<SignedProposalHeader<S>, DecodeError> {
    let (shard, height, round, block) = (r.u16()?, r.u64()?, r.u32()?, r.array()?);
    let valid_round = if opt_flag(r)? { Some(r.u32()?) } else { None };
    Ok(SignedProposalHeader {
        shard,
        height,
        round,
        block,
        valid_round,
        proposer: r.u16()?,
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

fn opt_flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(DecodeError::UnknownTag {
            what: "option",
            tag,
        }),
    }
}

fn block(r: &mut Reader<'_>) -> Result<Arc<Block>, DecodeError> {
    Ok(Arc::new(Block::decode(r.var("block", BLOCK_BYTES_MAX)?)?))
}

fn certificate<S: VoteScheme>(r: &mut Reader<'_>) -> Result<QuorumCertificate<S>, DecodeError> {
    QuorumCertificate::decode(r.var("certificate", CERTIFICATE_BYTES_MAX)?)
}

fn signature<S: VoteScheme>(r: &mut Reader<'_>) -> Result<S::Sig, DecodeError> {
    S::sig_from_bytes(r.var("signature", SIGNATURE_BYTES_MAX)?)
        .ok_or(DecodeError::Invalid("signature"))
}

/// Decodes one message from untrusted bytes.
pub fn decode<S: VoteScheme>(bytes: &[u8]) -> Result<Message<S>, DecodeError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLong {
            what: "message",
            len: bytes.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let message = match r.u8()? {
        1 => {
            let (shard, height, round) = (r.u16()?, r.u64()?, r.u32()?);
            let valid_round = if opt_flag(&mut r)? {
                Some(r.u32()?)
            } else {
                None
            };
            let polka = if opt_flag(&mut r)? {
                Some(certificate::<S>(&mut r)?)
            } else {
                None
            };
            let proposer = r.u16()?;
            let signature = signature::<S>(&mut r)?;
            let block = block(&mut r)?;
            Message::Proposal(Proposal {
                shard,
                height,
                round,
                block,
                valid_round,
                polka,
                proposer,
                signature,
            })
        }
        2 => Message::Vote(decode_vote_body(&mut r)?),
        3 => Message::Decided {
            block: block(&mut r)?,
            certificate: certificate::<S>(&mut r)?,
        },
        4 => Message::Status {
            shard: r.u16()?,
            height: r.u64()?,
            round: r.u32()?,
        },
        5 => Message::Polka {
            block: block(&mut r)?,
            certificate: certificate::<S>(&mut r)?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "message",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::bls;
    use crate::types::block::BlockHeader;
    use crate::types::vote::Bls;
    use proptest::prelude::*;

    fn samples() -> Vec<Message<Bls>> {
        let key = bls::SecretKey::dev("w");
        let block = Arc::new(Block {
            header: BlockHeader {
                chain_id: 1,
                shard: 2,
                height: 3,
                parent: [1; 32],
                state_root: [2; 32],
                transactions_root: [3; 32],
                receipts_root: [4; 32],
            },
            transactions: vec![],
            links: vec![],
            inbound: vec![],
            evidence: vec![],
        });
        let vote = Vote::<Bls>::sign(1, 2, VoteKind::Prevote, 3, 0, Some(block.hash()), 0, &key);
        let nil = Vote::<Bls>::sign(1, 2, VoteKind::Precommit, 3, 1, None, 0, &key);
        let committee_members = 1;
        let mut qc = QuorumCertificate::<Bls> {
            kind: VoteKind::Prevote,
            shard: 2,
            height: 3,
            round: 0,
            block: block.hash(),
            signers: vec![0x80; committee_members],
            signature: vote.signature,
        };
        let proposal = Proposal::sign(
            1,
            2,
            3,
            1,
            block.clone(),
            Some(0),
            Some(qc.clone()),
            0,
            &key,
        );
        qc.kind = VoteKind::Precommit;
        vec![
            Message::Proposal(proposal),
            Message::Proposal(Proposal::sign(
                1,
                2,
                3,
                0,
                block.clone(),
                None,
                None,
                0,
                &key,
            )),
            Message::Vote(vote),
            Message::Vote(nil),
            Message::Decided {
                block: block.clone(),
                certificate: qc.clone(),
            },
            Message::Status {
                shard: 2,
                height: 3,
                round: 4,
            },
            Message::Polka {
                block,
                certificate: qc,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let bytes = encode(&m);
            let decoded = decode::<Bls>(&bytes).expect("decodes");
            assert_eq!(encode(&decoded), bytes, "{m:?}");
        }
    }

    #[test]
    fn oversized_and_unknown_messages_are_refused() {
        let big = vec![1u8; MESSAGE_BYTES_MAX + 1];
        assert!(matches!(
            decode::<Bls>(&big),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(
            decode::<Bls>(&[2, 1]).err(),
            Some(DecodeError::UnknownVersion(2))
        );
        assert!(matches!(
            decode::<Bls>(&[1, 9]),
            Err(DecodeError::UnknownTag { tag: 9, .. })
        ));
        assert!(matches!(
            decode::<Bls>(&[]),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_and_mutated_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            which in 0usize..7, index in any::<usize>(), value in any::<u8>(), cut in 0usize..64,
        ) {
            if let Ok(m) = decode::<Bls>(&bytes) {
                prop_assert_eq!(encode(&m), bytes);
            }
            let mut mutated = encode(&samples()[which]);
            let i = index % mutated.len();
            mutated[i] = value;
            mutated.truncate(mutated.len().saturating_sub(cut));
            if let Ok(m) = decode::<Bls>(&mutated) {
                prop_assert_eq!(encode(&m), mutated);
            }
        }
    }
}
