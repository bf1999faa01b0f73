//! A validator: the thin tokio/libp2p/RocksDB driver of the `chain` crate's sans-IO [`chain::node::Node`].
//!
//! The node decides everything a validator decides: its two lanes (the beacon chain, always, as a member of
//! the newest epoch's beacon committee or a follower; a shard while it has a seat, as a member of the
//! committee of the height being decided or a follower catching up before its turn), the hand-offs at epoch
//! boundaries, catch-up (whom to ask for blocks, what to serve to whom), the Atomix relay schedule, head
//! duty, evidence, which transactions it admits (`specs/consensus.md` §4).
//!
//! This driver only moves bytes and time: one tokio task owns the libp2p swarm (TCP + noise + yamux,
//! gossipsub, and the catch-up protocol over request-response), feeds the node what arrives with its clock
//! in milliseconds and the peer it came from, publishes what the node asks to publish, sends the node's
//! catch-up asks to the peer it names and its answers to the peer that asked, checks transaction signatures on the blocking pool when the node asks, opens the RocksDB store of
//! each lane (`<db>/beacon`, `<db>/shard-<s>`), and mirrors the node's status, heads and beacon view into
//! watch channels for the API. Nothing a peer sends can panic the task: the node decodes every envelope into
//! typed errors and checks every signature and certificate itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::bft;
use chain::crypto::{Hash, bls};
use chain::genesis::Genesis;
use chain::ledger::{LedgerError, PoolError};
use chain::node::{DealView, Economy, RepairOrders, VolumeView};
use chain::node::{Disk, Input, LaneStatus, Node, NodeConfig, NodeError, Output, Peer, Topic};
use chain::store::StoreError;
use chain::types::storage_proof::ProofTx;
use chain::{Account, Address, ShardId, SignedTransaction, TxError, spv};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, TopicHash, ValidationMode};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identity, noise, tcp, yamux};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::beacon::Beacon;
use super::metrics::{
    CommitLabels, FinalityClock, LaneLabels, TopicLabels, ValidatorMetrics, gauge,
};
use super::store::{OpenError, RocksStore};
use super::wire::{BlocksCodec, ENVELOPE_BYTES_MAX};

pub use chain::node::schedule::{BEACON_COMMIT_WAIT_MS, HEAD_EVERY_BLOCKS};
pub use chain::node::{AtomixStatus, BeaconView, CommitNotice, ProofOf, ShardHead};

const COMMANDS_IN_FLIGHT_MAX: usize = 256;
const COMMITS_BUFFERED_MAX: usize = 256;
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Transaction batches whose signatures are being checked on the blocking pool at once; beyond this a batch
/// is checked on the validator's own task, which slows its intake: that is the back-pressure.
const VERIFY_JOBS_MAX: usize = 8;
/// A catch-up request unanswered by then fails (the node's own deadline, `catch_up::ASK_TIMEOUT_MS`, is
/// later, so the node hears of the failure from here first).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Catch-up streams open at once on one connection: a validator asks one peer at a time per chain, so an
/// honest peer needs two; more from one peer are refused by libp2p before they reach the node.
const CATCH_UP_STREAMS_PER_CONNECTION: usize = 8;

/// The gossipsub topic of a shard's consensus messages and transactions.
pub fn shard_topic(chain_id: u32, shard: ShardId) -> IdentTopic {
    IdentTopic::new(Topic::Shard(shard).name(chain_id))
}

/// The gossipsub topic of shards' heads (every validator listens).
pub fn beacon_topic(chain_id: u32) -> IdentTopic {
    IdentTopic::new(Topic::Heads.name(chain_id))
}

/// The gossipsub topic of the beacon chain's consensus messages and evidence.
pub fn beacon_consensus_topic(chain_id: u32) -> IdentTopic {
    IdentTopic::new(Topic::Beacon.name(chain_id))
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("opening the ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("resuming consensus: {0}")]
    Replica(#[from] bft::ReplicaError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("starting the validator's network: {0}")]
    Network(String),
    #[error("the validator has stopped")]
    Stopped,
}

#[derive(Clone)]
pub struct ValidatorConfig {
    pub genesis: Arc<Genesis>,
    /// Epoch 0, from genesis.
    pub beacon: Arc<Beacon>,
    /// Shard heights per epoch (0: no epoch changes). The same for every validator of a chain.
    pub epoch_length: u64,
    /// The validator's account and its BLS vote key.
    pub account: Address,
    pub bls_secret: bls::SecretKey,
    /// The libp2p identity.
    pub keypair: identity::Keypair,
    /// Where its chain databases live.
    pub db_dir: PathBuf,
    pub listen: Multiaddr,
    /// Validators to connect to (redialled while disconnected).
    pub peers: Vec<Multiaddr>,
    /// Transactions per block, at most `chain::block::BLOCK_TXS_MAX`.
    pub block_txs_max: usize,
    /// Consensus timing per (chain id, shard); `None`: `bft::Config::new`. The beacon's commit wait is
    /// at least [`BEACON_COMMIT_WAIT_MS`] either way.
    pub bft: Option<fn(u32, chain::ShardId) -> bft::Config>,
    /// `false` only in benchmarks: see [`RocksStore::set_sync`].
    pub sync_writes: bool,
}

impl ValidatorConfig {
    fn node_config(&self) -> NodeConfig {
        NodeConfig {
            genesis: self.genesis.clone(),
            committee_size: self.beacon.beacon_committee.len(),
            epoch_length: self.epoch_length,
            epoch_blocks: 0,
            account: self.account,
            bls_secret: self.bls_secret.clone(),
            block_txs_max: self.block_txs_max,
            bft: self.bft,
        }
    }
}

/// The validator's chain stores: one RocksDB per lane under `db_dir`.
struct RocksDisk {
    db_dir: PathBuf,
    sync_writes: bool,
}

impl Disk for RocksDisk {
    type Store = RocksStore;

    fn open(&mut self, name: &str) -> Result<RocksStore, StoreError> {
        let mut store = RocksStore::open(&self.db_dir.join(name))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        store.set_sync(self.sync_writes);
        Ok(store)
    }
}

/// A chain (a shard, or the beacon: `shard = BEACON_SHARD`) as one validator sees it, updated on every
/// commit: its shard lane's if it has one, else its beacon lane's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    /// What the validator's state machine says of the chain: shard, height, tip, round, epoch, role.
    pub lane: LaneStatus,
    /// Gossip messages to peers that gossipsub dropped since the start (a peer's send queue was full, or a
    /// message waited past its deadline): the first thing to look at when a committee stalls.
    pub dropped_messages: u64,
    /// Peers that gossipsub knows to be subscribed to this shard's topic: every other validator keeping the
    /// shard should be among them.
    pub topic_peers: usize,
}

impl ShardStatus {
    fn of(lane: &LaneStatus, dropped_messages: u64, topic_peers: usize) -> Self {
        ShardStatus {
            lane: lane.clone(),
            dropped_messages,
            topic_peers,
        }
    }
}

enum Command {
    Submit {
        txs: Vec<SignedTransaction>,
        reply: oneshot::Sender<Vec<Result<(), TxError>>>,
    },
    Account {
        address: Address,
        reply: oneshot::Sender<Option<Account>>,
    },
    Atomix {
        tx: Hash,
        reply: oneshot::Sender<AtomixStatus>,
    },
    RelayLock {
        tx: Hash,
        reply: oneshot::Sender<bool>,
    },
    Deal {
        id: Hash,
        reply: oneshot::Sender<Option<DealView>>,
    },
    RepairOrders {
        limit: usize,
        reply: oneshot::Sender<Option<RepairOrders>>,
    },
    Volume {
        id: Hash,
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Option<VolumeView>>,
    },
    DealsOf {
        owner: Address,
        after: Option<Hash>,
        limit: usize,
        reply: oneshot::Sender<Option<Vec<Hash>>>,
    },
    HolderDue {
        key: chain::crypto::PublicKey,
        reply: oneshot::Sender<Option<(ShardId, chain::state::HolderDue)>>,
    },
    SubmitProof {
        proof: Box<ProofTx>,
        reply: oneshot::Sender<Option<Result<(), PoolError>>>,
    },
    Prove {
        what: ProofOf,
        reply: oneshot::Sender<Option<spv::Proof>>,
    },
    EpochProofs {
        after: u64,
        reply: oneshot::Sender<Vec<spv::EpochProof>>,
    },
    Describe {
        reply: oneshot::Sender<String>,
    },
    Stop,
}

/// A cheap, cloneable handle on a running validator.
#[derive(Clone)]
pub struct ValidatorHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ShardStatus>,
    heads: watch::Receiver<Vec<Option<ShardHead>>>,
    beacon: watch::Receiver<BeaconView>,
    economy: watch::Receiver<Option<Economy>>,
    commits: broadcast::Sender<Arc<CommitNotice>>,
    peer_id: PeerId,
    listen: Vec<Multiaddr>,
    account: Address,
    metrics: ValidatorMetrics,
}

impl ValidatorHandle {
    /// What this validator counts, for `/metrics`.
    pub fn metrics(&self) -> &ValidatorMetrics {
        &self.metrics
    }

    /// The account this validator signs as.
    pub fn signer(&self) -> Address {
        self.account
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on, with its peer id, ready to dial.
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.listen.clone()
    }

    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    pub fn status(&self) -> ShardStatus {
        self.status.borrow().clone()
    }

    /// The latest certified head of every shard this validator knows of (`None`: none seen yet).
    pub fn heads(&self) -> Vec<Option<ShardHead>> {
        self.heads.borrow().clone()
    }

    /// The storage economy of the shard this validator keeps, at its tip (None: it keeps none).
    pub fn economy(&self) -> Option<Economy> {
        *self.economy.borrow()
    }

    /// The beacon chain as this validator holds it (every validator follows the beacon).
    pub fn beacon(&self) -> BeaconView {
        self.beacon.borrow().clone()
    }

    /// A receiver of commit notices; subscribe before submitting to never miss the commit.
    pub fn commits(&self) -> broadcast::Receiver<Arc<CommitNotice>> {
        self.commits.subscribe()
    }

    /// Sends the task a command carrying a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ValidatorError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ValidatorError::Stopped)?;
        rx.await.map_err(|_| ValidatorError::Stopped)
    }

    /// Admits transactions to the mempool (and gossips the accepted ones to the committee).
    pub async fn submit(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<(), TxError>>, ValidatorError> {
        self.ask(|reply| Command::Submit { txs, reply }).await
    }

    /// The committed state of an account on this validator's shard.
    pub async fn account(&self, address: Address) -> Result<Option<Account>, ValidatorError> {
        self.ask(|reply| Command::Account { address, reply }).await
    }

    /// Relays the Atomix lock of transaction `tx` again, if this validator's shard made it: anyone can
    /// finish a transfer whose relays were all lost. Answers whether it was relayed.
    pub async fn relay_lock(&self, tx: Hash) -> Result<bool, ValidatorError> {
        self.ask(|reply| Command::RelayLock { tx, reply }).await
    }

    /// A storage deal on this validator's shard as its holders' provers need it (None: not on this shard).
    pub async fn deal(&self, id: Hash) -> Result<Option<DealView>, ValidatorError> {
        self.ask(|reply| Command::Deal { id, reply }).await
    }

    /// The open repair orders on this validator's shard, at most `limit` (None: it keeps no shard).
    pub async fn repair_orders(
        &self,
        limit: usize,
    ) -> Result<Option<RepairOrders>, ValidatorError> {
        self.ask(|reply| Command::RepairOrders { limit, reply })
            .await
    }

    /// The ids of the deals `owner` opened on this validator's shard, in id order after `after`, at most
    /// `limit` (None: this validator keeps no shard).
    pub async fn deals_of(
        &self,
        owner: Address,
        after: Option<Hash>,
        limit: usize,
    ) -> Result<Option<Vec<Hash>>, ValidatorError> {
        self.ask(|reply| Command::DealsOf {
            owner,
            after,
            limit,
            reply,
        })
        .await
    }

    /// Volume `id` on this validator's shard: its head and up to `limit` versions after `after` (None: this
    /// validator keeps no shard).
    pub async fn volume(
        &self,
        id: Hash,
        after: u64,
        limit: usize,
    ) -> Result<Option<VolumeView>, ValidatorError> {
        self.ask(|reply| Command::Volume {
            id,
            after,
            limit,
            reply,
        })
        .await
    }

    /// Admits a storage proof for the next block of its deal's shard and gossips it to the committee (None:
    /// this validator's shard does not hold the deal).
    pub async fn submit_proof(
        &self,
        proof: ProofTx,
    ) -> Result<Option<Result<(), PoolError>>, ValidatorError> {
        self.ask(|reply| Command::SubmitProof {
            proof: Box::new(proof),
            reply,
        })
        .await
    }

    /// What a holder proof of `key` in the next block of this validator's shard must answer (None: no shard
    /// here, or no slot of the key's to prove on it).
    pub async fn holder_due(
        &self,
        key: chain::crypto::PublicKey,
    ) -> Result<Option<(ShardId, chain::state::HolderDue)>, ValidatorError> {
        self.ask(|reply| Command::HolderDue { key, reply }).await
    }

    /// Where transaction `tx`'s Atomix lock stands on this validator's shard (as far as its tip knows).
    pub async fn atomix(&self, tx: Hash) -> Result<AtomixStatus, ValidatorError> {
        self.ask(|reply| Command::Atomix { tx, reply }).await
    }

    /// An SPV proof from this validator's ledger: None if there is nothing to prove it from (no block yet, or
    /// no such transaction on this shard).
    pub async fn prove(&self, what: ProofOf) -> Result<Option<spv::Proof>, ValidatorError> {
        self.ask(|reply| Command::Prove { what, reply }).await
    }

    /// How the epochs after `after` were drawn (at most `spv::EPOCH_PROOFS_MAX`, in order, as far as this
    /// validator's beacon chain has them): what a light client advances its trust with.
    pub async fn epoch_proofs(&self, after: u64) -> Result<Vec<spv::EpochProof>, ValidatorError> {
        self.ask(|reply| Command::EpochProofs { after, reply })
            .await
    }

    /// One line per lane on what its consensus is waiting for (height, round, step, votes, timers): what a
    /// stalled committee is diagnosed from.
    pub async fn describe(&self) -> Result<String, ValidatorError> {
        self.ask(|reply| Command::Describe { reply }).await
    }
}

/// A running validator.
pub struct Validator {
    pub handle: ValidatorHandle,
    task: tokio::task::JoinHandle<()>,
}

#[derive(NetworkBehaviour)]
struct ChainBehaviour {
    gossipsub: gossipsub::Behaviour,
    /// Catch-up: finalised blocks asked of one peer and answered to the peer that asked.
    blocks: request_response::Behaviour<BlocksCodec>,
}

/// Message ids in one IHAVE (or IWANT) this validator sends.
const GOSSIP_IDS_MAX: usize = 256;
/// Bytes of one message id.
const MESSAGE_ID_BYTES: usize = 20;
/// The largest control part of a received gossip RPC: room for `GOSSIP_IDS_MAX` ids with their framing, four
/// times over.
const CONTROL_BYTES_MAX: usize = 4 * GOSSIP_IDS_MAX * (MESSAGE_ID_BYTES + 4) + 1024;

/// A gossip message's id: BLAKE3 of its source, sequence number and bytes, cut to [`MESSAGE_ID_BYTES`]
/// (gossipsub's default is the source and sequence number as text, ~70 bytes, which every IHAVE, IWANT and
/// IDONTWANT carries). Messages are not signed (see `build_swarm`), so the id covers the bytes: a peer that
/// reuses another's source and sequence number makes a different id, and cannot get a real message dropped
/// as a duplicate of its own.
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"huds gossip message id v2");
    if let Some(source) = &message.source {
        hasher.update(&source.to_bytes());
    }
    hasher.update(&message.sequence_number.unwrap_or(0).to_be_bytes());
    hasher.update(&message.data);
    gossipsub::MessageId::new(&hasher.finalize().as_bytes()[..MESSAGE_ID_BYTES])
}

fn build_swarm(
    keypair: identity::Keypair,
    chain_id: u32,
) -> Result<Swarm<ChainBehaviour>, ValidatorError> {
    let net = |e: &dyn std::fmt::Display| ValidatorError::Network(e.to_string());
    let protocol = StreamProtocol::try_from_owned(chain::node::wire::blocks_protocol(chain_id))
        .map_err(|e| net(&e))?;
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(ENVELOPE_BYTES_MAX + 1024)
        // Gossip control (IHAVE lists) must fit what a receiving peer accepts: gossipsub's sender caps an
        // IHAVE at `max_control_messages_sent` ids, but a receiver refuses any RPC whose control part passes
        // `max_control_message_size` (16 KiB by default) and closes the stream it came on. With the default
        // 5,000 ids of ~70 bytes, a busy topic's IHAVE passed that, and the send queue of that peer stalled
        // for good (seen as a committee member that stops hearing its shard). Short ids, a few hundred per
        // IHAVE and a receive limit with room to spare keep every control message well inside.
        .message_id_fn(message_id)
        .max_control_messages_sent(GOSSIP_IDS_MAX)
        .max_control_message_size(CONTROL_BYTES_MAX)
        .heartbeat_interval(Duration::from_millis(200))
        // Committees are small (4 to a few dozen) and fully connected: a small mesh, and publications are
        // flooded to every subscribed peer.
        .mesh_n(4)
        .mesh_n_low(2)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .flood_publish(true)
        // No gossip-level signatures: everything a validator acts on carries its own (BLS votes and
        // certificates, signed proposals, ed25519 transactions), and the envelope's `from` is only a hint.
        // Signing and checking every gossip message cost about 16% of the chain bench's CPU.
        .validation_mode(ValidationMode::None)
        .build()
        .map_err(|e| net(&e))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| net(&e))?
        .with_behaviour(|key| {
            let gossipsub = gossipsub::Behaviour::new(
                MessageAuthenticity::Author(key.public().to_peer_id()),
                config,
            )?;
            let blocks = request_response::Behaviour::new(
                [(protocol, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(CATCH_UP_TIMEOUT)
                    .with_max_concurrent_streams(CATCH_UP_STREAMS_PER_CONNECTION),
            );
            Ok(ChainBehaviour { gossipsub, blocks })
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

impl Validator {
    /// Opens the validator's databases (resuming where it stopped), starts its network and its lanes.
    /// Returns once it listens.
    pub async fn start(config: ValidatorConfig) -> Result<Validator, ValidatorError> {
        let chain_id = config.genesis.params.chain_id;
        let peer_id = config.keypair.public().to_peer_id();
        let mut swarm = build_swarm(config.keypair.clone(), chain_id)?;
        let net = |e: &dyn std::fmt::Display| ValidatorError::Network(e.to_string());
        swarm
            .listen_on(config.listen.clone())
            .map_err(|e| net(&e))?;
        let listen = loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::debug!(account = %config.account, %peer_id, %address, "validator listening");
                    break vec![
                        address
                            .with_p2p(peer_id)
                            .expect("a tcp address takes a peer id"),
                    ];
                }
                SwarmEvent::ListenerError { error, .. } => return Err(net(&error)),
                _ => {}
            }
        };
        for addr in &config.peers {
            let _ = swarm.dial(addr.clone());
        }

        let start = Instant::now();
        let disk = RocksDisk {
            db_dir: config.db_dir.clone(),
            sync_writes: config.sync_writes,
        };
        let node = Node::new(config.node_config(), disk, 0)?;
        let status = ShardStatus::of(node.status(), 0, 0);
        let (heads_tx, heads_rx) = watch::channel(node.heads().to_vec());
        let (economy_tx, economy_rx) = watch::channel(node.economy());
        let (beacon_tx, beacon_rx) = watch::channel(node.beacon_view());
        let (status_tx, status_rx) = watch::channel(status);
        let (commits, _) = broadcast::channel(COMMITS_BUFFERED_MAX);
        let (commands_tx, commands_rx) = mpsc::channel(COMMANDS_IN_FLIGHT_MAX);
        let handle = ValidatorHandle {
            commands: commands_tx,
            status: status_rx,
            heads: heads_rx,
            beacon: beacon_rx,
            economy: economy_rx,
            commits: commits.clone(),
            peer_id,
            listen,
            account: config.account,
            metrics: ValidatorMetrics::default(),
        };
        let (verified_tx, verified_rx) = mpsc::channel(VERIFY_JOBS_MAX);
        let mut driver = Driver {
            node,
            swarm,
            topics: HashMap::new(),
            asks: HashMap::new(),
            answers: HashMap::new(),
            next_request: 0,
            verified_tx,
            verify_jobs: Arc::new(tokio::sync::Semaphore::new(VERIFY_JOBS_MAX)),
            chain_id,
            start,
            status: status_tx,
            heads: heads_tx,
            economy: economy_tx,
            beacon_state: beacon_tx,
            commits,
            dropped_messages: 0,
            topic_peers: 0,
            metrics: handle.metrics.clone(),
            finality: FinalityClock::default(),
            config,
        };
        driver.drain()?;
        let task = tokio::spawn(driver.run(commands_rx, verified_rx));
        Ok(Validator { handle, task })
    }

    /// Stops the validator cleanly; its databases are closed when this returns.
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Stop).await;
        let _ = self.task.await;
    }

    /// Stops the validator at once, as a crash would: no goodbye, nothing flushed beyond what consensus
    /// already wrote. Its databases are closed when this returns, so it can be restarted on them.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A transaction batch with its signatures checked, on its way back to the validator's task.
struct Verified {
    txs: Vec<SignedTransaction>,
    signatures_ok: Vec<bool>,
    /// For a batch from the handle: where the admission results go (and the accepted ones are gossiped).
    reply: Option<oneshot::Sender<Vec<Result<(), TxError>>>>,
}

fn check_signatures(txs: &[SignedTransaction]) -> Vec<bool> {
    txs.iter().map(|t| t.check_signature().is_ok()).collect()
}

struct Driver {
    node: Node<RocksDisk>,
    swarm: Swarm<ChainBehaviour>,
    /// The topics subscribed to, by hash: how an arriving message finds its [`Topic`].
    topics: HashMap<TopicHash, Topic>,
    /// The node's catch-up asks in flight, by libp2p's request id: the node's id and the peer asked. At
    /// most a few: the node keeps one ask per chain in flight, and libp2p ends each within
    /// [`CATCH_UP_TIMEOUT`].
    asks: HashMap<OutboundRequestId, (u64, Peer)>,
    /// Peers' requests waiting for the node's answer, by the id the node knows them by. The node answers
    /// within the call that hands it the request and the answer is sent in the `drain` right after, so
    /// this holds at most one.
    answers: HashMap<u64, ResponseChannel<Vec<u8>>>,
    next_request: u64,
    verified_tx: mpsc::Sender<Verified>,
    verify_jobs: Arc<tokio::sync::Semaphore>,
    chain_id: u32,
    start: Instant,
    status: watch::Sender<ShardStatus>,
    heads: watch::Sender<Vec<Option<ShardHead>>>,
    /// The storage economy of the kept shard, recomputed when its tip moves.
    economy: watch::Sender<Option<Economy>>,
    beacon_state: watch::Sender<BeaconView>,
    commits: broadcast::Sender<Arc<CommitNotice>>,
    dropped_messages: u64,
    topic_peers: usize,
    metrics: ValidatorMetrics,
    /// When each transaction a client submitted here was admitted, until it commits.
    finality: FinalityClock,
    config: ValidatorConfig,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut verified: mpsc::Receiver<Verified>,
    ) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        loop {
            let deadline = self
                .node
                .poll_timeout()
                .map(|t| self.start + Duration::from_millis(t));
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => break,
                    Some(command) => {
                        self.on_command(command);
                        Ok(())
                    }
                },
                _ = timer => {
                    let now = self.now_ms();
                    self.node.handle(now, Input::Tick)
                }
                Some(batch) = verified.recv() => self.admit(batch),
                _ = redial.tick() => {
                    self.redial();
                    Ok(())
                }
            };
            if let Err(e) = result
                .map_err(ValidatorError::from)
                .and_then(|()| self.drain())
            {
                tracing::error!("validator {}: stopped: {e}", self.config.account);
                break;
            }
        }
    }

    /// Carries out what the node asked for and mirrors its views into the watch channels.
    fn drain(&mut self) -> Result<(), ValidatorError> {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Publish { topic, bytes } => {
                    self.metrics
                        .gossip_published
                        .get_or_create(&TopicLabels {
                            topic: super::metrics::topic_label(topic),
                        })
                        .inc();
                    let topic = IdentTopic::new(topic.name(self.chain_id));
                    // With no subscribed peer yet (startup, partition) the message is lost; replicas
                    // re-send what matters every `rebroadcast_ms`, followers ask again.
                    let _ = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes);
                }
                Output::Subscribe(topic) => {
                    let ident = IdentTopic::new(topic.name(self.chain_id));
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .subscribe(&ident)
                        .map_err(|e| ValidatorError::Network(e.to_string()))?;
                    self.topics.insert(ident.hash(), topic);
                }
                Output::Verify(txs) => self.verify(txs, None),
                Output::AskBlocks { id, peer, bytes } => match PeerId::from_bytes(&peer.0) {
                    Ok(to) => {
                        let request = self.swarm.behaviour_mut().blocks.send_request(&to, bytes);
                        self.asks.insert(request, (id, peer));
                    }
                    // The node only names peers this driver gave it; if one does not parse, the ask
                    // times out in the node and goes to another peer.
                    Err(e) => tracing::warn!(
                        "validator {}: catch-up ask to a peer id that does not parse: {e}",
                        self.config.account
                    ),
                },
                Output::AnswerBlocks { id, bytes } => {
                    if let Some(channel) = self.answers.remove(&id) {
                        // The asker may be gone; nothing to do then.
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blocks
                            .send_response(channel, bytes);
                    }
                }
                // The views first, so a client woken by the notice reads them as of the commit. No
                // receiver is fine: nobody is waiting.
                Output::Committed(notice) => {
                    self.count_commit(&notice);
                    self.mirror();
                    let _ = self.commits.send(notice);
                }
            }
        }
        // Every request was answered above; a channel left here would be held for nothing, so it is
        // dropped, which tells the asker its request failed.
        self.answers.clear();
        self.mirror();
        Ok(())
    }

    /// Counts a commit, and times the transactions admitted here that it made final.
    fn count_commit(&mut self, notice: &CommitNotice) {
        let lane = if notice.shard == chain::block::BEACON_SHARD {
            "beacon"
        } else {
            "shard"
        };
        let role = if notice.member { "member" } else { "follower" };
        self.metrics
            .commits
            .get_or_create(&CommitLabels { lane, role })
            .inc();
        self.metrics
            .height
            .get_or_create(&LaneLabels { lane })
            .set(gauge(notice.height));
        if lane == "shard" {
            self.metrics
                .transactions_committed
                .inc_by(notice.tx_ids.len() as u64);
            let now = self.now_ms();
            for id in &notice.tx_ids {
                if let Some(s) = self.finality.committed(id, now) {
                    self.metrics.finality_seconds.observe(s);
                }
            }
        }
    }

    /// Mirrors the node's status, heads and beacon view into the watch channels (receivers wake only on a
    /// change).
    fn mirror(&mut self) {
        let status = ShardStatus::of(self.node.status(), self.dropped_messages, 0);
        if status.lane.shard != self.status.borrow().lane.shard {
            self.topic_peers = self.topic_peers_of(status.lane.shard);
        }
        let status = ShardStatus {
            topic_peers: self.topic_peers,
            ..status
        };
        self.metrics.round.set(i64::from(status.lane.round));
        self.metrics.epoch.set(gauge(status.lane.epoch));
        self.metrics.member.set(i64::from(status.lane.member));
        self.metrics
            .topic_peers
            .set(gauge(status.topic_peers as u64));
        self.metrics.mempool_transactions.set(gauge(
            self.node.shard_app().map_or(0, |a| a.mempool_len()) as u64,
        ));
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
        let tip = self
            .node
            .shard()
            .zip(self.node.shard_app().map(|a| bft::App::tip(a).height));
        if self.economy.borrow().map(|e| (e.shard, e.height)) != tip {
            self.economy.send_replace(self.node.economy());
        }
        let heads = self.node.heads();
        self.heads.send_if_modified(|h| {
            let changed = h.as_slice() != heads;
            if changed {
                *h = heads.to_vec();
            }
            changed
        });
        let view = self.node.beacon_view();
        self.beacon_state.send_if_modified(|v| {
            let changed = v.height != view.height || v.tip != view.tip || v.member != view.member;
            if changed {
                *v = view;
            }
            changed
        });
    }

    fn redial(&mut self) {
        for addr in &self.config.peers {
            let Some(peer) = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            }) else {
                continue;
            };
            if !self.swarm.is_connected(&peer) {
                let _ = self.swarm.dial(addr.clone());
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<ChainBehaviourEvent>) -> Result<(), NodeError> {
        match event {
            SwarmEvent::Behaviour(ChainBehaviourEvent::Blocks(event)) => self.on_blocks(event),
            SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => {
                // Messages of topics this validator never subscribed to are dropped.
                let Some(topic) = self.topics.get(&message.topic).copied() else {
                    return Ok(());
                };
                self.metrics
                    .gossip_received
                    .get_or_create(&TopicLabels {
                        topic: super::metrics::topic_label(topic),
                    })
                    .inc();
                let now = self.now_ms();
                // The peer is the one the message came in from, authenticated by the connection: the
                // message's `source` field is not signed (see `build_swarm`) and could name anyone.
                self.node.handle(
                    now,
                    Input::Gossip {
                        peer: Peer(propagation_source.to_bytes()),
                        topic,
                        data: message.data,
                    },
                )
            }
            SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(gossipsub::Event::SlowPeer {
                failed_messages,
                ..
            })) => {
                let dropped = (failed_messages.priority + failed_messages.non_priority) as u64;
                self.dropped_messages = self.dropped_messages.saturating_add(dropped);
                self.metrics.gossip_dropped.inc_by(dropped);
                Ok(())
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::debug!(account = %self.config.account, %peer_id, dialer = endpoint.is_dialer(), num_established, "connection established");
                Ok(())
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(account = %self.config.account, %peer_id, num_established, ?cause, "connection closed");
                Ok(())
            }
            SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { peer_id, topic }
                | gossipsub::Event::Unsubscribed { peer_id, topic },
            )) => {
                tracing::debug!(%peer_id, %topic, "peer subscription changed");
                self.topic_peers = self.topic_peers_of(self.node.status().shard);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Catch-up traffic: a peer's request goes to the node, which answers it before `handle` returns (the
    /// answer goes out in the `drain` after every event); the answer to one of the node's asks, or its
    /// failure, goes back to it.
    fn on_blocks(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), NodeError> {
        use request_response::{Event, Message};
        let now = self.now_ms();
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.next_request += 1;
                let id = self.next_request;
                self.answers.insert(id, channel);
                // The node answers within this call; the answer goes out in the `drain` that follows
                // every event, which takes the channel out of `answers`.
                self.node.handle(
                    now,
                    Input::BlocksRequest {
                        peer: Peer(peer.to_bytes()),
                        id,
                        data: request,
                    },
                )
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match self.asks.remove(&request_id) {
                Some((id, asked)) if asked.0 == peer.to_bytes() => self.node.handle(
                    now,
                    Input::BlocksAnswer {
                        id,
                        peer: asked,
                        data: Some(response),
                    },
                ),
                _ => Ok(()),
            },
            Event::OutboundFailure {
                request_id, error, ..
            } => match self.asks.remove(&request_id) {
                Some((id, peer)) => {
                    tracing::debug!(account = %self.config.account, %error, "a catch-up ask failed");
                    self.node.handle(
                        now,
                        Input::BlocksAnswer {
                            id,
                            peer,
                            data: None,
                        },
                    )
                }
                None => Ok(()),
            },
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => Ok(()),
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.now_ms();
        match command {
            Command::Submit { txs, reply } => {
                if self.node.takes_transactions() {
                    self.verify(txs, Some(reply));
                } else {
                    let _ = reply.send(self.node.refuse(&txs));
                }
            }
            Command::Account { address, reply } => {
                let _ = reply.send(self.node.account_of(&address));
            }
            Command::Atomix { tx, reply } => {
                let _ = reply.send(self.node.atomix(&tx));
            }
            Command::RelayLock { tx, reply } => {
                let _ = reply.send(self.node.relay_lock(now, &tx));
            }
            Command::Deal { id, reply } => {
                let _ = reply.send(self.node.deal(&id));
            }
            Command::RepairOrders { limit, reply } => {
                let _ = reply.send(self.node.repair_orders(limit));
            }
            Command::Volume {
                id,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.node.volume(&id, after, limit));
            }
            Command::DealsOf {
                owner,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.node.deals_of(&owner, after, limit));
            }
            Command::HolderDue { key, reply } => {
                let _ = reply.send(self.node.holder_due(&key));
            }
            Command::SubmitProof { proof, reply } => {
                let _ = reply.send(self.node.submit_proof(*proof));
            }
            Command::Prove { what, reply } => {
                let _ = reply.send(self.node.prove(what));
            }
            Command::EpochProofs { after, reply } => {
                let _ = reply.send(self.node.epoch_proofs(after));
            }
            Command::Describe { reply } => {
                let _ = reply.send(self.node.describe());
            }
            Command::Stop => {}
        }
    }

    /// Checks a batch's signatures on the blocking pool, so that consensus on this task goes on meanwhile;
    /// the batch comes back through `verified` to [`Driver::admit`]. With every job slot busy a client's
    /// batch is checked here and a peer's is dropped.
    fn verify(
        &mut self,
        txs: Vec<SignedTransaction>,
        reply: Option<oneshot::Sender<Vec<Result<(), TxError>>>>,
    ) {
        match self.verify_jobs.clone().try_acquire_owned() {
            Ok(permit) => {
                let back = self.verified_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let signatures_ok = check_signatures(&txs);
                    // Holding the permit until the batch is queued bounds the channel's senders too.
                    let _ = back.blocking_send(Verified {
                        txs,
                        signatures_ok,
                        reply,
                    });
                    drop(permit);
                });
            }
            // Every slot busy: a client's batch is checked here, which slows intake (the back-pressure);
            // a peer's gossiped batch is dropped, so that a flood of gossip cannot stall consensus on
            // this task (its sender re-gossips nothing, but the client who submitted it heard "accepted"
            // from a validator that keeps it in its mempool).
            Err(_) => {
                let Some(reply) = reply else {
                    return;
                };
                let signatures_ok = check_signatures(&txs);
                let results = self.submit(txs, &signatures_ok);
                let _ = reply.send(results);
            }
        }
    }

    /// Hands a checked batch to the node: a client's with its reply, a peer's as gossip.
    fn admit(&mut self, batch: Verified) -> Result<(), NodeError> {
        let Verified {
            txs,
            signatures_ok,
            reply,
        } = batch;
        let now = self.now_ms();
        match reply {
            Some(reply) => {
                let results = self.submit(txs, &signatures_ok);
                let _ = reply.send(results);
                Ok(())
            }
            None => self
                .node
                .handle(now, Input::Verified { txs, signatures_ok }),
        }
    }

    /// Admits a client's checked batch, and starts timing the finality of those accepted.
    fn submit(
        &mut self,
        txs: Vec<SignedTransaction>,
        signatures_ok: &[bool],
    ) -> Vec<Result<(), TxError>> {
        let now = self.now_ms();
        let ids: Vec<Hash> = txs.iter().map(SignedTransaction::id).collect();
        let results = self.node.submit(now, txs, signatures_ok);
        for (id, r) in ids.iter().zip(&results) {
            if r.is_ok() {
                self.finality.admitted(*id, now);
            }
        }
        results
    }

    /// Peers known to be subscribed to the topic of `shard`'s lane.
    fn topic_peers_of(&self, shard: ShardId) -> usize {
        let topic = IdentTopic::new(Topic::of_lane(shard).name(self.chain_id)).hash();
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&topic))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use crate::{ChainDevnet, DevnetOptions};
    use chain::MemberIndex;
    use chain::bft::VoteKind;
    use chain::bft::{Bls, Message};
    use chain::bft::{QuorumCertificate, Vote};
    use chain::block::Block;

    /// A one-shard devnet chain funding `wallets`, in a temporary directory, and a validator of its shard.
    async fn one_shard(wallets: Vec<Address>) -> (tempfile::TempDir, ChainDevnet, ValidatorHandle) {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = ChainDevnet::start(dir.path(), DevnetOptions::new(1, wallets))
            .await
            .expect("starts");
        let target = net
            .handles()
            .into_iter()
            .find(|h| h.status().lane.shard == 0)
            .expect("a validator of shard 0");
        (dir, net, target)
    }

    /// A peer of its own that joins `topic` and dials every validator of `net`, once the subscriptions have
    /// had a second to propagate.
    async fn rogue_peer(net: &ChainDevnet, topic: &IdentTopic) -> Swarm<ChainBehaviour> {
        let mut rogue = build_swarm(
            identity::Keypair::generate_ed25519(),
            net.genesis.params.chain_id,
        )
        .expect("swarm");
        rogue
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .expect("subscribe");
        for h in net.handles() {
            rogue.dial(h.addrs()[0].clone()).expect("dial");
        }
        let settle = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = rogue.select_next_some() => {}
                _ = &mut settle => break,
            }
        }
        rogue
    }

    /// A member of shard 0 is killed while the other three go on for `BEHIND` heights, then restarts on its
    /// database. Nobody answers a gossiped `Status` with blocks any more, and the committee's `Decided`
    /// broadcasts carry only the newest block, so the heights it missed can only come over the catch-up
    /// protocol: it must get back to the committee's height and take part again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_validator_behind_by_many_blocks_catches_up_over_the_blocks_protocol() {
        const BEHIND: u64 = 40;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut net = ChainDevnet::start(dir.path(), DevnetOptions::new(1, Vec::new()))
            .await
            .expect("starts");
        let member = (0..net.validator_count())
            .find(|&i| net.shard_of_validator(i) == 0 && net.is_member(i))
            .expect("a member of shard 0");
        let other = net
            .handles()
            .into_iter()
            .find(|h| {
                h.status().lane.shard == 0
                    && h.signer() != net.handle(member).expect("runs").signer()
            })
            .expect("another validator of shard 0");
        net.kill_validator(member).await;
        let stopped_at = other.status().lane.height;
        let deadline = Instant::now() + Duration::from_secs(120);
        while other.status().lane.height < stopped_at + BEHIND {
            assert!(
                Instant::now() < deadline,
                "the shard stalled without one member"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        net.start_validator(member).await.expect("restarts");
        let restarted = net.handle(member).expect("runs");
        let behind = other
            .status()
            .lane
            .height
            .saturating_sub(restarted.status().lane.height);
        assert!(behind >= BEHIND, "it restarted {behind} heights behind");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (mine, theirs) = (restarted.status().lane, other.status().lane);
            if mine.height + 2 >= theirs.height && mine.member {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted member is at {} of {} after 60 s",
                mine.height,
                theirs.height
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Its chain is the committee's: at a moment both stand at one height, they have one tip.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (mine, theirs) = (restarted.status().lane, other.status().lane);
            if mine.height == theirs.height {
                assert_eq!(mine.tip, theirs.tip, "one chain at height {}", mine.height);
                break;
            }
            assert!(Instant::now() < deadline, "never seen at one height");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        net.shutdown().await;
    }

    /// An outside peer sends a validator 1,000 catch-up requests a second for two seconds over one
    /// connection: it gets blocks in at most the per-peer budget of answers (the burst, then one per refill
    /// interval), the rest are `Busy` or refused, and the validator goes on deciding.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_asking_a_thousand_times_a_second_gets_at_most_its_budget() {
        use chain::node::catch_up::{SERVE_BURST, SERVE_REFILL_MS};
        use request_response::{Event, Message};
        let (_dir, net, target) = one_shard(Vec::new()).await;
        let chain_id = net.genesis.params.chain_id;
        // Some blocks to serve.
        let deadline = Instant::now() + Duration::from_secs(30);
        while target.status().lane.height < 5 {
            assert!(Instant::now() < deadline, "the shard does not decide");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut rogue =
            build_swarm(identity::Keypair::generate_ed25519(), chain_id).expect("swarm");
        let to = target.peer_id();
        rogue.dial(target.addrs()[0].clone()).expect("dial");
        while !rogue.is_connected(&to) {
            tokio::time::timeout(Duration::from_secs(10), rogue.select_next_some())
                .await
                .expect("connects");
        }
        let request = wire::encode_blocks_request(&wire::BlocksRequest::Blocks {
            shard: ShardId(0),
            from: 1,
        });
        let (mut sent, mut with_blocks, mut busy, mut failed) = (0u64, 0u64, 0u64, 0u64);
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while started.elapsed() < Duration::from_secs(2) {
            tokio::select! {
                _ = tick.tick() => {
                    rogue.behaviour_mut().blocks.send_request(&to, request.clone());
                    sent += 1;
                }
                event = rogue.select_next_some() => match event {
                    SwarmEvent::Behaviour(ChainBehaviourEvent::Blocks(Event::Message {
                        message: Message::Response { response, .. }, ..
                    })) => match wire::decode_blocks_answer(&response).expect("a valid answer") {
                        wire::BlocksAnswer::Blocks(b) if !b.is_empty() => with_blocks += 1,
                        wire::BlocksAnswer::Blocks(_) => panic!("the target has blocks to serve"),
                        wire::BlocksAnswer::Busy => busy += 1,
                        wire::BlocksAnswer::Votes(_) => panic!("blocks were asked for"),
                    },
                    SwarmEvent::Behaviour(ChainBehaviourEvent::Blocks(Event::OutboundFailure { .. })) => {
                        failed += 1
                    }
                    _ => {}
                },
            }
        }
        // What is still in flight is answered or fails within the request timeout.
        let settle = Instant::now() + CATCH_UP_TIMEOUT + Duration::from_secs(1);
        while with_blocks + busy + failed < sent && Instant::now() < settle {
            if let Ok(event) =
                tokio::time::timeout(Duration::from_millis(200), rogue.select_next_some()).await
            {
                match event {
                    SwarmEvent::Behaviour(ChainBehaviourEvent::Blocks(Event::Message {
                        message: Message::Response { response, .. },
                        ..
                    })) => match wire::decode_blocks_answer(&response).expect("a valid answer") {
                        wire::BlocksAnswer::Blocks(_) => with_blocks += 1,
                        wire::BlocksAnswer::Busy => busy += 1,
                        wire::BlocksAnswer::Votes(_) => panic!("blocks were asked for"),
                    },
                    SwarmEvent::Behaviour(ChainBehaviourEvent::Blocks(
                        Event::OutboundFailure { .. },
                    )) => failed += 1,
                    _ => {}
                }
            }
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let budget = u64::from(SERVE_BURST) + elapsed_ms / SERVE_REFILL_MS + 1;
        assert!(sent >= 1_000, "the rogue sent {sent} requests");
        assert!(with_blocks >= 1, "the first requests are served");
        assert!(
            with_blocks <= budget,
            "{with_blocks} of {sent} requests were served blocks in {elapsed_ms} ms (budget {budget}; {busy} busy, {failed} failed)"
        );
        assert!(busy > 0, "the rest are told the peer is busy");
        let height = target.status().lane.height;
        let deadline = Instant::now() + Duration::from_secs(30);
        while target.status().lane.height < height + 3 {
            assert!(
                Instant::now() < deadline,
                "the shard stalled under the flood"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        net.shutdown().await;
    }

    /// A member of shard 0 votes twice in one step (a rogue peer holding its key publishes both votes): the
    /// committee turns the votes into evidence, the beacon chain records the fault against that member, and
    /// the API shows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_double_vote_is_recorded_on_the_beacon_chain_against_its_signer() {
        let (_dir, net, target) = one_shard(Vec::new()).await;
        let chain_id = net.genesis.params.chain_id;
        let committee = target
            .beacon()
            .state
            .committee(ShardId(0))
            .expect("shard 0");
        let (index, key) = (0..net.handles().len())
            .map(|i| bls::SecretKey::dev(&format!("validator/{i}")))
            .find_map(|k| {
                let public = k.public();
                committee
                    .members
                    .iter()
                    .position(|m| m.public == public)
                    .map(|p| (p as u16, k))
            })
            .expect("a member's devnet key");
        let offender = committee.members[usize::from(index)].id;
        let topic = shard_topic(chain_id, ShardId(0));
        let mut rogue = rogue_peer(&net, &topic).await;

        let recorded = |h: &ValidatorHandle| {
            let state = h.beacon().state;
            !state.faults.is_empty()
                && state
                    .validator(&offender)
                    .is_some_and(|v| v.signals.faults_proven >= 1)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !recorded(&target) {
            assert!(
                Instant::now() < deadline,
                "the double vote was never recorded on the beacon chain"
            );
            // Both prevotes for the next round of the height the committee is at now (votes of other heights
            // are not looked at).
            let status = target.status();
            for block in [None, Some([7; 32])] {
                let vote = Vote::<Bls>::sign(
                    chain_id,
                    ShardId(0),
                    VoteKind::Prevote,
                    status.lane.height + 1,
                    status.lane.round + 1,
                    block,
                    MemberIndex(index),
                    &key,
                );
                let _ = rogue.behaviour_mut().gossipsub.publish(
                    topic.clone(),
                    wire::encode_consensus(MemberIndex(index), None, &Message::Vote(vote)),
                );
            }
            let pause = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = rogue.select_next_some() => {}
                    _ = &mut pause => break,
                }
            }
        }
        // Nobody else is blamed (the rogue may have got several of its double votes recorded, each a fault).
        let state = target.beacon().state;
        for v in state.validators.iter().filter(|v| v.id != offender) {
            assert_eq!(v.signals.faults_proven, 0, "{:?}", v.id);
        }
        assert!(net.handles().iter().all(ValidatorHandle::is_running));
        net.shutdown().await;
    }

    /// A rogue peer joins a shard's topic and publishes garbage, truncated and forged messages (a Status far
    /// ahead, a vote signed with a key outside the committee, a `Decided` block with a forged certificate,
    /// a transaction batch with a forged signature): the committee ignores them all and keeps finalising.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_gossip_neither_crashes_nor_stalls_validators() {
        let wallet = chain::crypto::SecretKey::dev("rogue test wallet");
        let wallet_address = Address::of(&wallet.public());
        let (_dir, net, target) = one_shard(vec![wallet_address]).await;
        let chain_id = net.genesis.params.chain_id;

        let topic = shard_topic(chain_id, ShardId(0));
        let mut rogue = rogue_peer(&net, &topic).await;

        let height = target.status().lane.height;
        let status = Message::<Bls>::Status {
            shard: ShardId(0),
            height: u64::MAX,
            round: u32::MAX,
        };
        let outsider = bls::SecretKey::dev("not a member");
        let vote = Vote::<Bls>::sign(
            chain_id,
            ShardId(0),
            VoteKind::Precommit,
            height + 1,
            0,
            Some([7; 32]),
            MemberIndex(0),
            &outsider,
        );
        let forged_block = Block {
            header: chain::ledger::genesis_header(&net.genesis.params, ShardId(0), [1; 32]),
            transactions: Vec::new(),
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
            proofs: Vec::new(),
        };
        let mut header = forged_block.header.clone();
        header.height = height + 1;
        let forged_block = Block {
            header,
            transactions: Vec::new(),
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
            proofs: Vec::new(),
        };
        let decided = Message::<Bls>::Decided {
            certificate: QuorumCertificate {
                kind: VoteKind::Precommit,
                shard: ShardId(0),
                height: height + 1,
                round: 0,
                block: forged_block.hash(),
                signers: vec![0b1111],
                signature: outsider.sign(b"anything"),
            },
            block: Arc::new(forged_block),
        };
        let mut forged_tx = chain::Transaction {
            chain_id,
            sender: wallet.public(),
            nonce: 0,
            fee: chain::Amount(1_000),
            expiry_height: 1_000,
            kind: chain::TxKind::Transfer {
                to: Address([5; 32]),
                amount: chain::Amount(1),
            },
        }
        .sign(&wallet);
        forged_tx.signature.0[3] ^= 0x40;
        let valid_status = wire::encode_consensus(MemberIndex(1), None, &status);
        let messages: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff; 3000],
            vec![wire::ENVELOPE_VERSION, 2, 0],
            valid_status[..valid_status.len() - 1].to_vec(),
            valid_status,
            wire::encode_consensus(MemberIndex(0), None, &Message::Vote(vote)),
            wire::encode_consensus(MemberIndex(2), Some(MemberIndex(0)), &decided),
            wire::encode_transactions(&[forged_tx]),
        ];
        for (i, m) in messages.into_iter().enumerate() {
            let sent = rogue.behaviour_mut().gossipsub.publish(topic.clone(), m);
            assert!(
                sent.is_ok(),
                "hostile message {i} reached no validator: {sent:?}"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while target.status().lane.height < height + 5 {
            assert!(
                Instant::now() < deadline,
                "the shard stalled after hostile gossip"
            );
            tokio::select! {
                _ = rogue.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        assert!(net.handles().iter().all(ValidatorHandle::is_running));
        let account = target
            .account(wallet_address)
            .await
            .expect("answers")
            .expect("funded");
        assert_eq!(account.nonce, 0, "the forged transfer never applied");
        net.shutdown().await;
    }
}
