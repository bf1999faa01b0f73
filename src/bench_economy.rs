//! `huds bench economy`: what proofs of storage cost the chain, in one run (`specs/economics.md` §5.6).
//!
//! - **Proof size and verification time** of a holder's proof for one period, for a deal of 4+2 over 1 MiB
//!   shards: one sample (a holder of one segment's shard) and sixteen (a holder of 16 segments or more), each
//!   checked exactly as a validator checks it (`StorageProof::verify`), beside the baseline every transaction
//!   costs: one ed25519 signature check. Also the holder's side: building the proof (reading nothing; the
//!   shards are in memory, so this is the hashing), beside BLAKE3 over the same bytes.
//! - **Block space**: for a network holding `--shards` shards (default 10,000), the proof bytes one period
//!   brings, as a share of what the period's blocks can carry, for deals of one segment (each holder answers
//!   one sample per deal: the worst case) and of 16 segments (sixteen per deal), at the devnet's period of 16
//!   blocks and at the shortest period that keeps the share under 10%.
//! - **A shard block with and without proofs**: the time a replica takes to check a block of transfers
//!   alone, and the same block carrying the proofs a period of that network brings per block (with a
//!   1-segment layout), on the real ledger (`ShardApp` on an in-memory store): the transfers/s a block
//!   carries with proofs in it, as a share of without.

use chain::ShardId;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chain::bft::App;
use chain::block::{BLOCK_PROOF_BYTES_MAX, BLOCK_TX_BYTES_MAX};
use chain::crypto::{Hash, SecretKey, hash_with};
use chain::genesis::GenesisConfig;
use chain::ledger::ShardApp;
use chain::smt;
use chain::types::deal::{self, DealTerms, Holder};
use chain::types::storage_proof::{self, PROOF_SAMPLES, StorageProof};
use chain::{Address, Amount, MemStore, Transaction, TxKind};
use serde_json::json;

const SHARD_BYTES: usize = 1 << 20;
const TRANSFERS_PER_BLOCK: usize = 2_048;

/// A deal of `segments` segments of 4+2 over 1 MiB shards on six holders (holder `i` keeps shard `i` of every
/// segment), its shards' bytes and CIDs, and the leaves of its commitments list.
struct BenchDeal {
    terms: DealTerms,
    id: Hash,
    shards: Vec<(Vec<u8>, Vec<u8>)>,
    leaves: Vec<Hash>,
}

fn bench_deal(segments: usize, owner: &Address) -> Result<BenchDeal> {
    let mut shards = Vec::with_capacity(segments * 6);
    for i in 0..segments * 6 {
        let mut bytes = vec![0u8; SHARD_BYTES];
        huds::bench::fill_random(&mut bytes, i as u64 + 1);
        let cid = hash_with("bench shard cid", &[&(i as u64).to_be_bytes()]).to_vec();
        shards.push((cid, bytes));
    }
    let leaves = shards
        .iter()
        .map(|(cid, bytes)| {
            chain::pieces::commit(bytes)
                .map(|c| deal::shard_leaf(cid, &c))
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let terms = DealTerms {
        root: vec![1, 0x55, 0x1e, 32, 0],
        size: (segments * 4 * SHARD_BYTES) as u64,
        k: 4,
        m: 2,
        periods: 64,
        holders: (0..6)
            .map(|i| Holder {
                key: SecretKey::dev(&format!("bench holder {i}")).public(),
                price: Amount::from_iost(1).expect("small"),
            })
            .collect(),
        placement: (0..segments * 6).map(|i| (i % 6) as u8).collect(),
        segment_lens: vec![SHARD_BYTES as u64; segments],
        commitments_root: smt::list_root(&leaves),
    };
    terms.check().context("the bench deal is possible")?;
    let id = terms.id(owner);
    Ok(BenchDeal {
        terms,
        id,
        shards,
        leaves,
    })
}

impl BenchDeal {
    fn prove(&self, seed: &Hash, holder: u8) -> Result<StorageProof> {
        storage_proof::prove(&self.terms, seed, &self.id, holder, 0, |p| {
            let (cid, bytes) = self.shards.get(usize::from(p))?.clone();
            Some((cid, bytes, smt::list_prove(&self.leaves, usize::from(p))))
        })
        .map_err(|missing| anyhow::anyhow!("shards {missing:?} missing"))
    }
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn economy(network_shards: usize, json_out: bool) -> Result<()> {
    let owner = Address::of(&SecretKey::dev("bench owner").public());
    let seed = hash_with("bench seed", &[]);

    // Proof size and verification time, beside a signature check.
    let small = bench_deal(1, &owner)?;
    let large = bench_deal(PROOF_SAMPLES, &owner)?;
    let one = small.prove(&seed, 0)?;
    let sixteen = large.prove(&seed, 0)?;
    let key = SecretKey::dev("bench signer");
    let message = [7u8; 200];
    let signature = key.sign(&message);
    let public = key.public();
    let signature_check = median(501, || {
        public
            .verify(&message, &signature)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    let verify = |deal: &BenchDeal, proof: &StorageProof| {
        median(501, || {
            proof
                .verify(&deal.terms, &seed)
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
    };
    let verify_one = verify(&small, &one)?;
    let verify_sixteen = verify(&large, &sixteen)?;
    // The holder's side: sixteen 1 MiB shards committed and proven, beside BLAKE3 over the same bytes.
    let prove_sixteen = median(5, || large.prove(&seed, 0).map(|_| ()))?;
    let hash_sixteen = median(5, || {
        for (_, bytes) in large.shards.iter().take(PROOF_SAMPLES) {
            std::hint::black_box(blake3::hash(bytes));
        }
        Ok(())
    })?;

    // Block space for a network of `network_shards` shards, one period.
    let period_blocks = chain::ChainParams::devnet(1).storage_period_blocks;
    let block_bytes = (BLOCK_TX_BYTES_MAX + BLOCK_PROOF_BYTES_MAX) as f64;
    let one_bytes = one.encode().len();
    let sixteen_bytes = sixteen.encode().len();
    // One segment per deal: every holder of every deal answers one sample.
    let small_layout = network_shards as f64 * one_bytes as f64;
    // Sixteen segments per deal: each holder answers sixteen samples for its sixteen shards.
    let large_layout = (network_shards as f64 / PROOF_SAMPLES as f64) * sixteen_bytes as f64;
    let share = |bytes: f64, blocks: u64| bytes / (blocks as f64 * block_bytes);
    let under_10 = |bytes: f64| (bytes / (0.10 * block_bytes)).ceil() as u64;

    // A replica checking a block of transfers, alone and with a period's proofs per block.
    let proofs_per_block = network_shards.div_ceil(period_blocks as usize);
    let checked = block_check(&small, proofs_per_block)?;
    let (alone, with_proofs, proofs_in_block) =
        (checked.alone, checked.with_proofs, checked.proofs);
    // Settling scales with the deals of the shard: a network of `network_shards` one-segment 4+2 deals.
    let network_deals = network_shards.div_ceil(6);
    let settle_network = checked
        .settle
        .mul_f64(network_deals as f64 / checked.deals.max(1) as f64);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    if json_out {
        let v = json!({
            "proof": {
                "one_sample_bytes": one_bytes,
                "sixteen_samples_bytes": sixteen_bytes,
                "max_bytes": storage_proof::PROOF_BYTES_MAX,
                "verify_one_us": micros(verify_one),
                "verify_sixteen_us": micros(verify_sixteen),
                "signature_check_us": micros(signature_check),
                "verify_sixteen_per_signature": ratio(verify_sixteen, signature_check),
                "prove_sixteen_ms": prove_sixteen.as_secs_f64() * 1e3,
                "blake3_sixteen_ms": hash_sixteen.as_secs_f64() * 1e3,
                "prove_per_blake3": ratio(prove_sixteen, hash_sixteen),
            },
            "block_space": {
                "network_shards": network_shards,
                "period_blocks": period_blocks,
                "one_segment_deals_share": share(small_layout, period_blocks),
                "sixteen_segment_deals_share": share(large_layout, period_blocks),
                "one_segment_deals_period_for_10_percent": under_10(small_layout),
                "sixteen_segment_deals_period_for_10_percent": under_10(large_layout),
            },
            "block_check": {
                "transfers": TRANSFERS_PER_BLOCK,
                "proofs": proofs_in_block,
                "alone_ms": alone.as_secs_f64() * 1e3,
                "with_proofs_ms": with_proofs.as_secs_f64() * 1e3,
                "transfers_per_s_share": ratio(alone, with_proofs),
            },
            "settling_misses": {
                "deals": checked.deals,
                "misses": checked.misses,
                "settle_ms": checked.settle.as_secs_f64() * 1e3,
                "other_block_start_ms": checked.quiet.as_secs_f64() * 1e3,
                "network_deals": network_deals,
                "network_settle_ms": settle_network.as_secs_f64() * 1e3,
                "network_settle_per_block_check": ratio(settle_network, alone),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "huds bench economy: deals of 4+2 over 1 MiB shards; one core; medians; ratios to a baseline measured in this run"
    );
    println!(
        "proof of 1 sample      {one_bytes:>6} B   verify {:>8.1} µs = {:.2} × an ed25519 signature check ({:.1} µs)",
        micros(verify_one),
        ratio(verify_one, signature_check),
        micros(signature_check)
    );
    println!(
        "proof of 16 samples    {sixteen_bytes:>6} B   verify {:>8.1} µs = {:.2} × a signature check (at most {} B)",
        micros(verify_sixteen),
        ratio(verify_sixteen, signature_check),
        storage_proof::PROOF_BYTES_MAX
    );
    println!(
        "building it (holder)   {:>8.1} ms = {:.2} × BLAKE3 over the 16 MiB it reads ({:.1} ms): CPU-bound, no disk",
        prove_sixteen.as_secs_f64() * 1e3,
        ratio(prove_sixteen, hash_sixteen),
        hash_sixteen.as_secs_f64() * 1e3
    );
    println!(
        "block space, {network_shards} shards: one-segment deals {:.1}% of a {period_blocks}-block period's blocks (under 10% from {}-block periods); 16-segment deals {:.2}% (from {})",
        100.0 * share(small_layout, period_blocks),
        under_10(small_layout),
        100.0 * share(large_layout, period_blocks),
        under_10(large_layout)
    );
    println!(
        "a replica checks a block of {TRANSFERS_PER_BLOCK} transfers in {:.1} ms alone, {:.1} ms with {proofs_in_block} proofs in it: transfers/s at {:.0}% of without",
        alone.as_secs_f64() * 1e3,
        with_proofs.as_secs_f64() * 1e3,
        100.0 * ratio(alone, with_proofs)
    );
    println!(
        "settling a period's misses: {} deals, {} holders missing, in {:.2} ms (any other block starts in {:.3} ms); {network_deals} deals ({network_shards} shards) ≈ {:.1} ms = {:.2} × that block check, once a period",
        checked.deals,
        checked.misses,
        checked.settle.as_secs_f64() * 1e3,
        checked.quiet.as_secs_f64() * 1e3,
        settle_network.as_secs_f64() * 1e3,
        ratio(settle_network, alone)
    );
    Ok(())
}

/// A replica's check of a block of transfers, alone and with up to `proofs` one-sample proofs (as many as
/// one block's proof budget holds) for deals shaped like `shape` (each proof is of its own deal): the medians
/// of a few checks each, and how many proofs the block carried.
fn block_check(shape: &BenchDeal, proofs: usize) -> Result<BlockCheck> {
    let mut config = GenesisConfig::devnet(
        1,
        0,
        Amount(0),
        Amount::from_iost(1_000_000).context("a small amount")?,
    );
    // The holders are registered storage nodes with a stake, so that settling a missed period burns some.
    let stake = Amount::from_iost(1_000).context("a small amount")?;
    config.storage_nodes = (0..6)
        .map(|h| {
            let key = SecretKey::dev(&format!("bench holder {h}"));
            (Address::of(&key.public()), stake)
        })
        .collect();
    let genesis = config.build().map_err(|e| anyhow::anyhow!("{e}"))?;
    let wallet = SecretKey::dev("devnet/wallet");
    let chain_id = genesis.params.chain_id;
    let period = genesis.params.storage_period_blocks;
    let mut proposer = ShardApp::open(&genesis, ShardId(0), MemStore::new())?;
    let mut replica = ShardApp::open(&genesis, ShardId(0), MemStore::new())?;
    proposer.block_txs_max = 4_096;
    replica.block_txs_max = 4_096;
    let mut nonce = 0u64;
    let mut tx = |kind: TxKind| {
        let mut t = Transaction {
            chain_id,
            sender: wallet.public(),
            nonce,
            fee: genesis.params.fee_min,
            expiry_height: 1_000_000,
            kind,
        };
        // A deal prepays its proofs' fees.
        t.fee = t.fee_floor(genesis.params.fee_min).expect("fits");
        let t = t.sign(&wallet);
        nonce += 1;
        t
    };
    let commit = |proposer: &mut ShardApp<MemStore>,
                  replica: &mut ShardApp<MemStore>,
                  block: &chain::block::Block|
     -> Result<()> {
        replica.check(block).map_err(|e| anyhow::anyhow!("{e}"))?;
        proposer.commit(block, Vec::new())?;
        replica.commit(block, Vec::new())?;
        Ok(())
    };
    // Deals of one segment each, opened by the wallet with the same shards (each its own id: the root
    // differs), so that each proof is a holder's answer for a deal of its own.
    let max_proofs = chain::block::BLOCK_PROOF_BYTES_MAX / (shape_proof_bytes(shape)? + 8);
    let deals: Vec<(DealTerms, Hash)> = (0..proofs.min(max_proofs))
        .map(|i| {
            let mut terms = shape.terms.clone();
            terms.root = [vec![1, 0x55, 0x1e], (i as u32).to_be_bytes().to_vec()].concat();
            let id = terms.id(&Address::of(&wallet.public()));
            (terms, id)
        })
        .collect();
    for chunk in deals.chunks(256) {
        let txs: Vec<_> = chunk
            .iter()
            .map(|(terms, id)| {
                let signatures = (0..6)
                    .map(|h| {
                        deal::sign(&SecretKey::dev(&format!("bench holder {h}")), chain_id, id)
                    })
                    .collect();
                tx(TxKind::OpenDeal {
                    terms: terms.clone(),
                    signatures,
                })
            })
            .collect();
        let block = proposer.build_block(txs);
        commit(&mut proposer, &mut replica, &block)?;
    }
    // Run to a height where period 0 of every deal is provable.
    let first = deals.first().context("some deals")?.1;
    let start = proposer
        .state()
        .deal(&first)
        .context("the deals opened")?
        .start_height;
    while proposer.tip().height < start + period {
        let block = proposer.build_block(Vec::new());
        commit(&mut proposer, &mut replica, &block)?;
    }
    let to = Address::of(&SecretKey::dev("bench recipient").public());
    let transfers = |tx: &mut dyn FnMut(TxKind) -> chain::SignedTransaction| {
        (0..TRANSFERS_PER_BLOCK)
            .map(|_| {
                tx(TxKind::Transfer {
                    to,
                    amount: Amount(1),
                })
            })
            .collect::<Vec<_>>()
    };
    let mut timings = (Vec::new(), Vec::new());
    let mut carried = 0;
    for round in 0..5 {
        // Alone.
        let block = proposer.build_block(transfers(&mut tx));
        let t = Instant::now();
        replica.check(&block).map_err(|e| anyhow::anyhow!("{e}"))?;
        timings.0.push(t.elapsed());
        commit(&mut proposer, &mut replica, &block)?;
        // With proofs: holder `round` of every deal answers this period.
        let tip = proposer.tip();
        let (_, seed) = proposer.state().seed_for(tip.height + 1, &tip.hash);
        let period_now = proposer
            .state()
            .provable_next(&deals[0].1, tip.height + 1, &tip.hash)
            .context("a provable period")?;
        for (terms, id) in &deals {
            let proof = storage_proof::prove(terms, &seed, id, round as u8, period_now, |p| {
                let (cid, bytes) = shape.shards.get(usize::from(p))?.clone();
                Some((cid, bytes, smt::list_prove(&shape.leaves, usize::from(p))))
            })
            .map_err(|m| anyhow::anyhow!("missing {m:?}"))?;
            proposer
                .submit_proof(proof)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let block = proposer.build_block(transfers(&mut tx));
        carried = block.proofs.len();
        let t = Instant::now();
        replica.check(&block).map_err(|e| anyhow::anyhow!("{e}"))?;
        timings.1.push(t.elapsed());
        commit(&mut proposer, &mut replica, &block)?;
    }
    timings.0.sort();
    timings.1.sort();
    // Settling the period: holder 5 of every deal never proved it, so the first block after its window
    // closes records each miss and burns holder 5's stake once for all of them.
    while proposer.tip().height < start + 2 * period {
        let block = proposer.build_block(Vec::new());
        commit(&mut proposer, &mut replica, &block)?;
    }
    let tip = proposer.tip();
    let before = replica.state().clone();
    let mut settle = Vec::new();
    let mut quiet = Vec::new();
    let mut misses = 0;
    for _ in 0..5 {
        let mut s = before.clone();
        let t = Instant::now();
        s.begin_block(tip.height + 1, &tip.hash);
        settle.push(t.elapsed());
        misses = deals
            .iter()
            .filter(|(_, id)| s.proven(id, 5).missed == 1)
            .count();
        let mut s = before.clone();
        let t = Instant::now();
        s.begin_block(tip.height + 2, &tip.hash);
        quiet.push(t.elapsed());
    }
    settle.sort();
    quiet.sort();
    Ok(BlockCheck {
        alone: timings.0[2],
        with_proofs: timings.1[2],
        proofs: carried,
        settle: settle[2],
        quiet: quiet[2],
        deals: deals.len(),
        misses,
    })
}

/// What [`block_check`] measured.
struct BlockCheck {
    /// A replica's check of a block of transfers.
    alone: Duration,
    /// The same with `proofs` proofs in the block.
    with_proofs: Duration,
    proofs: usize,
    /// The start of the first block after a period's window closed: `misses` misses recorded and slashed
    /// over `deals` deals.
    settle: Duration,
    /// The start of any other block.
    quiet: Duration,
    deals: usize,
    misses: usize,
}

fn shape_proof_bytes(shape: &BenchDeal) -> Result<usize> {
    Ok(shape.prove(&[0; 32], 0)?.encode().len())
}
