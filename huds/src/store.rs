//! The block store: one RocksDB database per node home.
//!
//! Column families:
//! - `shards`: shard CID -> shard bytes (BLAKE3-addressed, kept in blob files, never compressed: they are
//!   ciphertext).
//! - `manifests`: sealed-manifest CID -> sealed bytes.
//! - `pins`: sealed-manifest CID -> pin record (dag-cbor).
//! - `refs`: shard CID ++ manifest CID -> empty: which pins hold each shard, for garbage collection.
//! - `public`: root CID -> capability text, for files added with `--public`.
//! - `meta`: the store format version and in-flight add markers.
//!
//! Atomicity of an add: shards are written without the WAL while the add runs; the commit flushes the shards'
//! memtable to disk, then writes the manifest, pin, refs and public entry in one synced batch. A crash before the
//! commit leaves at most unreferenced shards, which the next writable open removes (its in-flight marker says a
//! crash happened). A crash after it leaves the whole file.

use std::path::Path;

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

/// The RocksDB block store.
pub struct Store {
    db: DB,
}

/// An add in progress: its marker is removed when it commits.
pub struct AddTxn {
    marker: Vec<u8>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Removes shards left by an add that crashed.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
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
        let store = Store { db };
        store.check_version()?;
        store.recover()?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
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

    /// Deletes shards that no pin references; returns how many.
    pub fn collect_garbage(&self) -> Result<usize, StoreError> {
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

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Writes every shard still in memory to disk and waits for it (benchmarks settle a network this way, so a
    /// read is not timed against the flushes an add left behind).
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush_cf(self.cf(CF_SHARDS))?)
    }

    /// Starts an add: writes the in-flight marker that recovery looks for.
    pub fn begin_add(&self) -> Result<AddTxn, StoreError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the OS random source is available");
        let mut marker = INFLIGHT_PREFIX.to_vec();
        marker.extend_from_slice(&id);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), &marker, []);
        self.write_synced(batch)?;
        Ok(AddTxn { marker })
    }

    /// Writes shards (unsynced, no WAL: made durable by the commit's flush).
    pub fn put_shards<'a>(
        &self,
        shards: impl Iterator<Item = (&'a Cid, &'a [u8])>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (cid, bytes) in shards {
            batch.put_cf(self.cf(CF_SHARDS), cid.to_bytes(), bytes);
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Commits an add: makes its shards durable, then records manifest, pin, refs and public entry at once.
    pub fn commit_add(
        &self,
        txn: AddTxn,
        manifest_cid: &Cid,
        sealed_manifest: &[u8],
        shard_cids: impl Iterator<Item = Cid>,
        pin: &Pin,
        public: Option<(&Cid, &str)>,
    ) -> Result<(), StoreError> {
        self.db.flush_cf(self.cf(CF_SHARDS))?;
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

    /// Stores a shard this node holds for the network (already checked against its CID by the caller). It is
    /// written through the WAL before the put is acknowledged, and marked held so garbage collection keeps it.
    pub fn put_held_shard(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let key = cid.to_bytes();
        let mut held = key.clone();
        held.extend_from_slice(HELD_REF);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_SHARDS), &key, bytes);
        batch.put_cf(self.cf(CF_REFS), held, []);
        Ok(self.db.write(batch)?)
    }

    /// CIDs of every shard stored here.
    pub fn shard_cids(&self) -> Result<Vec<Cid>, StoreError> {
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

    /// A shard's bytes, checked against its CID: Ok(None) if absent, an error if corrupt.
    pub fn shard(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_SHARDS), cid.to_bytes())? else {
            return Ok(None);
        };
        cids::verify(cid, &bytes).map_err(|_| StoreError::CorruptShard(*cid))?;
        Ok(Some(bytes))
    }

    /// A shard's bytes as stored, unchecked: for a caller that checks them itself (the segment decoder does,
    /// whatever its source), so local reads hash each shard once.
    pub fn shard_unverified(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_SHARDS), cid.to_bytes())?)
    }

    /// Overwrites a shard's stored bytes without any check: for tests of corruption handling.
    #[doc(hidden)]
    pub fn put_shard_unchecked(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(self.db.put_cf(self.cf(CF_SHARDS), cid.to_bytes(), bytes)?)
    }

    /// Deletes a shard: for tests of loss and for repair.
    pub fn delete_shard(&self, cid: &Cid) -> Result<(), StoreError> {
        Ok(self.db.delete_cf(self.cf(CF_SHARDS), cid.to_bytes())?)
    }

    /// The sealed manifest stored under `cid`, checked against it.
    pub fn manifest(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_MANIFESTS), cid.to_bytes())? else {
            return Ok(None);
        };
        cids::verify(cid, &bytes)
            .map_err(|_| StoreError::Corrupt(format!("manifest {cid} does not match its CID")))?;
        Ok(Some(bytes))
    }

    /// The capability of a public root, if one was added here.
    pub fn public_capability(&self, root: &Cid) -> Result<Option<String>, StoreError> {
        match self.db.get_cf(self.cf(CF_PUBLIC), root.to_bytes())? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("public entry of {root} is not text"))),
        }
    }

    /// Every pin: (manifest CID, record).
    pub fn pins(&self) -> Result<Vec<(Cid, Pin)>, StoreError> {
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

    /// Number of shards stored and their total bytes.
    pub fn shard_stats(&self) -> Result<(u64, u64), StoreError> {
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
            s.put_shards([(&kept, &b"kept"[..])].into_iter())
                .expect("put");
            let m = cids::blake3_cid(b"manifest");
            s.commit_add(t, &m, b"manifest", [kept].into_iter(), &pin(), None)
                .expect("commit");
            let _crashed = s.begin_add().expect("begin");
            s.put_shards([(&lost, &b"lost"[..])].into_iter())
                .expect("put");
            s.db.flush_cf(s.cf(CF_SHARDS)).expect("flush");
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.shard(&kept).expect("read").as_deref(), Some(&b"kept"[..]));
        assert_eq!(s.shard(&lost).expect("read"), None);
        assert_eq!(s.pins().expect("pins").len(), 1);
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
