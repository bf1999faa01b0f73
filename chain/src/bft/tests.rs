//! The replica on a perfect network, with real BLS signatures. The deterministic simulator in
//! `chain/tests/simulator.rs` covers faults.

use super::*;
use crate::address::Address;
use crate::amount::Amount;
use crate::crypto::{SecretKey, bls};
use crate::genesis::{Genesis, GenesisConfig};
use crate::ids::{MemberIndex, ShardId};
use crate::ledger::ShardApp;
use crate::store::MemStore;
use crate::tx::{Transaction, TxKind};

type R = Replica<Bls, ShardApp<MemStore>>;

fn network(n: usize) -> (Genesis, Vec<R>) {
    let genesis = GenesisConfig::devnet(
        1,
        n,
        Amount::from_iost(1_000).expect("small"),
        Amount::from_iost(100).expect("small"),
    )
    .build()
    .expect("valid genesis");
    // The genesis's validators: the same dev keys, so the ledger's committee is this one.
    let (committee, keys) = testkit::committee(
        n,
        "validator",
        |i| Address::of(&SecretKey::dev(&format!("validator/{i}")).public()),
        [7; 32],
    );
    let config = Config::new(genesis.params.chain_id, ShardId(0));
    let replicas = testkit::replicas(&config, &committee, keys, |_| {
        ShardApp::open(&genesis, ShardId(0), MemStore::new()).expect("genesis")
    });
    (genesis, replicas)
}

/// Runs until every replica committed `until_height` blocks; each replica's (height, block hash) commits.
/// With `tamper`, every proposal reaches each replica first as a copy whose body `tamper` changed (header
/// and signature untouched), then as itself.
struct Commits<'a> {
    until_height: u64,
    committed: Vec<Vec<(u64, Hash)>>,
    tamper: Option<&'a dyn Fn(&mut Block)>,
}

impl testkit::Watch<ShardApp<MemStore>> for Commits<'_> {
    fn done(&mut self, _: &[R]) -> bool {
        self.committed
            .iter()
            .all(|c| c.len() as u64 >= self.until_height)
    }

    fn committed(&mut self, replica: usize, height: u64, block: &Block) {
        self.committed[replica].push((height, block.hash()));
    }

    fn deliver(&mut self, _to: usize, message: Message<Bls>) -> Vec<Message<Bls>> {
        match (self.tamper, &message) {
            (Some(tamper), Message::Proposal(p)) => {
                let mut forged = p.clone();
                let mut block = (*forged.block).clone();
                tamper(&mut block);
                forged.block = Arc::new(block);
                vec![Message::Proposal(forged), message]
            }
            _ => vec![message],
        }
    }
}

fn run(replicas: &mut [R], until_height: u64, time_limit_ms: u64) -> Vec<Vec<(u64, Hash)>> {
    run_with(replicas, until_height, time_limit_ms, None)
}

fn run_with(
    replicas: &mut [R],
    until_height: u64,
    time_limit_ms: u64,
    tamper: Option<&dyn Fn(&mut Block)>,
) -> Vec<Vec<(u64, Hash)>> {
    let mut watch = Commits {
        until_height,
        committed: vec![Vec::new(); replicas.len()],
        tamper,
    };
    testkit::PerfectNetwork::default().run(replicas, time_limit_ms, &mut watch);
    watch.committed
}

#[test]
fn four_validators_finalise_blocks_with_bls_certificates() {
    let (genesis, mut replicas) = network(4);
    let wallet = SecretKey::dev("devnet/wallet");
    let to = Address::of(&SecretKey::dev("bob").public());
    for nonce in 0..5 {
        let tx = Transaction {
            chain_id: genesis.params.chain_id,
            sender: wallet.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 100,
            kind: TxKind::Transfer {
                to,
                amount: Amount(1),
            },
        }
        .sign(&wallet);
        for r in replicas.iter_mut() {
            r.app_mut().submit(tx.clone()).expect("admitted");
        }
    }
    let committed = run(&mut replicas, 3, 60_000);
    for c in &committed {
        assert!(
            c.len() >= 3,
            "every replica finalised 3 blocks: {committed:?}"
        );
        assert_eq!(c[..3], committed[0][..3], "replicas agree");
    }
    let bob = replicas[0].app().state().account(&to).map(|a| a.balance);
    assert_eq!(bob, Some(Amount(5)), "the five transfers are final");
    // Every stored certificate verifies against the committee.
    for h in 1..=3 {
        let (block, cert) = replicas[1].app().committed(h).expect("stored");
        let qc = QuorumCertificate::<Bls>::decode(&cert).expect("decodes");
        assert_eq!(qc.block, block.hash());
        assert_eq!(
            qc.verify(genesis.params.chain_id, replicas[1].committee()),
            Ok(())
        );
    }
}

/// A peer that changes a proposal's body in flight (the header, and so the hash and the proposer's
/// signature, untouched) and delivers its copy first does not stop the committee: the copy is refused
/// because its body is not the one the header commits to, and the real proposal still counts.
#[test]
fn a_proposal_whose_body_was_changed_in_flight_does_not_stand_in_for_the_real_one() {
    let (genesis, mut replicas) = network(4);
    let key = SecretKey::dev("devnet/wallet");
    let forged_tx = Transaction {
        chain_id: genesis.params.chain_id,
        sender: key.public(),
        nonce: 0,
        fee: genesis.params.fee_min,
        expiry_height: 100,
        kind: TxKind::Transfer {
            to: Address::of(&SecretKey::dev("someone").public()),
            amount: Amount::from_iost(1).expect("small"),
        },
    }
    .sign(&key);
    let tamper = move |block: &mut Block| block.transactions.push(forged_tx.clone());
    let committed = run_with(&mut replicas, 3, 60_000, Some(&tamper));
    for c in &committed {
        assert!(
            c.len() >= 3,
            "every replica finalised 3 heights: {committed:?}"
        );
        assert_eq!(c[..3], committed[0][..3]);
    }
}

#[test]
fn a_restarted_replica_resumes_from_its_store() {
    let (genesis, mut replicas) = network(4);
    run(&mut replicas, 2, 60_000);
    let tip = replicas[3].app().tip();
    let committee = replicas[3].committee().clone();
    let r = replicas.pop().expect("four");
    let store = r.into_app().into_store();
    let app = ShardApp::open(&genesis, ShardId(0), store).expect("reopens");
    assert_eq!(app.tip(), tip);
    let config = Config::new(genesis.params.chain_id, ShardId(0));
    let restarted = Replica::new(
        config,
        committee,
        MemberIndex(3),
        bls::SecretKey::dev("validator/3"),
        app,
    )
    .expect("log reloads");
    assert_eq!(restarted.height(), tip.height + 1);
    replicas.push(restarted);
    let committed = run(&mut replicas, 2, 60_000);
    assert!(
        committed.iter().all(|c| c.len() >= 2),
        "all four go on finalising: {committed:?}"
    );
}

/// A store whose writes start failing when the test says so.
struct FailingStore {
    inner: MemStore,
    fail: std::rc::Rc<std::cell::Cell<bool>>,
}

impl crate::store::Store for FailingStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        self.inner.get(key)
    }
    fn write(&mut self, batch: crate::store::WriteBatch) -> Result<(), crate::store::StoreError> {
        if self.fail.get() {
            return Err(crate::store::StoreError::Backend("disk full".into()));
        }
        self.inner.write(batch)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<crate::store::Pairs, crate::store::StoreError> {
        self.inner.scan_prefix(prefix)
    }
}

#[test]
fn a_replica_that_cannot_record_its_votes_halts_silently() {
    let (genesis, replicas) = network(4);
    let committee = replicas[0].committee().clone();
    let fail = std::rc::Rc::new(std::cell::Cell::new(false));
    let store = FailingStore {
        inner: MemStore::new(),
        fail: fail.clone(),
    };
    let app = ShardApp::open(&genesis, ShardId(0), store).expect("genesis");
    let config = Config::new(genesis.params.chain_id, ShardId(0));
    let mut r = Replica::new(
        config,
        committee,
        MemberIndex(1),
        bls::SecretKey::dev("validator/1"),
        app,
    )
    .expect("fresh");
    r.handle(0, Input::Tick);
    while r.poll_output().is_some() {}
    fail.set(true);
    // Time passes: the propose timeout fires and the replica would prevote nil, but cannot record it.
    r.handle(60_000, Input::Tick);
    assert!(r.halted().is_some(), "the failed write halts the replica");
    assert!(r.poll_output().is_none(), "nothing unrecorded is sent");
    assert_eq!(r.poll_timeout(), None);
    r.handle(120_000, Input::Tick);
    assert!(r.poll_output().is_none(), "a halted replica stays silent");
}

/// Round timeouts keep growing: past any cap a network slower than the capped timeout would never let a round
/// finish, while growth without end makes some round's timeouts exceed whatever the delays are. (They used to
/// stop growing after 10 rounds.)
#[test]
fn round_timeouts_grow_without_a_cap() {
    let config = Config::new(1, ShardId(0));
    let base = config.timeout_propose_ms;
    let at = |r| config.round_timeout(base, r);
    assert!(at(11) > at(10) && at(100) > at(11) && at(10_000) > at(100));
    assert_eq!(at(1) - at(0), config.timeout_delta_ms);
    assert_eq!(
        config.round_timeout(u64::MAX - 1, u32::MAX),
        u64::MAX,
        "saturates"
    );
}

/// Messages for the next height are kept only when signed by the member they name, and within bounds: count,
/// bytes and a member's share per signer. (Before, any 256 messages were kept unchecked: with block-sized
/// proposals, hundreds of MiB per replica from a peer with no keys.)
#[test]
fn next_height_messages_are_checked_and_bounded_per_signer_and_in_bytes() {
    let (genesis, mut replicas) = network(4);
    let chain_id = genesis.params.chain_id;
    let key = |i: usize| bls::SecretKey::dev(&format!("validator/{i}"));
    let vote = |voter: MemberIndex, signer: usize, round: u32| {
        Message::Vote(Vote::<Bls>::sign(
            chain_id,
            ShardId(0),
            VoteKind::Prevote,
            2,
            round,
            None,
            voter,
            &key(signer),
        ))
    };
    let r = &mut replicas[0];
    r.config.future_messages_max = 16;
    // Forged: member 2's index, member 3's key.
    for round in 0..10 {
        r.handle(
            0,
            Input::Message {
                from: MemberIndex(2),
                message: vote(MemberIndex(2), 3, round),
            },
        );
    }
    assert!(
        r.future.is_empty(),
        "a vote not signed by the member it names is dropped"
    );
    // Member 1 floods: it keeps its share (16 / 4 members = 4).
    for round in 0..10 {
        r.handle(
            0,
            Input::Message {
                from: MemberIndex(1),
                message: vote(MemberIndex(1), 1, round),
            },
        );
    }
    assert_eq!(r.future.len(), 4);
    // Another member's votes still fit.
    for round in 0..2 {
        r.handle(
            0,
            Input::Message {
                from: MemberIndex(1),
                message: vote(MemberIndex(2), 2, round),
            },
        );
    }
    assert_eq!(r.future.len(), 6);
    // Beyond the round window: dropped.
    r.handle(
        0,
        Input::Message {
            from: MemberIndex(3),
            message: vote(MemberIndex(3), 3, r.config.round_window + 1),
        },
    );
    assert_eq!(r.future.len(), 6);
    // The byte bound holds whatever the count bound allows.
    r.config.future_bytes_max = r.future_bytes + 256;
    for round in 0..4 {
        r.handle(
            0,
            Input::Message {
                from: MemberIndex(3),
                message: vote(MemberIndex(3), 3, round),
            },
        );
    }
    assert_eq!(r.future.len(), 7);
    assert!(r.future_bytes <= r.config.future_bytes_max);
}
