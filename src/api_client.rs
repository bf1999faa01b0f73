//! The CLI over a running node's HTTP API (`--api URL`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use huds::read::{SegmentFetch, ShardProblem, ShardSource};
use indicatif::ProgressBar;
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

/// A directory's tar stream as a request body, written by a thread (`huds_net::tree::pack_dir`) into a pipe. The
/// end of the pipe is the end of the body only if the packer finished: if it failed (a special file, a file
/// that cannot be read), reading fails, so the request is broken off and the node never takes a partial tree.
struct TreeBody {
    pipe: std::io::PipeReader,
    done: std::sync::mpsc::Receiver<Result<(), String>>,
    failure: Arc<Mutex<Option<String>>>,
    bar: Option<ProgressBar>,
}

impl Read for TreeBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let outcome = self
            .done
            .recv()
            .unwrap_or_else(|_| Err("the tree packer stopped".into()));
        match outcome {
            Ok(()) => {
                if let Some(b) = &self.bar {
                    b.set_message("sent; the node is storing it");
                }
                Ok(0)
            }
            Err(e) => {
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(e.clone());
                }
                Err(std::io::Error::other(e))
            }
        }
    }
}

/// A file's bytes through to a progress bar.
struct CountingRead<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            if n == 0 && !buf.is_empty() {
                b.set_message("sent; the node is storing it");
            }
            b.inc(n as u64);
        }
        Ok(n)
    }
}

/// Uploads a file, a directory tree (as a tar stream) or standard input, and returns the node's answer.
/// How `add` asks the node to store: `-k`, `-m`, `--public`, and the deal to gather signatures for.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddParams {
    pub public: bool,
    pub k: Option<u8>,
    pub m: Option<u8>,
    pub deal: Option<huds_net::deals::DealAsk>,
}

pub fn add(
    api: &str,
    token: Option<&str>,
    path: &Path,
    params: AddParams,
    bar: Option<ProgressBar>,
) -> Result<Value> {
    let AddParams { public, k, m, deal } = params;
    let mut query = format!("/api/v0/add?public={public}");
    if let Some(d) = deal {
        query.push_str(&format!(
            "&deal_owner={}&chain_id={}&deal_periods={}&deal_price={}",
            d.owner, d.chain_id, d.periods, d.price.0
        ));
    }
    if let Some(k) = k {
        query.push_str(&format!("&k={k}"));
    }
    if let Some(m) = m {
        query.push_str(&format!("&m={m}"));
    }
    let stdin = path == Path::new("-");
    let tree = !stdin && path.is_dir();
    if tree {
        query.push_str("&format=tar");
    }
    if !stdin {
        // A tree's root has a name too (its pin shows it), as `huds add DIR` records locally.
        let name = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string));
        if let Some(name) = name {
            query.push_str(&format!("&name={}", encode(&name)));
        }
    }
    let failure = Arc::new(Mutex::new(None::<String>));
    let mut input: Box<dyn Read + Send> = if stdin {
        Box::new(std::io::stdin())
    } else if tree {
        let (pipe, writer) = std::io::pipe().context("making a pipe for the tree")?;
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let (dir, counter) = (path.to_path_buf(), bar.clone());
        std::thread::spawn(move || {
            let out = std::io::BufWriter::with_capacity(1 << 20, writer);
            let r = huds_net::tree::pack_dir(&dir, out, move |n| {
                if let Some(b) = &counter {
                    b.inc(n);
                }
            })
            .map_err(|e| e.to_string())
            .and_then(|w| {
                // Flushed and closed before the outcome is sent: the reader waits for it at the pipe's end.
                w.into_inner()
                    .map(drop)
                    .map_err(|e| format!("writing the tar stream: {}", e.error()))
            });
            let _ = done_tx.send(r);
        });
        Box::new(TreeBody {
            pipe,
            done,
            failure: failure.clone(),
            bar: bar.clone(),
        })
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Box::new(CountingRead {
            inner: file,
            bar: bar.clone(),
        })
    };
    let sent = bearer(ureq::post(url(api, &query)), token)
        .config()
        .http_status_as_error(false)
        .build()
        .send(ureq::SendBody::from_reader(&mut input));
    drop(input);
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        bail!("{e}");
    }
    let mut resp = sent.map_err(|e| match &e {
        // The node answers a bad or missing token at once and closes without reading the body; it also stops
        // reading a large upload it refused part way.
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            anyhow::anyhow!(
                "the node closed the upload before reading all of it: most likely {} (or the node refused the \
                 content, or stopped)",
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

/// What `get` saved.
pub struct Got {
    pub cid: String,
    pub path: PathBuf,
    pub kind: &'static str,
}

fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Removes a file or a tree left by an earlier, interrupted get.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// The name a get of `target` saves under when the node names no CID: the target's first component, or `out`
/// if that is not a plain name.
fn default_name(target: &str) -> String {
    let first = target.split('/').next().unwrap_or_default();
    if first.is_empty() || first == "." || first == ".." {
        "out".to_string()
    } else {
        first.to_string()
    }
}

/// Longest symlink target the CLI takes from a node: a block's worth, more than any file system keeps.
const SYMLINK_TARGET_BYTES_MAX: u64 = 1 << 20;

/// Saves a file, a tree or a symlink to `out` (default: its CID), through `OUT.huds-partial`, renamed when whole,
/// so an interrupted get leaves no half tree under the name asked for. `bar` makes a progress bar for a total.
pub fn get_to(
    api: &str,
    target: &str,
    out: Option<PathBuf>,
    bar: impl Fn(Option<u64>) -> Option<ProgressBar>,
) -> Result<Got> {
    let mut resp = get(api, &format!("/api/v0/get?arg={}", encode(target)))?;
    // The default name comes from the answer only if it is a CID (one plain name): a node must not choose
    // where on this machine the bytes land (`../x` or `/home/u/.bashrc`).
    let cid = header(&resp, "x-huds-cid")
        .and_then(|h| huds::cids::parse(h).ok())
        .map(|c| c.to_string())
        .unwrap_or_else(|| default_name(target));
    let out = out.unwrap_or_else(|| PathBuf::from(&cid));
    let mut partial = out.as_os_str().to_owned();
    partial.push(".huds-partial");
    let partial = PathBuf::from(partial);
    remove_any(&partial).with_context(|| format!("removing {}", partial.display()))?;
    let content_type = header(&resp, "content-type").map(str::to_string);
    let tree = content_type.as_deref() == Some(huds_net::api::TAR_CONTENT_TYPE);
    let symlink = content_type.as_deref() == Some(huds_net::api::SYMLINK_CONTENT_TYPE);
    let result = if symlink {
        // The link itself, as a local `huds get` makes it: never followed, its target byte for byte.
        resp.body_mut()
            .with_config()
            .limit(SYMLINK_TARGET_BYTES_MAX)
            .read_to_vec()
            .context("reading the symlink's target from the node")
            .and_then(|target| {
                String::from_utf8(target)
                    .context("the node sent a symlink target that is not UTF-8")
            })
            .and_then(|target| {
                std::os::unix::fs::symlink(&target, &partial).with_context(|| {
                    format!("making {} a symlink to {target:?}", partial.display())
                })
            })
    } else if tree {
        let total = header(&resp, "x-huds-size").and_then(|v| v.parse().ok());
        let bar = bar(total);
        let r = std::fs::create_dir(&partial)
            .with_context(|| format!("creating {}", partial.display()))
            .and_then(|()| {
                let mut progress = |n: u64| {
                    if let Some(b) = &bar {
                        b.inc(n);
                    }
                };
                let mut body = resp.body_mut().as_reader();
                huds_net::tree::unpack(
                    &mut body,
                    &partial,
                    huds_net::tree::Limits::NONE,
                    &mut progress,
                )
                .context("unpacking the tree from the node")?;
                // The rest is the archive's last padding; a node that failed part way breaks the body off, which
                // reading it to its end shows.
                std::io::copy(&mut body, &mut std::io::sink())
                    .context("the node broke off the tree")
                    .map(drop)
            });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        r
    } else {
        let total = header(&resp, "content-length").and_then(|v| v.parse().ok());
        let bar = bar(total);
        let r = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))
            .and_then(|file| {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                copy_body(&mut resp, total, &mut w, bar.as_ref())?;
                Ok(w.flush()?)
            });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        r
    };
    if let Err(e) = result {
        let _ = remove_any(&partial);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&partial, &out) {
        let _ = remove_any(&partial);
        return Err(e).with_context(|| format!("renaming into {}", out.display()));
    }
    Ok(Got {
        cid,
        path: out,
        kind: if symlink {
            "symlink"
        } else if tree {
            "directory"
        } else {
            "file"
        },
    })
}

/// Copies a file's body into `out`; a body shorter than its length means the node could not rebuild the file.
fn copy_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    expected: Option<u64>,
    out: &mut dyn Write,
    bar: Option<&ProgressBar>,
) -> Result<u64> {
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the file from the node"),
        };
        out.write_all(&buf[..got]).context("writing the file")?;
        n += got as u64;
        if let Some(b) = bar {
            b.inc(got as u64);
        }
    }
    if expected.is_some_and(|e| e != n) {
        bail!("the node stopped after {n} bytes: the file could not be rebuilt");
    }
    Ok(n)
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
    let expected = header(&resp, "content-length").and_then(|v| v.parse().ok());
    copy_body(&mut resp, expected, out, None)
}

/// The largest JSON answer taken from a node (a deal list of a busy account is the largest).
const JSON_BYTES_MAX: u64 = 64 * 1024 * 1024;

pub fn json(api: &str, path: &str) -> Result<Value> {
    json_body(&mut get(api, path)?, JSON_BYTES_MAX)
}

/// Unpins `target` on the node (`POST /api/v0/rm`, behind the upload token).
/// With `dry`, only asks whether the node would remove it (a bad token or an unknown target fails the same).
pub fn rm(api: &str, token: Option<&str>, target: &str, dry: bool) -> Result<Value> {
    let req = ureq::post(url(
        api,
        &format!("/api/v0/rm?arg={}&dry={dry}", encode(target)),
    ));
    let resp = bearer(req, token)
        .config()
        .http_status_as_error(false)
        .build()
        .send_empty()
        .map_err(unreachable(api))?;
    token_answer(resp, token, "rm")
}

/// `req` with the upload token as its bearer, when there is one.
fn bearer<B>(req: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => req.header("authorization", format!("Bearer {t}")),
        None => req,
    }
}

/// The JSON answer to a call behind the upload token; a refused token is named for `what`.
fn token_answer(
    mut resp: ureq::http::Response<ureq::Body>,
    token: Option<&str>,
    what: &str,
) -> Result<Value> {
    if resp.status() == 401 {
        bail!("{what}: {}", token_hint(token));
    }
    check(&mut resp, what)?;
    json_body(&mut resp, JSON_BYTES_MAX)
}

/// A JSON answer of at most `limit` bytes.
fn json_body(resp: &mut ureq::http::Response<ureq::Body>, limit: u64) -> Result<Value> {
    let body = resp
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .context("reading the node's answer")?;
    serde_json::from_slice(&body).context("the node's answer is not JSON")
}

/// What the node added (`GET /api/v0/pins`, behind the upload token), capabilities only with `caps`.
pub fn pins(api: &str, token: Option<&str>, caps: bool) -> Result<Value> {
    let req = ureq::get(url(api, &format!("/api/v0/pins?caps={caps}")));
    let resp = bearer(req, token)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(unreachable(api))?;
    token_answer(resp, token, "pins")
}

pub fn ls(api: &str, target: &str) -> Result<Value> {
    json(api, &format!("/api/v0/ls?arg={}", encode(target)))
}

/// The largest sealed manifest taken from a node: a manifest lists every block and shard of a file, about
/// 16 MiB for a 64 GiB file; more is refused as a broken answer.
const MANIFEST_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How long one request to the node may take, body included: a node that stalls fails the read (EIO in a
/// mount) instead of holding it, and the next shard of the segment is asked for.
const BLOCK_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The largest JSON answer taken from the node when resolving a public CID.
const RESOLVE_BYTES_MAX: u64 = 64 * 1024;

/// Shards and sealed manifests from a node's `GET /api/v0/block`: the node fetches them from the network, and
/// the file key never leaves this process, since the DAG is opened and decoded here. Every answer is bounded in
/// time and size and checked against the CID asked for; redirects are not followed.
pub struct HttpShardSource {
    api: String,
    agent: ureq::Agent,
}

impl HttpShardSource {
    pub fn new(api: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(BLOCK_REQUEST_TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        HttpShardSource {
            api: api.to_string(),
            agent,
        }
    }

    /// The capability of a public file the node holds (`GET /api/v0/resolve`). The caller checks that what it
    /// opens is the CID it asked for: the node is not trusted to answer truly.
    pub fn resolve_public(&self, cid: &str) -> Result<String> {
        let path = format!("/api/v0/resolve?arg={}", encode(cid));
        let mut resp = self
            .agent
            .get(url(&self.api, &path))
            .call()
            .map_err(unreachable(&self.api))?;
        check(&mut resp, "resolve")?;
        let v = json_body(&mut resp, RESOLVE_BYTES_MAX)?;
        v["cap"]
            .as_str()
            .map(str::to_string)
            .context("the node's answer names no capability")
    }

    /// The sealed bytes of `cid`, at most `limit` of them, checked against the CID.
    fn fetch_limited(&self, cid: &cid::Cid, limit: u64) -> Result<Vec<u8>, ShardProblem> {
        let path = format!("/api/v0/block?arg={cid}");
        let mut resp = self
            .agent
            .get(url(&self.api, &path))
            .call()
            .map_err(|e| ShardProblem::Failed(format!("node API at {}: {e}", self.api)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(ShardProblem::Missing),
            code => return Err(ShardProblem::Failed(format!("the node answered {code}"))),
        }
        if header(&resp, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit)
        {
            return Err(ShardProblem::Corrupt);
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| ShardProblem::Failed(format!("reading from the node: {e}")))?;
        match huds::cids::verify(cid, &bytes) {
            Ok(()) => Ok(bytes),
            Err(_) => Err(ShardProblem::Corrupt),
        }
    }
}

impl ShardSource for HttpShardSource {
    /// A sealed manifest (or any block the node serves), up to `MANIFEST_BYTES_MAX`.
    fn fetch(&self, cid: &cid::Cid) -> Result<Vec<u8>, ShardProblem> {
        self.fetch_limited(cid, MANIFEST_BYTES_MAX)
    }

    /// Asks for the data shards at once, each on its own connection and none read past `shard_len`, then for as
    /// many parity shards as are still missing, until `k` valid ones are in hand or none are left to ask for.
    fn fetch_segment(&self, cids: &[cid::Cid], k: usize, shard_len: usize) -> SegmentFetch {
        let mut out: SegmentFetch = vec![None; cids.len()];
        let (mut valid, mut next) = (0, 0);
        while valid < k && next < cids.len() {
            let batch = next..(next + k - valid).min(cids.len());
            next = batch.end;
            let got: Vec<_> = std::thread::scope(|s| {
                let workers: Vec<_> = batch
                    .clone()
                    .map(|i| s.spawn(move || self.fetch_limited(&cids[i], shard_len as u64)))
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|_| Err(ShardProblem::Failed("fetch panicked".into())))
                    })
                    .collect()
            });
            for (i, r) in batch.zip(got) {
                let r = match r {
                    Ok(b) if b.len() == shard_len => {
                        valid += 1;
                        Ok(b)
                    }
                    Ok(_) => Err(ShardProblem::Corrupt),
                    Err(p) => Err(p),
                };
                out[i] = Some(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::default_name;

    /// Whatever the node answers or the user typed, the default output is one plain name here.
    #[test]
    fn the_default_name_is_never_a_path() {
        assert_eq!(default_name("bafyabc/sub/file"), "bafyabc");
        assert_eq!(default_name("../../x"), "out");
        assert_eq!(default_name("/etc/passwd"), "out");
        assert_eq!(default_name(""), "out");
    }
}
