//! The block store: the [`BlockStore`] trait, its RocksDB implementation [`RocksStore`] (one database per node
//! home) and an in-memory one, [`MemStore`], for model tests and simulations. Both keep the same semantics, so a
//! test written against the trait holds for the store a node runs.
//!
//! RocksDB column families:
//! - `shards`: shard CID -> shard bytes (BLAKE3-addressed, kept in blob files, never compressed: they are
//!   ciphertext).
//! - `manifests`: sealed-manifest CID -> sealed bytes.
//! - `pins`: sealed-manifest CID -> pin record (dag-cbor).
//! - `refs`: shard CID ++ manifest CID -> empty: which pins hold each shard, for garbage collection; shard CID ++
//!   `held` marks a shard put here by the network, shard CID ++ `deal` ++ deal id one this node signed a storage
//!   deal for (kept until the deal is over, `specs/economics.md` §3).
//! - `public`: root CID -> capability text, for files added with `--public`.
//! - `meta`: the store format version and in-flight add markers.
//!
//! Atomicity of an add: shards are written without the WAL while the add runs; the commit flushes the shards'
//! memtable to disk, then writes the manifest, pin, refs and public entry in one synced batch. A crash before the
//! commit leaves at most unreferenced shards, which the next writable open removes (its in-flight marker says a
//! crash happened). A crash after it leaves the whole file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use cid::Cid;
use rocksdb::{ColumnFamilyDescriptor, DB, DBCompressionType, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::cids;

const CF_SHARDS: &str = "shards";
const CF_MANIFESTS: &str = "manifests";
const CF_PINS: &str = "pins";
const CF_REFS: &str = "refs";
const CF_PUBLIC: &str = "public";
const CF_META: &str = "meta";
const FAMILIES: [&str; 6] = [
    CF_SHARDS,
    CF_MANIFESTS,
    CF_PINS,
    CF_REFS,
    CF_PUBLIC,
    CF_META,
];

const KEY_VERSION: &[u8] = b"store-version";
const STORE_VERSION: u8 = 1;
const INFLIGHT_PREFIX: &[u8] = b"inflight/";
/// The ref suffix of a shard held for the network rather than for a local pin.
const HELD_REF: &[u8] = b"held";
/// The ref suffix of a shard held for a storage deal, followed by the deal id.
const DEAL_REF: &[u8] = b"deal";

/// The ref of `shard` held for `deal`.
fn deal_ref(shard: &Cid, deal: &[u8; 32]) -> Vec<u8> {
    let mut k = shard.to_bytes();
    k.extend_from_slice(DEAL_REF);
    k.extend_from_slice(deal);
    k
}

/// The plain held ref of `shard`.
fn held_ref(shard: &Cid) -> Vec<u8> {
    let mut k = shard.to_bytes();
    k.extend_from_slice(HELD_REF);
    k
}

/// What [`BlockStore::unpin`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpinned {
    pub pin: Pin,
    /// Shards the pin referenced.
    pub shards: usize,
    /// Of those, the ones nothing else referenced, deleted with it.
    pub deleted: usize,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block store at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("block store: {0}")]
    Db(#[from] rocksdb::Error),
    #[error(
        "block store version {0} is not supported by this build (it reads version {STORE_VERSION})"
    )]
    Version(u8),
    #[error("stored shard {0} is corrupt (its bytes do not hash to its CID)")]
    CorruptShard(Cid),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("shard {0} is not in the store")]
    ShardMissing(Cid),
}

/// What the store remembers of a pinned (locally added) DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub v: u8,
    /// The name it was added under (the file or directory name).
    pub name: String,
    pub size: u64,
    pub added_unix_s: u64,
    pub public: bool,
    /// The capability, kept so this node's repair can open the manifest and check the DAG's shards. Absent in
    /// pins written before repair existed (those are not repaired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
}

/// What a node's block store does: shards by CID, sealed manifests, pins and their shard refs, the public table,
/// and the add transaction that makes a file visible all at once. Implementations must make each write call
/// atomic (a crash in the middle of one leaves none of it visible) and must survive a reopen on the same storage.
/// The trait is object-safe so the network node and the readers can hold an `Arc<dyn BlockStore>`.
pub trait BlockStore: Send + Sync {
    /// Starts an add: records an in-flight marker, so a crash before the commit is cleaned up at the next open.
    fn begin_add(&self) -> Result<AddTxn, StoreError>;

    /// Writes shards of an add in progress. They may not be durable until the add commits.
    fn put_shards<'a>(
        &self,
        shards: &mut dyn Iterator<Item = (&'a Cid, &'a [u8])>,
    ) -> Result<(), StoreError>;

    /// Commits an add: makes its shards durable, then records manifest, pin, refs and public entry at once, and
    /// clears the add's in-flight marker in the same atomic write.
    fn commit_add(
        &self,
        txn: AddTxn,
        manifest_cid: &Cid,
        sealed_manifest: &[u8],
        shard_cids: &mut dyn Iterator<Item = Cid>,
        pin: &Pin,
        public: Option<(&Cid, &str)>,
    ) -> Result<(), StoreError>;

    /// Stores a shard this node holds for the network (already checked against its CID by the caller), marked
    /// held so garbage collection keeps it; both writes land together.
    fn put_held_shard(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError>;

    /// A shard's bytes as stored, unchecked: for a caller that checks them itself (the segment decoder does,
    /// whatever its source), so local reads hash each shard once.
    fn shard_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// A shard's bytes, checked against its CID: Ok(None) if absent, an error if corrupt.
    fn shard(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.shard_unverified(cid)? else {
            return Ok(None);
        };
        cids::verify(cid, &bytes).map_err(|_| StoreError::CorruptShard(*cid))?;
        Ok(Some(bytes))
    }

    /// Overwrites a shard's stored bytes without any check and without a ref: for tests of corruption handling.
    #[doc(hidden)]
    fn put_shard_unchecked(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError>;

    /// Deletes a shard (its refs stay): for tests of loss and for repair.
    fn delete_shard(&self, cid: &Cid) -> Result<(), StoreError>;

    /// CIDs of every shard stored here, in the order of their binary form.
    fn shard_cids(&self) -> Result<Vec<Cid>, StoreError>;

    /// Number of shards stored and their total bytes.
    fn shard_stats(&self) -> Result<(u64, u64), StoreError>;

    /// The sealed manifest stored under `cid`, as stored.
    fn manifest_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// The sealed manifest stored under `cid`, checked against it.
    fn manifest(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.manifest_unverified(cid)? else {
            return Ok(None);
        };
        cids::verify(cid, &bytes)
            .map_err(|_| StoreError::Corrupt(format!("manifest {cid} does not match its CID")))?;
        Ok(Some(bytes))
    }

    /// The capability of a public root, if one was added here.
    fn public_capability(&self, root: &Cid) -> Result<Option<String>, StoreError>;

    /// Every pin: (manifest CID, record), in the order of the manifest CIDs' binary form.
    fn pins(&self) -> Result<Vec<(Cid, Pin)>, StoreError>;

    /// Deletes shards that no pin and no held mark references; returns how many.
    fn collect_garbage(&self) -> Result<usize, StoreError>;

    /// Marks `shards` as held for the storage deal `deal`, in one atomic write: garbage collection keeps them
    /// while the mark stands, whatever else happens to their other refs. Fails, marking nothing, if one of
    /// them is not in the store at that moment (a collection got there first).
    fn hold_for_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<(), StoreError>;

    /// Releases what `deal` held: of `shards`, those it marks lose its mark and their plain network-held mark
    /// (the deal took over the promise the put was), and those that nothing else references (a pin, another
    /// deal) are deleted, all in one atomic write. Shards the deal does not mark are left alone, so releasing
    /// twice, or a deal that never held, changes nothing. Returns how many shards were deleted.
    fn release_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<usize, StoreError>;

    /// Unpins the DAG whose sealed manifest is `manifest`: the pin, the manifest, the pin's refs, the public
    /// entry of `public_root` if given, and the shards nothing else references, in one atomic write. None when
    /// nothing is pinned under `manifest`.
    fn unpin(
        &self,
        manifest: &Cid,
        public_root: Option<&Cid>,
    ) -> Result<Option<Unpinned>, StoreError>;

    /// Writes every shard still in memory to durable storage and waits for it (benchmarks settle a network this
    /// way, so a read is not timed against the flushes an add left behind).
    fn flush(&self) -> Result<(), StoreError>;
}

/// A shared store is a store: callers holding an `Arc` (the node, the gateway) pass `&Arc<S>` where a
/// `&dyn BlockStore` is asked for.
impl<T: BlockStore + ?Sized> BlockStore for Arc<T> {
    fn begin_add(&self) -> Result<AddTxn, StoreError> {
        (**self).begin_add()
    }
    fn put_shards<'a>(
        &self,
        shards: &mut dyn Iterator<Item = (&'a Cid, &'a [u8])>,
    ) -> Result<(), StoreError> {
        (**self).put_shards(shards)
    }
    fn commit_add(
        &self,
        txn: AddTxn,
        manifest_cid: &Cid,
        sealed_manifest: &[u8],
        shard_cids: &mut dyn Iterator<Item = Cid>,
        pin: &Pin,
        public: Option<(&Cid, &str)>,
    ) -> Result<(), StoreError> {
        (**self).commit_add(txn, manifest_cid, sealed_manifest, shard_cids, pin, public)
    }
    fn put_held_shard(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).put_held_shard(cid, bytes)
    }
    fn shard_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).shard_unverified(cid)
    }
    fn put_shard_unchecked(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).put_shard_unchecked(cid, bytes)
    }
    fn delete_shard(&self, cid: &Cid) -> Result<(), StoreError> {
        (**self).delete_shard(cid)
    }
    fn shard_cids(&self) -> Result<Vec<Cid>, StoreError> {
        (**self).shard_cids()
    }
    fn shard_stats(&self) -> Result<(u64, u64), StoreError> {
        (**self).shard_stats()
    }
    fn manifest_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).manifest_unverified(cid)
    }
    fn public_capability(&self, root: &Cid) -> Result<Option<String>, StoreError> {
        (**self).public_capability(root)
    }
    fn pins(&self) -> Result<Vec<(Cid, Pin)>, StoreError> {
        (**self).pins()
    }
    fn collect_garbage(&self) -> Result<usize, StoreError> {
        (**self).collect_garbage()
    }
    fn hold_for_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<(), StoreError> {
        (**self).hold_for_deal(deal, shards)
    }
    fn release_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<usize, StoreError> {
        (**self).release_deal(deal, shards)
    }
    fn unpin(
        &self,
        manifest: &Cid,
        public_root: Option<&Cid>,
    ) -> Result<Option<Unpinned>, StoreError> {
        (**self).unpin(manifest, public_root)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
}

/// The name callers used before the trait existed: the RocksDB store a node home holds.
pub type Store = RocksStore;

/// The RocksDB block store.
pub struct RocksStore {
    db: DB,
    /// Held by every write that reads refs to decide what to delete (collection, release, unpin) and by every
    /// write that adds a ref, so a shard gaining a ref is never deleted on the strength of a read before it.
    refs_lock: Mutex<()>,
}

/// An add in progress: its marker is removed when it commits.
pub struct AddTxn {
    marker: Vec<u8>,
}

impl RocksStore {
    /// Opens (creating if needed) the store in `dir`. Removes shards left by an add that crashed.
    pub fn open(dir: &Path) -> Result<RocksStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let mut shard_opts = Options::default();
        shard_opts.set_compression_type(DBCompressionType::None);
        shard_opts.set_enable_blob_files(true);
        shard_opts.set_min_blob_size(4096);
        shard_opts.set_blob_compression_type(DBCompressionType::None);
        // Shard values sit in the memtable until a flush moves them to blob files: keep it small so an add of
        // any size stays in bounded memory.
        shard_opts.set_write_buffer_size(32 << 20);
        let cfs = FAMILIES.iter().map(|name| {
            let o = if *name == CF_SHARDS {
                shard_opts.clone()
            } else {
                Options::default()
            };
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| StoreError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let store = RocksStore {
            db,
            refs_lock: Mutex::new(()),
        };
        store.check_version()?;
        store.recover()?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Opens an existing store for reading only, beside a process that may hold it for writing (a node on the
    /// same home): it sees the store as it was when opened, and any write through it fails.
    pub fn open_read_only(dir: &Path) -> Result<RocksStore, StoreError> {
        let db = DB::open_cf_for_read_only(&Options::default(), dir, FAMILIES, false).map_err(
            |source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            },
        )?;
        let store = RocksStore {
            db,
            refs_lock: Mutex::new(()),
        };
        match store.db.get_cf(store.cf(CF_META), KEY_VERSION)? {
            Some(v) if v.as_slice() != [STORE_VERSION] => {
                Err(StoreError::Version(v.first().copied().unwrap_or(0)))
            }
            _ => Ok(store),
        }
    }

    fn check_version(&self) -> Result<(), StoreError> {
        match self.db.get_cf(self.cf(CF_META), KEY_VERSION)? {
            None => Ok(self
                .db
                .put_cf(self.cf(CF_META), KEY_VERSION, [STORE_VERSION])?),
            Some(v) if v.as_slice() == [STORE_VERSION] => Ok(()),
            Some(v) => Err(StoreError::Version(v.first().copied().unwrap_or(0))),
        }
    }

    /// After a crash mid-add: drop every shard no pin references, and the stale markers.
    fn recover(&self) -> Result<(), StoreError> {
        let markers: Vec<Box<[u8]>> = self
            .db
            .prefix_iterator_cf(self.cf(CF_META), INFLIGHT_PREFIX)
            .map(|r| r.map(|(k, _)| k))
            .take_while(|r| r.as_ref().map_or(true, |k| k.starts_with(INFLIGHT_PREFIX)))
            .collect::<Result<_, _>>()?;
        if markers.is_empty() {
            return Ok(());
        }
        self.collect_garbage()?;
        let mut batch = WriteBatch::default();
        for m in markers {
            batch.delete_cf(self.cf(CF_META), m);
        }
        self.write_synced(batch)
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    fn refs_guard(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data of its own: a panic while it was held leaves nothing half-done.
        self.refs_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every ref of `shard` (its keys in full).
    fn refs_of(&self, shard: &[u8]) -> Result<Vec<Box<[u8]>>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_REFS), shard) {
            let (k, _) = item?;
            if !k.starts_with(shard) {
                break;
            }
            out.push(k);
        }
        Ok(out)
    }

    /// Adds to `batch` the deletion of `refs` and of every shard in `shards` whose refs would all be gone
    /// with them; returns how many shards it deletes.
    fn drop_refs(
        &self,
        batch: &mut WriteBatch,
        shards: &BTreeSet<Vec<u8>>,
        refs: &BTreeSet<Vec<u8>>,
    ) -> Result<usize, StoreError> {
        for r in refs {
            batch.delete_cf(self.cf(CF_REFS), r);
        }
        let mut deleted = 0;
        for s in shards {
            let left = self.refs_of(s)?.into_iter().any(|k| !refs.contains(&k[..]));
            if !left && self.db.get_pinned_cf(self.cf(CF_SHARDS), s)?.is_some() {
                batch.delete_cf(self.cf(CF_SHARDS), s);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

impl BlockStore for RocksStore {
    fn collect_garbage(&self) -> Result<usize, StoreError> {
        let _refs = self.refs_guard();
        let mut removed = 0;
        let mut batch = WriteBatch::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SHARDS), rocksdb::IteratorMode::Start)
        {
            let (key, _) = item?;
            let referenced = self
                .db
                .prefix_iterator_cf(self.cf(CF_REFS), &key)
                .next()
                .transpose()?;
            if !referenced.is_some_and(|(k, _)| k.starts_with(&key)) {
                batch.delete_cf(self.cf(CF_SHARDS), &key);
                removed += 1;
            }
        }
        self.write_synced(batch)?;
        Ok(removed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush_cf(self.cf(CF_SHARDS))?)
    }

    fn begin_add(&self) -> Result<AddTxn, StoreError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the OS random source is available");
        let mut marker = INFLIGHT_PREFIX.to_vec();
        marker.extend_from_slice(&id);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), &marker, []);
        self.write_synced(batch)?;
        Ok(AddTxn { marker })
    }

    fn put_shards<'a>(
        &self,
        shards: &mut dyn Iterator<Item = (&'a Cid, &'a [u8])>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (cid, bytes) in shards {
            batch.put_cf(self.cf(CF_SHARDS), cid.to_bytes(), bytes);
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    fn commit_add(
        &self,
        txn: AddTxn,
        manifest_cid: &Cid,
        sealed_manifest: &[u8],
        shard_cids: &mut dyn Iterator<Item = Cid>,
        pin: &Pin,
        public: Option<(&Cid, &str)>,
    ) -> Result<(), StoreError> {
        self.db.flush_cf(self.cf(CF_SHARDS))?;
        let _refs = self.refs_guard();
        let mkey = manifest_cid.to_bytes();
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_MANIFESTS), &mkey, sealed_manifest);
        batch.put_cf(
            self.cf(CF_PINS),
            &mkey,
            serde_ipld_dagcbor::to_vec(pin).expect("a pin serialises"),
        );
        for s in shard_cids {
            let mut k = s.to_bytes();
            k.extend_from_slice(&mkey);
            batch.put_cf(self.cf(CF_REFS), k, []);
        }
        if let Some((root, cap)) = public {
            batch.put_cf(self.cf(CF_PUBLIC), root.to_bytes(), cap.as_bytes());
        }
        batch.delete_cf(self.cf(CF_META), &txn.marker);
        self.write_synced(batch)
    }

    fn put_held_shard(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let key = cid.to_bytes();
        let mut held = key.clone();
        held.extend_from_slice(HELD_REF);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_SHARDS), &key, bytes);
        batch.put_cf(self.cf(CF_REFS), held, []);
        let _refs = self.refs_guard();
        Ok(self.db.write(batch)?)
    }

    fn hold_for_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for s in shards {
            batch.put_cf(self.cf(CF_REFS), deal_ref(s, deal), []);
        }
        let _refs = self.refs_guard();
        for s in shards {
            if self
                .db
                .get_pinned_cf(self.cf(CF_SHARDS), s.to_bytes())?
                .is_none()
            {
                return Err(StoreError::ShardMissing(*s));
            }
        }
        self.write_synced(batch)
    }

    fn release_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<usize, StoreError> {
        let _refs = self.refs_guard();
        let (mut keys, mut refs) = (BTreeSet::new(), BTreeSet::new());
        for s in shards {
            let mark = deal_ref(s, deal);
            if self.db.get_pinned_cf(self.cf(CF_REFS), &mark)?.is_some() {
                keys.insert(s.to_bytes());
                refs.insert(mark);
                refs.insert(held_ref(s));
            }
        }
        let mut batch = WriteBatch::default();
        let deleted = self.drop_refs(&mut batch, &keys, &refs)?;
        self.write_synced(batch)?;
        Ok(deleted)
    }

    fn unpin(
        &self,
        manifest: &Cid,
        public_root: Option<&Cid>,
    ) -> Result<Option<Unpinned>, StoreError> {
        let _refs = self.refs_guard();
        let mkey = manifest.to_bytes();
        let Some(pin) = self.db.get_cf(self.cf(CF_PINS), &mkey)? else {
            return Ok(None);
        };
        let pin: Pin = serde_ipld_dagcbor::from_slice(&pin)
            .map_err(|e| StoreError::Corrupt(format!("pin {manifest}: {e}")))?;
        // A pin's refs are keyed by shard first: find them by their manifest suffix (one pass over the refs).
        let (mut shards, mut refs) = (BTreeSet::new(), BTreeSet::new());
        for item in self
            .db
            .iterator_cf(self.cf(CF_REFS), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            if k.len() > mkey.len() && k.ends_with(&mkey) {
                let shard = k[..k.len() - mkey.len()].to_vec();
                if Cid::try_from(&shard[..]).is_ok() {
                    shards.insert(shard);
                    refs.insert(k.to_vec());
                }
            }
        }
        let mut batch = WriteBatch::default();
        let deleted = self.drop_refs(&mut batch, &shards, &refs)?;
        batch.delete_cf(self.cf(CF_PINS), &mkey);
        batch.delete_cf(self.cf(CF_MANIFESTS), &mkey);
        if let Some(root) = public_root {
            batch.delete_cf(self.cf(CF_PUBLIC), root.to_bytes());
        }
        self.write_synced(batch)?;
        Ok(Some(Unpinned {
            pin,
            shards: shards.len(),
            deleted,
        }))
    }

    fn shard_cids(&self) -> Result<Vec<Cid>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SHARDS), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            out.push(
                Cid::try_from(&k[..])
                    .map_err(|e| StoreError::Corrupt(format!("shard key: {e}")))?,
            );
        }
        Ok(out)
    }

    fn shard_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_SHARDS), cid.to_bytes())?)
    }

    fn put_shard_unchecked(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(self.db.put_cf(self.cf(CF_SHARDS), cid.to_bytes(), bytes)?)
    }

    fn delete_shard(&self, cid: &Cid) -> Result<(), StoreError> {
        Ok(self.db.delete_cf(self.cf(CF_SHARDS), cid.to_bytes())?)
    }

    fn manifest_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_MANIFESTS), cid.to_bytes())?)
    }

    fn public_capability(&self, root: &Cid) -> Result<Option<String>, StoreError> {
        match self.db.get_cf(self.cf(CF_PUBLIC), root.to_bytes())? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("public entry of {root} is not text"))),
        }
    }

    fn pins(&self) -> Result<Vec<(Cid, Pin)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PINS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let cid =
                Cid::try_from(&k[..]).map_err(|e| StoreError::Corrupt(format!("pin key: {e}")))?;
            let pin = serde_ipld_dagcbor::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("pin {cid}: {e}")))?;
            out.push((cid, pin));
        }
        Ok(out)
    }

    fn shard_stats(&self) -> Result<(u64, u64), StoreError> {
        let (mut n, mut bytes) = (0, 0);
        for item in self
            .db
            .iterator_cf(self.cf(CF_SHARDS), rocksdb::IteratorMode::Start)
        {
            let (_, v) = item?;
            n += 1;
            bytes += v.len() as u64;
        }
        Ok((n, bytes))
    }
}

/// The in-memory block store: the same semantics as [`RocksStore`], over maps behind one lock. Every write call
/// takes the lock once, so each is atomic as a RocksDB batch is. Clones share the maps, and [`MemStore::reopen`]
/// gives a new handle on them that runs the same crash recovery as opening a RocksDB home again, so tests can
/// model a restart on the same disk.
#[derive(Clone, Default)]
pub struct MemStore {
    state: Arc<Mutex<MemState>>,
}

/// The maps of a [`MemStore`], keyed by the same bytes as the RocksDB column families so iteration orders match.
#[derive(Default)]
struct MemState {
    shards: BTreeMap<Vec<u8>, Vec<u8>>,
    manifests: BTreeMap<Vec<u8>, Vec<u8>>,
    pins: BTreeMap<Vec<u8>, Pin>,
    /// Shard CID bytes ++ manifest CID bytes (or the held suffix), as in the `refs` column family.
    refs: BTreeSet<Vec<u8>>,
    public: BTreeMap<Vec<u8>, String>,
    /// In-flight add markers.
    inflight: BTreeSet<Vec<u8>>,
    /// Numbers the add markers: deterministic, unlike the RocksDB store's random ones, which only need to be
    /// distinct across restarts.
    next_marker: u64,
}

impl MemState {
    /// Removes `refs`, and every shard of `shards` that has no ref left; returns how many shards went.
    fn drop_refs(&mut self, shards: &BTreeSet<Vec<u8>>, refs: &BTreeSet<Vec<u8>>) -> usize {
        for r in refs {
            self.refs.remove(r);
        }
        let mut deleted = 0;
        for s in shards {
            let referenced = self
                .refs
                .range(s.clone()..)
                .next()
                .is_some_and(|r| r.starts_with(s));
            if !referenced && self.shards.remove(s).is_some() {
                deleted += 1;
            }
        }
        deleted
    }

    fn collect_garbage(&mut self) -> usize {
        let refs = &self.refs;
        let before = self.shards.len();
        self.shards.retain(|key, _| {
            refs.range(key.clone()..)
                .next()
                .is_some_and(|r| r.starts_with(key))
        });
        before - self.shards.len()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Another handle on the same maps, opened as a restart would open the same disk: if an add was in flight,
    /// unreferenced shards are dropped and the markers cleared.
    pub fn reopen(&self) -> MemStore {
        let store = MemStore {
            state: self.state.clone(),
        };
        let mut st = store.lock();
        if !st.inflight.is_empty() {
            st.collect_garbage();
            st.inflight.clear();
        }
        drop(st);
        store
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while the lock was held cannot leave the maps half-written (each write call mutates them only
        // after its fallible steps), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockStore for MemStore {
    fn begin_add(&self) -> Result<AddTxn, StoreError> {
        let mut st = self.lock();
        let mut marker = INFLIGHT_PREFIX.to_vec();
        marker.extend_from_slice(&st.next_marker.to_be_bytes());
        st.next_marker += 1;
        st.inflight.insert(marker.clone());
        Ok(AddTxn { marker })
    }

    fn put_shards<'a>(
        &self,
        shards: &mut dyn Iterator<Item = (&'a Cid, &'a [u8])>,
    ) -> Result<(), StoreError> {
        let batch: Vec<(Vec<u8>, Vec<u8>)> =
            shards.map(|(c, b)| (c.to_bytes(), b.to_vec())).collect();
        self.lock().shards.extend(batch);
        Ok(())
    }

    fn commit_add(
        &self,
        txn: AddTxn,
        manifest_cid: &Cid,
        sealed_manifest: &[u8],
        shard_cids: &mut dyn Iterator<Item = Cid>,
        pin: &Pin,
        public: Option<(&Cid, &str)>,
    ) -> Result<(), StoreError> {
        let mkey = manifest_cid.to_bytes();
        let refs: Vec<Vec<u8>> = shard_cids
            .map(|s| {
                let mut k = s.to_bytes();
                k.extend_from_slice(&mkey);
                k
            })
            .collect();
        let mut st = self.lock();
        st.manifests.insert(mkey.clone(), sealed_manifest.to_vec());
        st.pins.insert(mkey, pin.clone());
        st.refs.extend(refs);
        if let Some((root, cap)) = public {
            st.public.insert(root.to_bytes(), cap.to_string());
        }
        st.inflight.remove(&txn.marker);
        Ok(())
    }

    fn put_held_shard(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let key = cid.to_bytes();
        let mut held = key.clone();
        held.extend_from_slice(HELD_REF);
        let mut st = self.lock();
        st.shards.insert(key, bytes.to_vec());
        st.refs.insert(held);
        Ok(())
    }

    fn shard_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().shards.get(&cid.to_bytes()).cloned())
    }

    fn put_shard_unchecked(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        self.lock().shards.insert(cid.to_bytes(), bytes.to_vec());
        Ok(())
    }

    fn delete_shard(&self, cid: &Cid) -> Result<(), StoreError> {
        self.lock().shards.remove(&cid.to_bytes());
        Ok(())
    }

    fn shard_cids(&self) -> Result<Vec<Cid>, StoreError> {
        self.lock()
            .shards
            .keys()
            .map(|k| {
                Cid::try_from(&k[..]).map_err(|e| StoreError::Corrupt(format!("shard key: {e}")))
            })
            .collect()
    }

    fn shard_stats(&self) -> Result<(u64, u64), StoreError> {
        let st = self.lock();
        let bytes = st.shards.values().map(|v| v.len() as u64).sum();
        Ok((st.shards.len() as u64, bytes))
    }

    fn manifest_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().manifests.get(&cid.to_bytes()).cloned())
    }

    fn public_capability(&self, root: &Cid) -> Result<Option<String>, StoreError> {
        Ok(self.lock().public.get(&root.to_bytes()).cloned())
    }

    fn pins(&self) -> Result<Vec<(Cid, Pin)>, StoreError> {
        self.lock()
            .pins
            .iter()
            .map(|(k, p)| {
                let cid = Cid::try_from(&k[..])
                    .map_err(|e| StoreError::Corrupt(format!("pin key: {e}")))?;
                Ok((cid, p.clone()))
            })
            .collect()
    }

    fn collect_garbage(&self) -> Result<usize, StoreError> {
        Ok(self.lock().collect_garbage())
    }

    fn hold_for_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<(), StoreError> {
        let refs: Vec<Vec<u8>> = shards.iter().map(|s| deal_ref(s, deal)).collect();
        let mut st = self.lock();
        if let Some(s) = shards
            .iter()
            .find(|s| !st.shards.contains_key(&s.to_bytes()))
        {
            return Err(StoreError::ShardMissing(*s));
        }
        st.refs.extend(refs);
        Ok(())
    }

    fn release_deal(&self, deal: &[u8; 32], shards: &[Cid]) -> Result<usize, StoreError> {
        let mut st = self.lock();
        let (mut keys, mut refs) = (BTreeSet::new(), BTreeSet::new());
        for s in shards {
            let mark = deal_ref(s, deal);
            if st.refs.contains(&mark) {
                keys.insert(s.to_bytes());
                refs.insert(mark);
                refs.insert(held_ref(s));
            }
        }
        Ok(st.drop_refs(&keys, &refs))
    }

    fn unpin(
        &self,
        manifest: &Cid,
        public_root: Option<&Cid>,
    ) -> Result<Option<Unpinned>, StoreError> {
        let mkey = manifest.to_bytes();
        let mut st = self.lock();
        let Some(pin) = st.pins.remove(&mkey) else {
            return Ok(None);
        };
        let (mut shards, mut refs) = (BTreeSet::new(), BTreeSet::new());
        for k in &st.refs {
            if k.len() > mkey.len() && k.ends_with(&mkey) {
                let shard = k[..k.len() - mkey.len()].to_vec();
                if Cid::try_from(&shard[..]).is_ok() {
                    shards.insert(shard);
                    refs.insert(k.clone());
                }
            }
        }
        let deleted = st.drop_refs(&shards, &refs);
        st.manifests.remove(&mkey);
        if let Some(root) = public_root {
            st.public.remove(&root.to_bytes());
        }
        Ok(Some(Unpinned {
            pin,
            shards: shards.len(),
            deleted,
        }))
    }

    fn flush(&self) -> Result<(), StoreError> {
        // The maps are the whole store: nothing sits in a faster layer that a flush would move.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> Pin {
        Pin {
            v: 1,
            name: "f".into(),
            size: 1,
            added_unix_s: 0,
            public: false,
            cap: None,
        }
    }

    #[test]
    fn uncommitted_shards_are_collected_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = cids::blake3_cid(b"kept");
        let lost = cids::blake3_cid(b"lost");
        {
            let s = Store::open(dir.path()).expect("open");
            let t = s.begin_add().expect("begin");
            s.put_shards(&mut [(&kept, &b"kept"[..])].into_iter())
                .expect("put");
            let m = cids::blake3_cid(b"manifest");
            s.commit_add(t, &m, b"manifest", &mut [kept].into_iter(), &pin(), None)
                .expect("commit");
            let _crashed = s.begin_add().expect("begin");
            s.put_shards(&mut [(&lost, &b"lost"[..])].into_iter())
                .expect("put");
            s.flush().expect("flush");
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.shard(&kept).expect("read").as_deref(), Some(&b"kept"[..]));
        assert_eq!(s.shard(&lost).expect("read"), None);
        assert_eq!(s.pins().expect("pins").len(), 1);
    }

    /// A shard held for two deals and pinned once goes only when the last of the three lets go of it; a
    /// released deal's shards that nothing else needs go with the release; unpinning takes the pin, the
    /// manifest and the public entry at once. The same on both stores, and across a reopen of RocksDB.
    fn deals_and_pins_release_exactly_what_nothing_else_holds(s: &dyn BlockStore) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let shared = cids::blake3_cid(b"shared");
        let only_a = cids::blake3_cid(b"only a");
        for (c, bytes) in [(&shared, &b"shared"[..]), (&only_a, &b"only a"[..])] {
            s.put_held_shard(c, bytes).expect("put");
        }
        s.hold_for_deal(&a, &[shared, only_a]).expect("hold a");
        s.hold_for_deal(&b, &[shared]).expect("hold b");
        let t = s.begin_add().expect("begin");
        let (m, root) = (cids::blake3_cid(b"manifest"), cids::blake3_cid(b"root"));
        s.commit_add(
            t,
            &m,
            b"manifest",
            &mut [shared].into_iter(),
            &pin(),
            Some((&root, "huds:cap")),
        )
        .expect("commit");
        assert_eq!(s.collect_garbage().expect("gc"), 0);
        // A deal cannot hold a shard the store no longer has: nothing of it is marked.
        let absent = cids::blake3_cid(b"absent");
        assert!(matches!(
            s.hold_for_deal(&[3; 32], &[shared, absent]),
            Err(StoreError::ShardMissing(c)) if c == absent
        ));
        assert_eq!(
            s.release_deal(&[3; 32], &[only_a]).expect("nothing held"),
            0
        );
        assert!(s.shard(&only_a).expect("read").is_some());
        assert_eq!(s.release_deal(&a, &[shared, only_a]).expect("release"), 1);
        assert_eq!(s.shard(&only_a).expect("read"), None);
        assert_eq!(s.release_deal(&a, &[shared, only_a]).expect("again"), 0);
        assert_eq!(s.release_deal(&b, &[shared]).expect("release b"), 0);
        assert!(s.shard(&shared).expect("read").is_some(), "still pinned");
        let other = cids::blake3_cid(b"other");
        assert_eq!(s.unpin(&other, None).expect("unpin"), None);
        let gone = s
            .unpin(&m, Some(&root))
            .expect("unpin")
            .expect("was pinned");
        assert_eq!((gone.shards, gone.deleted), (1, 1));
        assert_eq!(s.shard(&shared).expect("read"), None);
        assert!(s.pins().expect("pins").is_empty());
        assert_eq!(s.manifest(&m).expect("manifest"), None);
        assert_eq!(s.public_capability(&root).expect("public"), None);
        assert_eq!(s.shard_stats().expect("stats"), (0, 0));
    }

    #[test]
    fn deals_and_pins_release_exactly_what_nothing_else_holds_in_both_stores() {
        deals_and_pins_release_exactly_what_nothing_else_holds(&MemStore::new());
        let dir = tempfile::tempdir().expect("tempdir");
        deals_and_pins_release_exactly_what_nothing_else_holds(
            &Store::open(dir.path()).expect("open"),
        );
    }

    #[test]
    fn a_deal_mark_survives_a_reopen_and_outlives_collection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cids::blake3_cid(b"held");
        {
            let s = Store::open(dir.path()).expect("open");
            s.put_held_shard(&c, b"held").expect("put");
            s.hold_for_deal(&[7; 32], &[c]).expect("hold");
            // A crash mid-add runs collection at the next open.
            let _crashed = s.begin_add().expect("begin");
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert!(s.shard(&c).expect("read").is_some());
        assert_eq!(s.release_deal(&[7; 32], &[c]).expect("release"), 1);
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.shard(&c).expect("read"), None);
    }

    #[test]
    fn corrupt_shards_are_reported_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let cid = cids::blake3_cid(b"good");
        s.put_shard_unchecked(&cid, b"evil").expect("put");
        assert!(matches!(s.shard(&cid), Err(StoreError::CorruptShard(c)) if c == cid));
    }
}
