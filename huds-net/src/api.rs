//! The node's HTTP API on loopback: what `huds --api URL ...` and the devnet talk to.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v0/add?public=&k=&m=&name=` | body = the file; answers `{"cid","cap","size"}` once every shard is acknowledged |
//! | `GET /api/v0/cat?arg=CAP\|CID[/path]` | the file's bytes, streamed segment by segment |
//! | `GET /api/v0/ls?arg=...` | `{"cid","entries":[{"name","cid","type","size"}]}` |
//! | `GET /api/v0/id` | `{"peer","addrs"}` |
//! | `GET /api/v0/node/status` | `{"peer","stored_bytes","storage_bytes_max","shards","peers","repair"}` |

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::client::{NetShardSink, NetShardSource};
use super::node::NodeHandle;
use huds::BlockStore;
use huds::add::{AddError, AddOptions, Added, Source, add_with};
use huds::read::{ReadError, Reader, resolve_capability};

/// Chunks of a streamed response in flight.
const STREAM_CHUNKS_IN_FLIGHT: usize = 8;
const STREAM_CHUNK_BYTES: usize = 256 * 1024;

/// What the API serves with.
#[derive(Clone)]
pub struct Api {
    pub node: NodeHandle,
    /// Where uploads are spooled before they are added (public adds read them twice).
    pub spool: PathBuf,
    pub defaults: AddOptions,
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v0/add", post(add))
        .route("/api/v0/cat", get(cat))
        .route("/api/v0/ls", get(ls))
        .route("/api/v0/id", get(id))
        .route("/api/v0/node/status", get(status))
        .with_state(Arc::new(api))
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, api: Api) -> io::Result<()> {
    axum::serve(listener, router(api)).await
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        let code = match &e {
            ReadError::Capability(_)
            | ReadError::Cid(_)
            | ReadError::IsDirectory(_)
            | ReadError::NotDirectory(_) => StatusCode::BAD_REQUEST,
            ReadError::UnknownCid(_) | ReadError::NoEntry(_) | ReadError::ManifestMissing(_) => {
                StatusCode::NOT_FOUND
            }
            ReadError::Segment(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Deserialize)]
struct AddQuery {
    #[serde(default)]
    public: bool,
    k: Option<u8>,
    m: Option<u8>,
    name: Option<String>,
}

async fn add(
    State(api): State<Arc<Api>>,
    Query(q): Query<AddQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    tokio::fs::create_dir_all(&api.spool)
        .await
        .map_err(internal)?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source is available");
    let name = q
        .name
        .filter(|n| huds::unixfs::valid_name(n))
        .unwrap_or_else(|| "upload".into());
    let dir = api.spool.join(format!("{:016x}", u64::from_le_bytes(id)));
    tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
    let path = dir.join(&name);
    let result = spool_and_add(&api, &path, body, q.public, q.k, q.m).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

async fn spool_and_add(
    api: &Api,
    path: &std::path::Path,
    body: Body,
    public: bool,
    k: Option<u8>,
    m: Option<u8>,
) -> Result<Json<Value>, ApiError> {
    let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")))?;
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    let opts = AddOptions {
        public,
        k: k.unwrap_or(api.defaults.k),
        m: m.unwrap_or(api.defaults.m),
        ..api.defaults
    };
    let added = add_path(&api.node, path.to_path_buf(), opts)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(
        json!({ "cid": added.root.to_string(), "cap": added.capability.to_text(), "size": added.size }),
    ))
}

/// Adds a file or a tree already on disk, its shards placed over the network: what the add route and the
/// gateway's directory uploads share.
pub async fn add_path(
    node: &NodeHandle,
    path: PathBuf,
    opts: AddOptions,
) -> Result<Added, AddError> {
    let node = node.clone();
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let sink = NetShardSink::new(node.clone(), rt);
        add_with(node.store(), &sink, Source::Path(&path), &opts, &mut |_| {})
    })
    .await
    .unwrap_or_else(|e| Err(AddError::Network(format!("the add task failed: {e}"))))
}

#[derive(Deserialize)]
struct Target {
    arg: String,
}

/// Opens `CAP|CID[/path]` with shards from the network.
fn open(node: &NodeHandle, rt: Handle, target: &str) -> Result<(Reader, cid::Cid), ReadError> {
    let (head, path) = target.split_once('/').unwrap_or((target, ""));
    let cap = resolve_capability(node.store(), head)?;
    let source = Arc::new(NetShardSource::new(node.clone(), rt));
    let reader = Reader::open_with(node.store(), source, &cap)?;
    let cid = reader.resolve(&reader.root(), path)?;
    Ok((reader, cid))
}

/// A `Write` that hands chunks to an HTTP body.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STREAM_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

async fn cat(State(api): State<Arc<Api>>, Query(t): Query<Target>) -> Result<Response, ApiError> {
    let node = api.node.clone();
    let rt = Handle::current();
    let (reader, cid, size) = tokio::task::spawn_blocking(move || {
        let (reader, cid) = open(&node, rt, &t.arg)?;
        let (_, size) = reader.stat(&cid)?;
        Ok::<_, ReadError>((reader, cid, size))
    })
    .await
    .map_err(internal)??;
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(STREAM_CHUNK_BYTES),
        };
        let r = reader
            .cat(&cid, &mut w)
            .map(|_| ())
            .and_then(|()| w.flush().map_err(ReadError::Output));
        if let Err(e) = r {
            // The status line is gone already: cut the body short so the client sees an error.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(Body::from_stream(stream))
        .map_err(internal)
}

async fn ls(State(api): State<Arc<Api>>, Query(t): Query<Target>) -> Result<Json<Value>, ApiError> {
    let node = api.node.clone();
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let (reader, cid) = open(&node, rt, &t.arg)?;
        let entries: Vec<Value> = reader
            .list(&cid)?
            .into_iter()
            .map(|e| json!({ "name": e.name, "cid": e.cid.to_string(), "type": e.kind.as_str(), "size": e.size }))
            .collect();
        Ok(Json(json!({ "cid": cid.to_string(), "entries": entries })))
    })
    .await
    .map_err(internal)?
}

async fn id(State(api): State<Arc<Api>>) -> Json<Value> {
    let addrs: Vec<String> = api
        .node
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();
    Json(json!({ "peer": api.node.peer_id().to_string(), "addrs": addrs }))
}

async fn status(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    let store = api.node.store().clone();
    let (shards, bytes) = tokio::task::spawn_blocking(move || store.shard_stats())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let peers = api.node.storage_peers().await.len();
    let (_, max) = api.node.storage_bytes();
    let r = api.node.repair_stats();
    Ok(Json(json!({
        "peer": api.node.peer_id().to_string(),
        "stored_bytes": bytes,
        "storage_bytes_max": max,
        "shards": shards,
        "peers": peers,
        "repair": {
            "sweeps": r.sweeps,
            "shards_rebuilt": r.shards_rebuilt,
            "last_sweep": {
                "segments": r.last.segments,
                "healthy": r.last.healthy,
                "waiting": r.last.waiting,
                "lost": r.last.lost,
                "shards_rebuilt": r.last.shards_rebuilt,
                "failures": r.last.failures,
            },
        },
    })))
}
