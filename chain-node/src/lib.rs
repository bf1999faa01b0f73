//! The IOS chain in the node: validators that run the `chain` crate's sans-IO BFT and shard ledger over
//! libp2p gossipsub and RocksDB, the beacon's committees, and the HTTP routes of the chain. See
//! `specs/consensus.md` §4.

pub mod api;
pub mod beacon;
pub mod devnet;
pub mod metrics;
pub mod store;
pub mod validator;
pub mod wire;

pub use api::{ChainApi, chain_routes};
pub use beacon::Beacon;
pub use devnet::{ChainDevnet, DevnetOptions};
pub use store::RocksStore;
pub use validator::{Validator, ValidatorConfig, ValidatorHandle};
