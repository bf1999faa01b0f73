//! Block headers: what a block hash commits to, and what votes, certificates, cross-links and Atomix inbounds
//! name a block by. The encoding is in [`super::block`].

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, domain, hash_with};
use crate::ids::ShardId;

pub const BLOCK_VERSION: u8 = 1;
/// The shard id of the beacon chain in its headers, votes and certificates.
pub const BEACON_SHARD: ShardId = ShardId::BEACON;
/// An encoded precommit certificate of a cross-link, at most (a 1,024-member bitmap and a BLS signature).
pub const LINK_CERTIFICATE_BYTES_MAX: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub chain_id: u32,
    pub shard: ShardId,
    pub height: u64,
    pub parent: Hash,
    pub state_root: Hash,
    pub transactions_root: Hash,
    pub receipts_root: Hash,
}

impl BlockHeader {
    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION)
            .u32(self.chain_id)
            .shard(self.shard)
            .u64(self.height)
            .fixed(&self.parent);
        w.fixed(&self.state_root)
            .fixed(&self.transactions_root)
            .fixed(&self.receipts_root);
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != BLOCK_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        Ok(Self {
            chain_id: r.u32()?,
            shard: r.shard()?,
            height: r.u64()?,
            parent: r.array()?,
            state_root: r.array()?,
            transactions_root: r.array()?,
            receipts_root: r.array()?,
        })
    }

    pub fn hash(&self) -> Hash {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        hash_with(domain::BLOCK, &[&w.finish()])
    }
}
