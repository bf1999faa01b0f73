//! The read path: open a manifest with a capability, rebuild segments from any k valid shards, and walk the
//! UnixFS DAG checking every block against its CID.
//!
//! Segments are decoded by a small cache with read-ahead workers: a sequential read keeps the next segments
//! decoding on the other core while the current one is written out. DAG walks are iterative, sizes are checked
//! against what parents declare, and only blocks listed in the manifest can be reached, so a hostile DAG cannot
//! make a reader loop, recurse or allocate without bound.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cid::Cid;
use crossbeam_channel::{Sender, bounded};

use crate::capability::{Capability, CapabilityError};
use crate::cids::{self, DAG_PB, ParseCidError, RAW};
use crate::manifest::{Kind, Manifest, ManifestError};
use crate::segment::{self, DecodeSegmentError, FileKey};
use crate::store::{BlockStore, MemStore, RocksStore, StoreError};
use crate::unixfs::{self, DataType, DecodeError, Node};

/// Segments fetched ahead of a sequential read. Over the network a segment's fetch is latency-bound (about
/// 20 to 90 ms on a loaded loopback devnet), so several in flight keep a read streaming: four decoders and six
/// segments ahead took a cold 256 MiB gateway read from 144 to 370 MB/s in `huds bench gateway`.
const READ_AHEAD_SEGMENTS: usize = 6;
const DECODERS: usize = 4;
/// Decoded segments kept (4 MiB each). It must hold the segment being read, those decoding and those decoded
/// ahead, or a segment decoded ahead is evicted before it is read and decoded again: at 8 with 4 decoders and 6
/// ahead, `huds bench net` swung between 0.4x and 0.6x of plain HTTP; at 16 it holds 0.70-0.75x.
const CACHED_SEGMENTS_MAX: usize = 16;
const _: () = assert!(CACHED_SEGMENTS_MAX > 1 + DECODERS + READ_AHEAD_SEGMENTS);
const DAG_DEPTH_MAX: usize = 64;

/// Why a shard could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardProblem {
    Missing,
    Corrupt,
    Failed(String),
}

/// What was fetched of one segment's shards, by index: valid bytes, why not, or `None` if never asked for.
pub type SegmentFetch = Vec<Option<Result<Vec<u8>, ShardProblem>>>;

/// Where shards come from: the local store, or the network.
pub trait ShardSource: Send + Sync {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, ShardProblem>;

    /// Fetches the shards of one segment until `k` valid ones (`shard_len` bytes, matching their CIDs) are in
    /// hand. Only valid shards come back as `Ok`. This default asks for the data shards first (no decoding
    /// needed when all arrive), then for as many parity shards as are still missing; a network source instead
    /// asks in parallel and hedges against slow peers.
    fn fetch_segment(&self, cids: &[Cid], k: usize, shard_len: usize) -> SegmentFetch {
        let mut out: SegmentFetch = vec![None; cids.len()];
        let (mut found, mut next) = (0, 0);
        while found < k && next < cids.len() {
            let r = match self.fetch(&cids[next]) {
                Ok(b) if b.len() == shard_len && cids::verify(&cids[next], &b).is_ok() => {
                    found += 1;
                    Ok(b)
                }
                Ok(_) => Err(ShardProblem::Corrupt),
                Err(p) => Err(p),
            };
            out[next] = Some(r);
            next += 1;
        }
        out
    }
}

/// Reads a shard from a local store as a source: shards are checked against their CIDs by the decoder, not twice
/// here.
fn fetch_local(store: &dyn BlockStore, cid: &Cid) -> Result<Vec<u8>, ShardProblem> {
    match store.shard_unverified(cid) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(ShardProblem::Missing),
        Err(e) => Err(ShardProblem::Failed(e.to_string())),
    }
}

/// Any block store behind the trait, as a shard source.
pub struct LocalSource(pub Arc<dyn BlockStore>);

impl ShardSource for LocalSource {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, ShardProblem> {
        fetch_local(&*self.0, cid)
    }
}

impl ShardSource for RocksStore {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, ShardProblem> {
        fetch_local(self, cid)
    }
}

impl ShardSource for MemStore {
    fn fetch(&self, cid: &Cid) -> Result<Vec<u8>, ShardProblem> {
        fetch_local(self, cid)
    }
}

/// A segment that could not be rebuilt, with what was found of each shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment {index} of {segments}: {cause}{}", describe(problems))]
pub struct SegmentError {
    pub index: usize,
    pub segments: usize,
    pub cause: DecodeSegmentError,
    /// (shard number, CID, problem) for every shard that could not be used.
    pub problems: Vec<(usize, Cid, ShardProblem)>,
}

fn describe(problems: &[(usize, Cid, ShardProblem)]) -> String {
    let mut out = String::new();
    for (i, cid, p) in problems {
        let what = match p {
            ShardProblem::Missing => "missing".to_string(),
            ShardProblem::Corrupt => "corrupt".to_string(),
            ShardProblem::Failed(e) => format!("unreadable: {e}"),
        };
        out.push_str(&format!("; shard {i} ({cid}) {what}"));
    }
    out
}

/// Read failures: each says what to do or what is damaged.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Cid(#[from] ParseCidError),
    #[error(
        "{0} is not a public file known here; a private file is read with its capability (huds:...)"
    )]
    UnknownCid(Cid),
    #[error("manifest {0} is not stored here")]
    ManifestMissing(Cid),
    #[error(
        "the capability's key does not open manifest {0}: wrong key, or the manifest is damaged"
    )]
    ManifestOpen(Cid),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("block {0} is referenced by the DAG but not in the manifest")]
    BlockMissing(Cid),
    #[error("block {0} does not match its CID")]
    BlockCorrupt(Cid),
    #[error("block {cid}: {source}")]
    Decode { cid: Cid, source: DecodeError },
    #[error("block {0}: sizes differ from what its parent declares")]
    Sizes(Cid),
    #[error("DAG deeper than {DAG_DEPTH_MAX} levels")]
    TooDeep,
    #[error("{0} is a directory: use `huds ls` or `huds get`")]
    IsDirectory(String),
    #[error("{0} is not a directory")]
    NotDirectory(String),
    #[error("no entry {0:?} in the directory")]
    NoEntry(String),
    #[error("directory entry name {0:?} is unsafe to write (it must be a plain file name)")]
    BadName(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("writing output: {0}")]
    Output(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not a symlink")]
    NotSymlink(String),
    #[error("{0} is not pinned here: nothing to remove")]
    NotPinned(String),
}

/// Resolves `CAP|CID` text to a capability: a capability as is, a CID through the store's public table.
pub fn resolve_capability(store: &dyn BlockStore, text: &str) -> Result<Capability, ReadError> {
    if text.starts_with("huds:") {
        return Ok(Capability::parse(text)?);
    }
    let cid = cids::parse(text)?;
    match store.public_capability(&cid)? {
        Some(cap) => Ok(Capability::parse(&cap)?),
        None => Err(ReadError::UnknownCid(cid)),
    }
}

/// What [`remove`] took out of a store.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The file's root CID and the sealed manifest its capability names.
    pub root: Cid,
    pub manifest: Cid,
    pub unpinned: crate::store::Unpinned,
}

/// The capability and root of `CAP|CID` if this store added it (its sealed manifest is here), else
/// `NotPinned`: what `huds rm` checks before it ends a deal. Changes nothing.
pub fn pinned(store: &dyn BlockStore, text: &str) -> Result<(Capability, Cid), ReadError> {
    let cap = resolve_capability(store, text)?;
    let root = stored_root(store, &cap)?.ok_or_else(|| ReadError::NotPinned(text.to_string()))?;
    Ok((cap, root))
}

/// The root CID of the DAG `cap` names, from its sealed manifest in `store`; `None` if the store lacks it.
fn stored_root(store: &dyn BlockStore, cap: &Capability) -> Result<Option<Cid>, ReadError> {
    let Some(sealed) = store.manifest(&cap.manifest)? else {
        return Ok(None);
    };
    let plain =
        segment::open_manifest(&cap.key, &sealed).ok_or(ReadError::ManifestOpen(cap.manifest))?;
    Ok(Some(Manifest::decode(&plain)?.root))
}

/// One pin of a store, as `huds pins` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinListing {
    /// The root CID, read from the sealed manifest; `None` for a pin written before pins kept capabilities.
    pub root: Option<Cid>,
    pub manifest: Cid,
    pub name: String,
    pub size: u64,
    pub added_unix_s: u64,
    pub public: bool,
    pub cap: Option<String>,
    /// Why the root could not be read (a capability that does not parse, a manifest missing or damaged): the
    /// pin is listed anyway, so it can still be removed.
    pub error: Option<String>,
}

/// What `store` pinned (what `huds add` put there), oldest first. Each root comes from the pin's own sealed
/// manifest, opened with the capability the pin keeps.
pub fn pins(store: &dyn BlockStore) -> Result<Vec<PinListing>, ReadError> {
    let mut out = Vec::new();
    for (manifest, pin) in store.pins()? {
        let root = |text: &str| -> Result<Cid, ReadError> {
            stored_root(store, &Capability::parse(text)?)?
                .ok_or(ReadError::ManifestMissing(manifest))
        };
        let (root, error) = match pin.cap.as_deref().map(root) {
            Some(Ok(r)) => (Some(r), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, None),
        };
        out.push(PinListing {
            root,
            manifest,
            name: pin.name,
            size: pin.size,
            added_unix_s: pin.added_unix_s,
            public: pin.public,
            cap: pin.cap,
            error,
        });
    }
    out.sort_by(|a, b| {
        (a.added_unix_s, &a.name, a.manifest.to_bytes()).cmp(&(
            b.added_unix_s,
            &b.name,
            b.manifest.to_bytes(),
        ))
    });
    Ok(out)
}

/// `unix_s` as UTC in RFC 3339 (`2026-12-06T05:52:54Z`).
pub fn utc_text(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Unpins `CAP|CID` from `store` (`huds rm`): the pin, its manifest, its public entry and the shards nothing
/// else holds go in one write (`BlockStore::unpin`). A target this store never pinned is an error and
/// changes nothing.
pub fn remove(store: &dyn BlockStore, text: &str) -> Result<Removed, ReadError> {
    let (cap, root) = pinned(store, text)?;
    // The public entry goes only if it is this capability's: another add of the same root keeps its own.
    let public = store
        .public_capability(&root)?
        .is_some_and(|c| c == cap.to_text());
    let unpinned = store
        .unpin(&cap.manifest, public.then_some(&root))?
        .ok_or_else(|| ReadError::NotPinned(text.to_string()))?;
    Ok(Removed {
        root,
        manifest: cap.manifest,
        unpinned,
    })
}

/// A block held in a decoded segment (or a part of one); cloning shares the segment.
#[derive(Clone)]
pub struct Block {
    segment: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.segment[self.range.clone()]
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub cid: Cid,
    pub kind: EntryKind,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// An opened DAG: the manifest, its block index and the segment cache.
pub struct Reader {
    manifest: Arc<Manifest>,
    index: HashMap<Cid, (usize, usize, usize)>,
    cache: SegmentCache,
    /// Blocks already checked against their CIDs. A segment is sealed (ChaCha20-Poly1305) under the file key,
    /// so every decoding of it yields the same bytes or fails: a block checked once needs no second hash when
    /// its segment is decoded again or read from the cache.
    verified: Mutex<HashSet<Cid>>,
}

impl Reader {
    /// Opens the DAG a capability names, fetching the sealed manifest from `source` if the store lacks it.
    pub fn open_with(
        store: &dyn BlockStore,
        source: Arc<dyn ShardSource>,
        cap: &Capability,
    ) -> Result<Reader, ReadError> {
        let sealed = match store.manifest(&cap.manifest)? {
            Some(s) => s,
            None => source
                .fetch(&cap.manifest)
                .map_err(|_| ReadError::ManifestMissing(cap.manifest))?,
        };
        Self::open(source, cap, &sealed)
    }

    /// Opens the DAG a capability names, with manifest and shards from the local store.
    pub fn open_local(store: Arc<dyn BlockStore>, cap: &Capability) -> Result<Reader, ReadError> {
        let sealed = store
            .manifest(&cap.manifest)?
            .ok_or(ReadError::ManifestMissing(cap.manifest))?;
        Self::open(Arc::new(LocalSource(store)), cap, &sealed)
    }

    /// Opens a DAG given its sealed manifest (already fetched) and a shard source.
    pub fn open(
        source: Arc<dyn ShardSource>,
        cap: &Capability,
        sealed: &[u8],
    ) -> Result<Reader, ReadError> {
        cids::verify(&cap.manifest, sealed).map_err(|_| ReadError::ManifestOpen(cap.manifest))?;
        let plain = segment::open_manifest(&cap.key, sealed)
            .ok_or(ReadError::ManifestOpen(cap.manifest))?;
        let manifest = Arc::new(Manifest::decode(&plain)?);
        let index = manifest.block_index();
        let cache = SegmentCache::new(manifest.clone(), cap.key.clone(), source);
        Ok(Reader {
            manifest,
            index,
            cache,
            verified: Mutex::new(HashSet::new()),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn root(&self) -> Cid {
        self.manifest.root
    }

    /// A block, checked against its CID.
    pub fn block(&self, cid: &Cid) -> Result<Block, ReadError> {
        let &(seg, off, len) = self.index.get(cid).ok_or(ReadError::BlockMissing(*cid))?;
        let segment = self.cache.get(seg)?;
        let end = off + len;
        if end > segment.len() {
            return Err(ReadError::BlockCorrupt(*cid));
        }
        let known = self
            .verified
            .lock()
            .expect("the verified-block lock is never poisoned")
            .contains(cid);
        if !known {
            cids::verify(cid, &segment[off..end]).map_err(|_| ReadError::BlockCorrupt(*cid))?;
            let mut verified = self
                .verified
                .lock()
                .expect("the verified-block lock is never poisoned");
            // Bounded by the manifest's block count, which the index holds anyway.
            verified.insert(*cid);
        }
        Ok(Block {
            segment,
            range: off..end,
        })
    }

    fn node(&self, cid: &Cid) -> Result<(Block, Node), ReadError> {
        let block = self.block(cid)?;
        let node = match cid.codec() {
            // A raw leaf's bytes stay in the segment; the node only carries its size.
            RAW => Node {
                kind: DataType::Raw,
                links: Vec::new(),
                data: Vec::new(),
                filesize: Some(block.len() as u64),
                blocksizes: Vec::new(),
            },
            codec => Node::decode(codec, &block)
                .map_err(|source| ReadError::Decode { cid: *cid, source })?,
        };
        Ok((block, node))
    }

    /// The kind and content size of the node at `cid`.
    pub fn stat(&self, cid: &Cid) -> Result<(EntryKind, u64), ReadError> {
        let (_, node) = self.node(cid)?;
        Ok(match node.kind {
            DataType::Directory | DataType::HamtShard => (EntryKind::Directory, 0),
            DataType::Symlink => (EntryKind::Symlink, node.data.len() as u64),
            _ => (EntryKind::File, node.file_size()),
        })
    }

    /// Follows a `/`-separated path of names from `root`.
    pub fn resolve(&self, root: &Cid, path: &str) -> Result<Cid, ReadError> {
        let mut cid = *root;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let (_, node) = self.node(&cid)?;
            if node.kind != DataType::Directory {
                return Err(ReadError::NotDirectory(name.to_string()));
            }
            cid = node
                .links
                .iter()
                .find(|l| l.name == name)
                .ok_or_else(|| ReadError::NoEntry(name.to_string()))?
                .cid;
        }
        Ok(cid)
    }

    /// The names and CIDs the directory at `cid` links to, in stored order, without opening the entries.
    pub fn links(&self, cid: &Cid) -> Result<Vec<(String, Cid)>, ReadError> {
        let (_, node) = self.node(cid)?;
        if node.kind != DataType::Directory {
            return Err(ReadError::NotDirectory(cid.to_string()));
        }
        Ok(node.links.into_iter().map(|l| (l.name, l.cid)).collect())
    }

    /// The target of the symlink at `cid`, as stored.
    pub fn symlink_target(&self, cid: &Cid) -> Result<Vec<u8>, ReadError> {
        let (_, node) = self.node(cid)?;
        if node.kind != DataType::Symlink {
            return Err(ReadError::NotSymlink(cid.to_string()));
        }
        Ok(node.data)
    }

    /// The entries of the directory at `cid`.
    pub fn list(&self, cid: &Cid) -> Result<Vec<DirEntry>, ReadError> {
        Ok(self.list_page(cid, 0, usize::MAX)?.0)
    }

    /// Entries `skip..skip + take` of the directory at `cid`, and how many it holds: only the page's entries
    /// are fetched, so a listing of a large directory costs one page.
    pub fn list_page(
        &self,
        cid: &Cid,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<DirEntry>, usize), ReadError> {
        let (_, node) = self.node(cid)?;
        if node.kind != DataType::Directory {
            return Err(ReadError::NotDirectory(cid.to_string()));
        }
        let total = node.links.len();
        let entries = node
            .links
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|l| {
                let (kind, size) = self.stat(&l.cid)?;
                Ok(DirEntry {
                    name: l.name,
                    cid: l.cid,
                    kind,
                    size,
                })
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        Ok((entries, total))
    }

    /// Keeps up to `segments` decoded segments (default 8) for this reader's later reads, e.g. in a server
    /// that reads the same hot file again and again.
    pub fn with_cached_segments(self, segments: usize) -> Self {
        self.cache
            .shared
            .cached_max
            .store(segments.max(1), std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Writes bytes `range` of the file at `cid` to `out`; returns the bytes written.
    pub fn read_file(
        &self,
        cid: &Cid,
        range: Range<u64>,
        out: &mut dyn Write,
    ) -> Result<u64, ReadError> {
        self.read_file_blocks(cid, range, &mut |piece| {
            out.write_all(&piece).map_err(ReadError::Output)
        })
    }

    /// Hands bytes `range` of the file at `cid` to `out` in order, as pieces of the decoded segments (no copy for
    /// raw leaves); returns the bytes handed over.
    pub fn read_file_blocks(
        &self,
        cid: &Cid,
        range: Range<u64>,
        out: &mut dyn FnMut(Block) -> Result<(), ReadError>,
    ) -> Result<u64, ReadError> {
        let (_, root) = self.node(cid)?;
        match root.kind {
            DataType::Directory | DataType::HamtShard => {
                return Err(ReadError::IsDirectory(cid.to_string()));
            }
            DataType::Symlink | DataType::Metadata => {
                return Err(ReadError::NotDirectory(cid.to_string()));
            }
            DataType::Raw | DataType::File => {}
        }
        let size = root.file_size();
        let range = range.start.min(size)..range.end.min(size);
        let mut written = 0;
        // (cid, offset of its first byte in the file, size its parent declares, depth)
        let mut stack = vec![(*cid, 0u64, size, 0usize)];
        while let Some((cid, start, expected, depth)) = stack.pop() {
            if depth > DAG_DEPTH_MAX {
                return Err(ReadError::TooDeep);
            }
            let (block, node) = self.node(&cid)?;
            if !matches!(node.kind, DataType::Raw | DataType::File) || node.file_size() != expected
            {
                return Err(ReadError::Sizes(cid));
            }
            let inline: &[u8] = if cid.codec() == RAW {
                &block
            } else {
                &node.data
            };
            let end = start + inline.len() as u64;
            if range.start < end && range.end > start {
                let from = (range.start.max(start) - start) as usize;
                let to = (range.end.min(end) - start) as usize;
                let piece = if cid.codec() == RAW {
                    Block {
                        segment: block.segment.clone(),
                        range: block.range.start + from..block.range.start + to,
                    }
                } else {
                    Block {
                        segment: Arc::new(inline[from..to].to_vec()),
                        range: 0..to - from,
                    }
                };
                out(piece)?;
                written += (to - from) as u64;
            }
            let declared: u64 = inline.len() as u64 + node.blocksizes.iter().sum::<u64>();
            if cid.codec() == DAG_PB && declared != expected {
                return Err(ReadError::Sizes(cid));
            }
            let mut child_start = end;
            let mut children = Vec::new();
            for (link, &bs) in node.links.iter().zip(&node.blocksizes) {
                if bs > 0 && range.start < child_start + bs && range.end > child_start {
                    children.push((link.cid, child_start, bs, depth + 1));
                }
                child_start += bs;
            }
            stack.extend(children.into_iter().rev());
        }
        Ok(written)
    }

    /// Writes the whole DAG at `cid` to the path `out` (a file, a tree, or a symlink). Output goes to
    /// `OUT.huds-partial` first and is renamed into place only when complete, so a failed get leaves nothing
    /// that looks whole.
    pub fn export(&self, cid: &Cid, out: &Path) -> Result<(), ReadError> {
        let mut partial = out.as_os_str().to_owned();
        partial.push(".huds-partial");
        let partial = PathBuf::from(partial);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReadError::Io { path, source }
        };
        remove_any(&partial).map_err(io(&partial))?;
        let result = self.export_into(cid, &partial);
        if let Err(e) = result {
            let _ = remove_any(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, out).map_err(io(out))
    }

    fn export_into(&self, cid: &Cid, out: &Path) -> Result<(), ReadError> {
        let mut stack = vec![(*cid, out.to_path_buf(), 0usize)];
        while let Some((cid, path, depth)) = stack.pop() {
            if depth > DAG_DEPTH_MAX {
                return Err(ReadError::TooDeep);
            }
            let io = |source| ReadError::Io {
                path: path.clone(),
                source,
            };
            let (_, node) = self.node(&cid)?;
            match node.kind {
                DataType::Directory => {
                    std::fs::create_dir(&path).map_err(io)?;
                    for link in node.links.iter().rev() {
                        if !unixfs::valid_name(&link.name) {
                            return Err(ReadError::BadName(link.name.clone()));
                        }
                        stack.push((link.cid, path.join(&link.name), depth + 1));
                    }
                }
                DataType::Symlink => {
                    let target = String::from_utf8(node.data)
                        .map_err(|_| ReadError::BadName(path.display().to_string()))?;
                    std::os::unix::fs::symlink(target, &path).map_err(io)?;
                }
                _ => {
                    // A new file only: a DAG that names an entry twice (a symlink, then a file through it)
                    // gets an error, never a write through the link to outside `out`.
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(io)?;
                    let mut w = io::BufWriter::with_capacity(1 << 20, file);
                    self.read_file(&cid, 0..u64::MAX, &mut w)?;
                    w.flush().map_err(io)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the whole DAG's content at `cid` when it is a file; an error for a directory.
    pub fn cat(&self, cid: &Cid, out: &mut dyn Write) -> Result<u64, ReadError> {
        self.read_file(cid, 0..u64::MAX, out)
    }

    pub fn kind(&self) -> Kind {
        self.manifest.kind
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Segment cache

enum Slot {
    Loading,
    Ready(Arc<Vec<u8>>),
    Failed(SegmentError),
}

struct CacheState {
    slots: HashMap<usize, Slot>,
    /// Ready segments, least recently used first.
    lru: VecDeque<usize>,
}

struct CacheShared {
    manifest: Arc<Manifest>,
    key: FileKey,
    source: Arc<dyn ShardSource>,
    state: Mutex<CacheState>,
    changed: Condvar,
    /// Ready segments kept.
    cached_max: AtomicUsize,
}

struct SegmentCache {
    shared: Arc<CacheShared>,
    jobs: Option<Sender<usize>>,
    workers: Vec<JoinHandle<()>>,
}

impl SegmentCache {
    fn new(manifest: Arc<Manifest>, key: FileKey, source: Arc<dyn ShardSource>) -> Self {
        let shared = Arc::new(CacheShared {
            manifest,
            key,
            source,
            state: Mutex::new(CacheState {
                slots: HashMap::new(),
                lru: VecDeque::new(),
            }),
            changed: Condvar::new(),
            cached_max: AtomicUsize::new(CACHED_SEGMENTS_MAX),
        });
        let (tx, rx) = bounded::<usize>(READ_AHEAD_SEGMENTS);
        let workers = (0..DECODERS)
            .map(|_| {
                let (rx, shared) = (rx.clone(), shared.clone());
                std::thread::spawn(move || {
                    for i in rx {
                        let r = shared.decode(i);
                        shared.finish(i, r);
                    }
                })
            })
            .collect();
        SegmentCache {
            shared,
            jobs: Some(tx),
            workers,
        }
    }

    fn get(&self, i: usize) -> Result<Arc<Vec<u8>>, SegmentError> {
        let result = self.get_inner(i);
        for next in i + 1..=i + READ_AHEAD_SEGMENTS {
            self.prefetch(next);
        }
        result
    }

    fn get_inner(&self, i: usize) -> Result<Arc<Vec<u8>>, SegmentError> {
        let mut st = self
            .shared
            .state
            .lock()
            .expect("cache lock is never poisoned");
        loop {
            match st.slots.get(&i) {
                Some(Slot::Ready(s)) => {
                    let s = s.clone();
                    if let Some(pos) = st.lru.iter().position(|&x| x == i) {
                        st.lru.remove(pos);
                    }
                    st.lru.push_back(i);
                    return Ok(s);
                }
                Some(Slot::Failed(e)) => {
                    // Failures are not kept: the next read tries the shards again.
                    let e = e.clone();
                    st.slots.remove(&i);
                    return Err(e);
                }
                Some(Slot::Loading) => {
                    st = self
                        .shared
                        .changed
                        .wait(st)
                        .expect("cache lock is never poisoned")
                }
                None => {
                    st.slots.insert(i, Slot::Loading);
                    drop(st);
                    let r = self.shared.decode(i);
                    self.shared.finish(i, r);
                    st = self
                        .shared
                        .state
                        .lock()
                        .expect("cache lock is never poisoned");
                }
            }
        }
    }

    fn prefetch(&self, i: usize) {
        if i >= self.shared.manifest.segments.len() {
            return;
        }
        let mut st = self
            .shared
            .state
            .lock()
            .expect("cache lock is never poisoned");
        if st.slots.contains_key(&i) {
            return;
        }
        let Some(jobs) = &self.jobs else { return };
        if jobs.try_send(i).is_ok() {
            st.slots.insert(i, Slot::Loading);
        }
    }
}

impl Drop for SegmentCache {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl CacheShared {
    fn finish(&self, i: usize, r: Result<Vec<u8>, SegmentError>) {
        let mut st = self.state.lock().expect("cache lock is never poisoned");
        match r {
            Ok(seg) => {
                st.slots.insert(i, Slot::Ready(Arc::new(seg)));
                st.lru.push_back(i);
                while st.lru.len() > self.cached_max.load(Ordering::Relaxed) {
                    let old = st.lru.pop_front().expect("non-empty");
                    st.slots.remove(&old);
                }
            }
            Err(e) => {
                st.slots.insert(i, Slot::Failed(e));
            }
        }
        self.changed.notify_all();
    }

    /// Rebuilds segment `i` from the first k shards that arrive intact.
    fn decode(&self, i: usize) -> Result<Vec<u8>, SegmentError> {
        let seg = &self.manifest.segments[i];
        let coding = self.manifest.coding();
        let shard_len = coding.shard_len(seg.len as usize);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; coding.total()];
        let mut problems = Vec::new();
        let fetched = self.source.fetch_segment(&seg.shards, coding.k, shard_len);
        for (j, got) in fetched.into_iter().enumerate() {
            match got {
                Some(Ok(bytes)) => shards[j] = Some(bytes),
                Some(Err(p)) => problems.push((j, seg.shards[j], p)),
                None => {}
            }
        }
        segment::decode_segment(&self.key, coding, i as u64, seg.len as usize, &mut shards).map_err(
            |cause| SegmentError {
                index: i,
                segments: self.manifest.segments.len(),
                cause,
                problems,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn times_print_as_utc_calendar_dates() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(1_796_536_374), "2026-12-06T05:52:54Z");
        assert_eq!(utc_text(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
