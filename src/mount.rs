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
    let reader = match &volume {
        Some((name, v)) => {
            let reader = open_unchecked(home, api, &v.cap)?;
            if reader.root() != v.root {
                bail!(
                    "version {} of volume {name} names {} but its capability opens {}: refusing to mount it",
                    v.version,
                    v.root,
                    reader.root()
                );
            }
            reader
        }
        None => open(home, api, head)?,
    };
    let segment_bytes = u64::from(reader.manifest().segment_bytes_max).max(1);
    let reader = reader
        .with_cached_segments((args.cache_bytes / segment_bytes).max(SEGMENTS_CACHED_MIN) as usize);
    let root = reader.resolve(&reader.root(), path)?;
    let name = path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| root.to_string());
    let me = std::fs::metadata("/proc/self").context("reading this process's owner")?;
    let fs = fuse_mount::DagFs::new(reader, root, &name, me.uid(), me.gid())?;
    if let Some(note) = fuse_mount::prepare(args.dir)? {
        eprintln!("{note}");
    }
    let dir = std::path::absolute(args.dir).context("resolving the mount directory")?;
    // The handlers go in before the mount, so a signal sent as soon as it is ready unmounts cleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    let signals = rt.block_on(async { Signals::install() })?;
    let mut mounted = fuse_mount::Mount::new(fs, &dir, "huds", args.threads).map_err(|e| {
        anyhow::anyhow!(
            "mounting on {}: {e} (is /dev/fuse there, and fusermount3 installed? scripts/setup.sh installs it)",
            dir.display()
        )
    })?;
    let unmounter = mounted.unmounter();
    let watched = dir.clone();
    std::thread::spawn(move || watch(rt, signals, unmounter, &watched));
    if json {
        let mut v = json!({ "cid": root.to_string(), "mountpoint": dir, "read_only": true });
        if let Some((name, version)) = &volume {
            v["volume"] = json!({ "name": name, "version": version.version });
        }
        println!("{v}");
    } else {
        let what = match &volume {
            Some((name, v)) => format!("volume {name} version {} ({root})", v.version),
            None => root.to_string(),
        };
        println!(
            "mounted {what} read-only at {} (Ctrl-C, SIGTERM or `fusermount3 -u {}` unmounts)",
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
        println!("unmounted {}", dir.display());
    }
    Ok(())
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
