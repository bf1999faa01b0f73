//! The IOS chain: the ledger under HUDS.
//!
//! This crate is the consensus core. It knows nothing of sockets, clocks, threads, databases or the storage
//! network above it: every protocol here is a plain state machine that a driver (the node, or the
//! deterministic simulator in `tests/`) feeds with events and time.
//!
//! Layout, one idea per module:
//! - [`codec`]: the hand-written, length-checked binary encoding every wire and persisted structure uses.
//! - [`crypto`], [`address`], [`amount`]: ed25519 accounts, BLS validator keys, addresses, IOST amounts.
//! - [`tx`]: transactions, their encoding and their stateless checks.
//! - [`smt`]: the authenticated sparse Merkle tree over account state, with presence and absence proofs.
//! - [`store`]: the key-value store the state and consensus persist into (in-memory here; RocksDB in the node).
//! - [`state`], [`genesis`]: account state, block execution, receipts, the genesis allocation.
//! - [`pol`]: Proof of Likelihood: reputation, weights, epoch randomness, committee selection.
//! - [`block`], [`ledger`]: block headers; building, checking and committing a shard's blocks.
//! - [`registry`]: the shards' registry outboxes: how stakes reach the beacon chain.
//! - [`atomix`]: cross-shard transfers: locks on the input shard, certified inbounds on the output shard.
//! - [`beacon`]: the beacon chain: registry, reputation signals, committees, cross-links of shard heads.
//! - [`bft`]: the per-shard BFT protocol (a sans-IO Tendermint), its certificates and wire encoding.
//!
//! The normative text is `specs/consensus.md`. No `unwrap` outside tests: every `expect` says why it cannot
//! fail, and bytes from peers or disk only ever produce typed errors.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod address;
pub mod amount;
pub mod atomix;
pub mod beacon;
pub mod bft;
pub mod block;
pub mod codec;
pub mod crypto;
pub mod genesis;
pub mod ledger;
pub mod node;
pub mod pol;
pub mod registry;
pub mod smt;
pub mod spv;
pub mod state;
pub mod store;
pub mod tx;

pub use address::{Address, AddressParseError, ShardId, shard_of};
pub use amount::{Amount, AmountParseError};
pub use codec::DecodeError;
pub use state::{Account, ChainParams, Receipt, State};
pub use store::{MemStore, Store, StoreError, WriteBatch};
pub use tx::{Role, SignedTransaction, Transaction, TxError, TxKind};
