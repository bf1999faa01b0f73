//! The path gateway: resolve a content path, answer with a file (whole, one range or several), a directory's
//! `index.html` or listing, a raw block or a CAR, with the caching headers of immutable content.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use huds::BlockStore;
use huds::ReadError;
use huds::read::EntryKind;
use serde_json::json;

use crate::content::content_type;
use crate::error::GatewayError;
use crate::path::{self, ContentPath, percent_decode};
use crate::range::{self, Ranges};
use crate::stream::body_from_blocking;
use crate::{Gateway, SMALL_FILE_BYTES_MAX, car, listing};

/// Bytes of a file read to guess its content type.
const SNIFF_BYTES: u64 = 512;
/// Longest query string accepted.
const QUERY_BYTES_MAX: usize = 2048;
pub const IMMUTABLE_PUBLIC: &str = "public, max-age=29030400, immutable";
pub const IMMUTABLE_PRIVATE: &str = "private, max-age=29030400, immutable";

/// What a content path resolved to, kept in the gateway's entity cache.
pub enum Entity {
    File {
        cid: Cid,
        size: u64,
        content_type: &'static str,
        /// The whole file when it is small.
        body: Option<Bytes>,
        /// Whether this is a directory's `index.html`.
        index_of_directory: bool,
    },
    Directory {
        cid: Cid,
    },
}

impl Entity {
    fn weight(&self) -> u64 {
        match self {
            Entity::File { body: Some(b), .. } => b.len() as u64,
            _ => 0,
        }
    }

    fn is_directory(&self) -> bool {
        matches!(
            self,
            Entity::Directory { .. }
                | Entity::File {
                    index_of_directory: true,
                    ..
                }
        )
    }
}

/// The query parameters the gateway reads.
#[derive(Default)]
pub struct Query {
    pub format: Option<String>,
    pub dag_scope: Option<String>,
    pub entity_bytes: Option<String>,
    pub page: Option<String>,
}

fn parse_query(q: Option<&str>) -> Result<Query, GatewayError> {
    let mut out = Query::default();
    let Some(q) = q else { return Ok(out) };
    if q.len() > QUERY_BYTES_MAX {
        return Err(GatewayError::BadRequest(format!(
            "the query string is longer than {QUERY_BYTES_MAX} bytes"
        )));
    }
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "format" => out.format = Some(v),
            "dag-scope" => out.dag_scope = Some(v),
            "entity-bytes" => out.entity_bytes = Some(v),
            "page" => out.page = Some(v),
            _ => {}
        }
    }
    Ok(out)
}

enum Format {
    Plain,
    Raw,
    Car,
}

fn format(q: &Query, headers: &HeaderMap) -> Result<Format, GatewayError> {
    match q.format.as_deref() {
        Some("raw") => return Ok(Format::Raw),
        Some("car") => return Ok(Format::Car),
        Some(other) => {
            return Err(GatewayError::BadRequest(format!(
                "format {other:?} is not served (raw and car are)"
            )));
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(if accept.contains("application/vnd.ipld.raw") {
        Format::Raw
    } else if accept.contains("application/vnd.ipld.car") {
        Format::Car
    } else {
        Format::Plain
    })
}

/// The fallback route: everything under `/huds/` and `/ipfs/`.
pub async fn content(State(gw): State<Gateway>, req: Request) -> Response {
    content_inner(gw, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn content_inner(gw: Gateway, req: Request) -> Result<Response, GatewayError> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(GatewayError::Method),
    };
    let path = path::parse(req.uri().path())?;
    let query = parse_query(req.uri().query())?;
    let headers = req.headers();
    match format(&query, headers)? {
        Format::Raw => raw(gw, path, headers, head).await,
        Format::Car => car::respond(gw, path, &query, headers, head).await,
        Format::Plain => plain(gw, path, &query, headers, head, req.uri().query()).await,
    }
}

pub fn cache_control(path: &ContentPath) -> &'static str {
    if path.root.starts_with("huds:") {
        IMMUTABLE_PRIVATE
    } else {
        IMMUTABLE_PUBLIC
    }
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for this header).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let bare = etag.trim_start_matches("W/");
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

/// The 304 answer.
pub fn not_modified_response(etag: &str, cache_control: &'static str) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    set(resp.headers_mut(), header::ETAG, etag);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    resp
}

/// The head of a trustless answer (a raw block or a CAR): its type, ETag and caching, no sniffing, and a
/// download name; the body is set by the caller.
pub fn trustless_response(
    content_type: &'static str,
    etag: &str,
    cache_control: &'static str,
    filename: &str,
) -> Response {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set(h, header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set(
        h,
        header::CONTENT_DISPOSITION,
        &format!("attachment; filename=\"{filename}\""),
    );
    resp
}

pub fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

async fn plain(
    gw: Gateway,
    path: ContentPath,
    query: &Query,
    headers: &HeaderMap,
    head: bool,
    raw_query: Option<&str>,
) -> Result<Response, GatewayError> {
    let key = format!("{}/{}", path.root, path.joined());
    let cached = gw.lock_entities().get(&key).cloned();
    let entity = match cached {
        Some(e) => {
            gw.metrics().cache_hits.fetch_add(1, Relaxed);
            e
        }
        None => {
            gw.metrics().cache_misses.fetch_add(1, Relaxed);
            let (g, p) = (gw.clone(), path.clone());
            let e = gw.blocking(move || resolve_entity(&g, &p)).await?;
            let evicted = gw.lock_entities().insert(key, e.clone(), e.weight());
            drop(evicted);
            e
        }
    };
    if entity.is_directory() && !path.trailing_slash {
        // Relative links in a directory page need the trailing slash.
        let mut location = format!(
            "/{}/{}/",
            match path.namespace {
                path::Namespace::Huds => "huds",
                path::Namespace::Ipfs => "ipfs",
            },
            path::encode_name(&path.root)
        );
        for name in &path.names {
            location.push_str(&path::encode_name(name));
            location.push('/');
        }
        if let Some(q) = raw_query {
            location.push('?');
            location.push_str(q);
        }
        let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
        set(resp.headers_mut(), header::LOCATION, &location);
        return Ok(resp);
    }
    match &*entity {
        Entity::Directory { cid } => {
            listing::respond(gw, path, *cid, query.page.as_deref(), headers, head).await
        }
        Entity::File { .. } => file(gw, path, entity, headers, head).await,
    }
}

/// Resolves a path to a file, a directory's index.html, or a directory. Blocking.
fn resolve_entity(gw: &Gateway, path: &ContentPath) -> Result<Arc<Entity>, GatewayError> {
    let reader = gw.reader(&path.root)?;
    let cid = reader.resolve(&reader.root(), &path.joined())?;
    let (kind, size) = reader.stat(&cid)?;
    let entity = match kind {
        EntryKind::File => file_entity(&reader, cid, size, path.file_name(), false)?,
        EntryKind::Directory => match reader.resolve(&cid, "index.html") {
            Ok(index) => match reader.stat(&index)? {
                (EntryKind::File, size) => {
                    file_entity(&reader, index, size, Some("index.html"), true)?
                }
                _ => Entity::Directory { cid },
            },
            Err(ReadError::NoEntry(_)) => Entity::Directory { cid },
            Err(e) => return Err(e.into()),
        },
        EntryKind::Symlink => {
            return Err(GatewayError::BadRequest(format!(
                "/{} is a symbolic link: the gateway does not follow links",
                path.joined()
            )));
        }
    };
    Ok(Arc::new(entity))
}

fn file_entity(
    reader: &huds::Reader,
    cid: Cid,
    size: u64,
    name: Option<&str>,
    index_of_directory: bool,
) -> Result<Entity, GatewayError> {
    let (head, body) = if size <= SMALL_FILE_BYTES_MAX {
        let mut all = Vec::with_capacity(size as usize);
        reader.read_file(&cid, 0..size, &mut all)?;
        if all.len() as u64 != size {
            return Err(ReadError::Sizes(cid).into());
        }
        let all = Bytes::from(all);
        (all.slice(..all.len().min(SNIFF_BYTES as usize)), Some(all))
    } else {
        let mut head = Vec::with_capacity(SNIFF_BYTES as usize);
        reader.read_file(&cid, 0..SNIFF_BYTES, &mut head)?;
        (Bytes::from(head), None)
    };
    Ok(Entity::File {
        cid,
        size,
        content_type: content_type(name, &head),
        body,
        index_of_directory,
    })
}

/// A piece of a response body: literal bytes (multipart headers) or a range of the file.
enum Part {
    Bytes(Bytes),
    File(std::ops::Range<u64>),
}

fn boundary() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn file(
    gw: Gateway,
    path: ContentPath,
    entity: Arc<Entity>,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let Entity::File {
        cid,
        size,
        content_type,
        body,
        ..
    } = &*entity
    else {
        return Err(GatewayError::Internal("not a file entity".into()));
    };
    let (cid, size, content_type) = (*cid, *size, *content_type);
    let etag = format!("\"{cid}\"");
    let cache_control = cache_control(&path);
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag, cache_control));
    }
    // If-Range with anything but our ETag (a date, another tag) means: send the whole representation.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag));
    let range_header = headers
        .get(header::RANGE)
        .filter(|_| if_range_ok)
        .map(|v| v.to_str().unwrap_or("malformed"));
    let ranges =
        range::parse(range_header, size).map_err(|error| GatewayError::Range { error, size })?;
    let mut resp = Response::new(Body::empty());
    let mut status = StatusCode::OK;
    let h = resp.headers_mut();
    set(h, header::ETAG, &etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path.namespace == path::Namespace::Ipfs {
        set(
            h,
            header::HeaderName::from_static("x-ipfs-path"),
            &format!("/ipfs/{}/{}", path.root, path.joined()),
        );
    }
    let parts = match ranges {
        Ranges::Full => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            vec![Part::File(0..size)]
        }
        Ranges::Partial(rs) if rs.len() == 1 => {
            status = StatusCode::PARTIAL_CONTENT;
            let r = &rs[0];
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            set(
                h,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{size}", r.start, r.end - 1),
            );
            vec![Part::File(r.clone())]
        }
        Ranges::Partial(rs) => {
            status = StatusCode::PARTIAL_CONTENT;
            let b = boundary();
            set(
                h,
                header::CONTENT_TYPE,
                &format!("multipart/byteranges; boundary={b}"),
            );
            let mut parts = Vec::with_capacity(rs.len() * 2 + 1);
            for (i, r) in rs.iter().enumerate() {
                let lead = if i == 0 { "" } else { "\r\n" };
                parts.push(Part::Bytes(Bytes::from(format!(
                    "{lead}--{b}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
                    r.start,
                    r.end - 1
                ))));
                parts.push(Part::File(r.clone()));
            }
            parts.push(Part::Bytes(Bytes::from(format!("\r\n--{b}--\r\n"))));
            parts
        }
    };
    let length: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => b.len() as u64,
            Part::File(r) => r.end - r.start,
        })
        .sum();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    *resp.status_mut() = status;
    if head {
        return Ok(resp);
    }
    *resp.body_mut() = match body {
        Some(all) => {
            let chunks: Vec<Bytes> = parts
                .into_iter()
                .map(|p| match p {
                    Part::Bytes(b) => b,
                    Part::File(r) => all.slice(r.start as usize..r.end as usize),
                })
                .collect();
            gw.metrics().sent(length as usize);
            Body::from_stream(futures::stream::iter(
                chunks.into_iter().map(Ok::<_, std::io::Error>),
            ))
        }
        None => stream_parts(&gw, &path, cid, parts).await?,
    };
    Ok(resp)
}

/// A piece of a decoded segment as the owner of a body chunk.
struct Piece(huds::read::Block);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Streams `parts` of the file `cid` from a reader thread.
async fn stream_parts(
    gw: &Gateway,
    path: &ContentPath,
    cid: Cid,
    parts: Vec<Part>,
) -> Result<Body, GatewayError> {
    let permit = gw.stream_permit()?;
    let cached = gw.lock_readers().get(&path.root).cloned();
    let reader = match cached {
        Some(r) => r,
        None => {
            let (g, root) = (gw.clone(), path.root.clone());
            gw.blocking(move || Ok(g.reader(&root)?)).await?
        }
    };
    Ok(body_from_blocking(
        gw.inner.metrics.clone(),
        permit,
        move |w| {
            for p in parts {
                match p {
                    Part::Bytes(b) => w.write_all(&b).map_err(|e| e.to_string())?,
                    Part::File(r) => {
                        // Each piece of a decoded segment goes out as it is, without a copy.
                        reader
                            .read_file_blocks(&cid, r, &mut |piece| {
                                w.send_bytes(Bytes::from_owner(Piece(piece)))
                                    .map_err(ReadError::Output)
                            })
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok(())
        },
    ))
}

/// `?format=raw`: the block at the end of the path.
async fn raw(
    gw: Gateway,
    path: ContentPath,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let g = gw.clone();
    let p = path.clone();
    let (cid, block) = gw
        .blocking(move || {
            let reader = g.reader(&p.root)?;
            let cid = reader.resolve(&reader.root(), &p.joined())?;
            let block = reader.block(&cid)?;
            Ok((cid, Bytes::copy_from_slice(&block)))
        })
        .await?;
    let etag = format!("\"{cid}.raw\"");
    let cache_control = cache_control(&path);
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag, cache_control));
    }
    let mut resp = trustless_response(
        "application/vnd.ipld.raw",
        &etag,
        cache_control,
        &format!("{cid}.bin"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(block.len()));
    if !head {
        gw.metrics().sent(block.len());
        *resp.body_mut() = Body::from(block);
    }
    Ok(resp)
}

/// `GET /routing/v1/providers/<cid>`: this gateway, for public content it can serve; else an empty list.
pub async fn providers(State(gw): State<Gateway>, UrlPath(cid): UrlPath<String>) -> Response {
    let cid = match huds::cids::parse(&cid) {
        Ok(c) => c,
        Err(e) => return GatewayError::BadRequest(e.to_string()).into_response(),
    };
    let store = gw.node().store().clone();
    let public = tokio::task::spawn_blocking(move || store.public_capability(&cid))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .is_some();
    let providers: Vec<_> = if public {
        vec![json!({
            "Schema": "peer",
            "ID": gw.node().peer_id().to_string(),
            "Addrs": [],
            "Protocols": ["transport-ipfs-gateway-http"],
        })]
    } else {
        Vec::new()
    };
    let mut resp = axum::Json(json!({ "Providers": providers })).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp
}
