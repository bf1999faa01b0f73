//! [`chain::Store`] over RocksDB: the persistent "disk" of one validator.
//!
//! Each validator has its own database (`<validator home>/chain`), with everything in one column family
//! `chain` so that a [`chain::WriteBatch`] maps onto one RocksDB `WriteBatch` and lands atomically. Writes
//! are synced (`fsync` before the write returns) by default: the consensus log must be on disk before a vote
//! leaves the node (`specs/consensus.md` §2.6), and a commit must survive a power cut once acknowledged.
//!
//! The key layout is the chain crate's own (`chain/tip`, `chain/block/<height>`, `chain/cert/<height>`,
//! `state/acct/<address>`, `state/fee_pool`, `bft/wal`); a `meta/version` key guards the format.

use std::path::Path;

use chain::store::Pairs;
use chain::{Store, StoreError, WriteBatch};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteOptions};

const CF_CHAIN: &str = "chain";
const KEY_VERSION: &[u8] = b"meta/version";
/// 2: shard blocks carry Atomix inbounds, beacon blocks evidence, the beacon state its recorded faults.
/// 3 since accounts sit at their namespaced tree key (every state root changed). 4 since shard blocks carry
/// storage proofs and the state period seeds and proof records.
const STORE_VERSION: u8 = 4;

/// Why a chain database cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("chain database at {path}: {source}")]
    Db {
        path: String,
        source: rocksdb::Error,
    },
    #[error(
        "chain database at {path} has format version {found}; this build reads version {STORE_VERSION}"
    )]
    Version { path: String, found: u8 },
}

/// A validator's chain database.
pub struct RocksStore {
    db: DB,
    sync: bool,
}

fn backend(e: rocksdb::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RocksStore {
    /// Opens (creating if needed) the chain database in `dir`, with synced writes.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let path = dir.display().to_string();
        let db_err = |source| OpenError::Db {
            path: path.clone(),
            source,
        };
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Keep the footprint small: a devnet runs a dozen of these in one process.
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        let cf = ColumnFamilyDescriptor::new(CF_CHAIN, Options::default());
        let db = DB::open_cf_descriptors(&opts, dir, [cf]).map_err(db_err)?;
        let store = Self { db, sync: true };
        let cf = store.cf();
        match store.db.get_cf(cf, KEY_VERSION).map_err(db_err)? {
            Some(v) if v.as_slice() == [STORE_VERSION] => {}
            Some(v) => {
                return Err(OpenError::Version {
                    path,
                    found: v.first().copied().unwrap_or(0),
                });
            }
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                store
                    .db
                    .put_cf_opt(cf, KEY_VERSION, [STORE_VERSION], &wo)
                    .map_err(db_err)?;
            }
        }
        Ok(store)
    }

    /// Unsynced writes: a crash may lose the last writes (never tear one). Only for benchmarks, where the
    /// machine's fsync latency would otherwise be what is measured.
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(CF_CHAIN)
            .expect("the chain column family is created on open")
    }
}

impl Store for RocksStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(), key).map_err(backend)
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        let cf = self.cf();
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => wb.put_cf(cf, k, v),
                None => wb.delete_cf(cf, k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(wb, &wo).map_err(backend)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(self.cf(), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain::MemStore;
    use chain::ShardId;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Batch(Vec<(u8, Option<u8>)>),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec((0u8..16, proptest::option::of(any::<u8>())), 0..8)
                .prop_map(Op::Batch),
            1 => Just(Op::Reopen),
        ]
    }

    fn key(k: u8) -> Vec<u8> {
        // Keys share prefixes of different lengths so that scans cross boundaries.
        vec![k / 4, k % 4, k]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// RocksStore behaves as MemStore under any sequence of batches, reopened in between; gets and
        /// prefix scans (of every length) agree after every step.
        #[test]
        fn rocks_store_matches_mem_store(ops in proptest::collection::vec(op(), 1..24)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut rocks = RocksStore::open(dir.path()).expect("opens");
            rocks.set_sync(false);
            let mut model = MemStore::new();
            for op in ops {
                match op {
                    Op::Batch(ops) => {
                        let mut batch = WriteBatch::default();
                        for (k, v) in ops {
                            match v {
                                Some(v) => batch.put(key(k), vec![v; usize::from(v % 5)]),
                                None => batch.delete(key(k)),
                            }
                        }
                        rocks.write(batch.clone()).expect("rocks write");
                        model.write(batch).expect("model write");
                    }
                    Op::Reopen => {
                        drop(rocks);
                        rocks = RocksStore::open(dir.path()).expect("reopens");
                        rocks.set_sync(false);
                    }
                }
                for k in 0..16 {
                    prop_assert_eq!(rocks.get(&key(k)).expect("get"), model.get(&key(k)).expect("get"));
                }
                for prefix in [vec![], vec![1u8], vec![2, 3], key(5)] {
                    let got: Pairs = rocks
                        .scan_prefix(&prefix)
                        .expect("scan")
                        .into_iter()
                        .filter(|(k, _)| k.as_slice() != KEY_VERSION)
                        .collect();
                    prop_assert_eq!(got, model.scan_prefix(&prefix).expect("scan"));
                }
            }
        }
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = RocksStore::open(dir.path()).expect("opens");
            let mut batch = WriteBatch::default();
            batch.put(KEY_VERSION, vec![9]);
            store.write(batch).expect("writes");
        }
        match RocksStore::open(dir.path()) {
            Err(OpenError::Version { found: 9, .. }) => {}
            Err(e) => panic!("expected a version error, got {e}"),
            Ok(_) => panic!("expected a version error, the store opened"),
        }
    }

    #[test]
    fn a_shard_ledger_resumes_on_rocksdb() {
        use chain::genesis::GenesisConfig;
        use chain::ledger::{App, ShardApp};
        use chain::{Amount, Transaction, TxKind};
        let genesis = GenesisConfig::devnet(1, 0, Amount(0), Amount::from_iost(10).expect("small"))
            .build()
            .expect("genesis");
        let dir = tempfile::tempdir().expect("tempdir");
        let wallet = chain::crypto::SecretKey::dev("devnet/wallet");
        let to = chain::Address::of(&chain::crypto::SecretKey::dev("bob").public());
        let (tip, root) = {
            let store = RocksStore::open(dir.path()).expect("opens");
            let mut app = ShardApp::open(&genesis, ShardId(0), store).expect("genesis");
            let tx = Transaction {
                chain_id: genesis.params.chain_id,
                sender: wallet.public(),
                nonce: 0,
                fee: Amount(1_000),
                expiry_height: 10,
                kind: TxKind::Transfer {
                    to,
                    amount: Amount(5),
                },
            }
            .sign(&wallet);
            app.submit(tx).expect("admitted");
            let block = app.propose();
            assert_eq!(block.transactions.len(), 1);
            app.commit(&block, vec![7]).expect("commits");
            (app.tip(), app.state().clone().root())
        };
        let store = RocksStore::open(dir.path()).expect("reopens");
        let app = ShardApp::open(&genesis, ShardId(0), store).expect("resumes");
        assert_eq!(app.tip(), tip);
        assert_eq!(app.state().clone().root(), root);
        assert_eq!(app.state().account(&to).map(|a| a.balance), Some(Amount(5)));
        assert_eq!(app.committed(1).map(|(_, c)| c), Some(vec![7]));
    }
}
