//! The key-value store that state and consensus persist into.
//!
//! The consensus core writes through this trait only; the node implements it over RocksDB, tests and the
//! simulator use [`MemStore`]. A [`WriteBatch`] is applied atomically: after a crash, either all of it or
//! none of it is visible.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored record under {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Puts (`Some`) and deletes (`None`), applied in order, atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }
}

/// Key-value pairs in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub trait Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn write(&mut self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError>;
}

/// An in-memory store. Cloning it is how the simulator keeps a crashed replica's "disk".
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        for (k, v) in batch.ops {
            match v {
                Some(v) => self.map.insert(k, v),
                None => self.map.remove(&k),
            };
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(self
            .map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The store behaves as a `BTreeMap` under any sequence of batches.
        #[test]
        fn mem_store_matches_a_model(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..8, proptest::option::of(any::<u8>())), 0..6), 0..20),
            prefix in 0u8..8,
        ) {
            let mut store = MemStore::new();
            let mut model = BTreeMap::new();
            for ops in batches {
                let mut batch = WriteBatch::default();
                for (k, v) in ops {
                    let key = vec![k / 2, k];
                    match v {
                        Some(v) => { batch.put(key.clone(), vec![v]); model.insert(key, vec![v]); }
                        None => { batch.delete(key.clone()); model.remove(&key); }
                    }
                }
                store.write(batch).expect("in-memory writes cannot fail");
            }
            for (k, v) in &model {
                prop_assert_eq!(store.get(k).expect("in-memory reads cannot fail"), Some(v.clone()));
            }
            let scanned = store.scan_prefix(&[prefix]).expect("in-memory reads cannot fail");
            let expected: Vec<_> =
                model.into_iter().filter(|(k, _)| k[0] == prefix).collect();
            prop_assert_eq!(scanned, expected);
        }
    }
}
