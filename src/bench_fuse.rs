//! `huds bench fuse`: a read-only mount beside the local disk, in one run. A large file read sequentially and a
//! directory of small files walked (readdir + stat) and read, each through a fresh mount and on the disk the
//! files were added from; the reader's own pipeline (the same DAG decoded with no FUSE between) shows whether
//! FUSE or decoding binds.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::tempfile_dir;

/// Bytes per read call, for every sequential read here.
const READ_BYTES: usize = 1 << 20;
/// O_DIRECT's alignment.
const ALIGN: usize = 4096;
/// Each small file's size.
const SMALL_BYTES: usize = 1024;
/// Small files per directory: a plain UnixFS directory holds about 2,000 such names (HAMT-sharded ones are not
/// built yet), so the files are spread over subdirectories as a tree of photos or logs would be.
const FILES_PER_DIR: usize = 1000;

/// CPU seconds this process (all its threads) has used, from `/proc/self/stat` (utime + stime, in the
/// kernel's fixed 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Cores busy on average while `work` ran, beside its result.
fn with_cores<T>(work: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let value = work()?;
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    Ok((value, (cpu_seconds() - cpu) / wall))
}

struct Figure {
    name: &'static str,
    /// Bytes per second, or operations per second for the metadata rows.
    rate: f64,
}

fn xorshift_fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Reads `path` to the end in `READ_BYTES` calls; with `direct`, around the page cache (O_DIRECT).
fn read_through(path: &Path, direct: bool) -> Result<(u64, f64)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut raw = vec![0u8; READ_BYTES + ALIGN];
    let at = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    let buf = &mut raw[at..at + READ_BYTES];
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// readdir + lstat of every entry below `dir` (its subdirectories and their files): files seen, and seconds.
fn walk(dir: &Path) -> Result<(usize, f64)> {
    let started = Instant::now();
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.is_dir() {
                dirs.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// open + read of every file in `dir`, in name order: files per second.
fn read_all(dir: &Path, count: usize) -> Result<f64> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(SMALL_BYTES);
    for i in 0..count {
        buf.clear();
        std::fs::File::open(dir.join(small_name(i)))?.read_to_end(&mut buf)?;
        if buf.len() != SMALL_BYTES {
            bail!("{} read {} bytes", small_name(i), buf.len());
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The `i`-th small file's path below the small files' directory.
fn small_name(i: usize) -> String {
    format!("d{:03}/f{i:06}", i / FILES_PER_DIR)
}

/// Writes the workload: `data/big.bin` (random, fsynced) and `data/small/` with `files` files.
fn make_data(data: &Path, size: u64, files: usize) -> Result<()> {
    std::fs::create_dir_all(data.join("small"))?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut f = std::fs::File::create(data.join("big.bin"))?;
    let mut chunk = vec![0u8; READ_BYTES];
    let mut left = size;
    while left > 0 {
        let n = left.min(READ_BYTES as u64) as usize;
        xorshift_fill(&mut state, &mut chunk[..n]);
        std::io::Write::write_all(&mut f, &chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let mut small = vec![0u8; SMALL_BYTES];
    for i in 0..files {
        xorshift_fill(&mut state, &mut small);
        let path = data.join("small").join(small_name(i));
        if i % FILES_PER_DIR == 0
            && let Some(parent) = path.parent()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &small)?;
    }
    Ok(())
}

/// Waits up to 10 s for `dir` to become a mount point.
fn wait_mounted(dir: &Path) -> Result<()> {
    let started = Instant::now();
    while !fuse_mount::mountpoint::is_mount_point(dir)? {
        if started.elapsed().as_secs() > 10 {
            bail!("{} was not mounted within 10 s", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

/// A fresh mount of `cap` on `mnt` for `work`, unmounted after it whatever happens.
fn with_mount<T>(
    threads: usize,
    store: &Arc<huds::Store>,
    cap: &huds::Capability,
    mnt: &Path,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let store: Arc<dyn huds::BlockStore> = store.clone();
    let reader = Reader::open_local(store, cap)?;
    let root = reader.root();
    let me = std::fs::metadata("/proc/self")?;
    let fs = fuse_mount::DagFs::new(
        reader,
        root,
        "root",
        std::os::unix::fs::MetadataExt::uid(&me),
        std::os::unix::fs::MetadataExt::gid(&me),
    )?;
    serve(fs, threads, false, mnt, work)
}

use huds::Reader;

/// Publishes a volume's working copy into the bench's own store: the real add path (chunk, seal, code, store),
/// with local shards and no chain, so the figure is the storage side's own.
struct LocalPublisher {
    store: Arc<huds::Store>,
    last: Arc<std::sync::Mutex<Option<huds::Capability>>>,
}

impl fuse_mount::Publisher for LocalPublisher {
    fn publish(&self, dir: &Path, base: u64) -> std::result::Result<u64, String> {
        let added = huds::add(
            &*self.store,
            huds::Source::Path(dir),
            &huds::AddOptions::default(),
            &mut |_| {},
        )
        .map_err(|e| e.to_string())?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(added.capability);
        Ok(base + 1)
    }
}

/// A read-write volume mount of `volume` on `mnt` for `work`, unmounted after it whatever happens.
fn with_volume<T>(
    threads: usize,
    volume: &Arc<fuse_mount::Volume>,
    mnt: &Path,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    serve(
        fuse_mount::WorkFs::new(volume.clone())?,
        threads,
        true,
        mnt,
        work,
    )
}

/// Mounts `fs` on `mnt` (read-write if `writable`), runs `work` once it is mounted, and unmounts whatever
/// happens.
fn serve<F: fuse_mount::Filesystem + Send + Sync + 'static, T>(
    fs: F,
    threads: usize,
    writable: bool,
    mnt: &Path,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    fuse_mount::prepare(mnt)?;
    let mut mounted = fuse_mount::Mount::new(fs, mnt, "huds", threads, writable, false)
        .context("mounting (needs /dev/fuse and fusermount3: scripts/setup.sh)")?;
    let mut unmounter = mounted.unmounter();
    let serving = std::thread::spawn(move || mounted.run());
    let result = wait_mounted(mnt).and_then(|()| work());
    let unmounted = unmounter.unmount();
    let served = serving
        .join()
        .map_err(|_| anyhow::anyhow!("the mount's thread panicked"))?;
    let value = result?;
    unmounted.context("unmounting")?;
    served.context("serving the mount")?;
    Ok(value)
}

/// Writes `size` pseudo-random bytes to `path` in `READ_BYTES` calls, then fsyncs: bytes per second.
fn write_through(path: &Path, size: u64) -> Result<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut chunk = vec![0u8; READ_BYTES];
    xorshift_fill(&mut state, &mut chunk);
    let started = Instant::now();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let n = left.min(READ_BYTES as u64) as usize;
        chunk[0] = chunk[0].wrapping_add(1);
        std::io::Write::write_all(&mut f, &chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(size as f64 / started.elapsed().as_secs_f64())
}

/// Creates `files` small files (`FILES_PER_DIR` a directory), stats each, unlinks each: operations per second.
fn churn(dir: &Path, files: usize) -> Result<f64> {
    let small = vec![7u8; SMALL_BYTES];
    let started = Instant::now();
    for i in 0..files {
        let path = dir.join(small_name(i));
        if i % FILES_PER_DIR == 0
            && let Some(parent) = path.parent()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &small)?;
    }
    for i in 0..files {
        if std::fs::symlink_metadata(dir.join(small_name(i)))?.len() != SMALL_BYTES as u64 {
            bail!("{} has the wrong size", small_name(i));
        }
    }
    for i in 0..files {
        std::fs::remove_file(dir.join(small_name(i)))?;
    }
    Ok((3 * files) as f64 / started.elapsed().as_secs_f64())
}

/// The write figures: a large file written and fsynced, and small files created, stated and unlinked, on the
/// local disk and through a read-write volume mount of a working copy on that disk; then the time from fsync
/// of the mount's root to the new version read back through a reader.
struct Writes {
    disk: f64,
    mount: f64,
    mount_cores: f64,
    churn_disk: f64,
    churn_mount: f64,
    publish_s: f64,
}

fn writes(tmp: &Path, size: u64, files: usize, threads: usize) -> Result<Writes> {
    let local = tmp.join("write-local");
    std::fs::create_dir_all(&local)?;
    // The disk's write speed varies from run to run on a shared VM: the better of two runs, one before and one
    // after the mount's, is the baseline.
    let disk = write_through(&local.join("big.bin"), size)?;
    std::fs::remove_file(local.join("big.bin"))?;
    let churn_disk = churn(&local, files)?;
    let work = tmp.join("volume-work");
    std::fs::create_dir_all(&work)?;
    let store = Arc::new(
        huds::Store::open(&tmp.join("volume-store")).context("opening the volume's store")?,
    );
    let last = Arc::new(std::sync::Mutex::new(None));
    let publisher = LocalPublisher {
        store: store.clone(),
        last: last.clone(),
    };
    let volume = Arc::new(fuse_mount::Volume::new(
        work.clone(),
        tmp.join("volume.state"),
        fuse_mount::WorkState {
            base: 1,
            dirty: false,
        },
        Box::new(publisher),
    ));
    let mnt = tmp.join("mnt-volume");
    std::fs::create_dir_all(&mnt)?;
    let (mount, mount_cores, churn_mount, publish_s) = with_volume(threads, &volume, &mnt, || {
        let (mount, cores) = with_cores(|| write_through(&mnt.join("big.bin"), size))?;
        let churn_mount = churn(&mnt.join("small"), files)?;
        // fsync of the root publishes; the version is readable once a reader opens it from the store and
        // reads the large file's last byte.
        let started = Instant::now();
        std::fs::File::open(&mnt)?
            .sync_all()
            .context("fsync of the volume's root (publishing)")?;
        let cap = last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .context("fsync of the root published nothing")?;
        let store_dyn: Arc<dyn huds::BlockStore> = store.clone();
        let reader = Reader::open_local(store_dyn, &cap)?;
        let big = reader.resolve(&reader.root(), "big.bin")?;
        reader.read_file(&big, size - 1..size, &mut std::io::sink())?;
        Ok((mount, cores, churn_mount, started.elapsed().as_secs_f64()))
    })?;
    let disk = disk.max(write_through(&local.join("big.bin"), size)?);
    std::fs::remove_file(local.join("big.bin"))?;
    Ok(Writes {
        disk,
        mount,
        mount_cores,
        churn_disk,
        churn_mount,
        publish_s,
    })
}

pub fn fuse(size_mib: usize, files: usize, threads: usize, json: bool) -> Result<()> {
    let tmp = tempfile_dir()?;
    let data = tmp.path().join("data");
    let size = (size_mib as u64) << 20;
    make_data(&data, size, files)?;
    let store = Arc::new(
        huds::Store::open(&tmp.path().join("store")).context("opening the bench's store")?,
    );
    let added = huds::add(
        &*store,
        huds::Source::Path(&data),
        &huds::AddOptions::default(),
        &mut |_| {},
    )
    .context("adding the workload")?;
    let cap = added.capability;
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt)?;

    // The disk: around the page cache (O_DIRECT), then through it (the file was just written).
    let (n, t) = read_through(&data.join("big.bin"), true)?;
    let disk = Figure {
        name: "local disk, O_DIRECT",
        rate: n as f64 / t,
    };
    let (n, t) = read_through(&data.join("big.bin"), false)?;
    let cached = Figure {
        name: "local disk, page cache",
        rate: n as f64 / t,
    };
    // The reader with no FUSE between: the same DAG, decoded from the same store.
    let store_dyn: Arc<dyn huds::BlockStore> = store.clone();
    let reader = Reader::open_local(store_dyn, &cap)?;
    let big = reader.resolve(&reader.root(), "big.bin")?;
    let ((n, t), reader_cores) = with_cores(|| {
        let started = Instant::now();
        let n = reader.read_file(&big, 0..u64::MAX, &mut std::io::sink())?;
        Ok((n, started.elapsed().as_secs_f64()))
    })?;
    let pipeline = Figure {
        name: "huds reader, no FUSE",
        rate: n as f64 / t,
    };
    drop(reader);
    let ((n, t), mount_cores) = with_mount(threads, &store, &cap, &mnt, || {
        with_cores(|| read_through(&mnt.join("big.bin"), false))
    })?;
    if n != size {
        bail!("the mount gave {n} bytes of {size}");
    }
    let mounted = Figure {
        name: "huds mount",
        rate: n as f64 / t,
    };

    let (local_n, local_walk) = walk(&data.join("small"))?;
    let local_read = read_all(&data.join("small"), files)?;
    let (mount_n, mount_walk, mount_read) = with_mount(threads, &store, &cap, &mnt, || {
        let (n, w) = walk(&mnt.join("small"))?;
        let r = read_all(&mnt.join("small"), files)?;
        Ok((n, w, r))
    })?;
    if local_n != files || mount_n != files {
        bail!("listed {local_n} files locally and {mount_n} through the mount, of {files}");
    }
    let meta = [
        Figure {
            name: "readdir + stat, local disk",
            rate: files as f64 / local_walk,
        },
        Figure {
            name: "readdir + stat, huds mount",
            rate: files as f64 / mount_walk,
        },
        Figure {
            name: "open + read 1 KiB, local disk",
            rate: files as f64 / local_read,
        },
        Figure {
            name: "open + read 1 KiB, huds mount",
            rate: files as f64 / mount_read,
        },
    ];
    let read_ratio = mounted.rate / disk.rate;
    let walk_ratio = meta[1].rate / meta[0].rate;
    let small_ratio = meta[3].rate / meta[2].rate;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let binds = if mount_cores >= 0.85 * cores {
        "the CPU: every core is busy decoding segments and moving FUSE's 128 KiB requests"
    } else if mounted.rate >= 0.8 * pipeline.rate {
        "decoding: the mount reads at the reader's own speed"
    } else {
        "FUSE round trips: the mount reads below the reader's speed with cores to spare"
    };
    let w = writes(tmp.path(), size, files, threads)?;
    let write_ratio = w.mount / w.disk;
    let churn_ratio = w.churn_mount / w.churn_disk;
    if json {
        let rows: Vec<_> = [&disk, &cached, &pipeline, &mounted]
            .iter()
            .map(|f| json!({ "name": f.name, "mb_per_s": f.rate / 1e6 }))
            .chain(
                meta.iter()
                    .map(|f| json!({ "name": f.name, "ops_per_s": f.rate })),
            )
            .collect();
        println!(
            "{}",
            json!({
                "bytes": size, "files": files, "figures": rows,
                "read_ratio_to_disk": read_ratio, "walk_ratio_to_disk": walk_ratio,
                "small_read_ratio_to_disk": small_ratio, "binds": binds,
                "cores": cores, "reader_cores_busy": reader_cores, "mount_cores_busy": mount_cores,
                "write": {
                    "disk_mb_per_s": w.disk / 1e6, "mount_mb_per_s": w.mount / 1e6,
                    "ratio_to_disk": write_ratio, "mount_cores_busy": w.mount_cores,
                    "metadata_disk_ops_per_s": w.churn_disk, "metadata_mount_ops_per_s": w.churn_mount,
                    "metadata_ratio_to_disk": churn_ratio, "fsync_to_readable_s": w.publish_s,
                },
            })
        );
        return Ok(());
    }
    println!(
        "huds bench fuse: a {size_mib} MiB file and {files} files of {SMALL_BYTES} B ({FILES_PER_DIR} a directory), read through a fresh read-only mount and on the local disk they were added from"
    );
    println!("{:<34} {:>12}", "sequential read", "MB/s");
    for f in [&disk, &cached, &pipeline, &mounted] {
        println!("{:<34} {:>12.1}", f.name, f.rate / 1e6);
    }
    println!("{:<34} {:>12}", "metadata", "ops/s");
    for f in &meta {
        println!("{:<34} {:>12.0}", f.name, f.rate);
    }
    println!(
        "read = {read_ratio:.2}x the disk (goal >= 0.5x), {:.2}x the page cache, {:.2}x the reader alone; binds: {binds}",
        mounted.rate / cached.rate,
        mounted.rate / pipeline.rate
    );
    println!(
        "cores busy: {reader_cores:.2} of {cores} for the reader alone, {mount_cores:.2} for the mount (decoding, FUSE, and the reading thread)"
    );
    println!(
        "metadata: readdir + stat = {walk_ratio:.2}x the disk (goal >= 0.2x); small-file reads = {small_ratio:.2}x"
    );
    println!(
        "read-write volume (working copy on the same disk; publishing into a local store, no chain):"
    );
    println!("{:<34} {:>12}", "sequential write + fsync", "MB/s");
    println!("{:<34} {:>12.1}", "local disk", w.disk / 1e6);
    println!("{:<34} {:>12.1}", "huds volume mount", w.mount / 1e6);
    println!("{:<34} {:>12}", "create + stat + unlink 1 KiB", "ops/s");
    println!("{:<34} {:>12.0}", "local disk", w.churn_disk);
    println!("{:<34} {:>12.0}", "huds volume mount", w.churn_mount);
    println!(
        "write = {write_ratio:.2}x the disk (goal >= 0.3x) on {:.2} cores; metadata = {churn_ratio:.2}x (goal >= 0.2x); fsync of the root to the new version readable: {:.2} s (the whole {size_mib} MiB tree is added again)",
        w.mount_cores, w.publish_s
    );
    Ok(())
}
