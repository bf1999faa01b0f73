//! The network side of add and read: placing a segment's shards on nodes, and fetching shards from them.
//!
//! Both run on the calling (non-async) threads of the add and read pipelines and block on the node's runtime.

use std::collections::HashSet;
use std::sync::Mutex;

use cid::Cid;
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::deals::PlacedShard;
use super::node::{NetError, NodeHandle};
use super::placement::{self, key_of};
use huds::BlockStore;
use huds::add::{AddError, ShardSink};
use huds::cids;
use huds::read::{SegmentFetch, ShardProblem, ShardSource};
use huds::segment::CodedSegment;

/// How long a segment's outstanding shard requests may keep it waiting before one more shard is asked for.
const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(400);
/// Nodes tried for one shard before the put fails.
const PUT_ATTEMPTS_MAX: usize = 4;
/// Placement candidates asked for a shard before the DHT is.
const GET_CANDIDATES_MAX: usize = 3;
/// Copies of the sealed manifest spread over the network.
const MANIFEST_COPIES: usize = 6;
/// Segments whose shards may be on their way at once: the add keeps coding while earlier puts are acknowledged,
/// and holds at most this many segments' shards in memory for it.
const SEGMENTS_IN_FLIGHT_MAX: usize = 4;

/// Where an add's shards went.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// (shard CID, holder) for every shard placed.
    pub holders: Vec<(Cid, PeerId)>,
    /// Every shard placed, with its segment, index and commitment: what a storage deal is built from.
    pub shards: Vec<PlacedShard>,
}

type SegmentPut = JoinHandle<Result<Vec<PlacedShard>, AddError>>;

/// Places shards on the live storage nodes (this one included) by XOR distance. Up to
/// `SEGMENTS_IN_FLIGHT_MAX` segments are on their way at once; the manifest goes out only once every shard is
/// acknowledged.
pub struct NetShardSink {
    node: NodeHandle,
    rt: Handle,
    placement: Mutex<Placement>,
    slots: std::sync::Arc<Semaphore>,
    in_flight: Mutex<Vec<SegmentPut>>,
}

impl NetShardSink {
    pub fn new(node: NodeHandle, rt: Handle) -> Self {
        NetShardSink {
            node,
            rt,
            placement: Mutex::new(Placement::default()),
            slots: std::sync::Arc::new(Semaphore::new(SEGMENTS_IN_FLIGHT_MAX)),
            in_flight: Mutex::new(Vec::new()),
        }
    }

    /// Collects finished segment puts (all of them when `wait`), recording placements; the first error wins.
    fn reap(&self, wait: bool) -> Result<(), AddError> {
        let handles: Vec<SegmentPut> = {
            let mut all = self
                .in_flight
                .lock()
                .expect("in-flight lock is never poisoned");
            let (done, pending): (Vec<_>, Vec<_>) =
                all.drain(..).partition(|h| wait || h.is_finished());
            *all = pending;
            done
        };
        for h in handles {
            let placed = self
                .rt
                .block_on(h)
                .map_err(|e| AddError::Network(format!("placing a segment: {e}")))??;
            let mut placement = self
                .placement
                .lock()
                .expect("placement lock is never poisoned");
            placement
                .holders
                .extend(placed.iter().map(|s| (s.cid, s.holder)));
            placement.shards.extend(placed);
        }
        Ok(())
    }

    pub fn placement(&self) -> Placement {
        self.placement
            .lock()
            .expect("placement lock is never poisoned")
            .clone()
    }

    async fn nodes(&self) -> Vec<PeerId> {
        live_nodes(&self.node).await
    }
}

/// What an add says when no live storage node may be given a shard (on a chain: none it registers).
fn no_placeable_node() -> AddError {
    AddError::Network(
        "no storage node may be given shards: none is live that the chain's storage-node registry holds \
         (with at least its minimum stake)"
            .into(),
    )
}

async fn live_nodes(node: &NodeHandle) -> Vec<PeerId> {
    node.placeable_peers().await
}

/// Puts one shard, trying the candidates in order.
async fn put_one(
    node: &NodeHandle,
    cid: Cid,
    data: Vec<u8>,
    candidates: &[PeerId],
) -> Result<PeerId, NetError> {
    let mut last = NetError::Stopped;
    for &peer in candidates.iter().take(PUT_ATTEMPTS_MAX) {
        match node.put_shard(peer, cid, data.clone()).await {
            Ok(()) => return Ok(peer),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn keys(peers: &[PeerId]) -> Vec<placement::Key> {
    peers.iter().map(|p| key_of(&p.to_bytes())).collect()
}

impl ShardSink for NetShardSink {
    /// Starts the puts of a segment's shards and returns; an earlier segment's failure is reported here.
    fn put_segment(&self, seg: &CodedSegment) -> Result<(), AddError> {
        self.reap(false)?;
        let permit = self
            .rt
            .block_on(self.slots.clone().acquire_owned())
            .map_err(|_| AddError::Network("the node has stopped".into()))?;
        // The coders finish segments in any order: the deal lists them by their index in the file.
        let segment = seg.index;
        // The commitments a storage deal records (one pass of hashing over each shard, here where the bytes
        // already are).
        let commitments = (0..seg.cids.len())
            .map(|i| chain::pieces::commit(seg.shard(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AddError::Network(format!("committing to a shard: {e}")))?;
        let shards: Vec<(Cid, Vec<u8>)> = seg
            .cids
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, seg.shard(i).to_vec()))
            .collect();
        let node = self.node.clone();
        let put = self.rt.spawn(async move {
            let _permit = permit;
            let nodes = live_nodes(&node).await;
            if nodes.is_empty() {
                return Err(no_placeable_node());
            }
            let shard_keys: Vec<_> = shards.iter().map(|(c, _)| key_of(&c.to_bytes())).collect();
            let orders = placement::place_segment(&shard_keys, &keys(&nodes), &node.tiers(&nodes));
            let puts = shards.into_iter().enumerate().map(|(i, (cid, data))| {
                let candidates: Vec<PeerId> = orders[i].iter().map(|&j| nodes[j]).collect();
                let node = &node;
                async move { (cid, put_one(node, cid, data, &candidates).await) }
            });
            let mut placed = Vec::with_capacity(orders.len());
            for (i, (cid, r)) in join_all(puts).await.into_iter().enumerate() {
                let holder =
                    r.map_err(|e| AddError::Network(format!("placing shard {cid}: {e}")))?;
                placed.push(PlacedShard {
                    segment,
                    index: i as u8,
                    cid,
                    holder,
                    commitment: commitments[i],
                });
            }
            Ok(placed)
        });
        self.in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .push(put);
        Ok(())
    }

    /// Waits for every segment's shards to be acknowledged, then spreads the manifest.
    fn put_manifest(&self, cid: &Cid, sealed: &[u8]) -> Result<(), AddError> {
        self.reap(true)?;
        self.rt.block_on(async {
            let nodes = self.nodes().await;
            if nodes.is_empty() {
                return Err(no_placeable_node());
            }
            let order = placement::closest_ranked(
                &key_of(&cid.to_bytes()),
                &keys(&nodes),
                &self.node.tiers(&nodes),
            );
            let puts = order
                .iter()
                .take(MANIFEST_COPIES)
                .map(|&j| self.node.put_shard(nodes[j], *cid, sealed.to_vec()));
            let ok = join_all(puts)
                .await
                .into_iter()
                .filter(Result::is_ok)
                .count();
            if ok == 0 {
                return Err(AddError::Network(format!("no node stored manifest {cid}")));
            }
            Ok(())
        })
    }
}

/// Fetches shards: from the local store when it has them, else from the nodes placement points at, else from
/// the DHT's providers. A node that serves bytes that do not match the CID is skipped from then on.
pub struct NetShardSource {
    node: NodeHandle,
    rt: Handle,
    bad_peers: Mutex<HashSet<PeerId>>,
}

impl NetShardSource {
    pub fn new(node: NodeHandle, rt: Handle) -> Self {
        NetShardSource {
            node,
            rt,
            bad_peers: Mutex::new(HashSet::new()),
        }
    }

    fn is_bad(&self, peer: &PeerId) -> bool {
        self.bad_peers
            .lock()
            .expect("bad-peer lock is never poisoned")
            .contains(peer)
    }

    /// Peers this source stopped trusting.
    pub fn bad_peers(&self) -> Vec<PeerId> {
        self.bad_peers
            .lock()
            .expect("bad-peer lock is never poisoned")
            .iter()
            .copied()
            .collect()
    }

    async fn try_peers(
        &self,
        cid: &Cid,
        peers: &[PeerId],
        tried: &mut HashSet<PeerId>,
    ) -> Option<Vec<u8>> {
        for &peer in peers {
            if !tried.insert(peer) || self.is_bad(&peer) || peer == self.node.peer_id() {
                continue;
            }
            match self.node.get_shard(peer, *cid).await {
                Ok(Some(data)) if cids::verify(cid, &data).is_ok() => return Some(data),
                Ok(Some(_)) => {
                    self.bad_peers
                        .lock()
                        .expect("bad-peer lock is never poisoned")
                        .insert(peer);
                }
                Ok(None) | Err(_) => {}
            }
        }
        None
    }

    pub(crate) async fn fetch_async(&self, cid: Cid) -> Result<Vec<u8>, ShardProblem> {
        let store = self.node.store().clone();
        let local = tokio::task::spawn_blocking(move || store.shard(&cid)).await;
        if let Ok(Ok(Some(d))) = local {
            return Ok(d);
        }
        let peers = self.node.storage_peers().await;
        let order = placement::closest(&key_of(&cid.to_bytes()), &keys(&peers));
        let candidates: Vec<PeerId> = order
            .iter()
            .take(GET_CANDIDATES_MAX)
            .map(|&i| peers[i])
            .collect();
        let mut tried = HashSet::new();
        if let Some(d) = self.try_peers(&cid, &candidates, &mut tried).await {
            return Ok(d);
        }
        let providers = self.node.providers(cid).await;
        if let Some(d) = self.try_peers(&cid, &providers, &mut tried).await {
            return Ok(d);
        }
        // Last resort: everyone else we know.
        let rest: Vec<PeerId> = order
            .iter()
            .skip(GET_CANDIDATES_MAX)
            .map(|&i| peers[i])
            .collect();
        self.try_peers(&cid, &rest, &mut tried)
            .await
            .ok_or(ShardProblem::Missing)
    }
}

impl ShardSource for NetShardSource {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, ShardProblem> {
        self.rt.block_on(self.fetch_async(*cid))
    }

    /// Asks for the k data shards in parallel and takes the first k valid shards that arrive: a failed shard
    /// is replaced by the next parity shard at once, and while shards are outstanding another parity shard is
    /// asked for every `HEDGE_AFTER`, so one slow peer costs a hedge delay, not a timeout. What is still in
    /// flight when k are in hand is dropped (the late answers are discarded).
    fn fetch_segment(&self, cids: &[Cid], k: usize, shard_len: usize) -> SegmentFetch {
        self.rt.block_on(async {
            let mut out: SegmentFetch = vec![None; cids.len()];
            let start = |i: usize| {
                let cid = cids[i];
                async move { (i, self.fetch_async(cid).await) }
            };
            let mut pending = FuturesUnordered::new();
            let mut next = k.min(cids.len());
            (0..next).for_each(|i| pending.push(start(i)));
            let mut valid = 0;
            let hedge = tokio::time::sleep(HEDGE_AFTER);
            tokio::pin!(hedge);
            while valid < k {
                tokio::select! {
                    got = pending.next() => {
                        let Some((i, r)) = got else { break };
                        let r = r.and_then(|b| {
                            if b.len() == shard_len { Ok(b) } else { Err(ShardProblem::Corrupt) }
                        });
                        if r.is_ok() {
                            valid += 1;
                        } else if next < cids.len() {
                            pending.push(start(next));
                            next += 1;
                        }
                        out[i] = Some(r);
                    }
                    () = &mut hedge, if next < cids.len() => {
                        pending.push(start(next));
                        next += 1;
                        hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                    }
                }
            }
            out
        })
    }
}
