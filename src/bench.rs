//! `huds bench core`: primitives alone and chained, beside the add and get pipelines, in one run.
//! `huds bench gateway`: the gateway beside nginx under wrk, in one run.

use anyhow::{Context, Result};
use serde_json::json;

pub fn core(size_mib: usize, json: bool) -> Result<()> {
    let dir = tempfile_dir()?;
    let r = huds::bench::core(size_mib << 20, dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = [
        &r.memcpy, &r.sha256, &r.chacha, &r.rs, &r.chained, &r.add, &r.get,
    ];
    if json {
        let figs: Vec<_> = rows
            .iter()
            .map(|f| json!({ "name": f.name, "mb_per_s": f.mb_per_s(), "ratio_to_chained": f.mb_per_s() / r.chained.mb_per_s() }))
            .collect();
        println!(
            "{}",
            json!({ "bytes": size_mib << 20, "cores": cores, "figures": figs })
        );
        return Ok(());
    }
    println!(
        "huds bench core: {size_mib} MiB of random data, {cores} cores; ratios are to the chain of the three primitives"
    );
    println!("{:<28} {:>10} {:>8}", "stage", "MB/s", "ratio");
    for f in rows {
        println!(
            "{:<28} {:>10.1} {:>7.2}x",
            f.name,
            f.mb_per_s(),
            f.mb_per_s() / r.chained.mb_per_s()
        );
    }
    println!(
        "add = {:.2}x the one-core chain of sha2-256 + ChaCha20-Poly1305 + RS(4+2) (goal >= 0.60x); get = {:.2}x",
        r.add.mb_per_s() / r.chained.mb_per_s(),
        r.get.mb_per_s() / r.chained.mb_per_s()
    );
    Ok(())
}

/// A scratch directory under $TMPDIR, removed on drop.
pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits up to 10 s for a server started by a bench to accept connections on 127.0.0.1:`port`.
pub(crate) fn wait_for_port(port: u16) -> Result<()> {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            anyhow::bail!("nothing listens on 127.0.0.1:{port} after 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn tempfile_dir() -> Result<TempDir> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source is available");
    let path = std::env::temp_dir().join(format!("huds-bench-{}", u64::from_le_bytes(id)));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(TempDir(path))
}

// ---------------------------------------------------------------------------------------------------------------
// huds bench gateway

/// What `huds bench gateway` measures with.
pub struct GatewayBench {
    pub nodes: usize,
    pub small_bytes: usize,
    pub large_mib: usize,
    pub duration_s: u64,
    pub connections: usize,
}

/// One wrk run: requests/s and bytes/s.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    requests_per_s: f64,
    bytes_per_s: f64,
}

/// wrk's sizes are binary (1KB = 1024 B).
fn parse_size(text: &str) -> Option<f64> {
    let units = [
        ("GB", 1u64 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ];
    units.iter().find_map(|(u, mult)| {
        text.strip_suffix(u)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * *mult as f64)
    })
}

fn wrk(url: &str, connections: usize, duration_s: u64) -> Result<Wrk> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{duration_s}s"),
            url,
        ])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if text.contains("Non-2xx") {
        anyhow::bail!("wrk saw error answers from {url}:\n{text}");
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
            .map(str::to_string)
            .with_context(|| format!("no {name:?} in wrk's output:\n{text}"))
    };
    Ok(Wrk {
        requests_per_s: field("Requests/sec:")?.parse().context("Requests/sec")?,
        bytes_per_s: parse_size(&field("Transfer/sec:")?).context("Transfer/sec")?,
    })
}

/// nginx on a temporary config serving `root` on 127.0.0.1; stopped on drop.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &std::path::Path, root: &std::path::Path) -> Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 2;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n sendfile on;\n tcp_nopush on;\n keepalive_requests 1000000;\n\
             client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            root.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists() || *b == "nginx")
            .unwrap_or("nginx");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx)")?;
        let nginx = Nginx { child, port };
        wait_for_port(port).with_context(|| format!("nginx did not start; see {d}/error.log"))?;
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them running).
        let pid = self.child.id().to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Time to read the whole answer to one GET (head and body).
fn whole_read(addr: std::net::SocketAddr, path: &str) -> Result<(u64, std::time::Duration)> {
    use std::io::{Read, Write};
    let t0 = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok((total, t0.elapsed()));
        }
        total += n as u64;
    }
}

/// Time to the first body byte of one GET.
fn ttfb(addr: std::net::SocketAddr, path: &str) -> Result<std::time::Duration> {
    use std::io::{Read, Write};
    let t0 = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            anyhow::bail!("the gateway closed before the body began");
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            if !seen.starts_with(b"HTTP/1.1 200") {
                anyhow::bail!(
                    "the gateway answered {}",
                    String::from_utf8_lossy(&seen[..end])
                );
            }
            if seen.len() > end + 4 {
                return Ok(t0.elapsed());
            }
        }
    }
}

pub fn gateway(b: GatewayBench, json_out: bool) -> Result<()> {
    let dir = tempfile_dir()?;
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    let mut small = vec![0u8; b.small_bytes];
    huds::bench::fill_random(&mut small, 1);
    let mut large = vec![0u8; b.large_mib << 20];
    huds::bench::fill_random(&mut large, 2);
    std::fs::write(www.join("small.bin"), &small)?;
    std::fs::write(www.join("large.bin"), &large)?;
    drop(large);
    let rt = crate::network::runtime()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (small_cid, large_cid, nodes, gw_addr) = rt.block_on(async {
        let (homes, nodes) = crate::network::start_mesh(dir.path(), b.nodes).await?;
        let mut cids = Vec::new();
        for name in ["small.bin", "large.bin"] {
            let (node, rt, path) = (
                nodes[0].handle.clone(),
                tokio::runtime::Handle::current(),
                www.join(name),
            );
            let opts = huds::AddOptions {
                public: true,
                ..homes[0].add_options()
            };
            let added = tokio::task::spawn_blocking(move || {
                let sink = huds_net::NetShardSink::new(node.clone(), rt);
                huds::add::add_with(
                    node.store(),
                    &sink,
                    huds::Source::Path(&path),
                    &opts,
                    &mut |_| {},
                )
            })
            .await??;
            cids.push(added.root);
        }
        let gw_addr = serve_gateway(&nodes, dir.path()).await?;
        anyhow::Ok((cids[0], cids[1], nodes, gw_addr))
    })?;
    // Time to first byte, each time on a fresh gateway (nothing opened or cached yet).
    let mut ttfbs = Vec::new();
    for _ in 0..3 {
        // Let the previous sample's read-ahead settle, so each sample starts on a quiet machine.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let addr = rt.block_on(serve_gateway(&nodes, dir.path()))?;
        ttfbs.push(ttfb(addr, &format!("/ipfs/{large_cid}"))?.as_secs_f64() * 1e3);
    }
    // One whole read of the large file on a fresh gateway: every segment fetched and decoded once.
    let cold_addr = rt.block_on(serve_gateway(&nodes, dir.path()))?;
    let (cold_bytes, cold_time) = whole_read(cold_addr, &format!("/ipfs/{large_cid}"))?;
    if cold_bytes < (b.large_mib << 20) as u64 {
        anyhow::bail!("the cold read of the large file stopped after {cold_bytes} bytes");
    }
    let cold_mb_per_s = cold_bytes as f64 / cold_time.as_secs_f64() / 1e6;
    let nginx = Nginx::start(dir.path(), &www)?;
    let nginx_url = format!("http://127.0.0.1:{}", nginx.port);
    let gw_url = format!("http://{gw_addr}");
    // Warm both: the gateway's caches, nginx's page cache.
    ttfb(gw_addr, &format!("/ipfs/{small_cid}"))?;
    // Two alternating rounds, the best of each side kept: the machine may be shared, and a burst of someone
    // else's load then hurts one side's single run less.
    let large_conns = b.connections.clamp(1, 4);
    let small_gw_url = format!("{gw_url}/ipfs/{small_cid}");
    let small_ng_url = format!("{nginx_url}/small.bin");
    let large_gw_url = format!("{gw_url}/ipfs/{large_cid}");
    let large_ng_url = format!("{nginx_url}/large.bin");
    /// (URL, connections, the figure compared)
    type Run<'a> = (&'a str, usize, fn(&Wrk) -> f64);
    let runs: [Run; 4] = [
        (&small_gw_url, b.connections, |w| w.requests_per_s),
        (&small_ng_url, b.connections, |w| w.requests_per_s),
        (&large_gw_url, large_conns, |w| w.bytes_per_s),
        (&large_ng_url, large_conns, |w| w.bytes_per_s),
    ];
    let mut best: [Option<Wrk>; 4] = [None; 4];
    for _ in 0..2 {
        for (i, (url, conns, key)) in runs.iter().enumerate() {
            let w = wrk(url, *conns, b.duration_s)?;
            if best[i].is_none_or(|old| key(&old) < key(&w)) {
                best[i] = Some(w);
            }
        }
    }
    let [small_gw, small_ng, large_gw, large_ng] =
        best.map(|w| w.expect("every wrk run happened twice"));
    drop(nginx);
    rt.block_on(async {
        for n in nodes {
            n.shutdown().await;
        }
    });
    let mb = |w: Wrk| w.bytes_per_s / 1e6;
    let small_ratio = small_gw.requests_per_s / small_ng.requests_per_s;
    let large_ratio = large_gw.bytes_per_s / large_ng.bytes_per_s;
    let ttfb_max = ttfbs.iter().copied().fold(0.0, f64::max);
    if json_out {
        println!(
            "{}",
            json!({
                "cores": cores,
                "nodes": b.nodes,
                "small": { "bytes": b.small_bytes, "gateway_rps": small_gw.requests_per_s, "nginx_rps": small_ng.requests_per_s, "ratio": small_ratio },
                "large": { "bytes": b.large_mib << 20, "gateway_mb_per_s": mb(large_gw), "nginx_mb_per_s": mb(large_ng), "ratio": large_ratio },
                "ttfb_uncached_ms": ttfbs,
                "large_cold_read_mb_per_s": cold_mb_per_s,
            })
        );
        return Ok(());
    }
    println!(
        "huds bench gateway: {} nodes in-process, {cores} cores, wrk -t2 for {}s, best of 2 alternating rounds; nginx {} workers from the same bytes on disk",
        b.nodes, b.duration_s, 2
    );
    println!(
        "small file ({} B, cached), {} connections: gateway {:.0} req/s, nginx {:.0} req/s: {small_ratio:.2}x (goal >= 0.5x)",
        b.small_bytes, b.connections, small_gw.requests_per_s, small_ng.requests_per_s
    );
    println!(
        "large file ({} MiB, its decoded segments cached after the first read), {large_conns} connections: gateway {:.1} MB/s, nginx {:.1} MB/s: {large_ratio:.2}x (goal >= 0.5x)",
        b.large_mib,
        mb(large_gw),
        mb(large_ng)
    );
    println!(
        "large file read once on a fresh gateway (every shard fetched over libp2p, every segment decoded): {cold_mb_per_s:.1} MB/s"
    );
    println!(
        "time to first byte, uncached {} MiB file on a fresh gateway: {} ms (goal < 150 ms; worst {ttfb_max:.1} ms)",
        b.large_mib,
        ttfbs
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// A gateway on node 0 of `nodes`, on a free loopback port.
async fn serve_gateway(
    nodes: &[huds_net::Node],
    dir: &std::path::Path,
) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let gw = gateway::Gateway::new(gateway::GatewayConfig {
        node: nodes[0].handle.clone(),
        local_nodes: nodes.iter().map(|n| n.handle.clone()).collect(),
        token: None,
        spool: dir.join("spool"),
        defaults: huds::AddOptions::default(),
        chain: None,
    });
    tokio::spawn(async move { gateway::serve(listener, gw).await });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_sizes_are_binary() {
        assert_eq!(super::parse_size("1.50MB"), Some(1.5 * 1048576.0));
        assert_eq!(super::parse_size("2GB"), Some(2.0 * 1073741824.0));
        assert_eq!(super::parse_size("512B"), Some(512.0));
        assert_eq!(super::parse_size("fast"), None);
    }
}
