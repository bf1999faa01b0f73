//! `huds bench net`: a network on loopback beside a plain HTTP server, in one run.

use std::time::Instant;

use anyhow::{Context, Result};
use huds::BlockStore;
use serde_json::json;

use crate::bench::{tempfile_dir, wait_for_port};

/// A writer that hashes what it is given and notes when the first byte came.
struct Sink {
    hasher: blake3::Hasher,
    bytes: u64,
    first_byte: Option<Instant>,
}

impl Sink {
    fn new() -> Self {
        Sink {
            hasher: blake3::Hasher::new(),
            bytes: 0,
            first_byte: None,
        }
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.first_byte.is_none() && !buf.is_empty() {
            self.first_byte = Some(Instant::now());
        }
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One transfer: bytes, seconds, time to first byte, and the hash of what arrived.
struct Transfer {
    bytes: u64,
    seconds: f64,
    ttfb_ms: f64,
    hash: blake3::Hash,
}

impl Transfer {
    fn done(sink: Sink, started: Instant) -> Transfer {
        Transfer {
            bytes: sink.bytes,
            seconds: started.elapsed().as_secs_f64().max(1e-9),
            ttfb_ms: sink
                .first_byte
                .map_or(f64::NAN, |t| (t - started).as_secs_f64() * 1e3),
            hash: sink.hasher.finalize(),
        }
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// Writes `size` bytes of random data to `path` in 4 MiB pieces; returns their hash.
fn write_input(path: &std::path::Path, size: usize) -> Result<blake3::Hash> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    let mut seed = 0x5eed;
    while left > 0 {
        let n = left.min(buf.len());
        huds::bench::fill_random(&mut buf[..n], seed);
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n;
        seed += 1;
    }
    f.flush()?;
    Ok(hasher.finalize())
}

/// Python's `http.server` on a free loopback port, serving `dir`; stopped on drop.
struct StaticServer {
    child: std::process::Child,
    port: u16,
}

impl StaticServer {
    fn start(dir: &std::path::Path) -> Result<StaticServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting python3 -m http.server (is python3 installed? scripts/setup.sh installs it)")?;
        let server = StaticServer { child, port };
        wait_for_port(port).context("python3 http.server did not start")?;
        Ok(server)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `huds bench net`: a 6-node network on loopback, a file added through one node and read through another,
/// beside the same file downloaded from a plain static HTTP server, in one run.
pub fn net(size_mib: usize, nodes: usize, json: bool) -> Result<()> {
    use huds_net::{NetShardSink, NetShardSource};
    let dir = tempfile_dir()?;
    let size = size_mib << 20;
    let input = dir.path().join("input.bin");
    let expected = write_input(&input, size)?;

    // Baseline first, while the network is not yet running: a plain HTTP download over loopback.
    let http = {
        let server = StaticServer::start(dir.path())?;
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/input.bin", server.port);
        let mut body = ureq::get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .into_body();
        let mut sink = Sink::new();
        std::io::copy(&mut body.as_reader(), &mut sink)?;
        Transfer::done(sink, started)
    };
    anyhow::ensure!(
        http.hash == expected,
        "the HTTP baseline returned other bytes"
    );

    let rt = crate::network::runtime()?;
    let (add, get) = rt.block_on(async {
        let (homes, running) = crate::network::start_mesh(&dir.path().join("net"), nodes).await?;
        let handle = tokio::runtime::Handle::current();
        let (adder, reader) = (running[0].handle.clone(), running[nodes - 1].handle.clone());
        let opts = homes[0].add_options();
        let (h, path) = (handle.clone(), input.clone());
        let (add, added) = tokio::task::spawn_blocking(move || -> Result<_> {
            let started = Instant::now();
            let sink = NetShardSink::new(adder.clone(), h);
            let added = huds::add::add_with(
                adder.store(),
                &sink,
                huds::Source::Path(&path),
                &opts,
                &mut |_| {},
            )?;
            let secs = started.elapsed().as_secs_f64();
            Ok((secs, added))
        })
        .await??;
        let cap = added.capability.clone();
        // Let the add's memtables reach disk on every node first: the get is timed on a settled network.
        for n in &running {
            let store = n.handle.store().clone();
            tokio::task::spawn_blocking(move || store.flush()).await??;
        }
        let get = tokio::task::spawn_blocking(move || -> Result<Transfer> {
            let started = Instant::now();
            let source = std::sync::Arc::new(NetShardSource::new(reader.clone(), handle));
            let r = huds::Reader::open_with(reader.store(), source, &cap)?;
            let mut sink = Sink::new();
            r.cat(&r.root(), &mut sink)?;
            Ok(Transfer::done(sink, started))
        })
        .await??;
        for n in running {
            n.shutdown().await;
        }
        anyhow::Ok((add, get))
    })?;
    anyhow::ensure!(get.hash == expected, "the network get returned other bytes");
    let add_mb_s = size as f64 / 1e6 / add;
    let ratio = get.mb_per_s() / http.mb_per_s();
    if json {
        println!(
            "{}",
            json!({
                "bytes": size, "nodes": nodes,
                "add_mb_per_s": add_mb_s,
                "get_mb_per_s": get.mb_per_s(), "get_ttfb_ms": get.ttfb_ms,
                "http_mb_per_s": http.mb_per_s(), "http_ttfb_ms": http.ttfb_ms,
                "get_ratio_to_http": ratio,
            })
        );
        return Ok(());
    }
    println!(
        "huds bench net: {size_mib} MiB of random data, {nodes} nodes on loopback (add through node 0, get through node {})",
        nodes - 1
    );
    println!("{:<40} {:>10} {:>10}", "transfer", "MB/s", "TTFB ms");
    println!(
        "{:<40} {:>10.1} {:>10.1}",
        "plain HTTP (python3 http.server)",
        http.mb_per_s(),
        http.ttfb_ms
    );
    println!(
        "{:<40} {:>10.1} {:>10}",
        "huds add (every shard acked)", add_mb_s, "-"
    );
    println!(
        "{:<40} {:>10.1} {:>10.1}",
        "huds get (every shard and block checked)",
        get.mb_per_s(),
        get.ttfb_ms
    );
    println!(
        "get = {ratio:.2}x plain HTTP (goal >= 0.5x); time to first byte {:.1} ms (goal < 100 ms)",
        get.ttfb_ms
    );
    Ok(())
}
