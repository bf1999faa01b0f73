//! CID helpers: the codecs and hash functions HUDS uses, and verification of bytes against a CID.
//!
//! Content blocks (UnixFS) are addressed as IPFS addresses them: CIDv1, sha2-256, codec `raw` for leaves and
//! `dag-pb` for nodes. Storage objects (shards, sealed manifests) are CIDv1 `raw` with a BLAKE3 multihash: they
//! are never exchanged with IPFS, and BLAKE3 is several times faster than sha2-256 on the 1.5x volume of shards.

use cid::Cid;
use multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of raw bytes.
pub const RAW: u64 = 0x55;
/// Multicodec of dag-pb (UnixFS nodes).
pub const DAG_PB: u64 = 0x70;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Multihash code of BLAKE3 with a 32-byte digest.
pub const BLAKE3: u64 = 0x1e;

/// Errors from checking bytes against a CID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("unsupported hash function 0x{0:x} in CID (HUDS reads sha2-256 and blake3)")]
    UnsupportedHash(u64),
    #[error("bytes do not hash to {0}")]
    Mismatch(Cid),
}

fn wrap(code: u64, digest: &[u8]) -> Multihash<64> {
    Multihash::wrap(code, digest).expect("a 32-byte digest always fits a 64-byte multihash")
}

/// The sha2-256 CIDv1 of `data` under `codec`.
pub fn sha256_cid(codec: u64, data: &[u8]) -> Cid {
    Cid::new_v1(codec, wrap(SHA2_256, &Sha256::digest(data)))
}

/// The BLAKE3 CIDv1 (codec raw) of `data`: the address of a shard or a sealed manifest.
pub fn blake3_cid(data: &[u8]) -> Cid {
    Cid::new_v1(RAW, wrap(BLAKE3, blake3::hash(data).as_bytes()))
}

/// Checks that `data` hashes to `cid`'s multihash.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    let mh = cid.hash();
    let ok = match mh.code() {
        SHA2_256 => Sha256::digest(data).as_slice() == mh.digest(),
        BLAKE3 => blake3::hash(data).as_bytes() == mh.digest(),
        other => return Err(VerifyError::UnsupportedHash(other)),
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch(*cid))
    }
}

/// Parses a CID from text, with an error that names the input.
pub fn parse(text: &str) -> Result<Cid, ParseCidError> {
    Cid::try_from(text).map_err(|e| ParseCidError {
        input: truncate(text),
        reason: e.to_string(),
    })
}

/// A CID that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CID {input:?}: {reason}")]
pub struct ParseCidError {
    pub input: String,
    pub reason: String,
}

fn truncate(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    if s.chars().count() <= MAX_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_raw_leaf_matches_ipfs() {
        assert_eq!(
            sha256_cid(RAW, b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn verify_detects_a_flipped_byte() {
        let cid = blake3_cid(b"hello");
        assert_eq!(verify(&cid, b"hello"), Ok(()));
        assert_eq!(verify(&cid, b"hellp"), Err(VerifyError::Mismatch(cid)));
        let cid = sha256_cid(RAW, b"hello");
        assert_eq!(verify(&cid, b"hello"), Ok(()));
        assert!(verify(&cid, b"hell").is_err());
    }

    #[test]
    fn malformed_cids_are_errors() {
        for bad in [
            "",
            "bafy",
            "Qm",
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk!",
            "zzzz",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
