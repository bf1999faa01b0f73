//! UnixFS in dag-pb, byte for byte as `ipfs add --cid-version=1` writes it.
//!
//! Files: 256 KiB fixed chunks stored as raw leaves, a balanced DAG of dag-pb nodes with at most 174 links each,
//! a single-chunk file being its raw leaf. Directories: one dag-pb node whose links are sorted by name. The
//! builders here only compute blocks and hand them to a [`BlockSink`]; where the blocks go is the caller's choice.
//!
//! Decoding takes untrusted bytes: every length is checked, nothing recurses, and errors say what was wrong.

use cid::Cid;

use crate::cids::{self, DAG_PB, RAW};

/// Bytes per leaf chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Links per file node in the balanced layout.
pub const LINKS_PER_NODE_MAX: usize = 174;
/// Largest block HUDS accepts from a DAG (IPFS's own limit).
pub const BLOCK_BYTES_MAX: usize = 1024 * 1024 + 1024;
/// Above this estimated size IPFS shards a directory into a HAMT, which HUDS does not write yet.
pub const DIRECTORY_ESTIMATE_BYTES_MAX: usize = 256 * 1024;

/// Where builders put the blocks they make, children before parents.
pub trait BlockSink {
    type Error;
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Self::Error>;
}

/// A sink that keeps nothing: used to compute a CID without storing.
pub struct NullSink;

impl BlockSink for NullSink {
    type Error = std::convert::Infallible;
    fn put(&mut self, _: &Cid, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A link as the builders track it: the child's CID, its cumulative DAG size and its content size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub cid: Cid,
    pub tsize: u64,
    pub filesize: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// Protobuf encoding

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// UnixFS `Data.DataType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Raw = 0,
    Directory = 1,
    File = 2,
    Metadata = 3,
    Symlink = 4,
    HamtShard = 5,
}

impl DataType {
    fn from_u64(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Raw,
            1 => Self::Directory,
            2 => Self::File,
            3 => Self::Metadata,
            4 => Self::Symlink,
            5 => Self::HamtShard,
            _ => return None,
        })
    }
}

fn encode_unixfs(
    kind: DataType,
    data: Option<&[u8]>,
    filesize: Option<u64>,
    blocksizes: &[u64],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + blocksizes.len() * 4);
    out.push(0x08);
    put_varint(&mut out, kind as u64);
    if let Some(d) = data {
        put_bytes_field(&mut out, 0x12, d);
    }
    if let Some(fs) = filesize {
        out.push(0x18);
        put_varint(&mut out, fs);
    }
    for &bs in blocksizes {
        out.push(0x20);
        put_varint(&mut out, bs);
    }
    out
}

/// Encodes a dag-pb node canonically: links first (field 2), then data (field 1).
fn encode_pbnode<'a>(links: impl Iterator<Item = (&'a Cid, &'a str, u64)>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut link = Vec::with_capacity(64);
    for (cid, name, tsize) in links {
        link.clear();
        put_bytes_field(&mut link, 0x0a, &cid.to_bytes());
        put_bytes_field(&mut link, 0x12, name.as_bytes());
        link.push(0x18);
        put_varint(&mut link, tsize);
        put_bytes_field(&mut out, 0x12, &link);
    }
    put_bytes_field(&mut out, 0x0a, data);
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Protobuf decoding

/// A dag-pb or UnixFS block that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated protobuf")]
    Truncated,
    #[error("varint too long")]
    VarintOverflow,
    #[error("unsupported protobuf wire type {0}")]
    WireType(u8),
    #[error("malformed link: {0}")]
    Link(&'static str),
    #[error("node has no UnixFS data")]
    NoData,
    #[error("unknown UnixFS type {0}")]
    UnknownType(u64),
    #[error("unsupported CID codec 0x{0:x} (UnixFS uses raw and dag-pb)")]
    Codec(u64),
    #[error("file node's sizes do not add up")]
    Sizes,
    #[error("block of {0} bytes is over the {BLOCK_BYTES_MAX}-byte limit")]
    TooLarge(usize),
}

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Next (field number, value), or None at the end.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Other
            }
            w => return Err(DecodeError::WireType(w as u8)),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// A link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub cid: Cid,
    pub name: String,
    pub tsize: u64,
}

fn decode_link(bytes: &[u8]) -> Result<Link, DecodeError> {
    let mut r = Reader { buf: bytes };
    let (mut cid, mut name, mut tsize) = (None, String::new(), 0);
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Bytes(b)) => {
                cid = Some(Cid::try_from(b).map_err(|_| DecodeError::Link("bad CID"))?)
            }
            (2, Field::Bytes(b)) => {
                name = String::from_utf8(b.to_vec())
                    .map_err(|_| DecodeError::Link("name is not UTF-8"))?
            }
            (3, Field::Varint(v)) => tsize = v,
            (1..=3, _) => return Err(DecodeError::Link("field of the wrong type")),
            _ => {}
        }
    }
    Ok(Link {
        cid: cid.ok_or(DecodeError::Link("no CID"))?,
        name,
        tsize,
    })
}

/// A decoded UnixFS node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: DataType,
    pub links: Vec<Link>,
    /// The `Data.Data` field: inline file bytes, or a symlink's target.
    pub data: Vec<u8>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
}

impl Node {
    /// Decodes a block given its CID's codec: a raw block is a file leaf.
    pub fn decode(codec: u64, block: &[u8]) -> Result<Node, DecodeError> {
        if block.len() > BLOCK_BYTES_MAX {
            return Err(DecodeError::TooLarge(block.len()));
        }
        match codec {
            RAW => Ok(Node {
                kind: DataType::Raw,
                links: Vec::new(),
                data: block.to_vec(),
                filesize: Some(block.len() as u64),
                blocksizes: Vec::new(),
            }),
            DAG_PB => Self::decode_pb(block),
            other => Err(DecodeError::Codec(other)),
        }
    }

    fn decode_pb(block: &[u8]) -> Result<Node, DecodeError> {
        let mut r = Reader { buf: block };
        let mut links = Vec::new();
        let mut unixfs = None;
        while let Some((num, f)) = r.field()? {
            match (num, f) {
                (2, Field::Bytes(b)) => links.push(decode_link(b)?),
                (1, Field::Bytes(b)) => unixfs = Some(b),
                _ => {}
            }
        }
        let mut r = Reader {
            buf: unixfs.ok_or(DecodeError::NoData)?,
        };
        let mut node = Node {
            kind: DataType::Raw,
            links,
            data: Vec::new(),
            filesize: None,
            blocksizes: Vec::new(),
        };
        let mut kind = None;
        while let Some((num, f)) = r.field()? {
            match (num, f) {
                (1, Field::Varint(v)) => {
                    kind = Some(DataType::from_u64(v).ok_or(DecodeError::UnknownType(v))?)
                }
                (2, Field::Bytes(b)) => node.data = b.to_vec(),
                (3, Field::Varint(v)) => node.filesize = Some(v),
                (4, Field::Varint(v)) => node.blocksizes.push(v),
                (4, Field::Bytes(b)) => {
                    // Packed repeated field: accepted on read, never written.
                    let mut p = Reader { buf: b };
                    while !p.buf.is_empty() {
                        node.blocksizes.push(p.varint()?);
                    }
                }
                _ => {}
            }
        }
        node.kind = kind.ok_or(DecodeError::NoData)?;
        if node.kind == DataType::File
            && !node.links.is_empty()
            && node.blocksizes.len() != node.links.len()
        {
            return Err(DecodeError::Sizes);
        }
        Ok(node)
    }

    /// Content bytes of a file node: for a file, the sum of its inline data and children.
    pub fn file_size(&self) -> u64 {
        match self.kind {
            DataType::Raw | DataType::File => self
                .filesize
                .unwrap_or_else(|| self.data.len() as u64 + self.blocksizes.iter().sum::<u64>()),
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Builders

/// Builds a file's balanced DAG from its chunks, emitting leaves and nodes to a sink as they are made.
///
/// Levels fill bottom-up: a level that reaches 174 links becomes one node of the level above. This gives the same
/// tree as go-unixfs's balanced builder, which fills each subtree completely before starting the next.
pub struct FileBuilder {
    levels: Vec<Vec<Entry>>,
    leaves: u64,
}

impl Default for FileBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FileBuilder {
    pub fn new() -> Self {
        FileBuilder {
            levels: vec![Vec::new()],
            leaves: 0,
        }
    }

    /// Adds one chunk (at most [`CHUNK_BYTES`]); returns the leaf's CID.
    pub fn push_chunk<S: BlockSink>(
        &mut self,
        sink: &mut S,
        chunk: &[u8],
    ) -> Result<Cid, S::Error> {
        debug_assert!(chunk.len() <= CHUNK_BYTES);
        let cid = cids::sha256_cid(RAW, chunk);
        self.push_leaf(sink, cid, chunk)?;
        Ok(cid)
    }

    /// Adds a leaf whose CID the caller already computed (so hashing can run elsewhere).
    pub fn push_leaf<S: BlockSink>(
        &mut self,
        sink: &mut S,
        cid: Cid,
        chunk: &[u8],
    ) -> Result<(), S::Error> {
        sink.put(&cid, chunk)?;
        let len = chunk.len() as u64;
        self.leaves += 1;
        self.levels[0].push(Entry {
            cid,
            tsize: len,
            filesize: len,
        });
        let mut level = 0;
        while self.levels[level].len() == LINKS_PER_NODE_MAX {
            let entries = std::mem::take(&mut self.levels[level]);
            let node = file_node(sink, &entries)?;
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(node);
            level += 1;
        }
        Ok(())
    }

    /// Closes the file and returns its root. An empty file is the raw leaf of no bytes, as in IPFS.
    pub fn finish<S: BlockSink>(mut self, sink: &mut S) -> Result<Entry, S::Error> {
        if self.leaves == 0 {
            self.push_chunk(sink, &[])?;
        }
        let mut level = 0;
        loop {
            let above_empty = self.levels[level + 1..].iter().all(Vec::is_empty);
            let entries = std::mem::take(&mut self.levels[level]);
            if above_empty && entries.len() == 1 {
                return Ok(entries[0]);
            }
            if !entries.is_empty() {
                let node = file_node(sink, &entries)?;
                if self.levels.len() == level + 1 {
                    self.levels.push(Vec::new());
                }
                self.levels[level + 1].push(node);
            }
            level += 1;
        }
    }
}

fn file_node<S: BlockSink>(sink: &mut S, entries: &[Entry]) -> Result<Entry, S::Error> {
    let sizes: Vec<u64> = entries.iter().map(|e| e.filesize).collect();
    let filesize = sizes.iter().sum();
    let data = encode_unixfs(DataType::File, None, Some(filesize), &sizes);
    let block = encode_pbnode(entries.iter().map(|e| (&e.cid, "", e.tsize)), &data);
    emit(
        sink,
        &block,
        entries.iter().map(|e| e.tsize).sum(),
        filesize,
    )
}

fn emit<S: BlockSink>(
    sink: &mut S,
    block: &[u8],
    children_tsize: u64,
    filesize: u64,
) -> Result<Entry, S::Error> {
    let cid = cids::sha256_cid(DAG_PB, block);
    sink.put(&cid, block)?;
    Ok(Entry {
        cid,
        tsize: block.len() as u64 + children_tsize,
        filesize,
    })
}

/// A directory that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    #[error(
        "invalid entry name {0:?}: names must be non-empty UTF-8 without '/', NUL, '.' or '..'"
    )]
    BadName(String),
    #[error("duplicate entry name {0:?}")]
    Duplicate(String),
    #[error(
        "directory with {entries} entries is over IPFS's {DIRECTORY_ESTIMATE_BYTES_MAX}-byte limit for a plain \
         directory node; HAMT-sharded directories are not supported yet: split it into subdirectories"
    )]
    TooLarge { entries: usize },
}

/// Whether `name` may be a directory entry (checked on write and on read).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Builds a directory node from its entries (any order; links are sorted by name bytes as dag-pb requires).
pub fn directory<S: BlockSink>(
    sink: &mut S,
    mut entries: Vec<(String, Entry)>,
) -> Result<Result<Entry, DirError>, S::Error> {
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (i, (name, _)) in entries.iter().enumerate() {
        if !valid_name(name) {
            return Ok(Err(DirError::BadName(name.clone())));
        }
        if i > 0 && entries[i - 1].0 == *name {
            return Ok(Err(DirError::Duplicate(name.clone())));
        }
    }
    let estimate: usize = entries
        .iter()
        .map(|(n, e)| n.len() + e.cid.encoded_len())
        .sum();
    if estimate > DIRECTORY_ESTIMATE_BYTES_MAX {
        return Ok(Err(DirError::TooLarge {
            entries: entries.len(),
        }));
    }
    let data = encode_unixfs(DataType::Directory, None, None, &[]);
    let block = encode_pbnode(
        entries.iter().map(|(n, e)| (&e.cid, n.as_str(), e.tsize)),
        &data,
    );
    let total = entries.iter().map(|(_, e)| e.tsize).sum();
    let size = entries.iter().map(|(_, e)| e.filesize).sum();
    emit(sink, &block, total, size).map(Ok)
}

/// Builds a symlink node pointing at `target`.
pub fn symlink<S: BlockSink>(sink: &mut S, target: &str) -> Result<Entry, S::Error> {
    let data = encode_unixfs(DataType::Symlink, Some(target.as_bytes()), None, &[]);
    let block = encode_pbnode(std::iter::empty(), &data);
    emit(sink, &block, 0, 0)
}

/// Computes the CID of `bytes` as a UnixFS file without storing anything.
pub fn file_cid(bytes: &[u8]) -> Cid {
    let mut b = FileBuilder::new();
    let mut sink = NullSink;
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let Ok(_) = b.push_chunk(&mut sink, chunk);
    }
    let Ok(root) = b.finish(&mut sink);
    root.cid
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MapSink(HashMap<Cid, Vec<u8>>);
    impl BlockSink for MapSink {
        type Error = std::convert::Infallible;
        fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Self::Error> {
            self.0.insert(*cid, data.to_vec());
            Ok(())
        }
    }

    #[test]
    fn empty_directory_matches_ipfs() {
        let Ok(dir) = directory(&mut NullSink, Vec::new());
        let dir = dir.expect("an empty directory is valid");
        assert_eq!(
            dir.cid.to_string(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
    }

    #[test]
    fn file_nodes_decode_to_what_was_built() {
        let mut sink = MapSink::default();
        let mut b = FileBuilder::new();
        let data = vec![7u8; CHUNK_BYTES * 3 + 5];
        for c in data.chunks(CHUNK_BYTES) {
            let Ok(_) = b.push_chunk(&mut sink, c);
        }
        let Ok(root) = b.finish(&mut sink);
        let node = Node::decode(DAG_PB, &sink.0[&root.cid]).expect("built node decodes");
        assert_eq!(node.kind, DataType::File);
        assert_eq!(node.file_size(), data.len() as u64);
        assert_eq!(
            node.blocksizes,
            vec![
                CHUNK_BYTES as u64,
                CHUNK_BYTES as u64,
                CHUNK_BYTES as u64,
                5
            ]
        );
        assert_eq!(node.links.len(), 4);
    }

    #[test]
    fn tree_shape_for_boundary_leaf_counts() {
        // (leaves, expected depth of the root above the leaves)
        for (leaves, depth) in [
            (1usize, 0usize),
            (2, 1),
            (174, 1),
            (175, 2),
            (174 * 174, 2),
            (174 * 174 + 1, 3),
        ] {
            let mut sink = MapSink::default();
            let mut b = FileBuilder::new();
            for i in 0..leaves {
                let Ok(_) = b.push_chunk(&mut sink, &(i as u64).to_le_bytes());
            }
            let Ok(root) = b.finish(&mut sink);
            assert_eq!(root.filesize, 8 * leaves as u64);
            let mut cid = root.cid;
            let mut d = 0;
            while cid.codec() == DAG_PB {
                let node = Node::decode(DAG_PB, &sink.0[&cid]).expect("decodes");
                assert!(node.links.len() <= LINKS_PER_NODE_MAX);
                cid = node.links[0].cid;
                d += 1;
            }
            assert_eq!(d, depth, "leaves={leaves}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x12],
            &[0x12, 0xff],
            &[0x0a, 0x02, 0x08],
            &[0xff; 12],
            &[0x12, 0x01, 0x0a],
        ];
        for c in cases {
            assert!(Node::decode(DAG_PB, c).is_err(), "{c:?}");
        }
        assert_eq!(Node::decode(0x71, b"x"), Err(DecodeError::Codec(0x71)));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "a\0"] {
            let r = directory(
                &mut NullSink,
                vec![(
                    bad.to_string(),
                    Entry {
                        cid: file_cid(b""),
                        tsize: 0,
                        filesize: 0,
                    },
                )],
            );
            assert_eq!(r, Ok(Err(DirError::BadName(bad.to_string()))));
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Node::decode(DAG_PB, &bytes);
        }
    }
}
