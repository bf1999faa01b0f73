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
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
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
        let version = self.publisher.publish(&self.work, self.base())?;
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
        self.base.store(version, Ordering::SeqCst);
        self.dirty.store(false, Ordering::SeqCst);
        Ok(Some(version))
    }
}

/// A directory's entries as `opendir` read them: inode, kind, name.
type Listing = Vec<(u64, FileType, OsString)>;

/// The read-write filesystem over a [`Volume`]'s working copy.
pub struct WorkFs {
    volume: Arc<Volume>,
    /// The working copy root's inode number on the local filesystem (the mount's inode 1).
    root_ino: u64,
    /// Where each inode the kernel knows sits: (parent, name).
    nodes: Mutex<HashMap<u64, (u64, OsString)>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn rustix_errno(e: rustix::io::Errno) -> Errno {
    errno(io::Error::from_raw_os_error(e.raw_os_error()))
}

fn kind_of(t: fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else if t.is_char_device() {
        FileType::CharDevice
    } else {
        FileType::RegularFile
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

impl WorkFs {
    pub fn new(volume: Arc<Volume>) -> io::Result<WorkFs> {
        let root_ino = fs::metadata(&volume.work)?.ino();
        Ok(WorkFs {
            volume,
            root_ino,
            nodes: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
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
        let mut path = self.volume.work.clone();
        for name in names.iter().rev() {
            path.push(name);
        }
        Ok(path)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(component(name)?))
    }

    fn attr(&self, m: &fs::Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ino(m.ino())),
            size: m.size(),
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: time(m.ctime(), m.ctime_nsec()),
            kind: kind_of(m.file_type()),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: m.blksize() as u32,
            flags: 0,
        }
    }

    /// Records where an inode sits and answers with its entry.
    fn entry(&self, parent: u64, name: &OsStr, path: &Path, reply: ReplyEntry) {
        match fs::symlink_metadata(path) {
            Ok(m) => {
                let attr = self.attr(&m);
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

    fn forget_name(&self, parent: u64, name: &OsStr) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (p, n)| !(*p == parent && n == name));
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

    fn options(flags: i32) -> OpenOptions {
        let mut o = OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => {
                o.write(true);
            }
            libc::O_RDWR => {
                o.read(true).write(true);
            }
            _ => {
                o.read(true);
            }
        }
        // The kernel gives every write its offset (O_APPEND included), and the handle must stay writable at
        // any offset; O_TRUNC is applied by the caller as a change.
        o.custom_flags(
            flags
                & !(libc::O_ACCMODE
                    | libc::O_APPEND
                    | libc::O_TRUNC
                    | libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_NOFOLLOW),
        );
        o
    }
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
            Ok(path) => self.entry(parent.0, name, &path, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let m = match fh.map(|fh| self.file(fh)) {
            Some(Ok(f)) => f.metadata(),
            _ => match self.path(ino.0) {
                Ok(p) => fs::symlink_metadata(p),
                Err(e) => return reply.error(e),
            },
        };
        match m {
            Ok(m) => reply.attr(&TTL, &self.attr(&m)),
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
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid)?;
            }
            if let Some(size) = size {
                match fh.map(|fh| self.file(fh)) {
                    Some(Ok(f)) => f.set_len(size)?,
                    _ => OpenOptions::new().write(true).open(&path)?.set_len(size)?,
                }
            }
            if atime.is_some() || mtime.is_some() {
                let times = rustix::fs::Timestamps {
                    last_access: timespec(atime),
                    last_modification: timespec(mtime),
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &path,
                    &times,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(io::Error::from)?;
            }
            fs::symlink_metadata(&path)
        });
        match r {
            Ok(m) => reply.attr(&TTL, &self.attr(&m)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        use std::os::unix::ffi::OsStrExt;
        match self
            .path(ino.0)
            .and_then(|p| fs::read_link(p).map_err(errno))
        {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
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
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & !umask & 0o7777)
                .open(&path)
                .map(drop)
        });
        match r {
            Ok(()) => self.entry(parent.0, name, &path, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(&path)
        });
        match r {
            Ok(()) => self.entry(parent.0, name, &path, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.volume.change(|| fs::remove_file(&path)) {
            Ok(()) => {
                self.forget_name(parent.0, name);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.volume.change(|| fs::remove_dir(&path)) {
            Ok(()) => {
                self.forget_name(parent.0, name);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent.0, link_name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self
            .volume
            .change(|| std::os::unix::fs::symlink(target, &path))
        {
            Ok(()) => self.entry(parent.0, link_name, &path, reply),
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
        let mut how = rustix::fs::RenameFlags::empty();
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            how |= rustix::fs::RenameFlags::NOREPLACE;
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            how |= rustix::fs::RenameFlags::EXCHANGE;
        }
        if flags.bits() & !(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE).bits()
            != 0
        {
            return reply.error(Errno::EINVAL);
        }
        let r = self.volume.change(|| {
            let moved = fs::symlink_metadata(&from)?.ino();
            let replaced = fs::symlink_metadata(&to).ok().map(|m| m.ino());
            rustix::fs::renameat_with(rustix::fs::CWD, &from, rustix::fs::CWD, &to, how)
                .map_err(io::Error::from)?;
            Ok((moved, replaced))
        });
        match r {
            Ok((moved, replaced)) => {
                let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                let moved = self.ino(moved);
                if how.contains(rustix::fs::RenameFlags::EXCHANGE) {
                    if let Some(other) = replaced {
                        nodes.insert(self.ino(other), (parent.0, name.to_os_string()));
                    }
                } else if let Some(gone) = replaced {
                    nodes.remove(&self.ino(gone));
                }
                nodes.insert(moved, (newparent.0, newname.to_os_string()));
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
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let writes = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let r = if flags.0 & libc::O_TRUNC != 0 && writes {
            self.volume.change(|| {
                let f = Self::options(flags.0).open(&path)?;
                f.set_len(0)?;
                Ok(f)
            })
        } else {
            Self::options(flags.0).open(&path)
        };
        match r {
            Ok(f) => reply.opened(self.keep(f), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
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
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = self.volume.change(|| {
            let mut o = Self::options(flags);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            } else {
                o.create(true);
            }
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // O_CREAT with O_RDONLY still creates the file.
                o.write(true);
            }
            let f = o.mode(mode & !umask & 0o7777).open(&path)?;
            if flags & libc::O_TRUNC != 0 {
                f.set_len(0)?;
            }
            let m = f.metadata()?;
            Ok((f, m))
        });
        match r {
            Ok((f, m)) => {
                let attr = self.attr(&m);
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
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let listed = (|| -> io::Result<Listing> {
            let me = fs::metadata(&path)?.ino();
            let up = fs::metadata(path.join(".."))?.ino();
            let mut entries = vec![
                (self.ino(me), FileType::Directory, OsString::from(".")),
                (
                    if ino.0 == 1 { 1 } else { self.ino(up) },
                    FileType::Directory,
                    OsString::from(".."),
                ),
            ];
            for e in fs::read_dir(&path)? {
                let e = e?;
                entries.push((self.ino(e.ino()), kind_of(e.file_type()?), e.file_name()));
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
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let synced = self
            .path(ino.0)
            .and_then(|p| File::open(p).and_then(|d| d.sync_all()).map_err(errno));
        if let Err(e) = synced {
            return reply.error(e);
        }
        // fsync of the mount's root publishes: the call returns once the version is on the chain.
        if ino.0 == 1
            && let Err(e) = self.volume.publish_if_dirty()
        {
            tracing::error!("publishing the volume on fsync of its root: {e}");
            return reply.error(Errno::EIO);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.volume.work) {
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
            Err(e) => reply.error(rustix_errno(e)),
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
