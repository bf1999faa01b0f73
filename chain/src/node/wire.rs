//! What validators gossip: one envelope format on every chain topic.
//!
//! ```text
//! envelope := version:u8 (=1) kind
//! kind     := 1 from:u16 bft_message                          consensus message to the whole committee
//!           | 2 from:u16 to:u16 bft_message                   consensus message for one member (others drop it)
//!           | 3 count:u32 (len:u32 signed_transaction){count} transactions for the shard's mempools
//!           | 4 header certificate:var registry:var            a certified shard head, on the beacon topic,
//!                                                             with its shard's registry events (empty: none)
//!           | 5 inbound                                       Atomix locks for the output shard's topic
//!                                                             (chain::atomix, at most INBOUND_RELAY_BYTES_MAX)
//!           | 6 evidence                                      proof of a shard member's fault, on the beacon
//!                                                             topic (chain::bft::wire::encode_evidence)
//!           | 7 storage_proof                                 a holder's answer to a storage challenge, on
//!                                                             its deal's shard topic (chain::types::storage_proof)
//! ```
//!
//! `bft_message` is `chain::bft::wire` (its own version byte). `from` is the sender's index in the shard's
//! committee; it only decides where answers go, since every vote, proposal and certificate inside is signed
//! and checked by the replica. Decoding checks every length, rejects trailing bytes and never panics.
//!
//! Catch-up does not go over gossip: a validator behind asks one peer over the request-response protocol
//! [`BLOCKS_PROTOCOL`] (one request, one answer, to the asking peer only), for the finalised blocks it
//! misses or, behind in rounds at the height being decided, for the peer's votes of the rounds it has not
//! finished:
//!
//! ```text
//! request := version:u8 (=1) 1 shard:u16 from:u64              the finalised blocks of `shard` from `from` on
//!          | version:u8 (=1) 2 shard:u16 height:u64 round:u32   the server's own votes at `height` from
//!                                                               `round` up to its current round
//! answer  := version:u8 (=1) 1 count:u16 (block:var certificate:var){count}
//!                                                               blocks from..from+count in order, each with its
//!                                                               precommit certificate (0 blocks: none kept)
//!          | version:u8 (=1) 2                                  busy: the asker is over its limit, ask later
//!          | version:u8 (=1) 3 count:u16 (vote:var){count}      votes, each a `chain::bft::wire` vote message
//! ```
//!
//! An answer holds at most [`CATCH_UP_BLOCKS_MAX`] blocks, and a server adds no block that would take it
//! past [`CATCH_UP_BYTES_SOFT`] bytes (except the first, whatever its size, so that any chain can be
//! caught up), so no answer passes [`CATCH_UP_ANSWER_BYTES_MAX`]; the asker refuses anything larger before
//! decoding it.

use crate::ShardId;
use crate::SignedTransaction;
use crate::atomix::{INBOUND_RELAY_BYTES_MAX, Inbound};
use crate::bft::{self, Bls, Evidence, Message, QuorumCertificate};
use crate::block::Block;
use crate::block::{BlockHeader, LINK_REGISTRY_BYTES_MAX};
use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::MemberIndex;
use crate::registry::RegistryBatch;
use crate::tx::TX_BYTES_MAX;
use crate::types::storage_proof::ProofTx;
use std::sync::Arc;

pub const ENVELOPE_VERSION: u8 = 1;
/// Transactions in one gossiped batch.
pub const TX_BATCH_MAX: usize = 1024;
/// The largest envelope: a consensus message with its header, or a full transaction batch.
pub const ENVELOPE_BYTES_MAX: usize = {
    let consensus = bft::wire::MESSAGE_BYTES_MAX + 8;
    let txs = 6 + TX_BATCH_MAX * (4 + TX_BYTES_MAX);
    if consensus > txs { consensus } else { txs }
};

#[derive(Debug)]
pub enum Envelope {
    Consensus {
        from: MemberIndex,
        to: Option<MemberIndex>,
        message: Box<Message<Bls>>,
    },
    Transactions(Vec<SignedTransaction>),
    /// A finalised block header of some shard with its precommit certificate and registry events.
    Head(Box<Head>),
    /// Atomix locks of another shard, relayed to the recipients' shard.
    Inbound(Box<Inbound>),
    /// Two conflicting messages signed by one member of a shard committee.
    Evidence(Box<Evidence<Bls>>),
    /// A storage proof (of a slot, or of a holder's slots) for the shard of its deals.
    Proof(Box<ProofTx>),
}

/// A certified shard head as gossiped: what the beacon's cross-links are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub header: BlockHeader,
    pub certificate: QuorumCertificate<Bls>,
    pub registry: Option<RegistryBatch>,
}

/// A certificate is a bitmap of at most 1,024 signers and one signature, far below this.
const CERTIFICATE_BYTES_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {0} bytes, more than the maximum")]
    Oversized(usize),
    #[error("unknown envelope version {0}")]
    Version(u8),
    #[error("unknown envelope kind {0}")]
    Kind(u8),
    #[error("malformed envelope: {0}")]
    Decode(#[from] DecodeError),
    #[error("transaction {index} in the batch: {error}")]
    Transaction { index: usize, error: crate::TxError },
}

pub fn encode_consensus(
    from: MemberIndex,
    to: Option<MemberIndex>,
    message: &Message<Bls>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(ENVELOPE_VERSION);
    match to {
        None => w.u8(1).member(from),
        Some(to) => w.u8(2).member(from).member(to),
    };
    let mut out = w.finish();
    out.extend_from_slice(&bft::wire::encode(message));
    out
}

pub fn encode_transactions(txs: &[SignedTransaction]) -> Vec<u8> {
    assert!(txs.len() <= TX_BATCH_MAX, "batches are cut at TX_BATCH_MAX");
    let mut w = Writer::new();
    w.u8(ENVELOPE_VERSION).u8(3);
    w.u32(u32::try_from(txs.len()).expect("at most TX_BATCH_MAX"));
    for tx in txs {
        w.var(&tx.encode());
    }
    w.finish()
}

pub fn encode_head(head: &Head) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(ENVELOPE_VERSION).u8(4);
    head.header.encode_into(&mut w);
    w.var(&head.certificate.encode());
    w.var(&RegistryBatch::encode_optional(head.registry.as_ref()));
    w.finish()
}

/// `None` if the inbound is larger than a relay may be (see [`Inbound::split`]).
pub fn encode_inbound(inbound: &Inbound) -> Option<Vec<u8>> {
    let mut w = Writer::new();
    w.u8(ENVELOPE_VERSION).u8(5);
    inbound.encode_into(&mut w);
    (w.len() <= INBOUND_RELAY_BYTES_MAX + 2).then(|| w.finish())
}

pub fn encode_evidence(evidence: &Evidence<Bls>) -> Vec<u8> {
    let mut out = vec![ENVELOPE_VERSION, 6];
    out.extend_from_slice(&bft::wire::encode_evidence(evidence));
    out
}

pub fn encode_proof(proof: &ProofTx) -> Vec<u8> {
    let mut out = vec![ENVELOPE_VERSION, 7];
    out.extend_from_slice(&proof.encode());
    out
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if bytes.len() > ENVELOPE_BYTES_MAX {
        return Err(EnvelopeError::Oversized(bytes.len()));
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(version));
    }
    match r.u8()? {
        kind @ (1 | 2) => {
            let from = r.member()?;
            let to = if kind == 2 { Some(r.member()?) } else { None };
            let header = if kind == 2 { 6 } else { 4 };
            let message = bft::wire::decode::<Bls>(&bytes[header..])?;
            Ok(Envelope::Consensus {
                from,
                to,
                message: Box::new(message),
            })
        }
        3 => {
            let count = r.count("transactions", TX_BATCH_MAX, 4)?;
            let mut txs = Vec::with_capacity(count);
            for index in 0..count {
                let tx = SignedTransaction::decode(r.var("transaction", TX_BYTES_MAX)?)
                    .map_err(|error| EnvelopeError::Transaction { index, error })?;
                txs.push(tx);
            }
            r.finish()?;
            Ok(Envelope::Transactions(txs))
        }
        4 => {
            let header = BlockHeader::decode_from(&mut r)?;
            let certificate =
                QuorumCertificate::decode(r.var("certificate", CERTIFICATE_BYTES_MAX)?)?;
            let registry =
                RegistryBatch::decode_optional(r.var("registry batch", LINK_REGISTRY_BYTES_MAX)?)?;
            r.finish()?;
            Ok(Envelope::Head(Box::new(Head {
                header,
                certificate,
                registry,
            })))
        }
        5 => {
            if bytes.len() > INBOUND_RELAY_BYTES_MAX + 2 {
                return Err(EnvelopeError::Oversized(bytes.len()));
            }
            let inbound = Inbound::decode_from(&mut r)?;
            r.finish()?;
            Ok(Envelope::Inbound(Box::new(inbound)))
        }
        6 => Ok(Envelope::Evidence(Box::new(bft::wire::decode_evidence(
            &bytes[2..],
        )?))),
        7 => Ok(Envelope::Proof(Box::new(ProofTx::decode(&bytes[2..])?))),
        other => Err(EnvelopeError::Kind(other)),
    }
}

/// The request-response protocol of catch-up, per chain (see the module's documentation).
pub fn blocks_protocol(chain_id: u32) -> String {
    format!("/ios/{chain_id:08x}/blocks/1")
}

/// The protocol name's pattern, for the specs: [`blocks_protocol`] fills in the chain id.
pub const BLOCKS_PROTOCOL: &str = "/ios/<chain id, 8 hex digits>/blocks/1";
pub const CATCH_UP_VERSION: u8 = 1;
/// Finalised blocks in one answer, at most: a laggard 32 heights behind is back in one round trip.
pub const CATCH_UP_BLOCKS_MAX: usize = 32;
/// A server adds no block that would take an answer past this many bytes (except its first block).
pub const CATCH_UP_BYTES_SOFT: usize = 4 << 20;
/// The largest answer: the soft limit plus one more block of the largest size, and the framing.
pub const CATCH_UP_ANSWER_BYTES_MAX: usize =
    CATCH_UP_BYTES_SOFT + bft::wire::MESSAGE_BYTES_MAX + 64;
/// The largest request (a votes request), and the most a server reads of one.
pub const CATCH_UP_REQUEST_BYTES: usize = 16;
/// Votes in one answer, at most: two per round, over more rounds than a replica answers for (its round
/// window).
pub const CATCH_UP_VOTES_MAX: usize = 128;
/// One encoded vote, at most (a vote is about 160 bytes).
const VOTE_BYTES_MAX: usize = 1024;

/// A catch-up request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlocksRequest {
    /// The finalised blocks of `shard` from height `from` on.
    Blocks { shard: ShardId, from: u64 },
    /// The server's own votes of `shard` at `height`, of the rounds from `round` up to its current one.
    Votes {
        shard: ShardId,
        height: u64,
        round: u32,
    },
}

impl BlocksRequest {
    pub fn shard(&self) -> ShardId {
        match self {
            BlocksRequest::Blocks { shard, .. } | BlocksRequest::Votes { shard, .. } => *shard,
        }
    }
}

/// A catch-up answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlocksAnswer {
    /// Finalised blocks from the requested height on, in order, each with its precommit certificate.
    Blocks(Vec<(Arc<Block>, QuorumCertificate<Bls>)>),
    /// The asker is over its limit (or the server over its own): nothing was read, ask later or elsewhere.
    Busy,
    /// The server's votes of the rounds asked for (none: it is not deciding that height as a member).
    Votes(Vec<bft::Vote<Bls>>),
}

pub fn encode_blocks_request(request: &BlocksRequest) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(CATCH_UP_VERSION);
    match *request {
        BlocksRequest::Blocks { shard, from } => w.u8(1).shard(shard).u64(from),
        BlocksRequest::Votes {
            shard,
            height,
            round,
        } => w.u8(2).shard(shard).u64(height).u32(round),
    };
    w.finish()
}

pub fn decode_blocks_request(bytes: &[u8]) -> Result<BlocksRequest, EnvelopeError> {
    if bytes.len() > CATCH_UP_REQUEST_BYTES {
        return Err(EnvelopeError::Oversized(bytes.len()));
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != CATCH_UP_VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let request = match r.u8()? {
        1 => BlocksRequest::Blocks {
            shard: r.shard()?,
            from: r.u64()?,
        },
        2 => BlocksRequest::Votes {
            shard: r.shard()?,
            height: r.u64()?,
            round: r.u32()?,
        },
        other => return Err(EnvelopeError::Kind(other)),
    };
    r.finish()?;
    Ok(request)
}

/// Encodes a `Votes` answer (at most [`CATCH_UP_VOTES_MAX`] are written).
pub fn encode_votes_answer(votes: &[bft::Vote<Bls>]) -> Vec<u8> {
    let votes = &votes[..votes.len().min(CATCH_UP_VOTES_MAX)];
    let mut w = Writer::new();
    w.u8(CATCH_UP_VERSION).u8(3);
    // At most CATCH_UP_VOTES_MAX (128), which fits.
    w.u16(votes.len() as u16);
    for v in votes {
        w.var(&bft::wire::encode(&Message::Vote(v.clone())));
    }
    w.finish()
}

/// Encodes a `Blocks` answer from encoded blocks and the encoded certificates their ledger stores with
/// them, so a server encodes each block once (it counts its bytes first) and never decodes a certificate
/// only to encode it again. At most [`CATCH_UP_BLOCKS_MAX`] are written.
pub fn encode_blocks_answer(blocks: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let blocks = &blocks[..blocks.len().min(CATCH_UP_BLOCKS_MAX)];
    let mut w = Writer::new();
    w.u8(CATCH_UP_VERSION).u8(1);
    // At most CATCH_UP_BLOCKS_MAX (32), which fits.
    w.u16(blocks.len() as u16);
    for (block, certificate) in blocks {
        w.var(block).var(certificate);
    }
    w.finish()
}

pub fn encode_busy_answer() -> Vec<u8> {
    vec![CATCH_UP_VERSION, 2]
}

/// Decodes an answer from untrusted bytes: its size, count, every block's and certificate's length are
/// checked before anything is allocated.
pub fn decode_blocks_answer(bytes: &[u8]) -> Result<BlocksAnswer, EnvelopeError> {
    if bytes.len() > CATCH_UP_ANSWER_BYTES_MAX {
        return Err(EnvelopeError::Oversized(bytes.len()));
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != CATCH_UP_VERSION {
        return Err(EnvelopeError::Version(version));
    }
    match r.u8()? {
        1 => {
            let count = usize::from(r.u16()?);
            if count > CATCH_UP_BLOCKS_MAX {
                return Err(EnvelopeError::Decode(DecodeError::TooLong {
                    what: "catch-up blocks",
                    len: count,
                    max: CATCH_UP_BLOCKS_MAX,
                }));
            }
            let mut blocks = Vec::with_capacity(count);
            for _ in 0..count {
                let block = Block::decode(r.var("block", bft::wire::MESSAGE_BYTES_MAX)?)?;
                let certificate =
                    QuorumCertificate::decode(r.var("certificate", CERTIFICATE_BYTES_MAX)?)?;
                blocks.push((Arc::new(block), certificate));
            }
            r.finish()?;
            Ok(BlocksAnswer::Blocks(blocks))
        }
        2 => {
            r.finish()?;
            Ok(BlocksAnswer::Busy)
        }
        3 => {
            let count = usize::from(r.u16()?);
            if count > CATCH_UP_VOTES_MAX {
                return Err(EnvelopeError::Decode(DecodeError::TooLong {
                    what: "catch-up votes",
                    len: count,
                    max: CATCH_UP_VOTES_MAX,
                }));
            }
            let mut votes = Vec::with_capacity(count);
            for _ in 0..count {
                match bft::wire::decode::<Bls>(r.var("vote", VOTE_BYTES_MAX)?)? {
                    Message::Vote(v) => votes.push(v),
                    _ => return Err(EnvelopeError::Decode(DecodeError::Invalid("catch-up vote"))),
                }
            }
            r.finish()?;
            Ok(BlocksAnswer::Votes(votes))
        }
        other => Err(EnvelopeError::Kind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::{Address, Amount, Transaction, TxKind};
    use proptest::prelude::*;

    fn tx(nonce: u64) -> SignedTransaction {
        let key = SecretKey::dev("wire");
        Transaction {
            chain_id: 1,
            sender: key.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 9,
            kind: TxKind::Transfer {
                to: Address([3; 32]),
                amount: Amount(4),
            },
        }
        .sign(&key)
    }

    #[test]
    fn envelopes_round_trip() {
        let status = Message::<Bls>::Status {
            shard: ShardId(1),
            height: 7,
            round: 2,
        };
        for to in [None, Some(MemberIndex(3))] {
            match decode(&encode_consensus(MemberIndex(2), to, &status)).expect("decodes") {
                Envelope::Consensus {
                    from,
                    to: got,
                    message,
                } => {
                    assert_eq!((from, got), (MemberIndex(2), to));
                    assert!(matches!(
                        *message,
                        Message::Status {
                            shard: ShardId(1),
                            height: 7,
                            round: 2
                        }
                    ));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let header =
            crate::ledger::genesis_header(&crate::ChainParams::devnet(2), ShardId(1), [9; 32]);
        let certificate = QuorumCertificate::<Bls> {
            kind: crate::bft::VoteKind::Precommit,
            shard: ShardId(1),
            height: 0,
            round: 0,
            block: header.hash(),
            signers: vec![0b1110],
            signature: crate::crypto::bls::SecretKey::dev("wire").sign(b"x"),
        };
        let registry = crate::registry::RegistryBatch {
            from: 2,
            events: vec![crate::registry::RegistryEvent::StorageNode {
                id: Address([5; 32]),
                stake: Amount(6),
            }],
            checkpoint: crate::smt::SparseMerkleTree::new().prove(&[7; 32]),
        };
        for registry in [None, Some(registry)] {
            let head = Head {
                header: header.clone(),
                certificate: certificate.clone(),
                registry,
            };
            match decode(&encode_head(&head)).expect("decodes") {
                Envelope::Head(got) => assert_eq!(*got, head),
                other => panic!("unexpected {other:?}"),
            }
        }
        let lock = crate::atomix::Lock {
            tx_id: [1; 32],
            from: Address([2; 32]),
            to: Address([3; 32]),
            amount: Amount(4),
            kind: crate::atomix::LockKind::Transfer,
        };
        let mut tree = crate::smt::SparseMerkleTree::new();
        tree.insert(crate::atomix::Lock::key(&lock.tx_id), lock.value_hash());
        let proof = tree.prove(&crate::atomix::Lock::key(&lock.tx_id));
        let inbound = Inbound {
            header: header.clone(),
            certificate: certificate.encode(),
            locks: vec![(lock, proof)],
        };
        match decode(&encode_inbound(&inbound).expect("small")).expect("decodes") {
            Envelope::Inbound(got) => assert_eq!(*got, inbound),
            other => panic!("unexpected {other:?}"),
        }
        let key = crate::crypto::bls::SecretKey::dev("wire");
        let vote = |block| {
            crate::bft::Vote::<Bls>::sign(
                1,
                ShardId(0),
                crate::bft::VoteKind::Prevote,
                3,
                0,
                block,
                MemberIndex(1),
                &key,
            )
        };
        let evidence = Evidence::DoubleVote(vote(None), vote(Some([1; 32])));
        match decode(&encode_evidence(&evidence)).expect("decodes") {
            Envelope::Evidence(got) => assert_eq!(*got, evidence),
            other => panic!("unexpected {other:?}"),
        }
        let txs: Vec<_> = (0..3).map(tx).collect();
        match decode(&encode_transactions(&txs)).expect("decodes") {
            Envelope::Transactions(got) => assert_eq!(got, txs),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn catch_up_messages_round_trip_and_refuse_what_is_out_of_bounds() {
        for request in [
            BlocksRequest::Blocks {
                shard: ShardId(3),
                from: 17,
            },
            BlocksRequest::Votes {
                shard: ShardId(3),
                height: 17,
                round: 2,
            },
        ] {
            let bytes = encode_blocks_request(&request);
            assert!(bytes.len() <= CATCH_UP_REQUEST_BYTES);
            assert_eq!(decode_blocks_request(&bytes).expect("decodes"), request);
            assert!(decode_blocks_request(&[bytes.as_slice(), &[0]].concat()).is_err());
            assert!(decode_blocks_request(&bytes[..5]).is_err());
        }
        let key = crate::crypto::bls::SecretKey::dev("wire");
        let votes: Vec<_> = (0..3u32)
            .map(|round| {
                crate::bft::Vote::<Bls>::sign(
                    1,
                    ShardId(3),
                    crate::bft::VoteKind::Prevote,
                    17,
                    round,
                    Some([round as u8; 32]),
                    MemberIndex(1),
                    &key,
                )
            })
            .collect();
        assert_eq!(
            decode_blocks_answer(&encode_votes_answer(&votes)).expect("decodes"),
            BlocksAnswer::Votes(votes)
        );

        let params = crate::ChainParams::devnet(2);
        let block = Block {
            header: crate::ledger::genesis_header(&params, ShardId(1), [9; 32]),
            transactions: Vec::new(),
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
            proofs: Vec::new(),
        };
        let certificate = QuorumCertificate::<Bls> {
            kind: crate::bft::VoteKind::Precommit,
            shard: ShardId(1),
            height: 0,
            round: 0,
            block: block.hash(),
            signers: vec![0b1110],
            signature: crate::crypto::bls::SecretKey::dev("wire").sign(b"x"),
        };
        let stored = vec![(block.encode(), certificate.encode()); 3];
        match decode_blocks_answer(&encode_blocks_answer(&stored)).expect("decodes") {
            BlocksAnswer::Blocks(got) => {
                assert_eq!(got.len(), 3);
                for (b, c) in got {
                    assert_eq!((*b).clone(), block);
                    assert_eq!(c, certificate);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            decode_blocks_answer(&encode_busy_answer()).expect("decodes"),
            BlocksAnswer::Busy
        );
        // More blocks than an answer may hold are neither written nor read, and more bytes than it may
        // have are refused before decoding.
        let many = vec![(block.encode(), certificate.encode()); CATCH_UP_BLOCKS_MAX + 1];
        match decode_blocks_answer(&encode_blocks_answer(&many)).expect("decodes") {
            BlocksAnswer::Blocks(got) => assert_eq!(got.len(), CATCH_UP_BLOCKS_MAX),
            other => panic!("unexpected {other:?}"),
        }
        let mut over = encode_blocks_answer(&many[..1]);
        over[2..4].copy_from_slice(&(CATCH_UP_BLOCKS_MAX as u16 + 1).to_be_bytes());
        assert!(decode_blocks_answer(&over).is_err());
        assert!(matches!(
            decode_blocks_answer(&vec![1; CATCH_UP_ANSWER_BYTES_MAX + 1]),
            Err(EnvelopeError::Oversized(_))
        ));
    }

    proptest! {
        /// Random and mutated bytes give errors, never panics.
        #[test]
        fn decoding_never_panics(
            random in proptest::collection::vec(any::<u8>(), 0..600),
            flip in any::<(usize, u8)>(),
        ) {
            let _ = decode(&random);
            let _ = decode_blocks_request(&random);
            let _ = decode_blocks_answer(&random);
            let mut valid = encode_transactions(&[tx(1), tx(2)]);
            let i = flip.0 % valid.len();
            valid[i] ^= flip.1;
            let _ = decode(&valid);
            valid.truncate(i);
            prop_assert!(decode(&valid).is_err());
        }
    }
}
