//! The add pipeline: import a file or tree as UnixFS, pack its blocks into segments, seal and code them in
//! parallel, write the shards, then commit the sealed manifest in one batch.
//!
//! Threads: the caller reads, hashes leaves and packs (hashing must follow file order); `CODERS` threads seal,
//! code and address segments; one writer thread puts shards into the store. Channels are bounded, so at most a
//! few segments are in memory whatever the file size.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread;

use cid::Cid;
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::capability::Capability;
use crate::cids::DAG_PB;
use crate::manifest::{self, BlockRef, Kind, Manifest, Segment};
use crate::segment::{self, Coding, CodingError, FileKey};
use crate::store::{BlockStore, Pin, StoreError};
use crate::unixfs::{self, BlockSink, CHUNK_BYTES, DirError, Entry, FileBuilder, NullSink};

/// Default segment size: 4 MiB of plaintext, so 1 MiB shards with k = 4.
pub const SEGMENT_BYTES_DEFAULT: u32 = 4 * 1024 * 1024;
const CODERS: usize = 2;
const IN_FLIGHT_SEGMENTS: usize = 2;

/// How to store what is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddOptions {
    pub k: u8,
    pub m: u8,
    pub public: bool,
    pub segment_bytes_max: u32,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            k: 4,
            m: 2,
            public: false,
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// What an add produced.
#[derive(Debug, Clone)]
pub struct Added {
    pub root: Cid,
    pub kind: Kind,
    pub size: u64,
    pub capability: Capability,
    pub manifest_cid: Cid,
    pub segments: usize,
}

/// Why an add failed. Nothing of a failed add is readable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("network: {0}")]
    Network(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Dir { path: PathBuf, source: DirError },
    #[error(transparent)]
    Coding(#[from] CodingError),
    #[error("{path}: file name is not UTF-8; UnixFS names are UTF-8 strings")]
    NonUtf8Name { path: PathBuf },
    #[error("{path}: {what} cannot be stored: only files, directories and symlinks can")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("{0}: the content changed while it was being added; add it again")]
    Changed(PathBuf),
    #[error(
        "--public needs a file or directory: its key is derived from the content, which is read twice"
    )]
    PublicStdin,
    #[error("segment size {size} is out of range ({floor}..={limit} bytes)", floor = manifest::SEGMENT_BYTES_MAX_FLOOR, limit = manifest::SEGMENT_BYTES_MAX_LIMIT)]
    SegmentSize { size: u32 },
}

/// Where the content comes from.
pub enum Source<'a> {
    Path(&'a Path),
    Stream {
        name: &'a str,
        reader: &'a mut dyn Read,
    },
}

/// Where an add's shards go: the local store, or nodes of the network.
pub trait ShardSink: Sync {
    /// Stores every shard of one coded segment. A sink may return before the shards are acknowledged (it then
    /// owns copies of them); `put_manifest`, called after the last segment, returns only once all are.
    fn put_segment(&self, seg: &segment::CodedSegment) -> Result<(), AddError>;

    /// Spreads the sealed manifest where readers can find it (the local store always keeps a copy), once every
    /// shard put so far is acknowledged.
    fn put_manifest(&self, _cid: &Cid, _sealed: &[u8]) -> Result<(), AddError> {
        Ok(())
    }
}

/// A local block store as the sink of an add's shards.
pub struct LocalSink<'a>(pub &'a dyn BlockStore);

impl ShardSink for LocalSink<'_> {
    fn put_segment(&self, seg: &segment::CodedSegment) -> Result<(), AddError> {
        Ok(self
            .0
            .put_shards(&mut seg.cids.iter().enumerate().map(|(i, c)| (c, seg.shard(i))))?)
    }
}

/// Adds `source` to `store`, shards included. `progress` is called with the bytes read so far.
pub fn add(
    store: &dyn BlockStore,
    source: Source<'_>,
    opts: &AddOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Added, AddError> {
    add_with(store, &LocalSink(store), source, opts, progress)
}

/// Adds `source` with its shards sent to `sink`; the manifest and pin are committed to `store`.
pub fn add_with(
    store: &dyn BlockStore,
    sink: &dyn ShardSink,
    source: Source<'_>,
    opts: &AddOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Added, AddError> {
    let coding = Coding::new(opts.k.into(), opts.m.into())?;
    if !(manifest::SEGMENT_BYTES_MAX_FLOOR..=manifest::SEGMENT_BYTES_MAX_LIMIT)
        .contains(&opts.segment_bytes_max)
    {
        return Err(AddError::SegmentSize {
            size: opts.segment_bytes_max,
        });
    }
    let (key, expected_root) = match (&source, opts.public) {
        (_, false) => (FileKey::random(), None),
        (Source::Stream { .. }, true) => return Err(AddError::PublicStdin),
        (Source::Path(p), true) => {
            let mut importer = Importer {
                sink: NullSink,
                read: 0,
                progress: &mut |_| {},
            };
            let (root, _) = importer.import_path(p)?;
            (
                FileKey::public(&root.cid, opts.segment_bytes_max, opts.k, opts.m),
                Some(root.cid),
            )
        }
    };
    let source_path = match &source {
        Source::Path(p) => Some(p.to_path_buf()),
        Source::Stream { .. } => None,
    };
    let name = match &source {
        Source::Path(p) => p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        Source::Stream { name, .. } => name.to_string(),
    };
    let txn = store.begin_add()?;
    let (coded_tx, coded_rx) = bounded::<(usize, segment::CodedSegment)>(IN_FLIGHT_SEGMENTS);
    let (plain_tx, plain_rx) = bounded::<(usize, Vec<u8>)>(IN_FLIGHT_SEGMENTS);
    let result = thread::scope(|scope| {
        for _ in 0..CODERS {
            let (rx, tx, key) = (plain_rx.clone(), coded_tx.clone(), key.clone());
            scope.spawn(move || code_segments(&key, coding, rx, tx));
        }
        drop((plain_rx, coded_tx));
        // Segment buffers go round: packer -> coder -> writer -> packer, so a long add reuses a few buffers
        // instead of faulting in fresh pages for every segment.
        let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(IN_FLIGHT_SEGMENTS * 2 + CODERS);
        let writer = scope.spawn(|| write_shards(sink, coded_rx, recycle_tx));
        let capacity = coding.shard_len(opts.segment_bytes_max as usize) * coding.total();
        let packer = Packer::new(
            plain_tx,
            recycle_rx,
            opts.segment_bytes_max as usize,
            capacity,
        );
        let mut importer = Importer {
            sink: packer,
            read: 0,
            progress,
        };
        let imported = match source {
            Source::Path(p) => importer.import_path(p),
            Source::Stream { reader, .. } => importer
                .import_stream(reader, Path::new(&name))
                .map(|e| (e, Kind::File)),
        };
        let Importer { sink: packer, .. } = importer;
        let plans = match imported {
            Ok(r) => packer.finish().map(|plans| (r, plans)),
            Err(e) => {
                drop(packer);
                Err(e)
            }
        };
        // The packer's sender is gone now, so the coders and then the writer drain and stop.
        let shards = writer.join().expect("the shard writer does not panic");
        // A writer failure (a full disk, say) is the cause of any pipeline error, so it is reported first.
        match (plans, shards) {
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(p), Ok(s)) => Ok((p, s)),
        }
    });
    let (((root, kind), plans), mut shards) = result?;
    if expected_root.is_some_and(|r| r != root.cid) {
        return Err(AddError::Changed(source_path.unwrap_or_default()));
    }
    let segments: Vec<Segment> = plans
        .into_iter()
        .enumerate()
        .map(|(i, (len, blocks))| Segment {
            len,
            shards: shards
                .remove(&i)
                .expect("the writer stored every segment the packer sent"),
            blocks,
        })
        .collect();
    let manifest = Manifest {
        v: manifest::VERSION,
        root: root.cid,
        kind,
        size: root.filesize,
        k: opts.k,
        m: opts.m,
        segment_bytes_max: opts.segment_bytes_max,
        segments,
    };
    let sealed = segment::seal_manifest(&key, &manifest.encode());
    let manifest_cid = crate::cids::blake3_cid(&sealed);
    sink.put_manifest(&manifest_cid, &sealed)?;
    let capability = Capability {
        manifest: manifest_cid,
        key,
    };
    let cap_text = capability.to_text();
    let pin = Pin {
        v: 1,
        name,
        size: root.filesize,
        added_unix_s: unix_now_s(),
        public: opts.public,
        cap: Some(cap_text.clone()),
    };
    let mut all_shards = manifest
        .segments
        .iter()
        .flat_map(|s| s.shards.iter().copied());
    let public = opts.public.then_some((&root.cid, cap_text.as_str()));
    store.commit_add(txn, &manifest_cid, &sealed, &mut all_shards, &pin, public)?;
    Ok(Added {
        root: root.cid,
        kind,
        size: root.filesize,
        capability,
        manifest_cid,
        segments: manifest.segments.len(),
    })
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn code_segments(
    key: &FileKey,
    coding: Coding,
    rx: Receiver<(usize, Vec<u8>)>,
    tx: Sender<(usize, segment::CodedSegment)>,
) {
    for (index, plain) in rx {
        let coded = segment::encode_segment(key, coding, index as u64, plain);
        if tx.send((index, coded)).is_err() {
            return; // the writer failed; its error is reported
        }
    }
}

fn write_shards(
    sink: &dyn ShardSink,
    rx: Receiver<(usize, segment::CodedSegment)>,
    recycle: Sender<Vec<u8>>,
) -> Result<BTreeMap<usize, Vec<Cid>>, AddError> {
    let mut out = BTreeMap::new();
    for (index, seg) in rx {
        sink.put_segment(&seg)?;
        out.insert(index, seg.cids);
        let _ = recycle.try_send(seg.buf); // when the pool is full the buffer is simply freed
    }
    Ok(out)
}

/// Packs blocks into segments: raw leaves in file order as they come, dag-pb nodes (small) held back and packed
/// after the leaves, so a reader finds a file's structure in its last segments and its bytes in order before them.
struct Packer {
    tx: Sender<(usize, Vec<u8>)>,
    recycle: Receiver<Vec<u8>>,
    segment_bytes_max: usize,
    /// Capacity of a segment buffer: room for the seal's tag, the padding and the parity shards.
    buf_capacity: usize,
    buf: Vec<u8>,
    blocks: Vec<BlockRef>,
    plans: Vec<(u32, Vec<BlockRef>)>,
    nodes: Vec<(Cid, Vec<u8>)>,
    seen: HashSet<Cid>,
}

/// The coding pipeline stopped: the writer's error says why.
struct PipelineClosed;

impl Packer {
    fn new(
        tx: Sender<(usize, Vec<u8>)>,
        recycle: Receiver<Vec<u8>>,
        segment_bytes_max: usize,
        buf_capacity: usize,
    ) -> Self {
        Packer {
            tx,
            recycle,
            segment_bytes_max,
            buf_capacity,
            buf: Vec::with_capacity(buf_capacity),
            blocks: Vec::new(),
            plans: Vec::new(),
            nodes: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn pack(&mut self, cid: &Cid, data: &[u8]) -> Result<(), PipelineClosed> {
        if self.buf.len() + data.len() > self.segment_bytes_max {
            self.close_segment()?;
        }
        self.buf.extend_from_slice(data);
        self.blocks.push(BlockRef(*cid, data.len() as u32));
        Ok(())
    }

    fn close_segment(&mut self) -> Result<(), PipelineClosed> {
        if self.blocks.is_empty() {
            return Ok(());
        }
        let next = match self.recycle.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(self.buf_capacity),
        };
        let plain = std::mem::replace(&mut self.buf, next);
        let len = plain.len() as u32;
        self.tx
            .send((self.plans.len(), plain))
            .map_err(|_| PipelineClosed)?;
        self.plans.push((len, std::mem::take(&mut self.blocks)));
        Ok(())
    }

    /// Packs the held-back nodes, closes the last segment and returns every segment's (length, blocks).
    fn finish(mut self) -> Result<Vec<(u32, Vec<BlockRef>)>, AddError> {
        let closed = |_| AddError::Store(StoreError::Corrupt("the shard writer stopped".into()));
        self.close_segment().map_err(closed)?;
        for (cid, data) in std::mem::take(&mut self.nodes) {
            self.pack(&cid, &data).map_err(closed)?;
        }
        self.close_segment().map_err(closed)?;
        Ok(self.plans)
    }
}

impl BlockSink for Packer {
    type Error = PipelineClosed;
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), PipelineClosed> {
        if !self.seen.insert(*cid) {
            return Ok(()); // the same block already stored in this add
        }
        match cid.codec() {
            DAG_PB => {
                self.nodes.push((*cid, data.to_vec()));
                Ok(())
            }
            _ => self.pack(cid, data),
        }
    }
}

/// Turns files and trees into UnixFS blocks for a sink.
struct Importer<'p, S> {
    sink: S,
    read: u64,
    progress: &'p mut dyn FnMut(u64),
}

trait SinkError {
    fn into_add_error(self) -> AddError;
}
impl SinkError for std::convert::Infallible {
    fn into_add_error(self) -> AddError {
        match self {}
    }
}
impl SinkError for PipelineClosed {
    fn into_add_error(self) -> AddError {
        AddError::Store(StoreError::Corrupt("the shard writer stopped".into()))
    }
}

impl<S: BlockSink> Importer<'_, S>
where
    S::Error: SinkError,
{
    fn import_path(&mut self, path: &Path) -> Result<(Entry, Kind), AddError> {
        let io = |source| AddError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            Ok((self.import_dir(path)?, Kind::Directory))
        } else if meta.is_file() {
            let mut f = fs::File::open(path).map_err(io)?;
            Ok((self.import_stream(&mut f, path)?, Kind::File))
        } else {
            Err(AddError::Unsupported {
                path: path.to_path_buf(),
                what: "a special file",
            })
        }
    }

    fn import_stream(&mut self, reader: &mut dyn Read, path: &Path) -> Result<Entry, AddError> {
        let mut builder = FileBuilder::new();
        let mut chunk = vec![0u8; CHUNK_BYTES];
        loop {
            let n = read_full(reader, &mut chunk).map_err(|source| AddError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if n == 0 {
                break;
            }
            builder
                .push_chunk(&mut self.sink, &chunk[..n])
                .map_err(SinkError::into_add_error)?;
            self.read += n as u64;
            (self.progress)(self.read);
            if n < CHUNK_BYTES {
                break;
            }
        }
        builder
            .finish(&mut self.sink)
            .map_err(SinkError::into_add_error)
    }

    /// Imports a tree. Local directories are as deep as the filesystem allows, so recursion is bounded by it.
    fn import_dir(&mut self, dir: &Path) -> Result<Entry, AddError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AddError::Io { path, source }
        };
        let mut children: Vec<(String, PathBuf)> = Vec::new();
        for item in fs::read_dir(dir).map_err(io(dir))? {
            let item = item.map_err(io(dir))?;
            let path = item.path();
            let name = item
                .file_name()
                .into_string()
                .map_err(|_| AddError::NonUtf8Name { path: path.clone() })?;
            children.push((name, path));
        }
        children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut entries = Vec::with_capacity(children.len());
        for (name, path) in children {
            let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
            let ft = meta.file_type();
            let entry = if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(io(&path))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| AddError::NonUtf8Name { path: path.clone() })?;
                unixfs::symlink(&mut self.sink, &target).map_err(SinkError::into_add_error)?
            } else if ft.is_dir() {
                self.import_dir(&path)?
            } else if ft.is_file() {
                let mut f = fs::File::open(&path).map_err(io(&path))?;
                self.import_stream(&mut f, &path)?
            } else {
                return Err(AddError::Unsupported {
                    path,
                    what: "a special file",
                });
            };
            entries.push((name, entry));
        }
        unixfs::directory(&mut self.sink, entries)
            .map_err(SinkError::into_add_error)?
            .map_err(|source| AddError::Dir {
                path: dir.to_path_buf(),
                source,
            })
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The UnixFS CID of a path, computed without storing anything (what `ipfs add --only-hash` prints).
pub fn cid_of_path(path: &Path) -> Result<Cid, AddError> {
    let mut importer = Importer {
        sink: NullSink,
        read: 0,
        progress: &mut |_| {},
    };
    importer.import_path(path).map(|(e, _)| e.cid)
}
