//! Epoch changes on a running chain: the beacon chain draws new committees from the shards' certified
//! heads, shards hand over to them at their epoch boundaries, validators seated for a coming epoch catch up
//! with their shard as followers first, and the chain keeps finalising transfers throughout. A candidate
//! validator registers on its shard and its stake reaches the beacon's registry through a cross-link.

use chain::ShardId;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chain::block::BEACON_SHARD;
use chain::crypto::SecretKey;
use chain::{Address, Amount, Transaction, TxKind};
use chain_node::devnet::VALIDATOR_STAKE_IOST;
use chain_node::validator::ProofOf;
use chain_node::{ChainDevnet, DevnetOptions};

const EPOCH: u64 = 16;

async fn wait_until(
    net: &ChainDevnet,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            // Where every validator is: what a stalled run is diagnosed from.
            for (i, h) in net.handles().iter().enumerate() {
                let (s, b) = (h.status(), h.beacon());
                eprintln!(
                    "validator {i} ({}): shard {} height {} round {} epoch {} member {} dropped {} topic peers {}; beacon height {} epoch {} member {}",
                    h.peer_id(),
                    s.lane.shard,
                    s.lane.height,
                    s.lane.round,
                    s.lane.epoch,
                    s.lane.member,
                    s.dropped_messages,
                    s.topic_peers,
                    b.height,
                    b.state.epoch(),
                    b.member
                );
                eprintln!("  {}", h.describe().await.unwrap_or_else(|e| e.to_string()));
            }
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committees_rotate_every_epoch_and_shards_keep_finalising() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = SecretKey::dev("epoch test wallet");
    let wallet_address = Address::of(&wallet.public());
    let mut options = DevnetOptions::new(1, vec![wallet_address]);
    options.epoch_length = EPOCH;
    options.candidates = 1;
    let net = ChainDevnet::start(dir.path(), options)
        .await
        .expect("starts");
    let count = net.validator_count();
    assert_eq!(
        count,
        2 * 4 + 2 + 1,
        "a shard, the beacon, two spares and a candidate"
    );
    let candidate = net.candidates()[0];

    // Wait for epoch 3 on the beacon, as the most advanced validator holds it.
    let newest = || {
        net.handles()
            .iter()
            .map(|h| h.beacon())
            .max_by_key(|b| b.height)
            .expect("validators run")
    };
    wait_until(
        &net,
        "the beacon reached epoch 3",
        Duration::from_secs(120),
        || newest().state.epoch() >= 3,
    )
    .await;
    let state = newest().state;
    // Every kept epoch's committees: at most a third of each changes from one epoch to the next, and
    // something changed (with spares, a rotation always has someone to seat).
    let mut changed = 0;
    for pair in state.epochs.windows(2) {
        for (before, after) in pair[0].committees.iter().zip(&pair[1].committees) {
            let before: BTreeSet<_> = before.iter().map(|s| s.id).collect();
            let after: BTreeSet<_> = after.iter().map(|s| s.id).collect();
            let kept = before.intersection(&after).count();
            assert!(kept >= 3, "at most one of four seats changes per epoch");
            changed += 4 - kept;
        }
    }
    assert!(changed > 0, "committees rotated");

    // The candidate's registration, a shard transaction, reached the beacon's registry through a link.
    let stake = Amount::from_iost(VALIDATOR_STAKE_IOST).expect("small");
    wait_until(
        &net,
        "the candidate's stake is in the beacon's registry",
        Duration::from_secs(60),
        || {
            newest()
                .state
                .validator(&candidate)
                .is_some_and(|v| v.stake == stake)
        },
    )
    .await;
    assert!(
        newest().state.links[0]
            .as_ref()
            .is_some_and(|l| l.registry.count == 1),
        "shard 0's one registry event is applied once"
    );

    // The shard passes its epoch boundaries and the members of its current committee are the ones deciding.
    let shard_height = || {
        net.handles()
            .iter()
            .filter(|h| h.status().lane.shard == 0)
            .map(|h| h.status().lane.height)
            .max()
            .unwrap_or(0)
    };
    wait_until(
        &net,
        "the shard passed 3 epochs",
        Duration::from_secs(120),
        || shard_height() > 3 * EPOCH,
    )
    .await;
    // The committee of the shard's next height. A shard at the end of its era waits there until the beacon's
    // next draw schedules its next committee (epochs advance on the beacon's own height), so ask until one is.
    let mut committee = None;
    for _ in 0..300 {
        committee = newest().state.committee_at(ShardId(0), shard_height() + 1);
        if committee.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let committee =
        committee.expect("the committee of the shard's next height is scheduled within 60 s");
    wait_until(
        &net,
        "the shard's current committee members run as members",
        Duration::from_secs(60),
        || {
            committee.members.iter().all(|m| {
                net.handles().iter().any(|h| {
                    let s = h.status();
                    s.lane.shard == 0
                        && s.lane.member
                        && h.beacon().state.seat_in(s.lane.epoch, &m.id).is_some()
                })
            })
        },
    )
    .await;

    // A transfer made now is finalised by the rotated committee.
    let entry = net
        .handles()
        .into_iter()
        .find(|h| h.status().lane.shard == 0 && h.status().lane.member)
        .expect("a member of shard 0");
    let mut commits = entry.commits();
    let tx = Transaction {
        chain_id: net.genesis.params.chain_id,
        sender: wallet.public(),
        nonce: 0,
        fee: net.genesis.params.fee_min,
        expiry_height: entry.status().lane.height + 1_000,
        kind: TxKind::Transfer {
            to: Address::of(&SecretKey::dev("epoch test recipient").public()),
            amount: Amount::from_iost(5).expect("small"),
        },
    }
    .sign(&wallet);
    let id = tx.id();
    let results = entry.submit(vec![tx]).await.expect("submitted");
    assert_eq!(results, vec![Ok(())]);
    let finalised = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let notice = commits.recv().await.expect("commits");
            if notice.tx_ids.contains(&id) {
                return notice.height;
            }
        }
    })
    .await
    .expect("the transfer is final");
    assert!(finalised > 3 * EPOCH);

    // Every validator that keeps shard 0 agrees on it; the beacon's members and followers agree on the
    // beacon state at equal heights.
    wait_until(
        &net,
        "shard 0's keepers reached the transfer",
        Duration::from_secs(60),
        || {
            net.handles()
                .iter()
                .filter(|h| h.status().lane.shard == 0)
                .all(|h| h.status().lane.height >= finalised)
        },
    )
    .await;
    // A keeper that reached the transfer's height (a validator whose shard 0 lane opened since the wait may
    // still be catching up).
    for h in net
        .handles()
        .iter()
        .filter(|h| h.status().lane.shard == 0 && h.status().lane.height >= finalised)
    {
        let account = h
            .account(wallet_address)
            .await
            .expect("answers")
            .expect("the wallet exists");
        assert_eq!(account.nonce, 1, "every keeper applied the transfer");
    }
    let views: Vec<_> = net.handles().iter().map(|h| h.beacon()).collect();
    for a in &views {
        for b in &views {
            if a.height == b.height {
                assert_eq!(a.tip, b.tip, "one beacon block per height");
                assert_eq!(a.state.root(), b.state.root());
            }
        }
    }

    // A light client that trusts only genesis follows the epochs through the beacon's certified blocks and
    // checks a proof of the wallet's account, certified by the rotated committee.
    // The proof first, from a validator keeping shard 0 now (seats keep rotating), then that validator's
    // epoch proofs, which then reach at least the proof's epoch.
    let mut proven = None;
    for h in net.handles().iter().filter(|h| h.status().lane.shard == 0) {
        if let Ok(Some(p)) = h.prove(ProofOf::Account(wallet_address)).await {
            proven = Some((h.clone(), p));
            break;
        }
    }
    let (keeper, proof) = proven.expect("a validator keeping shard 0 proves the account");
    let mut client = chain::spv::LightClient::from_beacon(&net.beacon.state);
    let proofs = keeper.epoch_proofs(0).await.expect("answers");
    assert!(proofs.len() >= 3, "{} epoch proofs", proofs.len());
    for p in &proofs {
        client
            .advance(p)
            .expect("each epoch is proven by the one before");
    }
    let genesis_only = chain::spv::LightClient::from_beacon(&net.beacon.state);
    assert!(matches!(
        genesis_only.verify(&proof),
        Err(chain::spv::SpvError::UnknownEpoch { .. })
    ));
    client
        .verify(&proof)
        .expect("the advanced client checks the rotated committee's certificate");

    // Seats change hands at epoch boundaries, each validator as it applies the beacon block: wait out a
    // hand-over in progress.
    wait_until(
        &net,
        "all but the beacon's members follow it",
        Duration::from_secs(10),
        || net.handles().iter().filter(|h| !h.beacon().member).count() >= count - 4,
    )
    .await;
    assert!(
        net.handles()
            .iter()
            .any(|h| h.status().lane.shard == BEACON_SHARD)
    );
    net.shutdown().await;
}
