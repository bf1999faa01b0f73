//! What consensus needs from execution: the [`App`] trait a [`super::Replica`] and a [`super::Follower`]
//! drive, and the errors an application answers with.
//!
//! The trait lives here, in the BFT layer, and not with its implementations (the shard ledger's
//! `ShardApp`, the beacon chain's `BeaconApp`), so that the replica depends on no particular application:
//! it runs against any state machine that can propose, check and commit blocks (the tests run it against a
//! counter). The error types live here too because the trait's signatures name them; they describe why a
//! block is refused in terms of the types layer only (a cross-link's or a piece of evidence's fault is
//! described here, and checked by the beacon chain).

use crate::codec::DecodeError;
use crate::crypto::Hash;
use crate::genesis::GenesisError;
use crate::ids::ShardId;
use crate::store::{Store, StoreError};
use crate::types::block::Block;
use crate::types::inbound::InboundError;
use crate::types::registry::BatchError;
use crate::types::tx::TxError;
use crate::types::vote::QcError;

/// Why a proposed block is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for chain {got}, this is chain {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("block is for shard {got}, this is shard {expected}")]
    WrongShard { expected: ShardId, got: ShardId },
    #[error("block height {got}, expected {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block does not extend the committed tip")]
    WrongParent,
    #[error("block has {0} transactions, more than the maximum")]
    TooManyTransactions(usize),
    #[error("block has {0} Atomix inbounds, more than the maximum count or bytes")]
    TooManyInbounds(usize),
    #[error("Atomix inbound {index} is invalid: {error}")]
    Inbound { index: usize, error: InboundError },
    #[error("transactions root does not match the transactions")]
    TransactionsRoot,
    #[error("transaction {index} is invalid: {error}")]
    Transaction { index: usize, error: TxError },
    #[error("state root does not match execution")]
    StateRoot,
    #[error("receipts root does not match execution")]
    ReceiptsRoot,
    #[error("cross-link {index} is invalid: {error}")]
    Link { index: usize, error: LinkError },
    #[error("a shard block carries cross-links or evidence, which only beacon blocks carry")]
    NotOnShards,
    #[error("evidence {index} is invalid: {error}")]
    Evidence { index: usize, error: EvidenceError },
    #[error("block has {0} storage proofs, more than the maximum count or bytes")]
    TooManyProofs(usize),
    /// Executing the block would change the shard's accountable supply (balances, stakes, unbonding, fee
    /// pool and escrow, plus what it locked out for other shards minus what it committed from them): no
    /// transaction, inbound or proof mints or burns, so this is a bug in execution, and the block is refused.
    #[error("the block changes the shard's supply from {before} to {after} base units")]
    Supply { before: u128, after: u128 },
    #[error("storage proof {index} is refused: {error}")]
    Proof {
        index: usize,
        error: crate::state::ProofRefused,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error("block to commit is invalid: {0}")]
    Block(#[from] BlockError),
}

/// The last committed block of a chain: its height (0 is genesis) and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub height: u64,
    pub hash: Hash,
}

/// What consensus needs from execution.
pub trait App {
    /// The last committed block.
    fn tip(&self) -> Tip;
    /// A new block on top of the tip.
    fn propose(&mut self) -> Block;
    fn check(&mut self, block: &Block) -> Result<(), BlockError>;
    /// Checks a block this chain's committee has already finalised (its certificate verified): what a
    /// catching-up member or a follower applies. Checks that hold for the committee's block whatever this
    /// node has seen of other chains may be skipped (a shard skips its inbounds' certificates: the
    /// committee's honest majority checked them, perhaps against committees this node no longer keeps).
    fn check_finalised(&mut self, block: &Block) -> Result<(), BlockError> {
        self.check(block)
    }
    /// Commits a block that extends the tip, with the encoded certificate that finalised it.
    fn commit(&mut self, block: &Block, certificate: Vec<u8>) -> Result<(), LedgerError>;
    /// A committed block and its encoded certificate, if this application still holds it: what the replica
    /// serves to members catching up. Where blocks are kept is the application's business (the ledger's
    /// block log, or memory), so there is no default.
    fn committed(&self, height: u64) -> Option<(Block, Vec<u8>)>;
    /// The store the replica keeps its write-ahead log in: the application's own, so that a restarted
    /// replica finds its log next to the blocks it committed.
    fn store(&mut self) -> &mut dyn Store;
    fn store_ref(&self) -> &dyn Store;
}

/// Why a cross-link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link is for chain {got}, this is chain {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("link is for shard {0}, which does not exist")]
    UnknownShard(ShardId),
    #[error("shard {shard} is already linked at height {linked}, the link is for height {height}")]
    NotNewer {
        shard: ShardId,
        height: u64,
        linked: u64,
    },
    #[error(
        "shard {shard} height {height} is in epoch {epoch}, which the beacon chain does not hold (yet, or any more)"
    )]
    UnknownEpoch {
        shard: ShardId,
        height: u64,
        epoch: u64,
    },
    #[error("link certificate does not decode: {0}")]
    Certificate(#[from] DecodeError),
    #[error("link certificate is not a precommit certificate for exactly this header")]
    CertificateMismatch,
    #[error("link certificate does not verify against shard {shard}'s committee: {error}")]
    Quorum { shard: ShardId, error: QcError },
    #[error("the beacon chain's pool of links waiting for a block is full")]
    PoolFull,
    #[error("link of shard {shard} carries a bad registry batch: {error}")]
    Registry { shard: ShardId, error: BatchError },
}

/// Why evidence of a fault is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error(
        "evidence is about shard {0}, which does not exist (beacon committee faults are not recorded)"
    )]
    UnknownShard(ShardId),
    #[error(
        "evidence is from epoch {epoch}; the beacon chain records faults of epochs {oldest} to {newest}"
    )]
    OutOfEpochs {
        epoch: u64,
        oldest: u64,
        newest: u64,
    },
    #[error("evidence does not verify against shard {0}'s committee of its epoch")]
    Invalid(ShardId),
    #[error("this fault is already recorded")]
    AlreadyRecorded,
    #[error("too many faults are recorded or waiting; retry later")]
    Full,
}
