//! The validator's logic that does not touch the network, the disk or the clock: the validator itself as
//! one state machine ([`machine::Node`]: `handle(now_ms, input)`, `poll_output()`, `poll_timeout()`), what
//! a lane is and how it changes role ([`lane`]), which lanes and roles the beacon chain gives a validator
//! ([`plan`]), the schedule of relays, follower asks and head duty ([`schedule`]), catch-up over
//! request-response: whom to ask, how much to serve to whom ([`catch_up`]), and the envelope validators
//! gossip and the catch-up messages ([`wire`]). The tokio/libp2p driver in `chain-node`
//! owns the sockets, timers and RocksDB stores and calls into these with its own `now_ms`; the simulator
//! and the node harness in `chain/tests` call into the same code, so that both run one set of rules.

pub mod catch_up;
pub mod lane;
pub mod machine;
pub mod plan;
pub mod schedule;
pub mod wire;

pub use catch_up::{CatchUp, Peer, ServeBudget};
pub use lane::{Drained, Duty, Lane, Role, index_in};
pub use machine::{
    AtomixStatus, BeaconView, CommitNotice, DealView, Disk, Economy, Input, LaneStatus, Node,
    NodeConfig, NodeError, Output, ProofOf, RELAYS_ASKED_MAX, RepairOrders, ShardHead, Topic,
    VolumeView,
};
pub use schedule::{EvidenceSent, Relay, RelaySchedule};
