//! Storage commitments: a Merkle root over a stored shard's fixed-size pieces, and the proofs that a piece
//! is part of it (`specs/economics.md` §2).
//!
//! A storage deal records one [`Commitment`] per shard. When the chain challenges a holder for piece `i` of
//! a shard, the holder answers with a [`PieceProof`]: the piece's bytes and its path to the committed root.
//! The chain checks the proof against the commitment alone, so answering needs the bytes and nothing else
//! does: a holder that deleted the shard cannot answer, and one that keeps only the piece hashes (1/8 of the
//! shard) cannot either, because the piece itself is part of the answer.
//!
//! A shard of `len` bytes has `ceil(len / PIECE_BYTES)` pieces (the last one shorter; a shard is never
//! empty). The leaf of piece `i` is `H("IOS storage piece v1", i:u64 BE, piece)`; the root is
//! [`smt::list_root`] over the leaves; the commitment is `H("IOS storage commitment v1", len:u64 BE, root)`,
//! so a shorter or longer shard with the same first pieces never shares a commitment.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, hash_with};
use crate::smt::{self, ListProof};

/// The bytes of one piece: small, so that a proof (a piece and a path of `log2(pieces)` hashes) stays
/// under a kilobyte for the largest shard; see `specs/economics.md` §2 for the sizes.
pub const PIECE_BYTES: usize = 256;
/// The largest shard a deal may commit to: a 64 MiB segment (the largest the storage core makes) coded into
/// one data shard. Its 262,144 piece hashes (8 MiB) are the most a prover holds in memory at once.
pub const SHARD_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The commitment to one stored shard: its length and the Merkle root over its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commitment {
    pub len: u64,
    pub root: Hash,
}

impl Commitment {
    /// The hash a deal records for the shard.
    pub fn hash(&self) -> Hash {
        hash_with(
            "IOS storage commitment v1",
            &[&self.len.to_be_bytes(), &self.root],
        )
    }

    /// How many pieces the shard has.
    pub fn pieces(&self) -> u64 {
        self.len.div_ceil(PIECE_BYTES as u64)
    }
}

/// Why a shard cannot be committed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("a shard of {0} bytes cannot be committed to: shards hold 1..={max} bytes", max = SHARD_BYTES_MAX)]
    Size(u64),
}

fn leaf(index: u64, piece: &[u8]) -> Hash {
    hash_with("IOS storage piece v1", &[&index.to_be_bytes(), piece])
}

/// The piece hashes of a shard, in order.
fn leaves(shard: &[u8]) -> Vec<Hash> {
    shard
        .chunks(PIECE_BYTES)
        .enumerate()
        .map(|(i, piece)| leaf(i as u64, piece))
        .collect()
}

fn check_size(len: u64) -> Result<(), CommitError> {
    if len == 0 || len > SHARD_BYTES_MAX {
        return Err(CommitError::Size(len));
    }
    Ok(())
}

/// The commitment to `shard`'s bytes.
pub fn commit(shard: &[u8]) -> Result<Commitment, CommitError> {
    let len = shard.len() as u64;
    check_size(len)?;
    Ok(Commitment {
        len,
        root: smt::list_root(&leaves(shard)),
    })
}

/// That piece `index` of a committed shard holds `piece`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceProof {
    pub index: u64,
    pub piece: Vec<u8>,
    /// Sibling hashes from the piece's leaf up to the root (the list proof of [`smt`]).
    pub siblings: Vec<Hash>,
}

/// Why a piece proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    #[error("piece {index} is out of range: the shard has {pieces} pieces")]
    OutOfRange { index: u64, pieces: u64 },
    #[error("piece {index} holds {got} bytes; that piece of this shard holds {expected}")]
    WrongLength {
        index: u64,
        expected: usize,
        got: usize,
    },
    #[error("piece {0} does not prove against the commitment")]
    BadPath(u64),
}

/// The length piece `index` of a shard of `len` bytes has.
fn piece_len(len: u64, index: u64) -> usize {
    let start = index * PIECE_BYTES as u64;
    (len - start).min(PIECE_BYTES as u64) as usize
}

/// Proofs of pieces `indices` of `shard` (whose commitment is `commit(shard)`), in the order asked.
pub fn prove(shard: &[u8], indices: &[u64]) -> Result<Vec<PieceProof>, PieceError> {
    let leaves = leaves(shard);
    let pieces = leaves.len() as u64;
    indices
        .iter()
        .map(|&index| {
            if index >= pieces {
                return Err(PieceError::OutOfRange { index, pieces });
            }
            let start = index as usize * PIECE_BYTES;
            let end = (start + PIECE_BYTES).min(shard.len());
            let path = smt::list_prove(&leaves, index as usize);
            Ok(PieceProof {
                index,
                piece: shard[start..end].to_vec(),
                siblings: path.siblings,
            })
        })
        .collect()
}

impl PieceProof {
    /// Checks the proof against a commitment: the index is in range, the piece has exactly the length that
    /// piece of the shard has, and its leaf proves against the root.
    pub fn verify(&self, commitment: &Commitment) -> Result<(), PieceError> {
        let pieces = commitment.pieces();
        if self.index >= pieces {
            return Err(PieceError::OutOfRange {
                index: self.index,
                pieces,
            });
        }
        let expected = piece_len(commitment.len, self.index);
        if self.piece.len() != expected {
            return Err(PieceError::WrongLength {
                index: self.index,
                expected,
                got: self.piece.len(),
            });
        }
        let path = ListProof {
            index: self.index,
            len: pieces,
            siblings: self.siblings.clone(),
        };
        if !smt::list_verify(&commitment.root, &leaf(self.index, &self.piece), &path) {
            return Err(PieceError::BadPath(self.index));
        }
        Ok(())
    }

    /// The encoding: `index:u64 piece:var siblings:u32-count [32]*`.
    pub fn encode_into(&self, w: &mut Writer) {
        w.u64(self.index).var(&self.piece);
        w.u32(self.siblings.len() as u32);
        for s in &self.siblings {
            w.fixed(s);
        }
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let index = r.u64()?;
        let piece = r.var("piece", PIECE_BYTES)?;
        let count = r.count("piece path", smt::LIST_PROOF_SIBLINGS_MAX, 32)?;
        let siblings = (0..count).map(|_| r.array()).collect::<Result<_, _>>()?;
        Ok(Self {
            index,
            piece: piece.to_vec(),
            siblings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn every_piece_of_every_shape_proves_and_tampering_never_does() {
        for len in [1, 255, 256, 257, 512, 1000, 4096, 65_537] {
            let bytes = shard(len, 7);
            let c = commit(&bytes).expect("in range");
            assert_eq!(c.pieces(), (len as u64).div_ceil(256));
            let all: Vec<u64> = (0..c.pieces()).collect();
            for p in prove(&bytes, &all).expect("in range") {
                p.verify(&c).expect("an honest proof holds");
                let mut w = Writer::new();
                p.encode_into(&mut w);
                let bytes = w.finish();
                let mut r = Reader::new(&bytes);
                assert_eq!(PieceProof::decode_from(&mut r).expect("decodes"), p);
                r.finish().expect("nothing left");

                // A flipped byte, another index, a dropped or added sibling, a truncated piece: refused.
                let mut bad = p.clone();
                bad.piece[0] ^= 1;
                assert_eq!(bad.verify(&c), Err(PieceError::BadPath(p.index)));
                if c.pieces() > 1 {
                    let mut moved = p.clone();
                    moved.index = (p.index + 1) % c.pieces();
                    assert!(moved.verify(&c).is_err());
                    let mut short = p.clone();
                    short.siblings.pop();
                    assert!(short.verify(&c).is_err());
                }
                let mut long = p.clone();
                long.siblings.push([0; 32]);
                assert!(long.verify(&c).is_err());
                let mut cut = p.clone();
                cut.piece.pop();
                assert!(matches!(
                    cut.verify(&c),
                    Err(PieceError::WrongLength { .. })
                ));
            }
            let out = c.pieces();
            assert!(matches!(
                prove(&bytes, &[out]),
                Err(PieceError::OutOfRange { .. })
            ));
        }
    }

    #[test]
    fn a_proof_for_another_shard_or_length_is_refused() {
        let a = shard(5000, 1);
        let b = shard(5000, 2);
        let ca = commit(&a).expect("in range");
        let cb = commit(&b).expect("in range");
        let p = prove(&b, &[3]).expect("in range").remove(0);
        assert_eq!(p.verify(&ca), Err(PieceError::BadPath(3)));
        p.verify(&cb).expect("its own shard");
        // The same pieces under a different claimed length: another commitment hash, and the last piece's
        // length no longer fits.
        let longer = Commitment {
            len: ca.len + 1,
            root: ca.root,
        };
        assert_ne!(longer.hash(), ca.hash());
        assert_eq!(commit(&[]), Err(CommitError::Size(0)));
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        for len in 0..64usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let mut r = Reader::new(&bytes);
            let _ = PieceProof::decode_from(&mut r);
        }
        let mut w = Writer::new();
        w.u64(0).var(&[0; 300]).u32(0);
        let bytes = w.finish();
        assert!(PieceProof::decode_from(&mut Reader::new(&bytes)).is_err());
    }
}
