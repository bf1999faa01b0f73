//! `huds mount CAP|CID|VOLUME[@N][/path] DIR`: a stored file or tree, or a version of one of the home's
//! volumes, as a read-only directory, until SIGINT/SIGTERM.
//!
//! Locally it reads the home's store (opened read-only, so a node can keep running on the home); with `--api`
//! it reads shards through the node, which fetches them from the network: the DAG is opened and decoded in
//! this process, so a capability's key never leaves it.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::api_client::HttpShardSource;
use crate::home;
use huds::read::ShardSource;
use huds::{Capability, Reader};

/// Decoded segments the reader keeps, at least: the one being read, those decoding and those read ahead.
const SEGMENTS_CACHED_MIN: u64 = 12;

/// How a mount is made.
pub(crate) struct MountArgs<'a> {
    pub target: &'a str,
    pub dir: &'a Path,
    /// The segment cache's limit in bytes.
    pub cache_bytes: u64,
    pub threads: usize,
    /// Mount a volume read-only (any other target always is).
    pub read_only: bool,
    /// How often a read-write mount publishes its changes (zero: only on fsync of its root and at unmount).
    pub publish_every: std::time::Duration,
    /// How often a read-only mount of a volume's newest version asks for a newer one (zero: never).
    pub follow_every: std::time::Duration,
    /// Let other local users use the mount (the kernel still checks every file's mode).
    pub allow_other: bool,
}

/// Opens the DAG `target` names: through the node at `api`, else from the home at `home`. A CID must open
/// to a DAG rooted at that CID, whatever capability the node or the public table gave for it.
fn open(home: &Path, api: Option<&str>, head: &str) -> Result<Reader> {
    let reader = open_unchecked(home, api, head)?;
    if !head.starts_with("huds:") {
        let asked = huds::cids::parse(head)?;
        if reader.root() != asked {
            bail!(
                "{} answered {asked} with another file (rooted at {}): refusing to mount it",
                api.unwrap_or("the home's public table"),
                reader.root()
            );
        }
    }
    Ok(reader)
}

fn open_unchecked(home: &Path, api: Option<&str>, head: &str) -> Result<Reader> {
    match api {
        Some(api) => {
            let source = Arc::new(HttpShardSource::new(api));
            let cap = if head.starts_with("huds:") {
                Capability::parse(head)?
            } else {
                let cid = huds::cids::parse(head)?;
                let text = source.resolve_public(&cid.to_string()).with_context(|| {
                    format!("{cid} is not a public file the node at {api} holds")
                })?;
                Capability::parse(&text)?
            };
            let sealed = source.fetch(&cap.manifest).map_err(|p| {
                anyhow::anyhow!(
                    "the manifest {} could not be fetched through {api}: {p:?}",
                    cap.manifest
                )
            })?;
            Ok(Reader::open(source, &cap, &sealed)?)
        }
        None => {
            let home = home::Home::open(home)?;
            let store = Arc::new(home.store_read_only()?);
            let cap = huds::resolve_capability(&*store, head)?;
            Ok(Reader::open_local(store, &cap)?)
        }
    }
}

/// The target as given, or (for `-`) the first line of standard input: a capability passed that way stays out
/// of the process's command line, which every local user can read in `/proc`.
fn target_text(given: &str) -> Result<String> {
    if given != "-" {
        return Ok(given.to_string());
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the target from standard input")?;
    let line = line.trim().to_string();
    if line.is_empty() {
        bail!("no target on standard input: give a capability or a CID, then a newline");
    }
    Ok(line)
}

/// Mounts, prints where, and serves until a signal or an unmount.
pub(crate) fn mount(home: &Path, api: Option<&str>, args: MountArgs, json: bool) -> Result<()> {
    let target = target_text(args.target)?;
    let (head, path) = target.split_once('/').unwrap_or((&target, ""));
    // Everything that can fail on the user's input fails here, before anything is mounted.
    let volume = crate::volume::mount_target(home, api, head)?;
    if let Some(t) = &volume
        && !t.pinned
        && !args.read_only
    {
        if !path.trim_matches('/').is_empty() {
            bail!(
                "a read-write mount is of a whole volume: mount {} (or pass --read-only to mount /{path} alone)",
                t.name
            );
        }
        let api = api.context("volumes live on the chain: pass --api URL")?;
        crate::volume::check_writable(home, &t.name)?;
        return mount_volume(home, api, t, &args, json);
    }
    let reader = match &volume {
        Some(t) => open_version(home, api, &t.name, &t.version)?,
        None => open(home, api, head)?,
    };
    let (reader, root) = cached_at(reader, path, args.cache_bytes)?;
    let name = path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| root.to_string());
    let me = std::fs::metadata("/proc/self").context("reading this process's owner")?;
    let follow = volume
        .as_ref()
        .filter(|t| !t.pinned && !args.follow_every.is_zero())
        .zip(api);
    let fs = match follow {
        Some((t, api)) => {
            let fs = fuse_mount::DagFs::following(reader, root, &name, me.uid(), me.gid())?;
            let updater = fs.updater();
            let (home, api) = (home.to_path_buf(), api.to_string());
            let (volume, shown, every) = (t.name.clone(), t.version.version, args.follow_every);
            let (path, cache_bytes) = (path.to_string(), args.cache_bytes);
            std::thread::spawn(move || {
                follow_volume(
                    &home,
                    &api,
                    &volume,
                    shown,
                    every,
                    &updater,
                    &path,
                    cache_bytes,
                    json,
                )
            });
            fs
        }
        None => fuse_mount::DagFs::new(reader, root, &name, me.uid(), me.gid())?,
    };
    let what = match (&volume, follow.is_some()) {
        (Some(t), true) => format!(
            "volume {} version {} ({root}, moving to each newer version)",
            t.name, t.version.version
        ),
        (Some(t), false) => format!("volume {} version {} ({root})", t.name, t.version.version),
        (None, _) => root.to_string(),
    };
    let mut answer = json!({ "cid": root.to_string(), "read_only": true });
    if let Some(t) = &volume {
        answer["volume"] =
            json!({ "name": t.name, "version": t.version.version, "follows": follow.is_some() });
    }
    serve(fs, &args, false, &what, answer, json)
}

/// The reader of version `v` of volume `name`, which must open to the version's own root.
fn open_version(
    home: &Path,
    api: Option<&str>,
    name: &str,
    v: &crate::volume::Version,
) -> Result<Reader> {
    let reader = open_unchecked(home, api, &v.cap)?;
    if reader.root() != v.root {
        bail!(
            "version {} of volume {name} names {} but its capability opens {}: refusing to mount it",
            v.version,
            v.root,
            reader.root()
        );
    }
    Ok(reader)
}

/// `reader` with a segment cache of about `cache_bytes`, and the CID of `path` in its DAG.
fn cached_at(reader: Reader, path: &str, cache_bytes: u64) -> Result<(Reader, cid::Cid)> {
    let segment_bytes = u64::from(reader.manifest().segment_bytes_max).max(1);
    let reader = reader
        .with_cached_segments((cache_bytes / segment_bytes).max(SEGMENTS_CACHED_MIN) as usize);
    let root = reader.resolve(&reader.root(), path)?;
    Ok((reader, root))
}

/// Moves a read-only mount of volume `name` to each newer version the chain proves, asking every `every`;
/// runs for the mount's life. A version that cannot be proven or opened is skipped (and logged) until the
/// next ask; one without `path` keeps the mount where it is.
#[allow(clippy::too_many_arguments)]
fn follow_volume(
    home: &Path,
    api: &str,
    name: &str,
    mut shown: u64,
    every: std::time::Duration,
    updater: &fuse_mount::Updater,
    path: &str,
    cache_bytes: u64,
    json: bool,
) {
    loop {
        std::thread::sleep(every);
        let step = || -> Result<Option<u64>> {
            let Some(v) = crate::volume::newer_version(home, api, name, shown)? else {
                return Ok(None);
            };
            let (reader, root) =
                cached_at(open_version(home, Some(api), name, &v)?, path, cache_bytes)?;
            let label = path
                .rsplit('/')
                .find(|s| !s.is_empty())
                .map_or_else(|| root.to_string(), str::to_string);
            updater.show(reader, root, &label)?;
            // Stdout may be gone (a closed terminal): the mount moved all the same.
            let _ = if json {
                writeln!(
                    std::io::stdout(),
                    "{}",
                    json!({ "now_showing": { "volume": name, "version": v.version, "cid": v.root.to_string() } })
                )
            } else {
                writeln!(
                    std::io::stdout(),
                    "now showing volume {name} version {} ({})",
                    v.version,
                    v.root
                )
            };
            Ok(Some(v.version))
        };
        match step() {
            Ok(Some(v)) => shown = v,
            Ok(None) => {}
            Err(e) => tracing::warn!("volume {name}: staying on version {shown}: {e:#}"),
        }
    }
}

/// Mounts `fs` on the directory, prints that it is mounted (`what` in text, `answer` with the mountpoint in
/// JSON), and serves until a signal or an unmount.
fn serve<F: fuse_mount::Filesystem + Send + Sync + 'static>(
    fs: F,
    args: &MountArgs,
    writable: bool,
    what: &str,
    mut answer: serde_json::Value,
    json: bool,
) -> Result<()> {
    if let Some(note) = fuse_mount::prepare(args.dir)? {
        eprintln!("{note}");
    }
    if let Err(e) = fuse_mount::raise_open_files_limit() {
        tracing::warn!("keeping the open-files limit: {e}");
    }
    let dir = std::path::absolute(args.dir).context("resolving the mount directory")?;
    // The handlers go in before the mount, so a signal sent as soon as it is ready unmounts cleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    let signals = rt.block_on(async { Signals::install() })?;
    let mut mounted = fuse_mount::Mount::new(fs, &dir, "huds", args.threads, writable, args.allow_other).map_err(|e| {
        anyhow::anyhow!(
            "mounting on {}: {e} (is /dev/fuse there, and fusermount3 installed? scripts/setup.sh installs it)",
            dir.display()
        )
    })?;
    let unmounter = mounted.unmounter();
    let watched = dir.clone();
    std::thread::spawn(move || watch(rt, signals, unmounter, &watched));
    if json {
        answer["mountpoint"] = json!(dir);
        println!("{answer}");
    } else {
        println!(
            "mounted {what} {} at {} (Ctrl-C, SIGTERM or `fusermount3 -u {}` unmounts)",
            if writable { "read-write" } else { "read-only" },
            dir.display(),
            dir.display()
        );
    }
    std::io::stdout().flush()?;
    let served = mounted.run();
    let still = fuse_mount::mountpoint::is_mount_point(&dir).unwrap_or(false);
    // A connection aborted by the unmount itself is a clean end; any error with the mount still there is not.
    if let Err(e) = served
        && still
    {
        return Err(e).context("serving the mount");
    }
    if still {
        bail!(
            "{} is still mounted: run `fusermount3 -u {}`",
            dir.display(),
            dir.display()
        );
    }
    if !json {
        let _ = writeln!(std::io::stdout(), "unmounted {}", dir.display());
    }
    Ok(())
}

/// `huds mount NAME DIR`: the volume's working copy read-write, published as its next version on fsync of
/// the mount's root, every `publish_every` and at unmount (`specs/volumes.md` §5).
fn mount_volume(
    home: &Path,
    api: &str,
    t: &crate::volume::Target,
    args: &MountArgs,
    json: bool,
) -> Result<()> {
    crate::volume::volumes_dir(home)?;
    let (work, state_path, lock_path) = crate::volume::work_paths(home, &t.name);
    let _lock = fuse_mount::lock_exclusive(&lock_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => anyhow::anyhow!(
            "volume {} is mounted read-write by another huds mount of this home",
            t.name
        ),
        _ => anyhow::anyhow!("locking {}: {e}", lock_path.display()),
    })?;
    let head = &t.version;
    let state = match fuse_mount::WorkState::read(&state_path) {
        Ok(s) if work.is_dir() => Some(s),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading the volume's state"),
    };
    let state = match state {
        Some(s) if s.base == head.version => s,
        Some(s) if s.base > head.version => bail!(
            "{} says version {} of volume {}, but the chain's newest is {}: is this the chain the volume was made on?",
            state_path.display(),
            s.base,
            t.name,
            head.version
        ),
        Some(s) if s.dirty => {
            // Changes not yet published, and the chain moved on: either this copy's own publish, whose state
            // write a crash cut off, or another writer's.
            let root = huds::add::cid_of_path(&work)
                .with_context(|| format!("reading {}", work.display()))?;
            match crate::volume::find_published(home, api, &t.name, s.base, &root)? {
                Some(v) if v == head.version => {
                    let s = fuse_mount::WorkState {
                        base: v,
                        dirty: false,
                    };
                    s.write(&state_path)?;
                    s
                }
                _ => bail!(
                    "volume {} moved on to version {} while {} holds changes made on version {} that were never published: copy them out of that directory, then remove it and {} to mount the newest version",
                    t.name,
                    head.version,
                    work.display(),
                    s.base,
                    state_path.display()
                ),
            }
        }
        // None, or a clean copy of an older version: the newest version is checked out afresh.
        _ => checkout(home, api, t, &work, &state_path)?,
    };
    let volume = Arc::new(fuse_mount::Volume::new(
        work.clone(),
        state_path,
        state,
        Box::new(crate::volume::NodePublisher {
            home: home.to_path_buf(),
            api: api.to_string(),
            token: crate::api_token(home),
            name: t.name.clone(),
        }),
    ));
    let fs = fuse_mount::WorkFs::new(volume.clone())
        .with_context(|| format!("opening {}", work.display()))?;
    if !args.publish_every.is_zero() {
        let every = args.publish_every;
        let v = Arc::downgrade(&volume);
        let name = t.name.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(v) = v.upgrade() else { return };
                if let Err(e) = v.publish_if_dirty() {
                    eprintln!(
                        "publishing volume {name}: {e} (the changes stay in the working copy)"
                    );
                }
            }
        });
    }
    let what = format!("volume {} version {} ({})", t.name, state.base, head.root);
    let answer = json!({
        "cid": head.root.to_string(),
        "read_only": false,
        "volume": { "name": t.name, "version": state.base },
    });
    let served = serve(fs, args, true, &what, answer, json);
    // Unmounted: nothing changes the copy any more, so what is published now is all of it.
    match volume.publish_if_dirty() {
        Ok(_) => served,
        Err(e) => {
            served?;
            bail!(
                "publishing volume {}: {e}; the changes stay in {} and the next mount publishes them",
                t.name,
                work.display()
            )
        }
    }
}

/// Writes the volume's newest version into its working copy (through a partial directory renamed when whole)
/// and records it as the clean base.
fn checkout(
    home: &Path,
    api: &str,
    t: &crate::volume::Target,
    work: &Path,
    state_path: &Path,
) -> Result<fuse_mount::WorkState> {
    let head = &t.version;
    let reader = open_unchecked(home, Some(api), &head.cap)?;
    if reader.root() != head.root {
        bail!(
            "version {} of volume {} names {} but its capability opens {}: refusing it",
            head.version,
            t.name,
            head.root,
            reader.root()
        );
    }
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    reader.export(&head.root, work).with_context(|| {
        format!(
            "checking out version {} into {}",
            head.version,
            work.display()
        )
    })?;
    fuse_mount::work_fs::sync_filesystem(work)?;
    let state = fuse_mount::WorkState {
        base: head.version,
        dirty: false,
    };
    state.write(state_path)?;
    Ok(state)
}

/// SIGTERM, SIGINT and SIGHUP (a closed terminal or ssh session): each ends a mount.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// The first signal unmounts; if the mount is still there (files are open in it), it is detached, and the
/// process serves the open files until they close. Any later signal stops the process at once.
fn watch(
    rt: tokio::runtime::Runtime,
    mut signals: Signals,
    mut unmounter: fuse_mount::Unmounter,
    dir: &Path,
) {
    rt.block_on(signals.wait());
    // fusermount3 (what a user without root unmounts with) may detach lazily and still answer Ok: the mount
    // table says whether the directory is free.
    let clean =
        unmounter.unmount().is_ok() && !fuse_mount::mountpoint::is_mount_point(dir).unwrap_or(true);
    if !clean {
        let lazy = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(dir)
            .status();
        if lazy.is_ok_and(|s| s.success())
            || !fuse_mount::mountpoint::is_mount_point(dir).unwrap_or(true)
        {
            eprintln!(
                "{} is busy: detached it; this process serves the files still open in it until they close (signal again to stop now)",
                dir.display()
            );
        } else {
            eprintln!(
                "{} is busy and could not be detached: signal again to stop now",
                dir.display()
            );
        }
    }
    rt.block_on(signals.wait());
    // One more lazy unmount, so that leaving now does not leave a dead mount behind.
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(dir)
        .status();
    eprintln!(
        "stopped by a second signal, with {} still in use",
        dir.display()
    );
    std::process::exit(1);
}
