//! Round trips through the real store: files at the chunk and segment boundaries, random sizes, a tree, and
//! every combination of lost and corrupted shards.

use std::path::Path;
use std::sync::Arc;

use huds::bench::fill_random;
use huds::read::{EntryKind, ReadError};
use huds::segment::DecodeSegmentError;
use huds::{AddOptions, Added, BlockStore, Capability, Reader, Source, Store};

const SEG: u32 = 2 * 1024 * 1024; // the smallest segment size, so multi-segment files stay small

fn opts(k: u8, m: u8) -> AddOptions {
    AddOptions {
        k,
        m,
        public: false,
        segment_bytes_max: SEG,
    }
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_random(&mut v, seed);
    v
}

fn add_bytes(store: &Store, data: &[u8], o: &AddOptions) -> Added {
    let mut r = data;
    huds::add(
        store,
        Source::Stream {
            name: "t",
            reader: &mut r,
        },
        o,
        &mut |_| {},
    )
    .expect("add")
}

fn cat(store: &Arc<Store>, cap: &Capability) -> Result<Vec<u8>, ReadError> {
    let reader = Reader::open_local(store.clone(), cap)?;
    let mut out = Vec::new();
    reader.cat(&reader.root(), &mut out)?;
    Ok(out)
}

fn check_round_trip(store: &Arc<Store>, len: usize) {
    let data = bytes(len, len as u64);
    let added = add_bytes(store, &data, &opts(4, 2));
    assert_eq!(added.root, huds::unixfs::file_cid(&data), "len={len}");
    assert_eq!(added.size, len as u64);
    assert!(
        cat(store, &added.capability).expect("cat") == data,
        "len={len}"
    );
}

fn temp_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("db")).expect("open"));
    (dir, store)
}

#[test]
fn files_at_chunk_and_segment_boundaries() {
    let (_d, store) = temp_store();
    let chunk = 256 * 1024;
    let seg = SEG as usize;
    for len in [
        0,
        1,
        chunk - 1,
        chunk,
        chunk + 1,
        seg - 1,
        seg,
        seg + 1,
        2 * seg,
        3 * seg + chunk,
    ] {
        check_round_trip(&store, len);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    #[test]
    fn random_sizes_round_trip(len in 0usize..6_000_000) {
        let (_d, store) = temp_store();
        check_round_trip(&store, len);
    }
}

#[test]
fn byte_ranges_read_exactly() {
    let (_d, store) = temp_store();
    let data = bytes(5 * 1024 * 1024 + 3, 9);
    let added = add_bytes(&store, &data, &opts(4, 2));
    let reader = Reader::open_local(store.clone(), &added.capability).expect("open");
    let chunk = 256 * 1024u64;
    for (a, b) in [
        (0, 0),
        (0, 1),
        (chunk - 1, chunk + 1),
        (chunk, 2 * chunk),
        (2_097_151, 2_097_153),
        (5 * 1024 * 1024, u64::MAX),
    ] {
        let mut out = Vec::new();
        reader
            .read_file(&added.root, a..b, &mut out)
            .expect("range");
        let end = (b as usize).min(data.len());
        assert_eq!(out, data[a as usize..end], "{a}..{b}");
    }
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    std::fs::write(root.join("empty-file"), b"").expect("write");
    std::fs::write(root.join("a/one"), b"1").expect("write");
    std::fs::write(root.join("a/b/c/big"), bytes(700_000, 3)).expect("write");
    std::fs::write(root.join("a/b/small.txt"), b"hello huds\n").expect("write");
    std::os::unix::fs::symlink("a/one", root.join("link")).expect("symlink");
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut stack = vec![(a.to_path_buf(), b.to_path_buf())];
    while let Some((x, y)) = stack.pop() {
        let mx = std::fs::symlink_metadata(&x).expect("stat");
        let my =
            std::fs::symlink_metadata(&y).unwrap_or_else(|_| panic!("{} missing", y.display()));
        assert_eq!(mx.file_type(), my.file_type(), "{}", y.display());
        if mx.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&x)
                .expect("ls")
                .map(|e| e.expect("entry").file_name())
                .collect();
            let mut other: Vec<_> = std::fs::read_dir(&y)
                .expect("ls")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            other.sort();
            assert_eq!(names, other, "{}", y.display());
            for n in names {
                stack.push((x.join(&n), y.join(&n)));
            }
        } else if mx.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&x).expect("link"),
                std::fs::read_link(&y).expect("link")
            );
        } else {
            assert_eq!(
                std::fs::read(&x).expect("read"),
                std::fs::read(&y).expect("read"),
                "{}",
                y.display()
            );
        }
    }
}

#[test]
fn a_tree_with_nested_dirs_empty_files_and_an_empty_dir() {
    let (dir, store) = temp_store();
    let src = dir.path().join("src");
    write_tree(&src);
    let added = huds::add(&store, Source::Path(&src), &opts(3, 2), &mut |_| {}).expect("add");
    assert_eq!(added.root, huds::add::cid_of_path(&src).expect("cid"));
    let reader = Reader::open_local(store.clone(), &added.capability).expect("open");
    let names: Vec<_> = reader
        .list(&added.root)
        .expect("ls")
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_string(), EntryKind::Directory),
            ("empty-dir".into(), EntryKind::Directory),
            ("empty-file".into(), EntryKind::File),
            ("link".into(), EntryKind::Symlink)
        ]
    );
    let small = reader
        .resolve(&added.root, "a/b/small.txt")
        .expect("resolve");
    let mut out = Vec::new();
    reader.cat(&small, &mut out).expect("cat");
    assert_eq!(out, b"hello huds\n");
    assert!(matches!(
        reader.cat(&added.root, &mut Vec::new()),
        Err(ReadError::IsDirectory(_))
    ));
    assert!(matches!(
        reader.resolve(&added.root, "a/nope"),
        Err(ReadError::NoEntry(_))
    ));
    let out = dir.path().join("out");
    reader.export(&added.root, &out).expect("export");
    assert_same_tree(&src, &out);
}

/// Segment 1 of a three-segment file, with its shards' CIDs.
fn shards_of_segment(store: &Arc<Store>, cap: &Capability, seg: usize) -> Vec<cid::Cid> {
    Reader::open_local(store.clone(), cap)
        .expect("open")
        .manifest()
        .segments[seg]
        .shards
        .clone()
}

#[test]
fn every_loss_of_up_to_m_shards_reads_back_and_m_plus_one_names_the_segment() {
    let (_d, store) = temp_store();
    let data = bytes(2 * SEG as usize + 1000, 77);
    let added = add_bytes(&store, &data, &opts(4, 2));
    let shards = shards_of_segment(&store, &added.capability, 1);
    // Three segments of leaves and one of file nodes.
    assert_eq!(added.segments, 4);
    let saved: Vec<Vec<u8>> = shards
        .iter()
        .map(|c| store.shard(c).expect("read").expect("present"))
        .collect();
    for lost in 0u32..(1 << 6) {
        for (i, c) in shards.iter().enumerate() {
            if lost & (1 << i) != 0 {
                store.delete_shard(c).expect("delete");
            } else {
                store.put_shard_unchecked(c, &saved[i]).expect("restore");
            }
        }
        let r = cat(&store, &added.capability);
        if lost.count_ones() <= 2 {
            assert!(r.expect("readable") == data, "lost={lost:06b}");
        } else {
            let Err(ReadError::Segment(e)) = r else {
                panic!("lost={lost:06b}: expected a segment error")
            };
            assert_eq!(e.index, 1);
            let found = 6 - lost.count_ones() as usize;
            assert_eq!(
                e.cause,
                DecodeSegmentError::TooFew {
                    found,
                    needed: 4,
                    total: 6
                }
            );
            let text = e.to_string();
            assert!(
                text.starts_with("segment 1 of 4: only 3 of 6 shards found, 4 needed")
                    || lost.count_ones() > 3,
                "{text}"
            );
            assert!(text.contains("missing"), "{text}");
        }
    }
}

#[test]
fn a_flipped_byte_in_any_shard_is_detected_and_read_around() {
    let (_d, store) = temp_store();
    let data = bytes(SEG as usize + 5, 5);
    let added = add_bytes(&store, &data, &opts(4, 2));
    let shards = shards_of_segment(&store, &added.capability, 0);
    for (i, c) in shards.iter().enumerate() {
        let good = store.shard(c).expect("read").expect("present");
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x40;
        store.put_shard_unchecked(c, &bad).expect("corrupt");
        assert!(matches!(
            store.shard(c),
            Err(huds::store::StoreError::CorruptShard(_))
        ));
        assert!(
            cat(&store, &added.capability).expect("read around one bad shard") == data,
            "shard {i}"
        );
        store.put_shard_unchecked(c, &good).expect("restore");
    }
    // Three corrupt shards: more than m, so the read fails and names them.
    for c in &shards[..3] {
        store.put_shard_unchecked(c, b"garbage").expect("corrupt");
    }
    let Err(ReadError::Segment(e)) = cat(&store, &added.capability) else {
        panic!("expected a segment error")
    };
    assert_eq!(e.problems.len(), 3);
    assert!(e.to_string().contains("corrupt"), "{e}");
}

#[test]
fn wrong_keys_malformed_cids_and_truncated_manifests_are_clear_errors() {
    let (_d, store) = temp_store();
    let added = add_bytes(&store, b"private bytes", &opts(2, 1));
    let mut wrong = added.capability.clone();
    wrong.key.0[0] ^= 1;
    assert!(matches!(
        cat(&store, &wrong),
        Err(ReadError::ManifestOpen(_))
    ));
    for bad in ["bafy", "huds:zz", "not a cid", ""] {
        let e = huds::resolve_capability(&store, bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} resolved"));
        assert!(!e.to_string().is_empty());
    }
    let unknown = huds::unixfs::file_cid(b"never added").to_string();
    assert!(matches!(
        huds::resolve_capability(&store, &unknown),
        Err(ReadError::UnknownCid(_))
    ));
    // A truncated or altered sealed manifest fails its CID check before anything is decoded.
    let sealed = store
        .manifest(&added.capability.manifest)
        .expect("read")
        .expect("present");
    let truncated = &sealed[..sealed.len() / 2];
    assert!(matches!(
        Reader::open(store.clone(), &added.capability, truncated),
        Err(ReadError::ManifestOpen(_))
    ));
    // A manifest that is sealed correctly but is not a manifest is a decode error, not a panic.
    let junk = huds::segment::seal_manifest(&added.capability.key, b"\xa1\x61v\x01");
    let cap = Capability {
        manifest: huds::cids::blake3_cid(&junk),
        key: added.capability.key.clone(),
    };
    assert!(matches!(
        Reader::open(store.clone(), &cap, &junk),
        Err(ReadError::Manifest(_))
    ));
}

#[test]
fn public_files_read_by_cid_and_share_a_key_for_equal_content() {
    let (dir, store) = temp_store();
    let path = dir.path().join("pub.bin");
    std::fs::write(&path, bytes(300_000, 1)).expect("write");
    let o = AddOptions {
        public: true,
        ..opts(4, 2)
    };
    let a = huds::add(&store, Source::Path(&path), &o, &mut |_| {}).expect("add");
    let b = huds::add(&store, Source::Path(&path), &o, &mut |_| {}).expect("add");
    assert_eq!(
        a.capability, b.capability,
        "convergent: same content, same manifest and key"
    );
    let cap = huds::resolve_capability(&store, &a.root.to_string()).expect("public CID resolves");
    assert_eq!(
        cat(&store, &cap).expect("cat"),
        std::fs::read(&path).expect("read")
    );
    let mut stdin: &[u8] = b"x";
    assert!(matches!(
        huds::add(
            &store,
            Source::Stream {
                name: "s",
                reader: &mut stdin
            },
            &o,
            &mut |_| {}
        ),
        Err(huds::AddError::PublicStdin)
    ));
}
