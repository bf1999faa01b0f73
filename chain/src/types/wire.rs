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
//! Evidence of a fault, which beacon blocks carry, has its own encoding in [`crate::types::evidence`] (with
//! the same vote body); [`encode_evidence`] and [`decode_evidence`] are re-exported here under their old path.
//! A message is at most [`MESSAGE_BYTES_MAX`] bytes; decoding checks every length and never panics. Decoding
//! checks only the form: signatures and certificates are checked by the replica on arrival.

pub use crate::types::evidence::{EVIDENCE_BYTES_MAX, decode_evidence, encode_evidence};

use crate::codec::{DecodeError, Reader, Writer};
use crate::types::block::{
    BLOCK_PROOF_BYTES_MAX, BLOCK_PROOFS_MAX, BLOCK_TX_BYTES_MAX, BLOCK_TXS_MAX, Block,
};
use crate::types::evidence::{
    WIRE_VERSION, decode_vote_body, encode_vote_body, opt_flag, signature,
};
use crate::types::inbound::{BLOCK_INBOUND_BYTES_MAX, BLOCK_INBOUND_MAX};
use crate::types::message::{Message, Proposal};
use crate::types::tx::TX_BYTES_MAX;
use crate::types::vote::{QuorumCertificate, VoteScheme};
use std::sync::Arc;

/// The largest block a proposer can build: a header, every section at its byte budget with each item's
/// length prefix, and room for one item past a budget (a decoder sees the item before it can refuse it).
const BLOCK_BYTES_MAX: usize = 256
    + BLOCK_TX_BYTES_MAX
    + BLOCK_TXS_MAX * 4
    + TX_BYTES_MAX
    + BLOCK_INBOUND_BYTES_MAX
    + BLOCK_INBOUND_MAX * 4
    + 4
    + BLOCK_PROOF_BYTES_MAX
    + BLOCK_PROOFS_MAX * 4;
const CERTIFICATE_BYTES_MAX: usize = 1024;
/// The largest consensus message: a full block plus a certificate and headers.
pub const MESSAGE_BYTES_MAX: usize = BLOCK_BYTES_MAX + 2 * CERTIFICATE_BYTES_MAX + 512;

pub fn encode<S: VoteScheme>(message: &Message<S>) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION);
    match message {
        Message::Proposal(p) => {
            w.u8(1).shard(p.shard).u64(p.height).u32(p.round);
            match p.valid_round {
                Some(r) => w.u8(1).u32(r),
                None => w.u8(0),
            };
            match &p.polka {
                Some(qc) => w.u8(1).var(&qc.encode()),
                None => w.u8(0),
            };
            w.member(p.proposer)
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
            w.u8(4).shard(*shard).u64(*height).u32(*round);
        }
        Message::Polka { block, certificate } => {
            w.u8(5).var(&block.encode()).var(&certificate.encode());
        }
    }
    w.finish()
}

fn block(r: &mut Reader<'_>) -> Result<Arc<Block>, DecodeError> {
    Ok(Arc::new(Block::decode(r.var("block", BLOCK_BYTES_MAX)?)?))
}

fn certificate<S: VoteScheme>(r: &mut Reader<'_>) -> Result<QuorumCertificate<S>, DecodeError> {
    QuorumCertificate::decode(r.var("certificate", CERTIFICATE_BYTES_MAX)?)
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
            let (shard, height, round) = (r.shard()?, r.u64()?, r.u32()?);
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
            let proposer = r.member()?;
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
            shard: r.shard()?,
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
    use crate::ids::{MemberIndex, ShardId};
    use crate::types::block::BlockHeader;
    use crate::types::vote::{Bls, Vote, VoteKind};
    use proptest::prelude::*;

    fn samples() -> Vec<Message<Bls>> {
        let key = bls::SecretKey::dev("w");
        let block = Arc::new(Block {
            header: BlockHeader {
                chain_id: 1,
                shard: ShardId(2),
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
            proofs: Vec::new(),
        });
        let vote = Vote::<Bls>::sign(
            1,
            ShardId(2),
            VoteKind::Prevote,
            3,
            0,
            Some(block.hash()),
            MemberIndex(0),
            &key,
        );
        let nil = Vote::<Bls>::sign(
            1,
            ShardId(2),
            VoteKind::Precommit,
            3,
            1,
            None,
            MemberIndex(0),
            &key,
        );
        let committee_members = 1;
        let mut qc = QuorumCertificate::<Bls> {
            kind: VoteKind::Prevote,
            shard: ShardId(2),
            height: 3,
            round: 0,
            block: block.hash(),
            signers: vec![0x80; committee_members],
            signature: vote.signature,
        };
        let proposal = Proposal::sign(
            1,
            ShardId(2),
            3,
            1,
            block.clone(),
            Some(0),
            Some(qc.clone()),
            MemberIndex(0),
            &key,
        );
        qc.kind = VoteKind::Precommit;
        vec![
            Message::Proposal(proposal),
            Message::Proposal(Proposal::sign(
                1,
                ShardId(2),
                3,
                0,
                block.clone(),
                None,
                None,
                MemberIndex(0),
                &key,
            )),
            Message::Vote(vote),
            Message::Vote(nil),
            Message::Decided {
                block: block.clone(),
                certificate: qc.clone(),
            },
            Message::Status {
                shard: ShardId(2),
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

    /// Every section of a shard block full (transactions, Atomix inbounds and storage proofs, each at its
    /// byte budget with its length prefixes) still fits a consensus message: a proposer that fills its pools'
    /// budgets never builds a block no replica can decode.
    #[test]
    fn the_largest_buildable_block_fits_a_consensus_message() {
        let header = 1 + 4 + 2 + 8 + 32 * 4;
        let buildable = header
            + 4
            + BLOCK_TX_BYTES_MAX
            + BLOCK_TXS_MAX * 4
            + 4
            + BLOCK_INBOUND_BYTES_MAX
            + BLOCK_INBOUND_MAX * 4
            + 4
            + BLOCK_PROOF_BYTES_MAX
            + BLOCK_PROOFS_MAX * 4;
        assert!(
            buildable <= BLOCK_BYTES_MAX,
            "{buildable} > {BLOCK_BYTES_MAX}"
        );
    }
}
