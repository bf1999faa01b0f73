//! Keys and signatures: ed25519 for accounts, BLS12-381 (`min_pk`) for validators' votes.
//!
//! Every signed message starts with a domain-separation tag naming what it is and the encoding version, and
//! carries the chain id, so a signature made for one purpose or one chain is worthless for any other.

use ed25519_dalek::Signer as _;

/// Domain tags. Each ends in a NUL so that no tag is a prefix of another's message.
pub mod domain {
    pub const TX: &[u8] = b"IOS/tx/v1\0";
    pub const VOTE: &[u8] = b"IOS/vote/v1\0";
    pub const PROPOSAL: &[u8] = b"IOS/proposal/v1\0";
    /// Version 2 binds the registering account (version 1 signed the key alone).
    pub const BLS_POP: &[u8] = b"IOS/bls-pop/v2\0";
    /// blake3 `derive_key` contexts.
    pub const ADDRESS: &str = "IOS address v1";
    pub const SHARD: &str = "IOS shard v1";
    pub const BLOCK: &str = "IOS block header v1";
    pub const BLOCK_ENCODING: &str = "IOS block encoding v1";
    pub const CROSS_LINK: &str = "IOS cross-link v1";
    pub const BEACON_STATE: &str = "IOS beacon state v1";
    pub const TX_ID: &str = "IOS transaction id v1";
    pub const RANDOMNESS: &str = "IOS epoch randomness v1";
    pub const SAMPLING: &str = "IOS committee sampling v1";
    pub const PROPOSER: &str = "IOS proposer rotation v1";
    pub const DEV_KEY: &str = "IOS deterministic dev key v1";
}

/// A 32-byte blake3 hash.
pub type Hash = [u8; 32];

/// blake3 in `derive_key` mode: the context string separates every use.
pub fn hash_with(context: &str, parts: &[&[u8]]) -> Hash {
    let mut h = blake3::Hasher::new_derive_key(context);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Why a key or signature was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not a valid ed25519 public key")]
    BadEdPublicKey,
    #[error("ed25519 signature does not verify")]
    BadEdSignature,
    #[error("not a valid BLS public key")]
    BadBlsPublicKey,
    #[error("not a valid BLS signature")]
    BadBlsSignature,
    #[error("BLS proof of possession does not verify")]
    BadProofOfPossession,
}

/// An ed25519 public key, as its 32 compressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl PublicKey {
    /// Verifies with `verify_strict`: rejects small-order keys and non-canonical signatures, so no third
    /// party can produce a second valid signature for a message (no malleability).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| CryptoError::BadEdPublicKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig)
            .map_err(|_| CryptoError::BadEdSignature)
    }
}

/// An ed25519 signing key.
#[derive(Clone)]
pub struct SecretKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({:?})", self.public())
    }
}

impl SecretKey {
    /// A key from 32 secret bytes (from an OS RNG in a wallet, from [`SecretKey::dev`] in tests).
    pub fn from_bytes(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A deterministic key for devnets and tests, derived from a label. Never for real funds.
    pub fn dev(label: &str) -> Self {
        Self::from_bytes(hash_with(domain::DEV_KEY, &[b"ed25519", label.as_bytes()]))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// BLS12-381 keys in the `min_pk` setting: 48-byte public keys, 96-byte signatures.
pub mod bls {
    use super::{CryptoError, domain, hash_with};
    use crate::address::Address;
    use blst::BLST_ERROR;
    use blst::min_pk as b;

    /// The ciphersuite tag of the proof-of-possession scheme (RFC draft-irtf-cfrg-bls-signature).
    const DST_SIG: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
    const DST_POP: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct PublicKey(pub [u8; 48]);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Signature(pub [u8; 96]);

    #[derive(Clone)]
    pub struct SecretKey(b::SecretKey);

    impl std::fmt::Debug for SecretKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "bls::SecretKey({:?})", self.public())
        }
    }

    impl SecretKey {
        /// A key from at least 32 bytes of secret input keying material.
        pub fn from_ikm(ikm: &[u8; 32]) -> Self {
            Self(
                b::SecretKey::key_gen(ikm, &[])
                    .expect("key_gen accepts any ikm of 32 bytes or more"),
            )
        }

        /// A deterministic key for devnets and tests. Never for real stake.
        pub fn dev(label: &str) -> Self {
            Self::from_ikm(&hash_with(domain::DEV_KEY, &[b"bls", label.as_bytes()]))
        }

        pub fn public(&self) -> PublicKey {
            PublicKey(self.0.sk_to_pk().compress())
        }

        pub fn sign(&self, message: &[u8]) -> Signature {
            Signature(self.0.sign(message, DST_SIG, &[]).compress())
        }

        /// The proof of possession for registering this key as `account`'s validator key: a signature,
        /// under a separate ciphersuite, of the public key and the account's address. Registering it defeats
        /// rogue-key attacks on aggregated signatures; binding the account means a proof seen in one
        /// account's registration cannot be replayed by another account to register the same key.
        pub fn proof_of_possession(&self, account: &Address) -> Signature {
            let pk = self.public();
            Signature(
                self.0
                    .sign(&pop_message(&pk, account), DST_POP, &[])
                    .compress(),
            )
        }
    }

    /// A version 1 proof of possession (the key alone, tag `"IOS/bls-pop/v1\0"`), which this chain no
    /// longer accepts: for the test that shows it.
    #[cfg(test)]
    pub(crate) fn sign_pop_v1_for_tests(key: &SecretKey) -> Signature {
        let message = [b"IOS/bls-pop/v1\0".as_slice(), &key.public().0].concat();
        Signature(key.0.sign(&message, DST_POP, &[]).compress())
    }

    /// `"IOS/bls-pop/v2\0" || public_key:[48] || account:[32]`: fixed lengths after the tag, so no two
    /// (key, account) pairs give the same message.
    fn pop_message(pk: &PublicKey, account: &Address) -> Vec<u8> {
        [domain::BLS_POP, &pk.0, &account.0].concat()
    }

    /// Successful verifications remembered by [`remember_verifications`], at most this many (then the
    /// memory starts over).
    const REMEMBERED_MAX: usize = 1 << 16;

    static REMEMBER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static REMEMBERED: std::sync::Mutex<Option<std::collections::HashSet<[u8; 32]>>> =
        std::sync::Mutex::new(None);

    /// Makes this process remember every signature check that succeeded (keyed by a hash of the keys, the
    /// message and the signature), so that checking the same signature again costs a hash. A check is a
    /// pure function of those inputs, so the answer is the same; only successes are kept, so a peer's
    /// bad signatures cannot fill the memory with its own entries. Off by default: a validator checks
    /// each signature about once, and the devnet and its benches run every validator in one process,
    /// where a shared memory would hide the cost of all but the first check. The simulators turn it on,
    /// since there the same certificate is checked by every simulated validator.
    pub fn remember_verifications(on: bool) {
        REMEMBER.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `check` unless the same check (`kind`, `pks`, `message`, `sig`) is remembered as passed.
    fn checked(
        kind: &[u8],
        pks: &[PublicKey],
        message: &[u8],
        sig: &Signature,
        check: impl FnOnce() -> Result<(), CryptoError>,
    ) -> Result<(), CryptoError> {
        if !REMEMBER.load(std::sync::atomic::Ordering::Relaxed) {
            return check();
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(kind);
        hasher.update(&(pks.len() as u64).to_le_bytes());
        for pk in pks {
            hasher.update(&pk.0);
        }
        hasher.update(&(message.len() as u64).to_le_bytes());
        hasher.update(message);
        hasher.update(&sig.0);
        let key = *hasher.finalize().as_bytes();
        let seen = |key: &[u8; 32]| {
            REMEMBERED
                .lock()
                .map(|m| m.as_ref().is_some_and(|m| m.contains(key)))
                .unwrap_or(false)
        };
        if seen(&key) {
            return Ok(());
        }
        check()?;
        if let Ok(mut m) = REMEMBERED.lock() {
            let m = m.get_or_insert_with(Default::default);
            if m.len() >= REMEMBERED_MAX {
                m.clear();
            }
            m.insert(key);
        }
        Ok(())
    }

    fn decode_pk(pk: &PublicKey) -> Result<b::PublicKey, CryptoError> {
        // `key_validate` rejects the identity and points outside the prime-order subgroup.
        b::PublicKey::key_validate(&pk.0).map_err(|_| CryptoError::BadBlsPublicKey)
    }

    fn decode_sig(sig: &Signature) -> Result<b::Signature, CryptoError> {
        b::Signature::sig_validate(&sig.0, true).map_err(|_| CryptoError::BadBlsSignature)
    }

    impl PublicKey {
        pub fn validate(&self) -> Result<(), CryptoError> {
            decode_pk(self).map(|_| ())
        }

        pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), CryptoError> {
            checked(b"verify", std::slice::from_ref(self), message, sig, || {
                let pk = decode_pk(self)?;
                let sig = decode_sig(sig)?;
                match sig.verify(false, message, DST_SIG, &[], &pk, false) {
                    BLST_ERROR::BLST_SUCCESS => Ok(()),
                    _ => Err(CryptoError::BadBlsSignature),
                }
            })
        }

        /// Checks a proof of possession of this key made for registering it as `account`'s key.
        pub fn verify_proof_of_possession(
            &self,
            account: &Address,
            pop: &Signature,
        ) -> Result<(), CryptoError> {
            let pk = decode_pk(self)?;
            let sig = decode_sig(pop).map_err(|_| CryptoError::BadProofOfPossession)?;
            match sig.verify(false, &pop_message(self, account), DST_POP, &[], &pk, false) {
                BLST_ERROR::BLST_SUCCESS => Ok(()),
                _ => Err(CryptoError::BadProofOfPossession),
            }
        }
    }

    /// Aggregates signatures on one message into one signature.
    pub fn aggregate(sigs: &[Signature]) -> Result<Signature, CryptoError> {
        let decoded = sigs.iter().map(decode_sig).collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&b::Signature> = decoded.iter().collect();
        let agg = b::AggregateSignature::aggregate(&refs, false)
            .map_err(|_| CryptoError::BadBlsSignature)?;
        Ok(Signature(agg.to_signature().compress()))
    }

    /// Verifies an aggregate of signatures by `pks` on one `message`. Sound only for keys whose proofs of
    /// possession were checked at registration.
    pub fn verify_aggregate(
        pks: &[PublicKey],
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), CryptoError> {
        if pks.is_empty() {
            return Err(CryptoError::BadBlsSignature);
        }
        checked(b"aggregate", pks, message, sig, || {
            let decoded = pks.iter().map(decode_pk).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&b::PublicKey> = decoded.iter().collect();
            let sig = decode_sig(sig)?;
            match sig.fast_aggregate_verify(false, message, DST_SIG, &refs) {
                BLST_ERROR::BLST_SUCCESS => Ok(()),
                _ => Err(CryptoError::BadBlsSignature),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;

    /// With verifications remembered, a signature that passed passes again, and nothing else passes: a
    /// different message, key or signature, or an aggregate missing a signer.
    #[test]
    fn remembered_bls_checks_still_refuse_what_does_not_verify() {
        bls::remember_verifications(true);
        let (a, b) = (bls::SecretKey::dev("a"), bls::SecretKey::dev("b"));
        let sig = a.sign(b"m");
        for _ in 0..2 {
            assert_eq!(a.public().verify(b"m", &sig), Ok(()));
        }
        assert!(a.public().verify(b"n", &sig).is_err());
        assert!(b.public().verify(b"m", &sig).is_err());
        assert!(a.public().verify(b"m", &b.sign(b"m")).is_err());
        let both = bls::aggregate(&[sig, b.sign(b"m")]).expect("valid signatures");
        let keys = [a.public(), b.public()];
        for _ in 0..2 {
            assert_eq!(bls::verify_aggregate(&keys, b"m", &both), Ok(()));
        }
        assert!(bls::verify_aggregate(&keys[..1], b"m", &both).is_err());
        assert!(bls::verify_aggregate(&keys, b"n", &both).is_err());
    }

    #[test]
    fn ed25519_signs_and_verifies_strictly() {
        let sk = SecretKey::dev("alice");
        let sig = sk.sign(b"hello");
        assert_eq!(sk.public().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            sk.public().verify(b"hellO", &sig),
            Err(CryptoError::BadEdSignature)
        );
        let other = SecretKey::dev("bob").public();
        assert_eq!(
            other.verify(b"hello", &sig),
            Err(CryptoError::BadEdSignature)
        );
    }

    #[test]
    fn ed25519_rejects_small_order_keys() {
        // The identity point: a small-order key that `verify_strict` must refuse.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let sig = Signature([0; 64]);
        assert!(PublicKey(identity).verify(b"m", &sig).is_err());
    }

    #[test]
    fn bls_signatures_aggregate_and_verify() {
        let keys: Vec<_> = (0..4)
            .map(|i| bls::SecretKey::dev(&format!("v{i}")))
            .collect();
        let pks: Vec<_> = keys.iter().map(|k| k.public()).collect();
        let sigs: Vec<_> = keys.iter().map(|k| k.sign(b"block")).collect();
        for (pk, sig) in pks.iter().zip(&sigs) {
            assert_eq!(pk.verify(b"block", sig), Ok(()));
        }
        let agg = bls::aggregate(&sigs).expect("valid signatures aggregate");
        assert_eq!(bls::verify_aggregate(&pks, b"block", &agg), Ok(()));
        assert!(bls::verify_aggregate(&pks[..3], b"block", &agg).is_err());
        assert!(bls::verify_aggregate(&pks, b"other", &agg).is_err());
        assert!(bls::verify_aggregate(&[], b"block", &agg).is_err());
    }

    #[test]
    fn bls_proof_of_possession_binds_the_key() {
        let a = bls::SecretKey::dev("a");
        let b = bls::SecretKey::dev("b");
        let owner = Address([1; 32]);
        assert_eq!(
            a.public()
                .verify_proof_of_possession(&owner, &a.proof_of_possession(&owner)),
            Ok(())
        );
        assert_eq!(
            b.public()
                .verify_proof_of_possession(&owner, &a.proof_of_possession(&owner)),
            Err(CryptoError::BadProofOfPossession)
        );
        // A vote signature over the pop message is not a proof of possession: the ciphersuites differ.
        let forged = a.sign(&[domain::BLS_POP, &a.public().0, &owner.0].concat());
        assert_eq!(
            a.public().verify_proof_of_possession(&owner, &forged),
            Err(CryptoError::BadProofOfPossession)
        );
    }

    /// Attacks the proof of possession's replay (issue 14, defect 12): it signed the key alone, so anyone who
    /// saw a validator's registration could register the same key from another account with the same proof
    /// (and a version 1 proof of the key alone still verified). Now the proof signs the key and the
    /// registering account's address, and verifies for that account only.
    #[test]
    fn a_proof_of_possession_cannot_be_replayed_by_another_account() {
        let key = bls::SecretKey::dev("validator");
        let owner = Address([1; 32]);
        let thief = Address([2; 32]);
        let pop = key.proof_of_possession(&owner);
        assert_eq!(
            key.public().verify_proof_of_possession(&owner, &pop),
            Ok(())
        );
        assert_eq!(
            key.public().verify_proof_of_possession(&thief, &pop),
            Err(CryptoError::BadProofOfPossession)
        );
        // The version 1 proof (the key alone, under the PoP ciphersuite) is no proof for any account.
        let v1 = bls::sign_pop_v1_for_tests(&key);
        for account in [&owner, &thief] {
            assert_eq!(
                key.public().verify_proof_of_possession(account, &v1),
                Err(CryptoError::BadProofOfPossession)
            );
        }
    }

    #[test]
    fn garbage_bls_bytes_are_rejected_not_panicking() {
        assert_eq!(
            bls::PublicKey([0xff; 48]).validate(),
            Err(CryptoError::BadBlsPublicKey)
        );
        let pk = bls::SecretKey::dev("a").public();
        assert_eq!(
            pk.verify(b"m", &bls::Signature([0x11; 96])),
            Err(CryptoError::BadBlsSignature)
        );
    }
}
