//! `chain::node` without the network: a shard kept by validators whose lanes (`chain::node::Lane`) run over
//! in-memory stores, take their roles from `chain::node::plan` and speak the gossip envelope
//! (`chain::node::wire`) to each other. Messages go through a seeded loop that delays and duplicates them;
//! one seed replays one run. The replicas here answer a `Status` with `Decided` blocks (the BFT's own
//! catch-up, on by default in `bft::Config`); whole validators switch that off and catch up over
//! request-response instead (`chain::node::catch_up`, exercised in `node_simulator.rs`).
//!
//! This is the harness of the lanes, the plan and the schedule alone; whole validators (`chain::node::Node`)
//! with the beacon chain, epochs and Atomix between shards run in `node_simulator.rs`.

use chain::ShardId;
use std::collections::BTreeMap;

use chain::Address;
use chain::amount::Amount;
use chain::beacon::BeaconApp;
use chain::bft::{Bls, Config, FOLLOWER, Followed, Output};
use chain::crypto::{Hash, SecretKey, bls};
use chain::genesis::{Genesis, GenesisConfig};
use chain::ledger::{App, ShardApp, Tip};
use chain::node::wire::{self, Envelope};
use chain::node::{Drained, Lane, Role, plan};
use chain::store::MemStore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seats per committee (the beacon's and the one shard's).
const SIZE: usize = 4;
const SHARD: u16 = 0;

struct Validator {
    account: Address,
    secret: bls::SecretKey,
    /// Its beacon chain (fixed committees here): where its lanes' roles come from.
    beacon: BeaconApp<MemStore>,
    lane: Option<Lane<Bls, ShardApp<MemStore>>>,
    /// The store of a stopped validator's shard lane, as a crash leaves it.
    disk: Option<MemStore>,
}

struct Net {
    genesis: Genesis,
    validators: Vec<Validator>,
    now: u64,
    /// (delivery time, sequence) -> (recipient, envelope bytes).
    queue: BTreeMap<(u64, u64), (usize, Vec<u8>)>,
    seq: u64,
    rng: ChaCha8Rng,
    /// Bytes of every envelope delivered, in order: what two runs of one seed must agree on.
    trace: blake3::Hasher,
}

impl Net {
    /// A one-shard chain of `2 * SIZE + spare` validators: the beacon's committee, the shard's, and
    /// `spare` without a seat.
    fn new(seed: u64, spare: usize) -> Net {
        let genesis = GenesisConfig::devnet(
            1,
            2 * SIZE + spare,
            Amount::from_iost(1_000_000).expect("small"),
            Amount::from_iost(1_000).expect("small"),
        )
        .build()
        .expect("valid genesis");
        let validators = (0..2 * SIZE + spare)
            .map(|i| Validator {
                account: Address::of(&SecretKey::dev(&format!("validator/{i}")).public()),
                secret: bls::SecretKey::dev(&format!("validator/{i}")),
                beacon: BeaconApp::open(&genesis, SIZE, 0, MemStore::new()).expect("beacon"),
                lane: None,
                disk: Some(MemStore::new()),
            })
            .collect();
        Net {
            genesis,
            validators,
            now: 0,
            queue: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            trace: blake3::Hasher::new(),
        }
    }

    /// The validators the beacon seats on the shard.
    fn shard_members(&self) -> Vec<usize> {
        (0..self.validators.len())
            .filter(|&i| {
                let v = &self.validators[i];
                plan::shard_target(&v.beacon, &v.account, None) == Some(ShardId(SHARD))
            })
            .collect()
    }

    /// Opens validator `i`'s shard lane on its store (genesis, or what it had when stopped), as a follower
    /// that [`Net::reconcile`] then turns into a member if the plan says so.
    fn start(&mut self, i: usize) {
        let v = &mut self.validators[i];
        let Some(store) = v.disk.take() else {
            return;
        };
        let app = ShardApp::open(&self.genesis, ShardId(SHARD), store).expect("the store reopens");
        v.lane = Some(Lane::follower(
            self.genesis.params.chain_id,
            ShardId(SHARD),
            app,
        ));
        self.reconcile(i);
    }

    /// Stops validator `i` as a crash would: its lane is gone, its store stays.
    fn stop(&mut self, i: usize) {
        let v = &mut self.validators[i];
        if let Some(lane) = v.lane.take() {
            let app = match lane.role {
                Role::Member(r) => r.into_app(),
                Role::Follower(f) => f.into_app(),
            };
            v.disk = Some(app.into_store());
        }
    }

    /// Puts validator `i`'s lane in the role the plan gives it for the height it decides.
    fn reconcile(&mut self, i: usize) {
        let chain_id = self.genesis.params.chain_id;
        let v = &mut self.validators[i];
        let Some(lane) = v.lane.take() else {
            return;
        };
        let want = plan::shard_role(&v.beacon, &v.account, ShardId(SHARD), lane.height());
        let lane = lane
            .set_role(
                want,
                Config::new(chain_id, ShardId(SHARD)),
                &v.secret,
                self.now,
            )
            .expect("the replica resumes from its store");
        v.lane = Some(lane);
    }

    /// Publishes `bytes` to every other validator with a lane, each copy delayed by 1 to 40 ms, one in ten
    /// twice.
    fn publish(&mut self, from: usize, bytes: Vec<u8>) {
        for to in 0..self.validators.len() {
            if to == from || self.validators[to].lane.is_none() {
                continue;
            }
            let copies = if self.rng.random_ratio(1, 10) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now + self.rng.random_range(1..=40);
                self.seq += 1;
                self.queue.insert((at, self.seq), (to, bytes.clone()));
            }
        }
    }

    /// Publishes what validator `i`'s lane produced.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let Some(lane) = self.validators[i].lane.as_mut() else {
            return;
        };
        let Drained {
            from, outputs, ask, ..
        } = lane.drain(now);
        if let Some(status) = ask {
            self.publish(i, wire::encode_consensus(FOLLOWER, None, &status));
        }
        for output in outputs {
            match output {
                Output::Broadcast(message) => {
                    self.publish(i, wire::encode_consensus(from, None, &message))
                }
                Output::Send { to, message } => {
                    self.publish(i, wire::encode_consensus(from, Some(to), &message))
                }
                Output::Committed { .. } | Output::Evidence(_) => {}
            }
        }
    }

    /// Decodes an envelope at validator `to` and hands it to its lane.
    fn deliver(&mut self, to: usize, bytes: &[u8]) {
        self.trace.update(&(to as u64).to_be_bytes()).update(bytes);
        let now = self.now;
        let v = &mut self.validators[to];
        let Some(lane) = v.lane.as_mut() else {
            return;
        };
        let Ok(Envelope::Consensus {
            from,
            to: dest,
            message,
        }) = wire::decode(bytes)
        else {
            panic!("validators only send consensus envelopes here");
        };
        if let Some((follower, block, certificate)) = lane.route(now, from, dest, *message) {
            let beacon = &v.beacon;
            let followed = follower
                .on_decided(block, certificate, |h| {
                    beacon.committee_at(ShardId(SHARD), h)
                })
                .expect("the follower's ledger applies certified blocks");
            if let Followed::Committed(blocks) = followed {
                assert!(!blocks.is_empty(), "a commit applies blocks");
            }
        }
    }

    /// Runs the loop until `done` holds (or panics after `limit_ms` of simulated time).
    fn run_until(&mut self, limit_ms: u64, done: impl Fn(&Net) -> bool) {
        let deadline = self.now + limit_ms;
        while !done(self) {
            assert!(self.now < deadline, "no progress by {} ms", self.now);
            let next_message = self.queue.first_key_value().map(|((at, _), _)| *at);
            let next_timer = self
                .validators
                .iter()
                .filter_map(|v| v.lane.as_ref()?.poll_timeout())
                .min();
            let next = [next_message, next_timer]
                .into_iter()
                .flatten()
                .min()
                .expect("a lane always has a timer");
            self.now = self.now.max(next);
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (to, bytes) = entry.remove();
                self.deliver(to, &bytes);
            }
            for i in 0..self.validators.len() {
                if let Some(lane) = self.validators[i].lane.as_mut() {
                    lane.tick(self.now);
                }
                self.flush(i);
                self.reconcile(i);
                self.flush(i);
            }
        }
    }

    fn tip(&self, i: usize) -> Option<Tip> {
        Some(self.validators[i].lane.as_ref()?.app().tip())
    }
}

/// Validators `members` all at `height` or beyond.
fn all_at(members: &[usize], height: u64) -> impl Fn(&Net) -> bool + '_ {
    move |net| {
        members
            .iter()
            .all(|&i| net.tip(i).is_some_and(|t| t.height >= height))
    }
}

/// One run: the shard's committee decides, a member crashes and the others go on, it restarts from its
/// store, catches up and takes part again; a validator without a seat follows the shard. Returns the trace.
fn run(seed: u64) -> Hash {
    let mut net = Net::new(seed, 1);
    let members = net.shard_members();
    assert_eq!(members.len(), SIZE, "the plan seats a full committee");
    for &i in &members {
        net.start(i);
        assert!(
            net.validators[i]
                .lane
                .as_ref()
                .is_some_and(|l| l.member().is_some()),
            "a seated validator's lane is a member"
        );
    }
    net.run_until(60_000, all_at(&members, 5));

    // A member crashes; three of four are a quorum and go on without it.
    let crashed = members[3];
    net.stop(crashed);
    let others = &members[..3];
    net.run_until(120_000, all_at(others, 15));
    assert!(net.tip(crashed).is_none());

    // It restarts from its store (behind by ten heights or more) and catches up through the others'
    // `Decided` answers to its `Status`.
    net.start(crashed);
    let behind = net.tip(crashed).expect("restarted").height;
    assert!(
        (5..15).contains(&behind),
        "it resumes where it stopped ({behind})"
    );
    let target = net.tip(others[0]).expect("running").height + 3;
    net.run_until(120_000, all_at(&members, target));
    let Tip {
        height: h,
        hash: tip,
    } = net.tip(crashed).expect("running");
    let same = net.validators[others[0]]
        .lane
        .as_ref()
        .and_then(|l| l.app().committed(h))
        .map(|(b, _)| b.hash());
    assert_eq!(
        same,
        Some(tip),
        "the restarted member has the others' chain"
    );

    // A validator without a seat opens the shard as a follower and follows it from genesis.
    let spare = (0..net.validators.len())
        .find(|&i| {
            let v = &net.validators[i];
            v.beacon.state().seat_of(&v.account).is_none()
        })
        .expect("a spare validator");
    net.start(spare);
    assert!(
        net.validators[spare]
            .lane
            .as_ref()
            .is_some_and(|l| l.member().is_none()),
        "the plan makes a validator without a seat a follower"
    );
    let target = net.tip(others[0]).expect("running").height;
    net.run_until(120_000, all_at(&[spare], target));
    *net.trace.finalize().as_bytes()
}

#[test]
fn lanes_decide_crash_restart_from_the_store_catch_up_and_follow() {
    run(7);
}

#[test]
fn the_same_seed_gives_the_same_lane_trace() {
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}
