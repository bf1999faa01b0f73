//! Atomix inbounds and locks: the types a cross-shard transfer leaves in blocks and state trees, and their
//! codecs and stateless checks (`specs/consensus.md` §6). The protocol that uses them, and how a shard
//! certifies another shard's header, is in [`crate::atomix`], one layer up.

use crate::address::{Address, ShardId, shard_of};
use crate::amount::Amount;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, hash_with};
use crate::smt;
use crate::types::header::{BlockHeader, LINK_CERTIFICATE_BYTES_MAX};

/// Locks one inbound carries, at most; a source block with more is relayed as several inbounds.
pub const INBOUND_LOCKS_MAX: usize = 256;
/// Inbounds one block carries, at most.
pub const BLOCK_INBOUND_MAX: usize = 64;
/// The encoded inbounds of one block, at most, in bytes.
pub const BLOCK_INBOUND_BYTES_MAX: usize = 1024 * 1024;
/// A relayed inbound, at most, in bytes: larger relays are cut into several.
pub const INBOUND_RELAY_BYTES_MAX: usize = 128 * 1024;
const HEADER_BYTES: usize = 1 + 4 + 2 + 8 + 32 * 4;
const LOCK_BYTES: usize = 1 + 32 + 32 + 32 + 8;
/// A state proof, at most: every sibling and a leaf terminal.
const PROOF_BYTES_MAX: usize = 4 + 256 * 32 + 1 + 64;
/// An encoded inbound, at most.
pub const INBOUND_BYTES_MAX: usize = 4
    + HEADER_BYTES
    + 4
    + LINK_CERTIFICATE_BYTES_MAX
    + 4
    + INBOUND_LOCKS_MAX * (LOCK_BYTES + PROOF_BYTES_MAX);

/// What committing a lock does on the recipient's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockKind {
    /// Value moved out of `from` on the input shard: `amount` is credited to `to`'s balance.
    #[default]
    Transfer,
    /// A storage node of the output shard missed a proof on the input shard (`economics.md` §5.7): up to
    /// `amount` of `to`'s storage stake is burned. Nothing left the input shard.
    Slash,
}

impl LockKind {
    fn tag(self) -> u8 {
        match self {
            LockKind::Transfer => 0,
            LockKind::Slash => 1,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, DecodeError> {
        match tag {
            0 => Ok(LockKind::Transfer),
            1 => Ok(LockKind::Slash),
            tag => Err(DecodeError::UnknownTag {
                what: "lock kind",
                tag,
            }),
        }
    }
}

/// Value moved out of a sender on the input shard, waiting to be committed on the recipient's shard, or a
/// slash of a recipient's storage stake (see [`LockKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The transfer (or payout, or slash) that made it; a lock is committed at most once, by this id.
    pub tx_id: Hash,
    pub from: Address,
    pub to: Address,
    pub amount: Amount,
    pub kind: LockKind,
}

impl Lock {
    /// The state-tree key of the lock of transaction `tx_id` on its input shard.
    pub fn key(tx_id: &Hash) -> Hash {
        hash_with("IOS atomix lock key v1", &[tx_id])
    }

    /// The value of its state-tree leaf. The kind picks the domain, so a transfer's leaf never proves a
    /// slash nor a slash's a transfer.
    pub fn value_hash(&self) -> Hash {
        let domain = match self.kind {
            LockKind::Transfer => "IOS atomix lock v1",
            LockKind::Slash => "IOS atomix slash v1",
        };
        hash_with(domain, &[&self.encode()])
    }

    /// The lock's fields without its kind (what its leaf hashes under the kind's domain).
    pub fn encode_into(&self, w: &mut Writer) {
        w.fixed(&self.tx_id)
            .fixed(&self.from.0)
            .fixed(&self.to.0)
            .u64(self.amount.0);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    /// Decodes the fields [`Lock::encode_into`] writes, for a lock of `kind`.
    pub fn decode_from(r: &mut Reader<'_>, kind: LockKind) -> Result<Self, DecodeError> {
        Ok(Self {
            tx_id: r.array()?,
            from: Address(r.array()?),
            to: Address(r.array()?),
            amount: Amount(r.u64()?),
            kind,
        })
    }

    /// The kind, then the fields: how an inbound carries a lock.
    fn encode_tagged(&self, w: &mut Writer) {
        w.u8(self.kind.tag());
        self.encode_into(w);
    }

    fn decode_tagged(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = LockKind::from_tag(r.u8()?)?;
        Self::decode_from(r, kind)
    }
}

/// Locks of one finalised input-shard block bound for one output shard, with the proof that they are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The input shard's block header.
    pub header: BlockHeader,
    /// Its encoded precommit quorum certificate.
    pub certificate: Vec<u8>,
    /// Each lock with its proof of presence against `header.state_root`.
    pub locks: Vec<(Lock, smt::Proof)>,
}

/// Why an inbound was refused. Each variant says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("inbound is for chain {got}, this is chain {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("inbound comes from shard {0}, which does not exist")]
    UnknownShard(ShardId),
    #[error("inbound comes from this very shard {0}")]
    SameShard(ShardId),
    #[error("inbound carries no locks")]
    Empty,
    #[error("inbound carries {0} locks, more than {INBOUND_LOCKS_MAX}")]
    TooManyLocks(usize),
    #[error("lock of {tx} pays an account of shard {to_shard}, not of this shard {shard}")]
    NotForThisShard {
        tx: String,
        shard: ShardId,
        to_shard: ShardId,
    },
    #[error("lock of {tx} is not proven in the certified header: {reason}")]
    BadProof { tx: String, reason: String },
    #[error("lock of {0} was already committed")]
    AlreadyCommitted(String),
    #[error("lock of {0} has a zero amount")]
    ZeroAmount(String),
    #[error("certificate: {0}")]
    Certificate(#[from] CertifyError),
    #[error("amount overflow")]
    Overflow,
    #[error("too many Atomix inbounds are waiting; retry later")]
    PoolFull,
}

/// Why a certificate of another shard's header was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    /// Not (yet) known here: the committee of that shard at that height. Try again later.
    #[error("the committee of shard {shard} at height {height} is not known here yet")]
    UnknownCommittee { shard: ShardId, height: u64 },
    #[error("{0}")]
    Invalid(String),
}

fn short(tx: &Hash) -> String {
    tx[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Inbound {
    pub fn hash(&self) -> Hash {
        hash_with("IOS atomix inbound v1", &[&self.encode()])
    }

    /// What identifies the relayed content whoever relays it: the header and the locks (not the
    /// certificate, whose signer set differs between members, nor the proofs, which follow from the header
    /// and the locks).
    pub fn content_id(&self) -> Hash {
        let mut locks = Writer::new();
        for (lock, _) in &self.locks {
            lock.encode_tagged(&mut locks);
        }
        let locks = locks.finish();
        hash_with(
            "IOS atomix inbound content v3",
            &[&self.header.hash(), &locks],
        )
    }

    pub fn encode_into(&self, w: &mut Writer) {
        let mut h = Writer::new();
        self.header.encode_into(&mut h);
        w.var(&h.finish()).var(&self.certificate);
        w.u32(u32::try_from(self.locks.len()).expect("at most INBOUND_LOCKS_MAX locks"));
        for (lock, proof) in &self.locks {
            lock.encode_tagged(w);
            proof.encode_into(w);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut hr = Reader::new(r.var("inbound header", HEADER_BYTES)?);
        let header = BlockHeader::decode_from(&mut hr)?;
        hr.finish()?;
        let certificate = r
            .var("inbound certificate", LINK_CERTIFICATE_BYTES_MAX)?
            .to_vec();
        let count = r.count("inbound locks", INBOUND_LOCKS_MAX, LOCK_BYTES + 5)?;
        let mut locks = Vec::with_capacity(count);
        for _ in 0..count {
            let lock = Lock::decode_tagged(r)?;
            let proof = smt::Proof::decode_from(r)?;
            locks.push((lock, proof));
        }
        Ok(Self {
            header,
            certificate,
            locks,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let inbound = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(inbound)
    }

    /// The checks that need neither the certificate's committee nor the output shard's state: chain, shards,
    /// sizes, that every lock pays an account of `shard` and is proven in the header's state.
    pub fn check_proofs(
        &self,
        chain_id: u32,
        shard: ShardId,
        shard_count: u16,
    ) -> Result<(), InboundError> {
        let h = &self.header;
        if h.chain_id != chain_id {
            return Err(InboundError::WrongChain {
                expected: chain_id,
                got: h.chain_id,
            });
        }
        if h.shard >= shard_count {
            return Err(InboundError::UnknownShard(h.shard));
        }
        if h.shard == shard {
            return Err(InboundError::SameShard(shard));
        }
        if self.locks.is_empty() {
            return Err(InboundError::Empty);
        }
        if self.locks.len() > INBOUND_LOCKS_MAX {
            return Err(InboundError::TooManyLocks(self.locks.len()));
        }
        for (lock, proof) in &self.locks {
            let to_shard = shard_of(&lock.to, shard_count);
            if to_shard != shard {
                return Err(InboundError::NotForThisShard {
                    tx: short(&lock.tx_id),
                    shard,
                    to_shard,
                });
            }
            if lock.amount.0 == 0 {
                return Err(InboundError::ZeroAmount(short(&lock.tx_id)));
            }
            match smt::verify(&h.state_root, &Lock::key(&lock.tx_id), proof) {
                Ok(Some(v)) if v == lock.value_hash() => {}
                Ok(Some(_)) => {
                    return Err(InboundError::BadProof {
                        tx: short(&lock.tx_id),
                        reason: "the proven lock differs".into(),
                    });
                }
                Ok(None) => {
                    return Err(InboundError::BadProof {
                        tx: short(&lock.tx_id),
                        reason: "the proof shows no such lock".into(),
                    });
                }
                Err(e) => {
                    return Err(InboundError::BadProof {
                        tx: short(&lock.tx_id),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The same locks cut into inbounds of at most [`INBOUND_LOCKS_MAX`] locks and, where a single lock
    /// allows, [`INBOUND_RELAY_BYTES_MAX`] bytes.
    pub fn split(
        header: &BlockHeader,
        certificate: &[u8],
        locks: Vec<(Lock, smt::Proof)>,
    ) -> Vec<Inbound> {
        let fixed = 4 + HEADER_BYTES + 4 + certificate.len() + 4;
        let mut out = Vec::new();
        let mut current: Vec<(Lock, smt::Proof)> = Vec::new();
        let mut bytes = fixed;
        for (lock, proof) in locks {
            let size = LOCK_BYTES + 5 + proof.siblings.len() * 32 + 64;
            if !current.is_empty()
                && (current.len() >= INBOUND_LOCKS_MAX || bytes + size > INBOUND_RELAY_BYTES_MAX)
            {
                out.push(std::mem::take(&mut current));
                bytes = fixed;
            }
            bytes += size;
            current.push((lock, proof));
        }
        if !current.is_empty() {
            out.push(current);
        }
        out.into_iter()
            .map(|locks| Inbound {
                header: header.clone(),
                certificate: certificate.to_vec(),
                locks,
            })
            .collect()
    }

    /// Locks already committed dropped: what a proposer includes of a relayed inbound.
    pub fn without(&self, committed: impl Fn(&Hash) -> bool) -> Option<Inbound> {
        let locks: Vec<_> = self
            .locks
            .iter()
            .filter(|(l, _)| !committed(&l.tx_id))
            .cloned()
            .collect();
        (!locks.is_empty()).then(|| Inbound {
            header: self.header.clone(),
            certificate: self.certificate.clone(),
            locks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inbound() -> Inbound {
        let lock = Lock {
            tx_id: [7; 32],
            from: Address([1; 32]),
            to: Address([2; 32]),
            amount: Amount(5),
            kind: LockKind::Transfer,
        };
        let mut tree = smt::SparseMerkleTree::new();
        tree.insert(Lock::key(&lock.tx_id), lock.value_hash());
        let proof = tree.prove(&Lock::key(&lock.tx_id));
        Inbound {
            header: BlockHeader {
                chain_id: 1,
                shard: ShardId(0),
                height: 3,
                parent: [0; 32],
                state_root: tree.root(),
                transactions_root: [0; 32],
                receipts_root: [0; 32],
            },
            certificate: vec![1, 2, 3],
            locks: vec![(lock, proof)],
        }
    }

    #[test]
    fn inbounds_round_trip_and_hash_everything() {
        let a = inbound();
        assert_eq!(Inbound::decode(&a.encode()).expect("decodes"), a);
        let mut b = a.clone();
        b.locks[0].0.amount = Amount(6);
        assert_ne!(a.hash(), b.hash());
        let mut c = a.clone();
        c.certificate.push(0);
        assert_ne!(a.hash(), c.hash());
        assert!(a.encode().len() <= INBOUND_BYTES_MAX);
    }

    #[test]
    fn proofs_are_checked_against_the_header() {
        let a = inbound();
        let to_shard = shard_of(&a.locks[0].0.to, 4);
        let other = ShardId((to_shard.0 + 1) % 4);
        let source = ShardId((to_shard.0 + 2) % 4);
        let mut a = a;
        a.header.shard = source;
        assert_eq!(a.check_proofs(1, to_shard, 4), Ok(()));
        assert!(matches!(
            a.check_proofs(2, to_shard, 4),
            Err(InboundError::WrongChain { .. })
        ));
        assert!(matches!(
            a.check_proofs(1, other, 4),
            Err(InboundError::NotForThisShard { .. }) | Err(InboundError::SameShard(_))
        ));
        let mut forged = a.clone();
        forged.locks[0].0.amount = Amount(500);
        assert!(matches!(
            forged.check_proofs(1, to_shard, 4),
            Err(InboundError::BadProof { .. })
        ));
        let mut rooted = a.clone();
        rooted.header.state_root = [9; 32];
        assert!(matches!(
            rooted.check_proofs(1, to_shard, 4),
            Err(InboundError::BadProof { .. })
        ));
        let mut same = a.clone();
        same.header.shard = to_shard;
        assert_eq!(
            same.check_proofs(1, to_shard, 4),
            Err(InboundError::SameShard(to_shard))
        );
        let mut empty = a;
        empty.locks.clear();
        assert_eq!(empty.check_proofs(1, to_shard, 4), Err(InboundError::Empty));
    }

    proptest! {
        #[test]
        fn decoding_random_and_mutated_inbounds_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            flip in any::<(usize, u8)>(),
        ) {
            let _ = Inbound::decode(&bytes);
            let mut good = inbound().encode();
            let i = flip.0 % good.len();
            good[i] ^= flip.1 | 1;
            let _ = Inbound::decode(&good);
        }
    }
}
