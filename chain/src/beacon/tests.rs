//! The beacon chain's tests: the registry through links, epochs and their archive, followers across an epoch
//! change, evidence, and the codec.

use super::*;
use crate::address::Address;
use crate::amount::Amount;
use crate::bft::{Bls, Committee, QcError, QuorumCertificate, Vote, VoteKind};
use crate::block::{BEACON_SHARD, Block, CrossLink};
use crate::crypto::{Hash, bls};
use crate::genesis::GenesisConfig;
use crate::ids::{MemberIndex, ShardId};
use crate::ledger::ShardApp;
use crate::ledger::{App, BlockError};
use crate::pol::Signals;
use crate::registry::{Cursor, RegistryEvent};
use crate::store::MemStore;
use proptest::prelude::*;

const SIZE: usize = 4;

/// Two shards and the beacon, 4 seats each, and `spare` validators without a seat.
fn genesis(spare: usize) -> Genesis {
    GenesisConfig::devnet(
        2,
        3 * SIZE + spare,
        Amount::from_iost(1_000_000).expect("small"),
        Amount::from_iost(1_000).expect("small"),
    )
    .build()
    .expect("valid genesis")
}

fn secret_of(id: &Address, genesis: &Genesis) -> bls::SecretKey {
    (0..genesis.accounts.len())
        .map(|i| bls::SecretKey::dev(&format!("validator/{i}")))
        .find(|k| {
            genesis
                .accounts
                .iter()
                .any(|(a, acc)| a == id && acc.validator_key == Some(k.public()))
        })
        .expect("a devnet validator")
}

/// A certified block of `shard` at the next height of `app`, signed by the committee members in `signers`.
fn certified(
    genesis: &Genesis,
    beacon: &BeaconState,
    app: &mut ShardApp<MemStore>,
    shard: ShardId,
    signers: &[u16],
    round: u32,
) -> CrossLink {
    let committee = beacon.committee(shard).expect("a shard");
    let (block, qc) = certified_by(genesis, &committee, app, shard, signers, round);
    CrossLink {
        header: block.header,
        certificate: qc.encode(),
        registry: None,
    }
}

#[test]
fn registrations_and_unstakes_on_a_shard_reach_the_registry_through_links() {
    use crate::crypto::SecretKey;
    use crate::registry::{BatchError, RegistryBatch};
    use crate::state::State;
    use crate::tx::{Role, Transaction, TxKind};
    let g = genesis(2);
    let mut beacon = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    let wallet = SecretKey::dev("devnet/wallet");
    let id = Address::of(&wallet.public());
    let shard = crate::shard_of(&id, 2);
    let bls_key = bls::SecretKey::dev("a new validator");
    let iost = |n: u64| Amount::from_iost(n).expect("small");
    let tx = |nonce: u64, kind: TxKind| {
        Transaction {
            chain_id: g.params.chain_id,
            sender: wallet.public(),
            nonce,
            fee: g.params.fee_min,
            expiry_height: 100,
            kind,
        }
        .sign(&wallet)
    };
    let mut app = ShardApp::open(&g, shard, MemStore::new()).expect("shard");
    app.submit(tx(
        0,
        TxKind::RegisterValidator {
            stake: iost(500),
            bls_public_key: bls_key.public(),
            proof_of_possession: bls_key.proof_of_possession(&id),
        },
    ))
    .expect("admitted");
    app.submit(tx(1, TxKind::RegisterStorageNode { stake: iost(100) }))
        .expect("admitted");
    let mut link = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
    assert_eq!(app.state().outbox().count, 2);
    let batch = |app: &ShardApp<MemStore>, from: u64| {
        let to = app.state().outbox().count;
        RegistryBatch {
            from,
            events: State::registry_events(app.store_ref(), from, to).expect("stored"),
            checkpoint: app.state().prove_checkpoint(to),
        }
    };
    // A forged stake does not chain to the checkpoint in the certified state root.
    let mut forged = batch(&app, 0);
    if let RegistryEvent::Validator { stake, .. } = &mut forged.events[0] {
        *stake = iost(900);
    }
    link.registry = Some(forged);
    assert!(matches!(
        beacon.check_link(&link, false),
        Err(LinkError::Registry {
            error: BatchError::ChainMismatch,
            ..
        })
    ));
    link.registry = Some(batch(&app, 0));
    let checked = beacon.check_link(&link, false).expect("a valid link");
    assert_eq!(checked.events.len(), 2);
    beacon.record_link(&checked, &link.header);
    let v = beacon.validator(&id).expect("registered");
    assert_eq!(
        (v.stake, v.key, v.reputation_ppm),
        (iost(500), bls_key.public(), 0)
    );
    assert_eq!(beacon.storage_node(&id).map(|n| n.stake), Some(iost(100)));

    // An unstake, linked by a member whose view of the beacon is stale (from 0): only it applies.
    app.submit(tx(
        2,
        TxKind::Unstake {
            role: Role::Validator,
            amount: iost(200),
        },
    ))
    .expect("admitted");
    let mut link = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
    link.registry = Some(batch(&app, 0));
    let checked = beacon.check_link(&link, false).expect("a valid link");
    assert_eq!(checked.events.len(), 1);
    beacon.record_link(&checked, &link.header);
    assert_eq!(beacon.validator(&id).map(|v| v.stake), Some(iost(300)));
    assert_eq!(
        beacon.links[usize::from(shard)]
            .as_ref()
            .map(|l| l.registry),
        Some(app.state().outbox())
    );
    // A batch starting past what the beacon applied is refused, one with nothing new is accepted.
    let mut gap = batch(&app, 3);
    gap.from = 4;
    gap.events.clear();
    let mut next = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
    next.registry = Some(gap);
    assert!(matches!(
        beacon.check_link(&next, false),
        Err(LinkError::Registry {
            error: BatchError::Gap {
                from: 4,
                applied: 3
            },
            ..
        })
    ));
    next.registry = Some(batch(&app, 3));
    assert!(beacon.check_link(&next, false).is_ok());
    // The registry survives the shard's restart, and the newcomer is a candidate of the next draw.
    let outbox = app.state().outbox();
    let reopened = ShardApp::open(&g, shard, app.into_store()).expect("reopens");
    assert_eq!(reopened.state().outbox(), outbox);
    assert!(beacon.next_epoch(0).validator(&id).is_some());
    let decoded = BeaconState::decode(&beacon.encode()).expect("round trip");
    assert_eq!(decoded, beacon);
}

/// The next block of `app`, committed with a precommit certificate of `committee`'s `signers`.
fn certified_by(
    genesis: &Genesis,
    committee: &Committee<Bls>,
    app: &mut ShardApp<MemStore>,
    shard: ShardId,
    signers: &[u16],
    round: u32,
) -> (Block, QuorumCertificate<Bls>) {
    let block = app.propose();
    let votes: Vec<Vote<Bls>> = signers
        .iter()
        .map(|&i| {
            let key = secret_of(&committee.members[usize::from(i)].id, genesis);
            Vote::<Bls>::sign(
                genesis.params.chain_id,
                shard,
                VoteKind::Precommit,
                block.header.height,
                round,
                Some(block.hash()),
                MemberIndex(i),
                &key,
            )
        })
        .collect();
    let refs: Vec<&Vote<Bls>> = votes.iter().collect();
    let qc = QuorumCertificate::aggregate(committee, &refs, block.hash()).expect("votes aggregate");
    app.commit(&block, qc.encode()).expect("commit");
    (block, qc)
}

#[test]
fn followers_apply_certified_blocks_in_order_across_an_epoch_change() {
    use crate::bft::{Followed, Follower, Message};
    use std::sync::Arc;
    let g = genesis(6);
    let epoch0 = BeaconState::genesis(&g, SIZE, 2).expect("enough validators");
    let epoch1 = epoch0.next_epoch(0);
    let c0 = epoch0.committee(ShardId(0)).expect("shard 0");
    let c1 = epoch1.committee(ShardId(0)).expect("shard 0");
    assert_ne!(
        c0.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        c1.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        "a seat rotated"
    );
    let committee_at = |h: u64| match (h - 1) / 2 {
        0 => Some(c0.clone()),
        1 => Some(c1.clone()),
        _ => None,
    };
    let mut leader = ShardApp::open(&g, ShardId(0), MemStore::new()).expect("shard");
    let blocks: Vec<(Arc<Block>, QuorumCertificate<Bls>)> = (1..=5u64)
        .map(|h| {
            let c = committee_at(h).unwrap_or_else(|| c1.clone());
            let (b, qc) = certified_by(&g, &c, &mut leader, ShardId(0), &[0, 1, 2], 0);
            (Arc::new(b), qc)
        })
        .collect();
    let app = ShardApp::open(&g, ShardId(0), MemStore::new()).expect("shard");
    let mut f = Follower::<Bls, _>::new(g.params.chain_id, ShardId(0), app, 500);
    assert!(matches!(
        f.poll_status(0),
        Some(Message::Status {
            shard: ShardId(0),
            height: 1,
            round: 0
        })
    ));
    assert!(f.poll_status(100).is_none(), "asks again only after 500 ms");
    let take = |i: usize| blocks[i].clone();

    // Ahead: kept. Height 1 certified by the wrong epoch's committee: ignored.
    let (b3, q3) = take(2);
    assert!(matches!(
        f.on_decided(b3, q3, committee_at),
        Ok(Followed::Kept)
    ));
    let (b1, _) = take(0);
    let forged = {
        let (b, _) = take(0);
        // All four of epoch 1's members sign, the rotated-in one included.
        let votes: Vec<Vote<Bls>> = [0u16, 1, 2, 3]
            .iter()
            .map(|&i| {
                let key = secret_of(&c1.members[usize::from(i)].id, &g);
                Vote::<Bls>::sign(
                    g.params.chain_id,
                    ShardId(0),
                    VoteKind::Precommit,
                    1,
                    0,
                    Some(b.hash()),
                    MemberIndex(i),
                    &key,
                )
            })
            .collect();
        let refs: Vec<&Vote<Bls>> = votes.iter().collect();
        QuorumCertificate::aggregate(&c1, &refs, b.hash()).expect("aggregates")
    };
    assert!(matches!(
        f.on_decided(b1.clone(), forged, committee_at),
        Ok(Followed::Ignored)
    ));
    assert_eq!(f.height(), 1);
    let (b2, q2) = take(1);
    assert!(matches!(
        f.on_decided(b2, q2, committee_at),
        Ok(Followed::Kept)
    ));
    // Height 1 with its certificate: 1, 2 and the kept 3 (epoch 1's committee) apply in order.
    let (_, q1) = take(0);
    match f.on_decided(b1, q1, committee_at) {
        Ok(Followed::Committed(done)) => {
            let heights: Vec<u64> = done.iter().map(|(b, _)| b.header.height).collect();
            assert_eq!(heights, vec![1, 2, 3]);
        }
        other => panic!("expected commits, got {other:?}"),
    }
    assert!(
        f.poll_status(101).is_some(),
        "progress: ask for the next ones at once"
    );
    // Height 5 is in epoch 2, whose committee this follower does not know: kept, not applied.
    let (b4, q4) = take(3);
    assert!(matches!(
        f.on_decided(b4, q4, committee_at),
        Ok(Followed::Committed(_))
    ));
    let (b5, q5) = take(4);
    assert!(matches!(
        f.on_decided(b5, q5, committee_at),
        Ok(Followed::Kept)
    ));
    assert_eq!(f.height(), 5);
    assert_eq!(f.app().tip().height, 4);
    assert_eq!(
        f.app().state().clone().root(),
        leader
            .committed(4)
            .map(|(b, _)| b.header.state_root)
            .expect("block 4"),
    );
}

#[test]
fn the_beacon_draws_the_next_epoch_every_epoch_blocks_and_archives_it() {
    let g = genesis(3);
    // Eras of 4 shard heights, an epoch every 2 beacon blocks.
    let mut beacon = BeaconApp::open_with(&g, SIZE, 4, 2, MemStore::new()).expect("beacon");
    let state = beacon.state().clone();
    let mut shards: Vec<ShardApp<MemStore>> = (0..2)
        .map(|s| ShardApp::open(&g, ShardId(s), MemStore::new()).expect("shard"))
        .collect();
    // Shard 0 reaches height 2 (the middle of its first era of 4 heights), shard 1 only height 1.
    let mut links = Vec::new();
    for (s, heights) in [(0u16, 2), (1, 1)] {
        for _ in 0..heights {
            links.push(certified(
                &g,
                &state,
                &mut shards[usize::from(s)],
                ShardId(s),
                &[0, 1, 2],
                0,
            ));
        }
    }
    for link in links {
        beacon.offer(link).expect("valid");
    }
    let block = beacon.propose();
    beacon.commit(&block, vec![]).expect("commit");
    assert_eq!(
        beacon.state().epoch(),
        0,
        "one beacon block of the epoch's two"
    );
    let link = certified(&g, &state, &mut shards[1], ShardId(1), &[1, 2, 3], 0);
    beacon.offer(link).expect("valid");
    let block = beacon.propose();
    let mut other = BeaconApp::open_with(&g, SIZE, 4, 2, MemStore::new()).expect("beacon");
    other
        .check(&beacon.committed(1).expect("block 1").0)
        .expect("valid");
    other
        .commit(&beacon.committed(1).expect("block 1").0, vec![])
        .expect("commit");
    other
        .check(&block)
        .expect("a replica agrees on the epoch change");
    // Certified by epoch 0's beacon committee, as the block that draws epoch 1 is.
    let beacon_committee = state.committee(BEACON_SHARD).expect("the beacon's");
    let votes: Vec<Vote<Bls>> = [0u16, 1, 2]
        .iter()
        .map(|&i| {
            let key = secret_of(&beacon_committee.members[usize::from(i)].id, &g);
            Vote::<Bls>::sign(
                g.params.chain_id,
                BEACON_SHARD,
                VoteKind::Precommit,
                block.header.height,
                0,
                Some(block.hash()),
                MemberIndex(i),
                &key,
            )
        })
        .collect();
    let refs: Vec<&Vote<Bls>> = votes.iter().collect();
    let qc = QuorumCertificate::aggregate(&beacon_committee, &refs, block.hash())
        .expect("votes aggregate");
    beacon.commit(&block, qc.encode()).expect("commit");
    // A light client trusting genesis learns epoch 1 from the proof the beacon keeps.
    let mut client = crate::spv::LightClient::from_beacon(&state);
    let proof = beacon.epoch_proof(1).expect("kept");
    assert_eq!(client.advance(&proof), Ok(1));
    assert!(beacon.epoch_proof(2).is_none());
    let state = beacon.state().clone();
    assert_eq!(state.epoch(), 1);
    assert_eq!(state.epochs.len(), 2);
    assert_ne!(state.randomness(), state.epochs[0].randomness);
    assert_eq!(state.mix, [0; 32], "the mix starts over");
    // Both shards were past the middle of their first era (heights 1..=4): heights 1..=4 stay with epoch 0's
    // committees, 5.. go to epoch 1's.
    let seats = |c: Option<Committee<Bls>>| {
        c.expect("known")
            .members
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seats(beacon.committee_at(ShardId(0), 4)),
        seats(state.committee_in(ShardId(0), 0))
    );
    assert_eq!(
        seats(beacon.committee_at(ShardId(0), 5)),
        seats(state.committee_in(ShardId(0), 1))
    );
    assert!(state.committee_in(ShardId(0), 2).is_none());
    // The archive keeps every epoch after the state lets old ones go, and survives a reopen.
    let reopened = BeaconApp::open(&g, SIZE, 4, beacon.store).expect("resume");
    assert_eq!(reopened.state().epoch(), 1);
    assert_eq!(
        seats(reopened.committee_at(ShardId(1), 1)),
        seats(state.committee_in(ShardId(1), 0))
    );
    assert_eq!(
        seats(reopened.committee_at(ShardId(1), 8)),
        seats(state.committee_in(ShardId(1), 1))
    );
}

#[test]
fn genesis_seats_every_shard_and_the_beacon_disjointly() {
    let g = genesis(0);
    let state = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    let seats = state.newest().ids();
    assert_eq!(seats.len(), 3);
    let mut all: Vec<Address> = seats.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3 * SIZE, "committees are disjoint");
    for (i, seats) in seats.iter().enumerate() {
        for (m, id) in seats.iter().enumerate() {
            let shard = if i == 2 {
                BEACON_SHARD
            } else {
                ShardId(i as u16)
            };
            assert_eq!(
                state.seat_of(id),
                Some(Assignment {
                    shard,
                    member: MemberIndex(m as u16)
                })
            );
        }
    }
    assert_eq!(state.committees().len(), 3);
    let again = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    assert_eq!(again, state, "a pure function of genesis");
    assert_eq!(
        BeaconState::genesis(&genesis(0), SIZE + 1, 0),
        Err(BeaconError::TooFewValidators {
            validators: 12,
            shards: 2,
            committees: 3,
            size: 5
        })
    );
}

#[test]
fn evidence_of_a_double_vote_is_recorded_once_and_halves_the_next_reputation() {
    let g = genesis(0);
    let mut beacon = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
    let mut follower = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
    let state = beacon.state().clone();
    let committee = state.committee(ShardId(1)).expect("shard 1");
    let offender = committee.members[2].id;
    let key = secret_of(&offender, &g);
    let vote = |block: Option<Hash>, round: u32| {
        Vote::sign(
            state.chain_id,
            ShardId(1),
            VoteKind::Prevote,
            5,
            round,
            block,
            MemberIndex(2),
            &key,
        )
    };
    let double = crate::bft::Evidence::DoubleVote(vote(Some([1; 32]), 0), vote(None, 0));
    beacon
        .offer_evidence(double.clone())
        .expect("valid evidence");
    beacon
        .offer_evidence(double.clone())
        .expect("offered twice, kept once");
    assert_eq!(beacon.pending_evidence_len(), 1);

    // Refused with reasons: the same vote twice, a forged second vote, a shard that does not exist.
    let same = crate::bft::Evidence::DoubleVote(vote(None, 0), vote(None, 0));
    assert_eq!(
        beacon.offer_evidence(same),
        Err(EvidenceError::Invalid(ShardId(1)))
    );
    let mut forged = vote(None, 0);
    forged.signature = vote(Some([2; 32]), 0).signature;
    let forged = crate::bft::Evidence::DoubleVote(vote(Some([1; 32]), 0), forged);
    assert_eq!(
        beacon.offer_evidence(forged),
        Err(EvidenceError::Invalid(ShardId(1)))
    );
    let elsewhere = crate::bft::Evidence::DoubleVote(
        Vote::sign(
            state.chain_id,
            ShardId(9),
            VoteKind::Prevote,
            5,
            0,
            None,
            MemberIndex(2),
            &key,
        ),
        Vote::sign(
            state.chain_id,
            ShardId(9),
            VoteKind::Prevote,
            5,
            0,
            Some([1; 32]),
            MemberIndex(2),
            &key,
        ),
    );
    assert_eq!(
        beacon.offer_evidence(elsewhere),
        Err(EvidenceError::UnknownShard(ShardId(9)))
    );

    let block = beacon.propose();
    assert_eq!(block.evidence, vec![double.clone()]);
    let decoded = Block::decode(&block.encode()).expect("beacon blocks round-trip");
    assert_eq!(decoded, block);
    follower
        .check(&decoded)
        .expect("the follower checks the evidence");
    follower.commit(&decoded, vec![1]).expect("commit");
    beacon.commit(&block, vec![1]).expect("commit");
    assert_eq!(beacon.state(), follower.state());
    assert_eq!(beacon.pending_evidence_len(), 0);
    let signals = beacon
        .state()
        .validator(&offender)
        .expect("registered")
        .signals;
    assert_eq!(signals.faults_proven, 1);
    // The same fault is not counted twice, even with other messages as its proof.
    let again = crate::bft::Evidence::DoubleVote(vote(Some([3; 32]), 0), vote(None, 0));
    assert_eq!(
        beacon.offer_evidence(again.clone()),
        Err(EvidenceError::AlreadyRecorded)
    );
    let mut replay = beacon.propose();
    replay.evidence = vec![again];
    replay.header.transactions_root = Block::beacon_root(&replay.links, &replay.evidence);
    assert!(matches!(
        follower.check(&replay),
        Err(BlockError::Evidence {
            index: 0,
            error: EvidenceError::AlreadyRecorded
        })
    ));

    // At the next epoch the fault halves the reputation its signals earn.
    let mut with_fault = beacon.state().clone();
    let mut without = beacon.state().clone();
    for st in [&mut with_fault, &mut without] {
        for v in st.validators.iter_mut() {
            v.signals.certificates = 4;
            v.signals.votes_in_certificates = 4;
        }
    }
    let i = without
        .validators
        .iter()
        .position(|v| v.id == offender)
        .expect("registered");
    without.validators[i].signals.faults_proven = 0;
    let rep = |st: &BeaconState| {
        let next = st.next_epoch(0);
        next.validator(&offender).expect("known").reputation_ppm
    };
    assert_eq!(rep(&with_fault) * 2, rep(&without));
    assert!(rep(&without) > 0);
    // Faults older than the epoch before the newest are forgotten with their epoch.
    let later = beacon.state().next_epoch(0).next_epoch(0);
    assert!(later.faults.is_empty());
    assert!(beacon.state().next_epoch(0).faults.len() == 1);
}

#[test]
fn links_are_checked_recorded_committed_and_resumed() {
    let g = genesis(0);
    let mut shard0 = ShardApp::open(&g, ShardId(0), MemStore::new()).expect("shard");
    let mut beacon = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
    let mut follower = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
    let state = beacon.state().clone();
    let committee = state.committee(ShardId(0)).expect("shard 0");

    // Members 0, 1, 2 sign height 1 in round 0; member 3 is missing.
    let first = certified(&g, &state, &mut shard0, ShardId(0), &[0, 1, 2], 0);
    beacon.offer(first.clone()).expect("a valid link");
    // Height 2 is certified in round 1 by members 1, 2, 3.
    let second = certified(&g, &state, &mut shard0, ShardId(0), &[1, 2, 3], 1);
    beacon.offer(second.clone()).expect("a valid link");
    assert_eq!(beacon.pending_len(), 2);

    let block = beacon.propose();
    assert_eq!(block.links, vec![first.clone(), second.clone()]);
    let decoded = Block::decode(&block.encode()).expect("beacon blocks round-trip");
    assert_eq!(decoded, block);
    follower.check(&decoded).expect("the follower agrees");
    follower.commit(&decoded, vec![1, 2, 3]).expect("commit");
    beacon.commit(&block, vec![1, 2, 3]).expect("commit");
    assert_eq!(beacon.pending_len(), 0);
    assert_eq!(beacon.state(), follower.state());
    assert_eq!(beacon.state().root(), block.header.state_root);

    let head = beacon.state().links[0].clone().expect("shard 0 linked");
    assert_eq!((head.height, head.block), (2, second.header.hash()));
    assert_eq!(beacon.state().links[1], None);
    let signals = |i: usize| {
        beacon
            .state()
            .validator(&committee.members[i].id)
            .expect("registered")
            .signals
    };
    assert_eq!(signals(0).votes_in_certificates, 1);
    assert_eq!(signals(3).votes_in_certificates, 1);
    for i in 0..4 {
        assert_eq!(signals(i).certificates, 2);
    }
    let slots: u64 = (0..4).map(|i| signals(i).proposer_slots).sum();
    let proposed: u64 = (0..4).map(|i| signals(i).blocks_proposed).sum();
    assert_eq!(
        (slots, proposed),
        (3, 2),
        "rounds 0 of height 1, 0 and 1 of height 2"
    );
    assert_ne!(beacon.state().mix, [0; 32]);

    // Old, forged and mismatched links are refused with their reason.
    assert!(matches!(
        beacon.offer(first.clone()),
        Err(LinkError::NotNewer {
            shard: ShardId(0),
            height: 1,
            linked: 2
        })
    ));
    let third = certified(&g, &state, &mut shard0, ShardId(0), &[0, 1, 2], 0);
    let mut wrong_header = third.clone();
    wrong_header.header.state_root = [9; 32];
    assert_eq!(
        beacon.offer(wrong_header),
        Err(LinkError::CertificateMismatch)
    );
    let mut unknown = third.clone();
    unknown.header.shard = ShardId(7);
    assert_eq!(
        beacon.offer(unknown),
        Err(LinkError::UnknownShard(ShardId(7)))
    );
    let weak = certified(&g, &state, &mut shard0, ShardId(0), &[0, 1], 0);
    assert!(matches!(
        beacon.offer(weak),
        Err(LinkError::Quorum {
            shard: ShardId(0),
            error: QcError::NoQuorum { .. }
        })
    ));
    let mut garbage = third.clone();
    garbage.certificate.truncate(10);
    assert!(matches!(
        beacon.offer(garbage),
        Err(LinkError::Certificate(_))
    ));

    // A block with a link nobody verified is checked in full: a bad certificate is refused.
    let mut bad = follower.propose();
    let mut forged = third.clone();
    forged.certificate = QuorumCertificate::<Bls>::decode(&second.certificate)
        .map(|mut qc| {
            qc.height = 3;
            qc.block = third.header.hash();
            qc.encode()
        })
        .expect("decodes");
    bad.links = vec![forged];
    bad.header.transactions_root = Block::links_root(&bad.links);
    assert!(matches!(
        follower.check(&bad),
        Err(BlockError::Link {
            index: 0,
            error: LinkError::Quorum { .. }
        })
    ));

    // Reopened on its store, the beacon resumes at its tip with the same state.
    let tip = beacon.tip();
    let state = beacon.state().clone();
    let store = beacon.store;
    let reopened = BeaconApp::open(&g, SIZE, 0, store).expect("resume");
    assert_eq!(reopened.tip(), tip);
    assert_eq!(reopened.state(), &state);
    assert_eq!(reopened.committed(1).map(|(b, _)| b), Some(block));
}

#[test]
fn the_next_epoch_weighs_reputation_and_rotates_at_most_a_third() {
    let g = genesis(6);
    let mut state = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    // The first member of every committee voted in every certificate, the others in half.
    for seats in state.newest().ids() {
        for (m, id) in seats.iter().enumerate() {
            let i = state
                .validators
                .binary_search_by_key(id, |v| v.id)
                .expect("registered");
            state.validators[i].signals = Signals {
                votes_in_certificates: if m == 0 { 10 } else { 5 },
                certificates: 10,
                blocks_proposed: 1,
                proposer_slots: 2,
                faults_proven: 0,
                storage_faults: 0,
            };
        }
    }
    state.mix = [3; 32];
    let next = state.next_epoch(0);
    assert_eq!(next.epoch(), 1);
    assert_eq!(next.randomness(), pol::epoch_randomness(1, &[3; 32]));
    assert_eq!(next.epochs.len(), 2, "the previous epoch is kept");
    let first = state.newest().ids()[0][0];
    assert_eq!(
        next.validator(&first).expect("registered").reputation_ppm,
        (7 * 1_000_000 + 3 * 500_000) / 10
    );
    assert!(
        next.validators
            .iter()
            .all(|v| v.signals == Signals::default())
    );
    for (before, after) in state.newest().ids().iter().zip(&next.newest().ids()) {
        let kept = before.iter().filter(|id| after.contains(id)).count();
        assert!(
            kept >= SIZE - SIZE / 3,
            "at most a third rotates: kept {kept}"
        );
        assert_eq!(after.len(), SIZE);
    }
    let mut all = next.newest().ids().concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3 * SIZE, "still disjoint");
    assert_eq!(state.next_epoch(0), next, "a pure function");
    let mut other = state.clone();
    other.mix = [4; 32];
    assert_ne!(other.next_epoch(0).randomness(), next.randomness());
    let mut far = next.clone();
    for _ in 0..EPOCHS_KEPT + 2 {
        far = far.next_epoch(0);
    }
    assert_eq!(far.epochs.len(), EPOCHS_KEPT);
    assert_eq!(far.epoch(), 1 + EPOCHS_KEPT as u64 + 2);
}

proptest! {
    #[test]
    fn states_round_trip_and_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..2000) {
        static GENESIS: std::sync::OnceLock<Genesis> = std::sync::OnceLock::new();
        let g = GENESIS.get_or_init(|| genesis(2));
        let mut state = BeaconState::genesis(g, SIZE, 0).expect("enough validators");
        state.links[1] = Some(LinkedHead {
            height: 9,
            block: [1; 32],
            state_root: [2; 32],
            registry: Cursor { count: 3, head: [4; 32] },
        });
        state.storage_nodes.push(StorageNodeRecord {
            id: Address([5; 32]),
            stake: Amount(6),
            faults: 2,
            faults_before: 1,
        });
        state.validators[0].signals.certificates = 4;
        let encoded = state.encode();
        prop_assert_eq!(BeaconState::decode(&encoded).expect("round trip"), state.clone());
        let _ = BeaconState::decode(&bytes);
        let cut = cut.min(encoded.len() - 1);
        prop_assert!(BeaconState::decode(&encoded[..cut]).is_err());
    }
}

/// One vote per seat: a validator holding almost all the stake still sits on at most one seat of a committee
/// and votes with that seat's weight, so it can neither finalise alone nor halt a committee of 4 alone. (Seats
/// used to vote with their likelihood weight: such a validator was a quorum by itself.)
#[test]
fn a_heavy_staker_gets_one_seat_and_one_vote() {
    let mut g = genesis(4);
    let whale = g
        .accounts
        .iter()
        .position(|(_, a)| a.validator_key.is_some())
        .expect("a validator");
    g.accounts[whale].1.validator_stake = Amount::from_iost(1_000_000_000).expect("fits");
    let whale_id = g.accounts[whale].0;
    let state = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    let shards = state.shard_count();
    let mut seats = 0;
    for shard in ShardId::all(shards).chain([BEACON_SHARD]) {
        let committee = state.committee(shard).expect("a committee");
        let weights: Vec<u128> = committee.members.iter().map(|m| m.weight).collect();
        assert!(
            weights.iter().all(|w| *w == weights[0]),
            "every seat votes alike: {weights:?}"
        );
        for (i, m) in committee.members.iter().enumerate() {
            if m.id == whale_id {
                seats += 1;
                let alone = committee.weight_of([MemberIndex::at(i).expect("small")]);
                assert!(
                    !committee.is_quorum(alone),
                    "the heavy staker finalises alone"
                );
                assert!(
                    !committee.is_one_third(alone),
                    "the heavy staker halts alone"
                );
            }
        }
    }
    assert!(seats <= 1, "one seat at most across the epoch, got {seats}");
}

/// Unstakes never draw a committee below the minimum, and nothing panics on it: with one validator short the
/// next epoch's committees shrink evenly (still at least `COMMITTEE_SEATS_MIN` each); with too few for that the
/// epoch does not change. (Before, the draw left a committee with too few seats, or none, and building it
/// panicked in `Committee::new`.)
#[test]
fn unstakes_never_draw_a_committee_below_the_minimum() {
    // Committees of 5 seats over 15 validators: exactly enough.
    let g = genesis(3);
    let state = BeaconState::genesis(&g, 5, 2).expect("exactly enough validators");
    // Every shard linked past the middle of its first era; at beacon height 16 (the default epoch length for
    // eras of 2 heights) the next epoch is due.
    let mut links_halfway = state.clone();
    for l in links_halfway.links.iter_mut() {
        *l = Some(super::links::LinkedHead {
            height: 2,
            block: [0; 32],
            state_root: [0; 32],
            registry: Cursor::default(),
        });
    }
    assert!(links_halfway.next_epoch_due(16));

    let unstake = |s: &mut BeaconState, n: usize| {
        for v in s.validators.iter_mut().take(n) {
            v.stake = Amount::ZERO;
        }
    };
    let mut one_short = links_halfway.clone();
    unstake(&mut one_short, 1);
    assert!(one_short.next_epoch_due(16));
    let next = one_short.next_epoch(0);
    for shard in ShardId::all(next.shard_count()).chain([BEACON_SHARD]) {
        let committee = next.committee(shard).expect("every committee is drawn");
        assert!(
            (epoch::COMMITTEE_SEATS_MIN..5).contains(&committee.members.len()),
            "shard {shard}: {} seats",
            committee.members.len()
        );
        assert!(
            committee
                .members
                .iter()
                .all(|m| next.validator(&m.id).is_some_and(|v| v.weight() > 0)),
            "an unstaked validator kept a seat"
        );
    }

    let mut too_few = links_halfway.clone();
    unstake(&mut too_few, 15 - 3 * epoch::COMMITTEE_SEATS_MIN + 1);
    assert!(!too_few.next_epoch_due(16), "no epoch below the minimum");
    // Called anyway, it keeps every committee drawable.
    let kept = too_few.next_epoch(0);
    for shard in ShardId::all(kept.shard_count()).chain([BEACON_SHARD]) {
        assert!(kept.committee(shard).is_some());
    }
}

/// An Atomix header of the next epoch waits for its committee; one further ahead is refused, since no committee
/// that exists can have certified it. (Before, any future epoch was kept waiting in the inbound pool.)
#[test]
fn headers_past_the_next_epoch_are_refused_not_kept_waiting() {
    use crate::atomix::Certifier;
    use crate::atomix::CertifyError;
    let g = genesis(0);
    let state = BeaconState::genesis(&g, SIZE, 2).expect("enough validators");
    let header = |height| crate::block::BlockHeader {
        chain_id: g.params.chain_id,
        shard: ShardId(0),
        height,
        parent: [0; 32],
        state_root: [0; 32],
        transactions_root: [0; 32],
        receipts_root: [0; 32],
    };
    // Epochs of 2 heights: height 3 is epoch 1 (the next), height 5 epoch 2.
    assert!(matches!(
        state.certify(&header(3), &[]),
        Err(CertifyError::UnknownCommittee { .. })
    ));
    assert!(matches!(
        state.certify(&header(5), &[]),
        Err(CertifyError::Invalid(_))
    ));
}

/// Attacks the verdict cache of a beacon block (issue 14, defect 8): verdicts were remembered by the block
/// hash, which covers the header only, so a peer with no keys could send a block this node had found valid
/// with another body under the same header (links dropped, a transaction no root covers) and have `check`
/// answer from the cache, and `commit` store the forged body beside the real block's state. Now verdicts
/// are remembered by the whole encoding ([`Block::digest`]), the swapped bodies are executed and refused,
/// and a beacon block carrying transactions does not even decode.
#[test]
fn a_body_swapped_under_a_checked_header_is_refused_not_answered_from_the_cache() {
    use crate::tx::{Transaction, TxKind};
    let g = genesis(0);
    let mut shard0 = ShardApp::open(&g, ShardId(0), MemStore::new()).expect("shard");
    let mut beacon = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
    let mut follower = BeaconApp::open(&g, SIZE, 0, MemStore::new()).expect("beacon");
    let state = beacon.state().clone();
    let first = certified(&g, &state, &mut shard0, ShardId(0), &[0, 1, 2], 0);
    let second = certified(&g, &state, &mut shard0, ShardId(0), &[1, 2, 3], 0);
    beacon.offer(first).expect("a valid link");
    beacon.offer(second).expect("a valid link");
    let block = beacon.propose();
    assert_eq!(block.links.len(), 2);
    follower
        .check(&block)
        .expect("the real block is valid, and its verdict is remembered");

    // The same header over one link fewer: another body, the same block hash.
    let mut fewer = block.clone();
    fewer.links.pop();
    assert_eq!(fewer.hash(), block.hash());
    assert_ne!(fewer.digest(), block.digest());
    assert_eq!(follower.check(&fewer), Err(BlockError::TransactionsRoot));
    assert_eq!(beacon.check(&fewer), Err(BlockError::TransactionsRoot));

    // The same header with a transaction no root of a beacon block covers.
    let wallet = crate::crypto::SecretKey::dev("devnet/wallet");
    let tx = Transaction {
        chain_id: g.params.chain_id,
        sender: wallet.public(),
        nonce: 0,
        fee: g.params.fee_min,
        expiry_height: 100,
        kind: TxKind::Transfer {
            to: Address([7; 32]),
            amount: Amount(1),
        },
    }
    .sign(&wallet);
    let mut stuffed = block.clone();
    stuffed.transactions.push(tx);
    assert_eq!(stuffed.hash(), block.hash());
    assert_eq!(
        follower.check(&stuffed),
        Err(BlockError::TooManyTransactions(1))
    );
    assert_eq!(
        Block::decode(&stuffed.encode()),
        Err(crate::codec::DecodeError::Invalid(
            "beacon block carrying transactions"
        ))
    );

    // Committing a swapped body (under the real block's certificate) fails and changes nothing; the real
    // block then commits from the remembered state.
    let tip = follower.tip();
    assert!(follower.commit(&fewer, vec![1]).is_err());
    assert!(follower.commit(&stuffed, vec![1]).is_err());
    assert_eq!(follower.tip(), tip);
    assert_eq!(follower.committed(1), None);
    follower.commit(&block, vec![1]).expect("the real block");
    beacon.commit(&block, vec![1]).expect("the real block");
    assert_eq!(follower.state(), beacon.state());
    assert_eq!(follower.committed(1).map(|(b, _)| b), Some(block));
}

/// Attacks key uniqueness in the registry (issue 14, defect 12): the beacon added any newcomer with any key,
/// so an account could register a key a seated validator already uses (its own key twice, for two seats
/// with one signer, or a key whose proof of possession it holds), and the registry held two records with
/// one key. Now a newcomer whose key another account's record holds is refused (its shard event is applied
/// and skipped, deterministically on every beacon replica), and the account that holds the key keeps it.
#[test]
fn the_registry_refuses_a_key_another_account_already_uses() {
    use crate::crypto::SecretKey;
    use crate::registry::RegistryBatch;
    use crate::state::State;
    use crate::tx::{Transaction, TxKind};
    let g = genesis(2);
    let mut beacon = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    let wallet = SecretKey::dev("devnet/wallet");
    let id = Address::of(&wallet.public());
    let shard = crate::shard_of(&id, 2);
    // The key of a genesis validator, with a proof of possession made for the wallet's account (a proof
    // can only be made by the key's holder: this is one operator trying to use one key twice).
    let taken = bls::SecretKey::dev("validator/0");
    let holder = beacon
        .validators
        .iter()
        .find(|v| v.key == taken.public())
        .map(|v| v.id)
        .expect("a genesis validator holds it");
    assert!(beacon.validator_key_taken(&taken.public()));
    let mut app = ShardApp::open(&g, shard, MemStore::new()).expect("shard");
    app.submit(
        Transaction {
            chain_id: g.params.chain_id,
            sender: wallet.public(),
            nonce: 0,
            fee: g.params.fee_min,
            expiry_height: 100,
            kind: TxKind::RegisterValidator {
                stake: Amount::from_iost(500).expect("small"),
                bls_public_key: taken.public(),
                proof_of_possession: taken.proof_of_possession(&id),
            },
        }
        .sign(&wallet),
    )
    .expect("the shard cannot know other shards' keys, and admits it");
    let mut link = certified(&g, &beacon, &mut app, shard, &[0, 1, 2], 0);
    let to = app.state().outbox().count;
    assert_eq!(to, 1);
    link.registry = Some(RegistryBatch {
        from: 0,
        events: State::registry_events(app.store_ref(), 0, to).expect("stored"),
        checkpoint: app.state().prove_checkpoint(to),
    });
    let checked = beacon.check_link(&link, false).expect("a valid link");
    assert_eq!(checked.events.len(), 1);
    let records = |b: &BeaconState| -> Vec<_> {
        b.validators
            .iter()
            .map(|v| (v.id, v.key, v.stake))
            .collect()
    };
    let before = records(&beacon);
    beacon.record_link(&checked, &link.header);
    assert_eq!(beacon.validator(&id), None, "the second account is refused");
    assert_eq!(records(&beacon), before, "no record is added or changed");
    assert_eq!(
        beacon.validator(&holder).map(|v| v.key),
        Some(taken.public())
    );
    assert_eq!(
        beacon.links[usize::from(shard)]
            .as_ref()
            .map(|l| l.registry.count),
        Some(1),
        "the event is consumed, so the next batch does not offer it again"
    );

    // Two newcomers with one new key: the first applied keeps it, the second is refused.
    let fresh = bls::SecretKey::dev("a fresh key").public();
    for (n, stake) in [(1u8, 7), (2, 9)] {
        beacon.apply_event(&RegistryEvent::Validator {
            id: Address([n; 32]),
            key: fresh,
            stake: Amount(stake),
        });
    }
    assert_eq!(
        beacon.validator(&Address([1; 32])).map(|v| v.key),
        Some(fresh)
    );
    assert_eq!(beacon.validator(&Address([2; 32])), None);
    // The index of keys is rebuilt from the records on decode, and bytes with a key twice do not decode.
    let decoded = BeaconState::decode(&beacon.encode()).expect("round trip");
    assert_eq!(decoded, beacon);
    let mut twice = beacon.clone();
    twice.validators[1].key = twice.validators[0].key;
    assert_eq!(
        BeaconState::decode(&twice.encode()),
        Err(crate::codec::DecodeError::Invalid(
            "beacon validators sharing a key"
        ))
    );
}

/// The epoch rule of one shard (`hand_off`) and the eras it makes (`eras`), case by case: early in an era and
/// moving, keep; past its middle, the next committee takes over where the era ends; waiting at its end, right
/// after the linked block; not moved since the last draw, a committee drawn afresh continues from the linked
/// block, over an era that was scheduled and never reached.
#[test]
fn the_hand_off_rule_case_by_case() {
    let era = |epoch, first, last| Era {
        epoch,
        first,
        last,
        parent: None,
    };
    let h = [7u8; 32];
    let start = |first, parent| Start { first, parent };
    assert_eq!(hand_off(&[era(0, 1, 8)], 2, Some(h), 1, 8), HandOff::Keep);
    assert_eq!(
        hand_off(&[era(0, 1, 8)], 4, Some(h), 1, 8),
        HandOff::Next(start(9, None))
    );
    assert_eq!(
        hand_off(&[era(0, 1, 8)], 8, Some(h), 8, 8),
        HandOff::Next(start(9, Some(h))),
        "waiting at the end of its era is not a stall"
    );
    assert_eq!(
        hand_off(&[era(0, 1, 8)], 3, Some(h), 3, 8),
        HandOff::Redraw(start(4, Some(h)))
    );
    assert_eq!(
        hand_off(&[era(0, 1, 8), era(1, 9, 16)], 7, Some(h), 7, 8),
        HandOff::Redraw(start(8, Some(h)))
    );
    assert_eq!(
        hand_off(&[era(0, 1, 8), era(1, 9, 16)], 7, Some(h), 5, 8),
        HandOff::Keep,
        "moving towards a scheduled era"
    );
    assert_eq!(
        hand_off(&[], 0, None, 0, 8),
        HandOff::Redraw(start(1, None))
    );
    assert_eq!(
        hand_off(&[era(0, 1, u64::MAX)], 3, Some(h), 3, 0),
        HandOff::Keep,
        "epochs off"
    );

    // A redraw at 8 cuts epoch 0's era at the link and replaces epoch 1's, which was scheduled from 9.
    let record = |epoch, starts: Vec<Option<Start>>| EpochRecord {
        epoch,
        randomness: [0; 32],
        committees: Vec::new(),
        starts,
    };
    let records = [
        record(0, vec![Some(start(1, None))]),
        record(1, vec![Some(start(9, None))]),
        record(2, vec![Some(start(8, Some(h)))]),
    ];
    let all = eras(&records, 0, 8);
    assert_eq!(
        all,
        vec![
            era(0, 1, 7),
            Era {
                epoch: 2,
                first: 8,
                last: 15,
                parent: Some(h)
            }
        ]
    );
    assert_eq!(
        era_at(&all, 16),
        None,
        "no committee past the last era's end"
    );
    // A suffix of the records answers the same for every height it covers, and nothing for the others.
    let suffix = eras(&records[1..], 0, 8);
    for height in 1..20 {
        let answer = era_at(&suffix, height);
        assert!(
            answer.is_none() || answer == era_at(&all, height),
            "height {height}"
        );
    }
    assert_eq!(era_at(&suffix, 9), era_at(&all, 9));
}

/// Defect 3 of issue 14: one stuck shard stopped every shard, since an epoch was drawn only once every shard's
/// link passed the middle of the epoch. Now the beacon's own height is the clock (an epoch every
/// `epoch_blocks` beacon blocks, whatever the shards linked), and a shard whose link did not move for a whole
/// epoch gets a committee drawn afresh (the stuck one's members benched) that continues from its linked block:
/// a block the old committee certified above that block, which was valid before the redraw, is refused by the
/// beacon's link check and by Atomix certification after it.
#[test]
fn epochs_follow_the_beacon_height_and_a_stalled_shard_is_redrawn_from_its_link() {
    use crate::atomix::Certifier;
    // 20 validators for 12 seats, so a committee drawn afresh can avoid the stuck one.
    let g = genesis(8);
    let state = BeaconState::genesis(&g, SIZE, 8)
        .expect("enough validators")
        .with_epoch_blocks(4);
    let mut shards: Vec<ShardApp<MemStore>> = (0..2)
        .map(|s| ShardApp::open(&g, ShardId(s), MemStore::new()).expect("shard"))
        .collect();
    assert!(!state.next_epoch_due(3));
    assert!(state.next_epoch_due(4), "no shard linked anything");
    // Links up to `to` of a shard, each certified by the committee the state says for its height.
    let link = |state: &mut BeaconState, app: &mut ShardApp<MemStore>, shard: ShardId, to: u64| {
        while app.tip().height < to {
            let committee = state
                .committee_at(shard, app.tip().height + 1)
                .expect("a committee");
            let (block, qc) = certified_by(&g, &committee, app, shard, &[0, 1, 2], 0);
            let cross = CrossLink {
                header: block.header.clone(),
                certificate: qc.encode(),
                registry: None,
            };
            let checked = state.check_link(&cross, false).expect("a valid link");
            state.record_link(&checked, &block.header);
        }
    };
    let mut e0 = state;
    link(&mut e0, &mut shards[0], ShardId(0), 5);
    link(&mut e0, &mut shards[1], ShardId(1), 2);
    let mut e1 = e0.next_epoch(4);
    assert_eq!((e1.epoch(), e1.drawn_at), (1, 4));
    assert!(!e1.next_epoch_due(7));
    assert!(e1.next_epoch_due(8));
    // Shard 0 was past the middle of its era 1..=8: epoch 1's committee takes over at 9. Shard 1 moved but
    // is early in its era: it keeps epoch 0's committee, whose era ends at 8.
    assert_eq!(e1.newest().starts, vec![Some(start_at(9)), None]);
    assert_eq!(e1.epoch_at(ShardId(0), 8), Some(0));
    assert_eq!(e1.epoch_at(ShardId(0), 9), Some(1));
    assert_eq!(e1.epoch_at(ShardId(1), 8), Some(0));
    assert_eq!(e1.epoch_at(ShardId(1), 9), None);

    // Shard 1's committee certifies height 3, but no head of it reaches the beacon, and then it stops.
    let stuck = e1.committee_at(ShardId(1), 3).expect("epoch 0's");
    let (orphan, orphan_qc) = certified_by(&g, &stuck, &mut shards[1], ShardId(1), &[0, 1, 2], 0);
    let orphan_link = CrossLink {
        header: orphan.header.clone(),
        certificate: orphan_qc.encode(),
        registry: None,
    };
    assert!(e1.check_link(&orphan_link, false).is_ok());
    assert!(e1.certify(&orphan.header, &orphan_link.certificate).is_ok());
    // Shard 0 goes on into its second era.
    link(&mut e1, &mut shards[0], ShardId(0), 12);
    let e2 = e1.next_epoch(8);
    let linked = e1.links[1].as_ref().map(|l| l.block);
    assert_eq!(
        e2.newest().starts,
        vec![
            Some(start_at(17)),
            Some(Start {
                first: 3,
                parent: linked
            })
        ]
    );
    let fresh = e2.committee_at(ShardId(1), 3).expect("epoch 2's");
    assert!(
        fresh
            .members
            .iter()
            .all(|m| stuck.members.iter().all(|s| s.id != m.id)),
        "drawn afresh, without the stuck committee's members"
    );
    assert_eq!(e2.epoch_at(ShardId(1), 2), Some(0));
    assert_eq!(e2.epoch_at(ShardId(1), 3), Some(2));
    assert_eq!(e2.era_of(ShardId(1), 3).map(|e| e.last), Some(10));
    assert_eq!(
        e2.epoch_at(ShardId(0), 12),
        Some(1),
        "the live shard is untouched"
    );
    // The old committee's block above the linked one: refused by the beacon and by Atomix from now on.
    assert!(matches!(
        e2.check_link(&orphan_link, false),
        Err(LinkError::Quorum {
            shard: ShardId(1),
            ..
        })
    ));
    assert!(
        e2.certify(&orphan.header, &orphan_link.certificate)
            .is_err()
    );
    // A pure function of the state, kept whole by the codec.
    assert_eq!(e1.next_epoch(8), e2);
    assert_eq!(BeaconState::decode(&e2.encode()), Ok(e2.clone()));
}

fn start_at(first: u64) -> Start {
    Start {
        first,
        parent: None,
    }
}

/// Issue 15 item 5: a storage node's missed periods (the shards' `StorageFault` events) lower its placement
/// standing for the epoch they happen in and the next, and, where the account is also a validator, halve
/// the reputation its next epoch's weight is computed from; a fault of an unknown account changes nothing.
#[test]
fn storage_faults_lower_standing_for_two_epochs_and_a_validators_reputation() {
    let g = genesis(2);
    let mut beacon = BeaconState::genesis(&g, SIZE, 0).expect("enough validators");
    let validator = beacon.newest().ids()[0][0];
    let storage = Address([0xab; 32]);
    for id in [validator, storage] {
        beacon.apply_event(&RegistryEvent::StorageNode {
            id,
            stake: Amount(100),
        });
    }
    let i = beacon
        .validators
        .binary_search_by_key(&validator, |v| v.id)
        .expect("a validator");
    beacon.validators[i].signals = Signals {
        votes_in_certificates: 10,
        certificates: 10,
        blocks_proposed: 1,
        proposer_slots: 1,
        faults_proven: 0,
        storage_faults: 0,
    };
    let before = beacon.clone();
    beacon.apply_event(&RegistryEvent::StorageFault {
        id: Address([0xcd; 32]),
    });
    assert_eq!(beacon, before, "an unknown account's fault changes nothing");
    beacon.apply_event(&RegistryEvent::StorageFault { id: validator });
    for _ in 0..2 {
        beacon.apply_event(&RegistryEvent::StorageFault { id: storage });
    }
    let node = |b: &BeaconState, id: &Address| b.storage_node(id).cloned().expect("registered");
    assert_eq!(node(&beacon, &storage).faults, 2);
    assert_eq!(node(&beacon, &storage).reputation_ppm(), 250_000);
    assert_eq!(node(&beacon, &validator).reputation_ppm(), 500_000);
    assert_eq!(beacon.validators[i].signals.storage_faults, 1);
    assert_eq!(
        BeaconState::decode(&beacon.encode()).expect("round trip"),
        beacon
    );
    // The next epoch: the validator's weight is computed from a halved reputation, and the faults count
    // as the epoch before.
    let next = beacon.next_epoch(0);
    assert_eq!(next.validators[i].reputation_ppm, 500_000);
    assert_eq!(next.validators[i].signals, Signals::default());
    let n = node(&next, &storage);
    assert_eq!(
        (n.faults, n.faults_before, n.reputation_ppm()),
        (0, 2, 250_000)
    );
    // One epoch later with no new fault: good standing again.
    let after = next.next_epoch(0);
    let n = node(&after, &storage);
    assert_eq!(
        (n.faults, n.faults_before, n.reputation_ppm()),
        (0, 0, 1_000_000)
    );
}
