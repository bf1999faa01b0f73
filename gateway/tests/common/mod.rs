//! A real network for gateway tests: in-process nodes on 127.0.0.1 with real RocksDB stores and libp2p, a
//! gateway on node 0 serving real HTTP on a free port, and a small HTTP/1.1 client on raw sockets (so hostile
//! requests go out exactly as written).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig};
use huds::{AddOptions, Store};
use huds_net::{Node, NodeOptions};
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";
pub const CHUNK: usize = 256 * 1024;
pub const SEGMENT: usize = 4 * 1024 * 1024;

pub struct Net {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub nodes: Vec<Option<Node>>,
    pub gateway: SocketAddr,
    pub gw: Gateway,
}

fn seed(i: usize) -> [u8; 32] {
    [i as u8 + 11; 32]
}

async fn start(dir: &Path, i: usize, bootstrap: Vec<huds_net::libp2p::Multiaddr>) -> Node {
    let store = Arc::new(Store::open(&dir.join(format!("node-{i}"))).expect("store opens"));
    let opts = NodeOptions {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        bootstrap,
        ..NodeOptions::default()
    };
    Node::start(huds_net::keypair_from_seed(seed(i)), store, opts)
        .await
        .expect("node starts")
}

impl Net {
    /// `n` nodes, meshed, and a gateway on node 0.
    pub fn new(n: usize) -> Net {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (nodes, gateway, gw) = rt.block_on(async {
            let first = start(dir.path(), 0, Vec::new()).await;
            let bootstrap = first.handle.bootstrap_addrs().await;
            let mut nodes = vec![first];
            for i in 1..n {
                nodes.push(start(dir.path(), i, bootstrap.clone()).await);
            }
            let t0 = Instant::now();
            for node in &nodes {
                while node.handle.storage_peers().await.len() + 1 < n {
                    assert!(t0.elapsed() < Duration::from_secs(30), "nodes did not mesh");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let gw = Gateway::new(GatewayConfig {
                node: nodes[0].handle.clone(),
                local_nodes: nodes.iter().map(|n| n.handle.clone()).collect(),
                token: Some(TOKEN.to_string()),
                spool: dir.path().join("spool"),
                defaults: AddOptions::default(),
                chain: None,
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let served = gw.clone();
            tokio::spawn(async move { gateway::serve(listener, served).await });
            (nodes.into_iter().map(Some).collect(), addr, gw)
        });
        Net {
            dir,
            rt,
            nodes,
            gateway,
            gw,
        }
    }

    /// A second gateway on the same node with its own connection bounds.
    pub fn serve_with(&self, opts: gateway::ServeOptions) -> SocketAddr {
        self.rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let gw = self.gw.clone();
            tokio::spawn(async move { gateway::serve_with(listener, gw, opts).await });
            addr
        })
    }

    pub fn peers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.handle.peer_id().to_string())
            .collect()
    }

    pub fn kill(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("running");
        let _guard = self.rt.enter();
        node.kill();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// Uploads `data` as a file through the gateway; returns the JSON answer.
    pub fn add(&self, data: &[u8], public: bool) -> Value {
        let r = self.request(
            "POST",
            &format!("/api/v0/add?public={public}"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            data,
        );
        assert_eq!(r.status, 200, "add: {}", r.text());
        r.json()
    }

    /// Uploads files (path, bytes) as a directory through a multipart body.
    pub fn add_dir(&self, files: &[(&str, Vec<u8>)], public: bool) -> Value {
        let (ct, body) = multipart(files);
        let r = self.request(
            "POST",
            &format!("/api/v0/add?public={public}"),
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Content-Type", &ct),
            ],
            &body,
        );
        assert_eq!(r.status, 200, "add dir: {}", r.text());
        r.json()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers, &[])
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut raw = req.into_bytes();
        raw.extend_from_slice(body);
        send_raw(self.gateway, &raw)
    }
}

/// A multipart/form-data body with one file part per entry.
pub fn multipart(files: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let b = "huds-test-boundary-7d0a1c";
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw request bytes, reads the whole answer (the server closes: `Connection: close`).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    s.write_all(raw).expect("send request");
    let mut buf = Vec::new();
    // A body cut short ends in a reset; what arrived is what the test sees.
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Resp {
    let end = find(buf, b"\r\n\r\n").expect("a complete response head");
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(b, b"\r\n") {
        let size_text = std::str::from_utf8(&b[..eol]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let stop = (start + size).min(b.len());
        out.extend_from_slice(&b[start..stop]);
        if start + size + 2 > b.len() {
            break;
        }
        b = &b[start + size + 2..];
    }
    out
}

/// The parts of a multipart/byteranges body: (Content-Range, bytes).
pub fn byteranges(body: &[u8], content_type: &str) -> Vec<(String, Vec<u8>)> {
    let b = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary parameter");
    let delim = format!("--{b}");
    let mut rest = body;
    assert!(
        rest.starts_with(delim.as_bytes()),
        "body starts with the boundary"
    );
    rest = &rest[delim.len()..];
    let mut out = Vec::new();
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after the boundary");
        let head_end = find(rest, b"\r\n\r\n").expect("part head");
        let head = std::str::from_utf8(&rest[..head_end]).expect("ASCII part head");
        let range = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("Content-Range in every part")
            .to_string();
        rest = &rest[head_end + 4..];
        let next = find(rest, format!("\r\n{delim}").as_bytes()).expect("next boundary");
        out.push((range, rest[..next].to_vec()));
        rest = &rest[next + 2 + delim.len()..];
    }
    out
}

pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    huds::bench::fill_random(&mut v, seed);
    v
}
