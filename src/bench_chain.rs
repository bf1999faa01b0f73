//! `huds bench chain`: transfers per second finalised by a 1-shard and a 4-shard devnet chain (4 validators
//! per shard), measured in the same run.
//!
//! What runs: every validator of the setup in this process, each with its own libp2p swarm (gossipsub over
//! TCP + noise + yamux on 127.0.0.1) and its own RocksDB (unsynced writes, so the disk's fsync latency is not
//! what is measured), exactly the runtime `huds devnet` uses. The load: pre-signed transfers between funded
//! accounts of each shard, fed to one validator per shard in batches as fast as its mempool admits them (the
//! validator gossips them to its committee). Measured from the first submission until every transfer is
//! final: finalised transfers per second, process CPU time per finalised transfer, block time, and time to
//! finality (submission to the commit notice). With `--cross-shard PCT`, that share of the multi-shard
//! setup's transfers pays an account of the next shard (Atomix): such a transfer is final when the
//! recipient's shard commits its lock, which the sender's committee relays after finalising it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chain::crypto::{Hash, SecretKey};
use chain::{Address, Amount, SignedTransaction, Transaction, TxError, TxKind, shard_of};
use chain_node::{ChainDevnet, DevnetOptions};
use serde_json::json;

/// Senders per shard: enough that their pending windows (`chain::ledger::PENDING_PER_SENDER_MAX` nonces each)
/// together exceed the mempool, so admission's per-sender bound never throttles the load.
const SENDERS_PER_SHARD: usize = 256;
const SUBMIT_BATCH: usize = 1024;
const FINISH_WAIT: Duration = Duration::from_secs(120);
const IDLE_SAMPLES: usize = 9;

fn bench_bft(chain_id: u32, shard: chain::ShardId) -> chain::bft::Config {
    // Large blocks take a while to build and check on a loaded machine: generous timeouts keep rounds from
    // failing for it, and rebroadcasts (which re-send whole blocks) less often.
    chain::bft::Config {
        timeout_propose_ms: 3_000,
        timeout_vote_ms: 1_500,
        rebroadcast_ms: 1_000,
        commit_wait_ms: 20,
        ..chain::bft::Config::new(chain_id, shard)
    }
}

/// Process CPU time (user + system) from /proc, in seconds.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    // USER_HZ is 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

struct Figures {
    shards: u16,
    transfers: usize,
    seconds: f64,
    cpu_seconds: f64,
    blocks: u64,
    finality_ms: Vec<f64>,
    idle_finality_ms: f64,
    /// Gossip messages gossipsub dropped (full send queues, or past their deadline), all validators.
    dropped_messages: u64,
    /// Validators running: the shards' committees, the beacon's, and spares with `--epochs`.
    validators: usize,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.transfers as f64 / self.seconds
    }
    fn cpu_us_per_transfer(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.transfers as f64
    }
    fn block_ms(&self) -> f64 {
        // Blocks of all shards over the run: per shard, one block every this many ms.
        self.seconds * 1e3 * f64::from(self.shards) / self.blocks.max(1) as f64
    }
    fn finality(&self, q: f64) -> f64 {
        if self.finality_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.finality_ms.len() - 1) as f64 * q).round() as usize;
        self.finality_ms[i]
    }
}

/// Funded senders of every shard (deterministic keys, bench only).
fn senders(shards: u16) -> Vec<Vec<SecretKey>> {
    let mut out: Vec<Vec<SecretKey>> = vec![Vec::new(); usize::from(shards)];
    let mut i = 0u64;
    while out.iter().any(|s| s.len() < SENDERS_PER_SHARD) {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&i.to_be_bytes());
        i += 1;
        let key = SecretKey::from_bytes(seed);
        let s = usize::from(shard_of(&Address::of(&key.public()), shards));
        if out[s].len() < SENDERS_PER_SHARD {
            out[s].push(key);
        }
    }
    out
}

async fn run_setup(shards: u16, transfers: usize, epochs: bool, cross_pct: u8) -> Result<Figures> {
    let dir = tempfile_dir()?;
    let keys = senders(shards);
    let wallets: Vec<Address> = keys
        .iter()
        .flatten()
        .map(|k| Address::of(&k.public()))
        .collect();
    let mut options = DevnetOptions::new(shards, wallets);
    options.block_txs_max = chain::block::BLOCK_TXS_MAX;
    options.sync_writes = false;
    options.bft = Some(bench_bft);
    // By default fixed committees and no spare validators: the bench measures finality, not epoch changes.
    // With `--epochs` the devnet's own setting (a run is far shorter than an epoch, so no committee changes
    // during it, but every validator keeps the beacon chain and spares wait for seats).
    if !epochs {
        options.epoch_length = 0;
        options.spares = 0;
    }
    let net = ChainDevnet::start(&dir.0, options)
        .await
        .context("starting the validators")?;
    let chain_id = net.genesis.params.chain_id;
    let fee = net.genesis.params.fee_min;
    let validators = net.validator_count();

    // Pre-signed transfers, interleaved over the senders so every batch spreads across accounts.
    // Every `cross`-th transfer (by percent) of a multi-shard setup pays an account of the next shard.
    let per_shard = transfers.div_ceil(usize::from(shards));
    let mut loads: Vec<Vec<SignedTransaction>> = Vec::new();
    let mut cross_ids: HashSet<Hash> = HashSet::new();
    // Per shard, the transfers whose final step is a commit there.
    let mut expected = vec![0usize; usize::from(shards)];
    for (s, shard_keys) in keys.iter().enumerate() {
        let mut txs = Vec::with_capacity(per_shard);
        let mut nonce = 0;
        while txs.len() < per_shard {
            for (i, key) in shard_keys.iter().enumerate() {
                if txs.len() == per_shard {
                    break;
                }
                let cross = shards > 1 && (txs.len() % 100) < usize::from(cross_pct);
                let out = if cross { (s + 1) % keys.len() } else { s };
                let out_keys = &keys[out];
                let to = Address::of(&out_keys[(i + 1) % out_keys.len()].public());
                let tx = Transaction {
                    chain_id,
                    sender: key.public(),
                    nonce,
                    fee,
                    expiry_height: 1_000_000,
                    kind: TxKind::Transfer {
                        to,
                        amount: Amount(1),
                    },
                };
                let tx = tx.sign(key);
                if cross {
                    cross_ids.insert(tx.id());
                }
                expected[out] += 1;
                txs.push(tx);
            }
            nonce += 1;
        }
        loads.push(txs);
    }
    let cross_ids = Arc::new(cross_ids);
    let total: usize = loads.iter().map(Vec::len).sum();

    // One validator per shard takes the load and reports commits.
    let handles = net.handles();
    let entry: Vec<_> = (0..shards)
        .map(|s| {
            handles
                .iter()
                .find(|h| h.status().lane.shard == s)
                .cloned()
                .context("every shard has a validator")
        })
        .collect::<Result<_>>()?;
    let submitted: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::default();
    let mut watchers = Vec::new();
    for h in &entry {
        let mut commits = h.commits();
        let submitted = submitted.clone();
        let cross_ids = cross_ids.clone();
        let shard = h.status().lane.shard;
        let expected = expected[usize::from(shard)];
        watchers.push(tokio::spawn(async move {
            let (mut done, mut blocks, mut finality) = (0usize, 0u64, Vec::new());
            while done < expected {
                match commits.recv().await {
                    // The validator's beacon lane commits too.
                    Ok(notice) if notice.shard != shard => {}
                    Ok(notice) => {
                        blocks += 1;
                        let now = Instant::now();
                        let map = submitted.lock().expect("no panics while held");
                        // A transfer is final with its commit on its recipient's shard: the block
                        // itself here, or the block that commits its Atomix lock.
                        let finals = notice
                            .tx_ids
                            .iter()
                            .filter(|id| !cross_ids.contains(*id))
                            .chain(&notice.inbound_ids);
                        for id in finals {
                            if let Some(t) = map.get(id) {
                                finality.push(now.duration_since(*t).as_secs_f64() * 1e3);
                                done += 1;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            (done, blocks, finality)
        }));
    }

    let cpu0 = cpu_seconds()?;
    let start = Instant::now();
    let mut feeders = Vec::new();
    for (h, txs) in entry.iter().zip(loads) {
        let h = h.clone();
        let submitted = submitted.clone();
        feeders.push(tokio::spawn(async move {
            for batch in txs.chunks(SUBMIT_BATCH) {
                let mut pending: Vec<SignedTransaction> = batch.to_vec();
                while !pending.is_empty() {
                    {
                        let now = Instant::now();
                        let mut map = submitted.lock().expect("no panics while held");
                        for tx in &pending {
                            map.entry(tx.id()).or_insert(now);
                        }
                    }
                    let results = h.submit(pending.clone()).await?;
                    let mut retry = Vec::new();
                    for (tx, r) in pending.into_iter().zip(results) {
                        match r {
                            Ok(()) => {}
                            // A full mempool, or a sender already a window of nonces ahead of its
                            // account: wait for blocks to take some.
                            Err(TxError::MempoolFull | TxError::NonceTooFar { .. }) => {
                                retry.push(tx)
                            }
                            Err(e) => bail!("the validator refused a bench transfer: {e}"),
                        }
                    }
                    if !retry.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    pending = retry;
                }
            }
            Ok(())
        }));
    }
    for f in feeders {
        f.await.context("a feeder stopped")??;
    }
    let mut done = 0;
    let mut blocks = 0;
    let mut finality_ms = Vec::new();
    for w in watchers {
        let waited = tokio::time::timeout(FINISH_WAIT, w).await;
        if waited.is_err() {
            print_statuses(&net);
        }
        let (d, b, f) = waited
            .context("the transfers were not all final in time")?
            .context("a watcher stopped")?;
        done += d;
        blocks += b;
        finality_ms.extend(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    let idle = idle_finality(&entry[0], &keys[0], chain_id, fee).await;
    if idle.is_err() {
        print_statuses(&net);
    }
    let idle_finality_ms = idle?;
    let dropped_messages = net
        .handles()
        .iter()
        .map(|h| h.status().dropped_messages)
        .sum();
    net.shutdown().await;
    if done != total {
        bail!("{done} of {total} transfers were finalised");
    }
    finality_ms.sort_by(f64::total_cmp);
    Ok(Figures {
        shards,
        transfers: done,
        seconds,
        cpu_seconds: cpu,
        blocks,
        finality_ms,
        idle_finality_ms,
        dropped_messages,
        validators,
    })
}

/// Time to finality of one transfer at a time on an otherwise idle shard (after the load): submission to the
/// commit notice, median of `IDLE_SAMPLES`.
/// Where every validator is, for a run that did not finish.
fn print_statuses(net: &ChainDevnet) {
    for h in net.handles() {
        let s = h.status();
        eprintln!(
            "validator on {} at height {} round {} member {}, gossip messages dropped {}",
            s.lane.shard, s.lane.height, s.lane.round, s.lane.member, s.dropped_messages
        );
    }
}

async fn idle_finality(
    validator: &chain_node::ValidatorHandle,
    keys: &[SecretKey],
    chain_id: u32,
    fee: Amount,
) -> Result<f64> {
    let key = &keys[0];
    let to = Address::of(&keys[1].public());
    let mut samples = Vec::new();
    for _ in 0..IDLE_SAMPLES {
        let nonce = validator
            .account(Address::of(&key.public()))
            .await?
            .map_or(0, |a| a.nonce);
        let tx = Transaction {
            chain_id,
            sender: key.public(),
            nonce,
            fee,
            expiry_height: 1_000_000,
            kind: TxKind::Transfer {
                to,
                amount: Amount(1),
            },
        }
        .sign(key);
        let id = tx.id();
        let mut commits = validator.commits();
        let start = Instant::now();
        if let Some(Err(e)) = validator.submit(vec![tx]).await?.pop() {
            bail!("the validator refused an idle-time transfer: {e}");
        }
        tokio::time::timeout(FINISH_WAIT, async {
            while let Ok(notice) = commits.recv().await {
                if notice.tx_ids.contains(&id) {
                    break;
                }
            }
        })
        .await
        .context("an idle-time transfer was not final in time")?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

pub fn chain(transfers: usize, epochs: bool, cross_pct: u8, json_out: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut figures = Vec::new();
    for shards in [1u16, 4] {
        figures.push(rt.block_on(run_setup(shards, transfers, epochs, cross_pct))?);
    }
    if json_out {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({
                    "shards": f.shards,
                    "validators": f.validators,
                    "epochs": epochs,
                    "cross_shard_percent": if f.shards > 1 { cross_pct } else { 0 },
                    "transfers": f.transfers,
                    "seconds": f.seconds,
                    "transfers_per_s": f.per_second(),
                    "cpu_us_per_transfer": f.cpu_us_per_transfer(),
                    "block_time_ms": f.block_ms(),
                    "finality_ms_p50": f.finality(0.5),
                    "finality_ms_p99": f.finality(0.99),
                    "idle_finality_ms_p50": f.idle_finality_ms,
                    "gossip_messages_dropped": f.dropped_messages,
                })
            })
            .collect();
        println!("{}", json!({ "cores": cores, "setups": rows }));
        return Ok(());
    }
    println!(
        "huds bench chain: {transfers} pre-signed transfers per setup; every validator in this process with its own gossipsub swarm on 127.0.0.1 and its own RocksDB (unsynced); {cores} cores"
    );
    println!(
        "{}; {}% of the multi-shard setup's transfers to another shard (Atomix); validators: {}",
        if epochs {
            "epochs on as in huds devnet (spares, every validator following the beacon chain)"
        } else {
            "fixed committees (--epochs runs the devnet's setting)"
        },
        cross_pct,
        figures
            .iter()
            .map(|f| format!("{} with {} shard(s)", f.validators, f.shards))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<9} {:>10} {:>9} {:>12} {:>16} {:>14} {:>22} {:>17}",
        "setup",
        "transfers",
        "seconds",
        "transfers/s",
        "CPU us/transfer",
        "block time ms",
        "loaded finality p50/p99",
        "idle finality p50"
    );
    for f in &figures {
        println!(
            "{:<9} {:>10} {:>9.2} {:>12.0} {:>16.1} {:>14.0} {:>14.0}/{:<7.0} {:>14.0} ms",
            format!("{} shard{}", f.shards, if f.shards == 1 { "" } else { "s" }),
            f.transfers,
            f.seconds,
            f.per_second(),
            f.cpu_us_per_transfer(),
            f.block_ms(),
            f.finality(0.5),
            f.finality(0.99),
            f.idle_finality_ms,
        );
    }
    println!(
        "gossip messages dropped by gossipsub (full send queues or past their deadline): {}",
        figures
            .iter()
            .map(|f| format!("{} with {} shard(s)", f.dropped_messages, f.shards))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "loaded finality: submission to commit with the whole load queued at once (mostly queueing); idle finality: one transfer at a time after the load; block time: per shard, under load"
    );
    println!(
        "CPU us/transfer is the whole process (all validators, the load generator's submissions, gossip) over the run, divided by finalised transfers; with {cores} cores the CPU-bound ceiling is {:.0} transfers/s at the 4-shard cost",
        cores as f64 * 1e6 / figures[1].cpu_us_per_transfer()
    );
    Ok(())
}

/// A scratch directory under $TMPDIR, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS random source is available");
    let path = std::env::temp_dir().join(format!("huds-bench-chain-{}", u64::from_le_bytes(id)));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(TempDir(path))
}
