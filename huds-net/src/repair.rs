//! Repair: every node keeps each segment of the files it pinned at k+m live shards.
//!
//! Goals: a shard lost with a node is rebuilt from any k others and placed on a node that holds nothing of
//! that segment; a node that is only restarting is not mistaken for a lost one; the decision is a pure
//! function of what was observed and when, so it is tested without a network.
//!
//! The trigger: a sweep every `interval` probes each shard of each pinned segment (the XOR-closest nodes first,
//! then the DHT's providers, each asked `Has`). A shard no live node holds is *missing*; once it has been missing
//! for `grace`, the segment is rebuilt: k shards are fetched, the missing ones recomputed by Reed-Solomon over
//! the sealed bytes (no key needed), checked against their CIDs from the manifest and put on new nodes.
//! The cost per sweep is one `Has` per shard; a rebuild moves k shards in and one shard out per missing shard.
//! See `specs/network.md` ("Repair").

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cid::Cid;
use futures::future::join_all;
use libp2p::PeerId;

use super::node::NodeHandle;
use super::placement::{self, key_of};
use huds::BlockStore;
use huds::capability::Capability;
use huds::cids;
use huds::manifest::{Manifest, Segment};
use huds::segment::{self, Coding};

/// Nodes asked `Has` for a shard before the DHT is.
const PROBE_CANDIDATES_MAX: usize = 3;

/// When repair runs and how long a shard may be missing before it is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairOptions {
    pub interval: Duration,
    pub grace: Duration,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(300),
        }
    }
}

/// What a probe found of one segment: for each shard, the live nodes that hold it.
#[derive(Debug, Clone)]
pub struct SegmentProbe {
    pub k: usize,
    pub shards: Vec<Cid>,
    pub holders: Vec<Vec<PeerId>>,
}

impl SegmentProbe {
    fn live(&self) -> usize {
        self.holders.iter().filter(|h| !h.is_empty()).count()
    }
}

/// What to do about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every shard is live.
    Healthy,
    /// Some shards are missing, none for longer than the grace period yet.
    Waiting { missing: usize },
    /// Rebuild these shards (by index) and put each on its node.
    Rebuild { targets: Vec<(usize, PeerId)> },
    /// Fewer than k shards are live: nothing can rebuild the segment until holders come back.
    Lost { live: usize },
}

/// The repair decisions: remembers since when each shard has been missing.
#[derive(Debug)]
pub struct Planner {
    grace: Duration,
    missing_since: HashMap<Cid, Instant>,
}

impl Planner {
    pub fn new(grace: Duration) -> Self {
        Planner {
            grace,
            missing_since: HashMap::new(),
        }
    }

    /// Decides what to do about a segment given a probe taken at `now` and the live storage nodes.
    pub fn plan(&mut self, now: Instant, probe: &SegmentProbe, nodes: &[PeerId]) -> Plan {
        self.plan_ranked(now, probe, nodes, &vec![0; nodes.len()])
    }

    /// [`Planner::plan`] with each node's placement tier (`tiers[i]` is `nodes[i]`'s): rebuilt shards go to
    /// the best tier that has a node free ([`crate::placement`]).
    pub fn plan_ranked(
        &mut self,
        now: Instant,
        probe: &SegmentProbe,
        nodes: &[PeerId],
        tiers: &[u32],
    ) -> Plan {
        let mut due = Vec::new();
        let mut missing = 0;
        for (i, cid) in probe.shards.iter().enumerate() {
            if probe.holders[i].is_empty() {
                missing += 1;
                let since = *self.missing_since.entry(*cid).or_insert(now);
                if now.saturating_duration_since(since) >= self.grace {
                    due.push(i);
                }
            } else {
                self.missing_since.remove(cid);
            }
        }
        let live = probe.live();
        if missing == 0 {
            return Plan::Healthy;
        }
        if live < probe.k {
            return Plan::Lost { live };
        }
        if due.is_empty() {
            return Plan::Waiting { missing };
        }
        Plan::Rebuild {
            targets: choose_targets(probe, &due, nodes, tiers),
        }
    }

    /// Forgets a shard once it has been rebuilt and placed.
    pub fn rebuilt(&mut self, cid: &Cid) {
        self.missing_since.remove(cid);
    }
}

/// A node for each shard to rebuild: of the best tier, the XOR-closest node holding nothing of the segment and
/// not chosen for another of its shards; with too few nodes for that, the closest node that does not hold
/// this shard.
fn choose_targets(
    probe: &SegmentProbe,
    due: &[usize],
    nodes: &[PeerId],
    tiers: &[u32],
) -> Vec<(usize, PeerId)> {
    let node_keys: Vec<_> = nodes.iter().map(|p| key_of(&p.to_bytes())).collect();
    let mut busy: HashSet<PeerId> = probe.holders.iter().flatten().copied().collect();
    let mut out = Vec::with_capacity(due.len());
    for &i in due {
        let order =
            placement::closest_ranked(&key_of(&probe.shards[i].to_bytes()), &node_keys, tiers);
        let fresh = order.iter().map(|&j| nodes[j]).find(|p| !busy.contains(p));
        let fallback = || {
            order
                .iter()
                .map(|&j| nodes[j])
                .find(|p| !probe.holders[i].contains(p))
        };
        if let Some(p) = fresh.or_else(fallback) {
            busy.insert(p);
            out.push((i, p));
        }
    }
    out
}

/// What one sweep saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub segments: u64,
    pub healthy: u64,
    pub waiting: u64,
    pub lost: u64,
    pub shards_rebuilt: u64,
    pub failures: u64,
}

/// Repair totals since the node started, and the last sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    pub sweeps: u64,
    pub shards_rebuilt: u64,
    pub last: SweepReport,
}

/// The repair loop of a node: a sweep every `interval` until the node stops.
pub(crate) async fn run(node: NodeHandle, opts: RepairOptions) {
    let mut planner = Planner::new(opts.grace);
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = sweep(&node, &mut planner).await;
        node.record_sweep(report);
    }
}

/// Checks every pinned DAG once and repairs what is due.
pub async fn sweep(node: &NodeHandle, planner: &mut Planner) -> SweepReport {
    let mut report = SweepReport::default();
    let store = node.store().clone();
    let pins = match tokio::task::spawn_blocking(move || store.pins()).await {
        Ok(Ok(p)) => p,
        _ => return report,
    };
    for (manifest_cid, pin) in pins {
        let Some(manifest) = open_pinned(node, &manifest_cid, pin.cap.as_deref()).await else {
            continue;
        };
        let Ok(coding) = Coding::new(usize::from(manifest.k), usize::from(manifest.m)) else {
            continue;
        };
        for seg in &manifest.segments {
            // Every live storage node is asked what it holds (a node the registry dropped still serves its
            // shards), but rebuilt shards go only to nodes placement may choose.
            let mut live = node.storage_peers().await;
            live.push(node.peer_id());
            let targets = node.placeable_peers().await;
            let probe = probe_segment(node, coding.k, &seg.shards, &live).await;
            report.segments += 1;
            let tiers = node.tiers(&targets);
            match planner.plan_ranked(Instant::now(), &probe, &targets, &tiers) {
                Plan::Healthy => report.healthy += 1,
                Plan::Waiting { .. } => report.waiting += 1,
                Plan::Lost { .. } => report.lost += 1,
                Plan::Rebuild { targets } => {
                    match rebuild(node, coding, seg, &probe, &targets).await {
                        Ok(()) => {
                            report.shards_rebuilt += targets.len() as u64;
                            for (i, _) in &targets {
                                planner.rebuilt(&seg.shards[*i]);
                            }
                        }
                        Err(_) => report.failures += 1,
                    }
                }
            }
        }
    }
    report
}

/// The manifest of a pin, opened with the capability the pin keeps (None if it cannot be).
async fn open_pinned(node: &NodeHandle, cid: &Cid, cap: Option<&str>) -> Option<Manifest> {
    let cap = Capability::parse(cap?).ok()?;
    let store = node.store().clone();
    let cid = *cid;
    let sealed = tokio::task::spawn_blocking(move || store.manifest(&cid))
        .await
        .ok()?
        .ok()??;
    let plain = segment::open_manifest(&cap.key, &sealed)?;
    Manifest::decode(&plain).ok()
}

/// Does `peer` (this node included) hold a valid copy of `cid`?
async fn holds(node: &NodeHandle, peer: PeerId, cid: Cid) -> bool {
    if peer == node.peer_id() {
        let store = node.store().clone();
        return matches!(
            tokio::task::spawn_blocking(move || store.shard(&cid)).await,
            Ok(Ok(Some(_)))
        );
    }
    node.has_shard(peer, cid).await.unwrap_or(false)
}

/// Finds the live holders of each shard: the XOR-closest nodes first, then the DHT's providers.
pub async fn probe_segment(
    node: &NodeHandle,
    k: usize,
    shards: &[Cid],
    nodes: &[PeerId],
) -> SegmentProbe {
    let node_keys: Vec<_> = nodes.iter().map(|p| key_of(&p.to_bytes())).collect();
    let holders = join_all(shards.iter().map(|cid| {
        let order = placement::closest(&key_of(&cid.to_bytes()), &node_keys);
        let candidates: Vec<PeerId> = order
            .iter()
            .take(PROBE_CANDIDATES_MAX)
            .map(|&j| nodes[j])
            .collect();
        async move {
            let found = holders_among(node, *cid, &candidates).await;
            if !found.is_empty() {
                return found;
            }
            let providers: Vec<PeerId> = node
                .providers(*cid)
                .await
                .into_iter()
                .filter(|p| !candidates.contains(p) && nodes.contains(p))
                .collect();
            holders_among(node, *cid, &providers).await
        }
    }))
    .await;
    SegmentProbe {
        k,
        shards: shards.to_vec(),
        holders,
    }
}

async fn holders_among(node: &NodeHandle, cid: Cid, peers: &[PeerId]) -> Vec<PeerId> {
    let answers = join_all(peers.iter().map(|&p| holds(node, p, cid))).await;
    peers
        .iter()
        .zip(answers)
        .filter_map(|(p, held)| held.then_some(*p))
        .collect()
}

/// Why a rebuild did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    #[error("only {0} shards could be fetched, {1} needed")]
    TooFew(usize, usize),
    #[error("rebuilt shard {0} does not match its CID")]
    Mismatch(Cid),
    #[error("placing rebuilt shard {cid}: {reason}")]
    Place { cid: Cid, reason: String },
}

/// Fetches k live shards, recomputes the missing ones and puts each on its target.
async fn rebuild(
    node: &NodeHandle,
    coding: Coding,
    seg: &Segment,
    probe: &SegmentProbe,
    targets: &[(usize, PeerId)],
) -> Result<(), RebuildError> {
    let shard_len = coding.shard_len(seg.len as usize);
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; coding.total()];
    let mut fetched = 0;
    for (i, holders) in probe.holders.iter().enumerate() {
        if fetched == coding.k {
            break;
        }
        for &peer in holders {
            if let Some(data) = fetch_checked(node, peer, seg.shards[i], shard_len).await {
                shards[i] = Some(data);
                fetched += 1;
                break;
            }
        }
    }
    if fetched < coding.k {
        return Err(RebuildError::TooFew(fetched, coding.k));
    }
    let mut shards = tokio::task::spawn_blocking(move || {
        segment::rebuild_shards(coding, &mut shards).map(|()| shards)
    })
    .await
    .map_err(|_| RebuildError::TooFew(fetched, coding.k))?
    .map_err(|_| RebuildError::TooFew(fetched, coding.k))?;
    for &(i, peer) in targets {
        let cid = seg.shards[i];
        let data = shards[i].take().ok_or(RebuildError::Mismatch(cid))?;
        // Paired check: the code is deterministic, so a rebuilt shard that does not hash to the manifest's CID
        // means a fetched shard lied in a way its own CID check could not catch; never place it.
        cids::verify(&cid, &data).map_err(|_| RebuildError::Mismatch(cid))?;
        node.put_shard(peer, cid, data)
            .await
            .map_err(|e| RebuildError::Place {
                cid,
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// Shard `cid` from `peer` (this node's store when it is this node), if it has exactly `len` bytes that match
/// the CID.
pub(crate) async fn fetch_checked(
    node: &NodeHandle,
    peer: PeerId,
    cid: Cid,
    len: usize,
) -> Option<Vec<u8>> {
    let data = if peer == node.peer_id() {
        let store = node.store().clone();
        tokio::task::spawn_blocking(move || store.shard(&cid))
            .await
            .ok()?
            .ok()??
    } else {
        node.get_shard(peer, cid).await.ok()??
    };
    (data.len() == len && cids::verify(&cid, &data).is_ok()).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn probe(nodes: &[PeerId], live: &[bool]) -> SegmentProbe {
        let shards: Vec<Cid> = (0..live.len())
            .map(|i| cids::blake3_cid(&[i as u8]))
            .collect();
        let holders = live
            .iter()
            .enumerate()
            .map(|(i, &l)| if l { vec![nodes[i]] } else { vec![] })
            .collect();
        SegmentProbe {
            k: 4,
            shards,
            holders,
        }
    }

    #[test]
    fn a_whole_segment_is_healthy() {
        let nodes = peers(6);
        let mut p = Planner::new(Duration::ZERO);
        assert_eq!(
            p.plan(Instant::now(), &probe(&nodes, &[true; 6]), &nodes),
            Plan::Healthy
        );
    }

    #[test]
    fn a_missing_shard_waits_out_the_grace_period_then_is_rebuilt_elsewhere() {
        let nodes = peers(7);
        let pr = probe(&nodes, &[true, true, false, true, true, true]);
        let t0 = Instant::now();
        let mut p = Planner::new(Duration::from_secs(60));
        assert_eq!(p.plan(t0, &pr, &nodes), Plan::Waiting { missing: 1 });
        assert_eq!(
            p.plan(t0 + Duration::from_secs(59), &pr, &nodes),
            Plan::Waiting { missing: 1 }
        );
        // The node that held shard 2 is gone; the seventh is the only live one holding nothing of the segment.
        let alive: Vec<PeerId> = nodes.iter().copied().filter(|p| *p != nodes[2]).collect();
        let due = p.plan(t0 + Duration::from_secs(60), &pr, &alive);
        assert_eq!(
            due,
            Plan::Rebuild {
                targets: vec![(2, nodes[6])]
            }
        );
    }

    #[test]
    fn a_shard_that_comes_back_resets_its_clock() {
        let nodes = peers(6);
        let t0 = Instant::now();
        let mut p = Planner::new(Duration::from_secs(60));
        let gone = probe(&nodes, &[false, true, true, true, true, true]);
        assert_eq!(p.plan(t0, &gone, &nodes), Plan::Waiting { missing: 1 });
        let back = probe(&nodes, &[true; 6]);
        assert_eq!(
            p.plan(t0 + Duration::from_secs(30), &back, &nodes),
            Plan::Healthy
        );
        assert_eq!(
            p.plan(t0 + Duration::from_secs(70), &gone, &nodes),
            Plan::Waiting { missing: 1 }
        );
    }

    #[test]
    fn fewer_than_k_live_is_lost_not_rebuilt() {
        let nodes = peers(6);
        let mut p = Planner::new(Duration::ZERO);
        let pr = probe(&nodes, &[true, false, true, false, true, false]);
        assert_eq!(p.plan(Instant::now(), &pr, &nodes), Plan::Lost { live: 3 });
    }

    #[test]
    fn targets_are_distinct_and_hold_nothing_of_the_segment() {
        let nodes = peers(10);
        let mut p = Planner::new(Duration::ZERO);
        let pr = probe(&nodes, &[true, false, true, false, true, true]);
        let Plan::Rebuild { targets } = p.plan(Instant::now(), &pr, &nodes) else {
            panic!("two shards due");
        };
        let chosen: HashSet<PeerId> = targets.iter().map(|t| t.1).collect();
        assert_eq!(chosen.len(), 2);
        for (_, t) in &targets {
            assert!(!pr.holders.iter().flatten().any(|h| h == t));
        }
    }

    #[test]
    fn with_too_few_nodes_a_target_may_hold_another_shard_but_never_the_same() {
        let nodes = peers(5);
        let pr = probe(&nodes, &[true, true, true, true, true, false]);
        let mut p = Planner::new(Duration::ZERO);
        let Plan::Rebuild { targets } = p.plan(Instant::now(), &pr, &nodes) else {
            panic!("one shard due");
        };
        assert_eq!(targets.len(), 1);
        assert!(nodes.contains(&targets[0].1));
    }
}
