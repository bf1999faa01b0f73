//! A node that lies: a real HTTP server on 127.0.0.1 in front of a real node's API. It forwards every request
//! and passes each answer's body through the test's `lie`, so a test can show what a client does when the
//! node it talks to hides, changes or forges what the chain holds.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// What the lying node does to an answer: given the request's path (with its query) and the real body, the
/// body it sends instead.
pub type Lie = fn(path: &str, body: Vec<u8>) -> Vec<u8>;

pub struct LyingNode {
    /// The URL to pass as `--api`.
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LyingNode {
    /// Serves on a free port of 127.0.0.1, forwarding to the node whose API is `upstream` (`http://host:port`).
    pub fn start(upstream: &str, lie: Lie) -> LyingNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    // A client that went away is no failure of the test's; the client reports what it saw.
                    let _ = forward(conn, &upstream, lie);
                });
            }
        });
        LyingNode {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LyingNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP/1.1 message's head: everything up to the blank line, and the bytes read past it.
fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body of a chunked transfer, decoded.
fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

/// Appends to `out` each header line of `lines` (a status or request line passes as well) whose name is not
/// in `dropped` (lowercase), each ended by CRLF.
fn copy_headers<'a>(lines: impl Iterator<Item = &'a str>, dropped: &[&str], out: &mut String) {
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !dropped.contains(&name.as_str()) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
}

fn forward(mut client: TcpStream, upstream: &str, lie: Lie) -> std::io::Result<()> {
    let (head, mut body) = read_head(&mut client)?;
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut request = format!("{request_line}\r\nHost: {upstream}\r\nConnection: close\r\n");
    copy_headers(lines, &["host", "connection"], &mut request);
    request.push_str("\r\n");
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(request.as_bytes())?;
    server.write_all(&body)?;
    let (answer_head, mut raw) = read_head(&mut server)?;
    server.read_to_end(&mut raw)?;
    let real = if header(&answer_head, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        unchunk(&raw)
    } else {
        raw
    };
    let told = lie(&path, real);
    let mut answer = String::new();
    copy_headers(
        answer_head.lines(),
        &["content-length", "transfer-encoding", "connection"],
        &mut answer,
    );
    answer.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        told.len()
    ));
    client.write_all(answer.as_bytes())?;
    client.write_all(&told)?;
    client.shutdown(Shutdown::Both)
}
