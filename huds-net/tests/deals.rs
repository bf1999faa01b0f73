//! Storage deals over real sockets: seven nodes on 127.0.0.1, a 9 MiB file added through one of them, deal
//! terms built from where its shards went, and every holder's signature gathered over `/huds/shard/1`. The
//! signed deal passes the chain's own checks for an `OpenDeal` transaction. A holder refuses to sign for a
//! shard it does not hold, for a commitment that is not its shard's, for a price below its own, for positions
//! the placement does not give it, and for garbage; a node without a signer refuses every deal. Each holder
//! keeps the deal it signed and proves it from its store; one that deletes a drawn shard cannot. The shards a
//! holder signed for outlive every collection until the deal settles, and then go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::crypto::SecretKey;
use chain::tx::{Transaction, TxError, TxKind};
use chain::{Address, Amount};
use huds::BlockStore;
use huds::add::{AddOptions, Source};
use huds::store::RocksStore;
use huds_net::client::NetShardSink;
use huds_net::deals::{self, DealSigner, SignRequest};
use huds_net::node::{NetError, Node, NodeOptions};
use huds_net::prover;
use libp2p::identity;

const NODES: usize = 7;
const CHAIN: u32 = 0x10_5D_E7;
const PRICE: Amount = Amount(2_000_000);

async fn start(
    dir: &std::path::Path,
    i: usize,
    bootstrap: Vec<libp2p::Multiaddr>,
    signs: bool,
) -> Node {
    let keypair = identity::Keypair::generate_ed25519();
    let store = Arc::new(RocksStore::open(&dir.join(format!("node-{i}"))).expect("store opens"));
    let opts = NodeOptions {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap,
        deal_signer: signs.then(|| {
            DealSigner::new(keypair.clone(), PRICE, CHAIN)
                .keeping_deals_in(dir.join(format!("held-{i}")))
        }),
        ..NodeOptions::default()
    };
    Node::start(keypair, store, opts)
        .await
        .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_sign_deals_for_the_shards_they_hold_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(dir.path(), 0, Vec::new(), true).await;
    let boot = first.handle.listen_addrs().await;
    let mut nodes = vec![first];
    for i in 1..NODES {
        nodes.push(start(dir.path(), i, boot.clone(), true).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[0].handle.storage_peers().await.len() < NODES - 1 {
        assert!(Instant::now() < deadline, "the nodes never meshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A 9 MiB file in 3 segments of 4+2, through node 0.
    let mut data = vec![0u8; 9 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let path = dir.path().join("input.bin");
    std::fs::write(&path, &data).expect("write input");
    let (node, rt) = (nodes[0].handle.clone(), tokio::runtime::Handle::current());
    let (added, placement) = tokio::task::spawn_blocking(move || {
        let sink = NetShardSink::new(node.clone(), rt);
        let opts = AddOptions::default();
        huds::add::add_with(node.store(), &sink, Source::Path(&path), &opts, &mut |_| {})
            .map(|a| (a, sink.placement()))
    })
    .await
    .expect("joins")
    .expect("the add succeeds");
    assert_eq!(placement.shards.len(), added.segments * 6);

    // Node 0 pays; the deal names the manifest CID, never the plaintext root.
    let owner_key = SecretKey::dev("deals/owner");
    let owner = Address::of(&owner_key.public());
    let proposal = deals::propose(
        &added.manifest_cid,
        added.size,
        4,
        2,
        10,
        PRICE,
        &placement.shards,
    );
    let proposal = proposal.expect("terms build from the placement");
    let terms = proposal.terms.clone();
    let request = |claims: Vec<deals::ShardClaim>| SignRequest {
        chain_id: CHAIN,
        owner,
        terms: terms.clone(),
        claims,
    };
    assert!(
        terms.holders.len() >= 6,
        "no two shards of a segment on one node"
    );
    let mut signatures = Vec::new();
    for (peer, claims) in &proposal.requests {
        let got = nodes[0]
            .handle
            .sign_deal(*peer, &request(claims.clone()))
            .await;
        signatures.push(got.expect("a holder signs for the shards it holds"));
    }
    let open = |signatures| {
        Transaction {
            chain_id: CHAIN,
            sender: owner_key.public(),
            nonce: 0,
            fee: Amount(1_000),
            expiry_height: 10,
            kind: TxKind::OpenDeal {
                terms: terms.clone(),
                signatures,
            },
        }
        .sign(&owner_key)
    };
    assert_eq!(
        open(signatures.clone()).check_stateless(CHAIN),
        Ok(()),
        "the gathered signatures open the deal"
    );
    // Signatures gathered for another owner do not open this owner's deal.
    let mut swapped = signatures.clone();
    swapped.swap(0, 1);
    assert!(matches!(
        open(swapped).check_stateless(CHAIN),
        Err(TxError::DealSignature(0))
    ));

    // Refusals, each from a holder that signs honest requests.
    // A holder other than node 0 (whose own shards it signs for without a request on the wire).
    let me = nodes[0].handle.peer_id();
    let (peer, claims) = proposal
        .requests
        .iter()
        .find(|(p, _)| *p != me)
        .cloned()
        .expect("another node holds shards");
    let refused = |got: Result<chain::crypto::Signature, NetError>, why: &str| match got {
        Err(NetError::Refused { reason, .. }) => {
            assert!(
                reason.contains(why),
                "refused for {reason:?}, expected {why:?}"
            )
        }
        other => panic!("expected a refusal ({why}), got {other:?}"),
    };
    // A claim for a shard it does not hold (another holder's), and a commitment that is not the shard's.
    let other = proposal
        .requests
        .iter()
        .find(|(p, _)| *p != peer)
        .expect("another holder");
    let mut foreign = claims.clone();
    foreign[0].cid = other.1[0].cid;
    refused(
        nodes[0].handle.sign_deal(peer, &request(foreign)).await,
        "not at position",
    );
    let mut lying = claims.clone();
    lying[0].commitment.root[0] ^= 1;
    refused(
        nodes[0].handle.sign_deal(peer, &request(lying)).await,
        "not at position",
    );
    // Terms built over a wrong commitment for one of its shards: the path holds, the bytes do not.
    let mut wrong = placement.shards.clone();
    let mine = wrong
        .iter_mut()
        .find(|s| s.holder == peer)
        .expect("it holds a shard");
    mine.commitment.root[0] ^= 1;
    let bad = deals::propose(&added.manifest_cid, added.size, 4, 2, 10, PRICE, &wrong)
        .expect("terms build");
    let (_, bad_claims) = bad
        .requests
        .iter()
        .find(|(p, _)| *p == peer)
        .expect("the same holder");
    refused(
        nodes[0]
            .handle
            .sign_deal(
                peer,
                &SignRequest {
                    chain_id: CHAIN,
                    owner,
                    terms: bad.terms.clone(),
                    claims: bad_claims.clone(),
                },
            )
            .await,
        "does not commit to what the request says",
    );
    // Positions the placement does not give it.
    let mut fewer = claims.clone();
    fewer.pop();
    refused(
        nodes[0].handle.sign_deal(peer, &request(fewer)).await,
        "the placement gives this node",
    );
    // A price below its own.
    let mut cheap = request(claims.clone());
    for h in &mut cheap.terms.holders {
        h.price = Amount(PRICE.0 - 1);
    }
    refused(
        nodes[0].handle.sign_deal(peer, &cheap).await,
        "this node asks",
    );
    // Another chain's deal, and one shard claimed at two positions (work without end for one request).
    let mut elsewhere = request(claims.clone());
    elsewhere.chain_id = CHAIN + 1;
    refused(
        nodes[0].handle.sign_deal(peer, &elsewhere).await,
        "takes deals on chain",
    );
    let mut twice = claims.clone();
    if twice.len() > 1 {
        twice[1].cid = twice[0].cid;
        refused(
            nodes[0].handle.sign_deal(peer, &request(twice)).await,
            "claimed twice",
        );
    }
    // Garbage.
    let got = nodes[0]
        .handle
        .request(peer, huds_net::wire::Request::Sign(vec![1, 2, 3]))
        .await
        .expect("an answer");
    assert!(
        matches!(&got, huds_net::wire::Response::Refused(r) if r.contains("malformed")),
        "{got:?}"
    );

    // A node without a signer takes no deal.
    let plain = start(dir.path(), NODES, boot.clone(), false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes[0]
        .handle
        .storage_peers()
        .await
        .contains(&plain.handle.peer_id())
    {
        assert!(Instant::now() < deadline, "the new node never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = nodes[0]
        .handle
        .sign_deal(plain.handle.peer_id(), &request(claims.clone()))
        .await;
    refused(got, "does not take storage deals");
    plain.shutdown().await;

    // Every holder kept the deal it signed, and proves it from its store: the proof passes the chain's own
    // check. A holder that deletes a drawn shard cannot prove the period, and says which shard is gone.
    let seed = [3u8; 32];
    let id = terms.id(&owner);
    for (i, node) in nodes.iter().enumerate() {
        let me = deals::holder_key(&node.handle.peer_id()).expect("ed25519");
        let (held, skipped) =
            prover::held_deals(&dir.path().join(format!("held-{i}")), &me).expect("reads");
        assert!(skipped.is_empty(), "{skipped:?}");
        let Some(deal) = held.first() else {
            assert!(
                !terms.holders.iter().any(|h| h.key == me),
                "a holder kept no record"
            );
            continue;
        };
        assert_eq!((held.len(), deal.id), (1, id));
        let proof = prover::prove(node.handle.store(), deal, &seed, 0, None).expect("proves");
        assert_eq!(proof.verify(&terms, &seed), Ok(()));
        // Its holder proof (over its one slot here) passes the chain's check too.
        let slots = [chain::types::storage_proof::HolderSlot::new(
            id,
            deal.holder,
            &terms,
        )];
        let drawn = chain::types::storage_proof::holder_challenge(&slots, &seed, &me, 32);
        let proof =
            prover::prove_holder(node.handle.store(), &held, &me, 32, drawn).expect("proves");
        assert_eq!(proof.verify(&slots, &seed), Ok(()));
    }
    let holder = nodes
        .iter()
        .enumerate()
        .find(|(_, n)| n.handle.peer_id() != me)
        .map(|(i, _)| i)
        .expect("a holder other than node 0");
    let me = deals::holder_key(&nodes[holder].handle.peer_id()).expect("ed25519");
    let (held, _) =
        prover::held_deals(&dir.path().join(format!("held-{holder}")), &me).expect("reads");
    let deal = held.first().expect("it holds the deal");
    let drawn = chain::types::storage_proof::challenge(&terms, &seed, &id, deal.holder, 0)[0].0;
    let gone = deal
        .request
        .claims
        .iter()
        .find(|c| c.position == u32::from(drawn))
        .expect("a claim for each drawn shard")
        .cid;
    huds::BlockStore::delete_shard(nodes[holder].handle.store().as_ref(), &gone).expect("deletes");
    let err = prover::prove(nodes[holder].handle.store(), deal, &seed, 0, None)
        .expect_err("a deleted shard cannot be proven");
    assert!(err.contains(&gone.to_string()), "{err}");
    // Its holder proof draws every shard of its slot (fewer than 16), so it cannot be built either.
    let slots = [chain::types::storage_proof::HolderSlot::new(
        id,
        deal.holder,
        &terms,
    )];
    let drawn = chain::types::storage_proof::holder_challenge(&slots, &seed, &me, 32);
    let err = prover::prove_holder(nodes[holder].handle.store(), &held, &me, 32, drawn)
        .expect_err("a deleted shard cannot be proven");
    assert!(err.contains(&gone.to_string()), "{err}");

    // The shards it signed for are the deal's: a collection keeps every one, until the deal is settled; then
    // they all go (but the one already deleted) and the record with them. Settling again deletes nothing.
    let store = nodes[holder].handle.store().clone();
    let kept: Vec<cid::Cid> = deal
        .request
        .claims
        .iter()
        .map(|c| c.cid)
        .filter(|c| *c != gone)
        .collect();
    store.collect_garbage().expect("collects");
    for c in &kept {
        assert!(
            store.shard(c).expect("reads").is_some(),
            "{c} kept for the deal"
        );
    }
    let (before, _) = store.shard_stats().expect("stats");
    let held_dir = dir.path().join(format!("held-{holder}"));
    assert_eq!(prover::settle(&store, &held_dir, deal), Ok(kept.len()));
    for c in &kept {
        assert_eq!(store.shard(c).expect("reads"), None, "{c} released");
    }
    let (after, _) = store.shard_stats().expect("stats");
    assert_eq!(after, before - kept.len() as u64);
    let (held, _) = prover::held_deals(&held_dir, &me).expect("reads");
    assert!(held.is_empty(), "the settled deal is forgotten");
    assert_eq!(prover::settle(&store, &held_dir, deal), Ok(0));
    for n in nodes {
        n.shutdown().await;
    }
}
