//! The shard ledger's tests: Atomix between two ledgers, propose, check, commit and reopen, admission,
//! and blocks refused with their reasons.

use super::*;
use crate::address::{Address, shard_of};
use crate::amount::Amount;
use crate::atomix::InboundError;
use crate::bft::BlockError;
use crate::block::Block;
use crate::crypto::SecretKey;
use crate::genesis::Genesis;
use crate::genesis::GenesisConfig;
use crate::ids::{MemberIndex, ShardId};
use crate::state::ChainParams;
use crate::state::ProofRefused;
use crate::store::MemStore;
use crate::tx::Transaction;
use crate::tx::{SignedTransaction, TxError, TxKind};
use crate::types::storage_proof::ProofTx;
use std::sync::Arc;

fn setup() -> (Genesis, ShardApp<MemStore>, SecretKey) {
    let genesis = GenesisConfig::devnet(1, 0, Amount(0), Amount::from_iost(1000).expect("small"))
        .build()
        .expect("valid genesis");
    let app = ShardApp::open(&genesis, ShardId(0), MemStore::new()).expect("genesis");
    (genesis, app, SecretKey::dev("devnet/wallet"))
}

fn pay(key: &SecretKey, nonce: u64, iost: u64) -> SignedTransaction {
    Transaction {
        chain_id: ChainParams::devnet(1).chain_id,
        sender: key.public(),
        nonce,
        fee: Amount(1_000),
        expiry_height: 1_000,
        kind: TxKind::Transfer {
            to: Address::of(&SecretKey::dev("bob").public()),
            amount: Amount::from_iost(iost).expect("small"),
        },
    }
    .sign(key)
}

/// A transfer to another shard, end to end through two ledgers: locked and finalised on the sender's
/// shard, committed on the recipient's from a relayed inbound. A ledger that cannot check the input
/// shard's certificate refuses the block as a proposal but applies it once its committee finalised it.
#[test]
fn atomix_between_two_ledgers_and_finalised_blocks_without_a_certifier() {
    use crate::bft::{Bls, Committee, Member, QuorumCertificate, Vote, VoteKind};
    let genesis = GenesisConfig::devnet(2, 0, Amount(0), Amount::from_iost(1000).expect("small"))
        .build()
        .expect("valid genesis");
    let key = SecretKey::dev("devnet/wallet");
    let home = shard_of(&Address::of(&key.public()), 2);
    let away = ShardId(1 - home.0);
    let to = (0..)
        .map(|i| Address::of(&SecretKey::dev(&format!("away {i}")).public()))
        .find(|a| shard_of(a, 2) == away)
        .expect("some address lands on the other shard");
    let chain_id = genesis.params.chain_id;
    let mut input = ShardApp::open(&genesis, home, MemStore::new()).expect("genesis");
    let tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce: 0,
        fee: Amount(1_000),
        expiry_height: 1_000,
        kind: TxKind::Transfer {
            to,
            amount: Amount::from_iost(7).expect("small"),
        },
    }
    .sign(&key);
    input
        .submit(tx.clone())
        .expect("a transfer to another shard is admitted");
    let block = input.propose();
    assert_eq!(block.transactions, vec![tx.clone()]);
    // The input shard's one-member committee finalises it.
    let member = crate::crypto::bls::SecretKey::dev("ledger test member");
    let committee = Committee::<Bls>::new(
        vec![Member {
            id: Address([1; 32]),
            public: member.public(),
            weight: 1,
        }],
        [0; 32],
    );
    let vote = Vote::<Bls>::sign(
        chain_id,
        home,
        VoteKind::Precommit,
        1,
        0,
        Some(block.hash()),
        MemberIndex(0),
        &member,
    );
    let qc = QuorumCertificate::aggregate(&committee, &[&vote], block.hash()).expect("valid");
    input.commit(&block, qc.encode()).expect("commit");
    assert!(input.state().is_locked(&tx.id()));
    let (out, inbound) = input.outbound(1, 1).pop().expect("one inbound");
    assert_eq!(out, away);

    let mut committees = vec![committee.clone(), committee];
    committees[usize::from(away)].members.clear();
    let certifier = Arc::new(crate::atomix::FixedCommittees {
        chain_id,
        committees,
    });
    let mut output = ShardApp::open(&genesis, away, MemStore::new()).expect("genesis");
    output.set_certifier(certifier);
    let mut forged = inbound.clone();
    forged.certificate = qc.encode()[..10].to_vec();
    assert!(matches!(
        output.submit_inbound(forged),
        Err(InboundError::Certificate(_))
    ));
    output
        .submit_inbound(inbound.clone())
        .expect("a valid relay");
    output
        .submit_inbound(inbound)
        .expect("a second relay is a no-op");
    assert_eq!(output.inbound_len(), 1);
    let credit = output.propose();
    assert_eq!(credit.inbound.len(), 1);
    output.commit(&credit, vec![1]).expect("commit");
    let credited = output.state().account(&to).expect("credited").balance;
    assert_eq!(credited, Amount::from_iost(7).expect("small"));
    assert_eq!(output.inbound_len(), 0, "committed inbounds leave the pool");

    // A ledger with no certifier: the block is no valid proposal, but a finalised block applies.
    let mut late = ShardApp::open(&genesis, away, MemStore::new()).expect("genesis");
    assert!(matches!(
        late.check(&credit),
        Err(BlockError::Inbound { index: 0, .. })
    ));
    late.check_finalised(&credit)
        .expect("finalised by its committee");
    late.commit(&credit, vec![1]).expect("commit");
    assert_eq!(late.state().account(&to).map(|a| a.balance), Some(credited));
    assert!(late.state().is_committed(&tx.id()));
}

#[test]
fn propose_check_commit_and_reopen() {
    let (genesis, mut app, wallet) = setup();
    for nonce in 0..3 {
        app.submit(pay(&wallet, nonce, 1)).expect("admitted");
    }
    assert_eq!(
        app.submit(pay(&wallet, 0, 1)),
        Ok(()),
        "a duplicate replaces itself"
    );
    let block = app.propose();
    assert_eq!(block.transactions.len(), 3);
    assert_eq!(app.check(&block), Ok(()));
    app.commit(&block, vec![1, 2, 3]).expect("commits");
    assert_eq!(
        app.tip(),
        Tip {
            height: 1,
            hash: block.hash()
        }
    );
    assert_eq!(app.mempool_len(), 0);
    assert_eq!(
        app.submit(pay(&wallet, 1, 1)),
        Err(TxError::ReplayedNonce {
            expected: 3,
            got: 1
        })
    );
    assert_eq!(app.committed(1), Some((block.clone(), vec![1, 2, 3])));

    let root = app.state.root();
    let store = app.into_store();
    let mut reopened = ShardApp::open(&genesis, ShardId(0), store).expect("reopens");
    assert_eq!(
        reopened.tip(),
        Tip {
            height: 1,
            hash: block.hash()
        }
    );
    assert_eq!(reopened.state.root(), root);
}

#[test]
fn admission_refuses_what_can_never_apply_with_reasons() {
    let (_, mut app, wallet) = setup();
    let with = |f: &dyn Fn(&mut Transaction)| {
        let mut tx = pay(&wallet, 0, 1).tx;
        f(&mut tx);
        tx.sign(&wallet)
    };
    let cases: [(SignedTransaction, TxError); 3] = [
        (
            pay(&wallet, 0, 2_000),
            TxError::Overspend {
                needed: Amount(2_000 * 100_000_000 + 1_000),
                available: Amount::from_iost(1000).expect("small"),
            },
        ),
        (
            with(&|t| t.fee = Amount(1)),
            TxError::FeeTooLow {
                min: Amount(1_000),
                got: Amount(1),
            },
        ),
        (
            with(&|t| t.expiry_height = 0),
            TxError::Expired {
                expiry_height: 0,
                height: 1,
            },
        ),
    ];
    for (tx, expected) in cases {
        assert_eq!(app.submit(tx), Err(expected));
    }
    assert_eq!(app.mempool_len(), 0);
    assert_eq!(app.submit(pay(&wallet, 0, 999)), Ok(()), "fee fits");
}

#[test]
fn signatures_verified_at_admission_are_not_checked_again_but_forgeries_never_pass() {
    let (_, mut app, wallet) = setup();
    let good = pay(&wallet, 0, 1);
    let mut forged = pay(&wallet, 1, 1);
    forged.signature.0[0] ^= 1;
    let mut other_chain = pay(&wallet, 1, 1).tx;
    other_chain.chain_id += 1;
    let other_chain = other_chain.sign(&wallet);
    let results = app.submit_verified(
        vec![good.clone(), forged.clone(), other_chain],
        &[true, false, true],
    );
    assert_eq!(results[0], Ok(()));
    assert!(matches!(results[1], Err(TxError::BadSignature(_))));
    assert!(matches!(results[2], Err(TxError::WrongChainId { .. })));
    assert!(app.verified.contains(&good.id()));
    let block = app.propose();
    assert_eq!(block.transactions, vec![good.clone()]);
    app.commit(&block, vec![]).expect("commits");
    assert!(
        !app.verified.contains(&good.id()),
        "committed ids leave the set"
    );
    // A block from a peer carrying a forged transaction this node never admitted is refused.
    let mut other = setup().1;
    let mut bad = other.build_block([pay(&wallet, 0, 1)]);
    bad.transactions[0].signature.0[0] ^= 1;
    bad.header.transactions_root = Block::transactions_root(&bad.transactions);
    other.checked.clear();
    assert!(matches!(
        other.check(&bad),
        Err(BlockError::Transaction {
            index: 0,
            error: TxError::BadSignature(_)
        })
    ));
}

#[test]
fn invalid_blocks_are_refused_with_reasons() {
    let (_, mut app, wallet) = setup();
    app.submit(pay(&wallet, 0, 1)).expect("admitted");
    let good = app.propose();
    let check = |app: &mut ShardApp<MemStore>, f: &dyn Fn(&mut Block), expected: BlockError| {
        let mut b = good.clone();
        f(&mut b);
        app.checked.clear();
        assert_eq!(app.check(&b), Err(expected));
    };
    check(
        &mut app,
        &|b| b.header.height = 5,
        BlockError::WrongHeight {
            expected: 1,
            got: 5,
        },
    );
    check(
        &mut app,
        &|b| b.header.parent = [1; 32],
        BlockError::WrongParent,
    );
    check(
        &mut app,
        &|b| b.header.shard = ShardId(1),
        BlockError::WrongShard {
            expected: ShardId(0),
            got: ShardId(1),
        },
    );
    check(
        &mut app,
        &|b| b.header.state_root = [0; 32],
        BlockError::StateRoot,
    );
    check(
        &mut app,
        &|b| b.header.receipts_root = [0; 32],
        BlockError::ReceiptsRoot,
    );
    check(
        &mut app,
        &|b| b.transactions.clear(),
        BlockError::TransactionsRoot,
    );
    let replay = |b: &mut Block| {
        b.transactions.push(b.transactions[0].clone());
        b.header.transactions_root = Block::transactions_root(&b.transactions);
    };
    check(
        &mut app,
        &replay,
        BlockError::Transaction {
            index: 1,
            error: TxError::ReplayedNonce {
                expected: 1,
                got: 0,
            },
        },
    );
}

/// A sender cannot fill the mempool: pending transactions are bounded per sender (a nonce more than
/// `PENDING_PER_SENDER_MAX` ahead of the account is refused), the balance must cover the sender's whole pending
/// chain (not only the next nonce), and expiry is bounded. (Before, a penniless account could queue future
/// nonces up to the mempool's bound, each expiring at `u64::MAX`.)
#[test]
fn a_sender_cannot_fill_the_mempool_with_future_nonces_or_unfunded_chains() {
    let (_, mut app, wallet) = setup();
    // The wallet holds 1,000 IOST: ten pending transfers of 99 IOST fit, the eleventh does not.
    for nonce in 0..10 {
        assert_eq!(app.submit(pay(&wallet, nonce, 99)), Ok(()), "nonce {nonce}");
    }
    assert!(matches!(
        app.submit(pay(&wallet, 10, 99)),
        Err(TxError::Overspend { .. })
    ));
    // A replacement of a pending nonce is judged against the others, not itself twice.
    assert_eq!(app.submit(pay(&wallet, 9, 99)), Ok(()));
    // A penniless account: its next nonce and its future nonces are refused alike.
    let poor = SecretKey::dev("penniless");
    assert!(matches!(
        app.submit(pay(&poor, 0, 1)),
        Err(TxError::Overspend { .. })
    ));
    assert!(matches!(
        app.submit(pay(&poor, 5, 1)),
        Err(TxError::Overspend { .. })
    ));
    // Nonces far ahead are refused whatever the balance.
    let far = PENDING_PER_SENDER_MAX;
    assert_eq!(
        app.submit(pay(&wallet, far, 1)),
        Err(TxError::NonceTooFar {
            expected: 0,
            got: far,
            window: PENDING_PER_SENDER_MAX,
        })
    );
    // Expiry is bounded.
    let mut tx = pay(&wallet, 10, 1).tx;
    tx.expiry_height = u64::MAX;
    assert_eq!(
        app.submit(tx.sign(&wallet)),
        Err(TxError::ExpiryTooFar {
            expiry_height: u64::MAX,
            max: 1 + EXPIRY_WINDOW_MAX,
        })
    );
    assert_eq!(app.mempool_len(), 10);
}

/// A gossiped transaction that could never be admitted is refused before its signature is looked at, so a
/// flood of junk costs no signature checks (the node filters gossip with `admissible`): here the signature is
/// garbage and the refusal names the real reason, not the signature.
#[test]
fn junk_is_refused_before_any_signature_check() {
    let (_, app, wallet) = setup();
    let poor = SecretKey::dev("penniless");
    let mut junk = pay(&poor, 0, 1);
    // Another transaction's signature: valid for it, not for these.
    junk.signature = pay(&wallet, 3, 2).signature;
    assert!(matches!(
        app.admissible(&junk),
        Err(TxError::Overspend { .. })
    ));
    let mut far = pay(&wallet, PENDING_PER_SENDER_MAX + 5, 1);
    far.signature = junk.signature;
    assert!(matches!(
        app.admissible(&far),
        Err(TxError::NonceTooFar { .. })
    ));
    // An admissible one with a bad signature passes this filter; `submit` still refuses it.
    let mut forged = pay(&wallet, 0, 1);
    forged.signature = junk.signature;
    assert_eq!(app.admissible(&forged), Ok(()));
    let mut app = app;
    assert!(matches!(app.submit(forged), Err(TxError::BadSignature(_))));
}

/// A transfer locked and finalised on its input shard, relayed as an inbound to the output shard: the
/// genesis, the output shard, the inbound (with its good certificate), the input shard's one-member
/// committee and the hash of the certified block.
fn certified_inbound() -> (
    Genesis,
    ShardId,
    crate::atomix::Inbound,
    crate::bft::Committee<crate::bft::Bls>,
    Hash,
) {
    use crate::bft::{Bls, Committee, Member, QuorumCertificate, Vote, VoteKind};
    let genesis = GenesisConfig::devnet(2, 0, Amount(0), Amount::from_iost(1000).expect("small"))
        .build()
        .expect("valid genesis");
    let key = SecretKey::dev("devnet/wallet");
    let home = shard_of(&Address::of(&key.public()), 2);
    let away = ShardId(1 - home.0);
    let to = (0..)
        .map(|i| Address::of(&SecretKey::dev(&format!("away {i}")).public()))
        .find(|a| shard_of(a, 2) == away)
        .expect("some address lands on the other shard");
    let chain_id = genesis.params.chain_id;
    let mut input = ShardApp::open(&genesis, home, MemStore::new()).expect("genesis");
    let tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce: 0,
        fee: Amount(1_000),
        expiry_height: 1_000,
        kind: TxKind::Transfer {
            to,
            amount: Amount::from_iost(7).expect("small"),
        },
    }
    .sign(&key);
    input.submit(tx).expect("admitted");
    let block = input.propose();
    let member = crate::crypto::bls::SecretKey::dev("ledger test member");
    let committee = Committee::<Bls>::new(
        vec![Member {
            id: Address([1; 32]),
            public: member.public(),
            weight: 1,
        }],
        [0; 32],
    );
    let vote = Vote::<Bls>::sign(
        chain_id,
        home,
        VoteKind::Precommit,
        1,
        0,
        Some(block.hash()),
        MemberIndex(0),
        &member,
    );
    let qc = QuorumCertificate::aggregate(&committee, &[&vote], block.hash()).expect("valid");
    input.commit(&block, qc.encode()).expect("commit");
    let (out, inbound) = input.outbound(1, 1).pop().expect("one inbound");
    assert_eq!(out, away);
    (genesis, away, inbound, committee, block.hash())
}

/// Attacks the memory of checked certificates: it was keyed by the header's hash only, so once an honest
/// relay's certificate for a header verified, any bytes passed as that header's certificate: a relayed
/// inbound with a forged certificate was answered as admitted, and a proposer's block carrying it passed
/// `check`. Now the memory is keyed by header and certificate bytes together, and both are refused.
#[test]
fn a_forged_certificate_does_not_ride_on_a_header_checked_before() {
    use crate::bft::{Bls, Committee, Member, QuorumCertificate, Vote, VoteKind};
    let (genesis, away, inbound, committee, certified) = certified_inbound();
    let chain_id = genesis.params.chain_id;
    let home = inbound.header.shard;
    // The forger signs the same header with a key of its own: a certificate that decodes, names the right
    // block and member, and does not verify against the input shard's committee.
    let forger = crate::crypto::bls::SecretKey::dev("forger");
    let fake = Committee::<Bls>::new(
        vec![Member {
            id: Address([1; 32]),
            public: forger.public(),
            weight: 1,
        }],
        [0; 32],
    );
    let vote = Vote::<Bls>::sign(
        chain_id,
        home,
        VoteKind::Precommit,
        1,
        0,
        Some(certified),
        MemberIndex(0),
        &forger,
    );
    let forged_qc = QuorumCertificate::aggregate(&fake, &[&vote], certified).expect("aggregates");
    let mut forged = inbound.clone();
    forged.certificate = forged_qc.encode();
    assert_ne!(forged.certificate, inbound.certificate);

    let mut committees = vec![committee.clone(), committee];
    committees[usize::from(away)].members.clear();
    let mut output = ShardApp::open(&genesis, away, MemStore::new()).expect("genesis");
    output.set_certifier(Arc::new(crate::atomix::FixedCommittees {
        chain_id,
        committees,
    }));
    output
        .submit_inbound(inbound.clone())
        .expect("the honest relay is admitted and its certificate checked");
    assert!(matches!(
        output.submit_inbound(forged.clone()),
        Err(InboundError::Certificate(_))
    ));

    // A proposer swaps the certificate in its block (and recomputes the transactions root): the block is
    // refused, though this node checked a certificate of that header before.
    let mut block = output.propose();
    assert_eq!(block.inbound, vec![inbound]);
    block.inbound[0].certificate = forged.certificate;
    block.header.transactions_root =
        Block::body_root(&block.transactions, &block.inbound, &block.proofs);
    assert!(matches!(
        output.check(&block),
        Err(BlockError::Inbound {
            index: 0,
            error: InboundError::Certificate(_)
        })
    ));
}

/// Attacks the shard ledger's verdict cache (issue 14, defect 8): the state a checked block leads to was
/// remembered by the block hash, which covers the header only, so the proposer's own block with its
/// transactions taken out (the same hash) passed `check` from the cache and `commit` stored the emptied
/// body beside the full block's state. Now the cache is keyed by the whole encoding.
#[test]
fn a_body_swapped_under_a_proposed_header_is_refused_not_answered_from_the_cache() {
    let (_, mut app, wallet) = setup();
    app.submit(pay(&wallet, 0, 1)).expect("admitted");
    let good = app.propose();
    app.check(&good).expect("valid, and remembered");
    let mut emptied = good.clone();
    emptied.transactions.clear();
    assert_eq!(emptied.hash(), good.hash());
    assert_eq!(app.check(&emptied), Err(BlockError::TransactionsRoot));
    assert_eq!(
        app.check_finalised(&emptied),
        Err(BlockError::TransactionsRoot)
    );
    assert!(app.commit(&emptied, vec![1]).is_err());
    assert_eq!(app.tip().height, 0);
    app.commit(&good, vec![1]).expect("the real block");
    assert_eq!(app.committed(1).map(|(b, _)| b), Some(good));
}

/// Deal transactions that cost a validator signature checks (one per holder, up to 32) are refused by the
/// cheap checks first: a deal with forged holder signatures from a wrong nonce or an unfunded sender costs no
/// signature check at admission or in a block, and an EndDeal of a deal that does not exist (which would sit at
/// its nonce until expiry, holding back the sender's later transactions for free) is not admitted.
#[test]
fn deal_transactions_are_refused_cheaply_before_their_signatures() {
    use crate::types::deal::{DealTerms, Holder};
    let (genesis, mut app, wallet) = setup();
    let holders: Vec<SecretKey> = (0..32).map(|i| SecretKey::dev(&format!("h{i}"))).collect();
    let terms = DealTerms {
        root: vec![1, 0x55, 0x1e, 32, 1],
        size: 1,
        k: 16,
        m: 16,
        periods: 1,
        holders: holders
            .iter()
            .map(|k| Holder {
                key: k.public(),
                price: Amount(1),
            })
            .collect(),
        placement: (0..32).collect(),
        segment_lens: vec![1],
        commitments_root: [0; 32],
    };
    // Signatures that verify for nothing: each is checked only once everything cheaper passed.
    let deal = |key: &SecretKey, nonce: u64| {
        let mut t = Transaction {
            chain_id: genesis.params.chain_id,
            sender: key.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 1_000,
            kind: TxKind::OpenDeal {
                terms: terms.clone(),
                signatures: vec![crate::crypto::Signature([7; 64]); 32],
            },
        };
        t.fee = t.fee_floor(genesis.params.fee_min).expect("fits");
        t.sign(key)
    };
    let mut state = app.state().clone();
    assert!(matches!(
        state.apply(&deal(&wallet, 5), 1),
        Err(TxError::FutureNonce { .. })
    ));
    let poor = SecretKey::dev("penniless");
    assert!(matches!(
        app.admissible(&deal(&poor, 0)),
        Err(TxError::Overspend { .. })
    ));
    // With everything else right, the forged holder signatures are what refuses it.
    assert_eq!(app.submit(deal(&wallet, 0)), Err(TxError::DealSignature(0)));
    let end = Transaction {
        chain_id: genesis.params.chain_id,
        sender: wallet.public(),
        nonce: 0,
        fee: Amount(1_000),
        expiry_height: 1_000,
        kind: TxKind::EndDeal { deal: [9; 32] },
    }
    .sign(&wallet);
    assert_eq!(app.submit(end), Err(TxError::UnknownDeal));
}

/// Storage proofs end to end through two replicas of one shard: a deal opens, the holder's proof for its
/// first period goes through the proposer's pool into a block the other replica checks and commits, paying
/// the holder once. The pool refuses a copy, a proof of another period and a forged one; a block carrying a
/// forged proof, or one whose proofs were swapped under its header, is refused by the replica.
#[test]
fn storage_proofs_go_through_the_pool_into_blocks_every_replica_accepts() {
    use crate::smt;
    use crate::types::deal::{self, DealTerms, Holder};
    use crate::types::storage_proof;
    let (genesis, mut a, wallet) = setup();
    let mut b = ShardApp::open(&genesis, ShardId(0), MemStore::new()).expect("genesis");
    let chain_id = genesis.params.chain_id;
    let holder = SecretKey::dev("ledger/holder");
    let shard: Vec<u8> = (0..3_000u32).map(|i| (i * 13) as u8).collect();
    let cid = vec![1, 0x55, 0x1e, 9];
    let leaves = vec![deal::shard_leaf(
        &cid,
        &crate::pieces::commit(&shard).expect("fits"),
    )];
    let terms = DealTerms {
        root: vec![1, 0x55, 0x1e, 32],
        size: 3_000,
        k: 1,
        m: 0,
        periods: 4,
        holders: vec![Holder {
            key: holder.public(),
            price: Amount::from_iost(1).expect("small"),
        }],
        placement: vec![0],
        segment_lens: vec![3_000],
        commitments_root: smt::list_root(&leaves),
    };
    let owner = Address::of(&wallet.public());
    // Three deals of the same shard with the same holder (each its own id: the roots differ).
    let deals: Vec<(DealTerms, Hash)> = (32u8..35)
        .map(|r| {
            let mut terms = terms.clone();
            terms.root[3] = r;
            let id = terms.id(&owner);
            (terms, id)
        })
        .collect();
    for (nonce, (terms, id)) in deals.iter().enumerate() {
        let mut open = Transaction {
            chain_id,
            sender: wallet.public(),
            nonce: nonce as u64,
            fee: Amount(1_000),
            expiry_height: 1_000,
            kind: TxKind::OpenDeal {
                terms: terms.clone(),
                signatures: vec![deal::sign(&holder, chain_id, id)],
            },
        };
        open.fee = open.fee_floor(Amount(1_000)).expect("fits");
        a.submit(open.sign(&wallet)).expect("admitted");
    }
    let id = deals[0].1;
    let step = |a: &mut ShardApp<MemStore>, b: &mut ShardApp<MemStore>| {
        let block = a.propose();
        assert_eq!(b.check(&block), Ok(()), "the replica accepts the block");
        a.commit(&block, Vec::new()).expect("commits");
        b.commit(&block, Vec::new()).expect("commits");
        block
    };
    // Opened at height 1, the deal starts at 16; its period 0 ends at 32 and is provable from 33.
    while a.tip().height < 32 {
        step(&mut a, &mut b);
    }
    let record = a.state().deal(&id).cloned().expect("open");
    assert_eq!(record.start_height, 16);
    // One holder proof answers for the holder's three deals, through the pool and a block every replica
    // accepts, and pays each deal's slot once.
    let tip = a.tip();
    let due = a
        .state()
        .holder_due(&holder.public(), tip.height + 1, &tip.hash)
        .expect("the holder has slots to prove");
    assert_eq!((due.slots.len(), due.unproven, due.drawn.len()), (3, 3, 3));
    let proof = storage_proof::answer_holder(due.drawn, &holder.public(), due.end, |_, _, _| {
        Some((cid.clone(), shard.clone(), smt::list_prove(&leaves, 0)))
    })
    .expect("the holder has its shard");
    assert!(
        ProofTx::Holder(proof.clone()).encode().len()
            <= 3 * storage_proof::proof_bytes_bound(&terms, 0),
        "the deals prepaid at least the proof's bytes"
    );
    let mut forged = proof.clone();
    forged.samples[0].sample.piece.piece[0] ^= 1;
    assert!(matches!(
        a.submit_proof(forged.clone().into()),
        Err(PoolError::Refused(_))
    ));
    let mut early = proof.clone();
    early.end += 16;
    assert!(
        a.submit_proof(early.into()).is_err(),
        "period 1 is not over"
    );
    // A slot proof of one of the deals is no way around it: slot proofs only claim repair orders.
    let (_, seed) = a.state().seed_for(tip.height + 1, &tip.hash);
    let alone = storage_proof::prove(&terms, &seed, &id, 0, 0, |_| {
        Some((cid.clone(), shard.clone(), smt::list_prove(&leaves, 0)))
    })
    .expect("the holder has its shard");
    assert!(matches!(
        a.submit_proof(alone.into()),
        Err(PoolError::Refused(ProofRefused::NotAClaim))
    ));
    a.submit_proof(proof.clone().into()).expect("admitted");
    assert_eq!(
        a.submit_proof(proof.clone().into()),
        Err(PoolError::Duplicate)
    );
    // A replica refuses a block carrying a forged proof, and one whose proof was swapped under its header.
    let block = a.propose();
    assert_eq!(block.proofs, vec![ProofTx::Holder(proof.clone())]);
    let mut swapped = block.clone();
    swapped.proofs = vec![forged.clone().into()];
    assert_eq!(b.check(&swapped), Err(BlockError::TransactionsRoot));
    let mut resealed = swapped.clone();
    resealed.header.transactions_root =
        Block::body_root(&resealed.transactions, &resealed.inbound, &resealed.proofs);
    assert!(matches!(
        b.check(&resealed),
        Err(BlockError::Proof { index: 0, .. })
    ));
    assert_eq!(b.check(&block), Ok(()));
    a.commit(&block, Vec::new()).expect("commits");
    b.commit(&block, Vec::new()).expect("commits");
    let pay = terms.per_period().expect("fits")[0];
    let paid = |app: &ShardApp<MemStore>| {
        app.state()
            .account(&Address::of(&holder.public()))
            .map(|a| a.balance)
    };
    assert_eq!(paid(&a), Some(Amount(3 * pay.0)));
    assert_eq!(paid(&b), Some(Amount(3 * pay.0)));
    assert_eq!(
        a.proofs_waiting(),
        0,
        "the pool let go of the included proof"
    );
    assert!(matches!(
        a.submit_proof(proof.into()),
        Err(PoolError::Refused(ProofRefused::AllProven { .. }))
    ));
    assert_eq!(a.state.root(), b.state.root());
}

/// Issue 15 item 5, across shards: a holder of the other shard never proves; the deal's shard settles the
/// missed period into a slash lock at the first block after the window, relays it like a transfer
/// (`outbound`), and the holder's shard commits it by burning the stake, once, with both supplies kept.
#[test]
fn a_missed_proof_slashes_a_holder_of_another_shard_through_a_relayed_lock() {
    use crate::bft::{Bls, Committee, Member, QuorumCertificate, Vote, VoteKind};
    use crate::smt;
    use crate::types::deal::{self, DealTerms, Holder};
    let wallet = SecretKey::dev("devnet/wallet");
    let home = shard_of(&Address::of(&wallet.public()), 2);
    let away = ShardId(1 - home.0);
    let holder = (0..)
        .map(|i| SecretKey::dev(&format!("ledger/away holder {i}")))
        .find(|k| shard_of(&Address::of(&k.public()), 2) == away)
        .expect("some key lands on the other shard");
    let stake = Amount::from_iost(10).expect("small");
    let mut config =
        GenesisConfig::devnet(2, 0, Amount(0), Amount::from_iost(1000).expect("small"));
    config.storage_nodes = vec![(Address::of(&holder.public()), stake)];
    let genesis = config.build().expect("valid genesis");
    let chain_id = genesis.params.chain_id;
    let mut input = ShardApp::open(&genesis, home, MemStore::new()).expect("genesis");
    let mut output = ShardApp::open(&genesis, away, MemStore::new()).expect("genesis");
    let shard: Vec<u8> = (0..3_000u32).map(|i| (i * 13) as u8).collect();
    let cid = vec![1, 0x55, 0x1e, 9];
    let leaves = vec![deal::shard_leaf(
        &cid,
        &crate::pieces::commit(&shard).expect("fits"),
    )];
    let terms = DealTerms {
        root: vec![1, 0x55, 0x1e, 32],
        size: 3_000,
        k: 1,
        m: 0,
        periods: 4,
        holders: vec![Holder {
            key: holder.public(),
            price: Amount::from_iost(1).expect("small"),
        }],
        placement: vec![0],
        segment_lens: vec![3_000],
        commitments_root: smt::list_root(&leaves),
    };
    let id = terms.id(&Address::of(&wallet.public()));
    let mut open = Transaction {
        chain_id,
        sender: wallet.public(),
        nonce: 0,
        fee: Amount(1_000),
        expiry_height: 1_000,
        kind: TxKind::OpenDeal {
            terms: terms.clone(),
            signatures: vec![deal::sign(&holder, chain_id, &id)],
        },
    };
    open.fee = open.fee_floor(Amount(1_000)).expect("fits");
    input.submit(open.sign(&wallet)).expect("admitted");
    let (input_supply, output_supply) = (
        input.state().accountable_supply(),
        output.state().accountable_supply(),
    );
    // The input shard's one-member committee certifies its blocks.
    let member = crate::crypto::bls::SecretKey::dev("ledger test member");
    let committee = Committee::<Bls>::new(
        vec![Member {
            id: Address([1; 32]),
            public: member.public(),
            weight: 1,
        }],
        [0; 32],
    );
    let certify = |block: &Block| {
        let vote = Vote::<Bls>::sign(
            chain_id,
            home,
            VoteKind::Precommit,
            block.header.height,
            0,
            Some(block.hash()),
            MemberIndex(0),
            &member,
        );
        QuorumCertificate::aggregate(&committee, &[&vote], block.hash())
            .expect("valid")
            .encode()
    };
    // Opened at height 1, the deal starts at 16; period 0 ends at 32, its window at 48, so height 49 settles it.
    let mut settled_at = None;
    while input.tip().height < 49 {
        let block = input.propose();
        input.commit(&block, certify(&block)).expect("commits");
        let height = block.header.height;
        if !input.slashes_at(height).is_empty() {
            settled_at = Some(height);
        }
    }
    assert_eq!(
        settled_at,
        Some(49),
        "the miss is settled at the first block after the window"
    );
    let slash = input.slashes_at(49);
    assert_eq!(slash.len(), 1);
    assert_eq!(slash[0].to, Address::of(&holder.public()));
    assert_eq!(slash[0].kind, crate::atomix::LockKind::Slash);
    // Pay is 1 IOST per GiB per period of 3,000 bytes: 3 base units, rounded up; the slash is four of them.
    let pay = terms.per_period().expect("fits")[0];
    assert_eq!(slash[0].amount, Amount(4 * pay.0));
    assert_eq!(
        input.height_of_tx(&slash[0].tx_id),
        Some(49),
        "indexed for relays by id"
    );
    assert_eq!(input.state().proven(&id, 0).missed, 1);
    assert_eq!(input.state().accountable_supply(), input_supply);

    let (to, inbound) = input.outbound(49, 49).pop().expect("the slash is relayed");
    assert_eq!(to, away);
    assert_eq!(inbound.locks.len(), 1);
    let mut committees = vec![committee.clone(), committee];
    committees[usize::from(away)].members.clear();
    output.set_certifier(Arc::new(crate::atomix::FixedCommittees {
        chain_id,
        committees,
    }));
    // Passed off as a transfer it proves nothing.
    let mut as_credit = inbound.clone();
    as_credit.locks[0].0.kind = crate::atomix::LockKind::Transfer;
    assert!(matches!(
        output.submit_inbound(as_credit),
        Err(InboundError::BadProof { .. })
    ));
    output
        .submit_inbound(inbound.clone())
        .expect("a valid relay");
    let block = output.propose();
    assert_eq!(block.inbound.len(), 1);
    output.commit(&block, vec![1]).expect("commits");
    let account = output
        .state()
        .account(&Address::of(&holder.public()))
        .cloned()
        .expect("the holder");
    assert_eq!(account.storage_stake, Amount(stake.0 - 4 * pay.0));
    assert_eq!(account.balance, Amount::ZERO);
    assert_eq!(output.state().atomix_totals().burned, u128::from(4 * pay.0));
    assert_eq!(output.state().accountable_supply(), output_supply);
    // A second relay of the same slash burns nothing more.
    assert!(output.submit_inbound(inbound).is_err());
    let block = output.propose();
    assert!(block.inbound.is_empty());
}
