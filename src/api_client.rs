//! The CLI over a running node's HTTP API (`--api URL`).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

fn url(api: &str, path: &str) -> String {
    format!("{}{path}", api.trim_end_matches('/'))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn check(resp: &mut ureq::http::Response<ureq::Body>, what: &str) -> Result<()> {
    if resp.status().is_success() {
        return Ok(());
    }
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    bail!("{what}: the node answered {}: {msg}", resp.status())
}

fn unreachable(api: &str) -> impl FnOnce(ureq::Error) -> anyhow::Error + '_ {
    move |e| {
        anyhow::anyhow!(
            "cannot reach the node API at {api} ({e}): is `huds node` or `huds devnet` running?"
        )
    }
}

fn token_hint(token: Option<&str>) -> &'static str {
    if token.is_some() {
        "the node refused the token: use the [api] token from the node's config.toml (or HUDS_API_TOKEN)"
    } else {
        "the node wants a token: set HUDS_API_TOKEN or pass --data with the node's home"
    }
}

/// Uploads a file (or standard input) and returns the node's answer.
pub fn add(
    api: &str,
    token: Option<&str>,
    path: &Path,
    public: bool,
    k: Option<u8>,
    m: Option<u8>,
) -> Result<Value> {
    let mut query = format!("/api/v0/add?public={public}");
    if let Some(k) = k {
        query.push_str(&format!("&k={k}"));
    }
    if let Some(m) = m {
        query.push_str(&format!("&m={m}"));
    }
    let stdin = path == Path::new("-");
    if !stdin {
        if path.is_dir() {
            bail!(
                "{}: adding a directory through --api is not supported yet; add it on the node's home",
                path.display()
            );
        }
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            query.push_str(&format!("&name={}", encode(name)));
        }
    }
    let mut input: Box<dyn Read> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
    };
    let mut req = ureq::post(url(api, &query));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut resp = req
        .config()
        .http_status_as_error(false)
        .build()
        .send(ureq::SendBody::from_reader(&mut input))
        .map_err(|e| match &e {
            // The node answers a bad or missing token at once and closes without reading the body.
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                anyhow::anyhow!(
                    "the node closed the upload before reading it: most likely {} (or the node stopped)",
                    token_hint(token)
                )
            }
            _ => unreachable(api)(e),
        })?;
    if resp.status() == 401 {
        bail!("add: {}", token_hint(token));
    }
    check(&mut resp, "add")?;
    serde_json::from_reader(resp.body_mut().as_reader()).context("the node's answer is not JSON")
}

fn get(api: &str, path: &str) -> Result<ureq::http::Response<ureq::Body>> {
    let mut resp = ureq::get(url(api, path))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(unreachable(api))?;
    check(&mut resp, path.split('?').next().unwrap_or(path))?;
    Ok(resp)
}

/// A binary answer (a proof, a trust file), at most `limit_bytes`.
pub fn bytes(api: &str, path: &str, limit_bytes: u64) -> Result<Vec<u8>> {
    let mut resp = get(api, path)?;
    resp.body_mut()
        .with_config()
        .limit(limit_bytes)
        .read_to_vec()
        .context("reading the node's answer")
}

/// Streams a file's bytes into `out`.
pub fn cat(api: &str, target: &str, out: &mut dyn Write) -> Result<u64> {
    let mut resp = get(api, &format!("/api/v0/cat?arg={}", encode(target)))?;
    let expected: Option<u64> = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let n = std::io::copy(&mut resp.body_mut().as_reader(), out)
        .context("reading the file from the node")?;
    if expected.is_some_and(|e| e != n) {
        bail!("the node stopped after {n} bytes: the file could not be rebuilt");
    }
    Ok(n)
}

pub fn json(api: &str, path: &str) -> Result<Value> {
    let mut resp = get(api, path)?;
    serde_json::from_reader(resp.body_mut().as_reader()).context("the node's answer is not JSON")
}

pub fn ls(api: &str, target: &str) -> Result<Value> {
    json(api, &format!("/api/v0/ls?arg={}", encode(target)))
}
