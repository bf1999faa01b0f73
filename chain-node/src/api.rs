//! The chain's routes on the node's HTTP API (merged into `net::api::router`).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v0/chain/status` | `{"chain_id","epoch","fee_min","storage_stake_min","shards":[{"id","height","state_root","tip","committee":[{"validator","weight","stake"}],"committee_stake"}],"beacon":{"height","tip","state_root","committee","links":[...],"validators":[...],"storage_nodes":[{"id","stake","faults","faults_before","reputation_ppm"}]}}`: `faults` are the periods a storage node missed this epoch (`faults_before`: the epoch before), `reputation_ppm` its placement standing from them |
//! | `GET /api/v0/chain/account?address=ios1...` | `{"address","shard","balance","nonce","validator_stake","storage_stake","storage_registered","unbonding"}` (committed state; amounts in IOST) |
//! | `GET /api/v0/chain/prove/deal?id=HEX` | a storage deal's durability receipt (`chain::spv::Proof::Deal`, `specs/economics.md` §4); 404 when no shard has finalised it |
//! | `GET /api/v0/chain/deal?id=HEX` | `{"id","shard","root","k","m","placement","owner","start_height","period_blocks","periods","per_period","escrow_left","paid","refunded","next_height","provable","seed","holders":[{"address","key","signed_by","price","pay","next","passed","missed","slashed","repair_order","bounty","taken_over"}]}`: where a deal stands at its shard's tip (per holder slot: `address`/`key` hold it now, the taker of its repair order if one took it over; `signed_by` signed the deal), and the period (`null`: none) and seed a proof submitted now answers (what a holder's prover asks) |
//! | `GET /api/v0/chain/repairs` | `{"orders":[{"deal","holder","shard","bounty","missed","next"}]}`: the open repair orders (`specs/economics.md` §5.8) of every shard this node keeps, 256 a shard at most |
//! | `GET /api/v0/chain/deals?owner=ios1...[&after=HEX]` | `{"owner","shard","deals":[HEX...],"next"}`: the ids of the deals an account opened, in id order, 256 a page (`next`: the `after` of the next page, `null` on the last) |
//! | `GET /api/v0/chain/volume?owner=ios1...&name=NAME[&after=N]` | `{"id","owner","name","shard","height","version","versions":[{"version","height","root"}],"next"}`: a volume at its owner's shard's tip: `version` is the newest (0: never published), `versions` those after `after` (default 0), 256 a page, `root` in hex (`next`: the `after` of the next page, `null` on the last) |
//! | `GET /api/v0/chain/prove/volume?owner=ios1...&name=NAME&version=N` | a proof of that version (`chain::spv::Proof::Volume`) against the owner's shard's newest certified state, which also shows whether it is the newest; 404 when the shard has no such version |
//! | `GET /api/v0/chain/challenge?key=HEX` | `{"key","due":[{"shard","end","seed","unproven","slots":[{"deal","holder","period"}],"drawn":[{"deal","holder","position","piece"}]}]}`: per shard this node keeps where the storage node `key` (its ed25519 identity, hex) holds slots of deals that ran the period now provable, what its holder proof in the next block must answer (`specs/economics.md` §5.2; `unproven`: slots not yet paid for that period) |
//! | `POST /api/v0/chain/deal/proof[?shard=N]` | body = one storage proof (binary, `chain::types::storage_proof::ProofTx`: a slot's or a holder's): admitted for the next block of its shard (for a holder proof, `shard`, else the first shard here that takes it) and gossiped; `{"deal","holder","period","shard"}` for a slot proof, `{"key","end","shard"}` for a holder proof (with `"already_waiting": true` when it was admitted before: it is gossiped again); a refused one is a 400 with the reason |
//! | `GET /api/v0/chain/trust` | a light client's trust file (`chain::spv::LightClient`): the epochs the beacon keeps |
//! | `GET /api/v0/chain/epochs?after=E` | epoch proofs (`chain::spv::EpochProof`) of epochs `E+1..`, at most 64, from the most advanced beacon chain here |
//! | `GET /api/v0/chain/atomix?hash=HASH` | `{"tx","locked":{"shard"}|null,"committed":{"shard"}|null}`: where an Atomix transfer stands |
//! | `POST /api/v0/chain/atomix/relay?hash=HASH` | the shard that locked the transfer relays it again: `{"tx","relayed":{"shard"}}` (404: no lock of it here) |
//! | `POST /api/v0/chain/tx` | body = one signed transaction (binary, `chain::tx` encoding); answers once it is final: `{"tx","shard","height"}`, and for a transfer to another shard (Atomix) once the recipient's shard committed it too: `"committed":{"shard","height"}` (`null` if that did not happen within the wait; the lock stays and is relayed again); a refused transaction is a 400 with the reason |

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chain::genesis::Genesis;
use chain::tx::TX_BYTES_MAX;
use chain::{Address, Amount, ShardId, SignedTransaction, TxError, TxKind, shard_of};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::beacon::Beacon;
use super::validator::{BeaconView, ProofOf, ShardHead, ValidatorError, ValidatorHandle};
use chain::spv::LightClient;

/// How long a submitted transaction may take to become final before the API gives up waiting.
pub const FINALITY_WAIT: Duration = Duration::from_secs(30);

/// The chain at one moment, as [`ChainApi::snapshot`] sees it.
#[derive(Debug, Clone)]
pub struct ChainSnapshot {
    /// The epoch of the most advanced beacon chain here (genesis's if no validator runs).
    pub epoch: u64,
    pub shards: Vec<ShardSnapshot>,
    /// The validator registry the committees were read beside, sorted by id: each validator's stake,
    /// reputation and seat in the newest epoch.
    pub validators: Vec<ValidatorSnapshot>,
    /// The beacon chain all of this was read from (`None` when no validator runs here: then the registry and
    /// committees are genesis's).
    pub beacon: Option<BeaconView>,
}

/// One shard chain at one moment.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub id: ShardId,
    /// The epoch of the shard's next height.
    pub epoch: u64,
    /// The highest certified head known here (`None` before the first block).
    pub head: Option<ShardHead>,
    /// The committee of the next height, in seat order.
    pub committee: Vec<MemberSnapshot>,
    /// Its storage economy, from a validator here that keeps it (`None`: none does).
    pub economy: Option<chain::node::Economy>,
}

/// One seat of a committee: who holds it, its likelihood weight, and what the holder has staked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub id: Address,
    pub weight: u128,
    /// The holder's validator stake in the registry; `None` if the registry no longer lists it (a member of
    /// an older epoch's committee that has left since).
    pub stake: Option<Amount>,
}

/// One validator of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatorSnapshot {
    pub id: Address,
    /// Its seat in the newest epoch: a shard, [`chain::block::BEACON_SHARD`] for the beacon chain, `None` for
    /// a spare.
    pub seat: Option<ShardId>,
    pub stake: Amount,
    /// The reputation its weight this epoch was computed from, in parts per million.
    pub reputation_ppm: u64,
}

impl ShardSnapshot {
    pub fn height(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.height)
    }

    /// What the committee's members have staked together (members the registry no longer lists count 0).
    pub fn committee_stake(&self) -> Amount {
        total(self.committee.iter().filter_map(|m| m.stake))
    }
}

/// The sum of `amounts`; all the IOST there are fit in an [`Amount`], so the cap is never reached in practice.
fn total(amounts: impl IntoIterator<Item = Amount>) -> Amount {
    amounts.into_iter().fold(Amount::ZERO, |sum, a| {
        sum.checked_add(a).unwrap_or(Amount(u64::MAX))
    })
}

/// What the chain routes serve with: the genesis, the beacon's committees and handles on validators.
#[derive(Clone)]
pub struct ChainApi {
    genesis: Arc<Genesis>,
    beacon: Arc<Beacon>,
    validators: Vec<ValidatorHandle>,
}

pub use chain::hex;

impl ChainApi {
    pub fn new(
        genesis: Arc<Genesis>,
        beacon: Arc<Beacon>,
        validators: Vec<ValidatorHandle>,
    ) -> Self {
        Self {
            genesis,
            beacon,
            validators,
        }
    }

    /// The epoch's committees.
    pub fn beacon(&self) -> &Beacon {
        &self.beacon
    }

    /// What a light client of this chain trusts: its id and, per shard, the committee that certified the
    /// shard's latest block this node knows of (epoch 0's before any, or without a running validator).
    /// What a light client may trust: the epochs the most advanced beacon chain here keeps (epoch 0 from
    /// genesis if no validator runs).
    pub fn light_client(&self) -> LightClient {
        match self.beacon_view() {
            Some(view) => LightClient::from_beacon(&view.state),
            None => LightClient::from_beacon(&self.beacon.state),
        }
    }

    /// The validators this node runs.
    pub fn validators(&self) -> &[ValidatorHandle] {
        &self.validators
    }

    /// A running validator of `shard`, if any.
    fn validator(&self, shard: ShardId) -> Result<&ValidatorHandle, ApiError> {
        // The most advanced of them: one just seated on the shard may still be replaying it, and would answer
        // from a state behind what the others have finalised.
        self.validators
            .iter()
            .filter(|v| v.is_running())
            .map(|v| (v, v.status().lane))
            .filter(|(_, lane)| lane.shard == shard)
            .max_by_key(|(_, lane)| lane.height)
            .map(|(v, _)| v)
            .ok_or_else(|| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no validator of shard {shard} is running on this node"),
                )
            })
    }

    /// The beacon chain as the most advanced running validator here holds it.
    pub fn beacon_view(&self) -> Option<BeaconView> {
        self.validators
            .iter()
            .filter(|v| v.is_running())
            .map(|v| v.beacon())
            .max_by_key(|b| b.height)
    }

    /// The chain as this node sees it at one moment: per shard, the highest certified head any running
    /// validator here knows (its own shard's from its commits, other shards' from the beacon topic) and the
    /// committee of the epoch of its next height, each member with its stake from the same beacon state's
    /// registry. `GET /api/v0/chain/status` and the status page both read this, so they agree.
    pub fn snapshot(&self) -> ChainSnapshot {
        let view = self.beacon_view();
        let state = view.as_ref().map_or(&self.beacon.state, |v| &*v.state);
        let shards = ShardId::all(self.beacon.shard_count())
            .map(|s| {
                let head = self
                    .validators
                    .iter()
                    .filter(|v| v.is_running())
                    .filter_map(|v| v.heads().get(usize::from(s)).cloned().flatten())
                    .max_by_key(|h| h.height);
                let next = head.as_ref().map_or(0, |h| h.height) + 1;
                let committee = view
                    .as_ref()
                    .and_then(|v| v.state.committee_at(s, next))
                    .unwrap_or_else(|| self.beacon.committees[usize::from(s)].clone());
                let economy = self
                    .validators
                    .iter()
                    .filter(|v| v.is_running())
                    .filter_map(|v| v.economy())
                    .filter(|e| e.shard == s)
                    .max_by_key(|e| e.height);
                ShardSnapshot {
                    id: s,
                    economy,
                    epoch: view.as_ref().map_or(0, |v| {
                        v.state.epoch_at(s, next).unwrap_or_else(|| v.state.epoch())
                    }),
                    head,
                    committee: committee
                        .members
                        .iter()
                        .map(|m| MemberSnapshot {
                            id: m.id,
                            weight: m.weight,
                            stake: state.validator(&m.id).map(|v| v.stake),
                        })
                        .collect(),
                }
            })
            .collect();
        let validators = state
            .validators
            .iter()
            .map(|v| ValidatorSnapshot {
                id: v.id,
                seat: state.seat_of(&v.id).map(|a| a.shard),
                stake: v.stake,
                reputation_ppm: v.reputation_ppm,
            })
            .collect();
        ChainSnapshot {
            epoch: view.as_ref().map_or(self.beacon.epoch, |v| v.state.epoch()),
            shards,
            validators,
            beacon: view,
        }
    }

    /// The chain's status as this node sees it (see [`ChainApi::snapshot`]): every part from one snapshot.
    pub fn status(&self) -> Value {
        let snapshot = self.snapshot();
        let shards: Vec<Value> = snapshot
            .shards
            .iter()
            .map(|s| {
                let committee: Vec<Value> = s
                    .committee
                    .iter()
                    .map(|m| {
                        json!({
                            "validator": m.id.to_string(),
                            "weight": m.weight.to_string(),
                            "stake": m.stake.map(|a| a.to_string()),
                        })
                    })
                    .collect();
                json!({
                    "id": s.id,
                    "epoch": s.epoch,
                    "height": s.height(),
                    "state_root": s.head.as_ref().map(|h| hex(&h.state_root)),
                    "tip": s.head.as_ref().map(|h| hex(&h.block)),
                    "committee": committee,
                    "committee_stake": s.committee_stake().to_string(),
                })
            })
            .collect();
        json!({
            "chain_id": self.genesis.params.chain_id,
            "epoch": snapshot.epoch,
            "fee_min": self.genesis.params.fee_min.to_string(),
            "storage_stake_min": self.genesis.params.storage_stake_min.to_string(),
            "shards": shards,
            "beacon": snapshot.beacon.as_ref().map_or(Value::Null, beacon_status),
        })
    }
}

/// The beacon chain as the most advanced running beacon validator here sees it (the snapshot's view): its
/// height, the shard heads it linked and every validator's stake and reputation signals this epoch.
fn beacon_status(view: &BeaconView) -> Value {
    let state = &view.state;
    let committee: Vec<String> = state
        .committee(chain::block::BEACON_SHARD)
        .map(|c| c.members.iter().map(|m| m.id.to_string()).collect())
        .unwrap_or_default();
    let links: Vec<Value> = state
        .links
        .iter()
        .enumerate()
        .map(|(shard, l)| {
            json!({
                "shard": shard,
                "height": l.as_ref().map_or(0, |l| l.height),
                "block": l.as_ref().map(|l| hex(&l.block)),
                "state_root": l.as_ref().map(|l| hex(&l.state_root)),
                "registry_events": l.as_ref().map_or(0, |l| l.registry.count),
            })
        })
        .collect();
    let validators: Vec<Value> = state
        .validators
        .iter()
        .map(|v| {
            let seat = state.seat_of(&v.id).map(|a| a.shard).map(|s| {
                if s == chain::block::BEACON_SHARD {
                    json!("beacon")
                } else {
                    json!(s)
                }
            });
            json!({
                "id": v.id.to_string(),
                "seat": seat,
                "stake": v.stake.to_string(),
                "reputation_ppm": v.reputation_ppm,
                "reputation_now_ppm": chain::pol::reputation_ppm(&v.signals),
                "votes_in_certificates": v.signals.votes_in_certificates,
                "certificates": v.signals.certificates,
                "blocks_proposed": v.signals.blocks_proposed,
                "proposer_slots": v.signals.proposer_slots,
                "faults_proven": v.signals.faults_proven,
                "storage_faults": v.signals.storage_faults,
            })
        })
        .collect();
    json!({
        "height": view.height,
        "tip": hex(&view.tip),
        "state_root": hex(&state.root()),
        "epoch": state.epoch(),
        "randomness": hex(&state.randomness()),
        "committee": committee,
        "links": links,
        "validators": validators,
        "storage_nodes": state
            .storage_nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id.to_string(),
                    "stake": n.stake.to_string(),
                    "faults": n.faults,
                    "faults_before": n.faults_before,
                    "reputation_ppm": n.reputation_ppm(),
                })
            })
            .collect::<Vec<_>>(),
    })
}

pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

/// The chain routes; `net::api::router` merges them.
pub fn chain_routes(api: ChainApi) -> Router {
    Router::new()
        .route("/api/v0/chain/status", get(status))
        .route("/api/v0/chain/account", get(account))
        .route("/api/v0/chain/prove/account", get(prove_account))
        .route("/api/v0/chain/prove/tx", get(prove_tx))
        .route("/api/v0/chain/prove/deal", get(prove_deal))
        .route("/api/v0/chain/prove/volume", get(prove_volume))
        .route("/api/v0/chain/deal", get(deal))
        .route("/api/v0/chain/deals", get(deals))
        .route("/api/v0/chain/repairs", get(repairs))
        .route("/api/v0/chain/challenge", get(challenge))
        .route("/api/v0/chain/volume", get(volume))
        .route(
            "/api/v0/chain/deal/proof",
            post(submit_proof).layer(DefaultBodyLimit::max(
                chain::types::storage_proof::PROOF_BYTES_MAX + 1024,
            )),
        )
        .route("/api/v0/chain/trust", get(trust))
        .route("/api/v0/chain/epochs", get(epochs))
        .route("/api/v0/chain/atomix", get(atomix))
        .route("/api/v0/chain/atomix/relay", post(relay_lock))
        .route(
            "/api/v0/chain/tx",
            // A little over a transaction, so an oversized one is refused with its size, not cut off.
            post(submit).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .with_state(Arc::new(api))
}

fn proof_bytes(bytes: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response()
}

/// `GET /api/v0/chain/prove/account?address=`: an SPV proof of the account at its shard's tip.
async fn prove_account(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<AccountQuery>,
) -> Result<Response, ApiError> {
    let address: Address = q.address.parse().map_err(bad_request)?;
    let shard = shard_of(&address, api.genesis.params.shard_count);
    let proof = api
        .validator(shard)?
        .prove(ProofOf::Account(address))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("shard {shard} has finalised no block yet: retry in a moment"),
            )
        })?;
    Ok(proof_bytes(proof.encode()))
}

#[derive(Deserialize)]
struct TxQuery {
    hash: String,
}

/// `GET /api/v0/chain/prove/tx?hash=`: an SPV proof that the transaction is in a finalised block, asked of a
/// validator of each shard in turn.
async fn prove_tx(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<TxQuery>,
) -> Result<Response, ApiError> {
    let id = parse_tx(&q.hash)?;
    for shard in ShardId::all(api.beacon.shard_count()) {
        let Ok(v) = api.validator(shard) else {
            continue;
        };
        if let Ok(Some(proof)) = v.prove(ProofOf::Tx(id)).await {
            return Ok(proof_bytes(proof.encode()));
        }
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        format!("no finalised block holds transaction {}", q.hash),
    ))
}

#[derive(Deserialize)]
struct DealQuery {
    id: String,
}

/// `GET /api/v0/chain/prove/deal?id=`: a durability receipt of the deal (`specs/economics.md` §4), asked of a
/// validator of each shard in turn (a deal lives on its owner's shard).
async fn prove_deal(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<DealQuery>,
) -> Result<Response, ApiError> {
    let id = parse_hash(&q.id)
        .ok_or_else(|| bad_request(format!("{:?} is not a deal id (64 hex digits)", q.id)))?;
    Ok(proof_bytes(api.prove_deal(&id).await?.encode()))
}

/// `GET /api/v0/chain/deal?id=`: where a deal stands, from a validator of the shard that holds it.
async fn deal(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<DealQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_hash(&q.id)
        .ok_or_else(|| bad_request(format!("{:?} is not a deal id (64 hex digits)", q.id)))?;
    for shard in ShardId::all(api.beacon.shard_count()) {
        let Ok(v) = api.validator(shard) else {
            continue;
        };
        let Ok(Some(d)) = v.deal(id).await else {
            continue;
        };
        let pays = d.terms.per_period().unwrap_or_default();
        let holders: Vec<Value> = d
            .terms
            .holders
            .iter()
            .zip(d.proven.iter().zip(&d.keys))
            .enumerate()
            .map(|(i, (h, (p, key)))| {
                json!({
                    "address": Address::of(key).to_string(),
                    "key": hex(&key.0),
                    "signed_by": h.address().to_string(),
                    "price": h.price.0,
                    "pay": pays.get(i).map_or(0, |a| a.0),
                    "next": p.next,
                    "passed": p.passed,
                    "missed": p.missed,
                    "slashed": p.slashed.0,
                    "repair_order": p.streak >= api.genesis.params.repair_after_misses.max(1),
                    "missing_streak": p.streak,
                    "bounty": p.bounty.0,
                    "taken_over": p.taker.is_some(),
                })
            })
            .collect();
        return Ok(Json(json!({
            "id": hex(&id),
            "shard": d.shard,
            "root": hex(&d.terms.root),
            "k": d.terms.k,
            "m": d.terms.m,
            "placement": d.terms.placement,
            "owner": d.record.owner.to_string(),
            "start_height": d.record.start_height,
            "period_blocks": d.record.period_blocks,
            "periods": d.record.periods,
            "per_period": d.record.per_period.0,
            "escrow_left": d.record.escrow_left.0,
            "paid": d.record.paid.0,
            "refunded": d.record.refunded.0,
            "next_height": d.next_height,
            "provable": d.provable,
            "seed": hex(&d.seed),
            "holders": holders,
        })));
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        format!("no shard here holds deal {}", hex(&id)),
    ))
}

/// Repair orders one `GET /api/v0/chain/repairs` lists at most per shard.
const REPAIRS_PAGE: usize = 256;

/// `GET /api/v0/chain/repairs`: the open repair orders of every shard this node keeps a validator of.
async fn repairs(State(api): State<Arc<ChainApi>>) -> Result<Json<Value>, ApiError> {
    let mut orders = Vec::new();
    for shard in ShardId::all(api.beacon.shard_count()) {
        let Ok(v) = api.validator(shard) else {
            continue;
        };
        let Ok(Some((shard, found))) = v.repair_orders(REPAIRS_PAGE).await else {
            continue;
        };
        for (deal, holder, p) in found {
            orders.push(json!({
                "deal": hex(&deal),
                "holder": holder,
                "shard": shard,
                "bounty": p.bounty.0,
                "missed": p.missed,
                "next": p.next,
            }));
        }
    }
    Ok(Json(json!({ "orders": orders })))
}

#[derive(Deserialize)]
struct DealsQuery {
    owner: String,
    after: Option<String>,
}

/// A validator's answer about its shard's state: unavailable if the validator could not answer, or keeps no
/// lane of `shard`.
fn lane_answer<T>(
    shard: ShardId,
    answer: Result<Option<T>, ValidatorError>,
) -> Result<T, ApiError> {
    answer
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this node keeps no lane of shard {shard}"),
            )
        })
}

/// Deal ids one `GET /api/v0/chain/deals` answers at most; `next` pages on.
const DEALS_PAGE: usize = 256;

/// `GET /api/v0/chain/deals?owner=ios1...[&after=ID]`: the ids of the deals an account opened (they live on
/// its shard), in id order, a page at a time.
async fn deals(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<DealsQuery>,
) -> Result<Json<Value>, ApiError> {
    let owner: Address = q.owner.parse().map_err(bad_request)?;
    let after = match &q.after {
        Some(a) => Some(
            parse_hash(a)
                .ok_or_else(|| bad_request(format!("{a:?} is not a deal id (64 hex digits)")))?,
        ),
        None => None,
    };
    let shard = shard_of(&owner, api.genesis.params.shard_count);
    let ids = lane_answer(
        shard,
        api.validator(shard)?
            .deals_of(owner, after, DEALS_PAGE)
            .await,
    )?;
    let next = (ids.len() == DEALS_PAGE).then(|| ids.last().map(|id| hex(id)));
    Ok(Json(json!({
        "owner": owner.to_string(),
        "shard": shard,
        "deals": ids.iter().map(|id| hex(id)).collect::<Vec<_>>(),
        "next": next.flatten(),
    })))
}

#[derive(serde::Deserialize)]
struct VolumeQuery {
    owner: String,
    name: String,
    after: Option<u64>,
}

#[derive(Deserialize)]
struct VolumeVersionQuery {
    owner: String,
    name: String,
    version: u64,
}

/// `GET /api/v0/chain/prove/volume?owner=&name=&version=`: a proof of a volume version, from a validator of the
/// owner's shard.
async fn prove_volume(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<VolumeVersionQuery>,
) -> Result<Response, ApiError> {
    let owner: Address = q.owner.parse().map_err(bad_request)?;
    chain::types::volume::check_name(&q.name).map_err(bad_request)?;
    let shard = shard_of(&owner, api.genesis.params.shard_count);
    let what = ProofOf::Volume {
        owner,
        name: q.name.clone(),
        version: q.version,
    };
    match api.validator(shard)?.prove(what).await {
        Ok(Some(proof)) => Ok(proof_bytes(proof.encode())),
        Ok(None) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "shard {shard} has no certified version {} of volume {} of {owner}",
                q.version, q.name
            ),
        )),
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// Volume versions one `GET /api/v0/chain/volume` answers at most; `next` pages on.
const VOLUME_PAGE: usize = 256;

/// `GET /api/v0/chain/volume?owner=ios1...&name=NAME[&after=N]`: a volume at the tip of its owner's shard:
/// its newest version and a page of its versions after `after` (default 0), each with its height and root.
async fn volume(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<VolumeQuery>,
) -> Result<Json<Value>, ApiError> {
    let owner: Address = q.owner.parse().map_err(bad_request)?;
    chain::types::volume::check_name(&q.name).map_err(bad_request)?;
    let id = chain::types::volume::volume_id(&owner, &q.name);
    let shard = shard_of(&owner, api.genesis.params.shard_count);
    let view = lane_answer(
        shard,
        api.validator(shard)?
            .volume(id, q.after.unwrap_or(0), VOLUME_PAGE)
            .await,
    )?;
    let next = (view.versions.len() == VOLUME_PAGE)
        .then(|| view.versions.last().map(|(n, _)| *n))
        .flatten();
    Ok(Json(json!({
        "id": hex(&id),
        "owner": owner.to_string(),
        "name": q.name,
        "shard": view.shard,
        "height": view.height,
        "version": view.head,
        "versions": view.versions.iter().map(|(n, v)| json!({
            "version": n,
            "height": v.height,
            "root": hex(&v.root),
        })).collect::<Vec<_>>(),
        "next": next,
    })))
}

#[derive(Deserialize)]
struct ChallengeQuery {
    key: String,
}

/// `GET /api/v0/chain/challenge?key=`: what a storage node's holder proof must answer on each shard here.
async fn challenge(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<ChallengeQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = parse_hash(&q.key)
        .map(chain::crypto::PublicKey)
        .ok_or_else(|| {
            bad_request(format!(
                "{:?} is not a storage node key (64 hex digits)",
                q.key
            ))
        })?;
    let mut due = Vec::new();
    for shard in ShardId::all(api.beacon.shard_count()) {
        let Ok(v) = api.validator(shard) else {
            continue;
        };
        let Ok(Some((shard, d))) = v.holder_due(key).await else {
            continue;
        };
        due.push(json!({
            "shard": shard,
            "end": d.end,
            "seed": hex(&d.seed),
            "unproven": d.unproven,
            "slots": d.slots.iter().map(|(deal, holder, period)| json!({
                "deal": hex(deal), "holder": holder, "period": period,
            })).collect::<Vec<_>>(),
            "drawn": d.drawn.iter().map(|(deal, holder, position, piece)| json!({
                "deal": hex(deal), "holder": holder, "position": position, "piece": piece,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({ "key": hex(&key.0), "due": due })))
}

#[derive(Deserialize)]
struct ProofQuery {
    shard: Option<u16>,
}

/// `POST /api/v0/chain/deal/proof`: a storage proof for the next block of its shard.
async fn submit_proof(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<ProofQuery>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    use chain::types::storage_proof::ProofTx;
    let proof =
        ProofTx::decode(&body).map_err(|e| bad_request(format!("not a storage proof: {e}")))?;
    let what = |shard: ShardId| match &proof {
        ProofTx::Slot(p) => json!({
            "deal": hex(&p.deal), "holder": p.holder, "period": p.period, "shard": shard,
        }),
        ProofTx::Holder(p) => json!({ "key": hex(&p.key.0), "end": p.end, "shard": shard }),
    };
    let mut refused = None;
    for shard in ShardId::all(api.beacon.shard_count()) {
        if q.shard.is_some_and(|s| s != shard.0) {
            continue;
        }
        let Ok(v) = api.validator(shard) else {
            continue;
        };
        match v.submit_proof(proof.clone()).await {
            Ok(Some(Ok(()))) => return Ok(Json(what(shard))),
            Ok(Some(Err(chain::ledger::PoolError::Duplicate))) => {
                let mut answer = what(shard);
                answer["already_waiting"] = json!(true);
                return Ok(Json(answer));
            }
            // A holder proof names no shard: another shard here may be the one it answers.
            Ok(Some(Err(e))) if matches!(proof, ProofTx::Holder(_)) && q.shard.is_none() => {
                refused = Some(e);
            }
            Ok(Some(Err(e))) => return Err(bad_request(format!("proof refused: {e}"))),
            Ok(None) | Err(_) => continue,
        }
    }
    if let Some(e) = refused {
        return Err(bad_request(format!("proof refused: {e}")));
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        match &proof {
            ProofTx::Slot(p) => format!("no shard here holds deal {}", hex(&p.deal)),
            ProofTx::Holder(p) => format!(
                "no shard here has a slot of storage node {} to prove now",
                hex(&p.key.0)
            ),
        },
    ))
}

impl ChainApi {
    /// A durability receipt of deal `id` from the first shard that has it.
    pub async fn prove_deal(&self, id: &[u8; 32]) -> Result<chain::spv::Proof, ApiError> {
        for shard in ShardId::all(self.beacon.shard_count()) {
            let Ok(v) = self.validator(shard) else {
                continue;
            };
            if let Ok(Some(proof)) = v.prove(ProofOf::Deal(*id)).await {
                return Ok(proof);
            }
        }
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no shard has finalised deal {}", hex(id)),
        ))
    }
}

fn parse_tx(text: &str) -> Result<[u8; 32], ApiError> {
    parse_hash(text).ok_or_else(|| {
        bad_request(format!(
            "{text:?} is not a transaction hash (64 hex digits)"
        ))
    })
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `GET /api/v0/chain/trust`: the chain id and this epoch's committees, as a light client's trust file. Taking
/// it from a node is trust on first use; a devnet also writes it beside its wallet.
async fn trust(State(api): State<Arc<ChainApi>>) -> Response {
    proof_bytes(api.light_client().encode())
}

#[derive(Deserialize)]
struct EpochsQuery {
    after: u64,
}

/// `GET /api/v0/chain/epochs?after=E`: how epochs `E+1 ..` were drawn, each checkable by a light client that
/// trusts the epoch before it; from the running validator with the highest beacon chain.
async fn epochs(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<EpochsQuery>,
) -> Result<Response, ApiError> {
    let v = api
        .validators
        .iter()
        .filter(|v| v.is_running())
        .max_by_key(|v| v.beacon().height)
        .ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "no validator runs on this node".into(),
            )
        })?;
    let proofs = v
        .epoch_proofs(q.after)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(proof_bytes(chain::spv::EpochProof::encode_all(&proofs)))
}

/// Where an Atomix transfer stands: the shard that locked it and the shard that committed it, each as the
/// committed state of a validator of that shard here shows it (`null`: not, or not yet).
async fn atomix(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<TxQuery>,
) -> Result<Json<Value>, ApiError> {
    let tx = parse_tx(&q.hash)?;
    let (mut locked, mut committed) = (Value::Null, Value::Null);
    for shard in ShardId::all(api.genesis.params.shard_count) {
        let status = api
            .validator(shard)?
            .atomix(tx)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        if status.locked {
            locked = json!({ "shard": shard });
        }
        if status.committed {
            committed = json!({ "shard": shard });
        }
    }
    Ok(Json(
        json!({ "tx": hex(&tx), "locked": locked, "committed": committed }),
    ))
}

/// Has the shard that locked an Atomix transfer relay it again: `{"tx","relayed":{"shard"}}`, or 404 if no
/// shard here holds a lock of it.
async fn relay_lock(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<TxQuery>,
) -> Result<Json<Value>, ApiError> {
    let tx = parse_tx(&q.hash)?;
    for shard in ShardId::all(api.genesis.params.shard_count) {
        let Ok(v) = api.validator(shard) else {
            continue;
        };
        if v.relay_lock(tx).await.unwrap_or(false) {
            return Ok(Json(
                json!({ "tx": hex(&tx), "relayed": { "shard": shard } }),
            ));
        }
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no shard here holds an Atomix lock of transaction {}",
            q.hash
        ),
    ))
}

async fn status(State(api): State<Arc<ChainApi>>) -> Json<Value> {
    Json(api.status())
}

#[derive(Deserialize)]
struct AccountQuery {
    address: String,
}

async fn account(
    State(api): State<Arc<ChainApi>>,
    Query(q): Query<AccountQuery>,
) -> Result<Json<Value>, ApiError> {
    let address: Address = q.address.parse().map_err(bad_request)?;
    let shard = shard_of(&address, api.genesis.params.shard_count);
    let account = api
        .validator(shard)?
        .account(address)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .unwrap_or_default();
    Ok(Json(json!({
        "address": address.to_string(),
        "shard": shard,
        "balance": account.balance.to_string(),
        "nonce": account.nonce,
        "validator_stake": account.validator_stake.to_string(),
        "storage_stake": account.storage_stake.to_string(),
        "storage_registered": account.storage_registered,
        "unbonding": account.unbonding.to_string(),
    })))
}

async fn submit(State(api): State<Arc<ChainApi>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let tx = SignedTransaction::decode(&body).map_err(bad_request)?;
    debug_assert!(body.len() <= TX_BYTES_MAX, "decode checks the size first");
    let shard = shard_of(&tx.tx.sender_address(), api.genesis.params.shard_count);
    let validator = api.validator(shard)?;
    let id = tx.id();
    let mut commits = validator.commits();
    // A transfer to another shard is an Atomix lock here, committed later by the recipient's shard.
    let output = match &tx.tx.kind {
        TxKind::Transfer { to, .. } => {
            let out = shard_of(to, api.genesis.params.shard_count);
            (out != shard).then_some(out)
        }
        _ => None,
    };
    let output = match output {
        Some(out) => {
            let v = api.validator(out)?.clone();
            let commits = v.commits();
            Some((out, v, commits))
        }
        None => None,
    };
    let started = tokio::time::Instant::now();
    let results = validator
        .submit(vec![tx.clone()])
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    match results.into_iter().next() {
        Some(Err(e @ TxError::MempoolFull)) => {
            return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
        }
        Some(Err(e)) => return Err(bad_request(e)),
        _ => {}
    }
    let wait = async {
        loop {
            match commits.recv().await {
                Ok(notice) if notice.tx_ids.contains(&id) => return Ok(Some(notice.height)),
                Ok(_) => {}
                // Missed notices: the account's nonce says whether the transaction went through.
                Err(RecvError::Lagged(_)) => {
                    let account = validator.account(tx.tx.sender_address()).await;
                    if account
                        .ok()
                        .flatten()
                        .is_some_and(|a| a.nonce > tx.tx.nonce)
                    {
                        return Ok(None);
                    }
                }
                Err(RecvError::Closed) => {
                    return Err(ApiError(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the validator stopped before the transaction was final".into(),
                    ));
                }
            }
        }
    };
    let height = tokio::time::timeout(FINALITY_WAIT, wait)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "transaction {} admitted but not final within {FINALITY_WAIT:?}; check the balance before resending",
                    hex(&id)
                ),
            )
        })??;
    let mut answer = json!({
        "tx": hex(&id),
        "shard": shard,
        "height": height,
    });
    if let Some((out, v, mut out_commits)) = output {
        let wait = async {
            loop {
                match out_commits.recv().await {
                    Ok(notice) if notice.commits_lock(&id) => return Some(Some(notice.height)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if v.atomix(id).await.is_ok_and(|s| s.committed) {
                            return Some(None);
                        }
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        };
        let left = FINALITY_WAIT.saturating_sub(started.elapsed());
        answer["committed"] = match tokio::time::timeout(left, wait).await {
            Ok(Some(height)) => json!({ "shard": out, "height": height }),
            _ => Value::Null,
        };
    }
    Ok(Json(answer))
}

/// Serves only the chain routes on `listener` (the node API serves them merged with the rest).
pub async fn serve(listener: tokio::net::TcpListener, api: ChainApi) -> std::io::Result<()> {
    axum::serve(listener, chain_routes(api)).await
}
