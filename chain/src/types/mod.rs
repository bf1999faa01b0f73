//! The types layer: what blocks, votes and proofs are made of, and their wire codecs.
//!
//! Everything here is data with its encoding and its stateless checks: transactions ([`tx`]), blocks
//! ([`block`]), votes, proposals, quorum certificates and evidence ([`vote`]) and the consensus messages'
//! encoding ([`wire`]), Atomix inbounds and locks ([`inbound`]), registry events and batches
//! ([`registry`]), accounts ([`account`]) and proof files ([`proof`]). It imports only the primitives
//! (codec, crypto, addresses, amounts, the Merkle trees, PoL's draws), never execution, BFT, the ledger, the
//! beacon chain or SPV, so that anything (a light client, a tool, a toy application) can use the chain's
//! types without pulling in consensus. The layering is written down in `specs/ARCHITECTURE.md`, "Layers of
//! `chain`", and checked by `chain/tests/layering.rs`.

pub mod account;
pub mod block;
pub mod evidence;
pub mod header;
pub mod inbound;
pub mod message;
pub mod proof;
pub mod registry;
pub mod tx;
pub mod vote;
pub mod wire;
