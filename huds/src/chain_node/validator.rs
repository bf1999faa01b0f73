//! A validator: the thin tokio/libp2p driver around one sans-IO BFT replica and its ledger: a shard's
//! ([`ShardApp`]) or the beacon chain's ([`BeaconApp`]), whichever its seat is.
//!
//! One tokio task owns the libp2p swarm (TCP + noise + yamux, gossipsub), the [`Replica`] and its
//! ledger over a [`RocksStore`]. It feeds the replica the consensus messages of its committee's topic and
//! the time (`poll_timeout` sets the only timer), publishes what the replica outputs, admits transactions
//! from its handle and from the topic into the mempool, and publishes every commit on a watch channel (the
//! shard's status) and a bounded broadcast channel (the committed transaction ids, which clients wait on).
//!
//! Catch-up after a restart is the replica's own protocol (`specs/consensus.md` §2.5): it broadcasts
//! `Status{height}` every `rebroadcast_ms`, and members ahead answer with up to `catch_up_blocks_max`
//! finalised blocks and their precommit certificates, which it verifies before applying. Over gossipsub a
//! message for one member is published on the topic with its index, and the others drop it.
//!
//! Nothing a peer sends can panic the task: envelopes are length-checked and decoded into typed errors, and
//! the replica checks every signature and certificate itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::beacon::{BeaconApp, BeaconState};
use chain::bft::{self, Bls, Input, Message, Output, QuorumCertificate, Replica, VoteKind};
use chain::block::{BEACON_SHARD, BlockHeader, CrossLink};
use chain::crypto::{Hash, bls};
use chain::genesis::Genesis;
use chain::ledger::{App, LedgerError, ShardApp};
use chain::{Account, Address, ShardId, SignedTransaction, TxError, spv};
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
/// A finalised block is sent to one member at most once per this interval: a `Status` costs its sender a
/// few bytes and would otherwise make every member publish up to 8 whole blocks.
const CATCH_UP_RESEND: Duration = Duration::from_secs(1);
const CATCH_UP_REMEMBERED_MAX: usize = 1024;

/// The beacon chain makes a block at most this often: its blocks carry the shards' heads, which come every
/// few hundred milliseconds, and an idle beacon should not cost what a busy shard does.
pub const BEACON_COMMIT_WAIT_MS: u64 = 500;

/// The gossipsub topic of a shard's consensus messages and transactions.
pub fn shard_topic(chain_id: u32, shard: ShardId) -> IdentTopic {
    IdentTopic::new(format!("/ios/{chain_id:08x}/shard/{shard}/1"))
}

/// The beacon topic: every validator subscribes, so the validators of all shards form one gossip mesh.
pub fn beacon_topic(chain_id: u32) -> IdentTopic {
    IdentTopic::new(format!("/ios/{chain_id:08x}/beacon/1"))
}

/// The gossipsub topic of the beacon chain's consensus messages (its committee's).
pub fn beacon_consensus_topic(chain_id: u32) -> IdentTopic {
    IdentTopic::new(format!("/ios/{chain_id:08x}/beacon-bft/1"))
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("opening the shard ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("resuming consensus: {0}")]
    Replica(#[from] bft::ReplicaError),
    #[error("validator {0} has no committee seat this epoch")]
    NoSeat(Address),
    #[error("starting the validator's network: {0}")]
    Network(String),
    #[error("the validator has stopped")]
    Stopped,
}

/// How a validator runs.
#[derive(Clone)]
pub struct ValidatorConfig {
    pub genesis: Arc<Genesis>,
    pub beacon: Arc<Beacon>,
    /// The validator's account (its committee seat) and its BLS vote key.
    pub account: Address,
    pub bls_secret: bls::SecretKey,
    /// The libp2p identity.
    pub keypair: identity::Keypair,
    /// Where its chain database lives.
    pub db_dir: PathBuf,
    pub listen: Multiaddr,
    /// Validators to connect to (redialled while disconnected).
    pub peers: Vec<Multiaddr>,
    /// Transactions per block, at most `chain::block::BLOCK_TXS_MAX`.
    pub block_txs_max: usize,
    pub bft: Option<bft::Config>,
    /// `false` only in benchmarks: see [`RocksStore::set_sync`].
    pub sync_writes: bool,
}

/// A shard (or the beacon chain, `shard = BEACON_SHARD`) as one validator sees it, updated on every commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: ShardId,
    pub height: u64,
    pub tip: Hash,
    pub state_root: Hash,
    pub round: u32,
}

/// The latest certified block of a shard that this validator knows of: its own shard's from its commits, the
/// others' from heads gossiped on the beacon topic, each checked against the shard's committee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHead {
    pub height: u64,
    pub block: Hash,
    pub state_root: Hash,
}

/// A shard's head goes to the beacon topic every this many heights (from one member, in rotation): enough
/// for other shards to follow it without a BLS check per block of every shard.
pub const HEAD_EVERY_BLOCKS: u64 = 8;

/// One committed block, as clients waiting for finality see it.
#[derive(Debug, Clone)]
pub struct CommitNotice {
    pub shard: ShardId,
    pub height: u64,
    pub block: Hash,
    /// The committee member that proposed it (the proposer of the round its certificate is from).
    pub proposer: Address,
    pub tx_ids: Vec<Hash>,
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
    Prove {
        what: ProofOf,
        reply: oneshot::Sender<Option<spv::Proof>>,
    },
    Stop,
}

/// A cheap, cloneable handle on a running validator.
#[derive(Clone)]
pub struct ValidatorHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ShardStatus>,
    heads: watch::Receiver<Vec<Option<ShardHead>>>,
    beacon: watch::Receiver<Option<Arc<BeaconState>>>,
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

    /// The beacon chain's committed state, on a validator of the beacon committee (`None` elsewhere).
    pub fn beacon_state(&self) -> Option<Arc<BeaconState>> {
        self.beacon.borrow().clone()
    }

    /// A receiver of commit notices; subscribe before submitting to never miss the commit.
    pub fn commits(&self) -> broadcast::Receiver<Arc<CommitNotice>> {
        self.commits.subscribe()
    }

    /// Admits transactions to the mempool (and gossips the accepted ones to the committee).
    pub async fn submit(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<(), TxError>>, ValidatorError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Submit { txs, reply })
            .await
            .map_err(|_| ValidatorError::Stopped)?;
        rx.await.map_err(|_| ValidatorError::Stopped)
    }

    /// The committed state of an account on this validator's shard.
    pub async fn account(&self, address: Address) -> Result<Option<Account>, ValidatorError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Account { address, reply })
            .await
            .map_err(|_| ValidatorError::Stopped)?;
        rx.await.map_err(|_| ValidatorError::Stopped)
    }

    /// An SPV proof from this validator's ledger: None if there is nothing to prove it from (no block yet, or
    /// no such transaction on this shard).
    pub async fn prove(&self, what: ProofOf) -> Result<Option<spv::Proof>, ValidatorError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Prove { what, reply })
            .await
            .map_err(|_| ValidatorError::Stopped)?;
        rx.await.map_err(|_| ValidatorError::Stopped)
    }
}

/// What an SPV proof is asked for.
#[derive(Debug, Clone, Copy)]
pub enum ProofOf {
    Account(Address),
    Tx(Hash),
}

/// What the driver needs from the ledger it runs, beyond consensus: a shard's or the beacon chain's.
pub trait SeatLedger: App + Send + 'static {
    fn state_root(&mut self) -> Hash;
    /// Admits transactions whose signatures were checked (`signatures_ok`) to the mempool.
    fn admit(
        &mut self,
        txs: Vec<SignedTransaction>,
        signatures_ok: &[bool],
    ) -> Vec<Result<(), TxError>>;
    fn account(&self, address: &Address) -> Option<Account>;
    fn prove(&self, what: ProofOf) -> Option<spv::Proof>;
    /// A certified shard head heard on the beacon topic. Returns whether it is valid, having checked it if
    /// it keeps it (the beacon keeps it for a cross-link); `None`: not checked here.
    fn offer_head(&mut self, link: &CrossLink) -> Option<bool>;
    /// The beacon chain's state, on the beacon's ledger.
    fn beacon_state(&self) -> Option<Arc<BeaconState>>;
}

impl SeatLedger for ShardApp<RocksStore> {
    fn state_root(&mut self) -> Hash {
        self.state().clone().root()
    }
    fn admit(
        &mut self,
        txs: Vec<SignedTransaction>,
        signatures_ok: &[bool],
    ) -> Vec<Result<(), TxError>> {
        self.submit_verified(txs, signatures_ok)
    }
    fn account(&self, address: &Address) -> Option<Account> {
        self.state().account(address).cloned()
    }
    fn prove(&self, what: ProofOf) -> Option<spv::Proof> {
        match what {
            ProofOf::Account(a) => self.prove_account(&a).map(spv::Proof::Account),
            ProofOf::Tx(id) => self.prove_tx(&id).map(spv::Proof::Tx),
        }
    }
    fn offer_head(&mut self, _link: &CrossLink) -> Option<bool> {
        None
    }
    fn beacon_state(&self) -> Option<Arc<BeaconState>> {
        None
    }
}

impl SeatLedger for BeaconApp<RocksStore> {
    fn state_root(&mut self) -> Hash {
        self.state().root()
    }
    /// The beacon chain takes no transactions: they belong to the sender's shard.
    fn admit(
        &mut self,
        txs: Vec<SignedTransaction>,
        _signatures_ok: &[bool],
    ) -> Vec<Result<(), TxError>> {
        let shards = self.state().shard_count();
        txs.iter()
            .map(|tx| {
                Err(TxError::WrongShard {
                    shard: BEACON_SHARD,
                    sender_shard: chain::shard_of(&tx.tx.sender_address(), shards),
                })
            })
            .collect()
    }
    fn account(&self, _address: &Address) -> Option<Account> {
        None
    }
    fn prove(&self, _what: ProofOf) -> Option<spv::Proof> {
        None
    }
    fn offer_head(&mut self, link: &CrossLink) -> Option<bool> {
        match self.offer(link.clone()) {
            Ok(()) => Some(true),
            // Already linked, or the pool is full: the head may still be news to this validator.
            Err(chain::beacon::LinkError::NotNewer { .. } | chain::beacon::LinkError::PoolFull) => {
                None
            }
            Err(_) => Some(false),
        }
    }
    fn beacon_state(&self) -> Option<Arc<BeaconState>> {
        Some(Arc::new(self.state().clone()))
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
}

fn build_swarm(keypair: identity::Keypair) -> Result<Swarm<ChainBehaviour>, ValidatorError> {
    let net = |e: &dyn std::fmt::Display| ValidatorError::Network(e.to_string());
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(ENVELOPE_BYTES_MAX + 1024)
        .heartbeat_interval(Duration::from_millis(200))
        // Committees are small (4 to a few dozen) and fully connected: a small mesh, and publications are
        // flooded to every subscribed peer.
        .mesh_n(4)
        .mesh_n_low(2)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .flood_publish(true)
        .validation_mode(ValidationMode::Strict)
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
            let gossipsub =
                gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)?;
            Ok(ChainBehaviour { gossipsub })
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

impl Validator {
    /// Opens the validator's database (resuming where it stopped), starts its network and consensus.
    /// Returns once it listens.
    pub async fn start(config: ValidatorConfig) -> Result<Validator, ValidatorError> {
        let (shard, _) = config
            .beacon
            .seat_of(&config.account)
            .ok_or(ValidatorError::NoSeat(config.account))?;
        let mut store = RocksStore::open(&config.db_dir)?;
        store.set_sync(config.sync_writes);
        if shard == BEACON_SHARD {
            let size = config.beacon.beacon_committee.len();
            let app = BeaconApp::open(&config.genesis, size, store)?;
            Self::launch(config, app).await
        } else {
            let mut app = ShardApp::open(&config.genesis, shard, store)?;
            app.block_txs_max = config.block_txs_max.min(chain::block::BLOCK_TXS_MAX);
            Self::launch(config, app).await
        }
    }

    async fn launch<L: SeatLedger>(
        config: ValidatorConfig,
        app: L,
    ) -> Result<Validator, ValidatorError> {
        let (shard, me) = config
            .beacon
            .seat_of(&config.account)
            .ok_or(ValidatorError::NoSeat(config.account))?;
        let committee = config
            .beacon
            .committee(shard)
            .expect("a seat is on a shard or the beacon")
            .clone();
        let chain_id = config.genesis.params.chain_id;
        let bft_config = config.bft.clone().unwrap_or_else(|| {
            let mut c = bft::Config::new(chain_id, shard);
            if shard == BEACON_SHARD {
                c.commit_wait_ms = BEACON_COMMIT_WAIT_MS;
            }
            c
        });
        let mut replica = Replica::new(bft_config, committee, me, config.bls_secret.clone(), app)?;

        let peer_id = config.keypair.public().to_peer_id();
        let mut swarm = build_swarm(config.keypair.clone())?;
        let topic = if shard == BEACON_SHARD {
            beacon_consensus_topic(chain_id)
        } else {
            shard_topic(chain_id, shard)
        };
        let net = |e: &dyn std::fmt::Display| ValidatorError::Network(e.to_string());
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| net(&e))?;
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&beacon_topic(chain_id))
            .map_err(|e| net(&e))?;
        swarm
            .listen_on(config.listen.clone())
            .map_err(|e| net(&e))?;
        let listen = loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
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

        let (tip_height, tip) = replica.app().tip();
        let status = ShardStatus {
            shard,
            height: tip_height,
            tip,
            state_root: replica.app_mut().state_root(),
            round: replica.round(),
        };
        let mut heads = vec![None; usize::from(config.beacon.shard_count())];
        if let Some(slot) = heads.get_mut(usize::from(shard)) {
            *slot = Some(ShardHead {
                height: tip_height,
                block: tip,
                state_root: status.state_root,
            });
        }
        let (heads_tx, heads_rx) = watch::channel(heads);
        let (beacon_tx, beacon_rx) = watch::channel(replica.app().beacon_state());
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
        let driver = Driver {
            swarm,
            verified_tx,
            verify_jobs: Arc::new(tokio::sync::Semaphore::new(VERIFY_JOBS_MAX)),
            replica,
            topic,
            beacon_topic: beacon_topic(chain_id),
            beacon: config.beacon.clone(),
            chain_id,
            me,
            shard,
            start: Instant::now(),
            status: status_tx,
            heads: heads_tx,
            beacon_state: beacon_tx,
            commits,
            peers: config.peers,
            evidence: 0,
            catch_up_sent: HashMap::new(),
        };
        let task = tokio::spawn(driver.run(commands_rx, verified_rx));
        Ok(Validator { handle, task })
    }

    /// Stops the validator cleanly; its database is closed when this returns.
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Stop).await;
        let _ = self.task.await;
    }

    /// Stops the validator at once, as a crash would: no goodbye, nothing flushed beyond what consensus
    /// already wrote. Its database is closed when this returns, so it can be restarted on it.
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

struct Driver<L: SeatLedger> {
    swarm: Swarm<ChainBehaviour>,
    verified_tx: mpsc::Sender<Verified>,
    verify_jobs: Arc<tokio::sync::Semaphore>,
    replica: Replica<Bls, L>,
    topic: IdentTopic,
    beacon_topic: IdentTopic,
    beacon: Arc<Beacon>,
    chain_id: u32,
    me: u16,
    shard: ShardId,
    start: Instant,
    status: watch::Sender<ShardStatus>,
    heads: watch::Sender<Vec<Option<ShardHead>>>,
    beacon_state: watch::Sender<Option<Arc<BeaconState>>>,
    commits: broadcast::Sender<Arc<CommitNotice>>,
    peers: Vec<Multiaddr>,
    evidence: u64,
    /// (member, height) -> when that finalised block was last sent to that member.
    catch_up_sent: HashMap<(u16, u64), Instant>,
}

impl<L: SeatLedger> Driver<L> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut verified: mpsc::Receiver<Verified>,
    ) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        let now = self.now_ms();
        self.replica.handle(now, Input::Tick);
        self.flush();
        loop {
            let deadline = self
                .replica
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
                _ = timer => {
                    let now = self.now_ms();
                    self.replica.handle(now, Input::Tick);
                }
                Some(batch) = verified.recv() => self.admit(batch),
                _ = redial.tick() => self.redial(),
            }
            self.flush();
            if let Some(e) = self.replica.halted() {
                eprintln!(
                    "huds validator (shard {} member {}): consensus halted, the chain database failed: {e}",
                    self.shard, self.me
                );
                break;
            }
        }
    }

    fn redial(&mut self) {
        for addr in &self.peers {
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

    fn on_swarm_event(&mut self, event: SwarmEvent<ChainBehaviourEvent>) {
        let SwarmEvent::Behaviour(ChainBehaviourEvent::Gossipsub(gossipsub::Event::Message {
            message,
            ..
        })) = event
        else {
            return;
        };
        if message.topic == self.beacon_topic.hash() {
            if let Ok(Envelope::Head(head)) = wire::decode(&message.data) {
                let (header, certificate) = *head;
                self.on_head(header, certificate);
            }
            return;
        }
        if message.topic != self.topic.hash() {
            return;
        }
        match wire::decode(&message.data) {
            Ok(Envelope::Consensus { from, to, message }) => {
                if to.is_some_and(|to| to != self.me) {
                    return;
                }
                let now = self.now_ms();
                self.replica.handle(
                    now,
                    Input::Message {
                        from,
                        message: *message,
                    },
                );
            }
            // Peers gossip what they admitted; a transaction this mempool refuses (already included,
            // replaced, full, forged) is simply dropped.
            Ok(Envelope::Transactions(txs)) => self.verify(txs, None),
            // Heads belong on the beacon topic; undecodable bytes from a peer are dropped.
            Ok(Envelope::Head(_)) | Err(_) => {}
        }
    }

    /// Adopts another shard's head if it is newer than the one known and its certificate is a precommit
    /// quorum of that shard's committee for exactly that header.
    fn on_head(&mut self, header: BlockHeader, certificate: QuorumCertificate<Bls>) {
        let shard = header.shard;
        let Some(committee) = self.beacon.committees.get(usize::from(shard)) else {
            return;
        };
        // The beacon's ledger checks the head itself when it keeps it as a cross-link.
        let link = CrossLink {
            header: header.clone(),
            certificate: certificate.encode(),
        };
        let checked = self.replica.app_mut().offer_head(&link);
        let known = self.heads.borrow()[usize::from(shard)]
            .as_ref()
            .map_or(0, |h| h.height);
        let hash = header.hash();
        let fits = header.chain_id == self.chain_id
            && header.height > known
            && certificate.kind == VoteKind::Precommit
            && certificate.shard == shard
            && certificate.height == header.height
            && certificate.block == hash;
        if !fits {
            return;
        }
        let valid = checked.unwrap_or_else(|| certificate.verify(self.chain_id, committee).is_ok());
        if !valid {
            return;
        }
        self.set_head(
            shard,
            ShardHead {
                height: header.height,
                block: hash,
                state_root: header.state_root,
            },
        );
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
            Command::Submit { txs, reply } => self.verify(txs, Some(reply)),
            Command::Account { address, reply } => {
                let _ = reply.send(self.replica.app().account(&address));
            }
            Command::Prove { what, reply } => {
                let _ = reply.send(self.replica.app().prove(what));
            }
            Command::Stop => {}
        }
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
        let Some(reply) = reply else {
            self.replica.app_mut().admit(txs, &signatures_ok);
            return;
        };
        let results = self.replica.app_mut().admit(txs.clone(), &signatures_ok);
        let accepted: Vec<SignedTransaction> = txs
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tx, _)| tx)
            .collect();
        for batch in accepted.chunks(TX_BATCH_MAX) {
            self.publish(wire::encode_transactions(batch));
        }
        let _ = reply.send(results);
    }

    /// Whether finalised block `height` may be sent to member `to` now (see [`CATCH_UP_RESEND`]).
    fn catch_up_due(&mut self, to: u16, height: u64) -> bool {
        let now = Instant::now();
        if self.catch_up_sent.len() >= CATCH_UP_REMEMBERED_MAX {
            self.catch_up_sent
                .retain(|_, at| now.duration_since(*at) < CATCH_UP_RESEND);
        }
        match self.catch_up_sent.get(&(to, height)) {
            Some(at) if now.duration_since(*at) < CATCH_UP_RESEND => false,
            _ => {
                self.catch_up_sent.insert((to, height), now);
                true
            }
        }
    }

    fn publish(&mut self, bytes: Vec<u8>) {
        // With no subscribed peer yet (startup, partition) the message is lost; the replica re-sends what
        // matters every `rebroadcast_ms`.
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes);
    }

    fn flush(&mut self) {
        while let Some(output) = self.replica.poll_output() {
            match output {
                Output::Broadcast(message) => {
                    self.publish(wire::encode_consensus(self.me, None, &message))
                }
                Output::Send { to, message } => {
                    if let Message::Decided { block, .. } = &message
                        && !self.catch_up_due(to, block.header.height)
                    {
                        continue;
                    }
                    self.publish(wire::encode_consensus(self.me, Some(to), &message))
                }
                Output::Committed {
                    height,
                    block,
                    certificate,
                } => {
                    let head = ShardHead {
                        height,
                        block: block.hash(),
                        state_root: block.header.state_root,
                    };
                    self.set_head(self.shard, head);
                    if let Some(state) = self.replica.app().beacon_state() {
                        self.beacon_state.send_replace(Some(state));
                    }
                    let members = self.replica.committee().len() as u64;
                    if self.shard != BEACON_SHARD
                        && height % HEAD_EVERY_BLOCKS == 0
                        && (height / HEAD_EVERY_BLOCKS) % members == u64::from(self.me)
                    {
                        let bytes = wire::encode_head(&block.header, &certificate);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .gossipsub
                            .publish(self.beacon_topic.clone(), bytes);
                    }
                    let status = ShardStatus {
                        shard: self.shard,
                        height,
                        tip: block.hash(),
                        state_root: block.header.state_root,
                        round: self.replica.round(),
                    };
                    self.status.send_replace(status);
                    let committee = self.replica.committee();
                    let proposer = committee.proposer(self.shard, height, certificate.round);
                    let notice = CommitNotice {
                        shard: self.shard,
                        height,
                        block: block.hash(),
                        proposer: committee.members[usize::from(proposer)].id,
                        tx_ids: block.transactions.iter().map(|t| t.id()).collect(),
                    };
                    // No receiver is fine: nobody is waiting.
                    let _ = self.commits.send(Arc::new(notice));
                }
                Output::Evidence(_) => {
                    self.evidence += 1;
                    eprintln!(
                        "huds validator (shard {} member {}): evidence of a Byzantine member ({} so far)",
                        self.shard, self.me, self.evidence
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_node::{ChainDevnet, DevnetOptions};
    use chain::bft::{QuorumCertificate, Vote};
    use chain::block::Block;

    /// A rogue peer joins a shard's topic and publishes garbage, truncated and forged messages (a Status far
    /// ahead, a vote signed with a key outside the committee, a `Decided` block with a forged certificate,
    /// a transaction batch with a forged signature): the committee ignores them all and keeps finalising.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_gossip_neither_crashes_nor_stalls_validators() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wallet = chain::crypto::SecretKey::dev("rogue test wallet");
        let wallet_address = Address::of(&wallet.public());
        let net = ChainDevnet::start(dir.path(), DevnetOptions::new(1, vec![wallet_address]))
            .await
            .expect("starts");
        let chain_id = net.genesis.params.chain_id;
        let target = net
            .handles()
            .into_iter()
            .find(|h| h.status().shard == 0)
            .expect("a validator of shard 0");

        let mut rogue = build_swarm(identity::Keypair::generate_ed25519()).expect("swarm");
        let topic = shard_topic(chain_id, 0);
        rogue
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .expect("subscribe");
        for h in net.handles() {
            rogue.dial(h.addrs()[0].clone()).expect("dial");
        }
        // Let the subscriptions propagate.
        let settle = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = rogue.select_next_some() => {}
                _ = &mut settle => break,
            }
        }

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
        };
        let mut header = forged_block.header.clone();
        header.height = height + 1;
        let forged_block = Block {
            header,
            transactions: Vec::new(),
            links: Vec::new(),
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
