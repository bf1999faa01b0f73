//! A validator as one sans-IO state machine: [`Node`] keeps the beacon lane and the shard lane, decides
//! everything a validator decides (roles and hand-offs at epoch boundaries, catch-up: whom to ask for
//! blocks and how much to serve to whom, the
//! Atomix relay schedule, head duty, evidence, transaction admission, commit notices, status) and tells its
//! driver what to do as [`Output`]s: publish these bytes on this topic, subscribe to that topic, check these
//! signatures, announce this commit, ask this peer for blocks, answer that peer's request.
//!
//! The driver owns the sockets, the timers and the disk. It calls [`Node::handle`] with its clock in
//! milliseconds (`now_ms`) and an [`Input`] (a timer fired, gossip arrived, a batch's signatures were
//! checked), drains [`Node::poll_output`], and sleeps until [`Node::poll_timeout`]. The tokio/libp2p driver
//! in `chain-node` and the simulator in `chain/tests` run this same code; neither decides anything of its own.
//!
//! Nothing a peer sends can panic it: envelopes are length-checked and decoded into typed errors, and the
//! replica and follower check every signature and certificate themselves.

use crate::ids::MemberIndex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::address::Address;
use crate::beacon::{BeaconApp, BeaconState, LinkError};
use crate::bft::{
    self, Bls, Committee, Evidence, FOLLOWER, Followed, Message, Output as ReplicaOutput,
    QuorumCertificate, ReplicaError,
};
use crate::block::{BEACON_SHARD, Block, BlockHeader, CrossLink};
use crate::crypto::{Hash, bls};
use crate::genesis::Genesis;
use crate::ledger::{App, LedgerError, ShardApp, Tip};
use crate::registry::{LINK_EVENTS_MAX, RegistryBatch};
use crate::state::Proven;
use crate::store::{Store, StoreError};
use crate::types::deal::{DealRecord, DealTerms};
use crate::types::storage_proof::ProofTx;
use crate::types::volume::VolumeVersion;
use crate::{Account, ShardId, SignedTransaction, State, TxError, spv};

use super::catch_up::{self, CatchUp, Peer, ServeBudget};
use super::lane::Lane as AnyLane;
use super::schedule::{
    self, BEACON_COMMIT_WAIT_MS, EvidenceSent, RELAY_ATTEMPTS, RELAY_FIRST_RETRY_MS,
    RELAY_ON_OPEN_HEIGHTS, Relay, RelaySchedule,
};
use super::wire::{self, BlocksAnswer, BlocksRequest, Envelope, TX_BATCH_MAX};

/// A lane of a validator: BLS votes, as on the beacon chain.
type Lane<A> = AnyLane<Bls, A>;

/// Outputs waiting for the driver; past this the oldest gossip is dropped (a driver that stops draining
/// would otherwise grow it without bound; consensus re-sends what matters). The driver drains after every
/// event, so in practice one event's outputs wait.
pub const OUTPUTS_QUEUED_MAX: usize = 65_536;

/// Pooled inbounds a member leaving its committee publishes for the next one, at most (see
/// [`Node::handle`]'s reconcile): one burst per role change, bounded.
pub const INBOUNDS_HANDED_ON_MAX: usize = 256;

/// Blocks whose on-request relays are remembered (see [`Node::relay_lock`]); past this, requests wait until
/// old ones expire.
pub const RELAYS_ASKED_MAX: usize = 4096;

/// Where a validator's chains live: the driver opens one store per lane (`beacon`, `shard-<s>`), on
/// RocksDB in the node and in memory in the simulator. A store opened again after a crash holds exactly
/// the batches written before it.
pub trait Disk {
    type Store: Store;
    fn open(&mut self, name: &str) -> Result<Self::Store, StoreError>;
}

/// The gossip topics a validator uses. The names carry the chain id (see [`Topic::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Shards' heads: every validator listens, the beacon chain links them.
    Heads,
    /// The beacon chain's consensus messages and evidence of faults.
    Beacon,
    /// A shard's consensus messages, transactions and the Atomix locks relayed to it.
    Shard(ShardId),
}

impl Topic {
    /// The gossipsub topic name.
    pub fn name(self, chain_id: u32) -> String {
        match self {
            Topic::Heads => format!("/ios/{chain_id:08x}/beacon/1"),
            Topic::Beacon => format!("/ios/{chain_id:08x}/beacon-bft/1"),
            Topic::Shard(shard) => format!("/ios/{chain_id:08x}/shard/{shard}/1"),
        }
    }

    /// The topic of a lane's consensus messages: the beacon's, or a shard's.
    pub fn of_lane(shard: ShardId) -> Topic {
        if shard == BEACON_SHARD {
            Topic::Beacon
        } else {
            Topic::Shard(shard)
        }
    }
}

/// How a validator runs; the same for the node and the simulator.
#[derive(Clone)]
pub struct NodeConfig {
    pub genesis: Arc<Genesis>,
    /// Members of every committee (the shards' and the beacon's), as in genesis.
    pub committee_size: usize,
    /// Shard heights an era lasts at most (0: no epoch changes). The same for every validator of a chain.
    pub epoch_length: u64,
    /// Beacon blocks per epoch (0: `beacon::default_epoch_blocks(epoch_length)`). The same for every
    /// validator of a chain.
    pub epoch_blocks: u64,
    /// The validator's account and its BLS vote key.
    pub account: Address,
    pub bls_secret: bls::SecretKey,
    /// Transactions per block, at most `chain::block::BLOCK_TXS_MAX`.
    pub block_txs_max: usize,
    /// Consensus timing per (chain id, shard); `None`: `bft::Config::new`. The beacon's commit wait is
    /// at least [`BEACON_COMMIT_WAIT_MS`] either way.
    pub bft: Option<fn(u32, ShardId) -> bft::Config>,
}

impl NodeConfig {
    fn bft_config(&self, shard: ShardId) -> bft::Config {
        let chain_id = self.genesis.params.chain_id;
        let mut c = match self.bft {
            Some(f) => f(chain_id, shard),
            None => bft::Config::new(chain_id, shard),
        };
        if shard == BEACON_SHARD {
            c.commit_wait_ms = c.commit_wait_ms.max(BEACON_COMMIT_WAIT_MS);
        }
        // A replica never answers a gossiped `Status` with blocks: anyone can send one, and every member
        // would publish blocks to the whole topic. Catch-up goes over request-response instead, to the one
        // peer that asked (see `catch_up`).
        c.catch_up_blocks_max = 0;
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening the ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("resuming consensus: {0}")]
    Replica(#[from] ReplicaError),
    #[error("opening a chain store: {0}")]
    Store(#[from] StoreError),
    #[error("applying a finalised block: {0}")]
    Follower(String),
}

/// What the driver gives the node.
#[derive(Debug)]
pub enum Input {
    /// A timer fired (the one [`Node::poll_timeout`] asked for, or any other: ticks are idempotent).
    Tick,
    /// A gossip message arrived on `topic` (bytes exactly as a peer sent them) from `peer`, the peer of the
    /// connection it came in on (which may have relayed it): whom a `Status` in it makes worth asking.
    Gossip {
        peer: Peer,
        topic: Topic,
        data: Vec<u8>,
    },
    /// `peer` asks for finalised blocks (a [`wire::BlocksRequest`], bytes as it sent them). The node answers
    /// with exactly one [`Output::AnswerBlocks`] of the same `id` before this call returns.
    BlocksRequest { peer: Peer, id: u64, data: Vec<u8> },
    /// The answer of `peer` to [`Output::AskBlocks`] `id` (`None`: the request failed: refused, timed out,
    /// connection lost, or an answer over [`wire::CATCH_UP_ANSWER_BYTES_MAX`] bytes).
    BlocksAnswer {
        id: u64,
        peer: Peer,
        data: Option<Vec<u8>>,
    },
    /// A gossiped batch whose signatures the driver checked, as [`Output::Verify`] asked.
    Verified {
        txs: Vec<SignedTransaction>,
        signatures_ok: Vec<bool>,
    },
}

/// What the node asks its driver to do, in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Publish `bytes` (an encoded [`Envelope`]) on `topic`. Delivery is best effort: consensus re-sends
    /// what matters.
    Publish { topic: Topic, bytes: Vec<u8> },
    /// Subscribe to a topic (a shard lane opened). Topics are never left: see [`Node::handle`].
    Subscribe(Topic),
    /// Check the signatures of a gossiped batch (off the node's thread if the driver likes) and give it
    /// back as [`Input::Verified`].
    Verify(Vec<SignedTransaction>),
    /// A block of either lane was committed here.
    Committed(Arc<CommitNotice>),
    /// Send `bytes` (a [`wire::BlocksRequest`]) to `peer` over the catch-up protocol and give its answer
    /// back as [`Input::BlocksAnswer`] with this `id` (or `None` if it fails).
    AskBlocks { id: u64, peer: Peer, bytes: Vec<u8> },
    /// Answer the [`Input::BlocksRequest`] `id` with `bytes`.
    AnswerBlocks { id: u64, bytes: Vec<u8> },
}

/// One committed block, as clients waiting for finality see it.
#[derive(Debug, Clone)]
pub struct CommitNotice {
    pub shard: ShardId,
    pub height: u64,
    pub block: Hash,
    /// The committee member that proposed it (the proposer of the round its certificate is from).
    pub proposer: Address,
    pub tx_ids: Vec<Hash>,
    /// The transactions of other shards whose Atomix locks the block committed here.
    pub inbound_ids: Vec<Hash>,
    /// The block's state root.
    pub state_root: Hash,
    /// Whether this validator decided it as a member (else it followed).
    pub member: bool,
    /// The storage proofs the block carried (each paid a holder a period).
    pub proofs: u32,
}

impl CommitNotice {
    /// Whether the block committed the Atomix lock of transaction `id` (of another shard).
    pub fn commits_lock(&self, id: &Hash) -> bool {
        self.inbound_ids.contains(id)
    }
}

/// The latest certified block of a shard that this validator knows of: its own shard's from its commits, the
/// others' from heads gossiped on the heads topic, each checked against the shard's committee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHead {
    pub height: u64,
    pub block: Hash,
    pub state_root: Hash,
}

/// The chain a validator keeps (its shard lane's, else its beacon lane's) as of its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneStatus {
    pub shard: ShardId,
    pub height: u64,
    pub tip: Hash,
    pub state_root: Hash,
    pub round: u32,
    /// The epoch of the height being decided.
    pub epoch: u64,
    /// Whether it is a member of the committee deciding it (else it follows).
    pub member: bool,
}

/// The beacon chain at a validator's beacon tip.
#[derive(Debug, Clone)]
pub struct BeaconView {
    pub height: u64,
    pub tip: Hash,
    pub state: Arc<BeaconState>,
    /// Whether the validator sits on the beacon committee (else it follows the beacon chain).
    pub member: bool,
}

/// The storage economy of one shard at a validator's tip: what the status page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Economy {
    pub shard: ShardId,
    pub height: u64,
    /// Deals whose periods or last proof window have not ended.
    pub deals_active: u64,
    /// What every deal of the shard still escrows, has paid its holders, and has refunded its owners.
    pub escrow_left: u128,
    pub paid: u128,
    pub refunded: u128,
    /// Storage proofs waiting in this validator's pool.
    pub proofs_waiting: u64,
}

/// A shard's open repair orders: the shard, and per order its deal, slot and where the slot stands.
pub type RepairOrders = (ShardId, Vec<(Hash, u8, Proven)>);

/// A storage deal as the validator of its shard sees it at its tip: what a holder's prover asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealView {
    pub shard: ShardId,
    pub record: DealRecord,
    pub terms: DealTerms,
    /// The height of the next block, which proofs submitted now go into.
    pub next_height: u64,
    /// The period a proof in that block answers, if any is provable then.
    pub provable: Option<u64>,
    /// The seed that period's challenge is drawn from.
    pub seed: Hash,
    /// Per holder, in the terms' order, where its proofs stand.
    pub proven: Vec<Proven>,
    /// Per holder slot, the key that holds it now (the taker of its repair order if one took it over).
    pub keys: Vec<crate::crypto::PublicKey>,
}

/// A volume as the validator of its owner's shard sees it at its tip: its newest version, and a page of its
/// versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    pub shard: ShardId,
    /// The tip's height.
    pub height: u64,
    /// The newest version (0: never published).
    pub head: u64,
    /// Versions after the one asked from, oldest first.
    pub versions: Vec<(u64, VolumeVersion)>,
}

/// Where an Atomix transfer stands on the shard a validator keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtomixStatus {
    /// The shard the answer is about (`None`: the validator keeps no shard).
    pub shard: Option<ShardId>,
    /// The transaction was made on this shard and locked value for another.
    pub locked: bool,
    /// This shard committed the lock (credited its recipient).
    pub committed: bool,
}

/// What a proof is asked for.
#[derive(Debug, Clone)]
pub enum ProofOf {
    Account(Address),
    Tx(Hash),
    /// A durability receipt of the deal with this id, opened on this shard.
    Deal(Hash),
    /// A version of the volume `(owner, name)`, and whether it is the newest.
    Volume {
        owner: Address,
        name: String,
        version: u64,
    },
}

/// A commit of either lane, whoever produced it (replica or follower).
struct Commit {
    shard: ShardId,
    block: Arc<Block>,
    certificate: QuorumCertificate<Bls>,
    /// The member index that should publish the head, if this validator is a member.
    member: Option<MemberIndex>,
    committee: Committee<Bls>,
}

/// A validator: its beacon lane, its shard lane, and its schedule.
pub struct Node<D: Disk> {
    config: NodeConfig,
    disk: D,
    /// Whether this validator keeps the beacon chain: every validator when epochs change (to know each
    /// epoch's committees), else only the beacon committee's members.
    follows_beacon: bool,
    /// Always present; an `Option` only so a role change can move it.
    beacon: Option<Lane<BeaconApp<D::Store>>>,
    shard: Option<Lane<ShardApp<D::Store>>>,
    /// The beacon state of the beacon lane's tip.
    known: Arc<BeaconState>,
    chain_id: u32,
    now_ms: u64,
    outputs: VecDeque<Output>,
    heads: Vec<Option<ShardHead>>,
    status: LaneStatus,
    beacon_member: bool,
    evidence: u64,
    /// Whom this validator asks for the blocks it misses.
    catch_up: CatchUp,
    /// What it still serves to whom.
    serve: ServeBudget,
    /// While answering a votes request: the votes the replica sends (see `serve_votes`).
    capture: Option<Vec<bft::Vote<Bls>>>,
    relays: RelaySchedule,
    evidence_sent: EvidenceSent,
    /// When this validator next repeats its shard's head if the beacon's link lags (see
    /// [`schedule::HEAD_REPEAT_MS`]).
    head_repeat_at: u64,
    /// When the shard lane last committed a block (or opened): a lane idle for a repeat interval publishes
    /// its tip's head again if the beacon's link lags it (see [`Node::repeat_head`]).
    shard_commit_at: u64,
    /// A follower's failure to apply a block, reported by the next [`Node::handle`].
    halted: Option<NodeError>,
    /// Blocks (shard, height) whose locks a client asked to relay again, and when (see [`Node::relay_lock`]).
    relay_asked: BTreeMap<(ShardId, u64), u64>,
}

impl<D: Disk> Node<D> {
    /// Opens the validator's beacon store (resuming where it stopped) and the shard lane its seat needs,
    /// at `now_ms`. The topics to subscribe to come out as [`Output::Subscribe`].
    pub fn new(config: NodeConfig, mut disk: D, now_ms: u64) -> Result<Self, NodeError> {
        let chain_id = config.genesis.params.chain_id;
        let app = BeaconApp::open_with(
            &config.genesis,
            config.committee_size,
            config.epoch_length,
            config.epoch_blocks,
            disk.open("beacon")?,
        )?;
        let seat = app.state().seat_of(&config.account);
        // With fixed committees only the beacon's own members keep the beacon chain; with epochs every
        // validator follows it, to know each epoch's committees.
        let follows_beacon =
            config.epoch_length > 0 || seat.is_some_and(|a| a.shard == BEACON_SHARD);
        let known = Arc::new(app.state().clone());
        let shard_count = usize::from(known.shard_count());
        let Tip { height, hash: tip } = app.tip();
        let beacon = Lane::follower(chain_id, BEACON_SHARD, app);
        let mut node = Node {
            follows_beacon,
            beacon: Some(beacon),
            shard: None,
            known,
            chain_id,
            now_ms,
            outputs: VecDeque::new(),
            heads: vec![None; shard_count],
            status: LaneStatus {
                shard: BEACON_SHARD,
                height,
                tip,
                state_root: [0; 32],
                round: 0,
                epoch: 0,
                member: false,
            },
            beacon_member: false,
            evidence: 0,
            catch_up: CatchUp::default(),
            serve: ServeBudget::default(),
            capture: None,
            relays: RelaySchedule::default(),
            evidence_sent: EvidenceSent::default(),
            head_repeat_at: now_ms.saturating_add(schedule::HEAD_REPEAT_MS),
            shard_commit_at: now_ms,
            halted: None,
            relay_asked: BTreeMap::new(),
            config,
            disk,
        };
        node.push(Output::Subscribe(Topic::Heads));
        if follows_beacon {
            node.push(Output::Subscribe(Topic::Beacon));
        }
        // The seat's shard is subscribed here even before its lane opens, so the mesh forms early.
        if let Some(a) = seat.filter(|a| a.shard != BEACON_SHARD) {
            node.push(Output::Subscribe(Topic::Shard(a.shard)));
        }
        node.reconcile()?;
        node.publish_status(None);
        node.handle(now_ms, Input::Tick)?;
        Ok(node)
    }

    /// Feeds one input at `now_ms` (never earlier than the last call's). Afterwards the lanes sit in the
    /// roles the beacon state gives them. An error means a store failed: the node must stop, and the
    /// driver drops it (a restart opens it again on its stores).
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<(), NodeError> {
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Tick => self.tick(),
            Input::Gossip { peer, topic, data } => self.on_gossip(peer, topic, &data),
            Input::BlocksRequest { peer, id, data } => {
                let bytes = self.serve_blocks(&peer, &data);
                self.push(Output::AnswerBlocks { id, bytes });
            }
            Input::BlocksAnswer { id, peer, data } => self.on_blocks_answer(id, &peer, data),
            Input::Verified { txs, signatures_ok } => {
                if let Some(lane) = self.shard.as_mut() {
                    lane.app_mut().submit_verified(txs, &signatures_ok);
                }
            }
        }
        self.after_event()
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the node next wants an [`Input::Tick`], in the driver's `now_ms`.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.beacon.as_ref().and_then(|l| l.poll_timeout()),
            self.shard.as_ref().and_then(|l| l.poll_timeout()),
            self.relays.next_due(),
            self.catch_up.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether this validator keeps the beacon chain (and so listens on [`Topic::Beacon`]).
    pub fn follows_beacon(&self) -> bool {
        self.follows_beacon
    }

    pub fn account(&self) -> &Address {
        &self.config.account
    }

    /// The shard this validator keeps, if it keeps one.
    pub fn shard(&self) -> Option<ShardId> {
        self.shard.as_ref().map(|l| l.shard)
    }

    /// Its shard lane's chain, else its beacon lane's, as of the last event.
    pub fn status(&self) -> &LaneStatus {
        &self.status
    }

    /// The newest certified head of every shard that this validator knows, in shard order.
    pub fn heads(&self) -> &[Option<ShardHead>] {
        &self.heads
    }

    /// The beacon chain at this validator's beacon tip.
    pub fn beacon_view(&self) -> BeaconView {
        let Tip { height, hash: tip } = self.beacon().app().tip();
        BeaconView {
            height,
            tip,
            state: self.known.clone(),
            member: self.beacon_member,
        }
    }

    /// The beacon ledger (read-only).
    pub fn beacon_app(&self) -> &BeaconApp<D::Store> {
        self.beacon().app()
    }

    /// The shard ledger, if a shard lane is open (read-only).
    pub fn shard_app(&self) -> Option<&ShardApp<D::Store>> {
        self.shard.as_ref().map(|l| l.app())
    }

    /// Whether client transactions can be admitted here (only a shard lane takes them).
    pub fn takes_transactions(&self) -> bool {
        self.shard.is_some()
    }

    /// Admits a client's batch whose signatures the driver checked; the accepted ones are gossiped to the
    /// shard's other validators. Without a shard lane every one is refused.
    pub fn submit(
        &mut self,
        now_ms: u64,
        txs: Vec<SignedTransaction>,
        signatures_ok: &[bool],
    ) -> Vec<Result<(), TxError>> {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(lane) = self.shard.as_mut() else {
            return self.refuse(&txs);
        };
        let results = lane.app_mut().submit_verified(txs.clone(), signatures_ok);
        let topic = Topic::Shard(lane.shard);
        let accepted: Vec<SignedTransaction> = txs
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tx, _)| tx)
            .collect();
        for batch in accepted.chunks(TX_BATCH_MAX) {
            self.publish(topic, wire::encode_transactions(batch));
        }
        results
    }

    /// Refusals for transactions sent to a validator without a shard lane: the beacon chain takes none.
    pub fn refuse(&self, txs: &[SignedTransaction]) -> Vec<Result<(), TxError>> {
        let shards = self.known.shard_count();
        txs.iter()
            .map(|tx| {
                Err(TxError::WrongShard {
                    shard: BEACON_SHARD,
                    sender_shard: crate::shard_of(&tx.tx.sender_address(), shards),
                })
            })
            .collect()
    }

    /// An account on the shard this validator keeps.
    pub fn account_of(&self, address: &Address) -> Option<Account> {
        self.shard
            .as_ref()
            .and_then(|l| l.app().state().account(address).cloned())
    }

    /// A deal on the shard this validator keeps, as its holders' provers need it; None if it keeps no
    /// such deal.
    pub fn deal(&self, id: &Hash) -> Option<DealView> {
        let lane = self.shard.as_ref()?;
        let app = lane.app();
        let state = app.state();
        let record = state.deal(id)?.clone();
        let terms = state.terms(id)?.clone();
        let tip = app.tip();
        let next_height = tip.height + 1;
        Some(DealView {
            shard: lane.shard,
            proven: (0..terms.holders.len())
                .map(|h| state.proven(id, h as u8))
                .collect(),
            keys: (0..terms.holders.len())
                .filter_map(|h| state.holder_key(id, h as u8))
                .collect(),
            record,
            terms,
            next_height,
            provable: state.provable_next(id, next_height, &tip.hash),
            seed: state.seed_for(next_height, &tip.hash).1,
        })
    }

    /// What a holder proof of `key` in the next block of the shard this validator keeps must answer, with the
    /// shard; None if it keeps no shard or the key has no slot to prove there.
    pub fn holder_due(
        &self,
        key: &crate::crypto::PublicKey,
    ) -> Option<(ShardId, crate::state::HolderDue)> {
        let lane = self.shard.as_ref()?;
        let app = lane.app();
        let tip = app.tip();
        let due = app.state().holder_due(key, tip.height + 1, &tip.hash)?;
        Some((lane.shard, due))
    }

    /// The open repair orders of the shard this validator keeps, at its tip, at most `limit` (deal, slot and
    /// where the slot stands); None if it keeps no shard.
    pub fn repair_orders(&self, limit: usize) -> Option<RepairOrders> {
        let lane = self.shard.as_ref()?;
        let state = lane.app().state();
        let orders = state
            .repair_orders()
            .take(limit)
            .map(|(id, h, p)| (*id, h, *p))
            .collect();
        Some((lane.shard, orders))
    }

    /// The storage economy of the shard this validator keeps, at its tip (a pass over its deals); None if
    /// it keeps no shard.
    pub fn economy(&self) -> Option<Economy> {
        let lane = self.shard.as_ref()?;
        let app = lane.app();
        let height = app.tip().height;
        let mut e = Economy {
            shard: lane.shard,
            height,
            proofs_waiting: app.proofs_waiting() as u64,
            ..Economy::default()
        };
        for (_, d) in app.state().deals() {
            e.deals_active += u64::from(height <= d.settled_after());
            e.escrow_left += u128::from(d.escrow_left.0);
            e.paid += u128::from(d.paid.0);
            e.refunded += u128::from(d.refunded.0);
        }
        Some(e)
    }

    /// The ids of the deals `owner` opened on the shard this validator keeps, in id order after `after`,
    /// at most `limit` of them; None if this validator keeps no shard.
    pub fn deals_of(
        &self,
        owner: &Address,
        after: Option<Hash>,
        limit: usize,
    ) -> Option<Vec<Hash>> {
        let lane = self.shard.as_ref()?;
        Some(
            lane.app()
                .state()
                .deals_of(owner, after)
                .take(limit)
                .copied()
                .collect(),
        )
    }

    /// Volume `id` at the tip of the shard this validator keeps: its head and at most `limit` versions after
    /// `after`; None if it keeps no shard.
    pub fn volume(&self, id: &Hash, after: u64, limit: usize) -> Option<VolumeView> {
        let lane = self.shard.as_ref()?;
        let app = lane.app();
        let state = app.state();
        Some(VolumeView {
            shard: lane.shard,
            height: app.tip().height,
            head: state.volume_head(id),
            versions: state
                .volume_versions(id, after)
                .take(limit)
                .map(|(n, v)| (n, v.clone()))
                .collect(),
        })
    }

    /// Admits a storage proof to the pool of the shard this validator keeps and gossips it to the
    /// committee; None if this validator keeps no shard holding its deal (for a holder proof: no shard where
    /// its key has a slot to prove in the next block).
    pub fn submit_proof(&mut self, proof: ProofTx) -> Option<Result<(), crate::ledger::PoolError>> {
        let lane = self.shard.as_mut()?;
        match &proof {
            ProofTx::Slot(p) => {
                lane.app().state().deal(&p.deal)?;
            }
            ProofTx::Holder(p) => {
                // Whether the key has slots here (the draw itself is the pool's check).
                let app = lane.app();
                let tip = app.tip();
                let (end, _) = app.state().seed_for(tip.height + 1, &tip.hash);
                if app
                    .state()
                    .holder_slots(&p.key, tip.height + 1, end)
                    .is_empty()
                {
                    return None;
                }
            }
        }
        let topic = Topic::Shard(lane.shard);
        let bytes = wire::encode_proof(&proof);
        let result = lane.app_mut().submit_proof(proof);
        // Published again when it is already waiting here: the prover asks again while its proof waits, and
        // a peer that refused the first copy (its tip a block off at the window's edge, its pool full) may
        // take this one.
        if matches!(result, Ok(()) | Err(crate::ledger::PoolError::Duplicate)) {
            self.publish(topic, bytes);
        }
        Some(result)
    }

    /// Where an Atomix transfer stands on the shard this validator keeps.
    pub fn atomix(&self, tx: &Hash) -> AtomixStatus {
        self.shard.as_ref().map_or(AtomixStatus::default(), |l| {
            let state = l.app().state();
            AtomixStatus {
                shard: Some(l.shard),
                locked: state.is_locked(tx),
                committed: state.is_committed(tx),
            }
        })
    }

    /// Relays the Atomix lock that transaction `tx` made on this validator's shard again, now (a client's
    /// nudge when its transfer seems stuck); whether this shard holds such a lock (then its block was relayed,
    /// now or by a request within the last [`RELAY_FIRST_RETRY_MS`]). A relay rebuilds the proofs of its whole
    /// block and the API is open to anyone, so the throttle is per block, not per transaction, and only real
    /// locks are remembered: asking for every transfer of a block, or for random hashes, costs one relay.
    pub fn relay_lock(&mut self, now_ms: u64, tx: &Hash) -> bool {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let Some((shard, height)) = self.shard.as_ref().and_then(|l| {
            let app = l.app();
            let height = app.height_of_tx(tx)?;
            app.state().is_locked(tx).then_some((l.shard, height))
        }) else {
            return false;
        };
        let recent = |at: &u64| now.saturating_sub(*at) < RELAY_FIRST_RETRY_MS;
        if self.relay_asked.get(&(shard, height)).is_some_and(recent) {
            return true;
        }
        if self.relay_asked.len() >= RELAYS_ASKED_MAX {
            self.relay_asked.retain(|_, at| recent(at));
            if self.relay_asked.len() >= RELAYS_ASKED_MAX {
                return true;
            }
        }
        self.relay_asked.insert((shard, height), now);
        let relay = Relay {
            shard,
            from: height,
            to: height,
            attempt: 0,
        };
        self.relay(relay, false);
        true
    }

    /// A proof against the shard lane's tip.
    pub fn prove(&self, what: ProofOf) -> Option<spv::Proof> {
        self.shard.as_ref().and_then(|l| match what {
            ProofOf::Account(a) => l.app().prove_account(&a).map(spv::Proof::Account),
            ProofOf::Tx(id) => l.app().prove_tx(&id).map(spv::Proof::Tx),
            // A store that cannot be read proves nothing; the caller says so as it would for no block.
            ProofOf::Deal(id) => l.app().prove_deal(&id).ok().flatten().map(spv::Proof::Deal),
            ProofOf::Volume {
                owner,
                name,
                version,
            } => l
                .app()
                .prove_volume(&owner, &name, version)
                .map(spv::Proof::Volume),
        })
    }

    /// The proofs of the epochs after `after` that the beacon lane holds, at most `spv::EPOCH_PROOFS_MAX`.
    pub fn epoch_proofs(&self, after: u64) -> Vec<spv::EpochProof> {
        let app = self.beacon().app();
        (after.saturating_add(1)..=app.state().epoch())
            .take(spv::EPOCH_PROOFS_MAX)
            .map_while(|e| app.epoch_proof(e))
            .collect()
    }

    /// One line per lane on what it waits for.
    pub fn describe(&self) -> String {
        let lanes: Vec<String> = std::iter::once(self.beacon().describe())
            .chain(self.shard.as_ref().map(|l| l.describe()))
            .collect();
        lanes.join("; ")
    }

    /// Gives the disk back (the simulator's restart reopens the same stores).
    pub fn into_disk(self) -> D {
        self.disk
    }

    fn beacon(&self) -> &Lane<BeaconApp<D::Store>> {
        self.beacon
            .as_ref()
            .expect("the beacon lane is only moved out inside reconcile")
    }

    fn beacon_mut(&mut self) -> &mut Lane<BeaconApp<D::Store>> {
        self.beacon
            .as_mut()
            .expect("the beacon lane is only moved out inside reconcile")
    }

    fn push(&mut self, output: Output) {
        // Only gossip is dropped (consensus re-sends what matters); a subscription, a commit notice, an
        // ask (its answer is awaited) or an answer (the driver holds the request open for it) never is.
        if self.outputs.len() >= OUTPUTS_QUEUED_MAX
            && let Some(i) = self
                .outputs
                .iter()
                .position(|o| matches!(o, Output::Publish { .. }))
        {
            self.outputs.remove(i);
        }
        self.outputs.push_back(output);
    }

    fn publish(&mut self, topic: Topic, bytes: Vec<u8>) {
        self.push(Output::Publish { topic, bytes });
    }

    /// After every event: publish what the lanes produced, move them to the roles the beacon state says,
    /// and stop if a ledger's store failed.
    fn after_event(&mut self) -> Result<(), NodeError> {
        self.flush();
        self.reconcile()?;
        self.flush();
        self.ask_blocks();
        self.refresh_round();
        if let Some(e) = self
            .beacon()
            .halted()
            .cloned()
            .or_else(|| self.shard.as_ref().and_then(|l| l.halted().cloned()))
        {
            return Err(NodeError::Ledger(LedgerError::Store(e)));
        }
        if let Some(e) = self.halted.take() {
            return Err(e);
        }
        Ok(())
    }

    /// Records that a follower could not apply a finalised block (its store failed): the node must stop,
    /// as a member's replica halts on the same failure.
    fn halt(&mut self, e: impl std::fmt::Display) {
        self.halted
            .get_or_insert(NodeError::Follower(e.to_string()));
    }

    fn tick(&mut self) {
        let now = self.now_ms;
        self.beacon_mut().tick(now);
        if let Some(lane) = self.shard.as_mut() {
            lane.tick(now);
        }
        while let Some(relay) = self.relays.pop_due(now) {
            self.relay(relay, true);
        }
        if now >= self.head_repeat_at {
            self.head_repeat_at = now.saturating_add(schedule::HEAD_REPEAT_MS);
            self.repeat_head();
        }
    }

    /// Publishes the shard lane's tip head again if this validator's beacon lane shows the shard's link
    /// lagging (see [`schedule::head_lags`]) and this validator sits on the committee that certified the
    /// tip. Only with epochs on: without them the beacon's state here may be genesis's forever.
    fn repeat_head(&mut self) {
        if !self.follows_beacon || self.config.epoch_length == 0 {
            return;
        }
        let Some(lane) = self.shard.as_ref() else {
            return;
        };
        let shard = lane.shard;
        let tip = lane.app().tip().height;
        let beacon = self.beacon().app();
        let linked = self
            .known
            .links
            .get(usize::from(shard))
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.height);
        // Held: the link has not moved since the beacon's last draw (at the next one a shard in that state is
        // taken for stalled and its committee redrawn from the link, giving up what lies above it), the lane
        // committed nothing for a repeat interval, or the shard waits at the end of its era.
        let unmoved = self.known.linked_at_draw.get(usize::from(shard)) == Some(&linked);
        let idle = self.now_ms.saturating_sub(self.shard_commit_at) >= schedule::HEAD_REPEAT_MS;
        let waiting = beacon.committee_at(shard, tip + 1).is_none();
        if tip == 0 || !schedule::head_lags(tip, linked, unmoved || idle || waiting) {
            return;
        }
        let on_committee = beacon
            .committee_at(shard, tip)
            .is_some_and(|c| super::lane::index_in(&c, &self.config.account).is_some());
        if !on_committee {
            return;
        }
        let Some((block, certificate)) = lane.app().committed(tip) else {
            return;
        };
        let Ok(certificate) = QuorumCertificate::<Bls>::decode(&certificate) else {
            return;
        };
        let head = wire::Head {
            header: block.header,
            certificate,
            registry: self.registry_batch(shard, tip),
        };
        tracing::debug!(account = %self.config.account, shard = %shard, tip, linked, "repeating a lagging head");
        self.publish(Topic::Heads, wire::encode_head(&head));
    }

    /// Which shard the shard lane should keep, and in which role (see [`super::plan`]).
    fn reconcile(&mut self) -> Result<(), NodeError> {
        let account = self.config.account;
        let now = self.now_ms;
        // The beacon lane: a member of the newest epoch's beacon committee (which certifies its next block).
        let want = super::plan::beacon_role(&self.known, &account);
        let lane = self.beacon.take().expect("present outside reconcile");
        let config = self.config.bft_config(BEACON_SHARD);
        self.beacon = Some(lane.set_role(want, config, &self.config.bls_secret, now)?);
        // The view says the role now, not the role of the last commit.
        self.beacon_member = self.beacon().member().is_some();

        let current = self.shard.as_ref().map(|l| (l.shard, l.height()));
        let target = super::plan::shard_target(self.beacon().app(), &account, current);
        if self.shard.as_ref().map(|l| l.shard) != target {
            // The old lane's topic stays subscribed: gossipsub answers an unsubscribe with prunes and
            // backoffs, and a validator that comes back to that shard within them would not hear its
            // committee. Messages of a shard without a lane here are dropped on arrival.
            self.shard = None;
            if let Some(shard) = target {
                self.open_shard(shard)?;
            }
            self.publish_status(None);
        }
        if let Some(lane) = self.shard.take() {
            let want =
                super::plan::shard_role(self.beacon().app(), &account, lane.shard, lane.height());
            let was_member = lane.member().is_some();
            let config = self.config.bft_config(lane.shard);
            let lane = lane.set_role(want, config, &self.config.bls_secret, now)?;
            let changed = was_member != lane.member().is_some();
            // A member that leaves its committee hands the inbounds waiting in its pool to the next one,
            // whose members may have opened their lanes after the relays went out (a stalled shard's
            // committee drawn afresh); its own relays' retries are one member's and may be gone with it.
            let handed = if was_member && lane.member().is_none() {
                lane.app().pooled_inbounds(INBOUNDS_HANDED_ON_MAX)
            } else {
                Vec::new()
            };
            let topic = Topic::Shard(lane.shard);
            // A member that joins its shard's committee relays the locks of the recent heights again, as at
            // a lane opening: the retries of those heights were the members' who may have left with the
            // era, and an output shard that stalled longer than the beacon keeps their eras can only
            // commit them proven against a newer header.
            if !was_member && lane.member().is_some() {
                let height = lane.app().tip().height;
                self.relays.plan(
                    now.saturating_add(RELAY_FIRST_RETRY_MS),
                    Relay {
                        shard: lane.shard,
                        from: height.saturating_sub(RELAY_ON_OPEN_HEIGHTS),
                        to: height,
                        // Once: the heights' own retries are their committee's; this pass only carries
                        // their locks across the change of members.
                        attempt: RELAY_ATTEMPTS - 1,
                    },
                );
            }
            self.shard = Some(lane);
            for inbound in handed {
                if let Some(bytes) = wire::encode_inbound(&inbound) {
                    self.publish(topic, bytes);
                }
            }
            if changed {
                self.publish_status(None);
            }
        }
        Ok(())
    }

    fn open_shard(&mut self, shard: ShardId) -> Result<(), NodeError> {
        tracing::debug!(account = %self.config.account, shard = %shard, "opening a shard lane");
        let store = self.disk.open(&format!("shard-{shard}"))?;
        let mut app = ShardApp::open(&self.config.genesis, shard, store)?;
        app.block_txs_max = self.config.block_txs_max.min(crate::block::BLOCK_TXS_MAX);
        app.set_certifier(self.known.clone());
        // Relays planned before a restart are gone: relay the locks of the recent heights again.
        let Tip { height, hash: tip } = app.tip();
        let at = self.now_ms.saturating_add(RELAY_FIRST_RETRY_MS);
        self.relays.plan(
            at,
            Relay {
                shard,
                from: height.saturating_sub(RELAY_ON_OPEN_HEIGHTS),
                to: height,
                attempt: 0,
            },
        );
        self.push(Output::Subscribe(Topic::Shard(shard)));
        let state_root = app.state().clone().root();
        self.set_head(
            shard,
            ShardHead {
                height,
                block: tip,
                state_root,
            },
        );
        self.shard = Some(Lane::follower(self.chain_id, shard, app));
        self.shard_commit_at = self.now_ms;
        Ok(())
    }

    fn on_gossip(&mut self, peer: Peer, topic: Topic, data: &[u8]) {
        if topic == Topic::Heads {
            if let Ok(Envelope::Head(head)) = wire::decode(data) {
                self.on_head(*head);
            }
            return;
        }
        let on_beacon = topic == Topic::Beacon;
        let on_shard = self
            .shard
            .as_ref()
            .is_some_and(|l| topic == Topic::Shard(l.shard));
        if !on_beacon && !on_shard {
            return;
        }
        match wire::decode(data) {
            Ok(Envelope::Consensus { from, to, message }) => {
                // A `Status` says which height its sender decides: if that is past this lane, the peer it
                // came from is one to ask for blocks. Nothing is published in answer.
                if let Message::Status {
                    shard,
                    height,
                    round,
                } = *message
                {
                    let lane = if on_beacon {
                        BEACON_SHARD
                    } else {
                        self.shard.as_ref().map_or(BEACON_SHARD, |l| l.shard)
                    };
                    if shard == lane {
                        self.catch_up
                            .heard(self.now_ms, shard, peer.clone(), height);
                        self.ask_votes(peer, shard, height, round);
                    }
                }
                if on_beacon {
                    self.on_consensus_beacon(from, to, *message);
                } else {
                    self.on_consensus_shard(from, to, *message);
                }
            }
            // Peers gossip what they admitted; a transaction this mempool refuses (already included,
            // replaced, full, forged) is simply dropped. Followers keep a mempool too, for their turn.
            Ok(Envelope::Transactions(txs)) if on_shard => {
                // Only transactions this validator has not checked cost a signature check: copies of
                // checked ones go straight to the mempool, and those already in a block are dropped.
                let Some(lane) = self.shard.as_mut() else {
                    return;
                };
                let app = lane.app_mut();
                // Those that could never be admitted (wrong shard, stale or far nonce, unfunded, low fee) are
                // dropped before they cost a signature check.
                let (known, new): (Vec<SignedTransaction>, Vec<SignedTransaction>) = txs
                    .into_iter()
                    .filter(|t| app.admissible(t).is_ok())
                    .filter(|t| app.height_of_tx(&t.id()).is_none())
                    .partition(|t| app.signature_known(&t.id()));
                if !known.is_empty() {
                    let verdicts = vec![true; known.len()];
                    app.submit_verified(known, &verdicts);
                }
                if !new.is_empty() {
                    self.push(Output::Verify(new));
                }
            }
            // Atomix locks of another shard: relayed by every member there, and again later, so most
            // copies are refused as already committed.
            Ok(Envelope::Inbound(inbound)) if on_shard => {
                if let Some(lane) = self.shard.as_mut()
                    && let Err(e) = lane.app_mut().submit_inbound(*inbound)
                {
                    tracing::trace!(account = %self.config.account, "inbound refused: {e}");
                }
            }
            Ok(Envelope::Evidence(e)) if on_beacon => self.offer_evidence(*e),
            // Storage proofs another member admitted: copies and stale ones are refused by the pool.
            Ok(Envelope::Proof(proof)) if on_shard => {
                if let Some(lane) = self.shard.as_mut()
                    && let Err(e) = lane.app_mut().submit_proof(*proof)
                {
                    tracing::trace!(account = %self.config.account, "storage proof refused: {e}");
                }
            }
            // Heads belong on the heads topic; undecodable bytes from a peer are dropped.
            Ok(_) | Err(_) => {}
        }
    }

    fn on_consensus_beacon(
        &mut self,
        from: MemberIndex,
        to: Option<MemberIndex>,
        message: Message<Bls>,
    ) {
        let now = self.now_ms;
        let lane = self.beacon.as_mut().expect("present outside reconcile");
        let Some((f, block, certificate)) = lane.route(now, from, to, message) else {
            return;
        };
        // The beacon block of height h is certified by the newest beacon committee of the state
        // after h - 1, which is the follower's own state when h is next.
        let next = f.height();
        let Some(committee) = f.app().state().committee(BEACON_SHARD) else {
            return;
        };
        let committee_at = |h: u64| (h == next).then(|| committee.clone());
        match f.on_decided(block, certificate, committee_at) {
            Ok(Followed::Committed(done)) => {
                // Only height `next` has a committee here, so at most one block was applied.
                for (block, certificate) in done {
                    self.on_commit(Commit {
                        shard: BEACON_SHARD,
                        block,
                        certificate,
                        member: None,
                        committee: committee.clone(),
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(account = %self.config.account, "following the beacon chain: {e}");
                self.halt(e);
            }
        }
    }

    fn on_consensus_shard(
        &mut self,
        from: MemberIndex,
        to: Option<MemberIndex>,
        message: Message<Bls>,
    ) {
        let now = self.now_ms;
        let beacon = self
            .beacon
            .as_ref()
            .expect("present outside reconcile")
            .app();
        let Some(lane) = self.shard.as_mut() else {
            return;
        };
        let shard = lane.shard;
        let Some((f, block, certificate)) = lane.route(now, from, to, message) else {
            return;
        };
        match f.on_decided(block, certificate, |h| beacon.committee_at(shard, h)) {
            Ok(Followed::Committed(done)) => {
                for (block, certificate) in done {
                    let Some(committee) = self.shard_committee(shard, block.header.height) else {
                        continue;
                    };
                    self.on_commit(Commit {
                        shard,
                        block,
                        certificate,
                        member: None,
                        committee,
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(account = %self.config.account, shard = %shard, "following the shard: {e}");
                self.halt(e);
            }
        }
    }

    /// The committee that certifies block `height` of `shard`: from the beacon state, or from this
    /// validator's archive of every epoch for one the state no longer keeps.
    fn shard_committee(&self, shard: ShardId, height: u64) -> Option<Committee<Bls>> {
        self.beacon().app().committee_at(shard, height)
    }

    /// Adopts a shard's head if it is newer than the one known and its certificate is a precommit quorum
    /// of the committee of its height for exactly that header; the beacon lane keeps it as a cross-link.
    fn on_head(&mut self, head: wire::Head) {
        let wire::Head {
            header,
            certificate,
            registry,
        } = head;
        let shard = header.shard;
        let Some(known_head) = self.heads.get(usize::from(shard)).cloned() else {
            return;
        };
        let hash = header.hash();
        let fits = header.chain_id == self.chain_id
            && header.height > known_head.map_or(0, |h| h.height)
            && certificate.finalises(&header);
        if !fits {
            return;
        }
        let link = CrossLink {
            header: header.clone(),
            certificate: certificate.encode(),
            registry,
        };
        // The beacon's ledger checks the head itself when it keeps it as a cross-link.
        let offered = if self.follows_beacon {
            self.beacon_mut().app_mut().offer(link)
        } else {
            Err(LinkError::PoolFull)
        };
        let valid = match offered {
            Ok(()) => true,
            Err(
                LinkError::NotNewer { .. } | LinkError::PoolFull | LinkError::UnknownEpoch { .. },
            ) => self
                .shard_committee(shard, header.height)
                .is_some_and(|c| certificate.verify(self.chain_id, &c).is_ok()),
            Err(_) => false,
        };
        if valid {
            self.set_head(
                shard,
                ShardHead {
                    height: header.height,
                    block: hash,
                    state_root: header.state_root,
                },
            );
        }
    }

    fn set_head(&mut self, shard: ShardId, head: ShardHead) {
        if let Some(slot) = self.heads.get_mut(usize::from(shard)) {
            *slot = Some(head);
        }
    }

    /// Publishes what both lanes produced and handles their commits.
    fn flush(&mut self) {
        let now = self.now_ms;
        for beacon in [true, false] {
            let (shard, drained) = if beacon {
                let l = self.beacon_mut();
                (l.shard, l.drain(now))
            } else {
                let Some(l) = self.shard.as_mut() else {
                    continue;
                };
                (l.shard, l.drain(now))
            };
            let super::lane::Drained {
                from: me,
                committee,
                outputs,
                ask,
            } = drained;
            let topic = Topic::of_lane(shard);
            // A follower's `Status` makes nobody publish anything (`bft_config`, `on_gossip`); it tells the
            // chain's validators that this peer holds the chain up to there, so that a committee redrawn after
            // a stall (which may hold none of the shard's history) knows whom to ask for it.
            if let Some(status) = ask
                && (!beacon || self.follows_beacon)
            {
                self.publish(topic, wire::encode_consensus(FOLLOWER, None, &status));
            }
            for output in outputs {
                self.on_output(shard, topic, me, &committee, output);
            }
        }
    }

    fn on_output(
        &mut self,
        shard: ShardId,
        topic: Topic,
        me: MemberIndex,
        committee: &Option<Committee<Bls>>,
        output: ReplicaOutput<Bls>,
    ) {
        match output {
            ReplicaOutput::Broadcast(message) => {
                self.publish(topic, wire::encode_consensus(me, None, &message))
            }
            // A replica sends to one member only in answer to a `Status` (its votes of rounds the asker has
            // not finished; blocks are switched off in `bft_config`). A gossiped `Status` is unsigned and
            // its sender's index unauthenticated, and gossip has no unicast: publishing these would let
            // anyone make every member publish on a whole topic, so they are never published. The votes are
            // kept only while answering a peer's votes request (`serve_votes`), which goes to that peer.
            ReplicaOutput::Send { message, .. } => {
                if let (Some(votes), Message::Vote(v)) = (self.capture.as_mut(), message) {
                    votes.push(v);
                }
            }
            ReplicaOutput::Committed {
                block, certificate, ..
            } => {
                let Some(committee) = committee.clone() else {
                    return;
                };
                self.on_commit(Commit {
                    shard,
                    block,
                    certificate,
                    member: Some(me),
                    committee,
                });
            }
            ReplicaOutput::Evidence(e) => {
                self.evidence += 1;
                tracing::warn!(
                    "validator {} (chain {shard}): evidence of a Byzantine member ({} so far)",
                    self.config.account,
                    self.evidence
                );
                // A shard member's fault goes to the beacon chain, which records it against the member's
                // reputation (beacon committee faults are only counted here).
                // Once per step and offender: a member that signs many conflicting messages for one step
                // is one fault, and its flood is not amplified to the whole network.
                let (_, height, round) = e.step();
                let step = (shard, height, round, e.offender());
                if shard != BEACON_SHARD && self.evidence_sent.first(step) {
                    self.publish(Topic::Beacon, wire::encode_evidence(&e));
                    self.offer_evidence(e);
                }
            }
        }
    }

    fn on_commit(&mut self, c: Commit) {
        let height = c.block.header.height;
        tracing::debug!(
            account = %self.config.account,
            shard = %c.shard,
            height,
            round = c.certificate.round,
            member = c.member.is_some(),
            "committed"
        );
        if c.shard == BEACON_SHARD {
            let epoch = self.known.epoch();
            self.known = Arc::new(self.beacon().app().state().clone());
            if let Some(lane) = self.shard.as_mut() {
                lane.app_mut().set_certifier(self.known.clone());
                // Which committee certifies a height changes only with the epoch records: a new epoch may
                // have dropped the era a remembered certificate was checked against, or superseded it by a
                // redraw. A proposer that trusted such a verdict would propose inbounds nobody else accepts.
                if self.known.epoch() != epoch {
                    lane.app_mut().forget_certified_headers();
                }
            }
        } else {
            self.shard_commit_at = self.now_ms;
            self.set_head(
                c.shard,
                ShardHead {
                    height,
                    block: c.block.hash(),
                    state_root: c.block.header.state_root,
                },
            );
            let shard_count = self.config.genesis.params.shard_count;
            // Cross-shard transfers and the payouts of proofs to holders of other shards lock value; the
            // misses a block settles may slash holders of other shards.
            let locks = c.block.transactions.iter().any(|t| {
                matches!(&t.tx.kind, crate::TxKind::Transfer { to, .. }
                    if crate::shard_of(to, shard_count) != c.shard)
            }) || self.shard.as_ref().is_some_and(|lane| {
                !lane.app().payouts_at(height).is_empty()
                    || !lane.app().slashes_at(height).is_empty()
            });
            // Every member relays at once (a crashed one costs nothing); the retries are one member's,
            // in turn by height, so that a loaded chain does not carry four copies of every retry.
            if locks && let Some(me) = c.member {
                let retries = schedule::relay_retry_duty(height, c.committee.len(), me);
                let relay = Relay {
                    shard: c.shard,
                    from: height,
                    to: height,
                    attempt: 0,
                };
                self.relay(relay, retries);
            }
            if let Some(me) = c.member
                && schedule::head_duty(height, c.committee.len(), me)
            {
                let head = wire::Head {
                    header: c.block.header.clone(),
                    certificate: c.certificate.clone(),
                    registry: self.registry_batch(c.shard, height),
                };
                self.publish(Topic::Heads, wire::encode_head(&head));
            }
        }
        let proposer = c.committee.proposer(c.shard, height, c.certificate.round);
        let notice = CommitNotice {
            shard: c.shard,
            height,
            block: c.block.hash(),
            proposer: c.committee.members[usize::from(proposer)].id,
            tx_ids: c.block.transactions.iter().map(|t| t.id()).collect(),
            inbound_ids: c
                .block
                .inbound
                .iter()
                .flat_map(|i| i.locks.iter().map(|(l, _)| l.tx_id))
                .collect(),
            state_root: c.block.header.state_root,
            member: c.member.is_some(),
            proofs: u32::try_from(c.block.proofs.len()).unwrap_or(u32::MAX),
        };
        self.push(Output::Committed(Arc::new(notice)));
        self.publish_status(Some(&c.block.header));
    }

    /// Keeps evidence of a fault for this validator's beacon lane to propose (if it is a member) and
    /// check; evidence that does not verify, or is recorded already, is dropped.
    fn offer_evidence(&mut self, e: Evidence<Bls>) {
        let account = self.config.account;
        if let Err(error) = self.beacon_mut().app_mut().offer_evidence(e) {
            tracing::debug!(%account, "evidence refused: {error}");
        }
    }

    /// Relays the Atomix locks of the shard lane's committed heights `relay.from..=relay.to` to the output
    /// shards' topics, and plans the next attempt (see [`super::schedule`]) if `retry`.
    fn relay(&mut self, relay: Relay, retry: bool) {
        let Relay {
            shard,
            from,
            to,
            attempt,
        } = relay;
        let Some(lane) = self.shard.as_ref().filter(|l| l.shard == shard) else {
            return;
        };
        let outbound = lane.app().outbound(from, to);
        if outbound.is_empty() {
            return;
        }
        for (out, inbound) in outbound {
            let Some(bytes) = wire::encode_inbound(&inbound) else {
                continue;
            };
            tracing::debug!(account = %self.config.account, shard = %shard, out = %out, from, to, locks = inbound.locks.len(), attempt, "relaying Atomix locks");
            self.publish(Topic::Shard(out), bytes);
        }
        if retry && let Some((wait, next)) = relay.next() {
            let at = self.now_ms.saturating_add(wait);
            self.relays.plan(at, next);
        }
    }

    /// The registry events of this validator's shard that the beacon chain has not applied yet (as far as
    /// this validator's beacon lane knows; without one, the latest [`LINK_EVENTS_MAX`]), at most that many,
    /// with the proof of where they end. `None` if there are none or the shard lane has moved past `height`
    /// (the proof must be against that height's state root).
    fn registry_batch(&self, shard: ShardId, height: u64) -> Option<RegistryBatch> {
        let lane = self.shard.as_ref().filter(|l| l.shard == shard)?;
        let app = lane.app();
        if app.tip().height != height {
            return None;
        }
        let state = app.state();
        let emitted = state.outbox().count;
        let from = if self.follows_beacon {
            self.known
                .links
                .get(usize::from(shard))?
                .as_ref()
                .map_or(0, |l| l.registry.count)
        } else {
            emitted.saturating_sub(LINK_EVENTS_MAX as u64)
        };
        let to = emitted.min(from + LINK_EVENTS_MAX as u64);
        if to <= from {
            return None;
        }
        match State::registry_events(app.store_ref(), from, to) {
            Ok(events) => Some(RegistryBatch {
                from,
                events,
                checkpoint: state.prove_checkpoint(to),
            }),
            Err(e) => {
                tracing::error!(
                    "validator {}: shard {shard} registry events {from}..{to} unreadable: {e}",
                    self.config.account
                );
                None
            }
        }
    }

    /// The height and round the lane of `shard` decides, if this validator is a member deciding it.
    fn deciding(&self, shard: ShardId) -> Option<(u64, u32)> {
        let of =
            |member: Option<MemberIndex>, height: u64, round: u32| member.map(|_| (height, round));
        if shard == BEACON_SHARD {
            let l = self.beacon();
            of(l.member(), l.height(), l.round())
        } else {
            let l = self.shard.as_ref().filter(|l| l.shard == shard)?;
            of(l.member(), l.height(), l.round())
        }
    }

    /// The next height the lane of `shard` needs, if this validator keeps that chain.
    fn lane_height(&self, shard: ShardId) -> Option<u64> {
        if shard == BEACON_SHARD {
            self.follows_beacon.then(|| self.beacon().height())
        } else {
            self.shard
                .as_ref()
                .filter(|l| l.shard == shard)
                .map(|l| l.height())
        }
    }

    /// Asks one peer for blocks for each chain this validator keeps that a peer claims to be past (see
    /// [`CatchUp::next_ask`]: one ask per chain in flight).
    fn ask_blocks(&mut self) {
        let now = self.now_ms;
        let shard = self.shard.as_ref().map(|l| l.shard);
        for shard in [Some(BEACON_SHARD), shard].into_iter().flatten() {
            let Some(need) = self.lane_height(shard) else {
                continue;
            };
            if let Some(ask) = self.catch_up.next_ask(now, shard, need) {
                tracing::debug!(account = %self.config.account, shard = %shard, from = need, "asking a peer for blocks");
                self.push_ask(ask);
            }
        }
    }

    /// Asks `peer`, which says it is in round `round` of `height` of `shard`, for its votes of the rounds
    /// this validator has not finished, if this validator is a member deciding that height in an earlier
    /// round (see [`CatchUp::votes_ask`]).
    fn ask_votes(&mut self, peer: Peer, shard: ShardId, height: u64, round: u32) {
        let Some(mine) = self
            .deciding(shard)
            .filter(|(h, _)| *h == height)
            .map(|(_, r)| r)
        else {
            return;
        };
        if let Some(ask) = self
            .catch_up
            .votes_ask(self.now_ms, shard, peer, height, (mine, round))
        {
            self.push_ask(ask);
        }
    }

    fn push_ask(&mut self, ask: catch_up::Ask) {
        let bytes = wire::encode_blocks_request(&ask.request);
        self.push(Output::AskBlocks {
            id: ask.id,
            peer: ask.peer,
            bytes,
        });
    }

    /// Feeds the blocks a peer answered to the lane they are for. A peer that answered junk (blocks that do
    /// not follow on from the height asked, or that the lane refuses although it knows their committee) is
    /// set aside for [`catch_up::JUNK_BAN_MS`], one that was busy, had nothing or failed for
    /// [`catch_up::BACKOFF_MS`]; either way the next ask goes to another peer.
    fn on_blocks_answer(&mut self, id: u64, peer: &Peer, data: Option<Vec<u8>>) {
        let Some(ask) = self.catch_up.answered(id, peer) else {
            return;
        };
        let now = self.now_ms;
        let shard = ask.shard();
        let back_off = now.saturating_add(catch_up::BACKOFF_MS);
        let ban = now.saturating_add(catch_up::JUNK_BAN_MS);
        let answer = match data.map(|d| wire::decode_blocks_answer(&d)) {
            None | Some(Ok(BlocksAnswer::Busy)) => {
                self.catch_up.set_aside(shard, peer, back_off);
                return;
            }
            Some(Err(_)) => {
                self.catch_up.set_aside(shard, peer, ban);
                return;
            }
            Some(Ok(answer)) => answer,
        };
        let (from, blocks) = match (ask.request, answer) {
            (BlocksRequest::Blocks { from, .. }, BlocksAnswer::Blocks(blocks)) => (from, blocks),
            // Votes are checked one by one by the replica, which drops any that do not verify; a peer
            // can only waste the check of the few an answer holds.
            (BlocksRequest::Votes { .. }, BlocksAnswer::Votes(votes)) => {
                for v in votes {
                    if shard == BEACON_SHARD {
                        self.on_consensus_beacon(FOLLOWER, None, Message::Vote(v));
                    } else {
                        self.on_consensus_shard(FOLLOWER, None, Message::Vote(v));
                    }
                }
                return;
            }
            // An answer of the wrong kind.
            _ => {
                self.catch_up.set_aside(shard, peer, ban);
                return;
            }
        };
        if blocks.is_empty() {
            self.catch_up.set_aside(shard, peer, back_off);
            return;
        }
        let follows_on = blocks.iter().zip(from..).all(|((block, cert), h)| {
            block.header.shard == shard
                && block.header.height == h
                && block.header.chain_id == self.chain_id
                && cert.finalises(&block.header)
        });
        if !follows_on {
            self.catch_up.set_aside(shard, peer, ban);
            return;
        }
        let Some(before) = self.lane_height(shard) else {
            return;
        };
        for (block, certificate) in blocks {
            let message = Message::Decided { block, certificate };
            if shard == BEACON_SHARD {
                self.on_consensus_beacon(FOLLOWER, None, message);
            } else {
                self.on_consensus_shard(FOLLOWER, None, message);
            }
        }
        let after = self.lane_height(shard).unwrap_or(before);
        if before > from {
            // The lane got past the height meanwhile: nothing to hold for or against the peer.
            return;
        }
        if after > from {
            self.catch_up.served(shard, peer);
            return;
        }
        // Nothing applied. A follower of a shard may not know the committee of the height yet (the beacon
        // chain has not drawn it here): then the blocks could not be checked, which is no fault of theirs.
        let checkable = shard == BEACON_SHARD
            || self.shard.as_ref().is_some_and(|l| l.member().is_some())
            || self.shard_committee(shard, from).is_some();
        let until = if checkable { ban } else { back_off };
        tracing::debug!(account = %self.config.account, shard = %shard, from, checkable, "a peer's blocks were refused");
        self.catch_up.set_aside(shard, peer, until);
    }

    /// The answer to a peer's catch-up request: [`wire::CATCH_UP_BLOCKS_MAX`] blocks at most, no block that
    /// takes it past [`wire::CATCH_UP_BYTES_SOFT`] bytes except the first, within what the peer and all
    /// peers together may still get ([`ServeBudget`]); `Busy` past that. A request for a chain this
    /// validator does not keep, or a malformed one, is answered with no block.
    fn serve_blocks(&mut self, peer: &Peer, data: &[u8]) -> Vec<u8> {
        let Some((blocks_left, bytes_left)) = self.serve.admit(self.now_ms, peer) else {
            return wire::encode_busy_answer();
        };
        let request = match wire::decode_blocks_request(data) {
            Ok(BlocksRequest::Blocks { shard, from }) => (shard, from),
            Ok(BlocksRequest::Votes {
                shard,
                height,
                round,
            }) => return self.serve_votes(shard, height, round),
            Err(_) => return wire::encode_blocks_answer(&[]),
        };
        let (shard, from) = request;
        let blocks_max = blocks_left.min(wire::CATCH_UP_BLOCKS_MAX);
        let bytes_max = bytes_left.min(wire::CATCH_UP_BYTES_SOFT);
        let blocks = if shard == BEACON_SHARD {
            if self.follows_beacon {
                stored_blocks(self.beacon().app(), from, blocks_max, bytes_max)
            } else {
                Vec::new()
            }
        } else {
            match self.shard.as_ref().filter(|l| l.shard == shard) {
                Some(l) => stored_blocks(l.app(), from, blocks_max, bytes_max),
                None => Vec::new(),
            }
        };
        let bytes: usize = blocks.iter().map(|(b, c)| b.len() + c.len()).sum();
        self.serve.spent(blocks.len(), bytes);
        wire::encode_blocks_answer(&blocks)
    }

    /// The answer to a votes request: this member's own votes at `height` of the rounds from `round` up to
    /// its current one, as its replica re-sends them to a member behind in rounds (what it would once have
    /// published in answer to a gossiped `Status`, now only to the peer that asked). None if it is not a
    /// member deciding that height.
    fn serve_votes(&mut self, shard: ShardId, height: u64, round: u32) -> Vec<u8> {
        if self.deciding(shard).is_none_or(|(h, _)| h != height) {
            return wire::encode_votes_answer(&[]);
        }
        // The replica answers a `Status` with `Send`s of its votes, which `on_output` keeps while
        // `capture` is set; anything else it produces (due timers) goes out as usual.
        self.capture = Some(Vec::new());
        let status = Message::Status {
            shard,
            height,
            round,
        };
        if shard == BEACON_SHARD {
            self.on_consensus_beacon(FOLLOWER, None, status);
        } else {
            self.on_consensus_shard(FOLLOWER, None, status);
        }
        self.flush();
        let votes = self.capture.take().unwrap_or_default();
        wire::encode_votes_answer(&votes)
    }

    /// Keeps the status's round current between commits: a round that keeps rising is a stalled committee.
    fn refresh_round(&mut self) {
        let (shard, round) = match &self.shard {
            Some(l) => (l.shard, l.round()),
            None => (BEACON_SHARD, self.beacon().round()),
        };
        if self.status.shard == shard && self.status.round != round {
            tracing::debug!(account = %self.config.account, shard = %shard, height = self.status.height, round, "round changed");
            self.status.round = round;
        }
    }

    /// The status of the shard lane (or of the beacon lane if there is none), with the state root of the
    /// header just committed, or of the last status if the chain is the same.
    fn publish_status(&mut self, committed: Option<&BlockHeader>) {
        let (shard, height, tip, round, member) = match &self.shard {
            Some(l) => {
                let Tip {
                    height: h,
                    hash: tip,
                } = l.app().tip();
                (l.shard, h, tip, l.round(), l.member().is_some())
            }
            None => {
                let l = self.beacon();
                let Tip {
                    height: h,
                    hash: tip,
                } = l.app().tip();
                (BEACON_SHARD, h, tip, l.round(), l.member().is_some())
            }
        };
        if committed.is_some_and(|h| h.shard != shard) {
            // A commit of the other lane: this status is not about it.
            return;
        }
        let previous = &self.status;
        let state_root = match committed {
            Some(h) => h.state_root,
            None if previous.shard == shard && previous.height == height => previous.state_root,
            None => match &self.shard {
                Some(l) => l.app().state().clone().root(),
                None => self.known.root(),
            },
        };
        let epoch = if shard == BEACON_SHARD {
            self.known.epoch()
        } else {
            self.known
                .epoch_at(shard, height + 1)
                .unwrap_or_else(|| self.known.epoch())
        };
        self.status = LaneStatus {
            shard,
            height,
            tip,
            state_root,
            round,
            epoch,
            member,
        };
    }
}

/// The finalised blocks of `app` from height `from` on, encoded, with their stored certificates: at most
/// `blocks_max`, and none that takes the total past `bytes_max` except the first.
fn stored_blocks<A: App>(
    app: &A,
    from: u64,
    blocks_max: usize,
    bytes_max: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tip = app.tip().height;
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    for height in from.max(1)..=tip {
        if out.len() >= blocks_max {
            break;
        }
        let Some((block, certificate)) = app.committed(height) else {
            break;
        };
        let block = block.encode();
        let size = block.len() + certificate.len();
        if !out.is_empty() && bytes.saturating_add(size) > bytes_max {
            break;
        }
        bytes = bytes.saturating_add(size);
        out.push((block, certificate));
    }
    out
}
