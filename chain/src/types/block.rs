//! Blocks: a header that commits to everything, and the ordered transactions.
//!
//! ```text
//! header := version:u8 (=1) chain_id:u32 shard:u16 height:u64 parent:[32]
//!           state_root:[32] transactions_root:[32] receipts_root:[32]
//! block  := header count:u32 (signed_transaction_len:u32 signed_transaction)*
//!           inbound:u32 (inbound_len:u32 inbound)*                  (shard blocks; crate::types::inbound)
//!           proofs:u32 (proof_len:u32 proof)*                       (shard blocks; crate::types::storage_proof)
//! ```
//! The block hash is a domain-separated hash of the header only; the header commits to the transactions
//! through `transactions_root` (the list root of their ids followed by the hashes of the block's Atomix
//! inbounds and then of its storage proofs), to execution through `state_root` (the shard's
//! sparse Merkle root after the block) and `receipts_root` (the list root of the receipts' hashes).
//! Every encoded field is covered by the header (a beacon block with transactions does not decode), and a
//! verdict on a block is remembered by [`Block::digest`], the hash of the whole encoding, never by the
//! block hash: a body swapped under a known header is checked afresh and refused.
//!
//! A beacon block (`shard = BEACON_SHARD`) carries no transactions but cross-links and evidence of faults,
//! appended to the same encoding, and its `transactions_root` is the list root of the cross-links' hashes
//! followed by the evidence hashes:
//! ```text
//! beacon_block := header count:u32 (=0, else refused) links:u32 (header_len:u32 header cert_len:u32 certificate
//!                   registry_len:u32 registry?)* evidence:u32 (evidence_len:u32 evidence)*
//!                   (evidence: crate::types::evidence::encode_evidence)
//! registry     := from:u64 events:u32 event* smt_proof          (crate::types::registry; registry_len 0: none)
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, domain, hash_with};
use crate::smt::list_root;
use crate::types::evidence::{self as evidence_codec, Evidence};
use crate::types::inbound::{BLOCK_INBOUND_MAX, INBOUND_BYTES_MAX, Inbound};
use crate::types::registry::{LINK_EVENTS_MAX, RegistryBatch};
use crate::types::storage_proof::{PROOF_BYTES_MAX, ProofTx};
use crate::types::tx::{SignedTransaction, TX_BYTES_MAX};
use crate::types::vote::Bls;

pub use crate::types::header::{
    BEACON_SHARD, BLOCK_VERSION, BlockHeader, LINK_CERTIFICATE_BYTES_MAX,
};

pub const BLOCK_TXS_MAX: usize = 4096;
/// The encoded transactions of one block, at most: as many as `BLOCK_TXS_MAX` transfers (about 2 MiB). A
/// transaction may be up to 19 times a transfer's size (a storage deal), so the count alone no longer bounds a
/// block; a block over this does not decode and a proposer stops adding before it.
pub const BLOCK_TX_BYTES_MAX: usize = BLOCK_TXS_MAX * 516;
/// Storage proofs in one shard block (the byte budget binds first: about 600 proofs of one sample).
pub const BLOCK_PROOFS_MAX: usize = 1_024;
/// The encoded storage proofs of one block, at most (a quarter of the transactions' budget): 26 proofs of
/// the largest shape, or about 600 of a holder of one 1 MiB shard.
pub const BLOCK_PROOF_BYTES_MAX: usize = BLOCK_TX_BYTES_MAX / 4;
/// Cross-links in one beacon block.
pub const BLOCK_LINKS_MAX: usize = 256;
/// Evidence of faults in one beacon block.
pub const BLOCK_EVIDENCE_MAX: usize = 16;
/// An encoded registry batch of a cross-link, at most: `LINK_EVENTS_MAX` events and a full-depth proof.
pub const LINK_REGISTRY_BYTES_MAX: usize =
    12 + LINK_EVENTS_MAX * (1 + 32 + 48 + 8) + 4 + 256 * 32 + 1 + 64;
const HEADER_BYTES: usize = 1 + 4 + 2 + 8 + 32 * 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    pub transactions: Vec<SignedTransaction>,
    /// Certified shard headers, on beacon blocks only (empty on shard blocks).
    pub links: Vec<CrossLink>,
    /// Atomix locks of other shards committed here, on shard blocks only (empty on beacon blocks).
    pub inbound: Vec<Inbound>,
    /// Evidence of faults by shard committee members, on beacon blocks only (empty on shard blocks).
    pub evidence: Vec<Evidence<Bls>>,
    /// Answers to storage challenges, on shard blocks only (empty on beacon blocks).
    pub proofs: Vec<ProofTx>,
}

/// A shard block header with the encoded precommit quorum certificate that finalised it, as the beacon
/// chain records it. The certificate is kept encoded here and checked by the beacon (`crate::beacon`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossLink {
    pub header: BlockHeader,
    pub certificate: Vec<u8>,
    /// Registry events of the shard up to this header, with the proof of where they end.
    pub registry: Option<RegistryBatch>,
}

impl CrossLink {
    pub fn hash(&self) -> Hash {
        let mut w = Writer::new();
        self.header.encode_into(&mut w);
        hash_with(
            domain::CROSS_LINK,
            &[&w.finish(), &self.certificate, &self.registry_bytes()],
        )
    }

    /// The encoded registry batch, empty if there is none.
    fn registry_bytes(&self) -> Vec<u8> {
        RegistryBatch::encode_optional(self.registry.as_ref())
    }
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The hash of the whole encoding, header and body: what a verdict on a block is remembered by. The
    /// block hash covers the header only, and a peer with no keys can send a block with that header and
    /// another body; a verdict kept under the header's hash would then be reused for the forged body.
    pub fn digest(&self) -> Hash {
        hash_with(domain::BLOCK_ENCODING, &[&self.encode()])
    }

    /// A shard block's `transactions_root` with no inbound and no proof.
    pub fn transactions_root(transactions: &[SignedTransaction]) -> Hash {
        Self::body_root(transactions, &[], &[])
    }

    /// The items a shard block's `transactions_root` lists: the transaction ids, then the inbound hashes,
    /// then the storage proofs' hashes.
    pub fn body_items(
        transactions: &[SignedTransaction],
        inbound: &[Inbound],
        proofs: &[ProofTx],
    ) -> Vec<Hash> {
        transactions
            .iter()
            .map(SignedTransaction::id)
            .chain(inbound.iter().map(Inbound::hash))
            .chain(proofs.iter().map(ProofTx::hash))
            .collect()
    }

    /// A shard block's `transactions_root`: the list root of [`Block::body_items`].
    pub fn body_root(
        transactions: &[SignedTransaction],
        inbound: &[Inbound],
        proofs: &[ProofTx],
    ) -> Hash {
        list_root(&Self::body_items(transactions, inbound, proofs))
    }

    /// A beacon block's `transactions_root` with no evidence: the list root of its cross-links' hashes.
    pub fn links_root(links: &[CrossLink]) -> Hash {
        Self::beacon_root(links, &[])
    }

    /// A beacon block's `transactions_root`: the list root of its cross-links' hashes, then its evidence's.
    pub fn beacon_root(links: &[CrossLink], evidence: &[Evidence<Bls>]) -> Hash {
        let hashes: Vec<Hash> = links
            .iter()
            .map(CrossLink::hash)
            .chain(evidence.iter().map(Evidence::hash))
            .collect();
        list_root(&hashes)
    }

    pub fn is_beacon(&self) -> bool {
        self.header.shard == BEACON_SHARD
    }

    /// Whether the body is the one the header commits to (its `transactions_root`). A block's hash, and so
    /// every signature and certificate on it, covers only the header: a block whose body a peer changed in
    /// flight keeps its hash, and must be recognised as not that block before anything is kept under the
    /// hash (else the forged copy would stand in for the real block, and a verdict on it for the real one's).
    pub fn body_matches_header(&self) -> bool {
        if self.is_beacon() {
            self.transactions.is_empty()
                && self.inbound.is_empty()
                && self.proofs.is_empty()
                && Self::beacon_root(&self.links, &self.evidence) == self.header.transactions_root
        } else {
            self.links.is_empty()
                && self.evidence.is_empty()
                && Self::body_root(&self.transactions, &self.inbound, &self.proofs)
                    == self.header.transactions_root
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn encode_into(&self, w: &mut Writer) {
        self.header.encode_into(w);
        w.u32(
            u32::try_from(self.transactions.len())
                .expect("blocks hold at most BLOCK_TXS_MAX transactions"),
        );
        for tx in &self.transactions {
            w.var(&tx.encode());
        }
        if self.is_beacon() {
            w.u32(
                u32::try_from(self.links.len()).expect("blocks hold at most BLOCK_LINKS_MAX links"),
            );
            for link in &self.links {
                let mut h = Writer::new();
                link.header.encode_into(&mut h);
                w.var(&h.finish())
                    .var(&link.certificate)
                    .var(&link.registry_bytes());
            }
            w.u32(
                u32::try_from(self.evidence.len())
                    .expect("blocks hold at most BLOCK_EVIDENCE_MAX evidence"),
            );
            for e in &self.evidence {
                w.var(&evidence_codec::encode_evidence(e));
            }
        } else {
            w.u32(
                u32::try_from(self.inbound.len())
                    .expect("blocks hold at most BLOCK_INBOUND_MAX inbounds"),
            );
            for inbound in &self.inbound {
                w.var(&inbound.encode());
            }
            w.u32(
                u32::try_from(self.proofs.len())
                    .expect("blocks hold at most BLOCK_PROOFS_MAX proofs"),
            );
            for proof in &self.proofs {
                w.var(&proof.encode());
            }
        }
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let header = BlockHeader::decode_from(r)?;
        let count = r.count("block transactions", BLOCK_TXS_MAX, 4 + 64)?;
        // A beacon block's transactions root covers its links and evidence only: transactions on one would be
        // bytes no hash covers, which a peer could change at will. Refused here, so that every field of a
        // decoded block is committed to by its header.
        if header.shard == BEACON_SHARD && count != 0 {
            return Err(DecodeError::Invalid("beacon block carrying transactions"));
        }
        let mut transactions = Vec::with_capacity(count);
        let mut total = 0usize;
        for _ in 0..count {
            let bytes = r.var("transaction", TX_BYTES_MAX)?;
            total += bytes.len();
            if total > BLOCK_TX_BYTES_MAX {
                return Err(DecodeError::TooLong {
                    what: "block transaction bytes",
                    len: total,
                    max: BLOCK_TX_BYTES_MAX,
                });
            }
            let mut tr = Reader::new(bytes);
            transactions.push(SignedTransaction::decode_from(&mut tr)?);
            tr.finish()?;
        }
        let mut links = Vec::new();
        let mut inbound = Vec::new();
        let mut evidence = Vec::new();
        let mut proofs = Vec::new();
        if header.shard != BEACON_SHARD {
            let count = r.count("block inbounds", BLOCK_INBOUND_MAX, 4 + HEADER_BYTES)?;
            for _ in 0..count {
                inbound.push(Inbound::decode(r.var("inbound", INBOUND_BYTES_MAX)?)?);
            }
            let count = r.count("block proofs", BLOCK_PROOFS_MAX, 4 + 45)?;
            let mut total = 0usize;
            for _ in 0..count {
                let bytes = r.var("storage proof", PROOF_BYTES_MAX)?;
                total += bytes.len();
                if total > BLOCK_PROOF_BYTES_MAX {
                    return Err(DecodeError::TooLong {
                        what: "block proof bytes",
                        len: total,
                        max: BLOCK_PROOF_BYTES_MAX,
                    });
                }
                proofs.push(ProofTx::decode(bytes)?);
            }
        } else {
            let count = r.count("block links", BLOCK_LINKS_MAX, 8 + HEADER_BYTES)?;
            links.reserve(count);
            for _ in 0..count {
                let mut hr = Reader::new(r.var("link header", HEADER_BYTES)?);
                let link_header = BlockHeader::decode_from(&mut hr)?;
                hr.finish()?;
                let certificate = r
                    .var("link certificate", LINK_CERTIFICATE_BYTES_MAX)?
                    .to_vec();
                let registry = RegistryBatch::decode_optional(
                    r.var("link registry batch", LINK_REGISTRY_BYTES_MAX)?,
                )?;
                links.push(CrossLink {
                    header: link_header,
                    certificate,
                    registry,
                });
            }
            let count = r.count("block evidence", BLOCK_EVIDENCE_MAX, 4 + 20)?;
            for _ in 0..count {
                evidence.push(evidence_codec::decode_evidence(
                    r.var("evidence", evidence_codec::EVIDENCE_BYTES_MAX)?,
                )?);
            }
        }
        Ok(Self {
            header,
            transactions,
            links,
            inbound,
            evidence,
            proofs,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_BYTES {
            return Err(DecodeError::UnexpectedEnd {
                needed: HEADER_BYTES,
                remaining: bytes.len(),
            });
        }
        let mut r = Reader::new(bytes);
        let block = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::amount::Amount;
    use crate::crypto::SecretKey;
    use crate::ids::ShardId;
    use crate::tx::{Transaction, TxKind};
    use proptest::prelude::*;

    #[test]
    fn a_proof_fee_buys_the_block_space_of_a_transaction_fee() {
        assert_eq!(
            crate::types::storage_proof::PROOF_FEE_BYTES,
            BLOCK_TX_BYTES_MAX / BLOCK_TXS_MAX
        );
    }

    fn block(n: u64) -> Block {
        let key = SecretKey::dev("alice");
        let transactions: Vec<_> = (0..n)
            .map(|nonce| {
                Transaction {
                    chain_id: 1,
                    sender: key.public(),
                    nonce,
                    fee: Amount(1),
                    expiry_height: 9,
                    kind: TxKind::Transfer {
                        to: Address([7; 32]),
                        amount: Amount(1),
                    },
                }
                .sign(&key)
            })
            .collect();
        let header = BlockHeader {
            chain_id: 1,
            shard: ShardId(2),
            height: 3,
            parent: [4; 32],
            state_root: [5; 32],
            transactions_root: Block::transactions_root(&transactions),
            receipts_root: [6; 32],
        };
        Block {
            header,
            transactions,
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
            proofs: Vec::new(),
        }
    }

    #[test]
    fn blocks_round_trip() {
        for n in [0, 1, 5] {
            let b = block(n);
            assert_eq!(Block::decode(&b.encode()), Ok(b));
        }
    }

    /// Transactions may be 19 times a transfer's size (storage deals): a block of them within the count
    /// limit but over the byte budget does not decode, so a proposer cannot make every validator take 40 MB.
    #[test]
    fn a_block_over_the_transaction_byte_budget_does_not_decode() {
        use crate::types::deal::{DealTerms, Holder};
        let key = SecretKey::dev("alice");
        let terms = DealTerms {
            root: vec![1; 90],
            size: 1,
            k: 1,
            m: 0,
            periods: 1,
            holders: vec![Holder {
                key: key.public(),
                price: Amount(1),
            }],
            placement: vec![0; 512],
            segment_lens: vec![1; 512],
            commitments_root: [0; 32],
        };
        let big = |nonce| {
            Transaction {
                chain_id: 1,
                sender: key.public(),
                nonce,
                fee: Amount(1),
                expiry_height: 9,
                kind: TxKind::OpenDeal {
                    terms: terms.clone(),
                    signatures: vec![crate::crypto::Signature([0; 64])],
                },
            }
            .sign(&key)
        };
        let one = big(0).encode().len();
        let fits = BLOCK_TX_BYTES_MAX / one;
        let mut b = block(0);
        b.transactions = (0..fits as u64).map(big).collect();
        assert_eq!(
            Block::decode(&b.encode()).map(|d| d.transactions.len()),
            Ok(fits)
        );
        b.transactions.push(big(fits as u64));
        assert!(matches!(
            Block::decode(&b.encode()),
            Err(DecodeError::TooLong {
                what: "block transaction bytes",
                ..
            })
        ));
    }

    #[test]
    fn the_hash_covers_every_header_field() {
        let b = block(1);
        let h = b.hash();
        let mut changed = vec![b.header.clone(); 7];
        changed[0].chain_id += 1;
        changed[1].shard.0 += 1;
        changed[2].height += 1;
        changed[3].parent[0] ^= 1;
        changed[4].state_root[0] ^= 1;
        changed[5].transactions_root[0] ^= 1;
        changed[6].receipts_root[0] ^= 1;
        for c in changed {
            assert_ne!(c.hash(), h, "{c:?}");
        }
    }

    proptest! {
        #[test]
        fn decoding_random_and_mutated_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..600), index in 0usize..2000, value in any::<u8>(),
        ) {
            if let Ok(b) = Block::decode(&bytes) {
                prop_assert_eq!(b.encode(), bytes);
            }
            let mut mutated = block(3).encode();
            let i = index % mutated.len();
            mutated[i] = value;
            if let Ok(b) = Block::decode(&mutated) {
                prop_assert_eq!(b.encode(), mutated);
            }
        }
    }
}
