//! `huds bench economy`: what proofs of storage cost the chain, in one run (`specs/economics.md` §5.6).
//!
//! - **Proof size and verification time**, for deals of 4+2 over 1 MiB shards: a storage node's holder proof
//!   of one period over all its slots on a shard (sixteen samples, whatever the number of its deals), checked
//!   exactly as a validator checks it (`HolderProof::verify`, with the challenge drawn over the node's
//!   share of a network of `--shards` shards), and a slot proof of one sample and of sixteen (what a repair
//!   claim is, and what every slot sent each period before holder proofs), beside the baseline every
//!   transaction costs: one ed25519 signature check. Also the holder's side: building a 16-sample proof
//!   (reading nothing; the shards are in memory, so this is the hashing), beside BLAKE3 over the same bytes.
//! - **Block space**: for a network holding `--shards` shards (default 10,000) in one-segment deals on
//!   `--nodes` storage nodes (default 6, the devnet's), all on one chain shard, the proof bytes one period
//!   brings (one holder proof per node), as a share of what the devnet period's blocks can carry, beside
//!   what one slot proof per slot would take, and the number of storage nodes on a chain shard at which
//!   holder proofs would reach 10%.
//! - **A shard block with and without proofs**: the time a replica takes to check a block of transfers
//!   alone, and the same block carrying one node's holder proof, which pays each of that node's slots of
//!   the network's deals, on the real ledger (`ShardApp` on an in-memory store): the transfers/s a block
//!   carries with the proof in it, as a share of without.

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
use chain::types::storage_proof::{self, HolderProof, HolderSlot, PROOF_SAMPLES, StorageProof};
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

/// `count` one-segment deals shaped like `shape` (the same shards; each its own id, the root differs), as the
/// wallet `owner` opens them.
fn variants(shape: &BenchDeal, count: usize, owner: &Address) -> Vec<(DealTerms, Hash)> {
    (0..count)
        .map(|i| {
            let mut terms = shape.terms.clone();
            terms.root = [vec![1, 0x55, 0x1e], (i as u32).to_be_bytes().to_vec()].concat();
            let id = terms.id(owner);
            (terms, id)
        })
        .collect()
}

/// Slot `holder` of each of `deals`, in the chain's order (by deal id).
fn slots_of(deals: &[(DealTerms, Hash)], holder: u8) -> Vec<HolderSlot<'_>> {
    let mut slots: Vec<HolderSlot<'_>> = deals
        .iter()
        .map(|(t, id)| HolderSlot::new(*id, holder, t))
        .collect();
    slots.sort_by_key(|s| s.deal);
    slots
}

/// Holder `holder`'s proof of the period ending at `end` over its slot in each of `deals` (variants of
/// `shape`).
fn holder_proof(
    shape: &BenchDeal,
    deals: &[(DealTerms, Hash)],
    holder: u8,
    seed: &Hash,
    end: u64,
) -> Result<HolderProof> {
    let slots = slots_of(deals, holder);
    let key = shape.terms.holders[usize::from(holder)].key;
    storage_proof::prove_holder(&slots, seed, &key, end, |_, _, p| {
        let (cid, bytes) = shape.shards.get(usize::from(p))?.clone();
        Some((cid, bytes, smt::list_prove(&shape.leaves, usize::from(p))))
    })
    .map_err(|missing| anyhow::anyhow!("shards {missing:?} missing"))
}

pub fn economy(network_shards: usize, nodes: usize, json_out: bool) -> Result<()> {
    let owner = Address::of(&SecretKey::dev("bench owner").public());
    let wallet = Address::of(&SecretKey::dev("devnet/wallet").public());
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
    // A holder proof of a node holding one shard of each of the network's one-segment 4+2 deals.
    let network_deals = network_shards.div_ceil(6);
    let deals = variants(&small, network_deals, &wallet);
    let holder = holder_proof(&small, &deals, 0, &seed, 16)?;
    let holder_bytes = holder.encode().len();
    let slots = slots_of(&deals, 0);
    let verify_holder = median(101, || {
        holder
            .verify(&slots, &seed)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
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
    let share = |bytes: f64| bytes / (period_blocks as f64 * block_bytes);
    // One holder proof per storage node a period (of fewer samples when a node holds fewer than 16 shards).
    let samples_each = network_shards
        .div_ceil(nodes.max(1))
        .clamp(1, PROOF_SAMPLES);
    let holder_each = 64 + (holder_bytes - 64) * samples_each / holder.samples.len().max(1);
    let holder_layout = nodes as f64 * holder_each as f64;
    // Before holder proofs: one slot proof per slot a period.
    let slot_layout = network_shards as f64 * one_bytes as f64;
    let nodes_for_10 = (0.10 * period_blocks as f64 * block_bytes / holder_bytes as f64) as u64;

    // A replica checking a block of transfers, alone and with one node's holder proof paying its slots.
    let checked = block_check(&small, network_deals)?;
    let (alone, with_proofs, proofs_in_block) =
        (checked.alone, checked.with_proofs, checked.proofs);
    let settle_network = checked
        .settle
        .mul_f64(network_deals as f64 / checked.deals.max(1) as f64);
    // Over a period, the network's slots are each paid once: its blocks carry `network_shards` slot payments
    // in all, the measured block `checked.deals` of them.
    let extra = with_proofs.saturating_sub(alone).as_secs_f64();
    let period_extra = extra * network_shards as f64 / checked.deals.max(1) as f64;
    let period_share = alone.as_secs_f64() * period_blocks as f64
        / (alone.as_secs_f64() * period_blocks as f64 + period_extra);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    if json_out {
        let v = json!({
            "proof": {
                "holder_bytes": holder_bytes,
                "holder_samples": holder.samples.len(),
                "holder_slots": network_deals,
                "verify_holder_us": micros(verify_holder),
                "verify_holder_per_signature": ratio(verify_holder, signature_check),
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
                "nodes": nodes,
                "period_blocks": period_blocks,
                "holder_proofs_share": share(holder_layout),
                "slot_proofs_share": share(slot_layout),
                "nodes_per_chain_shard_for_10_percent": nodes_for_10,
            },
            "block_check": {
                "transfers": TRANSFERS_PER_BLOCK,
                "proofs": proofs_in_block,
                "slots_paid": checked.deals,
                "alone_ms": alone.as_secs_f64() * 1e3,
                "with_proofs_ms": with_proofs.as_secs_f64() * 1e3,
                "transfers_per_s_share": ratio(alone, with_proofs),
                "transfers_per_s_share_over_a_period": period_share,
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
        "holder proof           {holder_bytes:>6} B   verify {:>8.1} µs = {:.2} × an ed25519 signature check ({:.1} µs): {} samples over a node's {network_deals} slots, one proof a period",
        micros(verify_holder),
        ratio(verify_holder, signature_check),
        micros(signature_check),
        holder.samples.len()
    );
    println!(
        "slot proof of 1 sample {one_bytes:>6} B   verify {:>8.1} µs = {:.2} × a signature check (a repair claim; every slot's proof before holder proofs)",
        micros(verify_one),
        ratio(verify_one, signature_check),
    );
    println!(
        "slot proof, 16 samples {sixteen_bytes:>6} B   verify {:>8.1} µs = {:.2} × a signature check (any proof at most {} B)",
        micros(verify_sixteen),
        ratio(verify_sixteen, signature_check),
        storage_proof::PROOF_BYTES_MAX
    );
    println!(
        "building 16 samples    {:>8.1} ms = {:.2} × BLAKE3 over the 16 MiB it reads ({:.1} ms): CPU-bound, no disk",
        prove_sixteen.as_secs_f64() * 1e3,
        ratio(prove_sixteen, hash_sixteen),
        hash_sixteen.as_secs_f64() * 1e3
    );
    println!(
        "block space, {network_shards} shards on {nodes} storage nodes: holder proofs {:.2}% of a {period_blocks}-block period's blocks, against {:.1}% for a slot proof per slot; holder proofs reach 10% at {nodes_for_10} storage nodes on one chain shard",
        100.0 * share(holder_layout),
        100.0 * share(slot_layout),
    );
    println!(
        "a replica checks a block of {TRANSFERS_PER_BLOCK} transfers in {:.1} ms alone, {:.1} ms with {proofs_in_block} holder proof paying {} slots: transfers/s at {:.0}% of without in that block, {:.0}% over a period that pays all {network_shards} slots",
        alone.as_secs_f64() * 1e3,
        with_proofs.as_secs_f64() * 1e3,
        checked.deals,
        100.0 * ratio(alone, with_proofs),
        100.0 * period_share
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

/// A replica's check of a block of transfers, alone and with one storage node's holder proof over its slots of
/// `deals` deals shaped like `shape`: the medians of a few checks each, and how many proofs the block
/// carried.
fn block_check(shape: &BenchDeal, deals: usize) -> Result<BlockCheck> {
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
    // differs).
    let deals = variants(shape, deals, &Address::of(&wallet.public()));
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
        // With proofs: holder `round` answers this period for its slot in every deal.
        let tip = proposer.tip();
        let (end, seed) = proposer.state().seed_for(tip.height + 1, &tip.hash);
        let proof = holder_proof(shape, &deals, round as u8, &seed, end)?;
        proposer
            .submit_proof(proof.into())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
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
