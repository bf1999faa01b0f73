//! A HUDS node on libp2p: TCP + noise + yamux, identify, ping, Kademlia (server mode, provider records for
//! shards) and the `/huds/shard/1` request-response protocol.
//!
//! The swarm lives in one tokio task; everything else talks to it through a bounded command channel with a
//! [`NodeHandle`]. Inbound shard requests are served from the RocksDB store on the blocking pool so the swarm
//! never waits on the disk. Live storage nodes are the connected peers whose identify says they speak the shard
//! protocol; a node dials every peer Kademlia tells it about, so small networks are fully meshed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use futures::StreamExt;
use libp2p::kad::{
    self, GetProvidersOk, QueryResult, store::MemoryStore, store::MemoryStoreConfig,
};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, noise, ping, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::repair::{self, RepairOptions, RepairStats, SweepReport};
use super::wire::{PROTOCOL, Request, Response, SHARD_BYTES_MAX, ShardCodec};
use crate::metrics::{NodeMetrics, gauge};
use huds::BlockStore;
use huds::cids;
use huds::store::Store;

const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/huds/kad/1.0.0");
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
const COMMANDS_IN_FLIGHT_MAX: usize = 256;
const STREAMS_PER_CONNECTION_MAX: usize = 64;
const CONNECTED_PEERS_DIAL_MAX: usize = 64;

/// Errors of network operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("peer {peer}: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("peer {peer} refused: {reason}")]
    Refused { peer: PeerId, reason: String },
    #[error("peer {peer} answered out of protocol")]
    Protocol { peer: PeerId },
    #[error("the node has stopped")]
    Stopped,
    #[error("listening on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("starting the node: {0}")]
    Start(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    shards: request_response::Behaviour<ShardCodec>,
}

/// How a node starts.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Most shard bytes this node holds for the network; puts beyond it are refused ("storage full").
    pub storage_bytes_max: Option<u64>,
    /// Run the repair loop over the files pinned here.
    pub repair: Option<RepairOptions>,
    /// Serve stored bytes without checking them: only for tests of how readers treat a hostile node.
    #[doc(hidden)]
    pub serve_unverified: bool,
    /// Answer every Get this late: only for tests of how readers treat a slow node.
    #[doc(hidden)]
    pub serve_delay: Option<Duration>,
    /// Sign storage deals for the shards held here at this price; None: refuse to sign any.
    pub deal_signer: Option<crate::deals::DealSigner>,
}

enum Command {
    Send {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, NetError>>,
    },
    Provide {
        cid: Cid,
    },
    Providers {
        cid: Cid,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Addresses {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    Shutdown,
}

/// The chain's storage nodes placement may choose (their accounts), each with its placement tier: the
/// periods it missed this epoch and the one before (0: good standing).
pub type Tiers = HashMap<chain::Address, u32>;

/// A cheap, cloneable handle on a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    store: Arc<Store>,
    capacity: Arc<Capacity>,
    repair: Arc<Mutex<RepairStats>>,
    metrics: NodeMetrics,
    deal_signer: Option<Arc<crate::deals::DealSigner>>,
    /// The chain's registry of storage nodes placement may choose from, with each one's placement tier (its
    /// missed periods this epoch and the one before; `None`: no chain, every storage peer at tier 0).
    registry: Arc<std::sync::RwLock<Option<Arc<Tiers>>>>,
}

/// Puts of one CID are serialised by one of these locks (chosen by the CID's hash), so that copies of a shard
/// arriving at once are stored and counted once; puts of different CIDs mostly run side by side.
const PUT_LOCKS: usize = 64;

/// Shard bytes held here against the `--storage` limit.
#[derive(Debug)]
struct Capacity {
    used_bytes: AtomicU64,
    put_locks: [Mutex<()>; PUT_LOCKS],
    /// The limit, `u64::MAX` for none; atomic so that a reload (SIGHUP) changes it while puts run.
    max_bytes: AtomicU64,
}

impl Capacity {
    /// Reserves room for `len` more bytes, or says why there is none.
    fn reserve(&self, len: usize) -> Result<(), String> {
        let len = len as u64;
        let used = self.used_bytes.fetch_add(len, Ordering::SeqCst);
        match self.max() {
            Some(max) if used.saturating_add(len) > max => {
                self.used_bytes.fetch_sub(len, Ordering::SeqCst);
                Err(format!(
                    "storage full: {used} of {max} bytes used, a {len}-byte shard does not fit"
                ))
            }
            _ => Ok(()),
        }
    }

    fn release(&self, len: usize) {
        self.used_bytes.fetch_sub(len as u64, Ordering::SeqCst);
    }

    fn max(&self) -> Option<u64> {
        Some(self.max_bytes.load(Ordering::SeqCst)).filter(|&m| m != u64::MAX)
    }
}

/// A running node: its handle, the swarm task and the repair task.
pub struct Node {
    pub handle: NodeHandle,
    task: tokio::task::JoinHandle<()>,
    repair: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Starts a node on `store` with the identity `keypair`; returns once it listens.
    pub async fn start(
        keypair: identity::Keypair,
        store: Arc<Store>,
        opts: NodeOptions,
    ) -> Result<Node, NetError> {
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair)?;
        for addr in &opts.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        // Wait for every listener to report its address (port 0 resolves here) or fail.
        let mut listening = 0;
        while listening < opts.listen.len() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { .. } => listening += 1,
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    return Err(NetError::Start(error.to_string()));
                }
                _ => {}
            }
        }
        for addr in &opts.bootstrap {
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!("dialling bootstrap {addr}: {e}");
            }
        }
        let stats_store = store.clone();
        let (shards, used_bytes) = tokio::task::spawn_blocking(move || stats_store.shard_stats())
            .await
            .map_err(|e| NetError::Start(e.to_string()))?
            .map_err(|e| NetError::Start(e.to_string()))?;
        let capacity = Arc::new(Capacity {
            used_bytes: AtomicU64::new(used_bytes),
            put_locks: std::array::from_fn(|_| Mutex::new(())),
            max_bytes: AtomicU64::new(opts.storage_bytes_max.unwrap_or(u64::MAX)),
        });
        let metrics = NodeMetrics::default();
        metrics.shards.set(gauge(shards));
        let (tx, rx) = mpsc::channel(COMMANDS_IN_FLIGHT_MAX);
        let handle = NodeHandle {
            tx: tx.clone(),
            peer_id,
            store: store.clone(),
            capacity: capacity.clone(),
            repair: Arc::new(Mutex::new(RepairStats::default())),
            metrics: metrics.clone(),
            deal_signer: opts.deal_signer.clone().map(Arc::new),
            registry: Arc::default(),
        };
        let driver = Driver {
            swarm,
            store,
            capacity,
            self_tx: tx,
            pending: HashMap::new(),
            providers: HashMap::new(),
            storage_peers: HashSet::new(),
            serve_unverified: opts.serve_unverified,
            serve_delay: opts.serve_delay,
            metrics,
            deal_signer: handle.deal_signer.clone(),
        };
        let task = tokio::spawn(driver.run(rx));
        handle.reprovide_all();
        let repair = opts
            .repair
            .map(|o| tokio::spawn(repair::run(handle.clone(), o)));
        Ok(Node {
            handle,
            task,
            repair,
        })
    }

    /// Stops the node: its connections close and its listeners go away.
    pub async fn shutdown(self) {
        if let Some(r) = &self.repair {
            r.abort();
        }
        let _ = self.handle.tx.send(Command::Shutdown).await;
        let _ = self.task.await;
    }

    /// Stops the node at once, as a crash would (no goodbye to peers).
    pub fn kill(self) {
        if let Some(r) = &self.repair {
            r.abort();
        }
        self.task.abort();
    }
}

fn build_swarm(keypair: identity::Keypair) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Start(e.to_string()))?
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut kcfg = kad::Config::new(KAD_PROTOCOL);
            kcfg.set_query_timeout(QUERY_TIMEOUT);
            let store_cfg = MemoryStoreConfig {
                max_records: 1 << 16,
                max_provided_keys: 1 << 22,
                max_providers_per_key: 32,
                ..Default::default()
            };
            let mut kad =
                kad::Behaviour::with_config(peer, MemoryStore::with_config(peer, store_cfg), kcfg);
            kad.set_mode(Some(kad::Mode::Server));
            let rr = request_response::Config::default()
                .with_request_timeout(REQUEST_TIMEOUT)
                .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX);
            Behaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/huds/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                kad,
                shards: request_response::Behaviour::new([(PROTOCOL, ProtocolSupport::Full)], rr),
            }
        })
        .map_err(|e| NetError::Start(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

impl NodeHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// What signs this node's storage deals, when it takes them.
    pub fn deal_signer(&self) -> Option<&crate::deals::DealSigner> {
        self.deal_signer.as_deref()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What this node counts, for `/metrics`.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Changes the `--storage` limit of the running node (`None`: no limit). Shards already held stay; puts
    /// beyond the new limit are refused.
    pub fn set_storage_limit(&self, max_bytes: Option<u64>) {
        self.capacity
            .max_bytes
            .store(max_bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Sets the gauges that mirror the store's counters, as they stand now: called when the metrics are read,
    /// so that they never show a stale or a reserved-then-released figure.
    pub fn refresh_metrics(&self) {
        let (used, max) = self.storage_bytes();
        self.metrics.stored_bytes.set(gauge(used));
        self.metrics.capacity_bytes.set(gauge(max.unwrap_or(0)));
        self.metrics.capacity_limited.set(i64::from(max.is_some()));
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Sends one request to `peer` and waits for its response.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        let op = crate::metrics::op(&request);
        let answer = self
            .ask(|reply| Command::Send {
                peer,
                request,
                reply,
            })
            .await
            .and_then(|r| r);
        self.metrics.requested(op, answer.as_ref().ok());
        answer
    }

    /// Stores a shard on `peer` (or here, when `peer` is this node).
    pub async fn put_shard(&self, peer: PeerId, cid: Cid, data: Vec<u8>) -> Result<(), NetError> {
        if peer == self.peer_id {
            let (store, capacity) = (self.store.clone(), self.capacity.clone());
            let metrics = self.metrics.clone();
            let stored = tokio::task::spawn_blocking(move || {
                store_held(&store, &capacity, &metrics, &cid, &data)
            })
            .await
            .map_err(|_| NetError::Stopped)?;
            stored.map_err(|reason| NetError::Refused { peer, reason })?;
            self.provide(cid).await;
            return Ok(());
        }
        match self.request(peer, Request::Put { cid, data }).await? {
            Response::Stored => Ok(()),
            Response::Refused(reason) => Err(NetError::Refused { peer, reason }),
            _ => Err(NetError::Protocol { peer }),
        }
    }

    /// Fetches a shard's bytes from `peer`, unchecked (None if it has none).
    pub async fn get_shard(&self, peer: PeerId, cid: Cid) -> Result<Option<Vec<u8>>, NetError> {
        match self.request(peer, Request::Get { cid }).await? {
            Response::Data(d) => Ok(Some(d)),
            Response::NotFound => Ok(None),
            Response::Refused(reason) => Err(NetError::Refused { peer, reason }),
            _ => Err(NetError::Protocol { peer }),
        }
    }

    /// Asks `peer` whether it holds a valid copy of `cid`.
    /// Asks `peer` to sign a storage deal; its signature, or why it refused.
    pub async fn sign_deal(
        &self,
        peer: PeerId,
        request: &crate::deals::SignRequest,
    ) -> Result<chain::crypto::Signature, NetError> {
        if peer == self.peer_id {
            // This node holds some of the shards itself: it checks and signs as any holder would.
            let (store, signer, request) = (
                self.store.clone(),
                self.deal_signer.clone(),
                request.clone(),
            );
            return tokio::task::spawn_blocking(move || {
                let signer = signer.ok_or("this node does not take storage deals")?;
                crate::deals::check_and_sign(&store, &signer, &request)
            })
            .await
            .map_err(|_| NetError::Stopped)?
            .map_err(|reason| NetError::Refused { peer, reason });
        }
        match self.request(peer, Request::Sign(request.encode())).await? {
            Response::Signed(s) => Ok(chain::crypto::Signature(s)),
            Response::Refused(reason) => Err(NetError::Refused { peer, reason }),
            _ => Err(NetError::Protocol { peer }),
        }
    }

    /// The sign request `peer` keeps for deal `id` (None: it holds no slot of it), decoded, and checked to
    /// be the deal's: its terms and owner hash to `id`.
    pub async fn kept_deal(
        &self,
        peer: PeerId,
        id: chain::crypto::Hash,
    ) -> Result<Option<crate::deals::SignRequest>, NetError> {
        let bytes = match self.request(peer, Request::Deal(id)).await? {
            Response::Data(d) => d,
            Response::NotFound => return Ok(None),
            Response::Refused(reason) => return Err(NetError::Refused { peer, reason }),
            _ => return Err(NetError::Protocol { peer }),
        };
        match crate::deals::SignRequest::decode(&bytes) {
            Ok(r) if r.terms.id(&r.owner) == id => Ok(Some(r)),
            _ => Err(NetError::Protocol { peer }),
        }
    }

    pub async fn has_shard(&self, peer: PeerId, cid: Cid) -> Result<bool, NetError> {
        match self.request(peer, Request::Has { cid }).await? {
            Response::Present(p) => Ok(p),
            Response::Refused(reason) => Err(NetError::Refused { peer, reason }),
            _ => Err(NetError::Protocol { peer }),
        }
    }

    /// Counts the store's shards again after shards left it other than through a put (an unpin, a settled
    /// deal): the room they took is free for puts again, and `/metrics` shows what is here. Blocks on a
    /// pass over the shards; a put racing it is counted when the next recount or put sees it.
    pub fn recount_storage(&self) -> Result<(), huds::store::StoreError> {
        let (shards, bytes) = self.store.shard_stats()?;
        self.capacity.used_bytes.store(bytes, Ordering::SeqCst);
        self.metrics.shards.set(gauge(shards));
        Ok(())
    }

    /// Shard bytes held here for the network, and the `--storage` limit.
    pub fn storage_bytes(&self) -> (u64, Option<u64>) {
        (
            self.capacity.used_bytes.load(Ordering::SeqCst),
            self.capacity.max(),
        )
    }

    /// What repair has done since the node started.
    pub fn repair_stats(&self) -> RepairStats {
        *self
            .repair
            .lock()
            .expect("repair stats lock is never poisoned")
    }

    pub(crate) fn record_sweep(&self, report: SweepReport) {
        let mut s = self
            .repair
            .lock()
            .expect("repair stats lock is never poisoned");
        s.sweeps += 1;
        s.shards_rebuilt += report.shards_rebuilt;
        s.last = report;
        self.metrics.sweep(&report);
    }

    /// Announces in the DHT that this node holds `cid`.
    pub async fn provide(&self, cid: Cid) {
        let _ = self.tx.send(Command::Provide { cid }).await;
    }

    /// Re-announces every shard held here (provider records live in memory, so a restart needs this).
    fn reprovide_all(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let store = this.store.clone();
            let held = tokio::task::spawn_blocking(move || store.shard_cids()).await;
            if let Ok(Ok(cids)) = held {
                for cid in cids {
                    this.provide(cid).await;
                }
            }
        });
    }

    /// Peers the DHT says hold `cid`.
    pub async fn providers(&self, cid: Cid) -> Vec<PeerId> {
        self.ask(|reply| Command::Providers { cid, reply })
            .await
            .unwrap_or_default()
    }

    /// Connected peers that speak the shard protocol: the live storage nodes.
    pub async fn storage_peers(&self) -> Vec<PeerId> {
        self.ask(|reply| Command::Peers { reply })
            .await
            .unwrap_or_default()
    }

    /// Sets the storage nodes registered on the chain (their accounts, each with its placement tier: the
    /// periods it missed this epoch and the one before), which from now on are the only ones
    /// [`NodeHandle::placeable_peers`] offers, faulty ones placed last ([`crate::placement`]).
    pub fn set_registry(&self, registered: Tiers) {
        *self
            .registry
            .write()
            .expect("registry lock is never poisoned") = Some(Arc::new(registered));
    }

    /// Whether placement may choose `peer`: with a registry set, only a registered storage node's peer id
    /// (an ed25519 identity whose account the registry holds); without one, any.
    pub fn placeable(&self, peer: &PeerId) -> bool {
        let registry = self
            .registry
            .read()
            .expect("registry lock is never poisoned");
        match registry.as_ref() {
            None => true,
            Some(set) => crate::deals::holder_key(peer)
                .is_some_and(|key| set.contains_key(&chain::Address::of(&key))),
        }
    }

    /// The placement tier of each of `peers` (0: good standing, or no registry; else the periods the chain
    /// says it missed this epoch and the one before).
    pub fn tiers(&self, peers: &[PeerId]) -> Vec<u32> {
        let registry = self
            .registry
            .read()
            .expect("registry lock is never poisoned");
        peers
            .iter()
            .map(|p| match registry.as_ref() {
                None => 0,
                Some(set) => crate::deals::holder_key(p)
                    .and_then(|key| set.get(&chain::Address::of(&key)).copied())
                    .unwrap_or(0),
            })
            .collect()
    }

    /// The nodes placement and repair may put shards on: the live storage peers and this node, those the
    /// chain's registry holds when one is set (an unregistered peer is never given a shard).
    pub async fn placeable_peers(&self) -> Vec<PeerId> {
        let mut nodes = self.storage_peers().await;
        nodes.push(self.peer_id());
        nodes.retain(|p| self.placeable(p));
        nodes
    }

    /// Addresses others can join through: each listen address with this node's `/p2p/<peer-id>`.
    pub async fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        let peer = self.peer_id;
        self.listen_addrs()
            .await
            .into_iter()
            .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(peer)))
            .collect()
    }

    /// The addresses this node listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(|reply| Command::Addresses { reply })
            .await
            .unwrap_or_default()
    }
}

enum Pending {
    Request(oneshot::Sender<Result<Response, NetError>>),
}

struct Driver {
    swarm: Swarm<Behaviour>,
    store: Arc<Store>,
    capacity: Arc<Capacity>,
    self_tx: mpsc::Sender<Command>,
    pending: HashMap<OutboundRequestId, Pending>,
    providers: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    storage_peers: HashSet<PeerId>,
    serve_unverified: bool,
    serve_delay: Option<Duration>,
    metrics: NodeMetrics,
    deal_signer: Option<Arc<crate::deals::DealSigner>>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Fails only when no peer is known yet; identify starts it again when the first peer appears.
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => return,
                    Some(cmd) => self.on_command(cmd),
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .shards
                    .send_request(&peer, request);
                self.pending.insert(id, Pending::Request(reply));
            }
            Command::Provide { cid } => {
                self.metrics.dht_provides.inc();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(kad::RecordKey::new(&cid.to_bytes()));
            }
            Command::Providers { cid, reply } => {
                self.metrics.dht_provider_queries.inc();
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&cid.to_bytes()));
                self.providers.insert(id, (HashSet::new(), reply));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.storage_peers.iter().copied().collect());
            }
            Command::Addresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Respond { channel, response } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .shards
                    .send_response(channel, response);
            }
            Command::Shutdown => {}
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let first = if info.protocols.contains(&PROTOCOL) {
                    self.storage_peers.insert(peer_id)
                } else {
                    false
                };
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                self.metrics
                    .storage_peers
                    .set(gauge(self.storage_peers.len() as u64));
                // A newly met storage node: look around again so the routing table learns its neighbours.
                if first {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) => {
                let routing: usize = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                self.metrics.dht_routing_peers.set(gauge(routing as u64));
                let connected = self.swarm.connected_peers().count();
                if !self.swarm.is_connected(&peer) && connected < CONNECTED_PEERS_DIAL_MAX {
                    let _ = self.swarm.dial(peer);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetProviders(r),
                step,
                ..
            })) => {
                if let (Some((found, _)), Ok(GetProvidersOk::FoundProviders { providers, .. })) =
                    (self.providers.get_mut(&id), r)
                {
                    found.extend(providers);
                }
                if step.last
                    && let Some((found, reply)) = self.providers.remove(&id)
                {
                    let _ = reply.send(found.into_iter().collect());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Shards(ev)) => self.on_shards(ev),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.storage_peers.remove(&peer_id);
                self.metrics
                    .storage_peers
                    .set(gauge(self.storage_peers.len() as u64));
                self.count_connections();
            }
            SwarmEvent::ConnectionEstablished { .. } => self.count_connections(),
            _ => {}
        }
    }

    fn count_connections(&self) {
        let connected = self.swarm.connected_peers().count();
        self.metrics.connected_peers.set(gauge(connected as u64));
    }

    fn on_shards(&mut self, ev: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(Pending::Request(reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(Pending::Request(reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let (store, capacity, tx, unverified, metrics, signer) = (
                    self.store.clone(),
                    self.capacity.clone(),
                    self.self_tx.clone(),
                    self.serve_unverified,
                    self.metrics.clone(),
                    self.deal_signer.clone(),
                );
                let delay = self.serve_delay;
                tokio::spawn(async move {
                    if let (Some(d), Request::Get { .. }) = (delay, &request) {
                        tokio::time::sleep(d).await;
                    }
                    let provide = match &request {
                        Request::Put { cid, .. } => Some(*cid),
                        _ => None,
                    };
                    let response = tokio::task::spawn_blocking(move || {
                        let response = serve(
                            &store,
                            &capacity,
                            &metrics,
                            signer.as_deref(),
                            &request,
                            unverified,
                        );
                        metrics.served(&request, &response);
                        response
                    })
                    .await
                    .unwrap_or_else(|_| Response::Refused("internal error".into()));
                    if let (Some(cid), Response::Stored) = (provide, &response) {
                        let _ = tx.send(Command::Provide { cid }).await;
                    }
                    let _ = tx.send(Command::Respond { channel, response }).await;
                });
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }
}

/// Answers one shard request from the store. Runs on the blocking pool.
fn serve(
    store: &Store,
    capacity: &Capacity,
    metrics: &NodeMetrics,
    signer: Option<&crate::deals::DealSigner>,
    request: &Request,
    unverified: bool,
) -> Response {
    match request {
        Request::Put { cid, data } => {
            if data.len() > SHARD_BYTES_MAX {
                return Response::Refused(format!("shard over {SHARD_BYTES_MAX} bytes"));
            }
            if cid.hash().code() != cids::BLAKE3 || cids::verify(cid, data).is_err() {
                return Response::Refused("bytes do not match the CID".into());
            }
            match store_held(store, capacity, metrics, cid, data) {
                Ok(()) => Response::Stored,
                Err(reason) => Response::Refused(reason),
            }
        }
        Request::Get { cid } => {
            let got = if unverified {
                store.shard_unverified(cid)
            } else {
                store.shard(cid)
            };
            match got {
                Ok(Some(d)) => Response::Data(d),
                // A corrupt local copy is as good as none: the reader goes elsewhere, repair replaces it.
                Ok(None) | Err(_) => Response::NotFound,
            }
        }
        Request::Has { cid } => Response::Present(matches!(store.shard(cid), Ok(Some(_)))),
        Request::Sign(body) => {
            let Some(signer) = signer else {
                return Response::Refused("this node does not take storage deals".into());
            };
            match crate::deals::SignRequest::decode(body) {
                Ok(request) => match crate::deals::check_and_sign(store, signer, &request) {
                    Ok(signature) => Response::Signed(signature.0),
                    Err(reason) => Response::Refused(reason),
                },
                Err(e) => Response::Refused(format!("malformed sign request: {e}")),
            }
        }
        Request::Deal(id) => {
            let Some(dir) = signer.and_then(|s| s.held_dir()) else {
                return Response::Refused("this node does not take storage deals".into());
            };
            match crate::prover::kept_request(dir, id) {
                Ok(Some(bytes)) => Response::Data(bytes),
                Ok(None) => Response::NotFound,
                Err(e) => Response::Refused(format!("reading its deals: {e}")),
            }
        }
    }
}

/// Stores a shard held for the network within the storage limit. A shard already here costs nothing; a failed
/// write (a full disk) gives its room back and says why.
fn store_held(
    store: &Store,
    capacity: &Capacity,
    metrics: &NodeMetrics,
    cid: &Cid,
    data: &[u8],
) -> Result<(), String> {
    // Held across the check, the reservation and the write: a second copy of the same shard put meanwhile
    // finds the first stored, and is neither counted nor charged twice.
    let stripe = usize::from(cid.hash().digest().first().copied().unwrap_or(0)) % PUT_LOCKS;
    let _same_cid = capacity.put_locks[stripe]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if matches!(store.shard(cid), Ok(Some(_))) {
        return store.put_held_shard(cid, data).map_err(|e| e.to_string());
    }
    capacity.reserve(data.len())?;
    store.put_held_shard(cid, data).map_err(|e| {
        capacity.release(data.len());
        e.to_string()
    })?;
    metrics.shards.inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies of one shard put at once (a peer sending it on many streams) are stored and charged once: the
    /// quota cannot be used up by repetition, and the gauges count one shard. (Before, each copy that passed the
    /// "already here?" check before the first write landed reserved its bytes again.)
    #[test]
    fn copies_of_a_shard_put_at_once_are_charged_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let capacity = Capacity {
            used_bytes: AtomicU64::new(0),
            put_locks: std::array::from_fn(|_| Mutex::new(())),
            max_bytes: AtomicU64::new(u64::MAX),
        };
        let metrics = NodeMetrics::default();
        let data = vec![9u8; 256 * 1024];
        let cid = cids::blake3_cid(&data);
        std::thread::scope(|s| {
            for _ in 0..32 {
                s.spawn(|| store_held(&store, &capacity, &metrics, &cid, &data).expect("stored"));
            }
        });
        assert_eq!(
            capacity.used_bytes.load(Ordering::SeqCst),
            data.len() as u64
        );
        assert_eq!(metrics.shards.get(), 1);
    }
}
