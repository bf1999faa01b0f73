//! HUDS: content addressing (UnixFS), sealed and erasure-coded storage, and the block store.
//!
//! The data path of one `add`: [`unixfs`] turns bytes into IPFS-compatible blocks, [`add`] packs them into
//! segments that [`segment`] seals and codes into shards, [`store`] keeps shards and the sealed [`manifest`], and
//! a [`capability`] is what reads it back through [`read`].

pub mod add;
pub mod bench;
pub mod capability;
pub mod cids;
pub mod manifest;
pub mod read;
pub mod segment;
pub mod store;
pub mod unixfs;

pub use add::{AddError, AddOptions, Added, Source, add};
pub use capability::Capability;
pub use read::{ReadError, Reader, Removed, remove, resolve_capability};
pub use store::{BlockStore, MemStore, RocksStore, Store};
