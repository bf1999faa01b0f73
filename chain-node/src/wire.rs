//! The gossip envelope now lives with the sans-IO node, which speaks it (`chain::node::wire`); this path
//! stays so that the driver, its tests and anything outside keep their imports.

pub use chain::node::wire::*;
