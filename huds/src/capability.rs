//! Read capabilities: `huds:` followed by the unpadded lowercase base32 of
//! `[version = 1][manifest CID, binary][file key, 32 bytes]`.
//!
//! Whoever holds a capability can find the sealed manifest by its CID and open it with the key.

use cid::Cid;

use crate::segment::FileKey;

const PREFIX: &str = "huds:";
const VERSION: u8 = 1;
/// Longest capability text accepted (a CID is at most ~100 bytes; this leaves room).
const TEXT_CHARS_MAX: usize = 512;

/// A read capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub manifest: Cid,
    pub key: FileKey,
}

/// A capability string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("capability must start with 'huds:'")]
    Prefix,
    #[error("capability is too long")]
    TooLong,
    #[error("capability is not valid base32")]
    Base32,
    #[error("capability version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
    #[error("capability is truncated or has trailing bytes")]
    Length,
    #[error("capability holds a malformed manifest CID")]
    Cid,
}

fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("a valid base32 alphabet")
}

impl Capability {
    pub fn to_text(&self) -> String {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&self.manifest.to_bytes());
        bytes.extend_from_slice(&self.key.0);
        format!("{PREFIX}{}", base32().encode(&bytes))
    }

    pub fn parse(text: &str) -> Result<Capability, CapabilityError> {
        let body = text.strip_prefix(PREFIX).ok_or(CapabilityError::Prefix)?;
        if body.len() > TEXT_CHARS_MAX {
            return Err(CapabilityError::TooLong);
        }
        let bytes = base32()
            .decode(body.as_bytes())
            .map_err(|_| CapabilityError::Base32)?;
        let (&version, rest) = bytes.split_first().ok_or(CapabilityError::Length)?;
        if version != VERSION {
            return Err(CapabilityError::Version(version));
        }
        let mut cursor = std::io::Cursor::new(rest);
        let manifest = Cid::read_bytes(&mut cursor).map_err(|_| CapabilityError::Cid)?;
        let key: [u8; 32] = rest[cursor.position() as usize..]
            .try_into()
            .map_err(|_| CapabilityError::Length)?;
        Ok(Capability {
            manifest,
            key: FileKey(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Capability {
        Capability {
            manifest: crate::cids::blake3_cid(b"m"),
            key: FileKey([7; 32]),
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let t = c.to_text();
        assert!(t.starts_with("huds:") && t.len() < 200, "{t}");
        assert_eq!(Capability::parse(&t), Ok(c));
    }

    #[test]
    fn malformed_capabilities_are_errors() {
        let t = sample().to_text();
        let check = |s: &str, e: CapabilityError| assert_eq!(Capability::parse(s), Err(e), "{s}");
        check("bafy", CapabilityError::Prefix);
        check("huds:!!!", CapabilityError::Base32);
        check("huds:", CapabilityError::Length);
        check(&t[..t.len() - 8], CapabilityError::Length);
        let mut long = base32()
            .decode(&t.as_bytes()["huds:".len()..])
            .expect("valid");
        long.push(0);
        check(
            &format!("huds:{}", base32().encode(&long)),
            CapabilityError::Length,
        );
        check(
            &format!("huds:{}", "a".repeat(600)),
            CapabilityError::TooLong,
        );
        check(
            &format!("huds:{}", base32().encode(&[2, 1, 2, 3])),
            CapabilityError::Version(2),
        );
        check(
            &format!("huds:{}", base32().encode(&[1, 0xff, 0xff])),
            CapabilityError::Cid,
        );
    }

    proptest::proptest! {
        #[test]
        fn random_text_never_panics(s in "huds:[a-z2-7]{0,120}") {
            let _ = Capability::parse(&s);
        }
    }
}
