//! The IOS chain: the ledger under HUDS.
//!
//! This crate is the consensus core. It knows nothing of sockets, clocks, threads, databases or the storage
//! network above it: every protocol here is a plain state machine that a driver (the node, or the
//! deterministic simulator in `tests/`) feeds with events and time.
//!
//! Layout, in layers (`specs/ARCHITECTURE.md`, "Layers of `chain`"): every import points down, which
//! `tests/module_layers.rs` checks.
//! - Primitives: [`codec`] (the hand-written, length-checked binary encoding every wire and persisted
//!   structure uses); [`crypto`], [`address`], [`amount`] (ed25519 accounts, BLS validator keys, addresses,
//!   IOST amounts); [`smt`] (the authenticated sparse Merkle tree, with presence and absence proofs);
//!   [`pieces`] (commitments to stored shards and proofs of their pieces, for storage deals);
//!   [`store`] (the key-value store; in-memory here, RocksDB in the node); [`pol`] (Proof of Likelihood:
//!   reputation, weights, epoch randomness, committee selection).
//! - Types, [`types`]: transactions ([`tx`]), blocks ([`block`]), votes, certificates, evidence and the
//!   consensus messages' encoding, Atomix inbounds and locks, registry events ([`registry`]), accounts and
//!   proof files. Data, codecs and stateless checks only.
//! - Execution: [`state`] (account state, block execution, receipts), [`genesis`], [`atomix`] (cross-shard
//!   transfers: how a shard certifies another shard's header).
//! - Consensus, [`bft`]: the per-shard BFT protocol (a sans-IO Tendermint), its follower and write-ahead
//!   log, and the [`bft::App`] trait it drives.
//! - Chains: [`ledger`] (a shard's blocks: block log, mempool, inbound pool, proofs served), [`beacon`]
//!   (registry, epochs, cross-links of shard heads, faults), [`spv`] (the light client).
//!
//! The normative text is `specs/consensus.md`. No `unwrap` outside tests: every `expect` says why it cannot
//! fail, and bytes from peers or disk only ever produce typed errors.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod address;
pub mod amount;
pub mod atomix;
pub mod beacon;
pub mod bft;
pub mod codec;
pub mod crypto;
pub mod genesis;
pub mod ids;
pub mod ledger;
pub mod node;
pub mod pieces;
pub mod pol;
pub mod smt;
pub mod spv;
pub mod state;
pub mod store;
pub mod types;

// The types layer's oldest modules keep their root paths (`chain::tx`, `chain::block`, `chain::registry`).
pub use types::{block, registry, tx};

pub use address::{Address, AddressParseError, ShardId, hex, hex_decode, shard_of};
pub use amount::{Amount, AmountParseError};
pub use codec::DecodeError;
pub use ids::MemberIndex;
pub use state::{Account, ChainParams, Receipt, State};
pub use store::{MemStore, Store, StoreError, WriteBatch};
pub use tx::{Role, SignedTransaction, Transaction, TxError, TxKind};
