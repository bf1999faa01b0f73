//! Trees as tar streams: how `huds --api` moves a directory to a node (`POST /api/v0/add?format=tar`) and back
//! (`GET /api/v0/get`).
//!
//! Both sides write the same tar: one entry per file, directory and symlink below the tree's root (the root
//! itself has none), parents before children, names in byte order, paths relative and `/`-separated, with GNU
//! long-name entries for long paths and symlink targets kept byte for byte. No mode, owner or time is
//! meaningful: UnixFS stores none of them.
//!
//! Unpacking trusts nothing in the stream: an absolute path, a `..`, a name that is not UTF-8, an entry under a
//! symlink or a file, a second entry of the same name, and any entry that is not a regular file, a directory or a
//! symlink are refused with the entry's name; so are more entries or bytes than the caller's limits. The caller
//! removes what a refused stream left behind.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cid::Cid;
use huds::read::{EntryKind, ReadError, Reader};
use huds::unixfs;
use tar::{EntryType, Header};

/// Deepest entry a tree may hold, as deep as a stored tree can be read back (`huds::read`'s DAG bound).
pub const DEPTH_MAX: usize = 64;
/// Bytes of a file asked of the reader at a time while a stored tree is written out.
const FILE_CHUNK_BYTES: u64 = 1024 * 1024;
/// The GNU tar name of a long-name or long-link entry.
const LONG_NAME: &str = "././@LongLink";

/// What an unpack accepts at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries_max: u64,
    pub bytes_max: u64,
}

impl Limits {
    /// No bound but the disk's.
    pub const NONE: Limits = Limits {
        entries_max: u64::MAX,
        bytes_max: u64::MAX,
    };
}

/// Why a tree could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("reading the tar stream: {0}")]
    Stream(io::Error),
    #[error("tar entry {path:?} is refused: {why}")]
    Refused { path: String, why: String },
    #[error("the tree has more than {0} entries, the most accepted here")]
    TooManyEntries(u64),
    #[error("the tree holds more than {0} bytes of files, the most accepted here")]
    TooLarge(u64),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: file name is not UTF-8; UnixFS names are UTF-8 strings")]
    NonUtf8Name { path: PathBuf },
    #[error("{path}: {what} cannot be stored: only files, directories and symlinks can")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("{path}: deeper than {DEPTH_MAX} levels")]
    TooDeep { path: String },
    #[error("writing the tar stream: {0}")]
    Output(io::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl TreeError {
    /// Whether the disk being written filled up: the node answers that as such.
    pub fn disk_full(&self) -> bool {
        matches!(self, TreeError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

/// The writer under a tar builder, closed when a walk fails: the tar crate writes the end-of-archive blocks when
/// a builder is dropped, which would make a stream cut at an entry boundary look whole to its reader.
struct Gate<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> Write for Gate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tree could not be written whole",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.inner.flush()
    }
}

/// A tar stream being written, entry by entry.
struct TarOut<W: Write> {
    builder: tar::Builder<Gate<W>>,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut {
            builder: tar::Builder::new(Gate {
                inner: out,
                closed: false,
            }),
        }
    }

    /// Ends the stream after `walked`: with the end-of-archive blocks if the walk succeeded, with nothing more
    /// if it failed.
    fn end(mut self, walked: Result<(), TreeError>) -> Result<W, TreeError> {
        match walked {
            Ok(()) => Ok(self.builder.into_inner().map_err(TreeError::Output)?.inner),
            Err(e) => {
                self.builder.get_mut().closed = true;
                Err(e)
            }
        }
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h
    }

    /// A GNU long-name (`L`) or long-link (`K`) entry carrying `bytes` exactly.
    fn long(&mut self, kind: EntryType, bytes: &[u8]) -> io::Result<()> {
        let mut h = Self::header(kind, 0o644, bytes.len() as u64 + 1);
        h.set_path(LONG_NAME)?;
        h.set_cksum();
        self.builder.append(&h, bytes.chain(&[0u8][..]))
    }

    /// Appends an entry; `path` is relative, made of valid UnixFS names, so the tar crate keeps it as it is.
    fn append(&mut self, mut h: Header, path: &str, data: impl Read) -> io::Result<()> {
        self.builder.append_data(&mut h, path, data)
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        let h = Self::header(EntryType::Directory, 0o755, 0);
        self.append(h, &format!("{path}/"), io::empty())
    }

    fn file(&mut self, path: &str, size: u64, data: impl Read) -> io::Result<()> {
        let h = Self::header(EntryType::Regular, 0o644, size);
        self.append(h, path, data)
    }

    /// A symlink whose target is kept byte for byte: the tar crate's own link names are normalised (`a//b`
    /// becomes `a/b`), which would change the tree's CID.
    fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let mut h = Self::header(EntryType::Symlink, 0o777, 0);
        let name_len = h.as_old().linkname.len();
        if target.len() > name_len {
            self.long(EntryType::GNULongLink, target.as_bytes())?;
            h.set_link_name_literal(&target.as_bytes()[..name_len])?;
        } else {
            h.set_link_name_literal(target.as_bytes())?;
        }
        self.append(h, path, io::empty())
    }
}

/// Reads exactly `size` bytes from `inner`: a file that shrank while it was read is an error rather than a tar
/// entry shorter than its header says.
struct Exact<R> {
    inner: R,
    left: u64,
    path: PathBuf,
    progress: Box<dyn FnMut(u64) + Send>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was read; add it again",
                    self.path.display()
                ),
            ));
        }
        self.left -= n as u64;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Writes the local tree at `dir` as a tar stream into `out`, as `huds add DIR` would import it: the same
/// names, files, empty directories and symlinks (not followed). `progress` is told of file bytes as they go.
pub fn pack_dir<W: Write>(
    dir: &Path,
    out: W,
    progress: impl FnMut(u64) + Send + Clone + 'static,
) -> Result<W, TreeError> {
    let mut tar = TarOut::new(out);
    let walked = walk_dir(&mut tar, dir, progress);
    tar.end(walked)
}

fn walk_dir<W: Write>(
    tar: &mut TarOut<W>,
    dir: &Path,
    progress: impl FnMut(u64) + Send + Clone + 'static,
) -> Result<(), TreeError> {
    // (path on disk, path in the tree, depth), popped in order: children are pushed in reverse name order.
    let mut stack: Vec<(PathBuf, String, usize)> = Vec::new();
    push_children(&mut stack, dir, "", 1)?;
    while let Some((path, rel, depth)) = stack.pop() {
        let io = |source| TreeError::Io {
            path: path.clone(),
            source,
        };
        if depth > DEPTH_MAX {
            return Err(TreeError::TooDeep { path: rel });
        }
        let meta = fs::symlink_metadata(&path).map_err(io)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io)?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| TreeError::NonUtf8Name { path: path.clone() })?;
            tar.symlink(&rel, &target).map_err(TreeError::Output)?;
        } else if ft.is_dir() {
            tar.dir(&rel).map_err(TreeError::Output)?;
            push_children(&mut stack, &path, &rel, depth + 1)?;
        } else if ft.is_file() {
            let file = fs::File::open(&path).map_err(io)?;
            let size = meta.len();
            let data = Exact {
                inner: file,
                left: size,
                path: path.clone(),
                progress: Box::new(progress.clone()),
            };
            tar.file(&rel, size, data).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => io(e),
                _ => TreeError::Output(e),
            })?;
        } else {
            return Err(TreeError::Unsupported {
                path,
                what: "a special file",
            });
        }
    }
    Ok(())
}

fn push_children(
    stack: &mut Vec<(PathBuf, String, usize)>,
    dir: &Path,
    rel: &str,
    depth: usize,
) -> Result<(), TreeError> {
    let io = |source| TreeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut children = Vec::new();
    for item in fs::read_dir(dir).map_err(io)? {
        let item = item.map_err(io)?;
        let path = item.path();
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| TreeError::NonUtf8Name { path: path.clone() })?;
        children.push((name, path));
    }
    // The order UnixFS links take, so the stream reads like the stored tree.
    children.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
    for (name, path) in children {
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        stack.push((path, rel, depth));
    }
    Ok(())
}

/// A stored file as a `Read`, asked of the reader a chunk at a time.
struct DagFile<'r> {
    reader: &'r Reader,
    cid: Cid,
    pos: u64,
    size: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for DagFile<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.size {
                return Ok(0);
            }
            self.buf.clear();
            self.at = 0;
            let end = self.size.min(self.pos + FILE_CHUNK_BYTES);
            self.reader
                .read_file(&self.cid, self.pos..end, &mut self.buf)
                .map_err(io::Error::other)?;
            if self.buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file {} ended before its declared size", self.cid),
                ));
            }
            self.pos += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Writes the stored directory at `cid` as a tar stream into `out`, the shape `pack_dir` gives, so unpacking
/// it restores the tree that was added. Memory: one file chunk, and the names of the directories being walked.
pub fn pack_dag<W: Write>(reader: &Reader, cid: &Cid, out: W) -> Result<W, TreeError> {
    let mut tar = TarOut::new(out);
    let walked = walk_dag(&mut tar, reader, cid);
    tar.end(walked)
}

fn walk_dag<W: Write>(tar: &mut TarOut<W>, reader: &Reader, cid: &Cid) -> Result<(), TreeError> {
    // (cid, kind, size, path in the tree, depth)
    let mut stack: Vec<(Cid, EntryKind, u64, String, usize)> = Vec::new();
    push_listing(reader, &mut stack, cid, "", 1)?;
    while let Some((cid, kind, size, rel, depth)) = stack.pop() {
        if depth > DEPTH_MAX {
            return Err(TreeError::TooDeep { path: rel });
        }
        match kind {
            EntryKind::Directory => {
                tar.dir(&rel).map_err(TreeError::Output)?;
                push_listing(reader, &mut stack, &cid, &rel, depth + 1)?;
            }
            EntryKind::Symlink => {
                let target = symlink_target(reader, &cid, &rel)?;
                tar.symlink(&rel, &target).map_err(TreeError::Output)?;
            }
            EntryKind::File => {
                let data = DagFile {
                    reader,
                    cid,
                    pos: 0,
                    size,
                    buf: Vec::new(),
                    at: 0,
                };
                tar.file(&rel, size, data).map_err(TreeError::Output)?;
            }
        }
    }
    Ok(())
}

/// The target of the stored symlink at `cid` (named `shown` in errors), byte for byte: UnixFS keeps it as the
/// node's data, which must be UTF-8 to become a link on disk.
pub fn symlink_target(reader: &Reader, cid: &Cid, shown: &str) -> Result<String, ReadError> {
    String::from_utf8(reader.symlink_target(cid)?)
        .map_err(|_| ReadError::BadName(shown.to_string()))
}

fn push_listing(
    reader: &Reader,
    stack: &mut Vec<(Cid, EntryKind, u64, String, usize)>,
    cid: &Cid,
    rel: &str,
    depth: usize,
) -> Result<(), TreeError> {
    for e in reader.list(cid)?.into_iter().rev() {
        // A stored name with a `/` or a `..` would be refused by any careful unpacker; say so here.
        if !unixfs::valid_name(&e.name) {
            return Err(ReadError::BadName(e.name).into());
        }
        let path = if rel.is_empty() {
            e.name
        } else {
            format!("{rel}/{}", e.name)
        };
        stack.push((e.cid, e.kind, e.size, path, depth));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Reading

/// The names of an entry's path, checked one by one; empty for the root itself (`./`).
fn entry_names(raw: &[u8]) -> Result<Vec<String>, String> {
    if raw.first() == Some(&b'/') {
        return Err("it is an absolute path".into());
    }
    let mut names = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("it climbs out of the tree with `..`".into()),
            _ => {
                let name = std::str::from_utf8(part).map_err(|_| {
                    "a name in it is not UTF-8 (UnixFS names are UTF-8)".to_string()
                })?;
                if !unixfs::valid_name(name) {
                    return Err(format!("{name:?} is not a plain file name"));
                }
                names.push(name.to_string());
            }
        }
    }
    if names.len() > DEPTH_MAX {
        return Err(format!("it is deeper than {DEPTH_MAX} levels"));
    }
    Ok(names)
}

/// Makes sure every parent of an entry is a real directory under `root`, creating missing ones: an entry
/// under a symlink (which may point anywhere) or under a file is refused.
fn ensure_parents(root: &Path, names: &[String], shown: &str) -> Result<PathBuf, TreeError> {
    let mut path = root.to_path_buf();
    for name in names {
        path.push(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "a file"
                };
                return Err(TreeError::Refused {
                    path: shown.to_string(),
                    why: format!("it lies under {name:?}, which is {what} in this archive"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|source| TreeError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(TreeError::Io { path, source }),
        }
    }
    Ok(path)
}

fn duplicate(shown: &str) -> TreeError {
    TreeError::Refused {
        path: shown.to_string(),
        why: "the archive holds this name twice".into(),
    }
}

fn describe(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Link => "a hard link",
        EntryType::Char => "a character device",
        EntryType::Block => "a block device",
        EntryType::Fifo => "a FIFO",
        EntryType::GNUSparse => "a sparse file",
        _ => "an entry of an unknown type",
    }
}

/// Unpacks the tar stream `input` under `root` (an existing, empty directory), as a tree of plain files,
/// directories and symlinks; `progress` is told of file bytes as they are written. Stops at the first entry it
/// refuses; what was written before stays for the caller to remove.
pub fn unpack(
    input: impl Read,
    root: &Path,
    limits: Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<Unpacked, TreeError> {
    let mut archive = tar::Archive::new(EofWatch {
        inner: HeaderGuard::new(input, limits),
        eof: false,
    });
    let mut done = Unpacked::default();
    // Entries come grouped by directory, so the last checked parent is usually the next one's too.
    let mut checked_parent: Option<Vec<String>> = None;
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(TreeError::Stream)? {
        let mut entry = entry.map_err(TreeError::Stream)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue; // archive-wide metadata (`git archive` writes a commit id there), nothing to unpack
        }
        done.entries += 1;
        if done.entries > limits.entries_max {
            return Err(TreeError::TooManyEntries(limits.entries_max));
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refused = |why: String| TreeError::Refused {
            path: shown.clone(),
            why,
        };
        let names = entry_names(&raw).map_err(refused)?;
        let Some((last, parents)) = names.split_last() else {
            if kind.is_dir() {
                continue; // `./`: the root, which exists
            }
            return Err(refused("it names no file".into()));
        };
        let parent = if checked_parent.as_deref() == Some(parents) {
            parents.iter().fold(root.to_path_buf(), |p, n| p.join(n))
        } else {
            let p = ensure_parents(root, parents, &shown)?;
            checked_parent = Some(parents.to_vec());
            p
        };
        let path = parent.join(last);
        let io = |source: io::Error| TreeError::Io {
            path: path.clone(),
            source,
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if done.bytes.saturating_add(size) > limits.bytes_max {
                    return Err(TreeError::TooLarge(limits.bytes_max));
                }
                // create_new: a second entry of the name, or a symlink planted there, is refused, not followed.
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::AlreadyExists => duplicate(&shown),
                        _ => io(e),
                    })?;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(TreeError::Stream(e)),
                    };
                    file.write_all(&buf[..n]).map_err(io)?;
                    done.bytes += n as u64;
                    progress(n as u64);
                }
            }
            EntryType::Directory => match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {} // made already as a parent of an earlier entry
                Ok(_) => return Err(duplicate(&shown)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(io)?
                }
                Err(e) => return Err(io(e)),
            },
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = String::from_utf8(target).map_err(|_| {
                    refused("its target is not UTF-8 (UnixFS symlink targets are UTF-8)".into())
                })?;
                if target.is_empty() {
                    return Err(refused("it is a symlink with no target".into()));
                }
                std::os::unix::fs::symlink(&target, &path).map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => duplicate(&shown),
                    _ => io(e),
                })?;
            }
            other => {
                return Err(refused(format!(
                    "it is {}: only files, directories and symlinks can be stored",
                    describe(other)
                )));
            }
        }
    }
    // The tar crate ends at a zero block or at the end of the stream alike; only the first is a whole archive.
    if archive.into_inner().eof {
        return Err(TreeError::Stream(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends without its end-of-archive blocks: it was cut short",
        )));
    }
    Ok(done)
}

/// Bytes of one extension entry at most (a GNU long name or link, a PAX header): the tar crate reads these
/// whole into memory before the entry they describe, where no limit of the unpack sees them.
const EXTENSION_BYTES_MAX: u64 = 64 * 1024;

/// Reads the tar stream for the tar crate while following its headers itself, so that what the crate would
/// take into memory unbounded is refused first: an extension entry (GNU `L`/`K`, PAX `x`/`g`) larger than
/// [`EXTENSION_BYTES_MAX`], a GNU sparse entry (whose extra header blocks it does not follow; never unpacked
/// anyway), or more headers than three per entry the limits allow (an endless run of extension headers).
struct HeaderGuard<R> {
    inner: R,
    /// Bytes of entry data (padded to whole blocks) before the next header.
    data_left: u64,
    /// The current header, read whole and checked, and how much of it was handed on.
    header: [u8; 512],
    header_at: usize,
    headers: u64,
    headers_max: u64,
    /// The data of the PAX header being read (at most [`EXTENSION_BYTES_MAX`]), and the file size it set for
    /// the next entry: PAX overrides the size field of the header after it (files of 8 GiB and more).
    pax: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl<R: Read> HeaderGuard<R> {
    fn new(inner: R, limits: Limits) -> Self {
        HeaderGuard {
            inner,
            data_left: 0,
            header: [0; 512],
            header_at: 512,
            headers: 0,
            headers_max: limits.entries_max.saturating_mul(3).saturating_add(16),
            pax: None,
            pax_size: None,
        }
    }

    /// The `size` record of PAX extended header data, if any (records are `LEN key=value\n`).
    fn pax_size(mut data: &[u8]) -> Option<u64> {
        let mut size = None;
        loop {
            let Some(space) = data.iter().position(|b| *b == b' ') else {
                return size;
            };
            let Some(len) = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|len| *len > space && *len <= data.len())
            else {
                return size; // the padding after the records, or a malformed record the tar crate reports
            };
            let record = &data[space + 1..len];
            if let Some(value) = record.strip_prefix(b"size=") {
                let value = value.strip_suffix(b"\n").unwrap_or(value);
                size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            data = &data[len..];
        }
    }

    /// Reads and checks the next header block; `false` at the end of the stream.
    fn next_header(&mut self) -> io::Result<bool> {
        let mut got = 0;
        while got < 512 {
            let n = self.inner.read(&mut self.header[got..])?;
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                // A cut-off header: handed on as it is, for the tar crate to report.
                self.header_at = 512 - got;
                self.header.copy_within(..got, self.header_at);
                return Ok(true);
            }
            got += n;
        }
        self.header_at = 0;
        let refuse = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        self.headers += 1;
        if self.headers > self.headers_max {
            return Err(refuse(format!(
                "more than {} tar headers for at most {} entries",
                self.headers_max,
                self.headers_max / 3
            )));
        }
        let header = Header::from_byte_slice(&self.header);
        let kind = header.entry_type();
        // An all-zero block (the end of the archive) has size 0 and no checksum to speak of.
        if self.header.iter().all(|b| *b == 0) {
            return Ok(true);
        }
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let mut size = header.entry_size()?;
        if !extension && let Some(pax) = self.pax_size.take() {
            size = pax;
        }
        if kind.is_gnu_sparse() {
            return Err(refuse(
                "a GNU sparse entry: only files, directories and symlinks can be stored".into(),
            ));
        }
        if extension && size > EXTENSION_BYTES_MAX {
            return Err(refuse(format!(
                "a tar extension header of {size} bytes: at most {EXTENSION_BYTES_MAX}"
            )));
        }
        self.data_left = size.div_ceil(512).saturating_mul(512);
        if kind.is_pax_local_extensions() {
            self.pax = Some(Vec::with_capacity(usize::try_from(size).unwrap_or(0)));
        }
        Ok(true)
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.header_at < 512 {
            let n = buf.len().min(512 - self.header_at);
            buf[..n].copy_from_slice(&self.header[self.header_at..self.header_at + n]);
            self.header_at += n;
            return Ok(n);
        }
        if self.data_left > 0 {
            let want = usize::try_from(self.data_left)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.inner.read(&mut buf[..want])?;
            self.data_left -= n as u64;
            if let Some(pax) = &mut self.pax {
                pax.extend_from_slice(&buf[..n]);
                if self.data_left == 0 {
                    self.pax_size = Self::pax_size(pax);
                    self.pax = None;
                }
            }
            return Ok(n);
        }
        if !self.next_header()? {
            return Ok(0);
        }
        self.read(buf)
    }
}

/// Notes whether the stream ran out: a tar that ends at the end-of-archive block is never read that far.
struct EofWatch<R> {
    inner: R,
    eof: bool,
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar entry written byte by byte, so the test can say what the tar crate's builder would refuse.
    fn raw_entry(out: &mut Vec<u8>, path: &[u8], kind: EntryType, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    /// Counts what is read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    /// An extension entry declaring a huge size is refused after its header, before the tar crate reads it
    /// into memory. (Before, a GNU long-name header of 100 GiB made the node read that much into one buffer.)
    #[test]
    fn huge_extension_headers_are_refused_before_they_are_read() {
        for kind in [
            EntryType::GNULongName,
            EntryType::GNULongLink,
            EntryType::XHeader,
            EntryType::XGlobalHeader,
        ] {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..LONG_NAME.len()].copy_from_slice(LONG_NAME.as_bytes());
            h.set_entry_type(kind);
            h.set_size(1 << 30);
            h.set_cksum();
            let mut input = Counting {
                inner: io::Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(b'a')),
                read: 0,
            };
            let dir = tempfile::tempdir().expect("tempdir");
            let err =
                unpack(&mut input, dir.path(), Limits::NONE, &mut |_| {}).expect_err("refused");
            assert!(
                err.to_string().contains("extension header"),
                "{kind:?}: {err}"
            );
            assert!(input.read <= 2 * 512, "{kind:?}: read {} bytes", input.read);
        }
    }

    /// A PAX `size` record sets the size of the entry after it (as for files of 8 GiB and more): the guard
    /// follows it and the file comes out whole.
    #[test]
    fn pax_sizes_are_followed() {
        let mut out = Vec::new();
        let record = b"11 size=11\n";
        raw_entry(&mut out, b"PaxHeaders/f", EntryType::XHeader, record);
        // The header's own size field says 0; the data that follows is the PAX size's 11 bytes.
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..1].copy_from_slice(b"f");
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"hello world");
        out.resize(out.len().div_ceil(512) * 512, 0);
        let tar = finish(out);
        let dir = tempfile::tempdir().expect("tempdir");
        unpack(&tar[..], dir.path(), Limits::NONE, &mut |_| {}).expect("unpacks");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"hello world");
    }

    /// Endless extension headers with no entry between them (global PAX headers, which the unpack skips) end
    /// at the header bound.
    #[test]
    fn endless_extension_headers_end_at_the_header_bound() {
        let mut out = Vec::new();
        for _ in 0..1000 {
            raw_entry(
                &mut out,
                b"PaxHeaders/x",
                EntryType::XGlobalHeader,
                b"8 a=bcd\n",
            );
        }
        let tar = finish(out);
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            entries_max: 10,
            bytes_max: u64::MAX,
        };
        let err = unpack(&tar[..], dir.path(), limits, &mut |_| {}).expect_err("refused");
        assert!(err.to_string().contains("tar headers"), "{err}");
    }

    fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn unpack_bytes(tar: &[u8], root: &Path, limits: Limits) -> Result<Unpacked, TreeError> {
        unpack(tar, root, limits, &mut |_| {})
    }

    #[test]
    fn a_packed_tree_unpacks_to_the_same_tree() {
        let src = tempfile::tempdir().expect("tempdir");
        let s = src.path();
        fs::create_dir_all(s.join("a/deep/er")).expect("mkdir");
        fs::create_dir(s.join("empty dir")).expect("mkdir");
        fs::write(s.join("a/deep/er/fïle ü.txt"), b"hello").expect("write");
        fs::write(s.join("zero"), b"").expect("write");
        let long = "n".repeat(150);
        fs::write(s.join("a").join(&long), vec![7u8; 70_000]).expect("write");
        std::os::unix::fs::symlink("../a//deep/./er", s.join("link")).expect("symlink");
        let long_target = "t/".repeat(90);
        std::os::unix::fs::symlink(&long_target, s.join("long link")).expect("symlink");

        let mut total = 0u64;
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = counter.clone();
        let tar = pack_dir(s, Vec::new(), move |n| {
            c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .expect("pack");
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 70_005);

        let dst = tempfile::tempdir().expect("tempdir");
        let got = unpack(&tar[..], dst.path(), Limits::NONE, &mut |n| total += n).expect("unpack");
        assert_eq!(got.bytes, 70_005);
        assert_eq!(total, 70_005);
        let d = dst.path();
        assert_eq!(
            fs::read(d.join("a/deep/er/fïle ü.txt")).expect("read"),
            b"hello"
        );
        assert_eq!(fs::read(d.join("zero")).expect("read"), b"");
        assert_eq!(
            fs::read(d.join("a").join(&long)).expect("read"),
            vec![7u8; 70_000]
        );
        assert!(d.join("empty dir").is_dir());
        assert_eq!(
            fs::read_link(d.join("link")).expect("link"),
            Path::new("../a//deep/./er")
        );
        assert_eq!(
            fs::read_link(d.join("long link")).expect("link"),
            Path::new(&long_target)
        );
        assert_eq!(
            huds::add::cid_of_path(s).expect("cid"),
            huds::add::cid_of_path(d).expect("cid")
        );
    }

    #[test]
    fn a_failed_pack_never_ends_the_stream_as_whole() {
        let src = tempfile::tempdir().expect("tempdir");
        fs::write(src.path().join("a.txt"), b"a").expect("write");
        fs::create_dir(src.path().join("b")).expect("mkdir");
        std::os::unix::net::UnixListener::bind(src.path().join("b/socket")).expect("socket");
        let mut out = Vec::new();
        let err = pack_dir(src.path(), &mut out, |_| {}).expect_err("a socket is refused");
        assert!(err.to_string().contains("special file"), "{err}");
        // What was written reads as a stream cut short, not as a smaller tree.
        let dst = tempfile::tempdir().expect("tempdir");
        let err = unpack_bytes(&out, dst.path(), Limits::NONE).expect_err("cut");
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        let cases: Vec<(&[u8], EntryType, &str)> = vec![
            (b"../escape", EntryType::Regular, "`..`"),
            (b"a/../../escape", EntryType::Regular, "`..`"),
            (b"/tmp/absolute", EntryType::Regular, "absolute"),
            (b"hard", EntryType::Link, "hard link"),
            (b"fifo", EntryType::Fifo, "FIFO"),
            (b"dev", EntryType::Char, "character device"),
            (b"bad\xffname", EntryType::Regular, "UTF-8"),
        ];
        for (path, kind, why) in cases {
            let dst = tempfile::tempdir().expect("tempdir");
            let root = dst.path().join("root");
            fs::create_dir(&root).expect("mkdir");
            let mut tar = Vec::new();
            raw_entry(&mut tar, path, kind, b"x");
            let err = unpack_bytes(&finish(tar), &root, Limits::NONE).expect_err("refused");
            let msg = err.to_string();
            assert!(matches!(err, TreeError::Refused { .. }), "{msg}");
            assert!(msg.contains(why), "{msg}");
            assert!(!dst.path().join("escape").exists());
            assert_eq!(fs::read_dir(&root).expect("ls").count(), 0, "{msg}");
        }
    }

    #[test]
    fn nothing_is_written_through_a_symlink_or_over_an_entry() {
        let dst = tempfile::tempdir().expect("tempdir");
        let outside = dst.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        let root = dst.path().join("root");
        fs::create_dir(&root).expect("mkdir");

        // A symlink to a directory outside, then a file "through" it.
        let mut tar = Vec::new();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_path("link").expect("path");
        h.set_link_name_literal(outside.as_os_str().as_encoded_bytes())
            .expect("link");
        h.set_size(0);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        raw_entry(&mut tar, b"link/planted", EntryType::Regular, b"x");
        let err = unpack_bytes(&finish(tar), &root, Limits::NONE).expect_err("refused");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(fs::read_dir(&outside).expect("ls").count(), 0);

        // The same name twice: the second would replace the first.
        let root2 = dst.path().join("root2");
        fs::create_dir(&root2).expect("mkdir");
        let mut tar = Vec::new();
        raw_entry(&mut tar, b"f", EntryType::Regular, b"one");
        raw_entry(&mut tar, b"f", EntryType::Regular, b"two");
        let err = unpack_bytes(&finish(tar), &root2, Limits::NONE).expect_err("refused");
        assert!(err.to_string().contains("twice"), "{err}");
        assert_eq!(fs::read(root2.join("f")).expect("read"), b"one");
    }

    #[test]
    fn limits_and_broken_streams_are_errors() {
        let dst = tempfile::tempdir().expect("tempdir");
        let mut tar = Vec::new();
        for i in 0..5 {
            raw_entry(
                &mut tar,
                format!("f{i}").as_bytes(),
                EntryType::Regular,
                b"abc",
            );
        }
        let tar = finish(tar);
        let limits = |entries_max, bytes_max| Limits {
            entries_max,
            bytes_max,
        };
        for (i, (l, ok)) in [
            (limits(5, 15), true),
            (limits(4, 15), false),
            (limits(5, 14), false),
        ]
        .into_iter()
        .enumerate()
        {
            let root = dst.path().join(format!("r{i}"));
            fs::create_dir(&root).expect("mkdir");
            let r = unpack_bytes(&tar, &root, l);
            assert_eq!(r.is_ok(), ok, "{r:?}");
            match r {
                Ok(u) => assert_eq!(
                    u,
                    Unpacked {
                        entries: 5,
                        bytes: 15
                    }
                ),
                Err(e) => assert!(
                    matches!(e, TreeError::TooManyEntries(_) | TreeError::TooLarge(_)),
                    "{e}"
                ),
            }
        }
        // Cut inside an entry's data, and plain garbage.
        let root = dst.path().join("cut");
        fs::create_dir(&root).expect("mkdir");
        let err = unpack_bytes(&tar[..512 + 100], &root, Limits::NONE).expect_err("cut");
        assert!(matches!(err, TreeError::Stream(_)), "{err}");
        let root = dst.path().join("garbage");
        fs::create_dir(&root).expect("mkdir");
        let err = unpack_bytes(&[0x55u8; 2048], &root, Limits::NONE).expect_err("garbage");
        assert!(matches!(err, TreeError::Stream(_)), "{err}");
        // Cut between two entries, where the tar crate alone would see a whole, shorter archive.
        let root = dst.path().join("between");
        fs::create_dir(&root).expect("mkdir");
        let err = unpack_bytes(&tar[..2 * 1024], &root, Limits::NONE).expect_err("cut");
        assert!(err.to_string().contains("cut short"), "{err}");
        let err = unpack_bytes(&[], &root, Limits::NONE).expect_err("empty");
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
