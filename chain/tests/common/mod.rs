//! What the chain's integration tests share: a cheap stand-in for the BLS vote scheme.

use chain::bft::VoteScheme;
use std::fmt::Debug;
use std::marker::PhantomData;

/// Hooks called on every signature, verification and aggregate verification of [`Insecure`], so that a test
/// can meter them (`()` meters nothing).
pub trait Meter: Clone + Debug + PartialEq + Eq + Send + Sync + 'static {
    fn signed() {}
    fn verified() {}
    fn aggregate_verified() {}
}

impl Meter for () {}

/// A cheap stand-in for BLS with the same aggregate semantics (an aggregate verifies exactly when it combines
/// the signatures of the claimed signers on the claimed message) but no security: anyone who knows a public
/// key could sign for it. Simulated Byzantine validators only ever sign with their own keys, so what the
/// tests check (which member signed what, and whether a quorum did) is the same as with BLS, at a fraction of
/// the cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insecure<M: Meter = ()>(PhantomData<M>);

impl<M: Meter> Insecure<M> {
    fn mac(public: &[u8; 32], message: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(public, message).as_bytes()
    }

    /// The secret key of validator `index` under a label of the test's own.
    pub fn key(label: &str, index: usize) -> [u8; 32] {
        *blake3::hash(format!("{label} {index}").as_bytes()).as_bytes()
    }
}

impl<M: Meter> VoteScheme for Insecure<M> {
    type Secret = [u8; 32];
    type Public = [u8; 32];
    type Sig = [u8; 32];

    fn public(secret: &Self::Secret) -> Self::Public {
        *blake3::hash(secret).as_bytes()
    }
    fn sign(secret: &Self::Secret, message: &[u8]) -> Self::Sig {
        M::signed();
        Self::mac(&Self::public(secret), message)
    }
    fn verify(public: &Self::Public, message: &[u8], sig: &Self::Sig) -> bool {
        M::verified();
        Self::mac(public, message) == *sig
    }
    fn aggregate(sigs: &[Self::Sig]) -> Option<Self::Sig> {
        let mut out = [0u8; 32];
        for s in sigs {
            out.iter_mut().zip(s).for_each(|(o, b)| *o ^= b);
        }
        Some(out)
    }
    fn verify_aggregate(publics: &[Self::Public], message: &[u8], sig: &Self::Sig) -> bool {
        M::aggregate_verified();
        let sigs: Vec<_> = publics.iter().map(|p| Self::mac(p, message)).collect();
        !publics.is_empty() && Self::aggregate(&sigs) == Some(*sig)
    }
    fn sig_to_bytes(sig: &Self::Sig) -> Vec<u8> {
        sig.to_vec()
    }
    fn sig_from_bytes(bytes: &[u8]) -> Option<Self::Sig> {
        bytes.try_into().ok()
    }
}
