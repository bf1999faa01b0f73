//! `POST /api/v0/add` behind the node's bearer token. A raw body is handed to the node API's add route
//! unchanged (one implementation of spooling and adding); a `multipart/form-data` body becomes a directory whose
//! files are the parts, named by their filenames (which may hold `/`-separated subdirectories).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use huds::AddOptions;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::Gateway;
use crate::error::GatewayError;
use crate::path::percent_decode;

/// Most files in one multipart upload.
const PARTS_MAX: usize = 10_000;
/// Most bytes in one multipart upload.
const UPLOAD_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Deepest subdirectory a part may name.
const PART_DEPTH_MAX: usize = 32;

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `Authorization: Bearer <token>`; without a configured token uploads are off.
pub fn authorize(token: Option<&str>, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(token) = token else {
        return Err(GatewayError::UploadsDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(GatewayError::Unauthorized)?;
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::Unauthorized)
    }
}

/// Calls the node API's router with the request as it came.
async fn call_api(gw: &Gateway, req: Request) -> Response {
    use tower_service::Service;
    let mut router = gw.inner.api.clone();
    let mut svc = router.as_service::<axum::body::Body>();
    if let Err(e) = futures::future::poll_fn(|cx| svc.poll_ready(cx)).await {
        match e {}
    }
    match svc.call(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

pub async fn add(State(gw): State<Gateway>, req: Request) -> Response {
    if let Err(e) = authorize(gw.inner.cfg.token.as_deref(), req.headers()) {
        return e.into_response();
    }
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let resp = match boundary {
        Some(b) => add_multipart(&gw, req, b)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        None => call_api(&gw, req).await,
    };
    if resp.status().is_success() {
        gw.metrics().uploads.fetch_add(1, Relaxed);
    }
    resp
}

/// The node API's read routes (cat, get, ls, id, node/status), served here as well. Nothing else is
/// forwarded: the node API's writes (`rm`) are for the node's own token holder, on its own API address.
pub async fn forward(State(gw): State<Gateway>, req: Request) -> Response {
    const READS: [&str; 5] = [
        "/api/v0/cat",
        "/api/v0/get",
        "/api/v0/ls",
        "/api/v0/id",
        "/api/v0/node/status",
    ];
    if !READS.contains(&req.uri().path()) {
        return axum::response::IntoResponse::into_response(GatewayError::NotFound(format!(
            "{} is not served by the gateway",
            req.uri().path()
        )));
    }
    call_api(&gw, req).await
}

fn options(gw: &Gateway, query: Option<&str>) -> Result<AddOptions, GatewayError> {
    let mut opts = gw.inner.cfg.defaults;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        let bad = || GatewayError::BadRequest(format!("{k}={v:?} is not valid"));
        match k {
            "public" => opts.public = v.parse().map_err(|_| bad())?,
            "k" => opts.k = v.parse().map_err(|_| bad())?,
            "m" => opts.m = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(opts)
}

/// The relative path a part names, checked name by name.
fn part_path(file_name: &str) -> Result<PathBuf, GatewayError> {
    let names: Vec<&str> = file_name.split('/').filter(|n| !n.is_empty()).collect();
    if names.is_empty() || names.len() > PART_DEPTH_MAX {
        return Err(GatewayError::BadRequest(format!(
            "part file name {file_name:?} must be 1 to {PART_DEPTH_MAX} names"
        )));
    }
    if let Some(bad) = names.iter().find(|n| !huds::unixfs::valid_name(n)) {
        return Err(GatewayError::BadRequest(format!(
            "part file name {file_name:?} holds the unsafe name {bad:?}"
        )));
    }
    Ok(names.iter().collect())
}

async fn add_multipart(
    gw: &Gateway,
    req: Request,
    boundary: String,
) -> Result<Response, GatewayError> {
    let opts = options(gw, req.uri().query())?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source is available");
    let spool = gw
        .inner
        .cfg
        .spool
        .join(format!("{:016x}", u64::from_le_bytes(id)));
    let root = spool.join("upload");
    let result = async {
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|e| GatewayError::Internal(format!("creating the spool: {e}")))?;
        let bytes = spool_parts(&root, req, boundary).await?;
        let added = huds_net::api::add_path(gw.node(), root.clone(), opts)
            .await
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        gw.metrics().upload_bytes.fetch_add(bytes, Relaxed);
        Ok(Json(json!({
            "cid": added.root.to_string(),
            "cap": added.capability.to_text(),
            "size": added.size,
        }))
        .into_response())
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&spool).await;
    result
}

/// Writes each file part under `root`; returns the bytes written.
async fn spool_parts(root: &Path, req: Request, boundary: String) -> Result<u64, GatewayError> {
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(UPLOAD_BYTES_MAX));
    let mut multipart = multer::Multipart::with_constraints(
        req.into_body().into_data_stream(),
        boundary,
        constraints,
    );
    let bad =
        |e: multer::Error| GatewayError::BadRequest(format!("reading the multipart body: {e}"));
    let io = |e: std::io::Error| GatewayError::BadRequest(format!("spooling the upload: {e}"));
    let (mut files, mut bytes) = (0usize, 0u64);
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        files += 1;
        if files > PARTS_MAX {
            return Err(GatewayError::BadRequest(format!(
                "more than {PARTS_MAX} files in one upload"
            )));
        }
        let rel = part_path(&name)?;
        let path = root.join(&rel);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            bytes += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
    }
    if files == 0 {
        return Err(GatewayError::BadRequest(
            "the multipart body holds no file part (each part needs a filename)".into(),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_checked() {
        assert_eq!(part_path("a/b.txt").ok(), Some(PathBuf::from("a/b.txt")));
        assert!(part_path("../x").is_err());
        assert!(part_path("a/./x").is_err());
        assert!(part_path("").is_err());
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
