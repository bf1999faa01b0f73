//! Six in-process nodes on 127.0.0.1 with real RocksDB stores and real libp2p sockets: spread, read, lose nodes,
//! restart them, and face a node that serves corrupt shards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use huds::{AddOptions, Added, BlockStore, Capability, Reader, Source, Store};
use huds_net::libp2p::{Multiaddr, PeerId};
use huds_net::{NetShardSink, NetShardSource, Node, NodeOptions, RepairOptions};
use tokio::runtime::Handle;

const NODES: usize = 6;

struct Net {
    dir: tempfile::TempDir,
    nodes: Vec<Option<Node>>,
}

fn seed(i: usize) -> [u8; 32] {
    [i as u8 + 1; 32]
}

fn home(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node-{i}"))
}

/// Opens a node's store, waiting for a stopped node's last references to let go of the RocksDB lock.
async fn open_store(path: &Path) -> Arc<Store> {
    let start = Instant::now();
    loop {
        match Store::open(path) {
            Ok(s) => return Arc::new(s),
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("store {}: {e}", path.display())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// How one test node differs from a plain one.
#[derive(Clone, Copy, Default)]
struct Cfg {
    hostile: bool,
    slow: Option<Duration>,
    storage_bytes_max: Option<u64>,
    repair: Option<RepairOptions>,
}

async fn start(dir: &Path, i: usize, bootstrap: Vec<Multiaddr>, cfg: Cfg) -> Node {
    let store = open_store(&home(dir, i)).await;
    let opts = NodeOptions {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        bootstrap,
        serve_unverified: cfg.hostile,
        storage_bytes_max: cfg.storage_bytes_max,
        repair: cfg.repair,
        serve_delay: cfg.slow,
        deal_signer: None,
    };
    Node::start(huds_net::keypair_from_seed(seed(i)), store, opts)
        .await
        .expect("node starts")
}

impl Net {
    async fn new() -> Net {
        Net::with(NODES, |_| Cfg::default()).await
    }

    async fn with(count: usize, cfg: impl Fn(usize) -> Cfg) -> Net {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = start(dir.path(), 0, Vec::new(), cfg(0)).await;
        let bootstrap = first.handle.bootstrap_addrs().await;
        let mut nodes = vec![Some(first)];
        for i in 1..count {
            nodes.push(Some(start(dir.path(), i, bootstrap.clone(), cfg(i)).await));
        }
        let net = Net { dir, nodes };
        net.wait_for_mesh().await;
        net
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    async fn wait_for_mesh(&self) {
        let live: Vec<&Node> = self.nodes.iter().flatten().collect();
        let start = Instant::now();
        for n in &live {
            while n.handle.storage_peers().await.len() + 1 < live.len() {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "nodes did not find each other"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].take().expect("running").kill();
    }

    /// Starts node `i` again on its home (same key, same store), joining through a node that is up.
    async fn restart(&mut self, i: usize, cfg: Cfg) {
        let live = self.nodes.iter().flatten().next().expect("a node is up");
        let bootstrap = live.handle.bootstrap_addrs().await;
        self.nodes[i] = Some(start(self.dir.path(), i, bootstrap, cfg).await);
    }

    /// Adds `data` through node `on`: public, so its key, shard CIDs and so its placement are deterministic.
    async fn add(&self, on: usize, data: Vec<u8>) -> (Added, Vec<(cid::Cid, PeerId)>) {
        let node = self.node(on).handle.clone();
        let rt = Handle::current();
        let path = self.dir.path().join(format!("input-{on}"));
        std::fs::write(&path, &data).expect("write input");
        tokio::task::spawn_blocking(move || {
            let sink = NetShardSink::new(node.clone(), rt);
            let opts = AddOptions {
                public: true,
                ..AddOptions::default()
            };
            let added =
                huds::add::add_with(node.store(), &sink, Source::Path(&path), &opts, &mut |_| {})
                    .expect("add over the network");
            (added, sink.placement().holders)
        })
        .await
        .expect("join")
    }

    /// Reads a file through node `on`; returns the bytes (or the error text) and the peers found bad.
    async fn read(&self, on: usize, cap: &Capability) -> (Result<Vec<u8>, String>, Vec<PeerId>) {
        let node = self.node(on).handle.clone();
        let (rt, cap) = (Handle::current(), cap.clone());
        tokio::task::spawn_blocking(move || {
            let source = Arc::new(NetShardSource::new(node.clone(), rt));
            let r = Reader::open_with(node.store(), source.clone(), &cap).and_then(|reader| {
                let mut out = Vec::new();
                reader.cat(&reader.root(), &mut out).map(|_| out)
            });
            (r.map_err(|e| e.to_string()), source.bad_peers())
        })
        .await
        .expect("join")
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    huds::bench::fill_random(&mut v, seed);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_spread_over_six_nodes_survive_losing_two_and_come_back_after_restarts() {
    let mut net = Net::new().await;
    let file = data(20 << 20, 1);
    let (added, holders) = net.add(1, file.clone()).await;
    let distinct: std::collections::HashSet<PeerId> = holders.iter().map(|(_, p)| *p).collect();
    assert!(
        distinct.len() >= 6,
        "shards sit on {} distinct nodes",
        distinct.len()
    );

    let (got, _) = net.read(4, &added.capability).await;
    assert!(got.expect("read on another node") == file, "bytes differ");

    // Two nodes gone (not the reader): every segment still has 4 of its 6 shards.
    net.kill(0);
    net.kill(2);
    let (got, _) = net.read(4, &added.capability).await;
    assert!(got.expect("readable with m nodes down") == file);

    // A third: fewer than k shards remain, and the read says so instead of hanging.
    net.kill(3);
    let started = Instant::now();
    let (got, _) = tokio::time::timeout(Duration::from_secs(30), net.read(4, &added.capability))
        .await
        .expect("a clear error within 30 s, not a hang");
    let err = got.expect_err("unreadable with m+1 nodes down");
    assert!(
        err.contains("shards found") && err.contains("needed"),
        "{err}"
    );
    eprintln!("error after {:?}: {err}", started.elapsed());

    // Restarted on their homes, the nodes serve their shards again.
    for i in [0, 2, 3] {
        net.restart(i, Cfg::default()).await;
    }
    net.wait_for_mesh().await;
    net.kill(1);
    net.kill(5);
    let (got, _) = net.read(4, &added.capability).await;
    assert!(got.expect("readable from the restarted nodes") == file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_serving_corrupt_shards_is_read_around_and_remembered() {
    let mut net = Net::new().await;
    let file = data(9 << 20, 2);
    let (added, holders) = net.add(0, file.clone()).await;
    // Node 3 turns hostile: every shard it holds is garbage, and it serves them unchecked.
    let hostile = net.node(3).handle.peer_id();
    net.kill(3);
    {
        let store = open_store(&home(net.dir.path(), 3)).await;
        for cid in store.shard_cids().expect("cids") {
            let len = store
                .shard_unverified(&cid)
                .expect("read")
                .expect("present")
                .len();
            store
                .put_shard_unchecked(&cid, &vec![0xAA; len])
                .expect("corrupt");
        }
    }
    net.restart(
        3,
        Cfg {
            hostile: true,
            ..Cfg::default()
        },
    )
    .await;
    net.wait_for_mesh().await;
    let (got, bad) = net.read(5, &added.capability).await;
    assert!(got.expect("the right bytes despite a hostile node") == file);
    // The reader asks for data shards first, so it met the hostile node if that held any data shard.
    let holder: std::collections::HashMap<cid::Cid, PeerId> = holders.into_iter().collect();
    let reader =
        Reader::open_local(net.node(0).handle.store().clone(), &added.capability).expect("open");
    let k = usize::from(reader.manifest().k);
    let met = reader
        .manifest()
        .segments
        .iter()
        .any(|s| s.shards[..k].iter().any(|c| holder[c] == hostile));
    assert!(
        met,
        "placement put no data shard on node 3; the test needs one"
    );
    assert_eq!(
        bad,
        vec![hostile],
        "the hostile node, and only it, is remembered as bad"
    );
}

/// A client that writes raw bytes on the shard protocol: garbage, oversized lengths, truncated frames.
mod raw {
    use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use huds_net::libp2p::{StreamProtocol, request_response};
    use std::io;

    #[derive(Clone, Copy, Default)]
    pub struct Raw;

    async fn read_some<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(1 << 16).read_to_end(&mut v).await?;
        Ok(v)
    }

    impl request_response::Codec for Raw {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read_some(io).await
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read_some(io).await
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            req: Vec<u8>,
        ) -> io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&req).await?;
            io.close().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            res: Vec<u8>,
        ) -> io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&res).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_oversized_messages_do_not_disturb_a_node() {
    use futures::StreamExt;
    use huds_net::libp2p::request_response::{self, ProtocolSupport};
    use huds_net::libp2p::swarm::SwarmEvent;
    use huds_net::libp2p::{StreamProtocol, SwarmBuilder, noise, tcp, yamux};

    let net = Net::new().await;
    let file = data(3 << 20, 3);
    let (added, _) = net.add(2, file.clone()).await;
    let target = net.node(2).handle.peer_id();
    let addr = net.node(2).handle.listen_addrs().await[0].clone();

    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|_| {
            request_response::Behaviour::<raw::Raw>::new(
                [(StreamProtocol::new("/huds/shard/1"), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .expect("behaviour")
        .build();
    swarm.dial(addr).expect("dial");
    let mut oversized = (u32::MAX).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0x55; 4096]);
    let mut big_put = ((32u32 << 20) + 10).to_be_bytes().to_vec();
    big_put.extend_from_slice(&[1, 1, 36]);
    let payloads: Vec<Vec<u8>> = vec![
        vec![],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0, 0, 0, 3, 9, 9, 9],
        vec![0, 0, 0, 200, 1, 2],
        vec![0, 0, 0, 4, 1, 2, 40, 0],
        oversized,
        big_put,
        (0..2000u32).map(|i| (i * 7919) as u8).collect(),
    ];
    let mut answered = 0;
    for p in &payloads {
        let id = swarm.behaviour_mut().send_request(&target, p.clone());
        let done = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, .. },
                        ..
                    }) if request_id == id => return,
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        ..
                    }) if request_id == id => {
                        return;
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(
            done.is_ok(),
            "the node neither answered nor closed the stream for {p:?}"
        );
        answered += 1;
    }
    assert_eq!(answered, payloads.len());
    // The node is still whole: it serves a read as before.
    let (got, _) = net.read(2, &added.capability).await;
    assert!(got.expect("readable after the garbage") == file);
    let (got, _) = net.read(5, &added.capability).await;
    assert!(got.expect("readable over the network after the garbage") == file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_gone_for_good_is_repaired_and_the_file_then_survives_m_more_losses() {
    let fast = RepairOptions {
        interval: Duration::from_millis(300),
        grace: Duration::ZERO,
    };
    let mut net = Net::with(7, |i| Cfg {
        repair: (i == 0).then_some(fast),
        ..Cfg::default()
    })
    .await;
    let file = data(12 << 20, 4);
    let (added, holders) = net.add(0, file.clone()).await;
    let segments = added.segments as u64;
    let peer = |i: usize| net.node(i).handle.peer_id();
    let held_by = |p: PeerId| holders.iter().filter(|(_, h)| *h == p).count();

    // The node holding the most shards (other than the pinning node) dies and never comes back.
    let gone = (1..7)
        .max_by_key(|&i| held_by(peer(i)))
        .expect("six others");
    let lost = held_by(peer(gone));
    assert!(lost > 0, "placement put nothing on node {gone}");
    net.kill(gone);

    let started = Instant::now();
    let repairer = net.node(0).handle.clone();
    let stats = loop {
        let s = repairer.repair_stats();
        if s.shards_rebuilt >= lost as u64
            && s.last.healthy == segments
            && s.last.segments == segments
        {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "repair did not restore k+m live shards: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        stats.shards_rebuilt, lost as u64,
        "only the lost shards are rebuilt"
    );
    eprintln!("{lost} shards rebuilt in {:?}", started.elapsed());

    // Every segment is whole again on the six survivors, so any further m = 2 of them may go.
    let survivors: Vec<usize> = (1..7).filter(|&i| i != gone).collect();
    let (reader, victims) = (survivors[0], &survivors[1..3]);
    for &v in victims {
        net.kill(v);
    }
    let (got, _) = net.read(reader, &added.capability).await;
    assert!(got.expect("readable after repair and m more losses") == file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_node_refuses_shards_and_placement_goes_around_it() {
    let limit = 3 << 20;
    let net = Net::with(NODES, |i| Cfg {
        storage_bytes_max: (i == 5).then_some(limit),
        ..Cfg::default()
    })
    .await;
    let file = data(16 << 20, 5);
    let (added, holders) = net.add(0, file.clone()).await;
    let full = net.node(5).handle.clone();
    let (used, max) = full.storage_bytes();
    assert_eq!(max, Some(limit));
    assert!(used <= limit, "{used} bytes held over a {limit}-byte limit");
    assert_eq!(
        holders.len(),
        added.segments * 6,
        "every shard placed somewhere"
    );

    let big = vec![7u8; 2 << 20];
    let cid = huds::cids::blake3_cid(&big);
    let err = net
        .node(0)
        .handle
        .put_shard(full.peer_id(), cid, big)
        .await
        .expect_err("no room for 2 MiB more");
    assert!(err.to_string().contains("storage full"), "{err}");

    let (got, _) = net.read(3, &added.capability).await;
    assert!(got.expect("readable with one node full") == file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_node_costs_a_hedge_not_a_timeout() {
    // Node 2 answers every Get after 30 s, longer than the 10 s request timeout: a reader that waited for it
    // would take at least 10 s per segment it holds a data shard of.
    let net = Net::with(NODES, |i| Cfg {
        slow: (i == 2).then_some(Duration::from_secs(30)),
        ..Cfg::default()
    })
    .await;
    let file = data(16 << 20, 6);
    let (added, holders) = net.add(0, file.clone()).await;
    let slow = net.node(2).handle.peer_id();
    let reader =
        Reader::open_local(net.node(0).handle.store().clone(), &added.capability).expect("open");
    let k = usize::from(reader.manifest().k);
    let holder: std::collections::HashMap<cid::Cid, PeerId> = holders.into_iter().collect();
    let slowed = reader
        .manifest()
        .segments
        .iter()
        .filter(|s| s.shards[..k].iter().any(|c| holder[c] == slow))
        .count();
    assert!(
        slowed > 0,
        "placement put no data shard on node 2; the test needs one"
    );

    let started = Instant::now();
    let (got, bad) = net.read(5, &added.capability).await;
    let took = started.elapsed();
    assert!(got.expect("read despite a slow node") == file);
    assert!(bad.is_empty(), "slow is not bad: {bad:?}");
    assert!(
        took < Duration::from_secs(8),
        "{slowed} segments waited on the slow node: {took:?}"
    );
    eprintln!("{slowed} segments had a data shard on the slow node; read in {took:?}");
}
