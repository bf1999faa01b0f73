//! Proofs of storage: the challenge a period's seed sets a deal's holder, and the proof that answers it
//! (`specs/economics.md` §5).
//!
//! When period `p` of a deal ends, the hash of the shard block that ends it is the period's seed. From it,
//! for each holder, [`challenge`] draws up to [`PROOF_SAMPLES`] of the holder's shards in the deal (distinct,
//! uniformly) and one piece index in each. The holder answers during the next period with a
//! [`StorageProof`]: per drawn shard, its CID and commitment with the list proof of its leaf into the deal's
//! `commitments_root`, and the drawn piece with its path into the commitment. Nothing else is needed to
//! check it: no signature (whoever submits a proof, the pay goes to the holder), no state but the deal's
//! terms and the seed.
//!
//! A proof may also claim a repair order (`specs/economics.md` §5.8): when the holder of a slot missed its
//! proof, another storage node that rebuilt the slot's shards answers the slot's challenge with a
//! [`Taker`] appended, its key and its signature over the slot and period; if the chain has the slot's
//! order open, the taker becomes the slot's holder and is paid the period with the order's bounty.
//!
//! Encoding (all integers big-endian):
//! ```text
//! proof  := version:u8 (=1) deal:[32] holder:u8 period:u64 samples:u32-count sample* [taker]
//! sample := position:u16 cid:var commitment_len:u64 commitment_root:[32] list_proof piece_proof
//! taker  := key:[32] signature:[64]   (over "IOS/repair/v1\0" chain_id:u32 deal holder:u8 period:u64)
//! ```
//! (`list_proof`: [`crate::smt::ListProof`]; `piece_proof`: [`crate::pieces::PieceProof`].)

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, Hash, PublicKey, SecretKey, Signature, hash_with};
use crate::pieces::{self, Commitment, PieceError, PieceProof};
use crate::smt::{self, ListProof};
use crate::types::deal::{DealTerms, shard_leaf};

/// Shards drawn per holder, deal and period (all of them when the holder has fewer).
pub const PROOF_SAMPLES: usize = 16;
/// The bytes of a shard's CID in a proof, at most.
pub const SHARD_CID_BYTES_MAX: usize = 96;
/// An encoded proof, at most: [`PROOF_SAMPLES`] samples of the largest shape (a 64 MiB shard of a
/// 2,048-shard deal) and a taker: 21,952 bytes.
pub const PROOF_BYTES_MAX: usize = 64 + PROOF_SAMPLES * SAMPLE_BYTES_MAX + TAKER_BYTES;
/// The bytes a [`Taker`] adds to a proof.
pub const TAKER_BYTES: usize = 32 + 64;
const DOMAIN_REPAIR: &[u8] = b"IOS/repair/v1\0";
const SAMPLE_BYTES_MAX: usize = 2
    + 4
    + SHARD_CID_BYTES_MAX
    + 8
    + 32
    + (8 + 8 + 4 + 11 * 32)
    + (8 + 4 + pieces::PIECE_BYTES + 4 + 18 * 32);
const PROOF_VERSION: u8 = 1;

/// One drawn shard: what it is, that the deal names it, and the drawn piece of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The shard's position in the deal's placement.
    pub position: u16,
    /// The shard's CID, binary.
    pub cid: Vec<u8>,
    pub commitment: Commitment,
    /// The shard's leaf into the deal's `commitments_root`.
    pub path: ListProof,
    pub piece: PieceProof,
}

/// A holder's answer to one period's challenge of one deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProof {
    pub deal: Hash,
    /// The holder's index in the deal's terms.
    pub holder: u8,
    pub period: u64,
    pub samples: Vec<Sample>,
    /// Present when the proof claims the slot's repair order.
    pub taker: Option<Taker>,
}

/// The storage node a repair claim makes the slot's holder, and its signature on the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taker {
    pub key: PublicKey,
    pub signature: Signature,
}

/// What a taker signs to claim slot `holder` of `deal` with its proof of `period`.
pub fn repair_message(chain_id: u32, deal: &Hash, holder: u8, period: u64) -> Vec<u8> {
    [
        DOMAIN_REPAIR,
        &chain_id.to_be_bytes(),
        deal,
        &[holder],
        &period.to_be_bytes(),
    ]
    .concat()
}

impl Taker {
    /// `key`'s claim of slot `holder` of `deal` with its proof of `period`.
    pub fn sign(key: &SecretKey, chain_id: u32, deal: &Hash, holder: u8, period: u64) -> Self {
        Self {
            key: key.public(),
            signature: key.sign(&repair_message(chain_id, deal, holder, period)),
        }
    }

    /// Checks the claim's signature for `proof`'s slot and period.
    pub fn verify(&self, chain_id: u32, proof: &StorageProof) -> Result<(), crypto::CryptoError> {
        self.key.verify(
            &repair_message(chain_id, &proof.deal, proof.holder, proof.period),
            &self.signature,
        )
    }
}

/// Why a storage proof fails against its deal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the deal has {holders} holders; the proof names holder {holder}")]
    UnknownHolder { holder: u8, holders: usize },
    #[error("the challenge draws {expected} shards; the proof answers {got}")]
    SampleCount { expected: usize, got: usize },
    #[error("sample {index} answers shard {got}; the challenge drew shard {expected}")]
    WrongShard {
        index: usize,
        expected: u16,
        got: u16,
    },
    #[error("shard {position}'s commitment covers {got} bytes; the deal's shard holds {expected}")]
    WrongLength {
        position: u16,
        expected: u64,
        got: u64,
    },
    #[error("shard {0}'s CID and commitment are not the deal's (list proof fails)")]
    NotTheDealsShard(u16),
    #[error("shard {position} answers piece {got}; the challenge drew piece {expected}")]
    WrongPiece {
        position: u16,
        expected: u64,
        got: u64,
    },
    #[error("shard {position}: {error}")]
    Piece { position: u16, error: PieceError },
}

/// The shards a challenge drew and the piece drawn in each: `(position, piece index)`, in draw order.
pub type Challenge = Vec<(u16, u64)>;

/// The positions of `holder`'s shards in `terms`, in placement order.
pub fn positions_of(terms: &DealTerms, holder: u8) -> Vec<u16> {
    terms
        .placement
        .iter()
        .enumerate()
        .filter(|(_, h)| **h == holder)
        .map(|(i, _)| i as u16)
        .collect()
}

/// The bytes of block space one transaction fee buys (`BLOCK_TX_BYTES_MAX / BLOCK_TXS_MAX`, checked by a test
/// in `block.rs`): a deal prepays a fee for every started `PROOF_FEE_BYTES` of each proof its holders may
/// submit (`Transaction::fee_floor`).
pub const PROOF_FEE_BYTES: usize = 516;

/// The bytes of holder `holder`'s proof of one period of `terms`, at most (its drawn shards' CIDs at their
/// longest): what the deal prepays proof fees for.
pub fn proof_bytes_bound(terms: &DealTerms, holder: u8) -> usize {
    // ceil(log2 n): the levels of a list or piece path over n leaves.
    let depth = |n: u64| (64 - n.max(1).saturating_sub(1).leading_zeros()) as usize;
    let samples = positions_of(terms, holder).len().min(PROOF_SAMPLES);
    let list = depth(terms.placement.len() as u64);
    let longest = terms.segment_lens.iter().copied().max().unwrap_or(1);
    let piece = depth(longest.div_ceil(pieces::PIECE_BYTES as u64));
    let sample = 2
        + 4
        + SHARD_CID_BYTES_MAX
        + 8
        + 32
        + (8 + 8 + 4 + 32 * list)
        + (8 + 4 + pieces::PIECE_BYTES + 4 + 32 * piece);
    64 + samples * sample
}

/// The length of the shard at `position` of `terms`, if the deal has one there.
pub fn shard_len(terms: &DealTerms, position: u16) -> Option<u64> {
    let n = terms.segment_shards().max(1);
    terms.segment_lens.get(usize::from(position) / n).copied()
}

/// One draw of a challenge. A repair claim's challenge also hashes the taker's key, so that its answer
/// proves nothing for another key: copied into a claim by someone else, or stripped of its taker, it fails.
#[allow(clippy::too_many_arguments)]
fn draw(
    seed: &Hash,
    deal: &Hash,
    holder: u8,
    period: u64,
    taker: Option<&PublicKey>,
    what: &[u8],
    i: u64,
) -> u64 {
    let (p, i) = (period.to_be_bytes(), i.to_be_bytes());
    let h = match taker {
        None => hash_with(
            "IOS storage challenge v1",
            &[seed, deal, &[holder], &p, what, &i],
        ),
        Some(key) => hash_with(
            "IOS storage claim challenge v1",
            &[seed, deal, &[holder], &p, &key.0, what, &i],
        ),
    };
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// What period `period`'s `seed` asks of `holder` in deal `deal`: up to [`PROOF_SAMPLES`] of its shards,
/// distinct and uniformly drawn (a partial Fisher-Yates shuffle driven by the seed), and a uniform piece of
/// each. A 64-bit draw reduced modulo at most 2,048 shards or 2^18 pieces is biased by under 2^-45.
pub fn challenge(
    terms: &DealTerms,
    seed: &Hash,
    deal: &Hash,
    holder: u8,
    period: u64,
) -> Challenge {
    challenge_for(terms, seed, deal, holder, period, None)
}

/// [`challenge`], or with `taker` the challenge a repair claim by that key answers: drawn apart from the
/// holder's and every other key's, and always [`PROOF_SAMPLES`] (shard, piece) pairs, shards drawn with
/// replacement, so that a key ground to draw the same as an honest claim must match all of them (for a
/// shard of `P` pieces, `P^-16` a key), and a claim over few small shards reveals them nearly whole anyway.
pub fn challenge_for(
    terms: &DealTerms,
    seed: &Hash,
    deal: &Hash,
    holder: u8,
    period: u64,
    taker: Option<&PublicKey>,
) -> Challenge {
    let draw = |what: &[u8], i: u64| draw(seed, deal, holder, period, taker, what, i);
    let mut positions = positions_of(terms, holder);
    let n = positions.len();
    let pieces_of = |position: u16| {
        let len = shard_len(terms, position).unwrap_or(1);
        len.div_ceil(pieces::PIECE_BYTES as u64).max(1)
    };
    if taker.is_some() {
        if n == 0 {
            return Vec::new();
        }
        return (0..PROOF_SAMPLES as u64)
            .map(|i| {
                let position = positions[(draw(b"shard", i) % n as u64) as usize];
                (position, draw(b"piece", i) % pieces_of(position))
            })
            .collect();
    }
    let take = n.min(PROOF_SAMPLES);
    for i in 0..take {
        let j = i + (draw(b"shard", i as u64) % (n - i) as u64) as usize;
        positions.swap(i, j);
    }
    positions.truncate(take);
    positions
        .into_iter()
        .map(|position| {
            let piece = draw(b"piece", u64::from(position)) % pieces_of(position);
            (position, piece)
        })
        .collect()
}

impl StorageProof {
    /// Checks the proof against the deal's terms and the period's seed: it answers exactly the drawn shards
    /// and pieces, each shard is the deal's (its leaf proves into `commitments_root`, with the length the
    /// terms give it), and each piece proves against its shard's commitment. The caller checks that `deal`
    /// and `period` are the ones the proof names and may be proven now.
    pub fn verify(&self, terms: &DealTerms, seed: &Hash) -> Result<(), ProofError> {
        if usize::from(self.holder) >= terms.holders.len() {
            return Err(ProofError::UnknownHolder {
                holder: self.holder,
                holders: terms.holders.len(),
            });
        }
        let taker = self.taker.as_ref().map(|t| &t.key);
        let drawn = challenge_for(terms, seed, &self.deal, self.holder, self.period, taker);
        if drawn.len() != self.samples.len() {
            return Err(ProofError::SampleCount {
                expected: drawn.len(),
                got: self.samples.len(),
            });
        }
        for (index, ((position, piece), sample)) in drawn.iter().zip(&self.samples).enumerate() {
            if sample.position != *position {
                return Err(ProofError::WrongShard {
                    index,
                    expected: *position,
                    got: sample.position,
                });
            }
            let expected = shard_len(terms, *position).unwrap_or(0);
            if sample.commitment.len != expected {
                return Err(ProofError::WrongLength {
                    position: *position,
                    expected,
                    got: sample.commitment.len,
                });
            }
            let leaf = shard_leaf(&sample.cid, &sample.commitment);
            if sample.path.index != u64::from(*position)
                || sample.path.len != terms.placement.len() as u64
                || !smt::list_verify(&terms.commitments_root, &leaf, &sample.path)
            {
                return Err(ProofError::NotTheDealsShard(*position));
            }
            if sample.piece.index != *piece {
                return Err(ProofError::WrongPiece {
                    position: *position,
                    expected: *piece,
                    got: sample.piece.index,
                });
            }
            sample
                .piece
                .verify(&sample.commitment)
                .map_err(|error| ProofError::Piece {
                    position: *position,
                    error,
                })?;
        }
        Ok(())
    }

    /// What the pool and the chain know a proof by: one per deal, holder and period.
    pub fn slot(&self) -> (Hash, u8, u64) {
        (self.deal, self.holder, self.period)
    }

    /// The hash a block's `transactions_root` lists for it.
    pub fn hash(&self) -> Hash {
        hash_with("IOS storage proof v1", &[&self.encode()])
    }

    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(PROOF_VERSION)
            .fixed(&self.deal)
            .u8(self.holder)
            .u64(self.period);
        w.u32(self.samples.len() as u32);
        for s in &self.samples {
            w.u16(s.position)
                .var(&s.cid)
                .u64(s.commitment.len)
                .fixed(&s.commitment.root);
            s.path.encode_into(w);
            s.piece.encode_into(w);
        }
        if let Some(t) = &self.taker {
            w.fixed(&t.key.0).fixed(&t.signature.0);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > PROOF_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "storage proof",
                len: bytes.len(),
                max: PROOF_BYTES_MAX,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROOF_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let deal = r.array()?;
        let holder = r.u8()?;
        let period = r.u64()?;
        let count = r.count("proof samples", PROOF_SAMPLES, 2 + 4 + 8 + 32)?;
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let position = r.u16()?;
            let cid = r.var("shard cid", SHARD_CID_BYTES_MAX)?.to_vec();
            let commitment = Commitment {
                len: r.u64()?,
                root: r.array()?,
            };
            let path = ListProof::decode_from(&mut r)?;
            let piece = PieceProof::decode_from(&mut r)?;
            samples.push(Sample {
                position,
                cid,
                commitment,
                path,
                piece,
            });
        }
        let taker = match r.remaining() {
            0 => None,
            _ => Some(Taker {
                key: PublicKey(r.array()?),
                signature: Signature(r.array()?),
            }),
        };
        r.finish()?;
        Ok(Self {
            deal,
            holder,
            period,
            samples,
            taker,
        })
    }
}

/// Builds the proof of `holder` for `period` from its shards: `shard(position)` gives the shard's CID, its
/// bytes and the list proof of its leaf into the deal's `commitments_root` (or `None` when the holder no
/// longer has it). Fails with the positions it could not prove.
pub fn prove(
    terms: &DealTerms,
    seed: &Hash,
    deal: &Hash,
    holder: u8,
    period: u64,
    shard: impl FnMut(u16) -> Option<(Vec<u8>, Vec<u8>, ListProof)>,
) -> Result<StorageProof, Vec<u16>> {
    build(terms, seed, deal, holder, period, None, shard)
}

/// [`prove`] as a repair claim by `taker` (chain `chain_id`): the challenge its key draws, answered, and
/// signed.
#[allow(clippy::too_many_arguments)]
pub fn prove_claim(
    terms: &DealTerms,
    seed: &Hash,
    deal: &Hash,
    holder: u8,
    period: u64,
    taker: &SecretKey,
    chain_id: u32,
    shard: impl FnMut(u16) -> Option<(Vec<u8>, Vec<u8>, ListProof)>,
) -> Result<StorageProof, Vec<u16>> {
    let mut proof = build(
        terms,
        seed,
        deal,
        holder,
        period,
        Some(&taker.public()),
        shard,
    )?;
    proof.taker = Some(Taker::sign(taker, chain_id, deal, holder, period));
    Ok(proof)
}

fn build(
    terms: &DealTerms,
    seed: &Hash,
    deal: &Hash,
    holder: u8,
    period: u64,
    taker: Option<&PublicKey>,
    mut shard: impl FnMut(u16) -> Option<(Vec<u8>, Vec<u8>, ListProof)>,
) -> Result<StorageProof, Vec<u16>> {
    let mut samples = Vec::new();
    let mut missing = Vec::new();
    for (position, piece) in challenge_for(terms, seed, deal, holder, period, taker) {
        let built = shard(position).and_then(|(cid, bytes, path)| {
            let commitment = pieces::commit(&bytes).ok()?;
            let piece = pieces::prove(&bytes, &[piece]).ok()?.pop()?;
            Some(Sample {
                position,
                cid,
                commitment,
                path,
                piece,
            })
        });
        match built {
            Some(sample) => samples.push(sample),
            None => missing.push(position),
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(StorageProof {
        deal: *deal,
        holder,
        period,
        samples,
        taker: None,
    })
}
