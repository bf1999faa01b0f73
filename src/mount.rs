//! `huds mount CAP|CID[/path] DIR`: a stored file or tree as a read-only directory, until SIGINT/SIGTERM.
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
use crate::network::StopSignals;
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

/// Opens the DAG `target` names: through the node at `api`, else from the home at `home`.
fn open(home: &Path, api: Option<&str>, head: &str) -> Result<Reader> {
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

/// Mounts, prints where, and serves until a signal or an unmount.
pub(crate) fn mount(home: &Path, api: Option<&str>, args: MountArgs, json: bool) -> Result<()> {
    let (head, path) = args.target.split_once('/').unwrap_or((args.target, ""));
    // Everything that can fail on the user's input fails here, before anything is mounted.
    let reader = open(home, api, head)?;
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
    let signals = rt.block_on(async { StopSignals::install() })?;
    let mut mounted = fuse_mount::Mount::new(fs, &dir, "huds", args.threads).map_err(|e| {
        anyhow::anyhow!(
            "mounting on {}: {e} (is /dev/fuse there, and fusermount3 installed? scripts/setup.sh installs it)",
            dir.display()
        )
    })?;
    let mut unmounter = mounted.unmounter();
    let watched = dir.clone();
    std::thread::spawn(move || {
        let mut signals = signals;
        rt.block_on(signals.wait());
        if unmounter.unmount().is_ok() {
            return;
        }
        // Files are open in the mount: detach it now (nothing new can open through it) and keep serving the
        // open ones; the session ends when the last one closes. A second signal stops at once.
        let lazy = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&watched)
            .status();
        if lazy.is_ok_and(|s| s.success()) {
            eprintln!(
                "{} is busy: detached it; this process serves the files still open in it until they close (signal again to stop now)",
                watched.display()
            );
        } else {
            eprintln!(
                "{} is busy and could not be detached: signal again to stop now",
                watched.display()
            );
        }
        rt.block_on(signals.wait());
        eprintln!("stopped with files still open in {}", watched.display());
        std::process::exit(1);
    });
    if json {
        println!(
            "{}",
            json!({ "cid": root.to_string(), "mountpoint": dir, "read_only": true })
        );
    } else {
        println!(
            "mounted {root} read-only at {} (Ctrl-C, SIGTERM or `fusermount3 -u {}` unmounts)",
            dir.display(),
            dir.display()
        );
    }
    std::io::stdout().flush()?;
    mounted.run().context("serving the mount")?;
    if fuse_mount::mountpoint::is_mount_point(&dir).unwrap_or(false) {
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
