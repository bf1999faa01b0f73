//! Volumes: named, versioned pointers to a file tree, kept on the chain (`specs/volumes.md`).
//!
//! A volume is named by its owner's address and a name; its id is a hash of both, so only the owner's key
//! can ever publish to it (a transaction's sender is the owner). Each publish names the version it replaces
//! (0 creates the volume) and becomes that version plus one: two writers that both saw version `n` cannot
//! both publish `n + 1`, the second is refused and must look again. Every version stays on the chain as a
//! leaf of the owner's shard's state tree, with the height that published it.
//!
//! The chain does not read the root it stores: it is up to [`VOLUME_ROOT_BYTES_MAX`] opaque bytes (HUDS
//! stores there the version's capability sealed under a key only the volume's readers hold, so the chain
//! reveals neither the content nor which file it is).

use crate::address::Address;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, hash_with};

/// The longest volume name, in bytes.
pub const VOLUME_NAME_BYTES_MAX: usize = 64;
/// The most bytes a version's root may hold.
pub const VOLUME_ROOT_BYTES_MAX: usize = 256;
/// A publish pays the chain's minimum fee for each started `VOLUME_FEE_BYTES` of the version it adds to the
/// state (its height and root), besides its own: state is kept for ever by every validator of the shard, so
/// it costs what the account a transfer creates (about this size) costs.
pub const VOLUME_FEE_BYTES: usize = 128;

/// Why a volume publish is malformed (checks that need no state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "volume name {0:?} must be 1 to {VOLUME_NAME_BYTES_MAX} bytes of a-z, 0-9, '.', '_' and '-', starting with a letter or a digit"
    )]
    Name(String),
    #[error("a volume version's root is {0} bytes: 1..={VOLUME_ROOT_BYTES_MAX}")]
    Root(usize),
    #[error("version {0} is the last a volume can have")]
    LastVersion(u64),
}

/// Checks a volume name: lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= VOLUME_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Name(name.to_string()))
    }
}

/// A volume's id: its owner and name, hashed.
pub fn volume_id(owner: &Address, name: &str) -> Hash {
    hash_with("IOS volume id v1", &[&owner.0, name.as_bytes()])
}

/// The state-tree key of version `version` of volume `id`.
pub fn version_key(id: &Hash, version: u64) -> Hash {
    hash_with("IOS volume version key v1", &[id, &version.to_be_bytes()])
}

/// One published version of a volume, as the chain keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeVersion {
    /// The shard block height that published it.
    pub height: u64,
    /// What the owner published (opaque to the chain).
    pub root: Vec<u8>,
}

impl VolumeVersion {
    /// Encoding: `height:u64 root:var`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.height).var(&self.root);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let height = r.u64()?;
        let root = r.var("volume root", VOLUME_ROOT_BYTES_MAX)?.to_vec();
        r.finish()?;
        Ok(Self { height, root })
    }

    /// The leaf value under [`version_key`]: binds the volume and version too, so a leaf proves what it is.
    pub fn value_hash(&self, id: &Hash, version: u64) -> Hash {
        hash_with(
            "IOS volume version v1",
            &[id, &version.to_be_bytes(), &self.encode()],
        )
    }
}

/// The stateless checks of a publish: a valid name, a root of allowed size, and room for one more version.
pub fn check_publish(name: &str, replaces: u64, root: &[u8]) -> Result<(), VolumeError> {
    check_name(name)?;
    if root.is_empty() || root.len() > VOLUME_ROOT_BYTES_MAX {
        return Err(VolumeError::Root(root.len()));
    }
    if replaces == u64::MAX {
        return Err(VolumeError::LastVersion(replaces));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["site", "a", "0backup", "my-vol.2_x", &"a".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Site", "-x", ".x", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_and_keys_separate_owners_names_and_versions() {
        let a = Address([1; 32]);
        let b = Address([2; 32]);
        assert_ne!(volume_id(&a, "x"), volume_id(&b, "x"));
        assert_ne!(volume_id(&a, "x"), volume_id(&a, "y"));
        let id = volume_id(&a, "x");
        assert_ne!(version_key(&id, 1), version_key(&id, 2));
        let v = VolumeVersion {
            height: 9,
            root: vec![1, 2, 3],
        };
        assert_eq!(VolumeVersion::decode(&v.encode()), Ok(v.clone()));
        assert_ne!(v.value_hash(&id, 1), v.value_hash(&id, 2));
        assert!(VolumeVersion::decode(&[0; 7]).is_err());
        let mut long = v.encode();
        long.push(0);
        assert!(VolumeVersion::decode(&long).is_err());
    }

    #[test]
    fn publishes_are_checked() {
        assert_eq!(check_publish("x", 0, &[1]), Ok(()));
        assert_eq!(check_publish("x", 0, &[]), Err(VolumeError::Root(0)));
        assert_eq!(
            check_publish("x", 0, &[0; VOLUME_ROOT_BYTES_MAX + 1]),
            Err(VolumeError::Root(VOLUME_ROOT_BYTES_MAX + 1))
        );
        assert_eq!(
            check_publish("x", u64::MAX, &[1]),
            Err(VolumeError::LastVersion(u64::MAX))
        );
        assert!(check_publish("X", 0, &[1]).is_err());
    }
}
