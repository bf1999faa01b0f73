//! Atomix: transfers whose recipient lives on another shard (`specs/consensus.md` §6).
//!
//! A transfer to an account of shard B, sent from shard A, runs in two steps:
//! 1. **Lock** on A (the input shard): the transfer executes like any other, except that the amount leaves
//!    the sender into a [`Lock`] leaf of A's state tree instead of into the recipient. The block that holds
//!    it is finalised by A's committee, so the lock leaf and its proof against that block's state root are
//!    the *proof of acceptance*.
//! 2. **Commit** on B (the output shard): a B block carries an [`Inbound`]: A's certified header and, for each
//!    lock in it bound for B, the lock and its state proof. B checks the certificate against A's committee
//!    (through a [`Certifier`]), each proof against the header's state root, and that the lock was never
//!    committed before (a *done* leaf in B's tree). Then it credits the recipient and writes the done leaf.
//!
//! Anyone holding the finalised A block can build the inbound, so the client need not stay online: every
//! member of A's committee relays it when it commits. With one input shard and a recipient's credit that
//! cannot fail, there is nothing to abort: an input the input shard refuses never locks anything, and a
//! lock is committed exactly once (the done leaf), however many times and by whom it is relayed. Each shard
//! counts what it locked out and what it committed in, in a leaf of its state, so that the supply stays
//! accountable: the sum over shards of holdings plus locked-out minus committed-in is the genesis supply.
//!
//! The types themselves (locks, inbounds and their errors) live in the types layer, [`crate::types::inbound`],
//! so that blocks can carry inbounds without depending on this module; they are re-exported here.

pub use crate::types::inbound::*;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, hash_with};
use crate::types::block::BlockHeader;
use crate::types::vote::{Committee, QuorumCertificate, VoteScheme};

/// The state-tree key that marks the lock of `tx_id` as committed on its output shard.
pub fn done_key(tx_id: &Hash) -> Hash {
    hash_with("IOS atomix done key v1", &[tx_id])
}

/// The value hash of a done mark.
pub fn done_value() -> Hash {
    hash_with("IOS atomix done v1", &[])
}

/// The state-tree key of a shard's Atomix totals.
pub fn totals_key() -> Hash {
    hash_with("IOS atomix totals key v1", &[])
}

/// Everything a shard has locked out to other shards and committed in from them, since genesis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub locked_out: u128,
    pub committed_in: u128,
    /// Storage stake burned by slashes on this shard (`specs/economics.md` §5.7).
    pub burned: u128,
}

impl Totals {
    /// The two Atomix totals, then the burned total only once something was burned (a shard that never
    /// slashed keeps the leaf it always had).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(&self.locked_out.to_be_bytes())
            .fixed(&self.committed_in.to_be_bytes());
        if self.burned != 0 {
            w.fixed(&self.burned.to_be_bytes());
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let mut t = Self {
            locked_out: u128::from_be_bytes(r.array()?),
            committed_in: u128::from_be_bytes(r.array()?),
            burned: 0,
        };
        if bytes.len() > 32 {
            t.burned = u128::from_be_bytes(r.array()?);
        }
        r.finish()?;
        Ok(t)
    }

    pub fn value_hash(&self) -> Hash {
        hash_with("IOS atomix totals v1", &[&self.encode()])
    }
}

/// Checks that a header of some shard was finalised by that shard's committee.
pub trait Certifier: Send + Sync {
    fn certify(&self, header: &BlockHeader, certificate: &[u8]) -> Result<(), CertifyError>;
}

/// Checks `certificate` against `committee` for `header`: the shared core of every [`Certifier`].
pub fn certify_with<S: VoteScheme>(
    chain_id: u32,
    committee: &Committee<S>,
    header: &BlockHeader,
    certificate: &[u8],
) -> Result<(), CertifyError> {
    let qc = QuorumCertificate::<S>::decode(certificate)
        .map_err(|e| CertifyError::Invalid(format!("malformed certificate: {e}")))?;
    if !qc.finalises(header) {
        return Err(CertifyError::Invalid(
            "the certificate is for another block".into(),
        ));
    }
    qc.verify(chain_id, committee)
        .map_err(|e| CertifyError::Invalid(e.to_string()))
}

/// A certifier over committees that never change (one per shard): the simulator's and fixed devnets'.
#[derive(Debug, Clone)]
pub struct FixedCommittees<S: VoteScheme> {
    pub chain_id: u32,
    pub committees: Vec<Committee<S>>,
}

impl<S: VoteScheme> Certifier for FixedCommittees<S> {
    fn certify(&self, header: &BlockHeader, certificate: &[u8]) -> Result<(), CertifyError> {
        let committee = self.committees.get(usize::from(header.shard)).ok_or(
            CertifyError::UnknownCommittee {
                shard: header.shard,
                height: header.height,
            },
        )?;
        certify_with(self.chain_id, committee, header, certificate)
    }
}
