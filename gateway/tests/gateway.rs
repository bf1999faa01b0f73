//! The gateway over real HTTP against real in-process nodes: files and ranges at chunk and segment boundaries,
//! caching headers, HEAD, directories, trustless CAR and raw responses checked by an independent CAR reader,
//! uploads and their token, hostile requests, status, metrics, the status page in headless Chromium, and 504
//! when content cannot be rebuilt.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{CHUNK, Net, SEGMENT, TOKEN, byteranges, data, send_raw};
use sha2::{Digest, Sha256};

/// A file of three segments and a bit, so ranges cross chunk and segment boundaries.
const FILE_BYTES: usize = 2 * SEGMENT + 5 * CHUNK + 12_345;

#[test]
fn files_ranges_and_caching_headers() {
    let net = Net::new(4);
    let file = data(FILE_BYTES, 1);
    let added = net.add(&file, true);
    let cid = added["cid"].as_str().expect("cid").to_string();
    assert_eq!(added["size"], FILE_BYTES as u64);
    let path = format!("/huds/{cid}");

    let r = net.get(&path, &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == file, "whole file differs");
    assert_eq!(r.header("etag"), format!("\"{cid}\""));
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=29030400, immutable"
    );
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("content-length"), FILE_BYTES.to_string());
    assert_eq!(r.header("accept-ranges"), "bytes");
    // The same content under /ipfs/.
    assert!(net.get(&format!("/ipfs/{cid}"), &[]).body == file);

    let h = net.request("HEAD", &path, &[], &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), FILE_BYTES.to_string());
    assert_eq!(h.header("etag"), format!("\"{cid}\""));

    let etag = format!("\"{cid}\"");
    for inm in [
        etag.as_str(),
        &format!("W/{etag}"),
        &format!("\"other\", {etag}"),
        "*",
    ] {
        let r = net.get(&path, &[("If-None-Match", inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), etag);
    }
    assert_eq!(
        net.get(&path, &[("If-None-Match", "\"other\"")]).status,
        200
    );

    // Single ranges on both sides of every chunk and segment boundary, and at the ends.
    let size = FILE_BYTES as u64;
    let mut cases: Vec<(String, u64, u64)> = vec![
        ("0-0".into(), 0, 0),
        (format!("{}-", size - 1), size - 1, size - 1),
        ("-1".into(), size - 1, size - 1),
        (format!("-{}", CHUNK + 3), size - CHUNK as u64 - 3, size - 1),
        (format!("0-{}", size + 100), 0, size - 1),
    ];
    for edge in [CHUNK, 2 * CHUNK, SEGMENT, SEGMENT + CHUNK, 2 * SEGMENT] {
        let e = edge as u64;
        cases.push((format!("{}-{}", e - 1, e), e - 1, e));
        cases.push((format!("{}-{}", e - 1, e - 1), e - 1, e - 1));
        cases.push((format!("{e}-{e}"), e, e));
        cases.push((format!("{}-{}", e - 5000, e + 5000), e - 5000, e + 5000));
        cases.push((format!("{e}-"), e, size - 1));
    }
    for (spec, first, last) in &cases {
        let r = net.get(&path, &[("Range", &format!("bytes={spec}"))]);
        assert_eq!(r.status, 206, "bytes={spec}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {first}-{last}/{size}"),
            "bytes={spec}"
        );
        assert!(
            r.body == file[*first as usize..=*last as usize],
            "bytes={spec}: wrong bytes"
        );
    }

    // Several ranges: multipart/byteranges, each part with its Content-Range.
    let spec = format!(
        "bytes=0-9, {}-{}, {}-{}, -7",
        SEGMENT - 3,
        SEGMENT + 3,
        CHUNK - 1,
        CHUNK
    );
    let r = net.get(&path, &[("Range", &spec)]);
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").to_string();
    assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
    assert_eq!(r.header("content-length"), r.body.len().to_string());
    let parts = byteranges(&r.body, &ct);
    let want = [
        (0, 9),
        (SEGMENT as u64 - 3, SEGMENT as u64 + 3),
        (CHUNK as u64 - 1, CHUNK as u64),
        (size - 7, size - 1),
    ];
    assert_eq!(parts.len(), want.len());
    for ((range, bytes), (a, b)) in parts.iter().zip(want) {
        assert_eq!(range, &format!("bytes {a}-{b}/{size}"));
        assert!(bytes[..] == file[a as usize..=b as usize], "part {range}");
    }

    // If-Range with another validator: the whole file.
    let r = net.get(
        &path,
        &[("Range", "bytes=0-0"), ("If-Range", "\"something-else\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), FILE_BYTES);

    // Unsatisfiable and malformed ranges: 416 with the size.
    for bad in [
        format!("bytes={size}-"),
        "bytes=-0".into(),
        "bytes=5-2".into(),
        "bytes=x-y".into(),
        "bytes=".into(),
    ] {
        let r = net.get(&path, &[("Range", &bad)]);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes */{size}"),
            "{bad}"
        );
    }
    // Another unit is ignored.
    assert_eq!(net.get(&path, &[("Range", "items=0-1")]).status, 200);
}

#[test]
fn private_files_read_by_capability_only() {
    let net = Net::new(4);
    let file = b"<!doctype html><title>secret</title>".to_vec();
    let added = net.add(&file, false);
    let (cid, cap) = (
        added["cid"].as_str().expect("cid"),
        added["cap"].as_str().expect("cap"),
    );
    let r = net.get(&format!("/huds/{cap}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, file);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        r.header("cache-control"),
        "private, max-age=29030400, immutable"
    );
    assert_eq!(net.get(&format!("/huds/{cid}"), &[]).status, 404);
    assert_eq!(net.get(&format!("/ipfs/{cap}"), &[]).status, 400);
    // A capability whose key is wrong.
    let mut bad = cap.to_string();
    let last = bad.pop().expect("non-empty");
    bad.push(if last == 'a' { 'b' } else { 'a' });
    let s = net.get(&format!("/huds/{bad}"), &[]).status;
    assert!(s == 400 || s == 404, "wrong key answered {s}");
}

#[test]
fn directories_index_html_and_paged_listings() {
    let net = Net::new(4);
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("docs/readme.txt".into(), b"read me\n".to_vec()),
        ("docs/a b&c.md".into(), b"# title\n".to_vec()),
        (
            "site/index.html".into(),
            b"<html><p>home</p></html>".to_vec(),
        ),
        ("site/app.js".into(), b"console.log(1)".to_vec()),
        ("bin/blob".into(), vec![0, 1, 2, 3, 255]),
    ];
    for i in 0..300 {
        files.push((format!("many/f{i:03}.txt"), format!("{i}\n").into_bytes()));
    }
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let added = net.add_dir(&refs, true);
    let root = added["cid"].as_str().expect("cid").to_string();

    // A directory URL without the slash redirects to it.
    let r = net.get(&format!("/huds/{root}/docs"), &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), format!("/huds/{root}/docs/"));

    let r = net.get(&format!("/huds/{root}/docs/"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    let html = r.text();
    assert!(html.contains("href=\"readme.txt\""), "{html}");
    assert!(html.contains("href=\"a%20b%26c.md\""), "{html}");
    assert!(html.contains("a b&amp;c.md"), "{html}");

    // index.html is served for its directory.
    let r = net.get(&format!("/huds/{root}/site/"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<html><p>home</p></html>");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");

    // Content types from names, then from bytes; names with escapes.
    let check_type = |p: &str, t: &str| {
        let r = net.get(&format!("/huds/{root}/{p}"), &[]);
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.header("content-type"), t, "{p}");
    };
    check_type("docs/readme.txt", "text/plain; charset=utf-8");
    check_type("site/app.js", "text/javascript; charset=utf-8");
    check_type("bin/blob", "application/octet-stream");
    check_type("docs/a%20b%26c.md", "text/markdown; charset=utf-8");

    // 300 entries: two pages of at most 256.
    let page1 = net.get(&format!("/huds/{root}/many/"), &[]).text();
    assert!(page1.contains("300 entries · page 1 of 2"), "{page1}");
    assert_eq!(page1.matches("<tr><td><a href=\"f").count(), 256);
    assert!(page1.contains("href=\"?page=2\""));
    let page2 = net.get(&format!("/huds/{root}/many/?page=2"), &[]).text();
    assert_eq!(page2.matches("<tr><td><a href=\"f").count(), 44);
    assert!(page2.contains("f299.txt"));
    assert_eq!(
        net.get(&format!("/huds/{root}/many/?page=3"), &[]).status,
        404
    );
    assert_eq!(
        net.get(&format!("/huds/{root}/many/?page=0"), &[]).status,
        400
    );

    // Missing names are 404; a name under a file is 404.
    assert_eq!(net.get(&format!("/huds/{root}/nope"), &[]).status, 404);
    assert_eq!(
        net.get(&format!("/huds/{root}/docs/readme.txt/x"), &[])
            .status,
        404
    );
}

/// Reads a CAR with `iroh-car` (an independent implementation) and checks every block against its CID.
fn read_car(bytes: Vec<u8>) -> (Vec<cid::Cid>, Vec<(cid::Cid, Vec<u8>)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut reader = iroh_car::CarReader::new(std::io::Cursor::new(bytes))
            .await
            .expect("a CARv1 header");
        let roots = reader.header().roots().to_vec();
        let mut blocks = Vec::new();
        while let Some((cid, data)) = reader.next_block().await.expect("a well-formed block") {
            assert_eq!(cid.hash().code(), 0x12, "sha2-256 CIDs");
            assert_eq!(
                Sha256::digest(&data).as_slice(),
                cid.hash().digest(),
                "block {cid} does not hash to its CID"
            );
            blocks.push((cid, data));
        }
        (roots, blocks)
    })
}

/// The file's bytes from a CAR's raw leaves, in DFS order.
fn leaves(blocks: &[(cid::Cid, Vec<u8>)]) -> Vec<u8> {
    blocks
        .iter()
        .filter(|(c, _)| c.codec() == 0x55)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn trustless_car_and_raw_responses_verify() {
    let net = Net::new(4);
    let file = data(FILE_BYTES, 2);
    let cid = net.add(&file, true)["cid"]
        .as_str()
        .expect("cid")
        .to_string();

    let r = net.get(&format!("/ipfs/{cid}?format=car"), &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .starts_with("application/vnd.ipld.car")
    );
    assert!(r.header("content-disposition").starts_with("attachment"));
    let (roots, blocks) = read_car(r.body);
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].to_string(), cid);
    assert_eq!(blocks[0].0.to_string(), cid, "the root block comes first");
    assert!(
        leaves(&blocks) == file,
        "the leaves in DFS order are the file"
    );
    assert_eq!(blocks.len(), FILE_BYTES.div_ceil(CHUNK) + 1);

    // The Accept header asks for the same.
    let r = net.get(
        &format!("/huds/{cid}"),
        &[("Accept", "application/vnd.ipld.car")],
    );
    assert_eq!(read_car(r.body).1.len(), blocks.len());

    // dag-scope=block: only the root; entity-bytes: only the leaves a range needs.
    let (_, only) = read_car(
        net.get(&format!("/ipfs/{cid}?format=car&dag-scope=block"), &[])
            .body,
    );
    assert_eq!(only.len(), 1);
    let from = SEGMENT - 10;
    let to = SEGMENT + CHUNK + 10;
    let (_, part) = read_car(
        net.get(
            &format!("/ipfs/{cid}?format=car&dag-scope=entity&entity-bytes={from}:{to}"),
            &[],
        )
        .body,
    );
    assert_eq!(
        part.len(),
        1 + 3,
        "root and three leaves for a range over three chunks"
    );
    let leaf_start = (from / CHUNK) * CHUNK;
    assert!(leaves(&part) == file[leaf_start..leaf_start + 3 * CHUNK]);

    // A raw block: the root node, which hashes to the CID.
    let r = net.get(
        &format!("/ipfs/{cid}"),
        &[("Accept", "application/vnd.ipld.raw")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/vnd.ipld.raw");
    assert_eq!(
        Sha256::digest(&r.body).as_slice(),
        huds::cids::parse(&cid).expect("cid").hash().digest()
    );
    assert_eq!(net.get(&format!("/ipfs/{cid}?format=tar"), &[]).status, 400);
    assert_eq!(
        net.get(&format!("/ipfs/{cid}?format=car&dag-scope=everything"), &[])
            .status,
        400
    );

    // A path into a directory: the directory blocks on the way, then the file.
    let dir = net.add_dir(
        &[("a/b.txt", b"bee".to_vec()), ("c.txt", b"sea".to_vec())],
        true,
    );
    let root = dir["cid"].as_str().expect("cid");
    let (roots, blocks) = read_car(
        net.get(&format!("/ipfs/{root}/a/b.txt?format=car"), &[])
            .body,
    );
    assert_eq!(roots[0].to_string(), root);
    assert_eq!(blocks.len(), 3, "root directory, a/, b.txt");
    assert_eq!(blocks[2].1, b"bee");
    // The whole tree.
    let (_, all) = read_car(net.get(&format!("/ipfs/{root}?format=car"), &[]).body);
    assert_eq!(all.len(), 4);

    // Routing: this gateway provides public content; an unknown CID has no providers.
    let p = net.get(&format!("/routing/v1/providers/{cid}"), &[]).json();
    assert_eq!(p["Providers"][0]["Schema"], "peer");
    assert_eq!(p["Providers"][0]["ID"], net.peers()[0]);
    let unknown = huds::unixfs::file_cid(b"never stored");
    let p = net
        .get(&format!("/routing/v1/providers/{unknown}"), &[])
        .json();
    assert_eq!(p["Providers"].as_array().map(Vec::len), Some(0));
    assert_eq!(net.get("/routing/v1/providers/not-a-cid", &[]).status, 400);
}

#[test]
fn uploads_need_the_token() {
    let net = Net::new(3);
    let body = b"some bytes".to_vec();
    let no = net.request("POST", "/api/v0/add", &[], &body);
    assert_eq!(no.status, 401);
    assert!(no.header("www-authenticate").starts_with("Bearer"));
    let wrong = net.request(
        "POST",
        "/api/v0/add",
        &[("Authorization", "Bearer nope")],
        &body,
    );
    assert_eq!(wrong.status, 401);
    let (ct, multi) = common::multipart(&[("x.txt", body.clone())]);
    let wrong = net.request("POST", "/api/v0/add", &[("Content-Type", &ct)], &multi);
    assert_eq!(wrong.status, 401);

    let ok = net.add(&body, true);
    assert_eq!(ok["size"], body.len() as u64);
    assert_eq!(
        ok["cid"].as_str(),
        Some(huds::unixfs::file_cid(&body).to_string().as_str()),
        "the CID IPFS gives"
    );
    assert!(ok["cap"].as_str().is_some_and(|c| c.starts_with("huds:")));

    // Unsafe names in a multipart upload are refused.
    let auth = format!("Bearer {TOKEN}");
    for name in ["../x", "a/../../b", "./x"] {
        let (ct, multi) = common::multipart(&[(name, body.clone())]);
        let r = net.request(
            "POST",
            "/api/v0/add",
            &[("Authorization", &auth), ("Content-Type", &ct)],
            &multi,
        );
        assert_eq!(r.status, 400, "{name}: {}", r.text());
    }
    // The node API's other routes answer through the gateway too.
    let cap = ok["cap"].as_str().expect("cap");
    let r = net.get(&format!("/api/v0/cat?arg={cap}"), &[]);
    assert_eq!(r.body, body);
    // Its writes do not, token or none: an unpin through the gateway finds no such route and keeps the file.
    for headers in [vec![], vec![("Authorization", auth.as_str())]] {
        let r = net.request(
            "POST",
            &format!("/api/v0/rm?arg={}", ok["cid"].as_str().expect("cid")),
            &headers,
            b"",
        );
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let r = net.get(&format!("/api/v0/cat?arg={cap}"), &[]);
    assert_eq!(r.body, body, "still pinned and served");
}

#[test]
fn hostile_requests_get_4xx_and_do_not_disturb_others() {
    let net = Net::new(3);
    let file = data(3 * SEGMENT, 3);
    let cid = net.add(&file, true)["cid"]
        .as_str()
        .expect("cid")
        .to_string();
    let small = net.add(b"small", true)["cid"]
        .as_str()
        .expect("cid")
        .to_string();

    // A client that sends half a request and stalls, and one that never reads a large body.
    let mut stalled = std::net::TcpStream::connect(net.gateway).expect("connect");
    stalled
        .write_all(b"GET /huds/ HTTP/1.1\r\nHost: x\r\n")
        .expect("partial request");
    let mut not_reading = std::net::TcpStream::connect(net.gateway).expect("connect");
    not_reading
        .write_all(format!("GET /huds/{cid} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("request");

    let long = format!("/huds/{small}/{}", "a".repeat(5000));
    let many = vec!["0-0"; 1000].join(",");
    /// (path, headers, expected status)
    type Case<'a> = (String, Vec<(&'a str, String)>, u16);
    let cases: Vec<Case> = vec![
        (format!("/huds/{small}/../../etc/passwd"), vec![], 400),
        (format!("/huds/{small}/%2e%2e/x"), vec![], 400),
        (format!("/huds/{small}/a%2Fb"), vec![], 400),
        (format!("/huds/{small}/a%00b"), vec![], 400),
        (format!("/huds/{small}/%zz"), vec![], 400),
        (format!("/huds/{small}/%c0%af"), vec![], 400),
        ("/huds/not-a-cid".into(), vec![], 400),
        ("/huds/huds:!!!!".into(), vec![], 400),
        ("/huds/".into(), vec![], 400),
        (long, vec![], 414),
        (
            format!("/huds/{}", huds::unixfs::file_cid(b"nothing")),
            vec![],
            404,
        ),
        ("/nothing/here".into(), vec![], 404),
        (
            format!("/huds/{cid}"),
            vec![("Range", format!("bytes={many}"))],
            416,
        ),
        (
            format!("/huds/{cid}"),
            vec![("Range", "bytes=0-,0-,0-".into())],
            416,
        ),
        (
            format!("/huds/{cid}?format=car&entity-bytes=x"),
            vec![],
            400,
        ),
        (format!("/huds/{cid}?{}", "q=1&".repeat(1000)), vec![], 400),
    ];
    for (path, headers, status) in &cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = net.get(path, &hs);
        assert_eq!(
            r.status,
            *status,
            "{}: {}",
            &path[..path.len().min(80)],
            r.text()
        );
    }
    let r = net.request("DELETE", &format!("/huds/{small}"), &[], &[]);
    assert_eq!(r.status, 405);
    // Garbage instead of HTTP.
    let r = std::net::TcpStream::connect(net.gateway).and_then(|mut s| {
        s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n")?;
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        Ok(buf)
    });
    let answer = String::from_utf8_lossy(&r.expect("connect")).to_string();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );

    // Meanwhile other requests are served promptly and whole.
    let t0 = Instant::now();
    for _ in 0..5 {
        let r = net.get(&format!("/huds/{small}"), &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"small"[..]));
    }
    let r = net.get(&format!("/huds/{cid}"), &[]);
    assert!(r.body == file);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    drop(stalled);
    drop(not_reading);
    // And the gateway never answered 5xx.
    let metrics = net.get("/metrics", &[]).text();
    assert!(
        metrics.contains("huds_gateway_requests_total{class=\"5xx\"} 0"),
        "{metrics}"
    );
}

#[test]
fn stalled_and_idle_connections_are_closed_and_capped() {
    let net = Net::new(2);
    let cid = net.add(b"still served", true)["cid"]
        .as_str()
        .expect("cid")
        .to_string();
    let addr = net.serve_with(gateway::ServeOptions {
        idle_timeout: Duration::from_millis(800),
        connections_max: 3,
    });
    // Three clients take every connection: one stalls inside its request head, two never send a byte.
    let mut stalled: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    stalled[0]
        .write_all(b"GET /huds/ HTTP/1.1\r\nHost: x\r\n")
        .expect("half a head");
    // A fourth client waits in the backlog until the idle ones are closed, then is served whole.
    let t0 = Instant::now();
    let r = send_raw(
        addr,
        format!("GET /huds/{cid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"still served"[..]));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(10),
        "served after {waited:?}"
    );
    // The stalled clients were closed by the gateway.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(s, &mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(n == 0 || answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
}

#[test]
fn status_json_file_placement_metrics_and_page() {
    let net = Net::new(4);
    let file = data(SEGMENT + 1000, 4);
    let added = net.add(&file, false);
    let cap = added["cap"].as_str().expect("cap").to_string();
    assert!(net.get(&format!("/huds/{cap}"), &[]).body == file);

    let s = net.get("/api/v0/status", &[]).json();
    let peers = net.peers();
    let listed: Vec<&str> = s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["peer"].as_str())
        .collect();
    for p in &peers {
        assert!(listed.contains(&p.as_str()), "{p} missing from {listed:?}");
    }
    let shards: u64 = s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["shards"].as_u64())
        .sum();
    assert!(
        shards >= 12,
        "at least two segments of 4+2 shards are stored: {s}"
    );
    assert!(s["chain"].is_null());

    let f = net
        .get(&format!("/api/v0/status/file?arg={cap}"), &[])
        .json();
    let segments = f["segments_total"].as_u64().expect("segments_total");
    assert!(segments >= 2, "{f}");
    assert_eq!(
        f["segments"].as_array().map(Vec::len),
        Some(segments as usize)
    );
    for seg in f["segments"].as_array().expect("segments") {
        let holders: Vec<&str> = seg["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|sh| sh["holders"][0].as_str().expect("every shard has a holder"))
            .collect();
        assert_eq!(holders.len(), 6);
        assert!(holders.iter().all(|h| peers.iter().any(|p| p == h)));
    }

    let m = net.get("/metrics", &[]);
    assert!(m.header("content-type").starts_with("text/plain"));
    let text = m.text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert!(value("huds_gateway_requests_total{class=\"2xx\"}") >= 3.0);
    assert!(value("huds_gateway_sent_bytes_total") >= file.len() as f64);
    assert!(value("huds_gateway_shard_fetches_total") >= 8.0);
    assert!(value("huds_gateway_response_seconds_count") >= 3.0);
    net.get(&format!("/huds/{cap}"), &[]);
    let hits_text = net.get("/metrics", &[]).text();
    assert!(!hits_text.contains("huds_gateway_cache_hits_total 0\n"));

    let page = net.get("/", &[]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("HUDS network"));

    // The page in a real browser: its script fetches the status and lists every node.
    let profile = net.dir.path().join("chromium");
    let url = net.url(&format!("/?file={cap}"));
    let dom = chromium(&profile, &url, &["--dump-dom".to_string()]);
    assert_ne!(
        dom.status.code(),
        Some(127),
        "chromium is not installed: apt-get install chromium (scripts/setup.sh does)"
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    for p in &peers {
        assert!(
            dom.contains(p.as_str()),
            "the page does not show {p}:\n{dom}"
        );
    }
    assert!(dom.contains("4 nodes · updated"), "{dom}");
    assert!(
        dom.contains("segment 1"),
        "the file's shards are shown:\n{dom}"
    );
    assert!(dom.contains("chain not connected"), "{dom}");

    let shot = net.dir.path().join("status.png");
    let out = chromium(
        &profile,
        &url,
        &[
            "--hide-scrollbars".to_string(),
            "--window-size=1280,900".to_string(),
            format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page with content, not a blank: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("HUDS_SCREENSHOT_OUT") {
        let _ = std::fs::copy(&shot, keep);
    }
}

#[test]
fn content_that_cannot_be_rebuilt_answers_504() {
    let mut net = Net::new(4);
    let file = data(SEGMENT + 10, 5);
    let cid = net.add(&file, true)["cid"]
        .as_str()
        .expect("cid")
        .to_string();
    // With three of four nodes gone, no segment has k = 4 shards left.
    for i in 1..4 {
        net.kill(i);
    }
    let t0 = Instant::now();
    let r = net.get(&format!("/huds/{cid}"), &[]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("segment"),
        "the reason names the segment: {}",
        r.text()
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    let _ = send_raw;
}

/// Headless Chromium on `url` with `extra` flags, under a 120 s timeout.
fn chromium(profile: &std::path::Path, url: &str, extra: &[String]) -> std::process::Output {
    std::process::Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=8000",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium)")
}
