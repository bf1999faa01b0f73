//! The HUDS HTTP gateway: how browsers, `curl`, IPFS HTTP clients and web apps use HUDS.
//!
//! - Path gateway: `GET/HEAD /huds/<CID|capability>[/path]` and `/ipfs/<CID>[/path]` with content types,
//!   `ETag` = the CID, immutable caching, byte ranges (single and multipart), `index.html` or a paged listing
//!   for directories. Bodies stream segment by segment from a blocking reader through a bounded channel.
//! - Trustless responses: `?format=raw` / `?format=car` (or the `Accept` types), and
//!   `/routing/v1/providers/<CID>`.
//! - Uploads: `POST /api/v0/add` behind the node's bearer token; a raw body goes to the node API's add route,
//!   a multipart body becomes a directory.
//! - Status: `/api/v0/status` (JSON), the live page at `/`, Prometheus metrics at `/metrics`.
//!
//! See `specs/gateway.md` for the normative description.

mod cache;
mod car;
mod conn;
mod content;
mod error;
mod listing;
mod metrics;
mod path;
mod range;
mod serve;
mod status;
mod stream;
mod upload;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use cid::Cid;
use huds::read::{SegmentFetch, ShardProblem, ShardSource};
use huds::{AddOptions, Capability, ReadError, Reader};
use huds_net::NodeHandle;
use huds_net::api::Api;
use tokio::sync::Semaphore;

pub use conn::ServeOptions;
pub use error::GatewayError;
pub use metrics::Metrics;
pub use status::{
    BlockSummary, ChainStatus, ChainStatusSource, CommitteeMember, ShardChain, ShardEconomy,
    ValidatorRow,
};

use cache::Lru;
use serve::Entity;

/// Readers kept open (each with its decoded segments and two decoder threads).
const READERS_CACHED_MAX: usize = 16;
/// Decoded segments one reader keeps at most, so a hot file of 256 MiB (64 segments of content, one more for
/// its DAG nodes) is served without decoding again. A cache even one segment short of a file would miss on
/// every sequential read (LRU over a scan).
const SEGMENTS_CACHED_PER_READER_MAX: usize = 72;
/// What all open readers' decoded segments may weigh together.
const READERS_BYTES_BUDGET: u64 = 512 * 1024 * 1024;
/// Resolved paths remembered.
const ENTITIES_CACHED_MAX: usize = 4096;
/// Files up to this size are kept whole in the entity cache.
const SMALL_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Bytes of small files the entity cache may hold.
const SMALL_FILES_BYTES_BUDGET: u64 = 64 * 1024 * 1024;
/// Responses streaming from readers at once; more are answered 503.
const STREAMS_MAX: usize = 256;
/// How long opening, resolving and rebuilding may take before the answer is 504.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a gateway serves with.
pub struct GatewayConfig {
    /// The node whose store and network the gateway reads through and adds to.
    pub node: NodeHandle,
    /// Nodes running in this process (a devnet's), whose stores the status reports; `node` is reported anyway.
    pub local_nodes: Vec<NodeHandle>,
    /// The bearer token uploads need; `None` turns uploads off.
    pub token: Option<String>,
    /// Where uploads are spooled before they are added.
    pub spool: PathBuf,
    /// Add options (k, m, segment size) when an upload names none.
    pub defaults: AddOptions,
    /// The chain's status, once a chain runtime runs beside the node.
    pub chain: Option<Arc<dyn ChainStatusSource>>,
}

/// A running gateway's shared state; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: GatewayConfig,
    metrics: Arc<Metrics>,
    readers: std::sync::Mutex<Lru<String, Arc<Reader>>>,
    entities: std::sync::Mutex<Lru<String, Arc<Entity>>>,
    streams: Arc<Semaphore>,
    api: Router,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig) -> Gateway {
        let api = huds_net::api::router(Api {
            node: cfg.node.clone(),
            spool: cfg.spool.clone(),
            defaults: cfg.defaults,
        });
        Gateway {
            inner: Arc::new(Inner {
                cfg,
                metrics: Arc::new(Metrics::default()),
                readers: std::sync::Mutex::new(Lru::new(READERS_CACHED_MAX, READERS_BYTES_BUDGET)),
                entities: std::sync::Mutex::new(Lru::new(
                    ENTITIES_CACHED_MAX,
                    SMALL_FILES_BYTES_BUDGET,
                )),
                streams: Arc::new(Semaphore::new(STREAMS_MAX)),
                api,
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn node(&self) -> &NodeHandle {
        &self.inner.cfg.node
    }

    /// Opens (or finds open) the reader for a root given as CID or capability text. Blocking.
    fn reader(&self, root: &str) -> Result<Arc<Reader>, ReadError> {
        if let Some(r) = self.lock_readers().get(root) {
            return Ok(r.clone());
        }
        let store = self.node().store();
        let cap: Capability = huds::resolve_capability(store, root)?;
        let source = Arc::new(CountingSource {
            inner: huds_net::NetShardSource::new(
                self.node().clone(),
                tokio::runtime::Handle::current(),
            ),
            metrics: self.inner.metrics.clone(),
        });
        let reader = Reader::open_with(store, source, &cap)?;
        // A reader weighs what its segment cache may hold: a small file's little, a large hot file's more.
        let segments = reader
            .manifest()
            .segments
            .len()
            .clamp(1, SEGMENTS_CACHED_PER_READER_MAX);
        let weight = segments as u64 * u64::from(reader.manifest().segment_bytes_max);
        let reader = Arc::new(reader.with_cached_segments(segments));
        // An evicted reader joins its decoder threads when dropped: this runs on a blocking thread.
        let evicted = self
            .lock_readers()
            .insert(root.to_string(), reader.clone(), weight);
        drop(evicted);
        Ok(reader)
    }

    /// A slot for one more streamed body, or Busy when every slot is taken.
    fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, GatewayError> {
        self.inner
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| GatewayError::Busy)
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Lru<String, Arc<Reader>>> {
        self.inner
            .readers
            .lock()
            .expect("the reader cache lock is never poisoned")
    }

    fn lock_entities(&self) -> std::sync::MutexGuard<'_, Lru<String, Arc<Entity>>> {
        self.inner
            .entities
            .lock()
            .expect("the entity cache lock is never poisoned")
    }

    /// Runs blocking read work with the resolve timeout; a timeout answers 504.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, GatewayError> + Send + 'static,
    ) -> Result<T, GatewayError> {
        let task = tokio::task::spawn_blocking(f);
        match tokio::time::timeout(RESOLVE_TIMEOUT, task).await {
            Err(_) => Err(GatewayError::Timeout(RESOLVE_TIMEOUT)),
            Ok(Err(e)) => Err(GatewayError::Internal(format!("a read task failed: {e}"))),
            Ok(Ok(r)) => r,
        }
    }
}

/// The network shard source, counted for `/metrics`.
struct CountingSource {
    inner: huds_net::NetShardSource,
    metrics: Arc<Metrics>,
}

impl CountingSource {
    fn count(&self, r: &Result<Vec<u8>, ShardProblem>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.shard_fetches.fetch_add(1, Relaxed);
        if r.is_err() {
            self.metrics.shard_fetch_failures.fetch_add(1, Relaxed);
        }
    }
}

impl ShardSource for CountingSource {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, ShardProblem> {
        let r = self.inner.fetch(cid);
        self.count(&r);
        r
    }

    fn fetch_segment(&self, cids: &[Cid], k: usize, shard_len: usize) -> SegmentFetch {
        let rs = self.inner.fetch_segment(cids, k, shard_len);
        rs.iter().flatten().for_each(|r| self.count(r));
        rs
    }
}

/// The gateway's routes.
pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/", get(status::page))
        .route("/metrics", get(status::metrics))
        .route("/api/v0/status", get(status::status))
        .route("/api/v0/status/file", get(status::file))
        .route("/api/v0/add", post(upload::add))
        .route("/api/v0/{*rest}", axum::routing::any(upload::forward))
        .route("/routing/v1/providers/{cid}", get(serve::providers))
        .fallback(serve::content)
        .layer(middleware::from_fn_with_state(gw.clone(), record))
        .with_state(gw)
}

/// Counts every answer and the time to its head.
async fn record(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let resp = next.run(req).await;
    gw.metrics().record(resp.status().as_u16(), start.elapsed());
    resp
}

/// The node API (`huds_net::api`) with its add, rm and pins routes behind `token`: what `huds node` and `huds devnet`
/// serve on their API address, so uploads need the token there as on the gateway.
pub fn protected_api(api: Api, token: Option<String>) -> Router {
    huds_net::api::router(api).layer(middleware::from_fn_with_state(Arc::new(token), guard_add))
}

async fn guard_add(State(token): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    if matches!(
        req.uri().path(),
        "/api/v0/add" | "/api/v0/rm" | "/api/v0/pins"
    ) && let Err(e) = upload::authorize(token.as_deref(), req.headers())
    {
        return axum::response::IntoResponse::into_response(e);
    }
    next.run(req).await
}

/// Serves the protected node API on `listener` until the task is dropped.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    api: Api,
    token: Option<String>,
) -> io::Result<()> {
    axum::serve(listener, protected_api(api, token)).await
}

/// Serves the gateway on `listener` until the task is dropped, with the default connection bounds.
pub async fn serve(listener: tokio::net::TcpListener, gw: Gateway) -> io::Result<()> {
    serve_with(listener, gw, ServeOptions::default()).await
}

/// Serves the gateway on `listener` with the given connection cap and idle timeout.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    gw: Gateway,
    opts: ServeOptions,
) -> io::Result<()> {
    axum::serve(conn::Guarded::new(listener, opts), router(gw)).await
}
