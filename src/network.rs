//! `huds node` and `huds devnet`: nodes on libp2p with the HTTP API, run until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chain_node::{ChainApi, ChainDevnet, DevnetOptions};
use huds::{Reader, Source};
use huds_net::api::Api;
use huds_net::libp2p::Multiaddr;
use huds_net::{NetShardSink, NetShardSource, Node, NodeHandle, NodeOptions, RepairOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::chain_feed::ChainFeed;
use crate::home::Home;

const PEERS_WAIT: Duration = Duration::from_secs(30);
/// What a devnet storage node asks for its space, and what the demo's deal pays: 1 IOST per GiB per period.
const DEVNET_PRICE: chain::Amount = huds_net::deals::PRICE_DEFAULT;
/// The demo deal's periods (16 shard blocks each on the devnet).
const DEVNET_DEAL_PERIODS: u64 = 64;
/// The devnet home whose funded account pays for the demo's storage deal (the wallet home stays untouched for
/// the hints).
const DEVNET_OWNER: &str = "owner";
/// Where a storage node keeps the deals it signed, in its home, for its prover.
const HELD_DEALS: &str = "deals";
/// The demo deal's durability receipt, beside the wallet's trust file.
const DEMO_RECEIPT: &str = "demo-deal.proof";
const DEMO_BYTES: usize = 5 * 1024 * 1024 + 4321;
/// A devnet is for watching the system work: shards lost with a node are rebuilt within a minute or so.
const DEVNET_REPAIR: RepairOptions = RepairOptions {
    interval: Duration::from_secs(15),
    grace: Duration::from_secs(45),
};

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// SIGTERM and SIGINT handlers, installed when a command starts, before it prints that it is ready: a
/// signal sent right after the ready lines then stops it cleanly instead of killing it.
pub(crate) struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

pub(crate) async fn start_node(home: &Home, opts: NodeOptions) -> Result<Node> {
    let store = Arc::new(home.store()?);
    // Uploads in flight when a node was killed left their spool directories behind: with the store open (its
    // lock says no other process runs on this home), nothing else can be using them.
    clear_spool(&home.dir.join("spool"))?;
    let keypair = huds_net::keypair_from_seed(home.node_seed()?);
    Ok(Node::start(keypair, store, opts).await?)
}

/// Removes what is in the spool, keeping the directory itself (it may be a mount point of its own).
fn clear_spool(spool: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(spool) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", spool.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", spool.display()))?
            .path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("clearing {}", path.display()))?;
    }
    Ok(())
}

async fn start_api(
    node: &Node,
    home: &mut Home,
    addr: SocketAddr,
    chain: Option<ChainApi>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the API to {addr}"))?;
    let bound = listener.local_addr()?;
    let api = Api {
        node: node.handle.clone(),
        spool: home.dir.join("spool"),
        defaults: home.add_options(),
    };
    let token = home.api_token()?;
    // The chain's routes, where this process runs validators (the devnet), sit beside the node's.
    let metrics = crate::metrics::router(&node.handle, chain.clone());
    let routes = gateway::protected_api(api, Some(token))
        .merge(chain.map(chain_node::chain_routes).unwrap_or_default())
        .merge(metrics);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes).await {
            eprintln!("huds: API server stopped: {e}");
        }
    });
    Ok((bound, task))
}

/// Starts the HTTP gateway on `addr`, reading through `node`; `local_nodes` are reported by its status.
async fn start_gateway(
    node: &Node,
    home: &mut Home,
    local_nodes: Vec<NodeHandle>,
    chain: Option<ChainApi>,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the gateway to {addr} (is the port taken? pass --gateway ADDR)")
    })?;
    let bound = listener.local_addr()?;
    let gw = gateway::Gateway::new(gateway::GatewayConfig {
        node: node.handle.clone(),
        local_nodes,
        token: Some(home.api_token()?),
        spool: home.dir.join("spool"),
        defaults: home.add_options(),
        chain: chain.map(|c| ChainFeed::start(c) as Arc<dyn gateway::ChainStatusSource>),
    });
    let task = tokio::spawn(async move {
        if let Err(e) = gateway::serve(listener, gw).await {
            eprintln!("huds: gateway stopped: {e}");
        }
    });
    Ok((bound, task))
}

/// What `huds node` is started with.
pub struct NodeArgs {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub api_listen: SocketAddr,
    pub gateway_listen: Option<SocketAddr>,
    pub storage: Option<u64>,
    /// Whether `--storage` set the limit (a reload then leaves it).
    pub storage_flag: bool,
    /// The command line's settings, which a reload resolves config.toml against.
    pub given: crate::settings::Given,
}

/// `huds node`.
pub fn node(mut home: Home, args: NodeArgs) -> Result<()> {
    let (api_addr, gateway_addr) = (args.api_listen, args.gateway_listen);
    runtime()?.block_on(async {
        let mut stop = StopSignals::install()?;
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let opts = NodeOptions {
            listen: args.listen,
            bootstrap: args.bootstrap,
            storage_bytes_max: args.storage,
            repair: Some(RepairOptions::default()),
            ..NodeOptions::default()
        };
        let node = start_node(&home, opts).await?;
        let peer = node.handle.peer_id();
        for a in node.handle.listen_addrs().await {
            println!("peer {peer} listening on {a}");
        }
        let gateway = match gateway_addr {
            Some(addr) => Some(start_gateway(&node, &mut home, Vec::new(), None, addr).await?),
            None => None,
        };
        if let Some((bound, _)) = &gateway {
            println!("gateway http://{bound}");
        }
        let (bound, api_task) = start_api(&node, &mut home, api_addr, None).await?;
        println!("api http://{bound}");
        std::io::stdout().flush()?;
        let reloads = tokio::spawn(reload_on_hangup(
            hangups,
            args.given,
            args.storage_flag,
            node.handle.clone(),
        ));
        // Only now may a reload come: under systemd (`Type=notify`) the unit is "activating" until this, and
        // a `systemctl reload` waits for it instead of meeting SIGHUP's default action (terminate).
        notify_ready();
        stop.wait().await;
        reloads.abort();
        api_task.abort();
        if let Some((_, task)) = gateway {
            task.abort();
        }
        node.shutdown().await;
        Ok(())
    })
}

/// Tells systemd the node is ready (`READY=1` on `$NOTIFY_SOCKET`, the sd_notify protocol), if it runs under a
/// `Type=notify` unit; nothing otherwise. A failure to tell is logged, not fatal.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket name.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(b"READY=1", &addr)
            }
            None => socket.send_to(b"READY=1", &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("telling systemd the node is ready: {e}");
    }
}

/// On each SIGHUP, re-reads config.toml and applies the log level and the storage limit; says what it applied
/// (at info, so at the new level if that is info or finer) or why it applied nothing (at error).
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    given: crate::settings::Given,
    storage_flag: bool,
    node: NodeHandle,
) {
    while hangups.recv().await.is_some() {
        match crate::settings::reload(&given, storage_flag, &node) {
            Ok(done) => {
                let kept = "kept (set by a flag or the environment)".to_string();
                let storage = done.storage_max.map_or(kept.clone(), |m| {
                    m.map_or_else(|| "unlimited".to_string(), |b| format!("{b} bytes"))
                });
                tracing::info!(
                    log_level = done.log_level.unwrap_or(kept).as_str(),
                    storage_max = storage.as_str(),
                    "reloaded config.toml on SIGHUP"
                );
            }
            Err(e) => tracing::error!("SIGHUP: config.toml not reloaded: {e:#}"),
        }
    }
}

/// `huds gateway`: a node on the home (joining through `bootstrap`) that serves the HTTP gateway.
pub fn gateway(
    mut home: Home,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    gateway_addr: SocketAddr,
) -> Result<()> {
    runtime()?.block_on(async {
        let mut stop = StopSignals::install()?;
        let opts = NodeOptions {
            listen,
            bootstrap,
            ..NodeOptions::default()
        };
        let node = start_node(&home, opts).await?;
        let peer = node.handle.peer_id();
        for a in node.handle.listen_addrs().await {
            println!("peer {peer} listening on {a}");
        }
        let (bound, task) = start_gateway(&node, &mut home, Vec::new(), None, gateway_addr).await?;
        println!("gateway http://{bound}");
        std::io::stdout().flush()?;
        stop.wait().await;
        task.abort();
        node.shutdown().await;
        Ok(())
    })
}

pub(crate) fn open_or_init(dir: &Path) -> Result<Home> {
    if dir.join("config.toml").exists() {
        Home::open(dir)
    } else {
        Home::init(dir)
    }
}

fn demo_bytes() -> Vec<u8> {
    let mut data =
        b"HUDS devnet demo file: 5 MiB, 256 KiB chunks, 4 MiB segments, sealed, RS 4+2.\n".to_vec();
    let mut rest = vec![0u8; DEMO_BYTES - data.len()];
    huds::bench::fill_random(&mut rest, 2026);
    data.extend_from_slice(&rest);
    data
}

/// Starts `nodes` nodes on loopback with homes `dir/node-I` (made on first use), and waits until each knows all
/// the others.
pub async fn start_mesh(dir: &Path, nodes: usize) -> Result<(Vec<Home>, Vec<Node>)> {
    let mut homes = Vec::new();
    let mut running: Vec<Node> = Vec::new();
    let mut bootstrap = Vec::new();
    let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr");
    for i in 0..nodes {
        let home = open_or_init(&dir.join(format!("node-{i}")))?;
        let opts = NodeOptions {
            listen: vec![loopback.clone()],
            bootstrap: bootstrap.clone(),
            repair: Some(DEVNET_REPAIR),
            // Devnet storage nodes take deals for what they hold, signing with their node identity.
            deal_signer: Some(
                huds_net::deals::DealSigner::new(
                    huds_net::keypair_from_seed(home.node_seed()?),
                    DEVNET_PRICE,
                    chain::ChainParams::devnet(1).chain_id,
                )
                .keeping_deals_in(home.dir.join(HELD_DEALS)),
            ),
            ..NodeOptions::default()
        };
        let node = start_node(&home, opts).await?;
        if i == 0 {
            bootstrap = node.handle.bootstrap_addrs().await;
        }
        homes.push(home);
        running.push(node);
    }
    let started = Instant::now();
    for n in &running {
        while n.handle.storage_peers().await.len() + 1 < nodes {
            if started.elapsed() > PEERS_WAIT {
                bail!("the nodes did not all find each other within {PEERS_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((homes, running))
}

/// `huds devnet`.
pub fn devnet(
    dir: &Path,
    nodes: usize,
    shards: u16,
    api_addr: SocketAddr,
    gateway_addr: SocketAddr,
) -> Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if shards == 0 || shards > 64 {
        bail!("--shards must be between 1 and 64");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut stop = StopSignals::install()?;
        let chain = start_chain(dir, shards, nodes).await?;
        let (mut homes, running) = start_mesh(dir, nodes).await?;
        let (bound, api_task) =
            start_api(&running[0], &mut homes[0], api_addr, Some(chain.api())).await?;
        // Placement and repair choose only storage nodes the chain registers (all of the devnet's, at
        // genesis): read once before anything is stored, then kept current.
        let registry = {
            let api = format!("http://{bound}");
            let started = Instant::now();
            let registered = loop {
                let a = api.clone();
                match tokio::task::spawn_blocking(move || crate::registry::fetch(&a)).await? {
                    Ok(r) => break r,
                    Err(e) if started.elapsed() > PEERS_WAIT => {
                        return Err(e.context("reading the chain's storage-node registry"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            for n in &running {
                n.handle.set_registry(registered.clone());
            }
            crate::registry::start(running.iter().map(|n| n.handle.clone()).collect(), api)
        };
        let locals = running.iter().map(|n| n.handle.clone()).collect();
        let (gateway_bound, gateway_task) = start_gateway(
            &running[0],
            &mut homes[0],
            locals,
            Some(chain.api()),
            gateway_addr,
        )
        .await?;
        for (i, n) in running.iter().enumerate() {
            let addrs: Vec<String> = n
                .handle
                .listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect();
            println!(
                "node {i} peer {} listening on {}",
                n.handle.peer_id(),
                addrs.join(" ")
            );
        }
        // Every storage node proves the deals it signed and takes the repair orders it may, through the
        // devnet's chain API.
        let provers: Vec<(crate::prover::Prover, crate::repairer::Repairer)> = running
            .iter()
            .zip(&homes)
            .map(|(n, home)| -> Result<_> {
                let key = chain::crypto::SecretKey::from_bytes(home.node_seed()?);
                let me = holder(home)?;
                anyhow::ensure!(key.public() == me, "a node's chain key is its identity key");
                let held = home.dir.join(HELD_DEALS);
                let api = format!("http://{bound}");
                Ok((
                    crate::prover::start(n.handle.clone(), held.clone(), key, api.clone()),
                    crate::repairer::start(n.handle.clone(), held, me, api),
                ))
            })
            .collect::<Result<_>>()?;
        let demo = demo(dir, &running, &homes, &format!("http://{bound}")).await?;
        println!("{}", demo.summary);
        println!(
            "chain {} shards and the beacon chain, {} validators each, epoch {}",
            shards,
            chain_node::devnet::COMMITTEE_SIZE,
            chain.beacon.epoch
        );
        println!("wallet {}", dir.join("wallet").display());
        println!("gateway http://{gateway_bound}");
        println!("api http://{bound}");
        for line in hints(dir, &format!("http://{bound}"), &demo.capability)? {
            println!("{line}");
        }
        println!("{DEVNET_READY}");
        std::io::stdout().flush()?;
        stop.wait().await;
        drop(provers);
        drop(registry);
        api_task.abort();
        gateway_task.abort();
        for n in running {
            n.shutdown().await;
        }
        chain.shutdown().await;
        Ok(())
    })
}

/// The devnet's chain: the funded wallet home (made on the first start), the shard count recorded so a
/// restart resumes the same chain, and the validators on their databases.
async fn start_chain(dir: &Path, shards: u16, nodes: usize) -> Result<ChainDevnet> {
    let record = dir.join("chain.json");
    match std::fs::read(&record) {
        Ok(b) => {
            let v: serde_json::Value =
                serde_json::from_slice(&b).context("chain.json is damaged")?;
            if v["shards"].as_u64() != Some(u64::from(shards)) {
                bail!(
                    "the devnet in {} runs {} shards: pass --shards {} or use another --dir",
                    dir.display(),
                    v["shards"],
                    v["shards"]
                );
            }
            // Its genesis registered this many storage nodes, the only ones placement may choose.
            match v["nodes"].as_u64() {
                Some(n) if n == nodes as u64 => {}
                Some(n) => bail!(
                    "the devnet in {} registered {n} storage nodes at genesis: pass --nodes {n} or use another --dir",
                    dir.display()
                ),
                None => bail!(
                    "the devnet in {} was made before its storage nodes were registered on its chain (they would \
                     be given no shards): use another --dir",
                    dir.display()
                ),
            }
        }
        Err(_) => std::fs::write(
            &record,
            serde_json::to_vec(&json!({ "shards": shards, "nodes": nodes }))?,
        )?,
    }
    let wallet_home = open_or_init(&dir.join("wallet"))?;
    let wallet = crate::wallet::wallet_key(&wallet_home.dir)?;
    let owner = crate::wallet::wallet_key(&open_or_init(&dir.join(DEVNET_OWNER))?.dir)?;
    // Node 0's home is funded too: the printed upload through its API (`--data node-0`) opens a deal paid
    // from its account.
    let node0 = crate::wallet::wallet_key(&open_or_init(&dir.join("node-0"))?.dir)?;
    let mut options = DevnetOptions::new(
        shards,
        vec![
            chain::Address::of(&wallet.public()),
            chain::Address::of(&owner.public()),
            chain::Address::of(&node0.public()),
        ],
    );
    // Every storage node is registered with a storage stake, which its missed proofs are slashed from.
    options.storage_nodes = (0..nodes)
        .map(|i| holder_address(&open_or_init(&dir.join(format!("node-{i}")))?))
        .collect::<Result<_>>()?;
    let chain = ChainDevnet::start(&dir.join("chain"), options)
        .await
        .context("starting the devnet's validators")?;
    // The light client's trust file, computed here from genesis (not asked of a node), beside the wallet and
    // in node 0's home (the home the devnet's printed commands use).
    let trust = chain.api().light_client().encode();
    for home in [&wallet_home.dir, &dir.join("node-0")] {
        crate::home::replace_file(&home.join(crate::wallet::TRUST_FILE), &trust)?;
    }
    Ok(chain)
}

/// A devnet node's key as a deal holder: its node identity.
fn holder(home: &Home) -> Result<chain::crypto::PublicKey> {
    let key = huds_net::keypair_from_seed(home.node_seed()?);
    huds_net::deals::holder_key(&key.public().to_peer_id())
        .context("a devnet node's identity is an ed25519 key")
}

/// A devnet node's chain account: the address of its holder key.
fn holder_address(home: &Home) -> Result<chain::Address> {
    Ok(chain::Address::of(&holder(home)?))
}

/// Stores the demo file through node 0 on the first start, then (every start) reads it back through the last
/// node, over the network, and checks every byte.
async fn demo(dir: &Path, running: &[Node], homes: &[Home], api: &str) -> Result<Demo> {
    let record = dir.join("demo.json");
    let expected = demo_bytes();
    let (cid, cap) = match std::fs::read(&record) {
        Ok(b) => {
            let v: serde_json::Value =
                serde_json::from_slice(&b).context("demo.json is damaged")?;
            (
                v["cid"].as_str().unwrap_or_default().to_string(),
                v["cap"].as_str().unwrap_or_default().to_string(),
            )
        }
        Err(_) => {
            let path: PathBuf = dir.join("demo.bin");
            std::fs::write(&path, &expected)?;
            let (node, opts, rt) = (
                running[0].handle.clone(),
                homes[0].add_options(),
                tokio::runtime::Handle::current(),
            );
            let added = tokio::task::spawn_blocking(move || {
                let sink = NetShardSink::new(node.clone(), rt);
                huds::add::add_with(node.store(), &sink, Source::Path(&path), &opts, &mut |_| {})
                    .map(|a| (a, sink.placement()))
            })
            .await??;
            let (added, placement) = added;
            let holders: std::collections::HashSet<_> =
                placement.holders.iter().map(|(_, p)| *p).collect();
            let _ = std::fs::remove_file(dir.join("demo.bin"));
            let opts = homes[0].add_options();
            // A deal needs k+m distinct holders per segment: a devnet of fewer nodes stores the file (its
            // placement wraps round) but cannot open one, and says so.
            let deal = if running.len() >= usize::from(opts.k) + usize::from(opts.m) {
                let deal = open_deal(
                    dir,
                    &running[0].handle,
                    &added,
                    &placement,
                    (opts.k, opts.m),
                    api,
                )
                .await
                .context("opening the demo file's storage deal")?;
                println!(
                    "demo deal {deal} active: {} holders, receipt {}",
                    holders.len(),
                    dir.join("wallet").join(DEMO_RECEIPT).display()
                );
                Some(deal)
            } else {
                println!(
                    "demo deal not opened: a deal needs {} distinct holders per segment and the devnet has {} \
                     nodes",
                    usize::from(opts.k) + usize::from(opts.m),
                    running.len()
                );
                None
            };
            let v = json!({ "cid": added.root.to_string(), "cap": added.capability.to_text(),
                            "deal": deal });
            std::fs::write(&record, serde_json::to_vec_pretty(&v)?)?;
            println!(
                "demo file {} stored: {} shards on {} nodes",
                added.root,
                placement.holders.len(),
                holders.len()
            );
            (added.root.to_string(), added.capability.to_text())
        }
    };
    let last = running.len() - 1;
    let (node, rt) = (
        running[last].handle.clone(),
        tokio::runtime::Handle::current(),
    );
    let cap_text = cap.clone();
    let got = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let cap = huds::Capability::parse(&cap_text)?;
        let source = Arc::new(NetShardSource::new(node.clone(), rt));
        let reader = Reader::open_with(node.store(), source, &cap)?;
        let mut out = Vec::new();
        reader.cat(&reader.root(), &mut out)?;
        Ok(out)
    })
    .await?
    .and_then(|got| {
        if Sha256::digest(&got) != Sha256::digest(&expected) {
            bail!("the demo file read back through node {last} differs from what was stored");
        }
        Ok(got)
    });
    let got = match got {
        Ok(got) => got,
        Err(e) => {
            // A demo deal its owner ended is collected by its holders once over: the file is gone by the
            // rules, which is no reason for the devnet not to start.
            let deal = std::fs::read(&record)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["deal"].as_str().map(str::to_string));
            let (api, id) = (api.to_string(), deal.clone().unwrap_or_default());
            let state = tokio::task::spawn_blocking(move || crate::deal::status(&api, &id))
                .await?
                .ok()
                .and_then(|s| s["state"].as_str().map(str::to_string));
            match (deal, state) {
                (Some(deal), Some(state)) if state != "active" => {
                    return Ok(Demo {
                        summary: format!(
                            "demo file {cid} not read back: its storage deal {deal} is {state}, so its holders                              no longer keep it ({e:#})\ncapability {cap}"
                        ),
                        capability: cap,
                    });
                }
                _ => return Err(e),
            }
        }
    };
    Ok(Demo {
        summary: format!(
            "demo file {cid} ({} bytes) read back through node {last} over the network: identical\ncapability {cap}",
            got.len()
        ),
        capability: cap,
    })
}

/// Opens the storage deal of an added file, paid by the devnet's owner account: terms from where the shards
/// went, every holder's signature over `/huds/shard/1`, the transaction through the node's API (answered once
/// final), and the durability receipt written beside the wallet's trust file. Returns the deal id in hex.
async fn open_deal(
    dir: &Path,
    node: &NodeHandle,
    added: &huds::add::Added,
    placement: &huds_net::client::Placement,
    (k, m): (u8, u8),
    api: &str,
) -> Result<String> {
    let key = crate::wallet::wallet_key(&dir.join(DEVNET_OWNER))?;
    let owner = chain::Address::of(&key.public());
    let chain_id = {
        let api = api.to_string();
        tokio::task::spawn_blocking(move || crate::wallet::chain_id(&api)).await??
    };
    let ask = huds_net::deals::DealAsk {
        chain_id,
        owner,
        periods: DEVNET_DEAL_PERIODS,
        price: DEVNET_PRICE,
    };
    let (terms, signatures) =
        huds_net::deals::gather(node, added, false, (k, m), &placement.shards, &ask)
            .await
            .map_err(anyhow::Error::msg)?;
    let id = chain::hex(&terms.id(&owner));
    let (api, receipt) = (api.to_string(), dir.join("wallet").join(DEMO_RECEIPT));
    let path = format!("/api/v0/chain/prove/deal?id={id}");
    tokio::task::spawn_blocking(move || -> Result<()> {
        crate::wallet::open_deal(&api, &key, terms, signatures)?;
        let bytes = crate::api_client::bytes(&api, &path, crate::wallet::PROOF_BYTES_MAX)?;
        std::fs::write(&receipt, bytes).with_context(|| format!("writing {}", receipt.display()))
    })
    .await??;
    Ok(id)
}

/// What the devnet's demo left: the lines it prints and the capability its hints read.
struct Demo {
    summary: String,
    capability: String,
}

/// The devnet's last line: everything above it is up, and the hints above it run as printed.
pub const DEVNET_READY: &str = "devnet ready: Ctrl-C stops it";

/// Commands a user can paste as printed: the binary by its absolute path (nothing need be on the PATH after
/// `cargo run`), the upload with the `--data` whose config holds node 0's token, the chain through the wallet
/// home the devnet funded.
fn hints(dir: &Path, api: &str, capability: &str) -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("finding the path of this binary")?;
    let huds = shell_word(&exe.to_string_lossy());
    let node0 = shell_word(&dir.join("node-0").to_string_lossy());
    let wallet = shell_word(&dir.join("wallet").to_string_lossy());
    let node0_account =
        chain::Address::of(&crate::wallet::wallet_key(&dir.join("node-0"))?.public());
    let receipt_path = dir.join("wallet").join(DEMO_RECEIPT);
    let receipt = shell_word(&receipt_path.to_string_lossy());
    let mut hints = vec![
        "try (each line runs as printed):".to_string(),
        format!("  {huds} --api {api} cat {capability} | sha256sum"),
        format!("  echo hello | {huds} --api {api} --data {node0} add -"),
        format!("  {huds} --api {api} chain status"),
        format!("  {huds} --api {api} --data {wallet} wallet balance"),
        format!("  {huds} --api {api} --data {wallet} wallet transfer {node0_account} 1.5"),
        format!("  {huds} --api {api} --data {node0} wallet balance"),
    ];
    if receipt_path.exists() {
        hints.push(format!("  {huds} --data {wallet} chain verify {receipt}"));
    }
    // The demo deal, as its holders prove it and are paid, period by period.
    let deal = std::fs::read(dir.join("demo.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["deal"].as_str().map(str::to_string));
    if let Some(deal) = deal {
        hints.push(format!("  {huds} --api {api} deal status {deal}"));
    }
    Ok(hints)
}

/// `word` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
