//! `huds bench core`: primitives alone and chained, beside the add and get pipelines, in one run.

use anyhow::{Context, Result};
use serde_json::json;

pub fn core(size_mib: usize, json: bool) -> Result<()> {
    let dir = tempfile_dir()?;
    let r = huds::bench::core(size_mib << 20, dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = [
        &r.memcpy, &r.sha256, &r.chacha, &r.rs, &r.chained, &r.add, &r.get,
    ];
    if json {
        let figs: Vec<_> = rows
            .iter()
            .map(|f| json!({ "name": f.name, "mb_per_s": f.mb_per_s(), "ratio_to_chained": f.mb_per_s() / r.chained.mb_per_s() }))
            .collect();
        println!(
            "{}",
            json!({ "bytes": size_mib << 20, "cores": cores, "figures": figs })
        );
        return Ok(());
    }
    println!(
        "huds bench core: {size_mib} MiB of random data, {cores} cores; ratios are to the chain of the three primitives"
    );
    println!("{:<28} {:>10} {:>8}", "stage", "MB/s", "ratio");
    for f in rows {
        println!(
            "{:<28} {:>10.1} {:>7.2}x",
            f.name,
            f.mb_per_s(),
            f.mb_per_s() / r.chained.mb_per_s()
        );
    }
    println!(
        "add = {:.2}x the one-core chain of sha2-256 + ChaCha20-Poly1305 + RS(4+2) (goal >= 0.60x); get = {:.2}x",
        r.add.mb_per_s() / r.chained.mb_per_s(),
        r.get.mb_per_s() / r.chained.mb_per_s()
    );
    Ok(())
}

/// A scratch directory under $TMPDIR, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source is available");
    let path = std::env::temp_dir().join(format!("huds-bench-{}", u64::from_le_bytes(id)));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(TempDir(path))
}
