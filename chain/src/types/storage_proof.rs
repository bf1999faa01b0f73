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
/// An encoded proof of either kind, at most: a holder proof of [`PROOF_SAMPLES`] samples of the largest
/// shape (a 64 MiB shard of a 2,048-shard deal), each naming its deal and slot (33 bytes): 22,384 bytes. A
/// slot proof of the same samples with a taker is 432 bytes shorter.
pub const PROOF_BYTES_MAX: usize = 64 + PROOF_SAMPLES * (SAMPLE_BYTES_MAX + 33);
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
/// The first byte of a [`HolderProof`]'s encoding (a [`StorageProof`]'s is [`PROOF_VERSION`]).
const HOLDER_PROOF_VERSION: u8 = 2;

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
    #[error("sample {index} answers another deal or holder slot than the challenge drew")]
    WrongSlot { index: usize },
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

impl Sample {
    /// Checks the sample against its deal's terms: the shard at its position is the deal's (its leaf proves
    /// into `commitments_root`, with the length the terms give it), and it answers piece `piece` of it with
    /// a path that holds.
    pub fn verify(&self, terms: &DealTerms, piece: u64) -> Result<(), ProofError> {
        let position = self.position;
        let expected = shard_len(terms, position).unwrap_or(0);
        if self.commitment.len != expected {
            return Err(ProofError::WrongLength {
                position,
                expected,
                got: self.commitment.len,
            });
        }
        let leaf = shard_leaf(&self.cid, &self.commitment);
        if self.path.index != u64::from(position)
            || self.path.len != terms.placement.len() as u64
            || !smt::list_verify(&terms.commitments_root, &leaf, &self.path)
        {
            return Err(ProofError::NotTheDealsShard(position));
        }
        if self.piece.index != piece {
            return Err(ProofError::WrongPiece {
                position,
                expected: piece,
                got: self.piece.index,
            });
        }
        self.piece
            .verify(&self.commitment)
            .map_err(|error| ProofError::Piece { position, error })
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u16(self.position)
            .var(&self.cid)
            .u64(self.commitment.len)
            .fixed(&self.commitment.root);
        self.path.encode_into(w);
        self.piece.encode_into(w);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let position = r.u16()?;
        let cid = r.var("shard cid", SHARD_CID_BYTES_MAX)?.to_vec();
        let commitment = Commitment {
            len: r.u64()?,
            root: r.array()?,
        };
        let path = ListProof::decode_from(r)?;
        let piece = PieceProof::decode_from(r)?;
        Ok(Self {
            position,
            cid,
            commitment,
            path,
            piece,
        })
    }

    /// Builds the sample of the shard at `position` drawn on `piece`, from its CID, bytes and list proof.
    fn build(
        position: u16,
        piece: u64,
        (cid, bytes, path): (Vec<u8>, Vec<u8>, ListProof),
    ) -> Option<Self> {
        let commitment = pieces::commit(&bytes).ok()?;
        let piece = pieces::prove(&bytes, &[piece]).ok()?.pop()?;
        Some(Self {
            position,
            cid,
            commitment,
            path,
            piece,
        })
    }
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
            sample.verify(terms, *piece)?;
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
            s.encode_into(w);
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
            samples.push(Sample::decode_from(&mut r)?);
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
        let built = shard(position).and_then(|shard| Sample::build(position, piece, shard));
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

/// One slot of a holder's: a deal of the shard and the holder index the key holds in it, with the deal's
/// terms, how many shards the slot holds and what it pays a period (kept by the chain with the slot, so that
/// drawing a challenge costs a constant per slot, not a pass over each deal's placement).
#[derive(Debug, Clone, Copy)]
pub struct HolderSlot<'a> {
    pub deal: Hash,
    pub holder: u8,
    pub terms: &'a DealTerms,
    pub shards: u32,
    pub pay: u64,
}

impl<'a> HolderSlot<'a> {
    /// Slot `holder` of deal `deal` under `terms`, its shards counted and its pay computed.
    pub fn new(deal: Hash, holder: u8, terms: &'a DealTerms) -> Self {
        let (shards, pay) = slot_weight(terms, holder);
        Self {
            deal,
            holder,
            terms,
            shards,
            pay,
        }
    }
}

/// The shards slot `holder` of `terms` holds and what it pays a period (at least 1, for a pay that cannot be
/// computed).
pub fn slot_weight(terms: &DealTerms, holder: u8) -> (u32, u64) {
    let shards = positions_of(terms, holder).len() as u32;
    let pay = terms
        .per_period()
        .ok()
        .and_then(|p| p.get(usize::from(holder)).map(|a| a.0))
        .unwrap_or(1)
        .max(1);
    (shards, pay)
}

/// What a [`HolderChallenge`] draws: `(deal, holder slot, position, piece)`, in draw order.
pub type HolderChallenge = Vec<(Hash, u8, u16, u64)>;

/// What the seed of the period ending at `end` asks of storage node `key` over all its slots on a shard
/// (`slots`, in the chain's order: by deal id), `N` shards in all:
/// - with `N <= 16`, every one of them, in the slots' order;
/// - otherwise [`PROOF_SAMPLES`] draws, each choosing a slot in proportion to what it pays a period (its
///   deal's `per_period` for that holder) and a uniform shard of it (with replacement).
///
/// and a uniform piece of each drawn shard. Weighting by pay makes the chance of drawing a slot, and so what
/// dropping its data risks, independent of whatever else the node holds: opening deals with itself over
/// data it can regenerate cannot dilute the check of a customer's slot unless the node pays itself as much
/// (`specs/economics.md` §5.4). A slot whose pay cannot be computed weighs 1. Only drawn slots' placements
/// are read.
pub fn holder_challenge(
    slots: &[HolderSlot<'_>],
    seed: &Hash,
    key: &PublicKey,
    end: u64,
) -> HolderChallenge {
    let (e, k) = (end.to_be_bytes(), key.0);
    let draw = |what: &[u8], i: u64| {
        hash_with(
            "IOS holder challenge v2",
            &[seed, &k, &e, what, &i.to_be_bytes()],
        )
    };
    let word = |h: &Hash, at: usize| u64::from_be_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let pieces_of = |terms: &DealTerms, position: u16| {
        shard_len(terms, position)
            .unwrap_or(1)
            .div_ceil(pieces::PIECE_BYTES as u64)
            .max(1)
    };
    let total: u64 = slots.iter().map(|s| u64::from(s.shards)).sum();
    if total <= PROOF_SAMPLES as u64 {
        let mut drawn = Vec::with_capacity(total as usize);
        for slot in slots {
            for position in positions_of(slot.terms, slot.holder) {
                let x = draw(b"piece", drawn.len() as u64);
                let piece = word(&x, 0) % pieces_of(slot.terms, position);
                drawn.push((slot.deal, slot.holder, position, piece));
            }
        }
        return drawn;
    }
    // Each slot's running total of pay: slot j covers `[ends[j-1], ends[j])`.
    let mut ends = Vec::with_capacity(slots.len());
    let mut sum = 0u128;
    for slot in slots {
        sum += if slot.shards == 0 {
            0
        } else {
            u128::from(slot.pay.max(1))
        };
        ends.push(sum);
    }
    (0..PROOF_SAMPLES as u64)
        .map(|i| {
            let x = draw(b"slot", i);
            let at = (u128::from(word(&x, 0)) << 64 | u128::from(word(&x, 8))) % sum;
            let slot = slots[ends.partition_point(|end| *end <= at)];
            let positions = positions_of(slot.terms, slot.holder);
            let at = (word(&x, 16) % positions.len().max(1) as u64) as usize;
            let position = positions.get(at).copied().unwrap_or(0);
            let piece = word(&x, 24) % pieces_of(slot.terms, position);
            (slot.deal, slot.holder, position, piece)
        })
        .collect()
}

/// One drawn shard of a holder proof: the deal and slot it belongs to, and the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderSample {
    pub deal: Hash,
    pub holder: u8,
    pub sample: Sample,
}

/// A storage node's answer to one period's challenge over all its slots on a shard (`specs/economics.md`
/// §5.2): one proof a period, whatever the number of deals, and the period of each of its slots proven by
/// it. Like a slot proof it needs no signature: whoever submits it, the pay goes to the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderProof {
    /// The storage node: the slots whose current key this is are the ones proven.
    pub key: PublicKey,
    /// The height the proven period ended at (the grid line whose block hash is the seed).
    pub end: u64,
    pub samples: Vec<HolderSample>,
}

impl HolderProof {
    /// Checks the proof against the node's slots (in the chain's order) and the period's seed: it answers
    /// exactly the drawn shards and pieces, each of its deal (see [`Sample::verify`]). The caller checks
    /// that `end` is the period that may be proven now and that `slots` are the key's.
    pub fn verify(&self, slots: &[HolderSlot<'_>], seed: &Hash) -> Result<(), ProofError> {
        let drawn = holder_challenge(slots, seed, &self.key, self.end);
        if drawn.len() != self.samples.len() {
            return Err(ProofError::SampleCount {
                expected: drawn.len(),
                got: self.samples.len(),
            });
        }
        for (index, ((deal, holder, position, piece), s)) in
            drawn.iter().zip(&self.samples).enumerate()
        {
            if s.deal != *deal || s.holder != *holder {
                return Err(ProofError::WrongSlot { index });
            }
            if s.sample.position != *position {
                return Err(ProofError::WrongShard {
                    index,
                    expected: *position,
                    got: s.sample.position,
                });
            }
            let terms = slots
                .iter()
                .find(|s| s.deal == *deal && s.holder == *holder)
                .map(|s| s.terms)
                .ok_or(ProofError::WrongSlot { index })?;
            s.sample.verify(terms, *piece)?;
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(HOLDER_PROOF_VERSION).fixed(&self.key.0).u64(self.end);
        w.u32(self.samples.len() as u32);
        for s in &self.samples {
            w.fixed(&s.deal).u8(s.holder);
            s.sample.encode_into(w);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key = PublicKey(r.array()?);
        let end = r.u64()?;
        let count = r.count("proof samples", PROOF_SAMPLES, 33 + 2 + 4 + 8 + 32)?;
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            samples.push(HolderSample {
                deal: r.array()?,
                holder: r.u8()?,
                sample: Sample::decode_from(r)?,
            });
        }
        Ok(Self { key, end, samples })
    }
}

/// Builds `key`'s holder proof of the period ending at `end` over `slots` (the chain's list of them, as the
/// chain API gives it): `shard(deal, holder, position)` gives the shard's CID, bytes and list proof (or
/// `None` when the node no longer has it). Fails with the `(deal, position)`s it could not prove.
pub fn prove_holder(
    slots: &[HolderSlot<'_>],
    seed: &Hash,
    key: &PublicKey,
    end: u64,
    shard: impl FnMut(&Hash, u8, u16) -> Option<(Vec<u8>, Vec<u8>, ListProof)>,
) -> Result<HolderProof, Vec<(Hash, u16)>> {
    answer_holder(holder_challenge(slots, seed, key, end), key, end, shard)
}

/// Answers drawn `(deal, slot, position, piece)`s (a [`holder_challenge`], as the chain API gives it) from the
/// node's shards, like [`prove_holder`].
pub fn answer_holder(
    drawn: HolderChallenge,
    key: &PublicKey,
    end: u64,
    mut shard: impl FnMut(&Hash, u8, u16) -> Option<(Vec<u8>, Vec<u8>, ListProof)>,
) -> Result<HolderProof, Vec<(Hash, u16)>> {
    let mut samples = Vec::new();
    let mut missing = Vec::new();
    for (deal, holder, position, piece) in drawn {
        match shard(&deal, holder, position).and_then(|s| Sample::build(position, piece, s)) {
            Some(sample) => samples.push(HolderSample {
                deal,
                holder,
                sample,
            }),
            None => missing.push((deal, position)),
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(HolderProof {
        key: *key,
        end,
        samples,
    })
}

/// What a block's proof section carries: a holder's proof of all its slots for a period, or one slot's
/// proof (how a repair order is claimed; a holder may also prove a slot alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofTx {
    Slot(StorageProof),
    Holder(HolderProof),
}

/// What the pool knows a waiting proof by: one per slot and period, one per key and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProofKey {
    Slot(Hash, u8, u64),
    Holder(PublicKey, u64),
}

impl From<StorageProof> for ProofTx {
    fn from(p: StorageProof) -> Self {
        Self::Slot(p)
    }
}

impl From<HolderProof> for ProofTx {
    fn from(p: HolderProof) -> Self {
        Self::Holder(p)
    }
}

impl ProofTx {
    pub fn key(&self) -> ProofKey {
        match self {
            Self::Slot(p) => {
                let (d, h, period) = p.slot();
                ProofKey::Slot(d, h, period)
            }
            Self::Holder(p) => ProofKey::Holder(p.key, p.end),
        }
    }

    /// The hash a block's `transactions_root` lists for it.
    pub fn hash(&self) -> Hash {
        match self {
            Self::Slot(p) => p.hash(),
            Self::Holder(p) => hash_with("IOS holder proof v1", &[&p.encode()]),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Slot(p) => p.encode_into(&mut w),
            Self::Holder(p) => p.encode_into(&mut w),
        }
        w.finish()
    }

    /// Decodes either kind, told apart by the first byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&HOLDER_PROOF_VERSION) => {
                if bytes.len() > PROOF_BYTES_MAX {
                    return Err(DecodeError::TooLong {
                        what: "holder proof",
                        len: bytes.len(),
                        max: PROOF_BYTES_MAX,
                    });
                }
                let mut r = Reader::new(&bytes[1..]);
                let proof = HolderProof::decode_body(&mut r)?;
                r.finish()?;
                Ok(Self::Holder(proof))
            }
            _ => StorageProof::decode(bytes).map(Self::Slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;
    use crate::types::deal::Holder;

    /// A deal of `segments` segments of 2+1 over 3,000-byte shards with three holders, its id made
    /// from `n`.
    fn terms(n: u8, segments: usize) -> (DealTerms, Hash) {
        let terms = DealTerms {
            root: vec![1, 0x55, 0x1e, n],
            size: 6_000,
            k: 2,
            m: 1,
            periods: 4,
            holders: (0..3)
                .map(|i| Holder {
                    key: SecretKey::dev(&format!("challenge holder {i}")).public(),
                    price: Amount(1),
                })
                .collect(),
            placement: (0..segments * 3).map(|i| (i % 3) as u8).collect(),
            segment_lens: vec![3_000; segments],
            commitments_root: [n; 32],
        };
        let id = hash_with("challenge deal", &[&[n]]);
        (terms, id)
    }

    /// Issue 15 item 3: a holder challenge draws every shard of a node that holds at most 16 over all its
    /// deals, and otherwise 16 shards, each from a slot chosen in proportion to its pay: the same for the
    /// same seed, another for another seed or period, every shard drawn in time, and a slot paying three times
    /// as much drawn three times as often, whatever else the node holds.
    #[test]
    fn a_holder_challenge_covers_small_holders_and_weighs_slots_by_pay() {
        let deals: Vec<(DealTerms, Hash)> = (0..5).map(|n| terms(n, 1 + usize::from(n))).collect();
        let slots: Vec<HolderSlot<'_>> = deals
            .iter()
            .map(|(t, id)| HolderSlot::new(*id, 1, t))
            .collect();
        let key = SecretKey::dev("challenge holder 1").public();
        // Holder 1 keeps one shard per segment: 1 + 2 + 3 + 4 + 5 = 15 shards, all drawn.
        let seed = [3; 32];
        let drawn = holder_challenge(&slots, &seed, &key, 32);
        assert_eq!(drawn.len(), 15);
        let mut shards: Vec<(Hash, u16)> = drawn.iter().map(|(d, _, p, _)| (*d, *p)).collect();
        shards.sort();
        shards.dedup();
        assert_eq!(shards.len(), 15, "distinct");
        for (deal, holder, position, piece) in &drawn {
            let (terms, _) = deals
                .iter()
                .find(|(_, id)| id == deal)
                .expect("a deal of the node's");
            assert_eq!(terms.placement[usize::from(*position)], *holder);
            assert!(*piece < 3_000u64.div_ceil(pieces::PIECE_BYTES as u64));
        }
        assert_eq!(drawn, holder_challenge(&slots, &seed, &key, 32));
        assert_ne!(drawn, holder_challenge(&slots, &[4; 32], &key, 32));
        assert_ne!(drawn, holder_challenge(&slots, &seed, &key, 48));
        // 40 deals of 4 shards each: 20 pay the holder 1 a GiB, 20 pay 3.
        let many: Vec<(DealTerms, Hash)> = (0..40)
            .map(|n| {
                let (mut t, id) = terms(n, 4);
                t.holders[1].price = Amount(if n < 20 { 1 << 30 } else { 3 << 30 });
                (t, id)
            })
            .collect();
        let slots: Vec<HolderSlot<'_>> = many
            .iter()
            .map(|(t, id)| HolderSlot::new(*id, 1, t))
            .collect();
        let dear: std::collections::BTreeSet<Hash> = many[20..].iter().map(|(_, id)| *id).collect();
        let mut counts: std::collections::BTreeMap<(Hash, u16), u32> = Default::default();
        let mut dear_draws = 0u32;
        for s in 0..500u32 {
            let seed = hash_with("seed", &[&s.to_be_bytes()]);
            let drawn = holder_challenge(&slots, &seed, &key, 32);
            assert_eq!(drawn.len(), PROOF_SAMPLES);
            for (d, h, p, _) in drawn {
                assert_eq!(h, 1);
                dear_draws += u32::from(dear.contains(&d));
                *counts.entry((d, p)).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 160, "every shard drawn in time");
        // 8,000 draws, three quarters of the pay: 6,000 expected, a standard deviation of 39.
        assert!((5_750..=6_250).contains(&dear_draws), "{dear_draws}");
        assert!(holder_challenge(&[], &seed, &key, 32).is_empty());
    }

    /// Both kinds round-trip through one decoder, and random or truncated bytes are refused, never a panic.
    #[test]
    fn proofs_of_both_kinds_round_trip_and_junk_is_refused() {
        let sample = Sample {
            position: 2,
            cid: vec![1, 0x55, 0x1e, 9],
            commitment: Commitment {
                len: 3_000,
                root: [5; 32],
            },
            path: ListProof {
                index: 2,
                len: 3,
                siblings: vec![[6; 32], [7; 32]],
            },
            piece: PieceProof {
                index: 4,
                piece: vec![9; 256],
                siblings: vec![[8; 32]; 4],
            },
        };
        let holder = ProofTx::Holder(HolderProof {
            key: SecretKey::dev("k").public(),
            end: 48,
            samples: vec![HolderSample {
                deal: [1; 32],
                holder: 2,
                sample: sample.clone(),
            }],
        });
        let slot = ProofTx::Slot(StorageProof {
            deal: [1; 32],
            holder: 2,
            period: 1,
            samples: vec![sample],
            taker: None,
        });
        for proof in [holder, slot] {
            let bytes = proof.encode();
            assert_eq!(ProofTx::decode(&bytes), Ok(proof.clone()));
            assert_ne!(proof.hash(), [0; 32]);
            for cut in 0..bytes.len() {
                assert!(ProofTx::decode(&bytes[..cut]).is_err());
            }
        }
        for i in 0..2_000u32 {
            let junk = hash_with("junk", &[&i.to_be_bytes()]);
            let len = usize::from(junk[0]) * 4;
            let mut bytes: Vec<u8> = (0..len).map(|j| junk[j % 32] ^ (j as u8)).collect();
            if let Some(b) = bytes.first_mut() {
                *b = 1 + (junk[1] % 2);
            }
            let _ = ProofTx::decode(&bytes);
        }
    }
}
