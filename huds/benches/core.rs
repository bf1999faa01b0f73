//! Criterion benches of the core data path: the primitives alone and the whole add and get pipelines.
//! `cargo bench -p huds --bench core`; `huds bench core` prints the same figures side by side in one run.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use huds::bench::{fill_random, rs_segments, seal_segments, sha256_chunks};
use huds::segment::{Coding, FileKey, encode_segment};
use huds::{AddOptions, Reader, Source, Store};

const SIZE: usize = 16 << 20;
const SEG: usize = 4 << 20;

fn primitives(c: &mut Criterion) {
    let mut data = vec![0u8; SIZE];
    fill_random(&mut data, 1);
    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.bench_function("sha2-256", |b| b.iter(|| sha256_chunks(&data)));
    let mut work = data.clone();
    g.bench_function("chacha20-poly1305", |b| {
        b.iter(|| seal_segments(&mut work, SEG))
    });
    g.bench_function("reed-solomon 4+2", |b| {
        b.iter(|| rs_segments(&data, SEG, 4, 2))
    });
    let key = FileKey([3; 32]);
    let coding = Coding::new(4, 2).expect("valid");
    g.bench_function("segment: seal + code + address", |b| {
        b.iter(|| {
            for (i, s) in data.chunks(SEG).enumerate() {
                std::hint::black_box(encode_segment(&key, coding, i as u64, s.to_vec()));
            }
        })
    });
    g.finish();
}

fn pipelines(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = vec![0u8; SIZE];
    fill_random(&mut data, 2);
    let input = dir.path().join("input");
    std::fs::write(&input, &data).expect("write");
    let store = Arc::new(Store::open(&dir.path().join("db")).expect("open"));
    let mut g = c.benchmark_group("pipelines");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    let opts = AddOptions::default();
    g.bench_function("add", |b| {
        b.iter(|| huds::add(&store, Source::Path(&input), &opts, &mut |_| {}).expect("add"))
    });
    let added = huds::add(&store, Source::Path(&input), &opts, &mut |_| {}).expect("add");
    g.bench_function("get", |b| {
        b.iter(|| {
            let r = Reader::open_local(store.clone(), &added.capability).expect("open");
            r.cat(&added.root, &mut std::io::sink()).expect("cat")
        })
    });
    g.finish();
}

criterion_group!(benches, primitives, pipelines);
criterion_main!(benches);
