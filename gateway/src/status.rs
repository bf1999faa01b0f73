//! Network status: the JSON API, where a file's shards sit, the live page at `/`, and `/metrics`.
//!
//! The chain's part comes through [`ChainStatusSource`], so the chain runtime plugs in without the gateway
//! knowing how it runs; without one the status says `"chain": null` and the page says so.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use futures::future::join_all;
use huds::BlockStore;
use huds_net::NodeHandle;
use huds_net::libp2p::PeerId;
use huds_net::wire::{Request as ShardRequest, Response as ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Gateway;
use crate::error::GatewayError;

/// Segments whose shards `/api/v0/status/file` locates by default, and at most.
const FILE_SEGMENTS_DEFAULT: usize = 8;
const FILE_SEGMENTS_MAX: usize = 64;
/// Peers asked whether they hold each shard (this node included).
const PEERS_ASKED_MAX: usize = 64;

/// One member of a shard's committee: its Proof-of-Likelihood weight and its stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitteeMember {
    pub validator: String,
    /// Proof-of-Likelihood weight, a decimal string (weights are 128-bit).
    pub weight: String,
    /// The member's share of its committee's weight, for people: "25.0%".
    pub share: String,
    /// The member's validator stake in IOST, machine form ("1000.00000000"); `None` if the registry no
    /// longer lists it.
    pub stake: Option<String>,
    /// The same for people ("1,000 IOST").
    pub stake_for_people: Option<String>,
}

/// One shard chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardChain {
    pub id: u32,
    /// The epoch of the shard's next height.
    pub epoch: u64,
    pub height: u64,
    pub state_root: String,
    pub committee: Vec<CommitteeMember>,
    /// What the committee's members have staked together, machine form.
    pub committee_stake: String,
    /// The same for people.
    pub committee_stake_for_people: String,
    /// Its storage deals, when a validator of this node keeps the shard.
    pub economy: Option<ShardEconomy>,
}

/// The storage deals of one shard: how many run, and what their escrow holds, paid and refunded, in IOST
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardEconomy {
    pub deals_active: u64,
    pub escrow_left: String,
    pub paid: String,
    pub refunded: String,
    /// Storage proofs waiting for a block.
    pub proofs_waiting: u64,
}

/// One validator of the chain's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatorRow {
    pub validator: String,
    /// Its seat this epoch, for people: "shard 0", "beacon"; `None` for a spare.
    pub seat: Option<String>,
    /// Its validator stake, machine form.
    pub stake: String,
    /// The same for people.
    pub stake_for_people: String,
    /// The reputation its weight this epoch was computed from, in parts per million.
    pub reputation_ppm: u64,
    /// The same for people: "98.5%".
    pub reputation: String,
}

/// A recently finalised block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockSummary {
    pub shard: u32,
    pub height: u64,
    pub hash: String,
    pub txs: u32,
    /// Storage proofs it carried (each paid a holder a period).
    pub proofs: u32,
    pub proposer: String,
}

/// What the chain shows the status page (the shape of `huds chain status --json`, plus amounts for people, the
/// registry and recent blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    pub epoch: u64,
    pub shards: Vec<ShardChain>,
    pub validators: Vec<ValidatorRow>,
    pub recent_blocks: Vec<BlockSummary>,
}

/// Where the chain's status comes from: implemented by the chain runtime that runs beside the node.
pub trait ChainStatusSource: Send + Sync {
    /// The current status; `None` while the chain is not (yet) available.
    fn chain_status(&self) -> Option<ChainStatus>;
}

async fn node_stats(node: &NodeHandle) -> Value {
    let store = node.store().clone();
    let stats = tokio::task::spawn_blocking(move || store.shard_stats())
        .await
        .ok()
        .and_then(Result::ok);
    let addrs: Vec<String> = node
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();
    json!({
        "peer": node.peer_id().to_string(),
        "addrs": addrs,
        "local": true,
        "shards": stats.map(|s| s.0),
        "stored_bytes": stats.map(|s| s.1),
    })
}

/// `GET /api/v0/status`.
pub async fn status(State(gw): State<Gateway>) -> Json<Value> {
    let cfg = &gw.inner.cfg;
    let mut local: Vec<&NodeHandle> = vec![&cfg.node];
    local.extend(
        cfg.local_nodes
            .iter()
            .filter(|n| n.peer_id() != cfg.node.peer_id()),
    );
    let mut nodes = join_all(local.iter().map(|n| node_stats(n))).await;
    let known: Vec<PeerId> = local.iter().map(|n| n.peer_id()).collect();
    for peer in cfg.node.storage_peers().await {
        if !known.contains(&peer) {
            nodes.push(json!({ "peer": peer.to_string(), "local": false }));
        }
    }
    let m = gw.metrics();
    Json(json!({
        "gateway": {
            "peer": cfg.node.peer_id().to_string(),
            "requests": m.requests(),
            "sent_bytes": m.bytes_sent(),
        },
        "nodes": nodes,
        "chain": cfg.chain.as_ref().and_then(|c| c.chain_status()),
    }))
}

#[derive(Deserialize)]
pub struct FileQuery {
    arg: String,
    segments: Option<usize>,
}

/// Whether `peer` (or this node, from its store) holds `cid`.
async fn holds(node: &NodeHandle, peer: PeerId, cid: cid::Cid) -> bool {
    if peer == node.peer_id() {
        let store = node.store().clone();
        return tokio::task::spawn_blocking(move || matches!(store.shard(&cid), Ok(Some(_))))
            .await
            .unwrap_or(false);
    }
    matches!(
        node.request(peer, ShardRequest::Has { cid }).await,
        Ok(ShardResponse::Present(true))
    )
}

/// `GET /api/v0/status/file?arg=CAP|CID[&segments=N]`: which node holds each shard of the first segments.
pub async fn file(State(gw): State<Gateway>, Query(q): Query<FileQuery>) -> Response {
    file_inner(gw, q)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn file_inner(gw: Gateway, q: FileQuery) -> Result<Response, GatewayError> {
    let wanted = q
        .segments
        .unwrap_or(FILE_SEGMENTS_DEFAULT)
        .min(FILE_SEGMENTS_MAX);
    let g = gw.clone();
    let root = q.arg.trim().to_string();
    let (manifest_root, k, m, size, segments) = gw
        .blocking(move || {
            let reader = g.reader(&root)?;
            let mf = reader.manifest();
            let segs: Vec<(u32, Vec<cid::Cid>)> = mf
                .segments
                .iter()
                .map(|s| (s.len, s.shards.clone()))
                .collect();
            Ok((mf.root, mf.k, mf.m, mf.size, segs))
        })
        .await?;
    let node = gw.node().clone();
    let mut peers = node.storage_peers().await;
    peers.truncate(PEERS_ASKED_MAX - 1);
    peers.push(node.peer_id());
    let mut out = Vec::new();
    for (i, (len, shards)) in segments.iter().take(wanted).enumerate() {
        let asks = shards.iter().map(|&cid| {
            let node = node.clone();
            let peers = peers.clone();
            async move {
                let found = join_all(peers.iter().map(|&p| {
                    let node = node.clone();
                    async move { holds(&node, p, cid).await.then_some(p) }
                }))
                .await;
                let holders: Vec<String> =
                    found.into_iter().flatten().map(|p| p.to_string()).collect();
                json!({ "cid": cid.to_string(), "holders": holders })
            }
        });
        let shards = join_all(asks).await;
        out.push(json!({ "index": i, "len": len, "shards": shards }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for s in &out {
        for sh in s["shards"].as_array().into_iter().flatten() {
            for h in sh["holders"].as_array().into_iter().flatten() {
                *counts
                    .entry(h.as_str().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
    }
    Ok(Json(json!({
        "cid": manifest_root.to_string(),
        "size": size,
        "k": k,
        "m": m,
        "segments_total": segments.len(),
        "segments": out,
        "shards_per_node": counts,
    }))
    .into_response())
}

const PAGE: &str = include_str!("../static/index.html");

/// `GET /`: the live status page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /metrics`.
pub async fn metrics(State(gw): State<Gateway>) -> Response {
    let mut resp = gw.metrics().render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
