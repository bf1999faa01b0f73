//! Throughput measurements shared by `huds bench core` and the criterion benches: each primitive of the add
//! pipeline alone on one core, and the whole add and get pipelines, over the same input in one run.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use reed_solomon_erasure::galois_8::ReedSolomon;
use sha2::{Digest, Sha256};

use crate::add::{self, AddOptions, Source};
use crate::read::Reader;
use crate::store::Store;
use crate::unixfs::CHUNK_BYTES;

/// One measured figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    pub name: String,
    pub bytes: u64,
    pub seconds: f64,
}

impl Figure {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

fn time(name: &str, bytes: u64, f: impl FnOnce()) -> Figure {
    let t = Instant::now();
    f();
    Figure {
        name: name.to_string(),
        bytes,
        seconds: t.elapsed().as_secs_f64().max(1e-9),
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough not to matter.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// sha2-256 over `data` in 256 KiB chunks, as the importer hashes leaves.
pub fn sha256_chunks(data: &[u8]) -> u8 {
    let mut acc = 0u8;
    for c in data.chunks(CHUNK_BYTES) {
        acc ^= Sha256::digest(c)[0];
    }
    acc
}

/// ChaCha20-Poly1305 sealing of `data` in place, segment by segment.
pub fn seal_segments(data: &mut [u8], segment_bytes: usize) -> u8 {
    let cipher = ChaCha20Poly1305::new(&Key::from([7u8; 32]));
    let mut acc = 0u8;
    for (i, c) in data.chunks_mut(segment_bytes).enumerate() {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_le_bytes());
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(n), b"", c.into())
            .expect("seals");
        acc ^= tag[0];
    }
    acc
}

/// Reed-Solomon k+m parity over `data`, segment by segment (data shards are the segment itself).
pub fn rs_segments(data: &[u8], segment_bytes: usize, k: usize, m: usize) -> u8 {
    let rs = ReedSolomon::new(k, m).expect("valid shape");
    let shard = segment_bytes / k;
    let mut parity = vec![vec![0u8; shard]; m];
    let mut acc = 0u8;
    for seg in data.chunks(segment_bytes) {
        if seg.len() < segment_bytes {
            break;
        }
        let data_shards: Vec<&[u8]> = seg.chunks(shard).collect();
        let mut par: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
        rs.encode_sep(&data_shards, &mut par).expect("shapes match");
        acc ^= parity[0][0];
    }
    acc
}

/// The figures `huds bench core` prints: primitives alone, their one-core chain, and add/get end to end.
pub struct CoreReport {
    pub memcpy: Figure,
    pub sha256: Figure,
    pub chacha: Figure,
    pub rs: Figure,
    pub chained: Figure,
    pub add: Figure,
    pub get: Figure,
}

/// Runs the core benchmark on `size` bytes, with scratch files under `dir`.
pub fn core(size: usize, dir: &Path) -> Result<CoreReport, Box<dyn std::error::Error>> {
    let seg = add::SEGMENT_BYTES_DEFAULT as usize;
    let mut data = vec![0u8; size];
    fill_random(&mut data, 42);
    let n = size as u64;
    let mut copy = vec![0u8; size];
    let memcpy = time("memcpy", n, || copy.copy_from_slice(&data));
    let sha256 = time("sha2-256", n, || {
        std::hint::black_box(sha256_chunks(&data));
    });
    let chacha = time("chacha20-poly1305", n, || {
        std::hint::black_box(seal_segments(&mut copy, seg));
    });
    let rs = time("reed-solomon 4+2", n, || {
        std::hint::black_box(rs_segments(&data, seg, 4, 2));
    });
    drop(copy);
    let chained_s = sha256.seconds + chacha.seconds + rs.seconds;
    let chained = Figure {
        name: "chained on one core".into(),
        bytes: n,
        seconds: chained_s,
    };
    let input = dir.join("input");
    std::fs::File::create(&input)?.write_all(&data)?;
    drop(data);
    let store = Arc::new(Store::open(&dir.join("db"))?);
    let mut added = None;
    let mut err = None;
    let add = time("huds add", n, || {
        match add::add(
            &store,
            Source::Path(&input),
            &AddOptions::default(),
            &mut |_| {},
        ) {
            Ok(a) => added = Some(a),
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let added = added.expect("set when no error");
    let reader = Reader::open_local(store.clone(), &added.capability)?;
    let mut got = 0;
    let mut read_err = None;
    let get = time("huds get", n, || {
        match reader.cat(&added.root, &mut std::io::sink()) {
            Ok(b) => got = b,
            Err(e) => read_err = Some(e),
        }
    });
    if let Some(e) = read_err {
        return Err(e.into());
    }
    if got != n {
        return Err(format!("get returned {got} bytes, expected {n}").into());
    }
    Ok(CoreReport {
        memcpy,
        sha256,
        chacha,
        rs,
        chained,
        add,
        get,
    })
}
