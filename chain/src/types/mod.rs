//! The types layer: what blocks, votes and proofs are made of, and their wire codecs.
//!
//! Everything here is data with its encoding and its stateless checks: accounts ([`account`]), storage
//! deals ([`deal`]) and their proofs of storage ([`storage_proof`]), volumes ([`volume`]), transactions ([`tx`]), registry events and batches ([`registry`]), block headers ([`header`]), votes,
//! signed proposal headers and quorum certificates ([`vote`]), evidence of faults ([`evidence`]), Atomix
//! inbounds and locks ([`inbound`]), blocks ([`block`]), the consensus messages ([`message`]) and their
//! encoding ([`wire`]), and proof files ([`proof`]). In that order, each module imports only those before
//! it. Outside the layer it imports only the primitives (codec, crypto, addresses, amounts, the Merkle
//! trees, PoL's draws), never execution, BFT, the ledger, the beacon chain or SPV, so that anything (a light
//! client, a tool, a toy application) can use the chain's types without pulling in consensus. The layering
//! is written down in `specs/ARCHITECTURE.md`, "Layers of `chain`", and checked by
//! `chain/tests/module_layers.rs`.

pub mod account;
pub mod block;
pub mod deal;
pub mod evidence;
pub mod header;
pub mod inbound;
pub mod message;
pub mod proof;
pub mod registry;
pub mod storage_proof;
pub mod tx;
pub mod volume;
pub mod vote;
pub mod wire;
