//! What a request can fail with, and the HTTP status each failure answers.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use huds::ReadError;
use serde_json::json;

use crate::path::PathError;
use crate::range::RangeError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "the content could not be rebuilt within {0:?}: its shards are missing or their nodes are slow"
    )]
    Timeout(Duration),
    #[error(
        "a valid bearer token is required (Authorization: Bearer <token from the node's config.toml>)"
    )]
    Unauthorized,
    #[error("uploads are disabled on this gateway: it has no API token configured")]
    UploadsDisabled,
    #[error("{error} (the representation has {size} bytes)")]
    Range { error: RangeError, size: u64 },
    #[error("too many responses in progress; try again shortly")]
    Busy,
    #[error("{0}")]
    NotFound(String),
    #[error("only GET and HEAD are served here")]
    Method,
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Path(PathError::TooLong) => StatusCode::URI_TOO_LONG,
            GatewayError::Path(PathError::NotContent) | GatewayError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            GatewayError::Path(_) | GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Read(e) => read_status(e),
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::UploadsDisabled => StatusCode::FORBIDDEN,
            GatewayError::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            GatewayError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Method => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn read_status(e: &ReadError) -> StatusCode {
    match e {
        ReadError::Capability(_)
        | ReadError::Cid(_)
        | ReadError::ManifestOpen(_)
        | ReadError::IsDirectory(_)
        | ReadError::NotSymlink(_)
        | ReadError::BadName(_) => StatusCode::BAD_REQUEST,
        ReadError::UnknownCid(_)
        | ReadError::ManifestMissing(_)
        | ReadError::NoEntry(_)
        | ReadError::NotDirectory(_)
        | ReadError::NotPinned(_) => StatusCode::NOT_FOUND,
        ReadError::Segment(_) => StatusCode::GATEWAY_TIMEOUT,
        // Stored content that does not check out: the fault is upstream of the gateway, not the client's.
        ReadError::BlockMissing(_)
        | ReadError::BlockCorrupt(_)
        | ReadError::Decode { .. }
        | ReadError::Sizes(_)
        | ReadError::TooDeep
        | ReadError::Manifest(_) => StatusCode::BAD_GATEWAY,
        ReadError::Io { .. } | ReadError::Output(_) | ReadError::Store(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, Json(json!({ "error": self.to_string() }))).into_response();
        let headers = resp.headers_mut();
        match &self {
            GatewayError::Range { size, .. } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            GatewayError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"huds\""),
                );
            }
            GatewayError::Method => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        resp
    }
}
