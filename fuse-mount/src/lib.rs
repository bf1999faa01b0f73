//! HUDS's FUSE front door: `huds mount` of any stored file or tree.
//!
//! A mount reads through the storage core's [`huds::Reader`]: segments are fetched (from the local store or
//! through a node, which fetches them from the network), decoded, cached and read ahead there, and every block
//! is checked against its CID before the kernel sees a byte. Nothing here touches the store's tables.
//!
//! - [`DagFs`]: the read-only filesystem over one DAG (lookup, getattr, readdir in pages, open, read, readlink,
//!   statfs), with inode numbers stable for a path.
//! - [`WorkFs`]: the read-write filesystem over a volume's working copy, published as the volume's next version
//!   on `fsync` of its root, on unmount and periodically (`specs/volumes.md` §5).
//! - [`mountpoint::prepare`]: the mount directory's checks, and clearing a stale mount a killed process left.
//! - [`Mount`]: the FUSE session, run in the foreground until it is unmounted.

pub mod dag_fs;
pub mod mountpoint;
pub mod work_fs;

use std::io;
use std::path::Path;

pub use dag_fs::{DagFs, Updater, inode_number};
pub use fuser::Filesystem;
pub use mountpoint::{MountpointError, prepare};
pub use work_fs::{Publisher, Volume, WorkFs, WorkState, lock_exclusive};

/// Threads that serve the kernel's requests: a read waiting on the network does not hold up a listing.
pub const THREADS_DEFAULT: usize = 4;

/// The kernel's read-ahead on a mount, where this process may set it (root may): FUSE's own handshake caps it
/// at 128 KiB, which keeps one or two requests in flight; 4 MiB keeps the segment decoders fed.
pub const READAHEAD_KIB: u32 = 4096;

/// Raises this process's limit of open files to the most it may have: a read-write mount keeps one
/// descriptor per file open through it, so thousands of open files need more than the usual 1,024.
pub fn raise_open_files_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        limit.current = Some(max);
        setrlimit(Resource::Nofile, limit)
            .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// A mounted filesystem, not yet served.
pub struct Mount<F: fuser::Filesystem + Send + Sync + 'static = DagFs> {
    session: fuser::Session<F>,
}

/// Unmounts a [`Mount`] from another thread (a signal watcher); [`Mount::run`] then returns.
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    pub fn unmount(&mut self) -> io::Result<()> {
        self.0.unmount()
    }
}

impl<F: fuser::Filesystem + Send + Sync + 'static> Mount<F> {
    /// Mounts `fs` on `dir` (which [`prepare`] checked), named `source` in the mount table; read-only unless
    /// `writable`.
    pub fn new(
        fs: F,
        dir: &Path,
        source: &str,
        threads: usize,
        writable: bool,
        allow_other: bool,
    ) -> io::Result<Mount<F>> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            if writable {
                fuser::MountOption::RW
            } else {
                fuser::MountOption::RO
            },
            fuser::MountOption::FSName(source.to_string()),
            fuser::MountOption::Subtype("huds".to_string()),
            // The kernel checks permissions from the modes, so `access` needs no answer of its own.
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoAtime,
        ];
        if allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(threads.max(1));
        config.clone_fd = true;
        let session = fuser::Session::new(fs, dir, &config)?;
        if let Err(e) = mountpoint::raise_readahead(dir, READAHEAD_KIB) {
            tracing::debug!("keeping the kernel's read-ahead on {}: {e}", dir.display());
        }
        Ok(Mount { session })
    }

    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }

    /// Serves the kernel until the mount goes away (an [`Unmounter`], `fusermount3 -u`, or `umount`).
    pub fn run(self) -> io::Result<()> {
        self.session.run()
    }
}
