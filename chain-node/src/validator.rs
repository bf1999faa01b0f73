//! A validator: the thin tokio/libp2p driver around the `chain` crate's sans-IO consensus.
//!
//! One tokio task owns the libp2p swarm (TCP + noise + yamux, gossipsub) and two lanes, each a ledger over
//! its own RocksDB (`<db>/beacon`, `<db>/shard-<s>`) in one of two roles:
//! - the **beacon lane**, always: the beacon chain's [`BeaconApp`], as a [`Replica`] while the validator sits
//!   on the beacon committee of the newest epoch, else as a [`Follower`] that applies the beacon's finalised
//!   blocks. Every validator thereby knows every epoch's committees from its own copy of the beacon state.
//! - the **shard lane**, while the validator has a shard seat: that shard's [`ShardApp`], as a replica while
//!   it is a member of the committee of the height being decided, else as a follower, which is how a
//!   validator seated for a coming epoch catches up with the shard before its turn.
//!
//! After every event the driver reconciles the lanes with the beacon state (`reconcile`): which shard, which
//! role, which committee. A shard lane changes committee exactly at its epoch boundary (the heights of
//! `chain::beacon::epoch_of_height`), waits there until the beacon state holds the next epoch, and keeps
//! serving its old shard until its duty there ends.
//!
//! Catch-up after a restart is the replica's own protocol (`specs/consensus.md` §2.5); a follower asks with
//! a `Status` from index `FOLLOWER` and members answer it the same way. Nothing a peer sends can panic the
//! task: envelopes are length-checked and decoded into typed errors, and the replica and follower check every
//! signature and certificate themselves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::beacon::{BeaconApp, BeaconState};
use chain::bft::{self, Bls, Committee, FOLLOWER, Followed, Message, Output, QuorumCertificate};
use chain::block::{BEACON_SHARD, Block, BlockHeader, CrossLink};
use chain::crypto::{Hash, bls};
use chain::genesis::Genesis;
use chain::ledger::{App, LedgerError, ShardApp};
use chain::registry::{LINK_EVENTS_MAX, RegistryBatch};
use chain::{Account, Address, ShardId, SignedTransaction, State, TxError, spv};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identity, noise, tcp, yamux};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::beacon::Beacon;
use super::store::{OpenError, RocksStore};
use super::wire::{self, ENVELOPE_BYTES_MAX, Envelope, TX_BATCH_MAX};

const COMMANDS_IN_FLIGHT_MAX: usize = 256;
const COMMITS_BUFFERED_MAX: usize = 256;
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Transaction batches whose signatures are being checked on the blocking pool at once; beyond this a batch
/// is checked on the validator's own task, which slows its intake: that is the back-pressure.
const VERIFY_JOBS_MAX: usize = 8;
use chain::node::schedule::{self, RELAY_FIRST_RETRY_MS, RELAY_ON_OPEN_HEIGHTS};
pub use chain::node::schedule::{BEACON_COMMIT_WAIT_MS, HEAD_EVERY_BLOCKS};
use chain::node::{CatchUpThrottle, Drained, EvidenceSent, Relay, RelaySchedule, plan};

/// A lane of this validator: `chain::node::Lane` with BLS votes.
type Lane<A> = chain::node::Lane<Bls, A>;

/// The gossipsub topic of a shard's consensus messages and transactions.
pub fn shard_topic(chain_id: u32, shard: ShardId) -> IdentTopic {
    IdentTopic::new(format!("/ios/{chain_id:08x}/shard/{shard}/1"))
}

/// The gossipsub topic every validator follows for the shards' certified heads.
pub fn beacon_topic(chain_id: u32) -> IdentTopic {
    IdentTopic::new(format!("/ios/{chain_id:08x}/beacon/1"))
}

/// The gossipsub topic of the beacon chain's consensus messages (its committee's, and its followers').
pub fn beacon_consensus_topic(chain_id: u32) -> IdentTopic {
    IdentTopic::new(format!("/ios/{chain_id:08x}/beacon-bft/1"))
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("opening the ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("resuming consensus: {0}")]
    Replica(#[from] bft::ReplicaError),
    #[error("starting the validator's network: {0}")]
    Network(String),
    #[error("the validator has stopped")]
    Stopped,
}

/// How a validator runs.
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
    pub bft: Option<fn(u32, u16) -> bft::Config>,
    /// `false` only in benchmarks: see [`RocksStore::set_sync`].
    pub sync_writes: bool,
}

impl ValidatorConfig {
    fn bft_config(&self, shard: ShardId) -> bft::Config {
        let chain_id = self.genesis.params.chain_id;
        let mut c = match self.bft {
            Some(f) => f(chain_id, shard),
            None => bft::Config::new(chain_id, shard),
        };
        if shard == BEACON_SHARD {
            c.commit_wait_ms = c.commit_wait_ms.max(BEACON_COMMIT_WAIT_MS);
        }
        c
    }

    fn open_store(&self, name: &str) -> Result<RocksStore, ValidatorError> {
        let mut store = RocksStore::open(&self.db_dir.join(name))?;
        store.set_sync(self.sync_writes);
        Ok(store)
    }
}

/// A chain (a shard, or the beacon: `shard = BEACON_SHARD`) as one validator sees it, updated on every
/// commit: its shard lane's if it has one, else its beacon lane's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: ShardId,
    pub height: u64,
    pub tip: Hash,
    pub state_root: Hash,
    pub round: u32,
    /// The epoch of the height being decided.
    pub epoch: u64,
    /// Whether it is a member of the committee deciding it (else it follows).
    pub member: bool,
    /// Gossip messages to peers that gossipsub dropped since the start (a peer's send queue was full, or a
    /// message waited past its deadline): the first thing to look at when a committee stalls.
    pub dropped_messages: u64,
    /// Peers that gossipsub knows to be subscribed to this shard's topic: every other validator keeping the
    /// shard should be among them.
    pub topic_peers: usize,
}

/// The latest certified block of a shard that this validator knows of: its own shard's from its commits, the
/// others' from heads gossiped on the beacon topic, each checked against the shard's committee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHead {
    pub height: u64,
    pub block: Hash,
    pub state_root: Hash,
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
}

impl CommitNotice {
    /// Whether the block committed the Atomix lock of transaction `id` (of another shard).
    pub fn commits_lock(&self, id: &Hash) -> bool {
        self.inbound_ids.contains(id)
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
    commits: broadcast::Sender<Arc<CommitNotice>>,
    peer_id: PeerId,
    listen: Vec<Multiaddr>,
}

impl ValidatorHandle {
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

/// What an SPV proof is asked for.
/// A transaction's Atomix lock as one shard's committed state shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtomixStatus {
    /// The shard the answer is about (`None`: the validator keeps no shard).
    pub shard: Option<ShardId>,
    /// The transaction was made on this shard and locked value for another.
    pub locked: bool,
    /// This shard committed the lock (credited its recipient).
    pub committed: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum ProofOf {
    Account(Address),
    Tx(Hash),
}

/// A running validator.
pub struct Validator {
    pub handle: ValidatorHandle,
    task: tokio::task::JoinHandle<()>,
}

#[derive(NetworkBehaviour)]
struct ChainBehaviour {
    gossipsub: gossipsub::Behaviour,
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

fn build_swarm(keypair: identity::Keypair) -> Result<Swarm<ChainBehaviour>, ValidatorError> {
    let net = |e: &dyn std::fmt::Display| ValidatorError::Network(e.to_string());
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
            Ok(ChainBehaviour { gossipsub })
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
        let size = config.beacon.beacon_committee.len();
        let app = BeaconApp::open(
            &config.genesis,
            size,
            config.epoch_length,
            config.open_store("beacon")?,
        )?;
        let beacon_lane = Lane::follower(chain_id, BEACON_SHARD, app);

        let peer_id = config.keypair.public().to_peer_id();
        let mut swarm = build_swarm(config.keypair.clone())?;
        let net = |e: &dyn std::fmt::Display| ValidatorError::Network(e.to_string());
        // A validator subscribes to its seat's shard here, and to a later seat's shard when that lane opens
        // (`open_shard`), so it carries the traffic of the shards it keeps, not of every shard.
        let shard_topics: Vec<IdentTopic> = config
            .beacon
            .seat_of(&config.account)
            .filter(|(s, _)| *s != BEACON_SHARD)
            .map(|(s, _)| shard_topic(chain_id, s))
            .into_iter()
            .collect();
        // With fixed committees only the beacon's own members keep the beacon chain; with epochs every
        // validator follows it, to know each epoch's committees.
        let follows_beacon = config.epoch_length > 0
            || config
                .beacon
                .seat_of(&config.account)
                .is_some_and(|(s, _)| s == BEACON_SHARD);
        let beacon_topics = [beacon_topic(chain_id)]
            .into_iter()
            .chain(follows_beacon.then(|| beacon_consensus_topic(chain_id)));
        for topic in beacon_topics.chain(shard_topics) {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic)
                .map_err(|e| net(&e))?;
        }
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

        let known = Arc::new(beacon_lane.app().state().clone());
        let status = ShardStatus {
            shard: BEACON_SHARD,
            height: 0,
            tip: [0; 32],
            state_root: [0; 32],
            round: 0,
            epoch: 0,
            member: false,
            dropped_messages: 0,
            topic_peers: 0,
        };
        let (heads_tx, heads_rx) =
            watch::channel(vec![None; usize::from(config.beacon.shard_count())]);
        let (height, tip) = beacon_lane.app().tip();
        let (beacon_tx, beacon_rx) = watch::channel(BeaconView {
            height,
            tip,
            state: known.clone(),
            member: false,
        });
        let (status_tx, status_rx) = watch::channel(status);
        let (commits, _) = broadcast::channel(COMMITS_BUFFERED_MAX);
        let (commands_tx, commands_rx) = mpsc::channel(COMMANDS_IN_FLIGHT_MAX);
        let handle = ValidatorHandle {
            commands: commands_tx,
            status: status_rx,
            heads: heads_rx,
            beacon: beacon_rx,
            commits: commits.clone(),
            peer_id,
            listen,
        };
        let (verified_tx, verified_rx) = mpsc::channel(VERIFY_JOBS_MAX);
        let mut driver = Driver {
            follows_beacon,
            swarm,
            verified_tx,
            verify_jobs: Arc::new(tokio::sync::Semaphore::new(VERIFY_JOBS_MAX)),
            beacon: Some(beacon_lane),
            shard: None,
            known,
            heads_topic: beacon_topic(chain_id),
            chain_id,
            start: Instant::now(),
            status: status_tx,
            heads: heads_tx,
            beacon_state: beacon_tx,
            commits,
            evidence: 0,
            dropped_messages: 0,
            catch_up: CatchUpThrottle::default(),
            relays: RelaySchedule::default(),
            evidence_sent: EvidenceSent::default(),
            config,
        };
        driver.reconcile()?;
        driver.publish_status();
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

/// A commit of either lane, whoever produced it (replica or follower).
struct Commit {
    shard: ShardId,
    block: Arc<Block>,
    certificate: QuorumCertificate<Bls>,
    /// The member index that should publish the head, if this validator is a member.
    member: Option<u16>,
    committee: Committee<Bls>,
}

struct Driver {
    /// Whether this validator keeps the beacon chain (see `Validator::start`).
    follows_beacon: bool,
    swarm: Swarm<ChainBehaviour>,
    verified_tx: mpsc::Sender<Verified>,
    verify_jobs: Arc<tokio::sync::Semaphore>,
    /// Always present; an `Option` only so a role change can move it.
    beacon: Option<Lane<BeaconApp<RocksStore>>>,
    shard: Option<Lane<ShardApp<RocksStore>>>,
    /// The beacon state of the beacon lane's tip.
    known: Arc<BeaconState>,
    heads_topic: IdentTopic,
    chain_id: u32,
    start: Instant,
    status: watch::Sender<ShardStatus>,
    heads: watch::Sender<Vec<Option<ShardHead>>>,
    beacon_state: watch::Sender<BeaconView>,
    commits: broadcast::Sender<Arc<CommitNotice>>,
    evidence: u64,
    dropped_messages: u64,
    /// (to, height) -> when that finalised block was last sent to that member (or to the followers).
    catch_up: CatchUpThrottle,
    /// Atomix relays due, by `now_ms`.
    relays: RelaySchedule,
    evidence_sent: EvidenceSent,
    config: ValidatorConfig,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn beacon(&self) -> &Lane<BeaconApp<RocksStore>> {
        self.beacon
            .as_ref()
            .expect("the beacon lane is only moved out inside reconcile")
    }

    fn beacon_mut(&mut self) -> &mut Lane<BeaconApp<RocksStore>> {
        self.beacon
            .as_mut()
            .expect("the beacon lane is only moved out inside reconcile")
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut verified: mpsc::Receiver<Verified>,
    ) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        self.tick();
        if let Err(e) = self.after_event() {
            self.stop_with(&e);
            return;
        }
        loop {
            let deadline = self
                .poll_timeout()
                .map(|t| self.start + Duration::from_millis(t));
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => break,
                    Some(command) => self.on_command(command),
                },
                _ = timer => self.tick(),
                Some(batch) = verified.recv() => self.admit(batch),
                _ = redial.tick() => {
                    self.redial();
                    self.relay_due();
                }
            }
            if let Err(e) = self.after_event() {
                self.stop_with(&e);
                break;
            }
        }
    }

    fn stop_with(&self, e: &dyn std::fmt::Display) {
        tracing::error!("validator {}: stopped: {e}", self.config.account);
    }

    /// After every event: publish what the lanes produced, move them to the roles the beacon state says,
    /// and stop if a ledger's store failed.
    fn after_event(&mut self) -> Result<(), ValidatorError> {
        self.flush();
        self.reconcile()?;
        self.flush();
        self.refresh_round();
        if let Some(e) = self
            .beacon()
            .halted()
            .cloned()
            .or_else(|| self.shard.as_ref().and_then(|l| l.halted().cloned()))
        {
            return Err(ValidatorError::Ledger(LedgerError::Store(e)));
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Option<u64> {
        [
            self.beacon.as_ref().and_then(|l| l.poll_timeout()),
            self.shard.as_ref().and_then(|l| l.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn tick(&mut self) {
        let now = self.now_ms();
        self.beacon_mut().tick(now);
        if let Some(lane) = self.shard.as_mut() {
            lane.tick(now);
        }
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

    /// Which shard the shard lane should keep, and in which role. The lane keeps its shard while this
    /// validator is a member of the committee of the height it decides (its duty there is not over), else
    /// moves to the shard of its seat in the newest epoch, else closes.
    fn reconcile(&mut self) -> Result<(), ValidatorError> {
        let account = self.config.account;
        // The beacon lane: a member of the newest epoch's beacon committee (which certifies its next block).
        let want = plan::beacon_role(&self.known, &account);
        let now = self.now_ms();
        let lane = self.beacon.take().expect("present outside reconcile");
        let config = self.config.bft_config(BEACON_SHARD);
        self.beacon = Some(lane.set_role(want, config, &self.config.bls_secret, now)?);
        // The view says the role now, not the role of the last commit.
        let member = self.beacon().member().is_some();
        if self.beacon_state.borrow().member != member {
            self.beacon_state.send_modify(|v| v.member = member);
        }

        let current = self.shard.as_ref().map(|l| (l.shard, l.height()));
        let target = plan::shard_target(self.beacon().app(), &account, current);
        if self.shard.as_ref().map(|l| l.shard) != target {
            // The old lane's topic stays subscribed: gossipsub answers an unsubscribe with prunes and
            // backoffs, and a validator that comes back to that shard within them would not hear its
            // committee. Messages of a shard without a lane here are dropped on arrival.
            self.shard = None;
            if let Some(shard) = target {
                self.open_shard(shard)?;
            }
            self.publish_status();
        }
        if let Some(lane) = self.shard.take() {
            let want = plan::shard_role(self.beacon().app(), &account, lane.shard, lane.height());
            let was_member = lane.member().is_some();
            let config = self.config.bft_config(lane.shard);
            let lane = lane.set_role(want, config, &self.config.bls_secret, now)?;
            let changed = was_member != lane.member().is_some();
            self.shard = Some(lane);
            if changed {
                self.publish_status();
            }
        }
        Ok(())
    }

    /// The committee that certifies block `height` of `shard`: from the beacon state, or from this
    /// validator's archive of every epoch for one the state no longer keeps.
    fn shard_committee(&self, shard: ShardId, height: u64) -> Option<Committee<Bls>> {
        self.beacon().app().committee_at(shard, height)
    }

    fn open_shard(&mut self, shard: ShardId) -> Result<(), ValidatorError> {
        tracing::debug!(account = %self.config.account, shard, "opening a shard lane");
        let store = self.config.open_store(&format!("shard-{shard}"))?;
        let mut app = ShardApp::open(&self.config.genesis, shard, store)?;
        app.block_txs_max = self.config.block_txs_max.min(chain::block::BLOCK_TXS_MAX);
        app.set_certifier(self.known.clone());
        // Relays planned before a restart are gone: relay the locks of the recent heights again.
        let tip = app.tip().0;
        let at = self.now_ms().saturating_add(RELAY_FIRST_RETRY_MS);
        self.relays.plan(
            at,
            Relay {
                shard,
                from: tip.saturating_sub(RELAY_ON_OPEN_HEIGHTS),
                to: tip,
                attempt: 0,
            },
        );
        let topic = shard_topic(self.chain_id, shard);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| ValidatorError::Network(e.to_string()))?;
        let (height, tip) = app.tip();
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
        Ok(())
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<ChainBehaviourEvent>) {
        let message = match event {
            SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => message,
            SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(gossipsub::Event::SlowPeer {
                failed_messages,
                ..
            })) => {
                let dropped = (failed_messages.priority + failed_messages.non_priority) as u64;
                self.dropped_messages = self.dropped_messages.saturating_add(dropped);
                self.status
                    .send_modify(|s| s.dropped_messages = self.dropped_messages);
                return;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::debug!(account = %self.config.account, %peer_id, dialer = endpoint.is_dialer(), num_established, "connection established");
                return;
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(account = %self.config.account, %peer_id, num_established, ?cause, "connection closed");
                return;
            }
            SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { peer_id, topic }
                | gossipsub::Event::Unsubscribed { peer_id, topic },
            )) => {
                tracing::debug!(%peer_id, %topic, "peer subscription changed");
                let topic_peers = self.topic_peers();
                self.status.send_modify(|s| s.topic_peers = topic_peers);
                return;
            }
            _ => return,
        };
        if message.topic == self.heads_topic.hash() {
            if let Ok(Envelope::Head(head)) = wire::decode(&message.data) {
                self.on_head(*head);
            }
            return;
        }
        let on_beacon = message.topic == self.lane_topic(BEACON_SHARD).hash();
        let on_shard = self
            .shard
            .as_ref()
            .is_some_and(|l| message.topic == self.lane_topic(l.shard).hash());
        if !on_beacon && !on_shard {
            return;
        }
        match wire::decode(&message.data) {
            Ok(Envelope::Consensus { from, to, message }) => {
                if !on_beacon {
                    tracing::trace!(
                        account = %self.config.account,
                        from,
                        ?to,
                        kind = match &*message {
                            Message::Proposal(_) => "proposal",
                            Message::Vote(_) => "vote",
                            Message::Decided { .. } => "decided",
                            Message::Status { .. } => "status",
                            Message::Polka { .. } => "polka",
                        },
                        "consensus message"
                    );
                }
                if on_beacon {
                    self.on_consensus_beacon(from, to, *message);
                } else {
                    self.on_consensus_shard(from, to, *message);
                }
            }
            // Peers gossip what they admitted; a transaction this mempool refuses (already included,
            // replaced, full, forged) is simply dropped. Followers keep a mempool too, for their turn.
            Ok(Envelope::Transactions(txs)) if on_shard => self.verify(txs, None),
            // Atomix locks of another shard: relayed by every member there, and again later, so most
            // copies are refused as already committed.
            Ok(Envelope::Inbound(inbound)) if on_shard => {
                let lane = self.shard.as_mut().expect("on_shard");
                if let Err(e) = lane.app_mut().submit_inbound(*inbound) {
                    tracing::trace!(account = %self.config.account, "inbound refused: {e}");
                }
            }
            Ok(Envelope::Evidence(e)) if on_beacon => self.offer_evidence(*e),
            // Heads belong on the beacon topic; undecodable bytes from a peer are dropped.
            Ok(_) | Err(_) => {}
        }
    }

    fn on_consensus_beacon(&mut self, from: u16, to: Option<u16>, message: Message<Bls>) {
        let now = self.now_ms();
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
            Err(e) => self.stop_with(&e),
        }
    }

    fn on_consensus_shard(&mut self, from: u16, to: Option<u16>, message: Message<Bls>) {
        let now = self.now_ms();
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
            Err(e) => self.stop_with(&e),
        }
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
        let Some(known_head) = self.heads.borrow().get(usize::from(shard)).cloned() else {
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
            Err(chain::beacon::LinkError::PoolFull)
        };
        let valid = match offered {
            Ok(()) => true,
            Err(
                chain::beacon::LinkError::NotNewer { .. }
                | chain::beacon::LinkError::PoolFull
                | chain::beacon::LinkError::UnknownEpoch { .. },
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
        self.heads.send_modify(|heads| {
            if let Some(slot) = heads.get_mut(usize::from(shard)) {
                *slot = Some(head);
            }
        });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit { txs, reply } => {
                if self.shard.is_some() {
                    self.verify(txs, Some(reply));
                } else {
                    let _ = reply.send(self.refuse(&txs));
                }
            }
            Command::Account { address, reply } => {
                let account = self
                    .shard
                    .as_ref()
                    .and_then(|l| l.app().state().account(&address).cloned());
                let _ = reply.send(account);
            }
            Command::Atomix { tx, reply } => {
                let status = self.shard.as_ref().map_or(AtomixStatus::default(), |l| {
                    let state = l.app().state();
                    AtomixStatus {
                        shard: Some(l.shard),
                        locked: state.is_locked(&tx),
                        committed: state.is_committed(&tx),
                    }
                });
                let _ = reply.send(status);
            }
            Command::RelayLock { tx, reply } => {
                let found = self.shard.as_ref().and_then(|l| {
                    let app = l.app();
                    let height = app.height_of_tx(&tx)?;
                    app.state().is_locked(&tx).then_some((l.shard, height))
                });
                if let Some((shard, height)) = found {
                    let relay = Relay {
                        shard,
                        from: height,
                        to: height,
                        attempt: 0,
                    };
                    self.relay(relay, false);
                }
                let _ = reply.send(found.is_some());
            }
            Command::Prove { what, reply } => {
                let proof = self.shard.as_ref().and_then(|l| match what {
                    ProofOf::Account(a) => l.app().prove_account(&a).map(spv::Proof::Account),
                    ProofOf::Tx(id) => l.app().prove_tx(&id).map(spv::Proof::Tx),
                });
                let _ = reply.send(proof);
            }
            Command::EpochProofs { after, reply } => {
                let app = self.beacon().app();
                let proofs = (after.saturating_add(1)..=app.state().epoch())
                    .take(spv::EPOCH_PROOFS_MAX)
                    .map_while(|e| app.epoch_proof(e))
                    .collect();
                let _ = reply.send(proofs);
            }
            Command::Describe { reply } => {
                let lanes: Vec<String> = std::iter::once(self.beacon().describe())
                    .chain(self.shard.as_ref().map(|l| l.describe()))
                    .collect();
                let _ = reply.send(lanes.join("; "));
            }
            Command::Stop => {}
        }
    }

    /// Refusals for transactions sent to a validator without a shard seat: the beacon chain takes none.
    fn refuse(&self, txs: &[SignedTransaction]) -> Vec<Result<(), TxError>> {
        let shards = self.known.shard_count();
        txs.iter()
            .map(|tx| {
                Err(TxError::WrongShard {
                    shard: BEACON_SHARD,
                    sender_shard: chain::shard_of(&tx.tx.sender_address(), shards),
                })
            })
            .collect()
    }

    /// Checks a batch's signatures on the blocking pool, so that consensus on this task goes on meanwhile;
    /// the batch comes back through `verified` to [`Driver::admit`]. With every job slot busy the batch is
    /// checked here.
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
            Err(_) => {
                let signatures_ok = check_signatures(&txs);
                self.admit(Verified {
                    txs,
                    signatures_ok,
                    reply,
                });
            }
        }
    }

    fn admit(&mut self, batch: Verified) {
        let Verified {
            txs,
            signatures_ok,
            reply,
        } = batch;
        let Some(lane) = self.shard.as_mut() else {
            // The seat moved while the batch was being checked: nothing here takes transactions.
            if let Some(reply) = reply {
                let _ = reply.send(self.refuse(&txs));
            }
            return;
        };
        let Some(reply) = reply else {
            lane.app_mut().submit_verified(txs, &signatures_ok);
            return;
        };
        let results = lane.app_mut().submit_verified(txs.clone(), &signatures_ok);
        let shard = lane.shard;
        let topic = self.lane_topic(shard);
        let accepted: Vec<SignedTransaction> = txs
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tx, _)| tx)
            .collect();
        for batch in accepted.chunks(TX_BATCH_MAX) {
            self.publish(&topic, wire::encode_transactions(batch));
        }
        let _ = reply.send(results);
    }

    /// The topic of a lane's consensus messages: the beacon's, or a shard's.
    fn lane_topic(&self, shard: ShardId) -> IdentTopic {
        if shard == BEACON_SHARD {
            beacon_consensus_topic(self.chain_id)
        } else {
            shard_topic(self.chain_id, shard)
        }
    }

    fn publish(&mut self, topic: &IdentTopic, bytes: Vec<u8>) {
        // With no subscribed peer yet (startup, partition) the message is lost; replicas re-send what
        // matters every `rebroadcast_ms`, followers ask again.
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), bytes);
    }

    /// Publishes what both lanes produced and handles their commits.
    fn flush(&mut self) {
        let now = self.now_ms();
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
            let Drained {
                from: me,
                committee,
                outputs,
                ask,
            } = drained;
            let topic = self.lane_topic(shard);
            if let Some(status) = ask
                && (!beacon || self.follows_beacon)
            {
                self.publish(&topic, wire::encode_consensus(FOLLOWER, None, &status));
            }
            for output in outputs {
                self.on_output(shard, &topic, me, &committee, output);
            }
        }
    }

    fn on_output(
        &mut self,
        shard: ShardId,
        topic: &IdentTopic,
        me: u16,
        committee: &Option<Committee<Bls>>,
        output: Output<Bls>,
    ) {
        match output {
            Output::Broadcast(message) => {
                self.publish(topic, wire::encode_consensus(me, None, &message))
            }
            Output::Send { to, message } => {
                if let Message::Decided { block, .. } = &message
                    && !self
                        .catch_up
                        .due(self.now_ms(), shard, to, block.header.height)
                {
                    return;
                }
                self.publish(topic, wire::encode_consensus(me, Some(to), &message))
            }
            Output::Committed {
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
            Output::Evidence(e) => {
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
                    let topic = self.lane_topic(BEACON_SHARD);
                    self.publish(&topic, wire::encode_evidence(&e));
                    self.offer_evidence(e);
                }
            }
        }
    }

    fn on_commit(&mut self, c: Commit) {
        let height = c.block.header.height;
        tracing::debug!(
            account = %self.config.account,
            shard = c.shard,
            height,
            round = c.certificate.round,
            member = c.member.is_some(),
            "committed"
        );
        if c.shard == BEACON_SHARD {
            self.known = Arc::new(self.beacon().app().state().clone());
            if let Some(lane) = self.shard.as_mut() {
                lane.app_mut().set_certifier(self.known.clone());
            }
            self.beacon_state.send_replace(BeaconView {
                height,
                tip: c.block.hash(),
                state: self.known.clone(),
                member: c.member.is_some(),
            });
        } else {
            self.set_head(
                c.shard,
                ShardHead {
                    height,
                    block: c.block.hash(),
                    state_root: c.block.header.state_root,
                },
            );
            let locks = c.block.transactions.iter().any(|t| {
                matches!(&t.tx.kind, chain::TxKind::Transfer { to, .. }
                    if chain::shard_of(to, self.config.genesis.params.shard_count) != c.shard)
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
                let bytes = wire::encode_head(&head);
                let topic = self.heads_topic.clone();
                self.publish(&topic, bytes);
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
        };
        // No receiver is fine: nobody is waiting.
        let _ = self.commits.send(Arc::new(notice));
        self.publish_status_at(Some(&c.block.header));
    }

    /// Keeps evidence of a fault for this validator's beacon lane to propose (if it is a member) and
    /// check; evidence that does not verify, or is recorded already, is dropped.
    fn offer_evidence(&mut self, e: chain::bft::Evidence<Bls>) {
        let account = self.config.account;
        if let Err(error) = self.beacon_mut().app_mut().offer_evidence(e) {
            tracing::debug!(%account, "evidence refused: {error}");
        }
    }

    /// Relays the Atomix locks of the shard lane's committed heights `relay.from..=relay.to` to the output
    /// shards' topics, and plans the next attempt (see `chain::node::schedule`) if `retry`.
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
            tracing::debug!(account = %self.config.account, shard, out, from, to, locks = inbound.locks.len(), attempt, "relaying Atomix locks");
            self.publish(&shard_topic(self.chain_id, out), bytes);
        }
        if retry && let Some((wait, next)) = relay.next() {
            let at = self.now_ms().saturating_add(wait);
            self.relays.plan(at, next);
        }
    }

    fn relay_due(&mut self) {
        let now = self.now_ms();
        while let Some(relay) = self.relays.pop_due(now) {
            self.relay(relay, true);
        }
    }

    /// The registry events of this validator's shard that the beacon chain has not applied yet (as far as
    /// this validator's beacon lane knows; without one, the latest [`LINK_EVENTS_MAX`]), at most that many,
    /// with the proof of where they end. `None` if there are none or the shard lane has moved past `height`
    /// (the proof must be against that height's state root).
    fn registry_batch(&self, shard: ShardId, height: u64) -> Option<RegistryBatch> {
        let lane = self.shard.as_ref().filter(|l| l.shard == shard)?;
        let app = lane.app();
        if app.tip().0 != height {
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

    /// Keeps the status's round current between commits: a round that keeps rising is a stalled committee.
    fn refresh_round(&mut self) {
        let (shard, round) = match &self.shard {
            Some(l) => (l.shard, l.round()),
            None => (BEACON_SHARD, self.beacon().round()),
        };
        let status = self.status.borrow();
        if status.shard == shard && status.round != round {
            let height = status.height;
            drop(status);
            tracing::debug!(account = %self.config.account, shard, height, round, "round changed");
            self.status.send_modify(|s| s.round = round);
        }
    }

    fn publish_status(&mut self) {
        self.publish_status_at(None);
    }

    /// The status of the shard lane (or of the beacon lane if there is none), with the state root of the
    /// header just committed, or of the last status if the chain is the same.
    fn publish_status_at(&mut self, committed: Option<&BlockHeader>) {
        let (shard, height, tip, round, member) = match &self.shard {
            Some(l) => {
                let (h, tip) = l.app().tip();
                (l.shard, h, tip, l.round(), l.member().is_some())
            }
            None => {
                let l = self.beacon();
                let (h, tip) = l.app().tip();
                (BEACON_SHARD, h, tip, l.round(), l.member().is_some())
            }
        };
        if committed.is_some_and(|h| h.shard != shard) {
            // A commit of the other lane: this status is not about it.
            return;
        }
        let previous = self.status.borrow().clone();
        let state_root = match committed {
            Some(h) => h.state_root,
            None if previous.shard == shard && previous.height == height => previous.state_root,
            None => match &mut self.shard {
                Some(l) => l.app().state().clone().root(),
                None => self.known.root(),
            },
        };
        let epoch = if shard == BEACON_SHARD {
            self.known.epoch()
        } else {
            self.known.epoch_of_height(height + 1)
        };
        self.status.send_replace(ShardStatus {
            shard,
            height,
            tip,
            state_root,
            round,
            epoch,
            member,
            dropped_messages: self.dropped_messages,
            topic_peers: self.topic_peers(),
        });
    }

    /// Peers known to be subscribed to the shard lane's topic (the beacon's consensus topic without one).
    fn topic_peers(&self) -> usize {
        let topic = self
            .lane_topic(self.shard.as_ref().map_or(BEACON_SHARD, |l| l.shard))
            .hash();
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
    use crate::{ChainDevnet, DevnetOptions};
    use chain::bft::VoteKind;
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
            .find(|h| h.status().shard == 0)
            .expect("a validator of shard 0");
        (dir, net, target)
    }

    /// A peer of its own that joins `topic` and dials every validator of `net`, once the subscriptions have
    /// had a second to propagate.
    async fn rogue_peer(net: &ChainDevnet, topic: &IdentTopic) -> Swarm<ChainBehaviour> {
        let mut rogue = build_swarm(identity::Keypair::generate_ed25519()).expect("swarm");
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

    /// A member of shard 0 votes twice in one step (a rogue peer holding its key publishes both votes): the
    /// committee turns the votes into evidence, the beacon chain records the fault against that member, and
    /// the API shows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_double_vote_is_recorded_on_the_beacon_chain_against_its_signer() {
        let (_dir, net, target) = one_shard(Vec::new()).await;
        let chain_id = net.genesis.params.chain_id;
        let committee = target.beacon().state.committee(0).expect("shard 0");
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
        let topic = shard_topic(chain_id, 0);
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
                    0,
                    VoteKind::Prevote,
                    status.height + 1,
                    status.round + 1,
                    block,
                    index,
                    &key,
                );
                let _ = rogue.behaviour_mut().gossipsub.publish(
                    topic.clone(),
                    wire::encode_consensus(index, None, &Message::Vote(vote)),
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

        let topic = shard_topic(chain_id, 0);
        let mut rogue = rogue_peer(&net, &topic).await;

        let height = target.status().height;
        let status = Message::<Bls>::Status {
            shard: 0,
            height: u64::MAX,
            round: u32::MAX,
        };
        let outsider = bls::SecretKey::dev("not a member");
        let vote = Vote::<Bls>::sign(
            chain_id,
            0,
            VoteKind::Precommit,
            height + 1,
            0,
            Some([7; 32]),
            0,
            &outsider,
        );
        let forged_block = Block {
            header: chain::ledger::genesis_header(&net.genesis.params, 0, [1; 32]),
            transactions: Vec::new(),
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
        };
        let mut header = forged_block.header.clone();
        header.height = height + 1;
        let forged_block = Block {
            header,
            transactions: Vec::new(),
            links: Vec::new(),
            inbound: Vec::new(),
            evidence: Vec::new(),
        };
        let decided = Message::<Bls>::Decided {
            certificate: QuorumCertificate {
                kind: VoteKind::Precommit,
                shard: 0,
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
        let valid_status = wire::encode_consensus(1, None, &status);
        let messages: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff; 3000],
            vec![wire::ENVELOPE_VERSION, 2, 0],
            valid_status[..valid_status.len() - 1].to_vec(),
            valid_status,
            wire::encode_consensus(0, None, &Message::Vote(vote)),
            wire::encode_consensus(2, Some(0), &decided),
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
        while target.status().height < height + 5 {
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
