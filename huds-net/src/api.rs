//! The node's HTTP API on loopback: what `huds --api URL ...` and the devnet talk to.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v0/add?public=&k=&m=&name=` | body = the file; answers `{"cid","cap","size"}` once every shard is acknowledged |
//! | `POST /api/v0/add?...&deal_owner=&chain_id=&deal_periods=&deal_price=` | as above, plus `"deal": {"terms","signatures"}` (hex) gathered from every holder for the owner to open, or `"deal_error"` |
//! | `POST /api/v0/add?format=tar&...` | body = a tree as a tar stream (`huds_net::tree`), unpacked safely and added as a local directory would be |
//! | `POST /api/v0/rm?arg=CAP\|CID[&dry=true]` | unpins a file or tree this node added: `{"cid","manifest","name","size","shards","deleted"}` (404 if it is not pinned here; `dry`: only `{"cid","manifest"}`, nothing changed) |
//! | `GET /api/v0/cat?arg=CAP\|CID[/path]` | the file's bytes, streamed segment by segment |
//! | `GET /api/v0/get?arg=CAP\|CID[/path]` | a file's bytes as `cat`, a directory as a tar stream (`application/x-tar`), a symlink as its target (`inode/symlink`) |
//! | `GET /api/v0/ls?arg=...` | `{"cid","entries":[{"name","cid","type","size"}]}` |
//! | `GET /api/v0/block?arg=CID` | a shard or sealed manifest by its CID (`application/octet-stream`): from this node's store, else fetched from the network and checked against the CID; 404 if no peer has it. Sealed bytes only: a client that mounts or reads through it keeps its file key to itself |
//! | `GET /api/v0/resolve?arg=CID` | `{"cid","cap"}`: the capability of a public file this node holds (404 for any other CID) |
//! | `GET /api/v0/pins[?caps=true]` | what this node added (behind the upload token): `{"pins":[{"cid","manifest","name","size","added","public"}]}`, with `"cap"` only when asked |
//! | `GET /api/v0/id` | `{"peer","addrs"}` |
//! | `GET /api/v0/node/status` | `{"peer","account","deals":[{"id","holder"}],"stored_bytes","storage_bytes_max","shards","peers","repair"}` (`account` and `deals`: the account its deals pay and the deals it signed and still proves, `null` on a node that takes no deals) |

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

use super::client::{NetShardSink, NetShardSource, Placement};
use super::deals::{self, DealAsk};
use super::node::NodeHandle;
use super::tree::{self, Limits, TreeError};
use huds::BlockStore;
use huds::add::{AddError, AddOptions, Added, Source, add_with};
use huds::read::{EntryKind, ReadError, Reader, ShardProblem, resolve_capability};

/// Chunks of a streamed response in flight.
const STREAM_CHUNKS_IN_FLIGHT: usize = 8;
const STREAM_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks of an uploaded tree between the HTTP body and the unpacker.
const UPLOAD_CHUNKS_IN_FLIGHT: usize = 8;
/// What a tree upload may hold: entries (files, directories, symlinks) and bytes of files.
pub const TREE_LIMITS: Limits = Limits {
    entries_max: 100_000,
    bytes_max: 64 * 1024 * 1024 * 1024,
};
/// Bytes of an upload still read and dropped after the node refused it, so that a client still sending gets
/// the answer that says why instead of a closed connection; a larger rest is cut off.
const DRAIN_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The answer's content type for a tree.
pub const TAR_CONTENT_TYPE: &str = "application/x-tar";
/// The answer's content type for a symlink, whose body is its target (the type desktop systems give links).
pub const SYMLINK_CONTENT_TYPE: &str = "inode/symlink";

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
        .route("/api/v0/rm", post(rm))
        .route("/api/v0/cat", get(cat))
        .route("/api/v0/get", get(get_route))
        .route("/api/v0/ls", get(ls))
        .route("/api/v0/block", get(block))
        .route("/api/v0/resolve", get(resolve))
        .route("/api/v0/pins", get(pins))
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
            ReadError::UnknownCid(_)
            | ReadError::NoEntry(_)
            | ReadError::ManifestMissing(_)
            | ReadError::NotPinned(_) => StatusCode::NOT_FOUND,
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
    /// `tar`: the body is a tree as a tar stream; absent: the body is the file.
    format: Option<String>,
    /// A storage deal for the file, paid by this account (`deal_ask`).
    deal_owner: Option<String>,
    chain_id: Option<u32>,
    deal_periods: Option<u64>,
    deal_price: Option<u64>,
}

/// An upload's own directory in the spool, removed however the add ends: an answer, an error, or the client
/// going away (which drops the handler's future).
struct SpoolDir(PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn add(
    State(api): State<Arc<Api>>,
    Query(q): Query<AddQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ask = deal_ask(&q)?;
    let tar = match q.format.as_deref() {
        None | Some("") | Some("raw") => false,
        Some("tar") => true,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "format={other:?} is not known: use format=tar for a tree, or none for a file"
                ),
            ));
        }
    };
    tokio::fs::create_dir_all(&api.spool)
        .await
        .map_err(spool_error)?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source is available");
    let name = q
        .name
        .filter(|n| huds::unixfs::valid_name(n))
        .unwrap_or_else(|| "upload".into());
    // The guard comes first: the future may be dropped at any await, the directory's creation included.
    let spool = SpoolDir(api.spool.join(format!("{:016x}", u64::from_le_bytes(id))));
    tokio::fs::create_dir_all(&spool.0)
        .await
        .map_err(spool_error)?;
    let path = spool.0.join(&name);
    let opts = AddOptions {
        public: q.public,
        k: q.k.unwrap_or(api.defaults.k),
        m: q.m.unwrap_or(api.defaults.m),
        ..api.defaults
    };
    if tar {
        return unpack_and_add(&api, spool, path, body, opts, ask).await;
    }
    spool_and_add(&api, &path, body, opts, ask).await
}

/// One piece of an upload on its way from the HTTP body to a blocking reader.
enum Piece {
    Data(Bytes),
    /// The body ended as HTTP framed it: only after this is the end of the bytes the end of the upload.
    End,
}

/// The HTTP body as a blocking `Read`. A channel closed without `End` (the handler dropped) is an error, so a
/// cut upload is never taken for a whole one.
struct BodyReader {
    rx: mpsc::Receiver<Result<Piece, io::Error>>,
    current: Bytes,
    ended: bool,
}

impl io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Piece::Data(b))) => self.current = b,
                Some(Ok(Piece::End)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload was cut short",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Feeds the body to `tx`; once the reader stops listening (it refused the upload, or the archive ended) the
/// rest is read and dropped, up to `DRAIN_BYTES_MAX`.
async fn pump(body: Body, tx: mpsc::Sender<Result<Piece, io::Error>>) {
    let mut stream = body.into_data_stream();
    let mut listening = true;
    let mut drained = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) if listening => {
                listening = tx.send(Ok(Piece::Data(bytes))).await.is_ok();
            }
            Ok(bytes) => {
                drained += bytes.len() as u64;
                if drained > DRAIN_BYTES_MAX {
                    return;
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(io::Error::other(format!("reading the upload: {e}"))))
                    .await;
                return;
            }
        }
    }
    let _ = tx.send(Ok(Piece::End)).await;
}

/// Reads and drops what is left of a refused upload, up to `DRAIN_BYTES_MAX`.
async fn drain(mut stream: axum::body::BodyDataStream) {
    let mut drained = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        drained += chunk.len() as u64;
        if drained > DRAIN_BYTES_MAX {
            return;
        }
    }
}

/// Unpacks an uploaded tar stream into the spool at `path` and adds the tree as `huds add DIR` adds a local one.
/// The unpack and the add run on one blocking thread that owns the spool directory, so the directory is removed
/// when they end, even if the client went away meanwhile.
async fn unpack_and_add(
    api: &Api,
    spool: SpoolDir,
    path: PathBuf,
    body: Body,
    opts: AddOptions,
    ask: Option<DealAsk>,
) -> Result<Json<Value>, ApiError> {
    let (tx, rx) = mpsc::channel(UPLOAD_CHUNKS_IN_FLIGHT);
    let node = api.node.clone();
    let rt = Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let _spool = spool;
        std::fs::create_dir(&path).map_err(spool_error)?;
        let reader = BodyReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        // `reader` is consumed here: the pump then drains the rest of the body while the add runs.
        tree::unpack(reader, &path, TREE_LIMITS, &mut |_| {}).map_err(tree_error)?;
        let sink = NetShardSink::new(node.clone(), rt);
        add_with(node.store(), &sink, Source::Path(&path), &opts, &mut |_| {})
            .map(|a| (a, sink.placement()))
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
    });
    pump(body, tx).await;
    let (added, placement) = task.await.map_err(internal)??;
    Ok(Json(
        answer(&api.node, &added, &placement, &opts, ask).await,
    ))
}

/// The answer to an add: the file, and when the client asked for a deal, its terms and every holder's
/// signature (hex), for the client to open with its own key, or why the holders could not be brought to sign
/// (the file is stored either way).
async fn answer(
    node: &NodeHandle,
    added: &Added,
    placement: &Placement,
    opts: &AddOptions,
    ask: Option<DealAsk>,
) -> Value {
    let mut v = json!({ "cid": added.root.to_string(), "cap": added.capability.to_text(), "size": added.size });
    if let Some(ask) = ask {
        match deals::gather(
            node,
            added,
            opts.public,
            (opts.k, opts.m),
            &placement.shards,
            &ask,
        )
        .await
        {
            Ok((terms, signatures)) => {
                v["deal"] = json!({
                    "terms": chain::hex(&terms.encode()),
                    "signatures": signatures.iter().map(|s| chain::hex(&s.0)).collect::<Vec<_>>(),
                });
            }
            Err(e) => v["deal_error"] = e.into(),
        }
    }
    v
}

/// The deal an add's query asks for, if any: all of `deal_owner`, `chain_id`, `deal_periods` and
/// `deal_price` (base units per GiB per period), or none.
fn deal_ask(q: &AddQuery) -> Result<Option<DealAsk>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    match (&q.deal_owner, q.chain_id, q.deal_periods, q.deal_price) {
        (None, None, None, None) => Ok(None),
        (Some(owner), Some(chain_id), Some(periods), Some(price)) => Ok(Some(DealAsk {
            chain_id,
            owner: owner
                .parse()
                .map_err(|e| bad(format!("deal_owner {owner:?} is not an address: {e}")))?,
            periods,
            price: chain::Amount(price),
        })),
        _ => Err(bad(
            "a deal needs deal_owner, chain_id, deal_periods and deal_price together".into(),
        )),
    }
}

/// The answer to an upload the node has no room to spool: 507, saying so in words.
fn no_room(e: &io::Error) -> ApiError {
    ApiError(
        StatusCode::INSUFFICIENT_STORAGE,
        format!(
            "the node's disk is full: the upload does not fit in its spool ({e}); nothing was kept. Free space on \
             the node or upload less"
        ),
    )
}

/// A spool write that failed: 507 when the disk is full, else an internal error.
fn spool_error(e: io::Error) -> ApiError {
    if e.kind() == io::ErrorKind::StorageFull {
        no_room(&e)
    } else {
        internal(format!("spooling the upload: {e}"))
    }
}

fn tree_error(e: TreeError) -> ApiError {
    let code = match &e {
        TreeError::Io { source, .. } if e.disk_full() => return no_room(source),
        TreeError::TooManyEntries(_) | TreeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        TreeError::Io { .. } | TreeError::Output(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError(code, format!("the tree upload: {e}"))
}

async fn spool_and_add(
    api: &Api,
    path: &std::path::Path,
    body: Body,
    opts: AddOptions,
    ask: Option<DealAsk>,
) -> Result<Json<Value>, ApiError> {
    let mut file = tokio::fs::File::create(path).await.map_err(spool_error)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")))?;
        if let Err(e) = file.write_all(&chunk).await {
            // The spool is freed before the rest is read and dropped, so a client still sending gets the answer
            // rather than a reset, and a full disk is not kept full meanwhile.
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
            drain(stream).await;
            return Err(spool_error(e));
        }
    }
    file.flush().await.map_err(spool_error)?;
    drop(file);
    let (added, placement) = add_placed(&api.node, path.to_path_buf(), opts)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(
        answer(&api.node, &added, &placement, &opts, ask).await,
    ))
}

/// Adds a file or a tree already on disk, its shards placed over the network: what the add route and the
/// gateway's directory uploads share.
pub async fn add_path(
    node: &NodeHandle,
    path: PathBuf,
    opts: AddOptions,
) -> Result<Added, AddError> {
    add_placed(node, path, opts).await.map(|(a, _)| a)
}

/// [`add_path`], and where the shards went.
async fn add_placed(
    node: &NodeHandle,
    path: PathBuf,
    opts: AddOptions,
) -> Result<(Added, Placement), AddError> {
    let node = node.clone();
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let sink = NetShardSink::new(node.clone(), rt);
        add_with(node.store(), &sink, Source::Path(&path), &opts, &mut |_| {})
            .map(|a| (a, sink.placement()))
    })
    .await
    .unwrap_or_else(|e| Err(AddError::Network(format!("the add task failed: {e}"))))
}

#[derive(Deserialize)]
struct Target {
    arg: String,
}

#[derive(Deserialize)]
struct RmQuery {
    arg: String,
    /// Only check that `arg` is pinned here.
    #[serde(default)]
    dry: bool,
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
    stream_file(reader, cid, size)
}

/// Streams a chunked body from a blocking writer: `write` writes into the channel; its error, once the status
/// line is gone, cuts the body short so the client sees an error rather than a short file.
fn stream_body(
    write: impl FnOnce(&mut ChannelWriter) -> Result<(), String> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(STREAM_CHUNK_BYTES),
        };
        let r = write(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(io::Error::other(e)));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

fn stream_file(reader: Reader, cid: cid::Cid, size: u64) -> Result<Response, ApiError> {
    let body = stream_body(move |w| reader.cat(&cid, w).map(|_| ()).map_err(|e| e.to_string()));
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .header("x-huds-cid", cid.to_string())
        .body(body)
        .map_err(internal)
}

/// `GET /api/v0/get`: a file as `cat` streams it, a directory as a tar stream (`huds_net::tree::pack_dag`), a
/// symlink as its target's bytes (`inode/symlink`), for the client to make the link.
/// `x-huds-cid` names what the target resolved to; for a whole stored tree `x-huds-size` gives its file bytes.
async fn get_route(
    State(api): State<Arc<Api>>,
    Query(t): Query<Target>,
) -> Result<Response, ApiError> {
    let node = api.node.clone();
    let rt = Handle::current();
    let arg = t.arg.clone();
    let (reader, cid, kind, size) = tokio::task::spawn_blocking(move || {
        let (reader, cid) = open(&node, rt, &arg)?;
        let (kind, size) = reader.stat(&cid)?;
        Ok::<_, ReadError>((reader, cid, kind, size))
    })
    .await
    .map_err(internal)??;
    match kind {
        EntryKind::File => stream_file(reader, cid, size),
        EntryKind::Symlink => {
            // The link itself, not followed, as a local `huds get` writes it: its target is the body.
            let target = tokio::task::spawn_blocking(move || {
                tree::symlink_target(&reader, &cid, &t.arg).map(String::into_bytes)
            })
            .await
            .map_err(internal)??;
            Response::builder()
                .header("content-type", SYMLINK_CONTENT_TYPE)
                .header("content-length", target.len())
                .header("x-huds-cid", cid.to_string())
                .body(Body::from(target))
                .map_err(internal)
        }
        EntryKind::Directory => {
            let whole = (cid == reader.root()).then(|| reader.manifest().size);
            let body = stream_body(move |w| {
                tree::pack_dag(&reader, &cid, w)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            let mut resp = Response::builder()
                .header("content-type", TAR_CONTENT_TYPE)
                .header("x-huds-cid", cid.to_string());
            if let Some(size) = whole {
                resp = resp.header("x-huds-size", size);
            }
            resp.body(body).map_err(internal)
        }
    }
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

/// `GET /api/v0/block`: sealed bytes by CID, for a client that opens the DAG itself (`huds mount --api`).
async fn block(State(api): State<Arc<Api>>, Query(t): Query<Target>) -> Result<Response, ApiError> {
    let cid =
        huds::cids::parse(&t.arg).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let store = api.node.store().clone();
    let local = tokio::task::spawn_blocking(move || match store.manifest(&cid)? {
        Some(m) => Ok(Some(m)),
        None => store.shard(&cid),
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let bytes = match local {
        Some(b) => b,
        None => {
            let source = NetShardSource::new(api.node.clone(), Handle::current());
            match source.fetch_async(cid).await {
                Ok(b) => b,
                Err(ShardProblem::Missing) => {
                    return Err(ApiError(
                        StatusCode::NOT_FOUND,
                        format!("no peer holds {cid}"),
                    ));
                }
                Err(p) => return Err(ApiError(StatusCode::BAD_GATEWAY, format!("{cid}: {p:?}"))),
            }
        }
    };
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.len())
        .body(Body::from(bytes))
        .map_err(internal)
}

/// `GET /api/v0/resolve`: the capability of a public file held here, so a client can open it itself.
async fn resolve(
    State(api): State<Arc<Api>>,
    Query(t): Query<Target>,
) -> Result<Json<Value>, ApiError> {
    let cid =
        huds::cids::parse(&t.arg).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let store = api.node.store().clone();
    let cap = tokio::task::spawn_blocking(move || store.public_capability(&cid))
        .await
        .map_err(internal)?
        .map_err(internal)?
        .ok_or(ReadError::UnknownCid(cid))?;
    Ok(Json(json!({ "cid": cid.to_string(), "cap": cap })))
}

/// `huds rm` through the node: unpins what this node added (its shards that nothing else holds go with it).
async fn rm(
    State(api): State<Arc<Api>>,
    Query(t): Query<RmQuery>,
) -> Result<Json<Value>, ApiError> {
    let (store, node) = (api.node.store().clone(), api.node.clone());
    tokio::task::spawn_blocking(move || {
        if t.dry {
            // Only whether it would be removed: the CLI asks before it ends the file's deal.
            let (cap, root) = huds::read::pinned(&store, t.arg.trim())?;
            return Ok(Json(
                json!({ "cid": root.to_string(), "manifest": cap.manifest.to_string() }),
            ));
        }
        let r = huds::remove(&store, t.arg.trim())?;
        if r.unpinned.deleted > 0 {
            node.recount_storage().map_err(internal)?;
        }
        Ok(Json(removed_json(&r)))
    })
    .await
    .map_err(internal)?
}

#[derive(Deserialize)]
struct PinsQuery {
    /// Also give each pin's capability.
    #[serde(default)]
    caps: bool,
}

/// `huds pins` through the node: what it added, capabilities only when asked.
async fn pins(
    State(api): State<Arc<Api>>,
    Query(q): Query<PinsQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = api.node.store().clone();
    tokio::task::spawn_blocking(move || Ok(Json(pins_json(&huds::read::pins(&store)?, q.caps))))
        .await
        .map_err(internal)?
}

/// What `huds pins --json` prints, locally or through a node.
pub fn pins_json(pins: &[huds::read::PinListing], caps: bool) -> Value {
    let list: Vec<Value> = pins
        .iter()
        .map(|p| {
            let mut v = json!({
                "cid": p.root.map(|c| c.to_string()),
                "manifest": p.manifest.to_string(),
                "name": p.name,
                "size": p.size,
                "added": huds::read::utc_text(p.added_unix_s),
                "public": p.public,
            });
            if caps {
                v["cap"] = json!(p.cap);
            }
            if let Some(e) = &p.error {
                v["error"] = json!(e);
            }
            v
        })
        .collect();
    json!({ "pins": list })
}

/// What `huds rm --json` prints of a removal, locally or through a node.
pub fn removed_json(r: &huds::Removed) -> Value {
    json!({
        "cid": r.root.to_string(),
        "manifest": r.manifest.to_string(),
        "name": r.unpinned.pin.name,
        "size": r.unpinned.pin.size,
        "shards": r.unpinned.shards,
        "deleted": r.unpinned.deleted,
    })
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
    // The deals this node signed and still proves (its account is where they pay).
    let held = match api
        .node
        .deal_signer()
        .and_then(|s| Some((s.held_dir()?.to_path_buf(), s.public_key()?)))
    {
        Some((dir, key)) => {
            let held = tokio::task::spawn_blocking(move || crate::prover::held_deals(&dir, &key))
                .await
                .map_err(internal)?
                .map_err(internal)?
                .0;
            let deals: Vec<Value> = held
                .iter()
                .map(|d| json!({ "id": chain::hex(&d.id), "holder": d.holder }))
                .collect();
            Some((chain::Address::of(&key).to_string(), deals))
        }
        None => None,
    };
    let (account, deals) = held.unzip();
    Ok(Json(json!({
        "account": account,
        "deals": deals,
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
