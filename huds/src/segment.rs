//! Sealing and erasure coding of segments, and of the manifest.
//!
//! A segment's plaintext (packed DAG blocks) is sealed with ChaCha20-Poly1305 under the file key with the nonce
//! `[domain u32 LE][index u64 LE]`, then the sealed bytes (ciphertext + 16-byte tag) are zero-padded to a multiple
//! of k and Reed-Solomon coded into k data + m parity shards of equal length. Nonces never repeat under one key:
//! each segment index is used once per file, and the manifest has its own domain.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use cid::Cid;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::cids;

/// Bytes of the Poly1305 tag appended to each sealed object.
pub const TAG_BYTES: usize = 16;
/// Largest k + m: GF(2^8) Reed-Solomon allows 256 shards; we keep one byte of headroom.
pub const SHARDS_MAX: usize = 255;

const DOMAIN_SEGMENT: u32 = 0;
const DOMAIN_MANIFEST: u32 = 1;
const AAD_SEGMENT: &[u8] = b"huds/segment/v1";
const AAD_MANIFEST: &[u8] = b"huds/manifest/v1";

/// A file key: 32 bytes, random for private files, derived from the content for public ones.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey(pub [u8; 32]);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// A fresh random key for a private file.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS random source is available");
        FileKey(k)
    }

    /// The convergent key of a public file: the same content and parameters always give the same key, and
    /// different parameters (which change the segment plaintexts) give different keys, so no nonce repeats.
    pub fn public(root: &Cid, segment_bytes_max: u32, k: u8, m: u8) -> Self {
        let mut input = root.to_bytes();
        input.extend_from_slice(&segment_bytes_max.to_le_bytes());
        input.extend_from_slice(&[k, m]);
        FileKey(blake3::derive_key("huds v1 public file key", &input))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.0))
    }
}

fn nonce(domain: u32, index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&domain.to_le_bytes());
    n[4..].copy_from_slice(&index.to_le_bytes());
    Nonce::from(n)
}

fn seal_in_place(
    key: &FileKey,
    domain: u32,
    index: u64,
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_BYTES] {
    let tag = key
        .cipher()
        .encrypt_inout_detached(&nonce(domain, index), aad, buf.into())
        .expect("ChaCha20-Poly1305 seals any message under 256 GiB");
    tag.into()
}

fn open_in_place(
    key: &FileKey,
    domain: u32,
    index: u64,
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> bool {
    let tag = Tag::try_from(tag).expect("caller passes exactly TAG_BYTES");
    key.cipher()
        .decrypt_inout_detached(&nonce(domain, index), aad, buf.into(), &tag)
        .is_ok()
}

/// Seals a manifest's bytes.
pub fn seal_manifest(key: &FileKey, plain: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plain.len() + TAG_BYTES);
    buf.extend_from_slice(plain);
    let tag = seal_in_place(key, DOMAIN_MANIFEST, 0, AAD_MANIFEST, &mut buf);
    buf.extend_from_slice(&tag);
    buf
}

/// Opens a sealed manifest; None when the key is wrong or the bytes were altered.
pub fn open_manifest(key: &FileKey, sealed: &[u8]) -> Option<Vec<u8>> {
    let split = sealed.len().checked_sub(TAG_BYTES)?;
    let (body, tag) = sealed.split_at(split);
    let mut buf = body.to_vec();
    open_in_place(key, DOMAIN_MANIFEST, 0, AAD_MANIFEST, &mut buf, tag).then_some(buf)
}

/// The shape of a segment's coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coding {
    pub k: usize,
    pub m: usize,
}

impl Coding {
    pub fn new(k: usize, m: usize) -> Result<Self, CodingError> {
        if k == 0 || k + m > SHARDS_MAX {
            return Err(CodingError::Shape { k, m });
        }
        Ok(Coding { k, m })
    }

    pub fn total(&self) -> usize {
        self.k + self.m
    }

    /// Length of each shard for a segment of `plain_len` plaintext bytes.
    pub fn shard_len(&self, plain_len: usize) -> usize {
        (plain_len + TAG_BYTES).div_ceil(self.k)
    }

    fn rs(&self) -> Option<ReedSolomon> {
        // m = 0 is plain striping: nothing to code.
        (self.m > 0)
            .then(|| ReedSolomon::new(self.k, self.m).expect("shape checked in Coding::new"))
    }
}

/// Coding parameters out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodingError {
    #[error("invalid erasure coding k={k} m={m}: need k >= 1 and k + m <= {SHARDS_MAX}")]
    Shape { k: usize, m: usize },
}

/// A sealed and coded segment: `total` shards of `shard_len` bytes laid end to end, and their CIDs.
pub struct CodedSegment {
    /// The segment's index in its file.
    pub index: u64,
    pub shard_len: usize,
    pub buf: Vec<u8>,
    pub cids: Vec<Cid>,
}

impl CodedSegment {
    pub fn shard(&self, i: usize) -> &[u8] {
        &self.buf[i * self.shard_len..(i + 1) * self.shard_len]
    }
}

/// Seals segment `index` and codes it into shards. `plain` is consumed as the working buffer.
pub fn encode_segment(
    key: &FileKey,
    coding: Coding,
    index: u64,
    mut plain: Vec<u8>,
) -> CodedSegment {
    let plain_len = plain.len();
    let shard_len = coding.shard_len(plain_len);
    let tag = seal_in_place(key, DOMAIN_SEGMENT, index, AAD_SEGMENT, &mut plain);
    let mut buf = plain;
    buf.reserve_exact(shard_len * coding.total() - plain_len);
    buf.extend_from_slice(&tag);
    buf.resize(shard_len * coding.total(), 0);
    if let Some(rs) = coding.rs() {
        let mut shards: Vec<&mut [u8]> = buf.chunks_mut(shard_len).collect();
        rs.encode(&mut shards)
            .expect("shard count and lengths match the coder");
    }
    let cids = buf.chunks(shard_len).map(cids::blake3_cid).collect();
    CodedSegment {
        index,
        shard_len,
        buf,
        cids,
    }
}

/// Why a segment could not be rebuilt from the shards on hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeSegmentError {
    #[error("only {found} of {total} shards found, {needed} needed")]
    TooFew {
        found: usize,
        needed: usize,
        total: usize,
    },
    #[error("the shards rebuild, but the sealed segment does not open: wrong key or tampered data")]
    Open,
}

/// Rebuilds and opens segment `index` from its shards (None where missing or already found corrupt).
/// Each present shard must already have been checked against its CID and be `shard_len` long.
pub fn decode_segment(
    key: &FileKey,
    coding: Coding,
    index: u64,
    plain_len: usize,
    shards: &mut [Option<Vec<u8>>],
) -> Result<Vec<u8>, DecodeSegmentError> {
    assert_eq!(shards.len(), coding.total());
    let shard_len = coding.shard_len(plain_len);
    let found = shards.iter().filter(|s| s.is_some()).count();
    if found < coding.k {
        return Err(DecodeSegmentError::TooFew {
            found,
            needed: coding.k,
            total: coding.total(),
        });
    }
    if shards[..coding.k].iter().any(Option::is_none) {
        let rs = coding
            .rs()
            .expect("with m = 0 every data shard is present once found >= k");
        rs.reconstruct_data(shards)
            .map_err(|_| DecodeSegmentError::TooFew {
                found,
                needed: coding.k,
                total: coding.total(),
            })?;
    }
    let mut sealed = Vec::with_capacity(shard_len * coding.k);
    for s in &shards[..coding.k] {
        sealed.extend_from_slice(s.as_deref().expect("data shards present or reconstructed"));
    }
    sealed.truncate(plain_len + TAG_BYTES);
    let tag = sealed.split_off(plain_len);
    if !open_in_place(key, DOMAIN_SEGMENT, index, AAD_SEGMENT, &mut sealed, &tag) {
        return Err(DecodeSegmentError::Open);
    }
    Ok(sealed)
}

/// Rebuilds every missing shard of a segment (data and parity) from any k present ones, without the key:
/// the code runs over sealed bytes, so a repairing node needs only the shard CIDs. Present shards must already
/// have been checked against their CIDs and be `shard_len` long; the caller checks the rebuilt ones.
pub fn rebuild_shards(
    coding: Coding,
    shards: &mut [Option<Vec<u8>>],
) -> Result<(), DecodeSegmentError> {
    assert_eq!(shards.len(), coding.total());
    let found = shards.iter().filter(|s| s.is_some()).count();
    let too_few = DecodeSegmentError::TooFew {
        found,
        needed: coding.k,
        total: coding.total(),
    };
    if found == coding.total() {
        return Ok(());
    }
    match coding.rs() {
        Some(rs) if found >= coding.k => rs.reconstruct(shards).map_err(|_| too_few),
        _ => Err(too_few),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rebuild_restores_every_lost_shard_bit_for_bit() {
        let coding = Coding::new(4, 2).expect("valid");
        let seg = encode_segment(&FileKey::random(), coding, 3, vec![7u8; 70_001]);
        for lost in 0u32..(1 << 6) {
            let mut shards = shards_of(&seg, 6);
            for (i, s) in shards.iter_mut().enumerate() {
                if lost & (1 << i) != 0 {
                    *s = None;
                }
            }
            let r = rebuild_shards(coding, &mut shards);
            if lost.count_ones() <= 2 {
                assert_eq!(r, Ok(()), "lost={lost:06b}");
                for (i, s) in shards.iter().enumerate() {
                    assert_eq!(
                        s.as_deref(),
                        Some(seg.shard(i)),
                        "shard {i} lost={lost:06b}"
                    );
                }
            } else {
                assert!(matches!(
                    r,
                    Err(DecodeSegmentError::TooFew { needed: 4, .. })
                ));
            }
        }
    }

    use super::*;

    fn shards_of(seg: &CodedSegment, n: usize) -> Vec<Option<Vec<u8>>> {
        (0..n).map(|i| Some(seg.shard(i).to_vec())).collect()
    }

    #[test]
    fn every_loss_of_up_to_m_shards_decodes() {
        let key = FileKey::random();
        let coding = Coding::new(4, 2).expect("valid");
        for len in [0usize, 1, 15, 16, 17, 4096, 100_003] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let seg = encode_segment(&key, coding, 9, plain.clone());
            for lost in 0u32..(1 << 6) {
                let mut shards = shards_of(&seg, 6);
                for (i, s) in shards.iter_mut().enumerate() {
                    if lost & (1 << i) != 0 {
                        *s = None;
                    }
                }
                let r = decode_segment(&key, coding, 9, len, &mut shards);
                if lost.count_ones() <= 2 {
                    assert_eq!(r.as_deref(), Ok(&plain[..]), "len={len} lost={lost:06b}");
                } else {
                    let found = 6 - lost.count_ones() as usize;
                    assert_eq!(
                        r,
                        Err(DecodeSegmentError::TooFew {
                            found,
                            needed: 4,
                            total: 6
                        })
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_key_or_index_does_not_open() {
        let coding = Coding::new(3, 1).expect("valid");
        let seg = encode_segment(&FileKey([1; 32]), coding, 0, b"secret".to_vec());
        let mut s = shards_of(&seg, 4);
        assert_eq!(
            decode_segment(&FileKey([2; 32]), coding, 0, 6, &mut s),
            Err(DecodeSegmentError::Open)
        );
        let mut s = shards_of(&seg, 4);
        assert_eq!(
            decode_segment(&FileKey([1; 32]), coding, 1, 6, &mut s),
            Err(DecodeSegmentError::Open)
        );
    }

    #[test]
    fn manifest_seal_round_trip_and_tamper() {
        let key = FileKey::random();
        let sealed = seal_manifest(&key, b"manifest bytes");
        assert_eq!(
            open_manifest(&key, &sealed).as_deref(),
            Some(&b"manifest bytes"[..])
        );
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert_eq!(open_manifest(&key, &bad), None);
        assert_eq!(open_manifest(&key, &sealed[..10]), None);
        assert_eq!(open_manifest(&FileKey::random(), &sealed), None);
    }

    #[test]
    fn public_keys_bind_the_parameters() {
        let root = crate::cids::sha256_cid(crate::cids::RAW, b"x");
        let a = FileKey::public(&root, 4 << 20, 4, 2);
        assert_eq!(a, FileKey::public(&root, 4 << 20, 4, 2));
        assert_ne!(a, FileKey::public(&root, 4 << 20, 4, 3));
        assert_ne!(a, FileKey::public(&root, 1 << 20, 4, 2));
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Coding::new(0, 2).is_err());
        assert!(Coding::new(200, 56).is_err());
        assert!(Coding::new(1, 0).is_ok());
    }
}
