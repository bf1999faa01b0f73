//! The deterministic simulator of the IOS chain: many validators on several shards, one seed driving the
//! network (loss, delay, duplication, reordering, partitions that heal), crashes and restarts from each
//! replica's persisted store, client transactions (valid and invalid), and up to f Byzantine validators per
//! committee (equivocating proposers, invalid blocks, double votes, withheld votes, votes for every block seen).
//!
//! Checked after every commit: no two different blocks finalised at one (shard, height); every certificate
//! carries more than two thirds of the right committee's weight and verifies; each shard's total supply is
//! its genesis supply (and the shards' genesis supplies add up to 21,000,000,000 IOST); honest replicas agree
//! on state roots. Checked at the end: liveness once the network heals. The same seed gives the same trace.
//!
//! `HUDS_SIM_SEEDS=100000 cargo test -p chain --release --test simulator` runs more seeds (default 500);
//! `HUDS_SIM_SEED=1234` replays one seed and prints its trace summary; `HUDS_SIM_FIRST_SEED=N` starts the
//! range elsewhere.

mod common;
#[path = "common/seeds.rs"]
mod seeds;

use chain::address::{Address, shard_of};
use chain::amount::Amount;
use chain::atomix::{Certifier, FixedCommittees, Inbound, InboundError, Lock};
use chain::bft::wire;
use chain::bft::{
    Bls, Committee, Config, Input, Member, Message, Output, Proposal, QuorumCertificate, Replica,
    Vote, VoteKind, VoteScheme,
};
use chain::block::{Block, BlockHeader};
use chain::crypto::{Hash, SecretKey, bls};
use chain::genesis::{Genesis, GenesisConfig, TOTAL_SUPPLY};
use chain::ledger::{App, ShardApp};
use chain::node::schedule::{self, Relay};
use chain::pol::{self, Candidate};
use chain::smt::SparseMerkleTree;
use chain::store::MemStore;
use chain::tx::{SignedTransaction, Transaction, TxError, TxKind};
use chain::{MemberIndex, ShardId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seeds::{Totals, env_u64, run_seeds, seeds};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------------------
// Vote schemes for the simulator.

/// The stand-in scheme (`common::Insecure`); the real scheme runs in `bls_seeds_run_with_real_signatures`
/// below.
type Insecure = common::Insecure;

trait SimKeys: VoteScheme {
    fn key(index: usize) -> Self::Secret;
}

impl SimKeys for Insecure {
    fn key(index: usize) -> [u8; 32] {
        Insecure::key("sim key", index)
    }
}

impl SimKeys for Bls {
    fn key(index: usize) -> bls::SecretKey {
        bls::SecretKey::dev(&format!("validator/{index}"))
    }
}

// ---------------------------------------------------------------------------------------------------------
// The world.

type R<S> = Replica<S, ShardApp<MemStore>>;
/// Does a rejection carry the expected reason?
type Expect = fn(&TxError) -> bool;

#[derive(Debug, Clone, Default)]
struct Byzantine {
    equivocate: bool,
    invalid_blocks: bool,
    double_vote: bool,
    withhold: f64,
    /// Prevote and precommit every block it is shown, in every round: the votes a coalition needs to
    /// finalise two blocks if honest members ever let it.
    vote_everything: bool,
}

struct Node<S: SimKeys> {
    shard: ShardId,
    index: MemberIndex,
    secret: S::Secret,
    replica: Option<R<S>>,
    disk: Option<MemStore>,
    byzantine: Option<Byzantine>,
}

enum Event<S: VoteScheme> {
    Deliver {
        to: usize,
        from: MemberIndex,
        message: Message<S>,
    },
    Crash(usize),
    Restart(usize),
    Partition {
        shard: ShardId,
        side: Vec<bool>,
    },
    Heal(ShardId),
    Client(ShardId),
    /// A member relays the Atomix locks of its committed heights `from..=to` to their output shards, and
    /// plans the next attempt on the node's schedule if `retry`.
    Relay {
        node: usize,
        relay: Relay,
        retry: bool,
    },
    Inbound {
        to: usize,
        inbound: Inbound,
        forged: bool,
    },
}

struct Params {
    shards: u16,
    loss: f64,
    duplicate: f64,
    delay_ms_max: u64,
    /// Share of messages that take a slow path (0.2 to 2.5 s) during the fault phase.
    slow: f64,
    /// Chance that the first member to commit a height is then isolated for 0.5 to 3 s.
    isolate_committer: f64,
    fault_phase_ms: u64,
    end_ms: u64,
}

struct Sim<S: SimKeys> {
    seed: u64,
    rng: ChaCha8Rng,
    p: Params,
    genesis: Genesis,
    nodes: Vec<Node<S>>,
    committees: Vec<Committee<S>>,
    queue: BTreeMap<(u64, u64), Event<S>>,
    seq: u64,
    now: u64,
    partitions: BTreeMap<ShardId, Vec<bool>>,
    /// Nodes cut off from everyone until the given time: the adversary isolates the first member to commit
    /// a height, so that its decision spreads late while the rest of the committee goes on.
    isolated_until: BTreeMap<usize, u64>,
    shard_supply: Vec<u128>,
    finalised: BTreeMap<(ShardId, u64), (Hash, Hash)>,
    wallets: Vec<Vec<(SecretKey, u64)>>,
    adversaries: Vec<SecretKey>,
    recipients: Vec<Vec<Address>>,
    trace: blake3::Hasher,
    stats: Stats,
    verbose: bool,
    certifier: Arc<dyn Certifier>,
    /// Atomix locks in finalised blocks: transaction id -> (output shard, amount).
    locks: BTreeMap<Hash, (ShardId, Amount)>,
    /// Locks committed on their output shard, in finalised blocks.
    committed_locks: BTreeSet<Hash>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    delivered: u64,
    dropped: u64,
    commits: u64,
    crashes: u64,
    evidence: u64,
    rejected_txs: u64,
    max_height: Vec<u64>,
    atomix_locks: u64,
    forged_inbounds_refused: u64,
    forged_inbound_blocks: u64,
}

fn labels_on_shard(prefix: &str, shard: ShardId, shards: u16, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}/{i}"))
        .filter(|l| shard_of(&Address::of(&SecretKey::dev(l).public()), shards) == shard)
        .take(count)
        .collect()
}

impl<S: SimKeys> Sim<S> {
    fn new(seed: u64, fault_phase_ms: u64, end_ms: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shards = rng.random_range(1..=3u16);
        let committee_size = rng.random_range(4..=7usize);
        let p = Params {
            shards,
            loss: rng.random_range(0.0..0.25),
            duplicate: rng.random_range(0.0..0.1),
            delay_ms_max: rng.random_range(2..=80),
            slow: rng.random_range(0.0..0.05),
            isolate_committer: if rng.random_bool(0.5) {
                rng.random_range(0.0..0.5)
            } else {
                0.0
            },
            fault_phase_ms,
            end_ms,
        };
        // Registry: a few more validators than seats, with unequal stakes.
        let validators = usize::from(shards) * committee_size + rng.random_range(0..4usize);
        let mut genesis = GenesisConfig::devnet(shards, validators, Amount::ZERO, Amount::ZERO);
        genesis.wallets.clear();
        for v in genesis.validators.iter_mut() {
            v.stake = Amount::from_iost(rng.random_range(1_000..=5_000)).expect("small");
        }
        let mut wallets = Vec::new();
        let mut adversaries = Vec::new();
        let mut recipients = Vec::new();
        for s in 0..shards {
            let labels = labels_on_shard(&format!("sim/wallet/{s}"), ShardId(s), shards, 3);
            let keys: Vec<(SecretKey, u64)> =
                labels.iter().map(|l| (SecretKey::dev(l), 0)).collect();
            for (k, _) in &keys {
                genesis.wallets.push((
                    Address::of(&k.public()),
                    Amount::from_iost(1_000).expect("small"),
                ));
            }
            wallets.push(keys);
            // The adversary's own funded account on the shard, so its second proposal can differ from
            // the first and still be valid.
            let adversary = SecretKey::dev(
                &labels_on_shard(&format!("sim/adversary/{s}"), ShardId(s), shards, 1)[0],
            );
            genesis.wallets.push((
                Address::of(&adversary.public()),
                Amount::from_iost(1_000).expect("small"),
            ));
            adversaries.push(adversary);
            let to = labels_on_shard(&format!("sim/recipient/{s}"), ShardId(s), shards, 4);
            let mut to: Vec<Address> = to
                .iter()
                .map(|l| Address::of(&SecretKey::dev(l).public()))
                .collect();
            // And one recipient on every other shard: Atomix transfers.
            for other in (0..shards).filter(|o| *o != s) {
                let label =
                    &labels_on_shard(&format!("sim/away/{s}"), ShardId(other), shards, 1)[0];
                to.push(Address::of(&SecretKey::dev(label).public()));
            }
            recipients.push(to);
        }
        let built = genesis.build().expect("valid genesis");
        let shard_supply: Vec<u128> = (0..shards)
            .map(|s| built.shard_state(ShardId(s)).total_supply())
            .collect();
        assert_eq!(
            shard_supply.iter().sum::<u128>(),
            u128::from(TOTAL_SUPPLY.0),
            "genesis is 21e9 IOST"
        );

        // Committees by Proof of Likelihood from the genesis randomness.
        let registry: Vec<Candidate> = genesis
            .validators
            .iter()
            .map(|v| Candidate {
                id: Address::of(&v.account),
                stake: v.stake,
                reputation_ppm: 0,
            })
            .collect();
        let randomness = pol::epoch_randomness(0, &seed.to_be_bytes());
        let seats = pol::select_committees(&randomness, &registry, &[], shards, committee_size);
        let index_of: BTreeMap<Address, usize> = registry
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();

        let mut nodes = Vec::new();
        let mut committees = Vec::new();
        for (s, seat_ids) in seats.iter().enumerate() {
            let s = ShardId(s as u16);
            let members: Vec<Member<S>> = seat_ids
                .iter()
                .map(|id| {
                    let c = &registry[index_of[id]];
                    Member {
                        id: *id,
                        public: S::public(&S::key(index_of[id])),
                        weight: c.weight(),
                    }
                })
                .collect();
            let committee = Committee::new(members, randomness);
            // Byzantine members: a random subset holding less than a third of the weight.
            let mut order: Vec<usize> = (0..seat_ids.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            let byzantine_max = rng.random_range(0..=(committee_size - 1) / 3);
            let mut byzantine = BTreeSet::new();
            let mut weight = 0;
            for i in order {
                let w = committee.members[i].weight;
                if byzantine.len() < byzantine_max && (weight + w) * 3 < committee.total_weight() {
                    byzantine.insert(i);
                    weight += w;
                }
            }
            for (i, id) in seat_ids.iter().enumerate() {
                let secret = S::key(index_of[id]);
                let app = ShardApp::open(&built, s, MemStore::new()).expect("genesis opens");
                let config = Config::new(genesis.params.chain_id, s);
                let replica = Replica::new(
                    config,
                    committee.clone(),
                    MemberIndex(i as u16),
                    secret.clone(),
                    app,
                )
                .expect("fresh");
                let byzantine = byzantine.contains(&i).then(|| Byzantine {
                    equivocate: rng.random_bool(0.5),
                    invalid_blocks: rng.random_bool(0.3),
                    double_vote: rng.random_bool(0.5),
                    withhold: rng.random_range(0.0..1.0),
                    vote_everything: rng.random_bool(0.5),
                });
                nodes.push(Node {
                    shard: s,
                    index: MemberIndex(i as u16),
                    secret,
                    replica: Some(replica),
                    disk: None,
                    byzantine,
                });
            }
            committees.push(committee);
        }
        let certifier: Arc<dyn Certifier> = Arc::new(FixedCommittees {
            chain_id: genesis.params.chain_id,
            committees: committees.clone(),
        });
        for node in &mut nodes {
            if let Some(r) = node.replica.as_mut() {
                r.app_mut().set_certifier(certifier.clone());
            }
        }
        let mut sim = Sim {
            seed,
            rng,
            p,
            genesis: built,
            nodes,
            committees,
            queue: BTreeMap::new(),
            seq: 0,
            now: 0,
            partitions: BTreeMap::new(),
            isolated_until: BTreeMap::new(),
            shard_supply,
            finalised: BTreeMap::new(),
            wallets,
            adversaries,
            recipients,
            trace: blake3::Hasher::new(),
            stats: Stats {
                max_height: vec![0; usize::from(shards)],
                ..Stats::default()
            },
            verbose: std::env::var("HUDS_SIM_VERBOSE").is_ok(),
            certifier,
            locks: BTreeMap::new(),
            committed_locks: BTreeSet::new(),
        };
        sim.plan_faults();
        sim
    }

    fn at(&mut self, time: u64, event: Event<S>) {
        self.seq += 1;
        self.queue.insert((time, self.seq), event);
    }

    /// Crashes, restarts, partitions and client traffic, all drawn from the seed up front or as it runs.
    fn plan_faults(&mut self) {
        let fault_end = self.p.fault_phase_ms;
        for s in 0..self.p.shards {
            let first = self.rng.random_range(0..50);
            self.at(first, Event::Client(ShardId(s)));
            // Zero to three partitions of the shard, one after the other, each healing.
            let n = self.committees[usize::from(s)].len();
            let mut cursor = 0;
            for _ in 0..self.rng.random_range(0..=3) {
                if cursor + 2 >= fault_end {
                    break;
                }
                let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
                let start = self.rng.random_range(cursor..fault_end - 1);
                let heal = self
                    .rng
                    .random_range(start + 1..=(start + 2_000).min(fault_end));
                self.at(
                    start,
                    Event::Partition {
                        shard: ShardId(s),
                        side,
                    },
                );
                self.at(heal, Event::Heal(ShardId(s)));
                cursor = heal + 1;
            }
        }
        let crashes = self.rng.random_range(0..=self.nodes.len() / 3);
        for _ in 0..crashes {
            let node = self.rng.random_range(0..self.nodes.len());
            let start = self.rng.random_range(0..fault_end);
            let restart = self.rng.random_range(start + 1..=fault_end);
            self.at(start, Event::Crash(node));
            self.at(restart, Event::Restart(node));
        }
    }

    fn in_fault_phase(&self) -> bool {
        self.now < self.p.fault_phase_ms
    }

    fn global(&self, shard: ShardId, index: MemberIndex) -> usize {
        self.nodes
            .iter()
            .position(|n| n.shard == shard && n.index == index)
            .expect("member exists")
    }

    /// The delays after which copies of a message from `from` reach `to`: none if the network drops it
    /// (isolation, a partition of their shard, loss), two if it duplicates it.
    fn delays(&mut self, from: usize, to: usize) -> Vec<u64> {
        let shard = self.nodes[from].shard;
        let now = self.now;
        if [from, to]
            .iter()
            .any(|n| self.isolated_until.get(n).is_some_and(|until| now < *until))
        {
            self.stats.dropped += 1;
            return Vec::new();
        }
        if self.nodes[to].shard == shard
            && let Some(side) = self.partitions.get(&shard)
            && side[usize::from(self.nodes[from].index)] != side[usize::from(self.nodes[to].index)]
        {
            self.stats.dropped += 1;
            return Vec::new();
        }
        if self.in_fault_phase() && self.rng.random_bool(self.p.loss) {
            self.stats.dropped += 1;
            return Vec::new();
        }
        let copies = if self.in_fault_phase() && self.rng.random_bool(self.p.duplicate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if self.in_fault_phase() && self.rng.random_bool(self.p.slow) {
                    self.rng.random_range(200..=2_500)
                } else {
                    self.rng.random_range(1..=self.p.delay_ms_max)
                }
            })
            .collect()
    }

    fn send(&mut self, from: usize, to: usize, message: Message<S>) {
        let from_index = self.nodes[from].index;
        for delay in self.delays(from, to) {
            self.at(
                self.now + delay,
                Event::Deliver {
                    to,
                    from: from_index,
                    message: message.clone(),
                },
            );
        }
    }

    /// A member relays the Atomix locks of its committed heights `relay.from..=relay.to`, proven against its
    /// tip, to every member of each output shard, and plans the next attempt on the node's schedule
    /// (`chain::node::schedule`: 2, 8, 32 and 128 s later) if `retry`. A Byzantine member relays them forged
    /// (each amount doubled) instead.
    fn relay(&mut self, node: usize, relay: Relay, retry: bool) {
        let Relay { from, to, .. } = relay;
        let Some(replica) = self.nodes[node].replica.as_ref() else {
            return;
        };
        let forged = self.nodes[node].byzantine.is_some();
        let outbound = replica.app().outbound(from, to);
        if outbound.is_empty() {
            return;
        }
        for (shard, mut inbound) in outbound {
            if forged {
                for (lock, _) in &mut inbound.locks {
                    lock.amount = Amount(lock.amount.0 * 2);
                }
            }
            let peers: Vec<usize> = (0..self.nodes.len())
                .filter(|j| self.nodes[*j].shard == shard)
                .collect();
            for peer in peers {
                for delay in self.delays(node, peer) {
                    self.at(
                        self.now + delay,
                        Event::Inbound {
                            to: peer,
                            inbound: inbound.clone(),
                            forged,
                        },
                    );
                }
            }
        }
        if retry && let Some((wait, next)) = relay.next() {
            self.at(
                self.now + wait,
                Event::Relay {
                    node,
                    relay: next,
                    retry,
                },
            );
        }
    }

    fn on_inbound(&mut self, to: usize, inbound: Inbound, forged: bool) -> Result<(), String> {
        let Some(replica) = self.nodes[to].replica.as_mut() else {
            self.stats.dropped += 1;
            return Ok(());
        };
        self.stats.delivered += 1;
        self.trace
            .update(&[2])
            .update(&self.now.to_be_bytes())
            .update(&inbound.hash());
        let bytes = inbound.encode();
        let inbound = Inbound::decode(&bytes).map_err(|e| format!("inbound decoding: {e}"))?;
        match (replica.app_mut().submit_inbound(inbound), forged) {
            (Err(InboundError::BadProof { .. }), true) => {
                self.stats.forged_inbounds_refused += 1;
                Ok(())
            }
            (Err(InboundError::AlreadyCommitted(_)), _) | (Ok(()), false) => Ok(()),
            (result, forged) => Err(format!(
                "node {to}: inbound (forged: {forged}) had an unexpected outcome: {result:?}"
            )),
        }
    }

    fn broadcast(&mut self, from: usize, message: &Message<S>) {
        let shard = self.nodes[from].shard;
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != from && self.nodes[*j].shard == shard)
            .collect();
        for to in peers {
            self.send(from, to, message.clone());
        }
    }

    /// Sends each peer one of two messages, at random: how an equivocator splits the committee.
    fn split_broadcast(&mut self, from: usize, a: &Message<S>, b: &Message<S>) {
        let shard = self.nodes[from].shard;
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != from && self.nodes[*j].shard == shard)
            .collect();
        for to in peers {
            let m = if self.rng.random_bool(0.5) {
                a.clone()
            } else {
                b.clone()
            };
            self.send(from, to, m);
        }
    }

    fn drain(&mut self, node: usize) -> Result<(), String> {
        loop {
            let Some(replica) = self.nodes[node].replica.as_mut() else {
                return Ok(());
            };
            let Some(out) = replica.poll_output() else {
                return Ok(());
            };
            match out {
                Output::Broadcast(m) => self.byzantine_or_broadcast(node, m),
                Output::Send { to, message } => {
                    let to = self.global(self.nodes[node].shard, to);
                    self.send(node, to, message);
                }
                Output::Committed {
                    height,
                    block,
                    certificate,
                } => self.on_commit(node, height, &block, &certificate)?,
                Output::Evidence(e) => {
                    // Evidence must verify, and only ever name a Byzantine member.
                    let shard = self.nodes[node].shard;
                    if !e.verify(
                        self.genesis.params.chain_id,
                        &self.committees[usize::from(shard)],
                    ) {
                        return Err(format!(
                            "node {node} produced evidence that does not verify"
                        ));
                    }
                    let offender = self.global(shard, e.offender());
                    if self.nodes[offender].byzantine.is_none() {
                        return Err(format!(
                            "node {node} produced evidence against honest node {offender}"
                        ));
                    }
                    self.stats.evidence += 1;
                }
            }
        }
    }

    fn byzantine_or_broadcast(&mut self, node: usize, message: Message<S>) {
        let Some(byz) = self.nodes[node].byzantine.clone() else {
            return self.broadcast(node, &message);
        };
        let chain_id = self.genesis.params.chain_id;
        let secret = self.nodes[node].secret.clone();
        match &message {
            Message::Proposal(p) if byz.equivocate || byz.invalid_blocks => {
                let replica = self.nodes[node]
                    .replica
                    .as_mut()
                    .expect("only live nodes send");
                // The second block: a valid transfer of the adversary's, so it differs from the first.
                let adversary = &self.adversaries[usize::from(p.shard)];
                let me = Address::of(&adversary.public());
                let nonce = replica.app().state().account(&me).map_or(0, |a| a.nonce);
                let tx = Transaction {
                    chain_id,
                    sender: adversary.public(),
                    nonce,
                    fee: Amount(1_000),
                    expiry_height: u64::MAX,
                    kind: TxKind::Transfer {
                        to: me,
                        amount: Amount(1),
                    },
                }
                .sign(adversary);
                let mut other: Block = replica.app_mut().build_block(vec![tx.clone()]);
                if byz.invalid_blocks && self.p.shards > 1 && self.rng.random_bool(0.5) {
                    // Minting through Atomix: a block whose execution is consistent (roots and all) but that
                    // commits a lock "proven" in a header of another shard no committee certified.
                    let state = replica.app().state().clone();
                    let parent = replica.app().tip().hash;
                    other =
                        self.forged_inbound_block(p.shard, p.height, parent, state, tx, &secret);
                } else if byz.invalid_blocks || other.hash() == p.block.hash() {
                    other.header.state_root = self.rng.random();
                }
                let second = Proposal::sign(
                    chain_id,
                    p.shard,
                    p.height,
                    p.round,
                    Arc::new(other),
                    None,
                    None,
                    p.proposer,
                    &secret,
                );
                self.split_broadcast(node, &message, &Message::Proposal(second));
            }
            Message::Vote(v) => {
                if self.rng.random_bool(byz.withhold) {
                    return;
                }
                if byz.double_vote {
                    let flipped = match v.block {
                        Some(_) => None,
                        None => Some(self.rng.random()),
                    };
                    let second = Vote::sign(
                        chain_id, v.shard, v.kind, v.height, v.round, flipped, v.voter, &secret,
                    );
                    self.split_broadcast(node, &message, &Message::Vote(second));
                } else {
                    self.broadcast(node, &message);
                }
            }
            _ => self.broadcast(node, &message),
        }
    }

    /// A block at `height` of `shard` holding `tx` and an inbound that credits this shard's first recipient
    /// with a lock no other shard made: the lock is proven in a made-up header of the next shard, whose
    /// certificate carries every signer bit and the adversary's own signature. Every root is right, so only
    /// the certificate check can refuse it.
    fn forged_inbound_block(
        &mut self,
        shard: ShardId,
        height: u64,
        parent: Hash,
        mut state: chain::State,
        tx: SignedTransaction,
        secret: &S::Secret,
    ) -> Block {
        let chain_id = self.genesis.params.chain_id;
        let lock = Lock {
            tx_id: self.rng.random(),
            from: Address::of(&self.adversaries[usize::from(shard)].public()),
            to: self.recipients[usize::from(shard)][0],
            amount: Amount::from_iost(1_000).expect("small"),
            kind: chain::atomix::LockKind::Transfer,
        };
        let mut tree = SparseMerkleTree::new();
        tree.insert(Lock::key(&lock.tx_id), lock.value_hash());
        let source = ShardId((shard.0 + 1) % self.p.shards);
        let header = BlockHeader {
            chain_id,
            shard: source,
            height: 1 + self.rng.random_range(0..height),
            parent: self.rng.random(),
            state_root: tree.root(),
            transactions_root: self.rng.random(),
            receipts_root: self.rng.random(),
        };
        let committee = &self.committees[usize::from(source)];
        let certificate = QuorumCertificate::<S> {
            kind: VoteKind::Precommit,
            shard: source,
            height: header.height,
            round: 0,
            block: header.hash(),
            signers: vec![0xff; committee.len().div_ceil(8)],
            signature: S::sign(secret, &header.hash()),
        };
        let inbound = Inbound {
            locks: vec![(lock.clone(), tree.prove(&Lock::key(&lock.tx_id)))],
            header,
            certificate: certificate.encode(),
        };
        let receipt = state
            .apply(&tx, height)
            .expect("the adversary's own transfer applies");
        state
            .apply_inbound(&inbound)
            .expect("the forged proof holds against the made-up header");
        let transactions = vec![tx];
        let inbound = vec![inbound];
        let header = BlockHeader {
            chain_id,
            shard,
            height,
            parent,
            state_root: state.root(),
            transactions_root: Block::body_root(&transactions, &inbound, &[]),
            receipts_root: chain::smt::list_root(&[receipt.hash()]),
        };
        self.stats.forged_inbound_blocks += 1;
        Block {
            header,
            transactions,
            links: Vec::new(),
            inbound,
            evidence: Vec::new(),
            proofs: Vec::new(),
        }
    }

    /// A Byzantine member's prevote and precommit for `block`, whatever it voted before.
    fn vote_for(&mut self, node: usize, height: u64, round: u32, block: Hash) {
        let (chain_id, shard, index) = (
            self.genesis.params.chain_id,
            self.nodes[node].shard,
            self.nodes[node].index,
        );
        for kind in [VoteKind::Prevote, VoteKind::Precommit] {
            let vote = Vote::sign(
                chain_id,
                shard,
                kind,
                height,
                round,
                Some(block),
                index,
                &self.nodes[node].secret,
            );
            self.broadcast(node, &Message::Vote(vote));
        }
    }

    fn on_commit(
        &mut self,
        node: usize,
        height: u64,
        block: &Block,
        qc: &QuorumCertificate<S>,
    ) -> Result<(), String> {
        let shard = self.nodes[node].shard;
        let honest = self.nodes[node].byzantine.is_none();
        let hash = block.hash();
        self.stats.commits += 1;
        if self.verbose {
            eprintln!(
                "t={} shard {shard} node {node} committed height {height} in round {}",
                self.now, qc.round
            );
        }
        self.trace
            .update(&[1])
            .update(&self.now.to_be_bytes())
            .update(&(node as u64).to_be_bytes())
            .update(&hash);
        let committee = &self.committees[usize::from(shard)];
        // Every certificate: the right committee, more than two thirds of its weight, a valid aggregate.
        if qc.block != hash
            || qc.height != height
            || qc.shard != shard
            || qc.kind != VoteKind::Precommit
        {
            return Err(format!(
                "node {node} committed height {height} with a certificate for something else"
            ));
        }
        let weight = qc.signer_weight(committee);
        if weight * 3 <= committee.total_weight() * 2 {
            return Err(format!(
                "certificate at ({shard}, {height}) carries {weight} of {}",
                committee.total_weight()
            ));
        }
        if let Err(e) = qc.verify(self.genesis.params.chain_id, committee) {
            return Err(format!(
                "certificate at ({shard}, {height}) does not verify: {e}"
            ));
        }
        let replica = self.nodes[node]
            .replica
            .as_ref()
            .expect("a live node committed");
        // One input can commit several heights (replayed messages); the state is checked at the last one.
        let root = if replica.app().tip().height == height {
            let mut state = replica.app().state().clone();
            let root = state.root();
            if root != block.header.state_root {
                return Err(format!(
                    "node {node} state root differs from the header it committed at height {height}"
                ));
            }
            if state.accountable_supply() != self.shard_supply[usize::from(shard)] {
                return Err(format!(
                    "supply on shard {shard} changed at height {height}"
                ));
            }
            root
        } else {
            block.header.state_root
        };
        let relays = block
            .transactions
            .iter()
            .any(|t| matches!(&t.tx.kind, TxKind::Transfer { to, .. } if shard_of(to, self.p.shards) != shard));
        if relays && replica.app().tip().height == height {
            // As the node does: every member relays at commit, one member in turn by height retries.
            let retry = schedule::relay_retry_duty(
                height,
                self.committees[usize::from(shard)].len(),
                self.nodes[node].index,
            );
            self.at(
                self.now,
                Event::Relay {
                    node,
                    relay: Relay {
                        shard,
                        from: height,
                        to: height,
                        attempt: 0,
                    },
                    retry,
                },
            );
        }
        if !honest {
            return Ok(());
        }
        // Safety: one block per (shard, height), and honest replicas agree on its state root.
        match self.finalised.get(&(shard, height)) {
            Some((h, r)) if *h != hash || *r != root => {
                return Err(format!(
                    "two different blocks finalised at shard {shard} height {height}"
                ));
            }
            Some(_) => {}
            None => {
                self.finalised.insert((shard, height), (hash, root));
                self.atomix_finalised(shard, height, block)?;
                if self.in_fault_phase() && self.rng.random_bool(self.p.isolate_committer) {
                    let until =
                        (self.now + self.rng.random_range(500..=3_000)).min(self.p.fault_phase_ms);
                    self.isolated_until.insert(node, until);
                }
            }
        }
        let max = &mut self.stats.max_height[usize::from(shard)];
        *max = (*max).max(height);
        Ok(())
    }

    /// Atomix all-or-nothing, at each newly finalised block: every lock it commits was made in a finalised
    /// block of its input shard, for this shard and this amount, and was never committed before.
    fn atomix_finalised(
        &mut self,
        shard: ShardId,
        height: u64,
        block: &Block,
    ) -> Result<(), String> {
        for tx in &block.transactions {
            if let TxKind::Transfer { to, amount } = &tx.tx.kind {
                let out = shard_of(to, self.p.shards);
                if out != shard {
                    self.locks.insert(tx.id(), (out, *amount));
                    self.stats.atomix_locks += 1;
                }
            }
        }
        for inbound in &block.inbound {
            for (lock, _) in &inbound.locks {
                match self.locks.get(&lock.tx_id) {
                    Some((out, amount)) if *out == shard && *amount == lock.amount => {}
                    other => {
                        return Err(format!(
                            "shard {shard} height {height} committed a lock not finalised as such: {other:?}"
                        ));
                    }
                }
                if !self.committed_locks.insert(lock.tx_id) {
                    return Err(format!(
                        "shard {shard} height {height} committed a lock a second time"
                    ));
                }
            }
        }
        Ok(())
    }

    fn pending_locks(&self) -> usize {
        self.locks.len() - self.committed_locks.len()
    }

    fn client(&mut self, shard: ShardId) {
        let s = usize::from(shard);
        let chain_id = self.genesis.params.chain_id;
        let w = self.rng.random_range(0..self.wallets[s].len());
        let to = self.recipients[s][self.rng.random_range(0..self.recipients[s].len())];
        let (key, nonce) = &self.wallets[s][w];
        let make = |nonce: u64, chain_id: u32| Transaction {
            chain_id,
            sender: key.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 1_000_000,
            kind: TxKind::Transfer {
                to,
                amount: Amount(1 + nonce),
            },
        };
        let good = make(*nonce, chain_id).sign(key);
        let wrong_chain = make(*nonce, chain_id ^ 1).sign(key);
        let mut forged = make(*nonce, chain_id).sign(key);
        forged.tx.kind = TxKind::Transfer {
            to,
            amount: Amount(999_999),
        };
        self.wallets[s][w].1 += 1;
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].shard == shard)
            .collect();
        for i in members {
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                continue;
            };
            let app = replica.app_mut();
            let _ = app.submit(good.clone()); // May be refused as a replay on a replica that already has it.
            let bad: [(SignedTransaction, Expect); 2] = [
                (wrong_chain.clone(), |e| {
                    matches!(e, TxError::WrongChainId { .. })
                }),
                (forged.clone(), |e| matches!(e, TxError::BadSignature(_))),
            ];
            for (tx, expected) in bad {
                match app.submit(tx) {
                    Err(e) if expected(&e) => self.stats.rejected_txs += 1,
                    other => panic!(
                        "seed {}: bad transaction not rejected as expected: {other:?}",
                        self.seed
                    ),
                }
            }
        }
        let next = self.now + self.rng.random_range(50..400);
        self.at(next, Event::Client(shard));
    }

    fn handle(&mut self, node: usize, input: Input<S>) -> Result<(), String> {
        let now = self.now;
        let Some(replica) = self.nodes[node].replica.as_mut() else {
            return Ok(());
        };
        let before = (replica.height(), replica.round());
        replica.handle(now, input);
        if self.verbose && before != (replica.height(), replica.round()) {
            eprintln!("t={now} node {node} -> {}", replica.describe());
        }
        self.drain(node)
    }

    fn on_event(&mut self, event: Event<S>) -> Result<(), String> {
        match event {
            Event::Deliver { to, from, message } => {
                if self.nodes[to].replica.is_none() {
                    self.stats.dropped += 1;
                    return Ok(());
                }
                self.stats.delivered += 1;
                self.trace
                    .update(&[0])
                    .update(&self.now.to_be_bytes())
                    .update(&(to as u64).to_be_bytes());
                // Every message crosses the wire encoding, as it will over gossip.
                let bytes = wire::encode(&message);
                self.trace
                    .update(&from.0.to_be_bytes())
                    .update(blake3::hash(&bytes).as_bytes());
                let message =
                    wire::decode::<S>(&bytes).map_err(|e| format!("wire decoding failed: {e}"))?;
                if let Message::Proposal(p) = &message
                    && self.nodes[to]
                        .byzantine
                        .as_ref()
                        .is_some_and(|b| b.vote_everything)
                {
                    self.vote_for(to, p.height, p.round, p.block.hash());
                }
                self.handle(to, Input::Message { from, message })?;
            }
            Event::Crash(node) => {
                if let Some(replica) = self.nodes[node].replica.take() {
                    self.stats.crashes += 1;
                    self.nodes[node].disk = Some(replica.into_app().into_store());
                }
            }
            Event::Restart(node) => self.restart(node)?,
            Event::Partition { shard, side } => {
                self.partitions.insert(shard, side);
            }
            Event::Heal(shard) => {
                self.partitions.remove(&shard);
            }
            Event::Client(shard) => self.client(shard),
            Event::Relay { node, relay, retry } => self.relay(node, relay, retry),
            Event::Inbound {
                to,
                inbound,
                forged,
            } => self.on_inbound(to, inbound, forged)?,
        }
        Ok(())
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        let Some(disk) = self.nodes[node].disk.take() else {
            return Ok(());
        };
        let n = &self.nodes[node];
        let app = ShardApp::open(&self.genesis, n.shard, disk)
            .map_err(|e| format!("store reopen: {e}"))?;
        let config = Config::new(self.genesis.params.chain_id, n.shard);
        let committee = self.committees[usize::from(n.shard)].clone();
        let mut replica = Replica::new(config, committee, n.index, n.secret.clone(), app)
            .map_err(|e| format!("node {node} could not resume: {e}"))?;
        replica.app_mut().set_certifier(self.certifier.clone());
        // The relays planned before the crash are gone: as the node does when it opens a shard lane, relay
        // the locks of the recent heights again, first after `RELAY_FIRST_RETRY_MS`, then on the schedule.
        let tip = replica.app().tip().height;
        let shard = self.nodes[node].shard;
        self.nodes[node].replica = Some(replica);
        self.at(
            self.now + schedule::RELAY_FIRST_RETRY_MS,
            Event::Relay {
                node,
                relay: Relay {
                    shard,
                    from: tip.saturating_sub(schedule::RELAY_ON_OPEN_HEIGHTS),
                    to: tip,
                    attempt: 0,
                },
                retry: true,
            },
        );
        self.handle(node, Input::Tick)
    }

    fn heights_of_honest(&self, shard: ShardId) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.shard == shard && n.byzantine.is_none())
            .map(|n| n.replica.as_ref().map_or(0, |r| r.app().tip().height))
            .collect()
    }

    /// Runs to the end; `Ok` carries the trace hash.
    fn run(&mut self) -> Result<Hash, String> {
        for node in 0..self.nodes.len() {
            self.handle(node, Input::Tick)?;
        }
        let mut healed_at: Option<Vec<u64>> = None;
        loop {
            if healed_at.is_none() && self.now >= self.p.fault_phase_ms {
                // Heal everything: partitions end, crashed nodes restart, no more loss.
                self.partitions.clear();
                self.isolated_until.clear();
                for node in 0..self.nodes.len() {
                    self.restart(node)?;
                }
                healed_at = Some(self.stats.max_height.clone());
            }
            let next_event = self.queue.first_key_value().map(|((t, _), _)| *t);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    n.replica
                        .as_ref()
                        .and_then(|r| r.poll_timeout())
                        .map(|t| (t, i))
                })
                .min();
            let next = match (next_event, next_timer) {
                (Some(e), Some((t, _))) => e.min(t),
                (Some(e), None) => e,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > self.p.end_ms {
                break;
            }
            // Once healed, stop as soon as every shard has shown liveness and every lock is committed.
            if let Some(before) = &healed_at
                && self.pending_locks() == 0
                && (0..self.p.shards).all(|s| {
                    let target = before[usize::from(s)] + 2;
                    self.heights_of_honest(ShardId(s))
                        .iter()
                        .all(|h| *h >= target)
                })
            {
                break;
            }
            self.now = self.now.max(next);
            if let Some((t, node)) = next_timer
                && t <= self.now
                && next_event.is_none_or(|e| t <= e)
            {
                self.handle(node, Input::Tick)?;
                continue;
            }
            let (_, event) = self.queue.pop_first().expect("an event is due");
            self.on_event(event)?;
        }
        // Liveness: within `end_ms`, after healing, every honest replica of every shard got at least two
        // blocks further than the best height reached before healing. The bound is generous because a
        // Byzantine member may win the proposer rotation several rounds in a row, each costing a timeout.
        let before = healed_at.unwrap_or_default();
        for s in 0..self.p.shards {
            let heights = self.heights_of_honest(ShardId(s));
            let target = before.get(usize::from(s)).copied().unwrap_or(0) + 2;
            if heights.iter().any(|h| *h < target) {
                for n in self.nodes.iter().filter(|n| n.shard == s) {
                    if let Some(r) = &n.replica {
                        eprintln!(
                            "  node {} byz={}: {}",
                            n.index,
                            n.byzantine.is_some(),
                            r.describe()
                        );
                    }
                }
                return Err(format!(
                    "shard {s} not live after healing: honest heights {heights:?}, target {target}"
                ));
            }
        }
        // Atomix liveness: every lock of a finalised block was committed on its output shard.
        if self.pending_locks() > 0 {
            return Err(format!(
                "{} of {} Atomix locks not committed after healing",
                self.pending_locks(),
                self.locks.len()
            ));
        }
        self.trace.update(format!("{:?}", self.stats).as_bytes());
        Ok(*self.trace.finalize().as_bytes())
    }
}

fn run_seed<S: SimKeys>(
    seed: u64,
    fault_phase_ms: u64,
    end_ms: u64,
) -> Result<(Hash, Stats), String> {
    let mut sim = Sim::<S>::new(seed, fault_phase_ms, end_ms);
    let trace = sim.run()?;
    Ok((trace, sim.stats))
}

impl Totals for Stats {
    /// Sums the counters; `max_height` is per seed and not summed.
    fn add(&mut self, seed: &Self) {
        self.commits += seed.commits;
        self.delivered += seed.delivered;
        self.dropped += seed.dropped;
        self.crashes += seed.crashes;
        self.evidence += seed.evidence;
        self.rejected_txs += seed.rejected_txs;
        self.atomix_locks += seed.atomix_locks;
        self.forged_inbounds_refused += seed.forged_inbounds_refused;
        self.forged_inbound_blocks += seed.forged_inbound_blocks;
    }
}

#[test]
fn many_seeds_stay_safe_and_live() {
    let seeds = seeds(0, 1);
    let end_ms = env_u64("HUDS_SIM_END_MS").unwrap_or(30_000);
    let total = run_seeds(&seeds, "simulator", |seed| {
        run_seed::<Insecure>(seed, 6_000, end_ms)
    });
    assert!(
        total.commits > 0 && total.delivered > 0 && total.rejected_txs > 0,
        "the simulation did something"
    );
    assert!(
        seeds.len() < 50
            || (total.atomix_locks > 0
                && total.forged_inbounds_refused > 0
                && total.forged_inbound_blocks > 0),
        "the simulation moved value across shards and met forged inbounds, relayed and in blocks"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 17, 4242] {
        let a = run_seed::<Insecure>(seed, 2_000, 20_000).expect("seed passes");
        let b = run_seed::<Insecure>(seed, 2_000, 20_000).expect("seed passes");
        assert_eq!(a, b, "seed {seed} replays identically");
    }
    let a = run_seed::<Insecure>(1, 2_000, 20_000).expect("seed passes");
    let b = run_seed::<Insecure>(2, 2_000, 20_000).expect("seed passes");
    assert_ne!(a.0, b.0, "different seeds, different traces");
}

#[test]
fn bls_seeds_run_with_real_signatures() {
    for seed in 0..env_u64("HUDS_SIM_BLS_SEEDS").unwrap_or(5) {
        if let Err(e) = run_seed::<Bls>(seed, 1_500, 20_000) {
            panic!("BLS seed {seed} failed: {e}");
        }
    }
}

/// The checkers themselves: a conflicting finalised block, or a certificate without a quorum, is reported.
#[test]
fn the_checkers_catch_conflicts_and_weak_certificates() {
    let mut sim = Sim::<Insecure>::new(5, 1_000, 20_000);
    sim.run().expect("seed 5 passes");
    let chain_id = sim.genesis.params.chain_id;
    let node = (0..sim.nodes.len())
        .find(|i| sim.nodes[*i].shard == 0 && sim.nodes[*i].byzantine.is_none())
        .expect("an honest member of shard 0");
    let (real, _) = sim.finalised[&(ShardId(0), 1)];
    let replica = sim.nodes[node]
        .replica
        .as_ref()
        .expect("live after healing");
    let (mut fake, _) = replica.app().committed(1).expect("height 1 is stored");
    assert_eq!(fake.hash(), real);
    fake.header.state_root = [0xee; 32];
    let hash = fake.hash();
    let members: Vec<(MemberIndex, [u8; 32])> = sim
        .nodes
        .iter()
        .filter(|n| n.shard == 0)
        .map(|n| (n.index, n.secret))
        .collect();
    let votes: Vec<Vote<Insecure>> = members
        .iter()
        .map(|(i, secret)| {
            Vote::sign(
                chain_id,
                ShardId(0),
                VoteKind::Precommit,
                1,
                0,
                Some(hash),
                *i,
                secret,
            )
        })
        .collect();
    let committee = sim.committees[0].clone();
    let all: Vec<&Vote<Insecure>> = votes.iter().collect();
    let strong = QuorumCertificate::aggregate(&committee, &all, hash).expect("aggregates");
    let conflict = sim
        .on_commit(node, 1, &fake, &strong)
        .expect_err("a second block at (0, 1) is caught");
    assert!(conflict.contains("two different blocks"), "{conflict}");
    let weak = QuorumCertificate::aggregate(&committee, &all[..1], hash).expect("aggregates");
    let weak = sim
        .on_commit(node, 1, &fake, &weak)
        .expect_err("a one-signer certificate is caught");
    assert!(weak.contains("carries"), "{weak}");
}
