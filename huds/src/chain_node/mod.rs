//! The IOS chain in the node: validators that run the `chain` crate's sans-IO BFT and shard ledger over
//! libp2p gossipsub and RocksDB, and the HTTP routes of the chain. See `specs/consensus.md` §4.

pub mod store;

pub use store::RocksStore;
