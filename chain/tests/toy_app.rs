//! The BFT replica runs against any [`App`], not only the ledger: four replicas with real BLS signatures
//! finalise the blocks of a counter, an application of a few lines that knows nothing of accounts,
//! transactions or the beacon chain. This is what the layering of `chain` buys (specs/ARCHITECTURE.md,
//! "Layers of `chain`"): `bft` imports only the types and execution layers below it.

use chain::ShardId;
use chain::bft::{
    App, BlockError, Bls, Committee, Config, LedgerError, Message, Replica, Tip, testkit,
};
use chain::block::{Block, BlockHeader};
use chain::crypto::{Hash, hash_with};
use chain::{Address, MemStore, Store};

const CHAIN_ID: u32 = 7;
const SHARD: ShardId = ShardId(0);

/// A replicated counter: block `h` sets the counter to `h`, and its state root is the hash of the counter.
struct Counter {
    value: u64,
    tip: Hash,
    blocks: Vec<(Block, Vec<u8>)>,
    /// Where the replica keeps its write-ahead log.
    store: MemStore,
}

fn root_of(value: u64) -> Hash {
    hash_with("toy counter", &[&value.to_be_bytes()])
}

impl Counter {
    fn new() -> Self {
        Self {
            value: 0,
            tip: [0; 32],
            blocks: Vec::new(),
            store: MemStore::new(),
        }
    }
}

impl App for Counter {
    fn tip(&self) -> Tip {
        Tip {
            height: self.value,
            hash: self.tip,
        }
    }

    fn propose(&mut self) -> Block {
        Block {
            header: BlockHeader {
                chain_id: CHAIN_ID,
                shard: SHARD,
                height: self.value + 1,
                parent: self.tip,
                state_root: root_of(self.value + 1),
                // Empty, but committed to like any body: the replica keeps no block whose body is not
                // the one its header names.
                transactions_root: Block::transactions_root(&[]),
                receipts_root: [0; 32],
            },
            transactions: Vec::new(),
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
            proofs: Vec::new(),
        }
    }

    fn check(&mut self, block: &Block) -> Result<(), BlockError> {
        let h = &block.header;
        if h.height != self.value + 1 {
            return Err(BlockError::WrongHeight {
                expected: self.value + 1,
                got: h.height,
            });
        }
        if h.parent != self.tip {
            return Err(BlockError::WrongParent);
        }
        if h.state_root != root_of(h.height) {
            return Err(BlockError::StateRoot);
        }
        Ok(())
    }

    fn commit(&mut self, block: &Block, certificate: Vec<u8>) -> Result<(), LedgerError> {
        self.check(block)?;
        self.value = block.header.height;
        self.tip = block.hash();
        self.blocks.push((block.clone(), certificate));
        Ok(())
    }

    fn committed(&self, height: u64) -> Option<(Block, Vec<u8>)> {
        let index = usize::try_from(height.checked_sub(1)?).ok()?;
        self.blocks.get(index).cloned()
    }

    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn store_ref(&self) -> &dyn Store {
        &self.store
    }
}

type R = Replica<Bls, Counter>;

fn network(n: usize) -> (Committee<Bls>, Vec<R>) {
    let (committee, keys) = testkit::committee(
        n,
        "toy",
        |i| Address([u8::try_from(i).expect("small committee"); 32]),
        [3; 32],
    );
    let config = Config::new(CHAIN_ID, SHARD);
    let replicas = testkit::replicas(&config, &committee, keys, |_| Counter::new());
    (committee, replicas)
}

/// Runs until every replica but `drop_to` counted to `until`; every message to `drop_to` is lost (it
/// falls behind and must catch up later).
struct CountTo {
    until: u64,
    drop_to: Option<usize>,
}

impl testkit::Watch<Counter> for CountTo {
    fn done(&mut self, replicas: &[R]) -> bool {
        replicas
            .iter()
            .enumerate()
            .all(|(i, r)| Some(i) == self.drop_to || r.app().value >= self.until)
    }

    fn deliver(&mut self, to: usize, message: Message<Bls>) -> Vec<Message<Bls>> {
        if Some(to) == self.drop_to {
            Vec::new()
        } else {
            vec![message]
        }
    }
}

#[test]
fn the_replica_finalises_a_counter_with_no_ledger() {
    let (committee, mut replicas) = network(4);
    testkit::PerfectNetwork::default().run(
        &mut replicas,
        60_000,
        &mut CountTo {
            until: 5,
            drop_to: None,
        },
    );
    let first = &replicas[0].app().blocks;
    assert!(first.len() >= 5, "five blocks finalised: {}", first.len());
    for r in &replicas {
        let app = r.app();
        assert!(
            app.value >= 5,
            "replica {} counted to {}",
            r.me(),
            app.value
        );
        let common = app.blocks.len().min(first.len());
        for (h, ((block, cert), (first_block, _))) in
            app.blocks.iter().zip(first).take(common).enumerate()
        {
            assert_eq!(block, first_block, "replicas agree at height {}", h + 1);
            assert_eq!(block.header.height, h as u64 + 1);
            assert_eq!(block.header.state_root, root_of(h as u64 + 1));
            let qc = chain::bft::QuorumCertificate::<Bls>::decode(cert)
                .expect("the replica hands the app an encoded certificate");
            assert!(
                qc.finalises(&block.header),
                "the certificate is for this block"
            );
            qc.verify(CHAIN_ID, &committee)
                .expect("more than two thirds of the committee signed it");
        }
    }
}

#[test]
fn a_replica_that_missed_everything_catches_up_from_the_apps_committed_blocks() {
    let (_, mut replicas) = network(4);
    // Three of four carry on without the fourth (three of four weights is a quorum).
    let mut net = testkit::PerfectNetwork::default();
    net.run(
        &mut replicas,
        60_000,
        &mut CountTo {
            until: 4,
            drop_to: Some(3),
        },
    );
    assert_eq!(replicas[3].app().value, 0, "the fourth heard nothing");
    let reached = replicas[0].app().value;
    assert!(reached >= 4, "the others finalised without it: {reached}");
    // Now the fourth hears again: the others serve it their committed blocks through `App::committed`.
    let limit = net.now_ms + 120_000;
    net.run(
        &mut replicas,
        limit,
        &mut CountTo {
            until: reached + 2,
            drop_to: None,
        },
    );
    let late = replicas[3].app();
    assert!(
        late.value >= reached,
        "the late replica caught up to {reached}, it is at {}",
        late.value
    );
    for (mine, theirs) in late.blocks.iter().zip(&replicas[0].app().blocks) {
        assert_eq!(mine.0, theirs.0, "it holds the same blocks");
    }
}
