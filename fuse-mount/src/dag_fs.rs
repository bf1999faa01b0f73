//! A read-only filesystem over one stored DAG: every call reads through the storage core's [`Reader`], so
//! every byte handed to the kernel was rebuilt from shards and checked against its CID.
//!
//! Content is immutable, so the kernel may cache entries, attributes and pages for as long as the mount lives.
//! Inode numbers are derived from the path (a hash of the parent's number and the name), so a file keeps its
//! number across lookups, forgets and remounts of the same root. Directories are looked up through a small
//! cache of their decoded links; a listing opens only the entries of the page the kernel asks for.
//!
//! A mount that follows a volume ([`DagFs::following`]) can be moved to a newer version while it runs
//! ([`Updater::show`]): what the kernel holds is looked up again in the new tree (a path keeps its number), the
//! kernel may cache only for [`FOLLOW_TTL`], and a file reads from the version it was opened in until closed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use cid::Cid;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use huds::read::{EntryKind, ReadError, Reader};

/// How long the kernel may keep an entry or its attributes: the content behind a CID never changes.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The same, on a mount that follows a volume: how soon after a new version the kernel sees it.
pub const FOLLOW_TTL: Duration = Duration::from_secs(1);
/// Directories whose decoded links are kept for lookups.
const DIRS_CACHED: usize = 16;
/// The block size `stat` and `statfs` report.
const BLOCK_BYTES: u32 = 4096;
/// The longest name the mount reports it accepts (a UnixFS name can be longer; such a name fails `lookup`).
const NAME_MAX: u32 = 255;
/// The longest symlink target the kernel takes, plus one (PATH_MAX).
const SYMLINK_MAX: usize = 4096;
/// The largest file size the kernel takes in attributes (a stored size may lie beyond it).
const SIZE_MAX: u64 = i64::MAX as u64;
/// The kernel's read-ahead on the mount: sequential reads come in large requests, which the reader's own
/// segment read-ahead then keeps fed.
const READAHEAD_BYTES: u32 = 1 << 20;

/// What the mount knows of one inode the kernel holds.
#[derive(Debug, Clone)]
struct Inode {
    cid: Cid,
    kind: EntryKind,
    size: u64,
    /// Where it sits: (parent inode, name); the root's is (1, "").
    key: (u64, String),
    /// Lookups the kernel has not forgotten.
    lookups: u64,
}

struct Inodes {
    by_ino: HashMap<u64, Inode>,
    by_key: HashMap<(u64, String), u64>,
}

/// Decoded links of a directory: in stored order, and by name.
struct DirLinks {
    links: Vec<(String, Cid)>,
    by_name: HashMap<String, usize>,
}

impl DirLinks {
    /// The links a directory shows, and how many it leaves out: a name the kernel cannot take (empty, `.`,
    /// `..`, with `/` or NUL, over `NAME_MAX` bytes) is left out, and of repeated names the first is kept, as
    /// every other read path (`Reader::resolve`) finds the first. A stored DAG written by anyone may hold such
    /// names; `huds add` never writes them.
    fn new(stored: Vec<(String, Cid)>) -> (DirLinks, usize) {
        let total = stored.len();
        let mut links = Vec::with_capacity(total);
        let mut by_name = HashMap::with_capacity(total);
        for (name, cid) in stored {
            if !huds::unixfs::valid_name(&name)
                || name.len() > NAME_MAX as usize
                || by_name.contains_key(&name)
            {
                continue;
            }
            by_name.insert(name.clone(), links.len());
            links.push((name, cid));
        }
        let dropped = total - links.len();
        (DirLinks { links, by_name }, dropped)
    }
}

/// One entry of a listing page: its inode number and what it is, the offset after it, and whether it is "."
/// or "..".
struct Listed<'a> {
    ino: u64,
    next: u64,
    name: &'a str,
    node: Inode,
    dot: bool,
}

/// Recently used directories' links, least recently used first.
type DirCache = Vec<(Cid, Arc<DirLinks>)>;

/// The DAG a mount shows: one for the mount's life, or the newest version of a followed volume.
struct Tree {
    reader: Arc<Reader>,
    /// When the mounted target is a file or a symlink: the root directory that holds it, alone.
    root_links: Option<Arc<DirLinks>>,
    /// Bytes of file content in the whole DAG (the manifest's size), for `statfs`.
    size: u64,
}

impl Tree {
    /// The tree of `root` in the DAG `reader` opened (see [`DagFs::new`] for `name`), and its root inode.
    fn new(reader: Reader, root: Cid, name: &str) -> Result<(Tree, Inode), ReadError> {
        let (kind, _) = reader.stat(&root)?;
        let size = reader.manifest().size;
        // A name the kernel cannot take gives way to the CID's.
        let name = if huds::unixfs::valid_name(name) && name.len() <= NAME_MAX as usize {
            name.to_string()
        } else {
            root.to_string()
        };
        let root_links =
            (kind != EntryKind::Directory).then(|| Arc::new(DirLinks::new(vec![(name, root)]).0));
        let root_inode = Inode {
            cid: root,
            kind: EntryKind::Directory,
            size: 0,
            key: (1, String::new()),
            lookups: 1,
        };
        let tree = Tree {
            reader: Arc::new(reader),
            root_links,
            size,
        };
        Ok((tree, root_inode))
    }
}

/// Files opened on a following mount: each reads the version it was opened in.
#[derive(Default)]
struct Handles {
    next: u64,
    open: HashMap<u64, (Arc<Reader>, Cid, u64)>,
}

/// A stored file or tree, mounted read-only.
pub struct DagFs {
    tree: Arc<RwLock<Tree>>,
    inodes: Arc<Mutex<Inodes>>,
    /// Recently used directories' links, least recently used first.
    dirs: Arc<Mutex<DirCache>>,
    uid: u32,
    gid: u32,
    /// The kernel stops sending opens (of files; of directories) once one is answered ENOSYS.
    no_open: bool,
    no_opendir: bool,
    /// Made by [`DagFs::following`]: the tree may change.
    follows: bool,
    handles: Mutex<Handles>,
}

/// Moves a following mount to another version while it is mounted.
#[derive(Clone)]
pub struct Updater {
    tree: Arc<RwLock<Tree>>,
    inodes: Arc<Mutex<Inodes>>,
    dirs: Arc<Mutex<DirCache>>,
}

impl Updater {
    /// Shows `root` of the DAG `reader` opened from now on. Every inode the kernel holds is looked up again
    /// along its path in the new tree: a directory still there, or a file or symlink still there with the
    /// same content, keeps its number. Any other is retired: the kernel may still ask for its attributes
    /// (an open file does), but no lookup finds it, so its path gets a new number, and its own pages in the
    /// kernel are never mistaken for the new content's. Open files keep reading the version they were opened
    /// in.
    pub fn show(&self, reader: Reader, root: Cid, name: &str) -> Result<(), ReadError> {
        let (tree, root_inode) = Tree::new(reader, root, name)?;
        let mut inodes = self
            .inodes
            .lock()
            .expect("the inode lock is never poisoned");
        let mut children: HashMap<u64, Vec<(u64, Inode)>> = HashMap::new();
        for (ino, node) in inodes.by_ino.iter().filter(|(ino, _)| **ino != 1) {
            children
                .entry(node.key.0)
                .or_default()
                .push((*ino, node.clone()));
        }
        let mut fresh = Inodes {
            by_ino: HashMap::from([(1, root_inode)]),
            by_key: HashMap::new(),
        };
        // Parents before children: a child is found in its parent's new links.
        let mut queue = vec![1u64];
        while let Some(parent) = queue.pop() {
            let Some(kids) = children.remove(&parent) else {
                continue;
            };
            let Some(dir) = fresh.by_ino.get(&parent).cloned() else {
                continue;
            };
            let links = match (&tree.root_links, parent) {
                (Some(links), 1) => Some(links.clone()),
                _ if dir.kind == EntryKind::Directory => tree
                    .reader
                    .links(&dir.cid)
                    .ok()
                    .map(|l| Arc::new(DirLinks::new(l).0)),
                _ => None,
            };
            for (ino, old) in kids {
                let found = links.as_ref().and_then(|l| {
                    let &i = l.by_name.get(&old.key.1)?;
                    let cid = l.links[i].1;
                    let (kind, size) = tree.reader.stat(&cid).ok()?;
                    Some((cid, kind, size))
                });
                let same = found.as_ref().is_some_and(|(cid, kind, _)| {
                    *kind == old.kind && (*kind == EntryKind::Directory || *cid == old.cid)
                });
                if let Some((cid, kind, size)) = found.filter(|_| same) {
                    fresh.by_key.insert(old.key.clone(), ino);
                    fresh.by_ino.insert(
                        ino,
                        Inode {
                            cid,
                            kind,
                            size,
                            ..old
                        },
                    );
                    queue.push(ino);
                }
            }
        }
        // What was not carried over is retired: known by number, not by path.
        for (ino, node) in &inodes.by_ino {
            fresh.by_ino.entry(*ino).or_insert_with(|| node.clone());
        }
        let old = std::mem::replace(
            &mut *self.tree.write().expect("the tree lock is never poisoned"),
            tree,
        );
        *inodes = fresh;
        self.dirs
            .lock()
            .expect("the directory cache is never poisoned")
            .clear();
        drop(inodes);
        // A reader waits for its read-ahead to stop when dropped: not while the mount's locks are held.
        drop(old);
        Ok(())
    }
}

/// The inode number of `name` in the directory numbered `parent`: stable for a path, whatever was looked up
/// before it. 1 is the root; numbers below 2 are never made.
pub fn inode_number(parent: u64, name: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&parent.to_le_bytes());
    h.update(name.as_bytes());
    let bytes = h.finalize();
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes.as_bytes()[..8]);
    // Positive as an i64 (some tools print inode numbers signed), and never 0 or 1.
    (u64::from_le_bytes(n) >> 1).max(2)
}

/// The number for a new inode: the path's own, or after a hash collision with another path (about 2^-62 per
/// pair), the next free one.
fn free_number(inodes: &Inodes, parent: u64, name: &str) -> u64 {
    let mut ino = inode_number(parent, name);
    while inodes.by_ino.contains_key(&ino) {
        ino = ino.wrapping_add(1).max(2);
    }
    ino
}

fn errno(e: &ReadError) -> Errno {
    match e {
        ReadError::NoEntry(_) => Errno::ENOENT,
        ReadError::NotDirectory(_) => Errno::ENOTDIR,
        ReadError::IsDirectory(_) => Errno::EISDIR,
        ReadError::NotSymlink(_) => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Directory => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
    }
}

impl DagFs {
    /// A filesystem whose root is `root` of the DAG `reader` opened. A directory is the mount's root; a file or
    /// a symlink is shown alone in the root under `name`. Everything belongs to `uid`:`gid`.
    pub fn new(
        reader: Reader,
        root: Cid,
        name: &str,
        uid: u32,
        gid: u32,
    ) -> Result<DagFs, ReadError> {
        let (tree, root_inode) = Tree::new(reader, root, name)?;
        Ok(DagFs {
            tree: Arc::new(RwLock::new(tree)),
            inodes: Arc::new(Mutex::new(Inodes {
                by_ino: HashMap::from([(1, root_inode)]),
                by_key: HashMap::new(),
            })),
            dirs: Arc::new(Mutex::new(Vec::new())),
            uid,
            gid,
            no_open: false,
            no_opendir: false,
            follows: false,
            handles: Mutex::new(Handles::default()),
        })
    }

    /// As [`DagFs::new`], for a tree that will change ([`DagFs::updater`] moves it): the kernel caches
    /// entries and attributes for [`FOLLOW_TTL`] only and no pages across opens.
    pub fn following(
        reader: Reader,
        root: Cid,
        name: &str,
        uid: u32,
        gid: u32,
    ) -> Result<DagFs, ReadError> {
        Ok(DagFs {
            follows: true,
            ..DagFs::new(reader, root, name, uid, gid)?
        })
    }

    /// What moves this mount to another tree (only a [`DagFs::following`] mount should be moved).
    pub fn updater(&self) -> Updater {
        Updater {
            tree: self.tree.clone(),
            inodes: self.inodes.clone(),
            dirs: self.dirs.clone(),
        }
    }

    fn ttl(&self) -> Duration {
        if self.follows { FOLLOW_TTL } else { TTL }
    }

    /// The reader of the tree shown now.
    fn reader(&self) -> Arc<Reader> {
        self.tree
            .read()
            .expect("the tree lock is never poisoned")
            .reader
            .clone()
    }

    fn inode(&self, ino: u64) -> Option<Inode> {
        self.inodes
            .lock()
            .expect("the inode lock is never poisoned")
            .by_ino
            .get(&ino)
            .cloned()
    }

    fn attr(&self, ino: u64, node: &Inode) -> FileAttr {
        let (perm, nlink) = match node.kind {
            EntryKind::Directory => (0o555, 2),
            EntryKind::File => (0o444, 1),
            EntryKind::Symlink => (0o777, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size: node.size.min(SIZE_MAX),
            blocks: node.size.min(SIZE_MAX).div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: file_type(node.kind),
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_BYTES,
            flags: 0,
        }
    }

    /// The links of the directory inode `ino`.
    fn dir_links(&self, ino: u64, node: &Inode) -> Result<Arc<DirLinks>, ReadError> {
        if node.kind != EntryKind::Directory {
            return Err(ReadError::NotDirectory(node.cid.to_string()));
        }
        if ino == 1
            && let Some(links) = &self
                .tree
                .read()
                .expect("the tree lock is never poisoned")
                .root_links
        {
            return Ok(links.clone());
        }
        let cid = &node.cid;
        {
            let mut dirs = self
                .dirs
                .lock()
                .expect("the directory cache is never poisoned");
            if let Some(i) = dirs.iter().position(|(c, _)| c == cid) {
                let hit = dirs.remove(i);
                let links = hit.1.clone();
                dirs.push(hit);
                return Ok(links);
            }
        }
        let (dir, dropped) = DirLinks::new(self.reader().links(cid)?);
        if dropped > 0 {
            tracing::warn!(
                "directory {cid}: {dropped} stored names are not shown (empty, '.', '..', with '/' or NUL, longer than {NAME_MAX} bytes, or a repeat of an earlier name)"
            );
        }
        let dir = Arc::new(dir);
        let mut dirs = self
            .dirs
            .lock()
            .expect("the directory cache is never poisoned");
        if dirs.len() >= DIRS_CACHED {
            dirs.remove(0);
        }
        dirs.push((*cid, dir.clone()));
        Ok(dir)
    }

    /// The entry `name` of the directory inode `ino`.
    fn child(
        &self,
        ino: u64,
        parent: &Inode,
        name: &str,
    ) -> Result<(Cid, EntryKind, u64), ReadError> {
        let dir = self.dir_links(ino, parent)?;
        let &i = dir
            .by_name
            .get(name)
            .ok_or_else(|| ReadError::NoEntry(name.to_string()))?;
        let cid = dir.links[i].1;
        let (kind, size) = self.reader().stat(&cid)?;
        Ok((cid, kind, size))
    }

    /// The inode `name` in `parent` has or would get, without counting a lookup.
    fn peek(&self, parent: u64, name: &str, cid: Cid, kind: EntryKind, size: u64) -> (u64, Inode) {
        let inodes = self
            .inodes
            .lock()
            .expect("the inode lock is never poisoned");
        let key = (parent, name.to_string());
        if let Some(&ino) = inodes.by_key.get(&key)
            && let Some(node) = inodes.by_ino.get(&ino)
        {
            return (ino, node.clone());
        }
        let ino = free_number(&inodes, parent, name);
        let node = Inode {
            cid,
            kind,
            size,
            key,
            lookups: 0,
        };
        (ino, node)
    }

    /// Counts one lookup of `name` in `parent` by the kernel, remembering the inode if it is new.
    fn remember(
        &self,
        parent: u64,
        name: &str,
        cid: Cid,
        kind: EntryKind,
        size: u64,
    ) -> (u64, Inode) {
        let mut inodes = self
            .inodes
            .lock()
            .expect("the inode lock is never poisoned");
        let key = (parent, name.to_string());
        if let Some(&ino) = inodes.by_key.get(&key)
            && let Some(node) = inodes.by_ino.get_mut(&ino)
        {
            node.lookups += 1;
            return (ino, node.clone());
        }
        let ino = free_number(&inodes, parent, name);
        let node = Inode {
            cid,
            kind,
            size,
            key: key.clone(),
            lookups: 1,
        };
        inodes.by_ino.insert(ino, node.clone());
        inodes.by_key.insert(key, ino);
        (ino, node)
    }

    /// Hands the entries of the directory `ino` from `offset` on to `add` until it answers that the page is
    /// full: offsets are 1 after ".", 2 after "..", `3 + i` after the i-th link, so a page starts where the
    /// last one stopped whatever was left out. Only the page's entries are opened, to learn their kinds and
    /// sizes. One that cannot be read is left out (and logged) rather than failing its siblings; a segment
    /// that cannot be fetched (the node or the network is away) is not one entry's damage, and fails the page.
    fn page(
        &self,
        ino: u64,
        offset: u64,
        what: &str,
        add: &mut dyn FnMut(Listed) -> bool,
    ) -> Result<(), Errno> {
        let node = self.inode(ino).ok_or(Errno::ENOENT)?;
        let dir = self
            .dir_links(ino, &node)
            .map_err(|e| self.fail(what, ino, &e))?;
        if offset == 0 {
            let dot = Listed {
                ino,
                next: 1,
                name: ".",
                node: node.clone(),
                dot: true,
            };
            if add(dot) {
                return Ok(());
            }
        }
        if offset <= 1 {
            let up = if ino == 1 { 1 } else { node.key.0 };
            let dotdot = Listed {
                ino: up,
                next: 2,
                name: "..",
                node: self.inode(up).unwrap_or_else(|| node.clone()),
                dot: true,
            };
            if add(dotdot) {
                return Ok(());
            }
        }
        let start = usize::try_from(offset.saturating_sub(2)).unwrap_or(usize::MAX);
        let reader = self.reader();
        for (i, (name, cid)) in dir.links.iter().enumerate().skip(start) {
            let (kind, size) = match reader.stat(cid) {
                Ok(s) => s,
                Err(e @ ReadError::Segment(_)) => return Err(self.fail(what, ino, &e)),
                Err(e) => {
                    self.fail_entry(what, name, &e);
                    continue;
                }
            };
            let (child, child_node) = self.peek(ino, name, *cid, kind, size);
            let entry = Listed {
                ino: child,
                next: 2 + i as u64 + 1,
                name,
                node: child_node,
                dot: false,
            };
            if add(entry) {
                break;
            }
        }
        Ok(())
    }

    fn fail_entry(&self, what: &str, name: &str, e: &ReadError) {
        tracing::warn!("{what}: leaving out {name:?}: {e}");
    }

    fn fail(&self, what: &str, ino: u64, e: &ReadError) -> Errno {
        let code = errno(e);
        if code == Errno::EIO {
            tracing::warn!(ino, "{what}: {e}");
        }
        code
    }
}

impl Filesystem for DagFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each of these is a request a kernel may refuse (it caps sizes, and may lack a feature); the mount
        // works without any of them, only with more round trips.
        let _ = config.set_max_readahead(READAHEAD_BYTES);
        // Nothing is ever written: this only sizes the requests (max_pages), so reads come 1 MiB at a time.
        let _ = config.set_max_write(READAHEAD_BYTES);
        for flag in [
            // A listing carries each entry's attributes, so `ls -l` or a walk needs no lookup per entry.
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // With these, an `open` answered ENOSYS tells the kernel never to send another: opens and closes of
        // an immutable file cost no round trip, and its pages stay cached.
        let caps = config.capabilities();
        self.no_open = caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        self.no_opendir = caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.inode(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(name) = name.to_str() else {
            // UnixFS names are UTF-8: no stored entry has this name.
            return reply.error(Errno::ENOENT);
        };
        match self.child(parent.0, &dir, name) {
            Ok((cid, kind, size)) => {
                let (ino, node) = self.remember(parent.0, name, cid, kind, size);
                reply.entry(&self.ttl(), &self.attr(ino, &node), Generation(0));
            }
            Err(e) => reply.error(self.fail("lookup", parent.0, &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == 1 {
            return;
        }
        let mut inodes = self
            .inodes
            .lock()
            .expect("the inode lock is never poisoned");
        let gone = match inodes.by_ino.get_mut(&ino.0) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(nlookup);
                node.lookups == 0
            }
            None => false,
        };
        if gone && let Some(node) = inodes.by_ino.remove(&ino.0) {
            // A retired inode's path may belong to another inode by now.
            if inodes.by_key.get(&node.key) == Some(&ino.0) {
                inodes.by_key.remove(&node.key);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino.0) {
            Some(node) => reply.attr(&self.ttl(), &self.attr(ino.0, &node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(node) = self.inode(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.reader().symlink_target(&node.cid) {
            Ok(target) if target.len() >= SYMLINK_MAX => {
                tracing::warn!(
                    "readlink: {} holds a {}-byte target, longer than the kernel takes",
                    node.cid,
                    target.len()
                );
                reply.error(Errno::ENAMETOOLONG)
            }
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", ino.0, &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(node) = self.inode(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if node.kind == EntryKind::Directory {
            return reply.error(Errno::EISDIR);
        }
        if self.follows {
            // The file reads the version it is opened in, and the kernel keeps none of its pages past this open
            // (the same path may be another file by the next one).
            let mut handles = self
                .handles
                .lock()
                .expect("the handle lock is never poisoned");
            handles.next += 1;
            let fh = handles.next;
            handles
                .open
                .insert(fh, (self.reader(), node.cid, node.size));
            return reply.opened(FileHandle(fh), FopenFlags::empty());
        }
        if self.no_open {
            // The kernel then opens every file with its pages kept (FOPEN_KEEP_CACHE).
            return reply.error(Errno::ENOSYS);
        }
        // The pages of an immutable file stay valid across opens.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let closed = self
            .handles
            .lock()
            .expect("the handle lock is never poisoned")
            .open
            .remove(&fh.0);
        reply.ok();
        // Dropped outside the lock: a reader waits for its read-ahead to stop.
        drop(closed);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Only a following mount hands out handles; the others read by inode, with no lock shared by reads.
        let opened = self
            .follows
            .then(|| {
                self.handles
                    .lock()
                    .expect("the handle lock is never poisoned")
                    .open
                    .get(&fh.0)
                    .cloned()
            })
            .flatten();
        let (reader, cid, file_size) = match opened {
            Some(o) => o,
            None => {
                let Some(node) = self.inode(ino.0) else {
                    return reply.error(Errno::ENOENT);
                };
                if node.kind != EntryKind::File {
                    return reply.error(Errno::EISDIR);
                }
                (self.reader(), node.cid, node.size)
            }
        };
        tracing::trace!(ino = ino.0, offset, size, "read");
        let end = offset.saturating_add(u64::from(size)).min(file_size);
        let mut buf = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let r = reader.read_file_blocks(&cid, offset..end, &mut |piece| {
            buf.extend_from_slice(&piece);
            Ok(())
        });
        match r {
            Ok(_) => reply.data(&buf),
            Err(e) => reply.error(self.fail("read", ino.0, &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written through a read-only mount: ENOSYS tells the kernel to stop sending flushes.
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // UnixFS stores no extended attributes.
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.inode(ino.0) {
            Some(node) if node.kind == EntryKind::Directory => reply.opened(
                FileHandle(0),
                if self.follows {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                },
            ),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.page(ino.0, offset, "readdir", &mut |e| {
            reply.add(INodeNo(e.ino), e.next, file_type(e.node.kind), e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(code) => reply.error(code),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // The kernel takes no lookup for "." and "..", and one for every other entry it is given: an entry is
        // remembered only once it is in the reply.
        let r = self.page(ino.0, offset, "readdirplus", &mut |e| {
            let attr = self.attr(e.ino, &e.node);
            let full = reply.add(
                INodeNo(e.ino),
                e.next,
                e.name,
                &self.ttl(),
                &attr,
                Generation(0),
            );
            if !full && !e.dot {
                self.remember(ino.0, e.name, e.node.cid, e.node.kind, e.node.size);
            }
            full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(code) => reply.error(code),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self
            .inodes
            .lock()
            .expect("the inode lock is never poisoned")
            .by_ino
            .len() as u64;
        let blocks = self
            .tree
            .read()
            .expect("the tree lock is never poisoned")
            .size
            .div_ceil(u64::from(BLOCK_BYTES));
        reply.statfs(blocks, 0, 0, files, 0, BLOCK_BYTES, NAME_MAX, BLOCK_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u8) -> Cid {
        huds::cids::blake3_cid(&[n])
    }

    /// What a hostile DAG can store as names never reaches the kernel, and a repeated name is its first entry.
    #[test]
    fn names_the_kernel_cannot_take_are_left_out_and_the_first_of_a_repeat_is_kept() {
        let stored = vec![
            ("a".to_string(), cid(1)),
            (String::new(), cid(2)),
            (".".to_string(), cid(3)),
            ("..".to_string(), cid(4)),
            ("b/c".to_string(), cid(5)),
            ("d\0e".to_string(), cid(6)),
            ("x".repeat(256), cid(7)),
            ("a".to_string(), cid(8)),
            ("z".repeat(255), cid(9)),
        ];
        let (dir, dropped) = DirLinks::new(stored);
        assert_eq!(dropped, 7);
        let names: Vec<&str> = dir.links.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "z".repeat(255).as_str()]);
        assert_eq!(dir.links[dir.by_name["a"]].1, cid(1));
    }

    #[test]
    fn inode_numbers_depend_on_the_path_alone() {
        assert_eq!(inode_number(1, "a"), inode_number(1, "a"));
        assert_ne!(inode_number(1, "a"), inode_number(2, "a"));
        assert_ne!(inode_number(1, "a"), inode_number(1, "b"));
        assert!(inode_number(1, "a") >= 2);
        assert!(inode_number(1, "a") <= i64::MAX as u64);
    }
}
