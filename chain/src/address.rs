//! Account addresses and the shard an address lives on.
//!
//! An address is the 32-byte blake3 hash of the account's ed25519 public key, domain-separated. Its text form
//! is `ios1` + 64 lowercase hex digits of the address + 8 hex digits of checksum (the first 4 bytes of a
//! domain-separated blake3 of the address), so a mistyped address is caught before funds move.

use crate::crypto::{PublicKey, domain, hash_with};
use std::fmt;
use std::str::FromStr;

pub use crate::ids::ShardId;

/// A 32-byte account address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 32]);

const PREFIX: &str = "ios1";
const CHECKSUM_CONTEXT: &str = "IOS address checksum v1";

/// Why a text address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressParseError {
    #[error("an address starts with \"ios1\"")]
    MissingPrefix,
    #[error("an address has 72 hex digits after \"ios1\", this one has {0}")]
    BadLength(usize),
    #[error("an address is lowercase hex after \"ios1\"; found {0:?}")]
    BadCharacter(char),
    #[error("checksum mismatch: the address is mistyped")]
    BadChecksum,
}

impl Address {
    pub fn of(key: &PublicKey) -> Self {
        Self(hash_with(domain::ADDRESS, &[&key.0]))
    }

    fn checksum(&self) -> [u8; 4] {
        let h = hash_with(CHECKSUM_CONTEXT, &[&self.0]);
        [h[0], h[1], h[2], h[3]]
    }
}

/// The shard an address lives on: a domain-separated hash of the address, reduced modulo the shard count.
/// Hashing again (rather than reading address bits) keeps shard assignment independent of how addresses
/// are derived.
pub fn shard_of(address: &Address, shard_count: u16) -> ShardId {
    assert!(shard_count > 0, "a chain has at least one shard");
    let h = hash_with(domain::SHARD, &[&address.0]);
    let v = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    ShardId(
        u16::try_from(v % u64::from(shard_count)).expect("a value reduced modulo a u16 fits a u16"),
    )
}

/// Lowercase hex digits of `bytes` (how ids and hashes are written in text).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex `text` (what [`hex`] writes); None if it is not whole hex digits.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unhex(s: &str, out: &mut [u8]) -> Result<(), AddressParseError> {
    let digits: Vec<u8> = s
        .chars()
        .map(|c| match c {
            '0'..='9' => Ok(c as u8 - b'0'),
            'a'..='f' => Ok(c as u8 - b'a' + 10),
            _ => Err(AddressParseError::BadCharacter(c)),
        })
        .collect::<Result<_, _>>()?;
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = (pair[0] << 4) | pair[1];
    }
    Ok(())
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}{}", hex(&self.0), hex(&self.checksum()))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s
            .strip_prefix(PREFIX)
            .ok_or(AddressParseError::MissingPrefix)?;
        // Characters first, so that the byte slicing below only ever sees ASCII.
        if let Some(c) = body.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(AddressParseError::BadCharacter(c));
        }
        if body.len() != 72 {
            return Err(AddressParseError::BadLength(body.len()));
        }
        let mut addr = [0u8; 32];
        let mut sum = [0u8; 4];
        unhex(&body[..64], &mut addr)?;
        unhex(&body[64..], &mut sum)?;
        let address = Address(addr);
        if address.checksum() != sum {
            return Err(AddressParseError::BadChecksum);
        }
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_decodes_what_hex_writes_and_nothing_else() {
        assert_eq!(
            hex_decode(&hex(&[0, 0xab, 0xff])),
            Some(vec![0, 0xab, 0xff])
        );
        assert_eq!(hex_decode("ABff"), Some(vec![0xab, 0xff]));
        for bad in ["abc", "+f", "0g", " 0"] {
            assert_eq!(hex_decode(bad), None, "{bad:?}");
        }
    }

    use super::*;
    use crate::crypto::SecretKey;

    fn alice() -> Address {
        Address::of(&SecretKey::dev("alice").public())
    }

    #[test]
    fn text_form_round_trips() {
        let a = alice();
        let text = a.to_string();
        assert!(text.starts_with("ios1"));
        assert_eq!(text.len(), 4 + 72);
        assert_eq!(text.parse::<Address>(), Ok(a));
    }

    #[test]
    fn parser_rejects_each_kind_of_mistake() {
        let text = alice().to_string();
        let check = |input: &str, expected: AddressParseError| {
            assert_eq!(input.parse::<Address>(), Err(expected), "input {input:?}");
        };
        check(&text[4..], AddressParseError::MissingPrefix);
        check(&text[..text.len() - 1], AddressParseError::BadLength(71));
        check(&format!("{text}0"), AddressParseError::BadLength(73));
        check(
            &format!("ios1X{}", &text[5..]),
            AddressParseError::BadCharacter('X'),
        );
        check(
            &format!("{}é", &text[..68]),
            AddressParseError::BadCharacter('é'),
        );
        // Flip one hex digit of the body: the checksum catches it.
        let mut typo: Vec<char> = text.chars().collect();
        typo[10] = if typo[10] == '0' { '1' } else { '0' };
        check(
            &typo.into_iter().collect::<String>(),
            AddressParseError::BadChecksum,
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "ios1\\PC{0,80}") {
            if let Ok(a) = s.parse::<Address>() {
                proptest::prop_assert_eq!(a.to_string(), s);
            }
        }
    }

    #[test]
    fn addresses_spread_over_shards() {
        let mut counts = [0u32; 4];
        for i in 0u32..4000 {
            let a = Address::of(&PublicKey(hash_with("test", &[&i.to_le_bytes()])));
            counts[usize::from(shard_of(&a, 4))] += 1;
        }
        for c in counts {
            assert!(
                (850..1150).contains(&c),
                "shards unevenly loaded: {counts:?}"
            );
        }
        assert_eq!(shard_of(&alice(), 1), 0);
    }
}
