//! A read-write mount of a volume (`specs/volumes.md` §5): the kernel's requests act on the volume's working
//! copy, a directory on the local disk, and the working copy is published as the volume's next version on
//! `fsync` of the mount's root, on unmount and periodically.
//!
//! The working copy is the write-back journal: a write is on the local filesystem when the request returns,
//! `fsync` makes it durable there, and a mount killed at any point finds every acknowledged byte in the
//! working copy on the next mount, which publishes it. Before the first change after a publish, the volume's
//! state file records that the copy is dirty (durably, before the change is made), so no change can go
//! unpublished because a crash lost track of it.
//!
//! A publish stops changes for its duration (they wait on a lock; reads go on), so what is published is one
//! consistent tree. Hard links are refused with `EPERM` (a UnixFS tree has no way to say two names are one
//! file), and so are devices, FIFOs and sockets.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// How long the kernel may keep entries and attributes: the mount is the working copy's only writer, but a
/// short time keeps sizes and times honest without a round trip per `stat`.
const TTL: Duration = Duration::from_secs(1);
/// The largest request the kernel sends.
const MAX_WRITE: u32 = 1 << 20;

/// What a [`Publisher`]'s error says when the chain refused the publish because the volume moved on from the
/// base (another writer): such a copy can never be published.
pub const MOVED_ON: &str = "moved on from version";

/// Publishes a working copy as a volume's next version.
pub trait Publisher: Send + Sync {
    /// Stores the tree at `dir` and makes it the version after `base`; returns the new version's number.
    fn publish(&self, dir: &Path, base: u64) -> Result<u64, String>;
}

/// Where a volume's working copy stands: the version it started from, and whether it changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkState {
    pub base: u64,
    pub dirty: bool,
}

impl WorkState {
    /// Reads a state file: `base N` and `dirty 0|1`, a line each.
    pub fn read(path: &Path) -> io::Result<WorkState> {
        let text = fs::read_to_string(path)?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a volume state file", path.display()),
            )
        };
        let mut base = None;
        let mut dirty = None;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("base", n)) => base = n.parse::<u64>().ok(),
                Some(("dirty", d)) => dirty = Some(d == "1"),
                _ => return Err(bad()),
            }
        }
        Ok(WorkState {
            base: base.ok_or_else(bad)?,
            dirty: dirty.ok_or_else(bad)?,
        })
    }

    /// Writes the state file durably: a new file, synced, renamed over the old one, and the directory synced.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("state-new");
        {
            let mut f = File::create(&tmp)?;
            io::Write::write_all(
                &mut f,
                format!("base {}\ndirty {}\n", self.base, u8::from(self.dirty)).as_bytes(),
            )?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Takes an exclusive lock on `path` (made if missing) for as long as the returned file is kept; fails at once
/// (`WouldBlock`) if another process holds it. One read-write mount per working copy.
pub fn lock_exclusive(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)?;
    Ok(f)
}

/// Flushes everything written to the filesystem that holds `path` to its disk (`syncfs`).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(path)?).map_err(io::Error::from)
}

/// A volume's working copy with its state, shared by the filesystem and whoever publishes on a timer or at
/// unmount.
pub struct Volume {
    work: PathBuf,
    state_path: PathBuf,
    /// Changes hold it shared; a publish holds it alone.
    gate: RwLock<()>,
    dirty: AtomicBool,
    base: AtomicU64,
    /// Serialises the write of the state file that marks the copy dirty.
    marking: Mutex<()>,
    publisher: Box<dyn Publisher>,
    /// Set once the chain refused a publish because the volume moved on: no later publish of this copy can
    /// succeed, so none is tried (each would store the whole tree again, and pay for it).
    refused: Mutex<Option<String>>,
}

impl Volume {
    pub fn new(
        work: PathBuf,
        state_path: PathBuf,
        state: WorkState,
        publisher: Box<dyn Publisher>,
    ) -> Volume {
        Volume {
            work,
            state_path,
            gate: RwLock::new(()),
            dirty: AtomicBool::new(state.dirty),
            base: AtomicU64::new(state.base),
            marking: Mutex::new(()),
            publisher,
            refused: Mutex::new(None),
        }
    }

    /// The version the working copy was last published as (or started from).
    pub fn base(&self) -> u64 {
        self.base.load(Ordering::SeqCst)
    }

    /// Whether the working copy holds changes not yet published.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Runs a change to the working copy: never during a publish, and only once the state file says the copy
    /// is dirty.
    fn change<T>(&self, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let _shared = self.gate.read().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.load(Ordering::SeqCst) {
            let _one = self.marking.lock().unwrap_or_else(|p| p.into_inner());
            if !self.dirty.load(Ordering::SeqCst) {
                WorkState {
                    base: self.base(),
                    dirty: true,
                }
                .write(&self.state_path)?;
                self.dirty.store(true, Ordering::SeqCst);
            }
        }
        op()
    }

    /// Publishes the working copy if it changed since the last publish; the new version, or None if there was
    /// nothing to publish.
    pub fn publish_if_dirty(&self) -> Result<Option<u64>, String> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if !self.is_dirty() {
            return Ok(None);
        }
        if let Some(why) = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(why.clone());
        }
        // What is published must be on the local disk before the state can call the copy clean: after a power
        // cut, a clean copy is taken to be exactly the version it names.
        sync_filesystem(&self.work).map_err(|e| format!("syncing {}: {e}", self.work.display()))?;
        let version = match self.publisher.publish(&self.work, self.base()) {
            Ok(v) => v,
            Err(e) => {
                if e.contains(MOVED_ON) {
                    *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                }
                return Err(e);
            }
        };
        // The version is on the chain whatever becomes of the state file: the copy is clean at it in memory,
        // and a state file left saying dirty is set right by the next mount (it finds its own root CID).
        self.base.store(version, Ordering::SeqCst);
        self.dirty.store(false, Ordering::SeqCst);
        WorkState {
            base: version,
            dirty: false,
        }
        .write(&self.state_path)
        .map_err(|e| {
            format!(
                "version {version} is published, but {} could not be written: {e}",
                self.state_path.display()
            )
        })?;
        Ok(Some(version))
    }
}

/// A directory's entries as `opendir` read them: inode, kind, name.
type Listing = Vec<(u64, FileType, OsString)>;

/// The read-write filesystem over a [`Volume`]'s working copy.
///
/// Every call names files relative to a descriptor of the working copy's root (`openat`, `statat`,
/// `renameat2`...), never by an absolute path, so a path as long as the kernel takes inside the mount works
/// below a working copy that itself sits deep in the home.
pub struct WorkFs {
    volume: Arc<Volume>,
    /// The working copy's root, which every path is relative to.
    dirfd: OwnedFd,
    /// The working copy root's inode number on the local filesystem (the mount's inode 1).
    root_ino: u64,
    /// Where each inode the kernel knows sits: (parent, name).
    nodes: Mutex<HashMap<u64, (u64, OsString)>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    /// This process runs as root: what it creates is then given to the caller, as the kernel would.
    root: bool,
    /// The user this process runs as: only its fsync of the mount's root publishes (another user let in by
    /// `--allow-other` cannot make the owner store and pay for the whole tree at will).
    owner: u32,
}

type Stat = rustix::fs::Stat;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn rerr(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFCHR => FileType::CharDevice,
        _ => FileType::RegularFile,
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

fn timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
                Err(e) => (-(e.duration().as_secs() as i64), 0),
            };
            rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}

/// A name the mount takes: one path component.
fn component(name: &OsStr) -> Result<&OsStr, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

/// The open flags of a handle: the access mode and what matters for I/O, never creation or truncation (which
/// the caller does as a change) or O_APPEND (the kernel gives every write its offset).
fn oflags(flags: i32) -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    let mut o = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => OFlags::WRONLY,
        libc::O_RDWR => OFlags::RDWR,
        _ => OFlags::RDONLY,
    };
    if flags & libc::O_SYNC != 0 {
        o |= OFlags::SYNC;
    }
    if flags & libc::O_DSYNC != 0 {
        o |= OFlags::DSYNC;
    }
    o | OFlags::CLOEXEC | OFlags::NOFOLLOW
}

impl WorkFs {
    pub fn new(volume: Arc<Volume>) -> io::Result<WorkFs> {
        use rustix::fs::{Mode, OFlags};
        let dirfd = rustix::fs::open(
            &volume.work,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rerr)?;
        let root_ino = rustix::fs::fstat(&dirfd).map_err(rerr)?.st_ino;
        Ok(WorkFs {
            volume,
            dirfd,
            root_ino,
            nodes: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            root: rustix::process::geteuid().is_root(),
            owner: rustix::process::geteuid().as_raw(),
        })
    }

    /// The mount's inode number for a local one: the root is 1 (and whatever is 1 locally takes the root's).
    fn ino(&self, local: u64) -> u64 {
        if local == self.root_ino {
            1
        } else if local == 1 {
            self.root_ino
        } else {
            local
        }
    }

    /// The path of inode `ino` relative to the working copy's root (`.` for the root).
    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = Vec::new();
        let mut at = ino;
        while at != 1 {
            let (parent, name) = nodes.get(&at).ok_or(Errno::ENOENT)?;
            names.push(name.clone());
            at = *parent;
            if names.len() > 4096 {
                return Err(Errno::ELOOP);
            }
        }
        let mut path = PathBuf::from(".");
        for name in names.iter().rev() {
            path.push(name);
        }
        Ok(path)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(component(name)?))
    }

    /// The directory that holds `rel`, opened beneath the working copy without following any symlink, and the
    /// last name in it. Every call then acts on that name relative to that directory and follows no symlink
    /// there either: a directory that a concurrent rename swapped for a symlink cannot lead a call (made as
    /// root, perhaps) out of the working copy.
    fn at(&self, rel: &Path) -> io::Result<(OwnedFd, PathBuf)> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let (dir, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) if !p.as_os_str().is_empty() => (p, PathBuf::from(n)),
            _ => (Path::new("."), PathBuf::from(".")),
        };
        let fd = rustix::fs::openat2(
            &self.dirfd,
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(rerr)?;
        Ok((fd, name))
    }

    fn stat(&self, rel: &Path) -> io::Result<Stat> {
        let (dir, name) = self.at(rel)?;
        rustix::fs::statat(&dir, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)
    }

    /// Opens `rel` (never through a symlink: `O_NOFOLLOW` is always added).
    fn open_at(&self, rel: &Path, o: rustix::fs::OFlags, mode: u32) -> io::Result<File> {
        let (dir, name) = self.at(rel)?;
        rustix::fs::openat(
            &dir,
            &name,
            o | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::from_raw_mode(mode),
        )
        .map(File::from)
        .map_err(rerr)
    }

    /// chmod of `rel` itself: through an `O_PATH` descriptor of it (`/proc/self/fd/N`), since `fchmodat` would
    /// follow a symlink put there in the meantime.
    fn chmod(&self, rel: &Path, mode: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = self.open_at(
            rel,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            0,
        )?;
        if fstat(&f)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        rustix::fs::chmodat(
            rustix::fs::CWD,
            format!("/proc/self/fd/{}", f.as_raw_fd()),
            rustix::fs::Mode::from_raw_mode(mode & 0o7777),
            rustix::fs::AtFlags::empty(),
        )
        .map_err(rerr)
    }

    fn attr(&self, st: &Stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ino(st.st_ino)),
            size: st.st_size.max(0) as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec as i64),
            mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
            crtime: time(st.st_ctime, st.st_ctime_nsec as i64),
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: 0,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Records where an inode sits and answers with its entry.
    fn entry(&self, parent: u64, name: &OsStr, rel: &Path, reply: ReplyEntry) {
        match self.stat(rel) {
            Ok(st) => {
                let attr = self.attr(&st);
                self.remember(attr.ino.0, parent, name);
                reply.entry(&TTL, &attr, Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn remember(&self, ino: u64, parent: u64, name: &OsStr) {
        if ino != 1 {
            self.nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ino, (parent, name.to_os_string()));
        }
    }

    /// Forgets where inode `local` (a local inode number) sat, if it sat at (parent, name).
    fn forget_name(&self, local: u64, parent: u64, name: &OsStr) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let ino = self.ino(local);
        if nodes
            .get(&ino)
            .is_some_and(|(p, n)| *p == parent && n == name)
        {
            nodes.remove(&ino);
        }
    }

    /// Gives what the caller just created at `rel` to the caller (its group, unless the directory it was made
    /// in hands its own down with set-group-ID), as a filesystem the caller wrote to directly would.
    fn give(&self, req: &Request, rel: &Path) -> io::Result<()> {
        if !self.root {
            return Ok(());
        }
        let inherits = rel
            .parent()
            .and_then(|p| self.stat(p).ok())
            .is_some_and(|st| st.st_mode & libc::S_ISGID != 0);
        let gid = (!inherits).then(|| rustix::fs::Gid::from_raw(req.gid()));
        let (dir, name) = self.at(rel)?;
        rustix::fs::chownat(
            &dir,
            &name,
            Some(rustix::fs::Uid::from_raw(req.uid())),
            gid,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(rerr)
    }

    /// An open handle on inode `ino`, for an inode no name leads to any more (unlinked while open).
    fn open_on(&self, ino: u64) -> Option<Arc<File>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|f| rustix::fs::fstat(&***f).is_ok_and(|st| self.ino(st.st_ino) == ino))
            .cloned()
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    fn keep(&self, file: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(file));
        FileHandle(fh)
    }
}

fn fstat(f: &File) -> io::Result<Stat> {
    rustix::fs::fstat(f).map_err(rerr)
}

impl Filesystem for WorkFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent.0, name) {
            Ok(rel) => self.entry(parent.0, name, &rel, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = match fh.map(|fh| self.file(fh)) {
            Some(Ok(f)) => fstat(&f),
            // Unlinked while open: a handle still reaches it.
            _ => match self.path(ino.0) {
                Ok(rel) => match self.stat(&rel) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.open_on(ino.0).map_or(Err(e), |f| fstat(&f))
                    }
                    r => r,
                },
                Err(e) if e == Errno::ENOENT => match self.open_on(ino.0) {
                    Some(f) => fstat(&f),
                    None => return reply.error(e),
                },
                Err(e) => return reply.error(e),
            },
        };
        match st {
            Ok(st) => reply.attr(&TTL, &self.attr(&st)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let rel = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            use rustix::fs::{AtFlags, Gid, OFlags, Uid};
            if let Some(mode) = mode {
                self.chmod(&rel, mode)?;
            }
            if uid.is_some() || gid.is_some() {
                let (dir, name) = self.at(&rel)?;
                rustix::fs::chownat(
                    &dir,
                    &name,
                    uid.map(Uid::from_raw),
                    gid.map(Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(rerr)?;
            }
            if let Some(size) = size {
                match fh.map(|fh| self.file(fh)) {
                    Some(Ok(f)) => f.set_len(size)?,
                    _ => self
                        .open_at(&rel, OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, 0)?
                        .set_len(size)?,
                }
            }
            if atime.is_some() || mtime.is_some() {
                let times = rustix::fs::Timestamps {
                    last_access: timespec(atime),
                    last_modification: timespec(mtime),
                };
                let (dir, name) = self.at(&rel)?;
                rustix::fs::utimensat(&dir, &name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(rerr)?;
            }
            self.stat(&rel)
        });
        match r {
            Ok(st) => reply.attr(&TTL, &self.attr(&st)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = self.path(ino.0).and_then(|rel| {
            let (dir, name) = self.at(&rel).map_err(errno)?;
            rustix::fs::readlinkat(&dir, &name, Vec::new()).map_err(|e| errno(rerr(e)))
        });
        match target {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Only regular files: a UnixFS tree holds no devices, FIFOs or sockets.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let rel = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            use rustix::fs::OFlags;
            self.open_at(
                &rel,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                mode & !umask & 0o7777,
            )?;
            self.give(req, &rel)
        });
        match r {
            Ok(()) => self.entry(parent.0, name, &rel, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let rel = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            let (dir, name) = self.at(&rel)?;
            rustix::fs::mkdirat(
                &dir,
                &name,
                rustix::fs::Mode::from_raw_mode(mode & !umask & 0o7777),
            )
            .map_err(rerr)?;
            self.give(req, &rel)
        });
        match r {
            Ok(()) => self.entry(parent.0, name, &rel, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let rel = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            let gone = self.stat(&rel)?.st_ino;
            let (dir, name) = self.at(&rel)?;
            rustix::fs::unlinkat(&dir, &name, rustix::fs::AtFlags::empty()).map_err(rerr)?;
            Ok(gone)
        });
        match r {
            Ok(gone) => {
                self.forget_name(gone, parent.0, name);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let rel = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            let gone = self.stat(&rel)?.st_ino;
            let (dir, name) = self.at(&rel)?;
            rustix::fs::unlinkat(&dir, &name, rustix::fs::AtFlags::REMOVEDIR).map_err(rerr)?;
            Ok(gone)
        });
        match r {
            Ok(gone) => {
                self.forget_name(gone, parent.0, name);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let rel = match self.child(parent.0, link_name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            let (dir, name) = self.at(&rel)?;
            rustix::fs::symlinkat(target, &dir, &name).map_err(rerr)?;
            self.give(req, &rel)
        });
        match r {
            Ok(()) => self.entry(parent.0, link_name, &rel, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (self.child(parent.0, name), self.child(newparent.0, newname)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags.bits() & !(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE).bits()
            != 0
        {
            return reply.error(Errno::EINVAL);
        }
        let mut how = rustix::fs::RenameFlags::empty();
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            how |= rustix::fs::RenameFlags::NOREPLACE;
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            how |= rustix::fs::RenameFlags::EXCHANGE;
        }
        let r = self.volume.change(|| {
            let moved = self.stat(&from)?.st_ino;
            let replaced = self.stat(&to).ok().map(|st| st.st_ino);
            let (from_dir, from_name) = self.at(&from)?;
            let (to_dir, to_name) = self.at(&to)?;
            rustix::fs::renameat_with(&from_dir, &from_name, &to_dir, &to_name, how)
                .map_err(rerr)?;
            Ok((moved, replaced))
        });
        match r {
            Ok((moved, replaced)) => {
                let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                if how.contains(rustix::fs::RenameFlags::EXCHANGE) {
                    if let Some(other) = replaced {
                        nodes.insert(self.ino(other), (parent.0, name.to_os_string()));
                    }
                } else if let Some(gone) = replaced {
                    nodes.remove(&self.ino(gone));
                }
                nodes.insert(self.ino(moved), (newparent.0, newname.to_os_string()));
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // A UnixFS tree cannot say that two names are one file: a hard link would silently become two.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let rel = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let writes = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let r = if flags.0 & libc::O_TRUNC != 0 && writes {
            self.volume.change(|| {
                let f = self.open_at(&rel, oflags(flags.0), 0)?;
                f.set_len(0)?;
                Ok(f)
            })
        } else {
            self.open_at(&rel, oflags(flags.0), 0)
        };
        match r {
            Ok(f) => reply.opened(self.keep(f), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let rel = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            use rustix::fs::OFlags;
            let mode = mode & !umask & 0o7777;
            // Made here, or there already (O_CREAT without O_EXCL): only what this call made is given to the
            // caller.
            let f = match self.open_at(&rel, oflags(flags) | OFlags::CREATE | OFlags::EXCL, mode) {
                Ok(f) => {
                    self.give(req, &rel)?;
                    f
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                    self.open_at(&rel, oflags(flags), mode)?
                }
                Err(e) => return Err(e),
            };
            if flags & libc::O_TRUNC != 0 {
                f.set_len(0)?;
            }
            let st = fstat(&f)?;
            Ok((f, st))
        });
        match r {
            Ok((f, st)) => {
                let attr = self.attr(&st);
                self.remember(attr.ino.0, parent.0, name);
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    self.keep(f),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; size.min(MAX_WRITE) as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match self.volume.change(|| f.write_all_at(data, offset)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Only plain allocation: punching holes and the like have no use in a tree about to be published.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            rustix::fs::fallocate(&*f, rustix::fs::FallocateFlags::empty(), offset, length)
                .map_err(rerr)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
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
        reply.ok();
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
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let r = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let rel = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let listed = (|| -> io::Result<Listing> {
            use rustix::fs::OFlags;
            let me = self.stat(&rel)?.st_ino;
            let up = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => self.stat(parent)?.st_ino,
                None => me,
            };
            let mut entries = vec![
                (self.ino(me), FileType::Directory, OsString::from(".")),
                (
                    if ino.0 == 1 { 1 } else { self.ino(up) },
                    FileType::Directory,
                    OsString::from(".."),
                ),
            ];
            let fd = self.open_at(
                &rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                0,
            )?;
            for e in rustix::fs::Dir::read_from(&fd).map_err(rerr)? {
                let e = e.map_err(rerr)?;
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let kind = match e.file_type() {
                    rustix::fs::FileType::Directory => FileType::Directory,
                    rustix::fs::FileType::Symlink => FileType::Symlink,
                    rustix::fs::FileType::Fifo => FileType::NamedPipe,
                    rustix::fs::FileType::Socket => FileType::Socket,
                    rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
                    rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
                    _ => FileType::RegularFile,
                };
                use std::os::unix::ffi::OsStrExt;
                entries.push((
                    self.ino(e.ino()),
                    kind,
                    OsStr::from_bytes(name).to_os_string(),
                ));
            }
            Ok(entries)
        })();
        match listed {
            Ok(entries) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
        else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        use rustix::fs::OFlags;
        let synced = self.path(ino.0).and_then(|rel| {
            self.open_at(
                &rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                0,
            )
            .and_then(|d| d.sync_all())
            .map_err(errno)
        });
        if let Err(e) = synced {
            return reply.error(e);
        }
        // fsync of the mount's root by its owner publishes: the call returns once the version is on the chain.
        if ino.0 == 1
            && req.uid() == self.owner
            && let Err(e) = self.volume.publish_if_dirty()
        {
            tracing::error!("publishing the volume on fsync of its root: {e}");
            return reply.error(Errno::EIO);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::fstatvfs(&self.dirfd) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(rerr(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_round_trip_and_refuse_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.state");
        let s = WorkState {
            base: 7,
            dirty: true,
        };
        s.write(&path).expect("writes");
        assert_eq!(WorkState::read(&path).expect("reads"), s);
        fs::write(&path, "base x\ndirty 1\n").expect("write");
        assert!(WorkState::read(&path).is_err());
        fs::write(&path, "garbage").expect("write");
        assert!(WorkState::read(&path).is_err());
    }

    #[test]
    fn names_are_single_components() {
        assert!(component(OsStr::new("a")).is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(component(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }
}
