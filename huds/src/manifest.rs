//! The storage manifest: which segments a file's blocks were packed into, how each was coded, and its shards.
//!
//! Encoded as dag-cbor (a map with short keys, see specs/formats.md), then sealed under the file key. Decoding
//! checks every field against the limits below, so a manifest from a peer or the disk cannot make a reader
//! allocate without bound or index out of range.

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::segment::{Coding, SHARDS_MAX};
use crate::unixfs::BLOCK_BYTES_MAX;

/// The manifest format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Largest segment plaintext accepted.
pub const SEGMENT_BYTES_MAX_LIMIT: u32 = 64 * 1024 * 1024;
/// Smallest configurable segment size: every block must fit in one segment.
pub const SEGMENT_BYTES_MAX_FLOOR: u32 = 2 * 1024 * 1024;

/// What the root of the DAG is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

/// One block packed into a segment: its CID and length, in packing order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef(pub Cid, pub u32);

/// A segment of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Plaintext bytes (sum of the block lengths).
    pub len: u32,
    /// CIDs of the k data shards then the m parity shards.
    pub shards: Vec<Cid>,
    pub blocks: Vec<BlockRef>,
}

/// The manifest of one stored DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u8,
    /// Root of the UnixFS DAG (the CID IPFS would give).
    pub root: Cid,
    pub kind: Kind,
    /// Content bytes: a file's size, or the sum of a tree's file sizes.
    pub size: u64,
    pub k: u8,
    pub m: u8,
    pub segment_bytes_max: u32,
    pub segments: Vec<Segment>,
}

/// A manifest that does not decode or breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid dag-cbor: {0}")]
    Cbor(String),
    #[error("manifest version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
    #[error("manifest is inconsistent: {0}")]
    Invalid(String),
}

impl Manifest {
    pub fn coding(&self) -> Coding {
        Coding::new(self.k.into(), self.m.into()).expect("checked by decode or by the writer")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).expect("a manifest always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        // The version is checked before the full shape so a newer manifest gets the right error.
        #[derive(Deserialize)]
        struct Versioned {
            v: u8,
        }
        let head: Versioned = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| ManifestError::Cbor(e.to_string()))?;
        if head.v != VERSION {
            return Err(ManifestError::Version(head.v));
        }
        let m: Manifest = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| ManifestError::Cbor(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError::Invalid(s));
        if self.k == 0 || usize::from(self.k) + usize::from(self.m) > SHARDS_MAX {
            return bad(format!("k={} m={}", self.k, self.m));
        }
        if !(SEGMENT_BYTES_MAX_FLOOR..=SEGMENT_BYTES_MAX_LIMIT).contains(&self.segment_bytes_max) {
            return bad(format!("segment size {}", self.segment_bytes_max));
        }
        let total = usize::from(self.k) + usize::from(self.m);
        for (i, s) in self.segments.iter().enumerate() {
            if s.shards.len() != total {
                return bad(format!(
                    "segment {i} lists {} shards, expected {total}",
                    s.shards.len()
                ));
            }
            if s.len > self.segment_bytes_max {
                return bad(format!("segment {i} is {} bytes, over its limit", s.len));
            }
            let sum: u64 = s.blocks.iter().map(|b| u64::from(b.1)).sum();
            if sum != u64::from(s.len) || s.blocks.iter().any(|b| b.1 as usize > BLOCK_BYTES_MAX) {
                return bad(format!(
                    "segment {i}: block lengths do not add up to its length"
                ));
            }
        }
        Ok(())
    }

    /// Plaintext offset of every block: (segment index, offset, length) by CID. The first copy wins.
    pub fn block_index(&self) -> std::collections::HashMap<Cid, (usize, usize, usize)> {
        let mut idx = std::collections::HashMap::new();
        for (si, s) in self.segments.iter().enumerate() {
            let mut off = 0usize;
            for b in &s.blocks {
                idx.entry(b.0).or_insert((si, off, b.1 as usize));
                off += b.1 as usize;
            }
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::{RAW, blake3_cid, sha256_cid};

    fn sample() -> Manifest {
        Manifest {
            v: VERSION,
            root: sha256_cid(RAW, b"abc"),
            kind: Kind::File,
            size: 3,
            k: 2,
            m: 1,
            segment_bytes_max: 4 << 20,
            segments: vec![Segment {
                len: 3,
                shards: (0..3u8).map(|i| blake3_cid(&[i])).collect(),
                blocks: vec![BlockRef(sha256_cid(RAW, b"abc"), 3)],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn truncated_and_inconsistent_manifests_are_errors() {
        let bytes = sample().encode();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(Manifest::decode(&bytes[..cut]), Err(ManifestError::Cbor(_))),
                "cut={cut}"
            );
        }
        let mut m = sample();
        m.segments[0].shards.pop();
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Invalid(_))
        ));
        let mut m = sample();
        m.segments[0].len = 4;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Invalid(_))
        ));
        let mut m = sample();
        m.v = 2;
        assert_eq!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Version(2))
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Manifest::decode(&bytes);
        }
    }
}
