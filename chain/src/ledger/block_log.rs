//! The block log: committed blocks, their certificates, the tip and the index of committed transactions,
//! as one shard (or the beacon chain) persists them in its store.

use super::{ShardApp, Tip};
use crate::atomix::{Lock, LockKind};
use crate::block::Block;
use crate::codec::{Reader, Writer};
use crate::crypto::Hash;
use crate::store::{Store, StoreError, WriteBatch};

pub(crate) const KEY_TIP: &[u8] = b"chain/tip";
pub(super) const KEY_BLOCK_PREFIX: &[u8] = b"chain/block/";
pub(super) const KEY_CERT_PREFIX: &[u8] = b"chain/cert/";
/// `chain/tx/<id>` -> the height of the committed block that holds the transaction (for proofs).
pub(super) const KEY_TX_PREFIX: &[u8] = b"chain/tx/";
/// `chain/slashes/<height:u64 BE>` -> the slash locks the block at that height made for holders of other
/// shards (kind-less lock encodings, one after another), so that they are relayed like a block's transfers.
pub(super) const KEY_SLASHES_PREFIX: &[u8] = b"chain/slashes/";
/// `chain/payouts/<height:u64 BE>` -> the payout locks the block's storage proofs made for holders of other
/// shards (kind-less lock encodings, one after another): kept rather than recomputed, since a later repair
/// claim changes who holds a slot.
pub(super) const KEY_PAYOUTS_PREFIX: &[u8] = b"chain/payouts/";

pub(super) fn height_key(prefix: &[u8], height: u64) -> Vec<u8> {
    [prefix, &height.to_be_bytes()].concat()
}

/// The persisted tip, if the chain was ever opened on this store.
pub(crate) fn load_tip(store: &dyn Store) -> Result<Option<Tip>, StoreError> {
    let Some(tip) = store.get(KEY_TIP)? else {
        return Ok(None);
    };
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: "chain/tip".into(),
        reason: reason.into(),
    };
    let mut r = Reader::new(&tip);
    let height = r.u64().map_err(|_| corrupt("short"))?;
    let hash = r.array().map_err(|_| corrupt("short"))?;
    Ok(Some(Tip { height, hash }))
}

/// Adds a committed block, its certificate and the new tip to `batch`.
pub(crate) fn put_commit(batch: &mut WriteBatch, block: &Block, certificate: Vec<u8>) {
    let height = block.header.height;
    batch.put(height_key(KEY_BLOCK_PREFIX, height), block.encode());
    batch.put(height_key(KEY_CERT_PREFIX, height), certificate);
    batch.put(
        KEY_TIP,
        [height.to_be_bytes().as_slice(), &block.hash()].concat(),
    );
}

/// A committed block and its encoded certificate, if the store has them.
pub(crate) fn load_committed(store: &dyn Store, height: u64) -> Option<(Block, Vec<u8>)> {
    let block = store.get(&height_key(KEY_BLOCK_PREFIX, height)).ok()??;
    let cert = store.get(&height_key(KEY_CERT_PREFIX, height)).ok()??;
    Some((Block::decode(&block).ok()?, cert))
}

/// Adds the slash locks a committed block made to `batch`, each indexed by its id like a transaction.
pub(super) fn put_slashes(batch: &mut WriteBatch, height: u64, locks: &[Lock]) {
    put_locks(batch, KEY_SLASHES_PREFIX, height, locks);
}

/// Adds the payout locks a committed block's proofs made to `batch`, each indexed by its id like a
/// transaction (so that anyone can ask for it to be relayed again: `height_of_tx`).
pub(super) fn put_payouts(batch: &mut WriteBatch, height: u64, locks: &[Lock]) {
    put_locks(batch, KEY_PAYOUTS_PREFIX, height, locks);
}

fn put_locks(batch: &mut WriteBatch, prefix: &[u8], height: u64, locks: &[Lock]) {
    if locks.is_empty() {
        return;
    }
    let mut w = Writer::new();
    for lock in locks {
        lock.encode_into(&mut w);
        batch.put([KEY_TX_PREFIX, &lock.tx_id].concat(), height.to_be_bytes());
    }
    batch.put(height_key(prefix, height), w.finish());
}

impl<St: Store> ShardApp<St> {
    /// The slash locks the committed block at `height` made for holders of other shards.
    pub fn slashes_at(&self, height: u64) -> Vec<Lock> {
        self.locks_at(KEY_SLASHES_PREFIX, height, LockKind::Slash)
    }

    /// The payout locks the committed block at `height` made for holders of other shards.
    pub fn payouts_at(&self, height: u64) -> Vec<Lock> {
        self.locks_at(KEY_PAYOUTS_PREFIX, height, LockKind::Transfer)
    }

    fn locks_at(&self, prefix: &[u8], height: u64, kind: LockKind) -> Vec<Lock> {
        let Ok(Some(bytes)) = self.store.get(&height_key(prefix, height)) else {
            return Vec::new();
        };
        let mut r = Reader::new(&bytes);
        let mut locks = Vec::new();
        while r.remaining() > 0 {
            match Lock::decode_from(&mut r, kind) {
                Ok(lock) => locks.push(lock),
                Err(_) => break,
            }
        }
        locks
    }

    /// The height of the committed block that holds transaction `id`, if this shard committed it.
    pub fn height_of_tx(&self, id: &Hash) -> Option<u64> {
        let height = self.store.get(&[KEY_TX_PREFIX, id].concat()).ok()??;
        Some(u64::from_be_bytes(height.try_into().ok()?))
    }
}
