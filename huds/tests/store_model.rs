//! The block store model test: random operations (held puts, adds that commit, adds that crash, unchecked puts,
//! deletes, garbage collection, reopens) run against each `BlockStore` implementation and against a model built
//! from `BTreeMap`s, and every read is checked against the model after every step. The same test drives the
//! RocksDB store (dropped and reopened on the same directory) and the in-memory store (reopened on the same
//! shared maps, as a restart on the same disk would be), so both keep the semantics the trait promises.

use std::collections::{BTreeMap, BTreeSet};

use cid::Cid;
use huds::cids::blake3_cid;
use huds::store::{BlockStore, MemStore, Pin, RocksStore, StoreError};
use proptest::prelude::*;

/// The shard pool: a small set so that operations collide on the same CIDs.
const SHARDS: u8 = 12;

#[derive(Debug, Clone)]
enum Op {
    /// A shard held for the network.
    Held(u8),
    /// An add of these shards that commits, with its manifest number and whether it is public.
    Add(Vec<u8>, u8, bool),
    /// An add whose shards are written but which never commits (the node crashes before the commit).
    CrashedAdd(Vec<u8>),
    /// A shard's bytes overwritten with garbage, without a ref.
    Corrupt(u8),
    Delete(u8),
    CollectGarbage,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let shards = proptest::collection::vec(0..SHARDS, 0..5);
    prop_oneof![
        3 => (0..SHARDS).prop_map(Op::Held),
        3 => (shards.clone(), 0u8..6, any::<bool>()).prop_map(|(s, m, p)| Op::Add(s, m, p)),
        1 => shards.prop_map(Op::CrashedAdd),
        1 => (0..SHARDS).prop_map(Op::Corrupt),
        2 => (0..SHARDS).prop_map(Op::Delete),
        1 => Just(Op::CollectGarbage),
        2 => Just(Op::Reopen),
    ]
}

fn shard_bytes(i: u8) -> Vec<u8> {
    // Sizes differ so the byte totals of `shard_stats` are checked, not only the counts.
    vec![i; 1 + usize::from(i) * 7]
}

fn shard_cid(i: u8) -> Cid {
    blake3_cid(&shard_bytes(i))
}

fn manifest_bytes(m: u8) -> Vec<u8> {
    format!("sealed manifest {m}").into_bytes()
}

fn pin(m: u8, public: bool) -> Pin {
    Pin {
        v: 1,
        name: format!("file {m}"),
        size: u64::from(m),
        added_unix_s: 0,
        public,
        cap: Some(format!("cap {m}")),
    }
}

/// What the store must hold, keyed by CID bytes as both stores order them.
#[derive(Default)]
struct Model {
    /// Shard CID bytes -> (CID, stored bytes, whether the bytes match the CID).
    shards: BTreeMap<Vec<u8>, (Cid, Vec<u8>, bool)>,
    /// Shards some pin or held mark references.
    referenced: BTreeSet<Vec<u8>>,
    manifests: BTreeMap<Vec<u8>, (Cid, Vec<u8>)>,
    pins: BTreeMap<Vec<u8>, (Cid, Pin)>,
    public: BTreeMap<Vec<u8>, String>,
    /// Whether an add crashed since the last open, so the next open collects garbage.
    crashed: bool,
}

impl Model {
    fn collect_garbage(&mut self) -> usize {
        let before = self.shards.len();
        let referenced = &self.referenced;
        self.shards.retain(|k, _| referenced.contains(k));
        before - self.shards.len()
    }
}

/// A store under test and how to reopen it as a restart would.
trait Subject {
    fn store(&self) -> &dyn BlockStore;
    fn reopen(&mut self);
}

struct Rocks {
    dir: tempfile::TempDir,
    store: Option<RocksStore>,
}

impl Subject for Rocks {
    fn store(&self) -> &dyn BlockStore {
        self.store
            .as_ref()
            .expect("the store is open between steps")
    }
    fn reopen(&mut self) {
        // Drop first: RocksDB holds a lock on its directory while open.
        self.store = None;
        self.store = Some(RocksStore::open(self.dir.path()).expect("reopen"));
    }
}

struct Mem(MemStore);

impl Subject for Mem {
    fn store(&self) -> &dyn BlockStore {
        &self.0
    }
    fn reopen(&mut self) {
        self.0 = self.0.reopen();
    }
}

fn apply(subject: &mut dyn Subject, model: &mut Model, op: &Op) {
    match op {
        Op::Held(i) => {
            let cid = shard_cid(*i);
            subject
                .store()
                .put_held_shard(&cid, &shard_bytes(*i))
                .expect("held put");
            model
                .shards
                .insert(cid.to_bytes(), (cid, shard_bytes(*i), true));
            model.referenced.insert(cid.to_bytes());
        }
        Op::Add(shards, m, public) => {
            let store = subject.store();
            let txn = store.begin_add().expect("begin");
            let items: Vec<(Cid, Vec<u8>)> = shards
                .iter()
                .map(|i| (shard_cid(*i), shard_bytes(*i)))
                .collect();
            store
                .put_shards(&mut items.iter().map(|(c, b)| (c, &b[..])))
                .expect("put shards");
            let sealed = manifest_bytes(*m);
            let mcid = blake3_cid(&sealed);
            let root = blake3_cid(&[*m, 0xff]);
            let cap = format!("cap {m}");
            let p = pin(*m, *public);
            store
                .commit_add(
                    txn,
                    &mcid,
                    &sealed,
                    &mut items.iter().map(|(c, _)| *c),
                    &p,
                    public.then_some((&root, cap.as_str())),
                )
                .expect("commit");
            for (c, b) in items {
                model.referenced.insert(c.to_bytes());
                model.shards.insert(c.to_bytes(), (c, b, true));
            }
            model
                .manifests
                .insert(mcid.to_bytes(), (mcid, sealed.clone()));
            model.pins.insert(mcid.to_bytes(), (mcid, p));
            if *public {
                model.public.insert(root.to_bytes(), cap);
            }
        }
        Op::CrashedAdd(shards) => {
            let store = subject.store();
            // The transaction is dropped without a commit, as a crash would leave it.
            let _txn = store.begin_add().expect("begin");
            let items: Vec<(Cid, Vec<u8>)> = shards
                .iter()
                .map(|i| (shard_cid(*i), shard_bytes(*i)))
                .collect();
            store
                .put_shards(&mut items.iter().map(|(c, b)| (c, &b[..])))
                .expect("put shards");
            // Flushed, so the uncommitted shards really reach the disk and recovery has work to do.
            store.flush().expect("flush");
            for (c, b) in items {
                model.shards.insert(c.to_bytes(), (c, b, true));
            }
            model.crashed = true;
        }
        Op::Corrupt(i) => {
            let cid = shard_cid(*i);
            subject
                .store()
                .put_shard_unchecked(&cid, b"not the shard")
                .expect("unchecked put");
            model
                .shards
                .insert(cid.to_bytes(), (cid, b"not the shard".to_vec(), false));
        }
        Op::Delete(i) => {
            let cid = shard_cid(*i);
            subject.store().delete_shard(&cid).expect("delete");
            model.shards.remove(&cid.to_bytes());
        }
        Op::CollectGarbage => {
            let removed = subject.store().collect_garbage().expect("gc");
            assert_eq!(removed, model.collect_garbage(), "garbage collected");
        }
        Op::Reopen => {
            subject.reopen();
            if model.crashed {
                model.collect_garbage();
                model.crashed = false;
            }
        }
    }
}

fn check(store: &dyn BlockStore, model: &Model) {
    for i in 0..SHARDS {
        let cid = shard_cid(i);
        let want = model.shards.get(&cid.to_bytes());
        assert_eq!(
            store.shard_unverified(&cid).expect("unverified read"),
            want.map(|(_, b, _)| b.clone()),
            "raw bytes of shard {i}"
        );
        match (store.shard(&cid), want) {
            (Ok(None), None) => {}
            (Ok(Some(b)), Some((_, w, true))) => assert_eq!(&b, w, "shard {i}"),
            (Err(StoreError::CorruptShard(c)), Some((_, _, false))) => assert_eq!(c, cid),
            (got, want) => panic!("shard {i}: store says {got:?}, model says {want:?}"),
        }
    }
    let cids: Vec<Cid> = model.shards.values().map(|(c, _, _)| *c).collect();
    assert_eq!(store.shard_cids().expect("list"), cids, "shard list");
    let bytes: u64 = model.shards.values().map(|(_, b, _)| b.len() as u64).sum();
    assert_eq!(
        store.shard_stats().expect("stats"),
        (model.shards.len() as u64, bytes),
        "shard stats"
    );
    for m in 0..6u8 {
        let mcid = blake3_cid(&manifest_bytes(m));
        assert_eq!(
            store.manifest(&mcid).expect("manifest"),
            model
                .manifests
                .get(&mcid.to_bytes())
                .map(|(_, b)| b.clone()),
            "manifest {m}"
        );
        let root = blake3_cid(&[m, 0xff]);
        assert_eq!(
            store.public_capability(&root).expect("public"),
            model.public.get(&root.to_bytes()).cloned(),
            "public entry {m}"
        );
    }
    let pins: Vec<(Cid, Pin)> = model.pins.values().cloned().collect();
    assert_eq!(store.pins().expect("pins"), pins, "pins");
}

fn run(subject: &mut dyn Subject, ops: &[Op]) {
    let mut model = Model::default();
    check(subject.store(), &model);
    for op in ops {
        apply(subject, &mut model, op);
        check(subject.store(), &model);
    }
    // A last reopen: whatever the sequence ended with must survive a restart.
    apply(subject, &mut model, &Op::Reopen);
    check(subject.store(), &model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rocks_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        run(&mut Rocks { dir, store: Some(store) }, &ops);
    }

    #[test]
    fn mem_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&mut Mem(MemStore::new()), &ops);
    }
}
