//! The HUDS storage network: nodes on libp2p, the shard protocol, placement, network-backed add and read, repair,
//! and the node's HTTP API. Built on the storage core (`huds`); knows nothing of the chain.

pub mod api;
pub mod client;
pub mod deals;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod prover;
pub mod repair;
pub mod repair_order;
pub mod tree;
pub mod wire;

pub use client::{NetShardSink, NetShardSource};
pub use node::{NetError, Node, NodeHandle, NodeOptions};
pub use repair::{RepairOptions, RepairStats};

pub use libp2p;

/// The node identity held in a home's `node.key`: an ed25519 key from its 32-byte seed.
pub fn keypair_from_seed(seed: [u8; 32]) -> libp2p::identity::Keypair {
    let mut seed = seed;
    libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
        .expect("any 32 bytes are an ed25519 secret key")
}
