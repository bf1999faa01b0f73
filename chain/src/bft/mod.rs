//! Per-shard BFT finality: a Tendermint-style protocol written as a sans-IO state machine. The normative
//! text is `specs/consensus.md` §2.
//!
//! Goals: safety (no two different blocks finalised at one height) with up to `f` Byzantine members where
//! the committee's weight is `3f + 1`, by weight not by count; liveness once messages get through; every
//! decision carried by a quorum certificate (aggregate signature + signer bitmap over more than two thirds of
//! the weight) that anyone holding the committee can check.
//!
//! The replica owns no socket, clock, thread or RNG. The driver calls [`Replica::handle`] with the current
//! time and an input (a message from a peer, or nothing when a timeout is due), then drains
//! [`Replica::poll_output`] and sleeps until [`Replica::poll_timeout`].
//!
//! Protocol, per height, in rounds (Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus", 2018):
//! 1. The round's proposer (weighted rotation) proposes its valid block if it has one, else a new block. A
//!    re-proposed block carries the prevote certificate of the round that made it valid.
//! 2. A member prevotes the proposal if the block checks and it is not locked on another block (or the
//!    proposal's certificate is newer than its lock); else it prevotes nil.
//! 3. On a prevote quorum for the block, a member locks on it and precommits it; on a nil quorum it
//!    precommits nil; timeouts cover the rest.
//! 4. A precommit quorum for a block finalises it: the member commits the block with the aggregated
//!    precommits as its certificate and moves to the next height.
//!
//! Additions for an unreliable network: every member periodically re-sends its current round's messages and a
//! `Status`; a member ahead answers a `Status` with the finalised blocks (and certificates) the other misses,
//! or, at the same height, with its votes of the rounds the other has not finished;
//! `f + 1` weight seen in a higher round pulls a member into that round; members re-send their latest valid
//! block with its prevote certificate (`Polka`), so a member locked on a block that others never saw win a
//! prevote quorum does not block the committee forever (the next honest proposer re-proposes it). Before a replica sends a vote or a
//! proposal it persists what it is about to send (and its lock) in its store, so a restarted replica never
//! signs two different messages for one step.

mod app;
mod follower;
#[doc(hidden)]
pub mod testkit;

pub use app::{App, BlockError, EvidenceError, LedgerError, LinkError, Tip};
pub use follower::{FOLLOWER, Followed, Follower};

// The votes, certificates and messages this protocol exchanges, and their wire encoding, are types-layer
// items (`crate::types::vote`, `crate::types::wire`); they are re-exported here under their historical paths.
pub use crate::types::evidence::Evidence;
pub use crate::types::message::{Message, Proposal};
pub use crate::types::vote::*;
pub use crate::types::wire;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Hash;
use crate::ids::{MemberIndex, ShardId};
use crate::store::{StoreError, WriteBatch};
use crate::types::block::Block;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

const KEY_WAL: &[u8] = b"bft/wal";
const WAL_VERSION: u8 = 1;

#[derive(Debug, Clone)]
pub struct Config {
    pub chain_id: u32,
    pub shard: ShardId,
    pub timeout_propose_ms: u64,
    pub timeout_vote_ms: u64,
    /// Added to each timeout per round, without limit: however slow the network turns out to be, some
    /// round's timeouts exceed its delays, which liveness under partial synchrony needs.
    pub timeout_delta_ms: u64,
    pub rebroadcast_ms: u64,
    /// Pause between committing a block and starting the next height: lets the precommits and `Decided`
    /// messages of stragglers arrive, so the committee starts the next height together; it also sets the
    /// block time when there is little to do.
    pub commit_wait_ms: u64,
    /// Messages for the next height kept until this replica gets there, at most (and at most a committee
    /// member's share of it, or 4, from any one signer).
    pub future_messages_max: usize,
    /// Bytes of messages for the next height kept, at most (proposals count their whole block).
    pub future_bytes_max: usize,
    /// Finalised blocks sent in answer to one `Status`.
    pub catch_up_blocks_max: u64,
    /// Messages for rounds further ahead than this are dropped, which bounds memory per height.
    pub round_window: u32,
}

impl Config {
    /// A timeout of `base` ms at `round`: `timeout_delta_ms` longer each round, never capped (it saturates
    /// at `u64::MAX` ms, beyond any network).
    pub fn round_timeout(&self, base: u64, round: u32) -> u64 {
        base.saturating_add(self.timeout_delta_ms.saturating_mul(u64::from(round)))
    }

    pub fn new(chain_id: u32, shard: ShardId) -> Self {
        Self {
            chain_id,
            shard,
            timeout_propose_ms: 300,
            timeout_vote_ms: 200,
            timeout_delta_ms: 100,
            rebroadcast_ms: 250,
            commit_wait_ms: 150,
            future_messages_max: 256,
            future_bytes_max: 16 << 20,
            catch_up_blocks_max: 8,
            round_window: 32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Propose,
    Prevote,
    Precommit,
}

#[derive(Debug, Clone)]
pub enum Input<S: VoteScheme> {
    Message {
        from: MemberIndex,
        message: Message<S>,
    },
    /// Time passed; due timeouts fire.
    Tick,
}

#[derive(Debug, Clone)]
pub enum Output<S: VoteScheme> {
    Broadcast(Message<S>),
    Send {
        to: MemberIndex,
        message: Message<S>,
    },
    Committed {
        height: u64,
        block: Arc<Block>,
        certificate: QuorumCertificate<S>,
    },
    Evidence(Evidence<S>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("consensus log is corrupt: {0}")]
    CorruptLog(#[from] DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Propose { height: u64, round: u32 },
    Prevote { height: u64, round: u32 },
    Precommit { height: u64, round: u32 },
    NewHeight { height: u64 },
    Rebroadcast,
}

/// Everything about the height being decided. Reset when a block is committed.
#[derive(Debug)]
struct HeightState<S: VoteScheme> {
    round: u32,
    step: Step,
    locked: Option<(u32, Arc<Block>)>,
    valid: Option<(u32, Arc<Block>, QuorumCertificate<S>)>,
    blocks: BTreeMap<Hash, Arc<Block>>,
    /// The first correctly signed proposal of each round: (block hash, valid round).
    proposals: BTreeMap<u32, (Hash, Option<u32>)>,
    polkas: BTreeMap<(u32, Hash), QuorumCertificate<S>>,
    votes: BTreeMap<(u32, VoteKind), BTreeMap<MemberIndex, Vote<S>>>,
    sent: BTreeMap<(u32, VoteKind), Vote<S>>,
    my_proposals: BTreeMap<u32, Proposal<S>>,
    /// The signed header of each round's accepted proposal, kept to prove a second one an equivocation.
    proposal_headers: BTreeMap<u32, SignedProposalHeader<S>>,
    prevote_timer: BTreeSet<u32>,
    precommit_timer: BTreeSet<u32>,
    polka_handled: BTreeSet<u32>,
    validity: BTreeMap<Hash, bool>,
}

impl<S: VoteScheme> Default for HeightState<S> {
    fn default() -> Self {
        Self {
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            blocks: BTreeMap::new(),
            proposals: BTreeMap::new(),
            polkas: BTreeMap::new(),
            votes: BTreeMap::new(),
            sent: BTreeMap::new(),
            my_proposals: BTreeMap::new(),
            proposal_headers: BTreeMap::new(),
            prevote_timer: BTreeSet::new(),
            precommit_timer: BTreeSet::new(),
            polka_handled: BTreeSet::new(),
            validity: BTreeMap::new(),
        }
    }
}

pub struct Replica<S: VoteScheme, A: App> {
    config: Config,
    committee: Committee<S>,
    me: MemberIndex,
    secret: S::Secret,
    app: A,
    height: u64,
    hs: HeightState<S>,
    /// Pending timers by the time they fire at, in milliseconds.
    timers: BTreeSet<(u64, Timer)>,
    outputs: VecDeque<Output<S>>,
    /// Proposals and votes for the next height, replayed when this replica gets there: only signed ones from
    /// members, bounded in count, in bytes and per signer.
    future: Vec<(MemberIndex, Message<S>)>,
    /// Bytes the kept next-height messages hold, and how many each signer has there.
    future_bytes: usize,
    future_per_signer: BTreeMap<MemberIndex, usize>,
    /// Between a commit and the start of round 0 of the next height.
    waiting: bool,
    halted: Option<StoreError>,
    /// The latest time the driver gave, in milliseconds (never goes back).
    now_ms: u64,
    started: bool,
}

/// What a kept next-height vote is counted as in the byte bound: its fields and a BLS signature, rounded up.
const FUTURE_VOTE_BYTES: usize = 256;

impl<S: VoteScheme, A: App> Replica<S, A> {
    /// A replica for committee member `me`, resuming from whatever `app`'s store holds (a fresh store starts
    /// at height 1, round 0).
    pub fn new(
        config: Config,
        committee: Committee<S>,
        me: MemberIndex,
        secret: S::Secret,
        app: A,
    ) -> Result<Self, ReplicaError> {
        assert!(
            usize::from(me) < committee.len(),
            "the replica is a committee member"
        );
        assert!(
            S::public(&secret) == committee.members[usize::from(me)].public,
            "the secret matches the member"
        );
        let height = app.tip().height + 1;
        let mut replica = Self {
            config,
            committee,
            me,
            secret,
            app,
            height,
            hs: HeightState::default(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            future: Vec::new(),
            future_bytes: 0,
            future_per_signer: BTreeMap::new(),
            waiting: false,
            halted: None,
            now_ms: 0,
            started: false,
        };
        replica.load_wal()?;
        Ok(replica)
    }

    pub fn app(&self) -> &A {
        &self.app
    }

    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    pub fn into_app(self) -> A {
        self.app
    }

    pub fn committee(&self) -> &Committee<S> {
        &self.committee
    }

    /// This replica's index in its committee.
    pub fn me(&self) -> MemberIndex {
        self.me
    }

    /// The height being decided (one above the last committed block).
    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn round(&self) -> u32 {
        self.hs.round
    }

    pub fn step(&self) -> Step {
        self.hs.step
    }

    /// A one-line account of the height being decided, for logs and failing simulations.
    pub fn describe(&self) -> String {
        let votes: Vec<String> = self
            .hs
            .votes
            .iter()
            .filter(|((r, _), _)| *r + 2 >= self.hs.round)
            .map(|((r, k), m)| {
                let vals: Vec<String> = m
                    .iter()
                    .map(|(i, v)| {
                        format!(
                            "{i}:{}",
                            v.block.map_or("nil".into(), |h| format!("{:02x}", h[0]))
                        )
                    })
                    .collect();
                format!("r{r}{k:?}[{}]", vals.join(","))
            })
            .collect();
        format!(
            "h{} r{} {:?} locked={:?} valid={:?} proposals={:?} timers={:?} votes={}",
            self.height,
            self.hs.round,
            self.hs.step,
            self.hs.locked.as_ref().map(|(r, b)| (*r, b.hash()[0])),
            self.hs.valid.as_ref().map(|(r, b, _)| (*r, b.hash()[0])),
            self.hs
                .proposals
                .iter()
                .map(|(r, (h, vr))| (*r, h[0], *vr))
                .collect::<Vec<_>>(),
            self.timers.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            votes.join(" ")
        )
    }

    /// Feeds one input at time `now_ms` (milliseconds on the driver's clock; an earlier time than before
    /// counts as the latest one).
    pub fn handle(&mut self, now_ms: u64, input: Input<S>) {
        if self.halted.is_some() {
            return;
        }
        self.now_ms = self.now_ms.max(now_ms);
        if !self.started {
            self.started = true;
            self.schedule(self.config.rebroadcast_ms, Timer::Rebroadcast);
            self.enter_round(self.hs.round);
        }
        self.fire_timers();
        if let Input::Message { from, message } = input {
            self.on_message(from, message);
        }
        self.progress();
        if self.halted.is_some() {
            self.outputs.clear();
            self.timers.clear();
        }
    }

    pub fn poll_output(&mut self) -> Option<Output<S>> {
        self.outputs.pop_front()
    }

    /// The next moment something is due, in milliseconds; call [`Replica::handle`] with [`Input::Tick`] then.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|(t, _)| *t)
    }

    // ----- timers -----

    fn schedule(&mut self, after_ms: u64, timer: Timer) {
        self.timers
            .insert((self.now_ms.saturating_add(after_ms), timer));
    }

    fn timeout(&self, base: u64, round: u32) -> u64 {
        self.config.round_timeout(base, round)
    }

    fn fire_timers(&mut self) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > self.now_ms {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Rebroadcast => {
                    self.rebroadcast();
                    self.schedule(self.config.rebroadcast_ms, Timer::Rebroadcast);
                }
                Timer::Propose { height, round } => {
                    if (height, round, self.hs.step) == (self.height, self.hs.round, Step::Propose)
                    {
                        self.vote(VoteKind::Prevote, None);
                        self.hs.step = Step::Prevote;
                    }
                }
                Timer::Prevote { height, round } => {
                    if (height, round, self.hs.step) == (self.height, self.hs.round, Step::Prevote)
                    {
                        self.vote(VoteKind::Precommit, None);
                        self.hs.step = Step::Precommit;
                    }
                }
                Timer::Precommit { height, round } => {
                    if (height, round) == (self.height, self.hs.round) {
                        self.enter_round(round + 1);
                    }
                }
                Timer::NewHeight { height } => {
                    if height == self.height && self.waiting {
                        self.enter_round(self.hs.round);
                    }
                }
            }
            self.progress();
        }
    }

    fn rebroadcast(&mut self) {
        let shard = self.config.shard;
        self.outputs.push_back(Output::Broadcast(Message::Status {
            shard,
            height: self.height,
            round: self.hs.round,
        }));
        let round = self.hs.round;
        if let Some(p) = self.hs.my_proposals.get(&round) {
            self.outputs
                .push_back(Output::Broadcast(Message::Proposal(p.clone())));
        }
        if let Some((_, block, certificate)) = &self.hs.valid {
            let message = Message::Polka {
                block: block.clone(),
                certificate: certificate.clone(),
            };
            self.outputs.push_back(Output::Broadcast(message));
        }
        for kind in [VoteKind::Prevote, VoteKind::Precommit] {
            if let Some(v) = self.hs.sent.get(&(round, kind)) {
                self.outputs
                    .push_back(Output::Broadcast(Message::Vote(v.clone())));
            }
        }
    }

    // ----- rounds, proposals, votes -----

    fn enter_round(&mut self, round: u32) {
        self.waiting = false;
        self.hs.round = round;
        self.hs.step = Step::Propose;
        if self
            .committee
            .proposer(self.config.shard, self.height, round)
            == self.me
        {
            self.propose();
        }
        // The proposer too: it may be unable to prevote its own re-proposal (lost certificate).
        let after = self.timeout(self.config.timeout_propose_ms, round);
        self.schedule(
            after,
            Timer::Propose {
                height: self.height,
                round,
            },
        );
        self.persist_wal();
    }

    fn propose(&mut self) {
        let round = self.hs.round;
        let proposal = match self.hs.my_proposals.get(&round) {
            // Restarted after proposing in this round: send the same proposal again, never another.
            Some(p) => p.clone(),
            None => {
                let (block, valid_round, polka) = match &self.hs.valid {
                    Some((r, b, qc)) => (b.clone(), Some(*r), Some(qc.clone())),
                    None => (Arc::new(self.app.propose()), None, None),
                };
                let c = &self.config;
                let p = Proposal::sign(
                    c.chain_id,
                    c.shard,
                    self.height,
                    round,
                    block,
                    valid_round,
                    polka,
                    self.me,
                    &self.secret,
                );
                self.hs.my_proposals.insert(round, p.clone());
                self.persist_wal();
                p
            }
        };
        let hash = proposal.block.hash();
        if let (Some(vr), Some(qc)) = (proposal.valid_round, &proposal.polka) {
            self.hs.polkas.insert((vr, hash), qc.clone());
        }
        self.hs.blocks.insert(hash, proposal.block.clone());
        self.hs
            .proposals
            .entry(round)
            .or_insert((hash, proposal.valid_round));
        self.hs
            .proposal_headers
            .entry(round)
            .or_insert_with(|| proposal.signed_header());
        if self.halted.is_none() {
            self.outputs
                .push_back(Output::Broadcast(Message::Proposal(proposal)));
        }
    }

    /// Signs and sends this member's vote for the current round, unless it already voted in this step, in
    /// which case the earlier vote is sent again: a member never signs two votes for one (round, kind).
    fn vote(&mut self, kind: VoteKind, block: Option<Hash>) {
        let round = self.hs.round;
        let vote = match self.hs.sent.get(&(round, kind)) {
            Some(v) => v.clone(),
            None => {
                let c = &self.config;
                let v = Vote::sign(
                    c.chain_id,
                    c.shard,
                    kind,
                    self.height,
                    round,
                    block,
                    self.me,
                    &self.secret,
                );
                self.hs.sent.insert((round, kind), v.clone());
                self.persist_wal();
                v
            }
        };
        self.hs
            .votes
            .entry((round, kind))
            .or_default()
            .entry(self.me)
            .or_insert_with(|| vote.clone());
        self.outputs
            .push_back(Output::Broadcast(Message::Vote(vote)));
    }

    fn is_valid(&mut self, hash: &Hash) -> bool {
        if let Some(v) = self.hs.validity.get(hash) {
            return *v;
        }
        let Some(block) = self.hs.blocks.get(hash).cloned() else {
            return false;
        };
        let ok = self.app.check(&block).is_ok();
        self.hs.validity.insert(*hash, ok);
        ok
    }

    /// Weight per value of (round, kind), and the weight of all voters.
    fn tally(&self, round: u32, kind: VoteKind) -> (BTreeMap<Option<Hash>, u128>, u128) {
        let mut per_value: BTreeMap<Option<Hash>, u128> = BTreeMap::new();
        let mut all = 0;
        if let Some(votes) = self.hs.votes.get(&(round, kind)) {
            for (voter, v) in votes {
                let w = self.committee.weight_of([*voter]);
                *per_value.entry(v.block).or_default() += w;
                all += w;
            }
        }
        (per_value, all)
    }

    /// A certificate of more than two thirds of prevotes (or precommits) for `hash` in `round`, if known.
    fn certificate(
        &mut self,
        round: u32,
        kind: VoteKind,
        hash: Hash,
    ) -> Option<QuorumCertificate<S>> {
        if kind == VoteKind::Prevote
            && let Some(qc) = self.hs.polkas.get(&(round, hash))
        {
            return Some(qc.clone());
        }
        let votes: Vec<&Vote<S>> = self
            .hs
            .votes
            .get(&(round, kind))?
            .values()
            .filter(|v| v.block == Some(hash))
            .collect();
        let weight = self.committee.weight_of(votes.iter().map(|v| v.voter));
        if !self.committee.is_quorum(weight) {
            return None;
        }
        let qc = QuorumCertificate::aggregate(&self.committee, &votes, hash)?;
        if kind == VoteKind::Prevote {
            self.hs.polkas.insert((round, hash), qc.clone());
        }
        Some(qc)
    }

    /// Applies the protocol's rules until none applies.
    fn progress(&mut self) {
        for _ in 0..1000 {
            let changed = self.try_decide()
                || self.try_skip_round()
                || self.try_prevote()
                || self.try_lock()
                || self.try_precommit_nil()
                || self.try_vote_timers();
            if !changed {
                return;
            }
        }
        unreachable!("each rule fires at most once per round and step, so progress terminates")
    }

    fn try_decide(&mut self) -> bool {
        let rounds: Vec<u32> = self
            .hs
            .votes
            .keys()
            .filter(|(_, k)| *k == VoteKind::Precommit)
            .map(|(r, _)| *r)
            .collect();
        for round in rounds {
            let (per_value, _) = self.tally(round, VoteKind::Precommit);
            let decided = per_value
                .into_iter()
                .find_map(|(v, w)| v.filter(|_| self.committee.is_quorum(w)));
            let Some(hash) = decided else { continue };
            if !self.hs.blocks.contains_key(&hash) || !self.is_valid(&hash) {
                continue;
            }
            if let Some(qc) = self.certificate(round, VoteKind::Precommit, hash) {
                let block = self.hs.blocks[&hash].clone();
                return self.commit(block, qc);
            }
        }
        false
    }

    fn try_skip_round(&mut self) -> bool {
        let round = self.hs.round;
        let mut voters: BTreeMap<u32, BTreeSet<MemberIndex>> = BTreeMap::new();
        for ((r, _), votes) in self.hs.votes.range((round + 1, VoteKind::Prevote)..) {
            voters.entry(*r).or_default().extend(votes.keys().copied());
        }
        let target = voters.into_iter().rev().find(|(_, who)| {
            self.committee
                .is_one_third(self.committee.weight_of(who.iter().copied()))
        });
        match target {
            Some((r, _)) => {
                self.enter_round(r);
                true
            }
            None => false,
        }
    }

    fn try_prevote(&mut self) -> bool {
        if self.hs.step != Step::Propose {
            return false;
        }
        let round = self.hs.round;
        let Some(&(hash, valid_round)) = self.hs.proposals.get(&round) else {
            return false;
        };
        let acceptable = match valid_round {
            None => self
                .hs
                .locked
                .as_ref()
                .is_none_or(|(_, b)| b.hash() == hash),
            Some(vr) => {
                if self.certificate(vr, VoteKind::Prevote, hash).is_none() {
                    return false; // Wait for the certificate or the propose timeout.
                }
                self.hs
                    .locked
                    .as_ref()
                    .is_none_or(|(lr, b)| *lr <= vr || b.hash() == hash)
            }
        };
        let vote = (acceptable && self.is_valid(&hash)).then_some(hash);
        self.vote(VoteKind::Prevote, vote);
        self.hs.step = Step::Prevote;
        true
    }

    fn try_lock(&mut self) -> bool {
        let round = self.hs.round;
        if self.hs.step == Step::Propose || self.hs.polka_handled.contains(&round) {
            return false;
        }
        let Some(&(hash, _)) = self.hs.proposals.get(&round) else {
            return false;
        };
        let Some(qc) = self.certificate(round, VoteKind::Prevote, hash) else {
            return false;
        };
        if !self.is_valid(&hash) {
            return false;
        }
        self.hs.polka_handled.insert(round);
        let block = self.hs.blocks[&hash].clone();
        if self.hs.step == Step::Prevote {
            self.hs.locked = Some((round, block.clone()));
            self.hs.valid = Some((round, block, qc));
            self.vote(VoteKind::Precommit, Some(hash));
            self.hs.step = Step::Precommit;
        } else {
            self.hs.valid = Some((round, block, qc));
            self.persist_wal();
        }
        true
    }

    fn try_precommit_nil(&mut self) -> bool {
        if self.hs.step != Step::Prevote {
            return false;
        }
        let (per_value, _) = self.tally(self.hs.round, VoteKind::Prevote);
        if per_value
            .get(&None)
            .is_some_and(|w| self.committee.is_quorum(*w))
        {
            self.vote(VoteKind::Precommit, None);
            self.hs.step = Step::Precommit;
            return true;
        }
        false
    }

    fn try_vote_timers(&mut self) -> bool {
        let (round, height) = (self.hs.round, self.height);
        if self.hs.step == Step::Prevote && !self.hs.prevote_timer.contains(&round) {
            let (_, all) = self.tally(round, VoteKind::Prevote);
            if self.committee.is_quorum(all) {
                self.hs.prevote_timer.insert(round);
                self.schedule(
                    self.timeout(self.config.timeout_vote_ms, round),
                    Timer::Prevote { height, round },
                );
                return true;
            }
        }
        if !self.hs.precommit_timer.contains(&round) {
            let (_, all) = self.tally(round, VoteKind::Precommit);
            if self.committee.is_quorum(all) {
                self.hs.precommit_timer.insert(round);
                let after = self.timeout(self.config.timeout_vote_ms, round);
                self.schedule(after, Timer::Precommit { height, round });
                return true;
            }
        }
        false
    }

    /// Finalises `block` at the current height. The certificate is checked again here, on use.
    fn commit(&mut self, block: Arc<Block>, certificate: QuorumCertificate<S>) -> bool {
        let good = certificate.kind == VoteKind::Precommit
            && certificate.height == self.height
            && certificate.shard == self.config.shard
            && certificate.block == block.hash()
            && certificate
                .verify(self.config.chain_id, &self.committee)
                .is_ok();
        if !good || self.app.commit(&block, certificate.encode()).is_err() {
            return false;
        }
        self.outputs.push_back(Output::Committed {
            height: self.height,
            block: block.clone(),
            certificate: certificate.clone(),
        });
        self.outputs
            .push_back(Output::Broadcast(Message::Decided { block, certificate }));
        self.height += 1;
        self.hs = HeightState::default();
        self.timers.retain(|(_, t)| matches!(t, Timer::Rebroadcast));
        self.waiting = true;
        self.persist_wal();
        self.schedule(
            self.config.commit_wait_ms,
            Timer::NewHeight {
                height: self.height,
            },
        );
        self.future_bytes = 0;
        self.future_per_signer.clear();
        for (from, message) in std::mem::take(&mut self.future) {
            self.on_message(from, message);
        }
        true
    }

    // ----- incoming messages -----

    fn on_message(&mut self, from: MemberIndex, message: Message<S>) {
        match message {
            Message::Status {
                shard,
                height,
                round,
            } => {
                if shard == self.config.shard {
                    self.on_status(from, height, round);
                }
            }
            Message::Proposal(p) if p.height == self.height + 1 => {
                self.keep_for_later(from, Message::Proposal(p))
            }
            Message::Vote(v) if v.height == self.height + 1 => {
                self.keep_for_later(from, Message::Vote(v))
            }
            Message::Proposal(p) => self.on_proposal(p),
            Message::Vote(v) => self.on_vote(v),
            Message::Decided { block, certificate } => self.on_decided(block, certificate),
            Message::Polka { block, certificate } => self.on_polka(block, certificate),
        }
    }

    /// Keeps a proposal or vote of the next height for when this replica gets there, if it is signed by the
    /// member it names (the proposer of its round, for a proposal), in the round window, and within the
    /// bounds: count, bytes, and a member's share per signer. Anything else is dropped: a peer with no keys
    /// cannot fill the buffer, and a member only its share. (The next height's committee is this one within
    /// an epoch; messages of a new epoch's committee fail the check here and are re-sent by their senders.)
    fn keep_for_later(&mut self, from: MemberIndex, message: Message<S>) {
        let next = self.height + 1;
        let shard = self.config.shard;
        let (signer, bytes) = match &message {
            Message::Proposal(p) => {
                if p.shard != shard
                    || p.round > self.config.round_window
                    || p.proposer != self.committee.proposer(shard, next, p.round)
                    || p.block.header.height != next
                    || p.block.header.shard != shard
                    || !p.block.body_matches_header()
                    || !p.verify_signature(self.config.chain_id, &self.committee)
                {
                    return;
                }
                (p.proposer, p.block.encode().len())
            }
            Message::Vote(v) => {
                if v.shard != shard
                    || v.round > self.config.round_window
                    || !v.verify(self.config.chain_id, &self.committee)
                {
                    return;
                }
                (v.voter, FUTURE_VOTE_BYTES)
            }
            _ => return,
        };
        let per_signer = (self.config.future_messages_max / self.committee.len()).max(4);
        let count = self.future_per_signer.entry(signer).or_default();
        if self.future.len() >= self.config.future_messages_max
            || *count >= per_signer
            || self.future_bytes.saturating_add(bytes) > self.config.future_bytes_max
        {
            return;
        }
        *count += 1;
        self.future_bytes += bytes;
        self.future.push((from, message));
    }

    fn on_status(&mut self, from: MemberIndex, height: u64, round: u32) {
        if height == self.height && round < self.hs.round {
            // The peer is behind in rounds: send it this member's votes of the rounds it has not finished,
            // which others may no longer re-send (they re-send only their current round).
            let end = self
                .hs
                .round
                .min(round.saturating_add(self.config.round_window));
            let votes: Vec<Vote<S>> = self
                .hs
                .sent
                .range((round, VoteKind::Prevote)..(end, VoteKind::Prevote))
                .map(|(_, v)| v.clone())
                .collect();
            for v in votes {
                self.outputs.push_back(Output::Send {
                    to: from,
                    message: Message::Vote(v),
                });
            }
            return;
        }
        let end = self
            .height
            .min(height.saturating_add(self.config.catch_up_blocks_max));
        for h in height.max(1)..end {
            let Some((block, cert)) = self.app.committed(h) else {
                break;
            };
            let Ok(certificate) = QuorumCertificate::decode(&cert) else {
                break;
            };
            let message = Message::Decided {
                block: Arc::new(block),
                certificate,
            };
            self.outputs.push_back(Output::Send { to: from, message });
        }
    }

    fn in_window(&self, shard: ShardId, height: u64, round: u32) -> bool {
        shard == self.config.shard
            && height == self.height
            && round <= self.hs.round.saturating_add(self.config.round_window)
    }

    fn on_proposal(&mut self, p: Proposal<S>) {
        if !self.in_window(p.shard, p.height, p.round)
            || p.proposer != self.committee.proposer(p.shard, p.height, p.round)
            || p.block.header.height != p.height
            || p.block.header.shard != p.shard
            || p.valid_round.is_some_and(|vr| vr >= p.round)
        {
            return;
        }
        let hash = p.block.hash();
        if let Some(first) = self.hs.proposal_headers.get(&p.round) {
            if first.block != hash && p.verify_signature(self.config.chain_id, &self.committee) {
                let evidence = Evidence::DoubleProposal(first.clone(), p.signed_header());
                self.outputs.push_back(Output::Evidence(evidence));
            }
            return;
        }
        // A body changed in flight keeps the header's hash and signature: refused before the round's
        // proposal is recorded, so the real one still counts when it arrives.
        if !p.block.body_matches_header()
            || !p.verify_signature(self.config.chain_id, &self.committee)
        {
            return;
        }
        if let (Some(vr), Some(qc)) = (p.valid_round, &p.polka) {
            let matches = qc.kind == VoteKind::Prevote
                && qc.round == vr
                && qc.height == p.height
                && qc.shard == p.shard
                && qc.block == hash;
            if !matches || qc.verify(self.config.chain_id, &self.committee).is_err() {
                return;
            }
            self.hs.polkas.insert((vr, hash), qc.clone());
        }
        self.hs.blocks.insert(hash, p.block.clone());
        self.hs.proposals.insert(p.round, (hash, p.valid_round));
        self.hs.proposal_headers.insert(p.round, p.signed_header());
    }

    fn on_vote(&mut self, v: Vote<S>) {
        if !self.in_window(v.shard, v.height, v.round)
            || usize::from(v.voter) >= self.committee.len()
        {
            return;
        }
        if let Some(existing) = self
            .hs
            .votes
            .get(&(v.round, v.kind))
            .and_then(|m| m.get(&v.voter))
        {
            if existing.block != v.block && v.verify(self.config.chain_id, &self.committee) {
                let evidence = Evidence::DoubleVote(existing.clone(), v);
                self.outputs.push_back(Output::Evidence(evidence));
            }
            return;
        }
        if !v.verify(self.config.chain_id, &self.committee) {
            return;
        }
        self.hs
            .votes
            .entry((v.round, v.kind))
            .or_default()
            .insert(v.voter, v);
    }

    /// Adopts a newer valid block (prevote quorum in an earlier round of this height) learnt from a peer.
    fn on_polka(&mut self, block: Arc<Block>, qc: QuorumCertificate<S>) {
        let hash = block.hash();
        let newer = self
            .hs
            .valid
            .as_ref()
            .is_none_or(|(vr, _, _)| qc.round > *vr);
        let fits = qc.kind == VoteKind::Prevote
            && qc.shard == self.config.shard
            && qc.height == self.height
            && block.header.height == self.height
            && qc.block == hash
            && qc.round < self.hs.round
            && block.body_matches_header();
        if !newer || !fits || qc.verify(self.config.chain_id, &self.committee).is_err() {
            return;
        }
        self.hs.blocks.insert(hash, block.clone());
        if !self.is_valid(&hash) {
            return;
        }
        self.hs.polkas.insert((qc.round, hash), qc.clone());
        self.hs.valid = Some((qc.round, block, qc));
        self.persist_wal();
    }

    fn on_decided(&mut self, block: Arc<Block>, certificate: QuorumCertificate<S>) {
        if block.header.height != self.height || block.header.shard != self.config.shard {
            return;
        }
        let hash = block.hash();
        let fits = certificate.block == hash
            && certificate.kind == VoteKind::Precommit
            && certificate.height == self.height
            && certificate.shard == self.config.shard
            && block.body_matches_header();
        // Verified on arrival, before the block is kept or executed, so forged certificates cost a peer
        // nothing but one signature check here; `commit` verifies it again before use.
        if !fits
            || certificate
                .verify(self.config.chain_id, &self.committee)
                .is_err()
        {
            return;
        }
        self.hs.blocks.insert(hash, block.clone());
        // Finalised by the committee: checked as such (not through the proposal-time verdict, which may
        // have been refused for something only the committee's majority could check then).
        if self.app.check_finalised(&block).is_ok() {
            self.hs.validity.insert(hash, true);
            self.commit(block, certificate);
        }
    }

    // ----- the consensus log -----

    fn persist_wal(&mut self) {
        let mut w = Writer::new();
        w.u8(WAL_VERSION).u64(self.height).u32(self.hs.round);
        w.u8(match self.hs.step {
            Step::Propose => 0,
            Step::Prevote => 1,
            Step::Precommit => 2,
        });
        match &self.hs.locked {
            Some((r, b)) => w.bool(true).u32(*r).var(&b.encode()),
            None => w.bool(false),
        };
        match &self.hs.valid {
            Some((r, b, qc)) => w.bool(true).u32(*r).var(&b.encode()).var(&qc.encode()),
            None => w.bool(false),
        };
        w.u32(self.hs.sent.len() as u32);
        for v in self.hs.sent.values() {
            w.u32(v.round).bool(v.kind == VoteKind::Precommit);
            match &v.block {
                Some(h) => w.bool(true).fixed(h),
                None => w.bool(false),
            };
        }
        w.u32(self.hs.my_proposals.len() as u32);
        for p in self.hs.my_proposals.values() {
            w.u32(p.round).var(&p.block.encode());
            match p.valid_round {
                Some(r) => w.bool(true).u32(r),
                None => w.bool(false),
            };
        }
        let mut batch = WriteBatch::default();
        batch.put(KEY_WAL, w.finish());
        // A replica must never send what it could not record: on a failed write it halts, dropping the
        // outputs not yet taken, and the driver sees `halted()` and stops it.
        if let Err(e) = self.app.store().write(batch) {
            self.halted = Some(e);
            self.outputs.clear();
            self.timers.clear();
        }
    }

    /// The store error that stopped this replica, if one did. A halted replica ignores every input.
    pub fn halted(&self) -> Option<&StoreError> {
        self.halted.as_ref()
    }

    fn load_wal(&mut self) -> Result<(), ReplicaError> {
        let Some(bytes) = self.app.store_ref().get(KEY_WAL)? else {
            return Ok(());
        };
        let mut r = Reader::new(&bytes);
        let version = r.u8()?;
        if version != WAL_VERSION {
            return Err(DecodeError::UnknownVersion(version).into());
        }
        let height = r.u64()?;
        if height != self.height {
            // The log is of a height already committed: nothing of it matters any more.
            return Ok(());
        }
        let block = |r: &mut Reader<'_>| -> Result<Arc<Block>, DecodeError> {
            Ok(Arc::new(Block::decode(r.var("block", 1 << 24)?)?))
        };
        let hs = &mut self.hs;
        hs.round = r.u32()?;
        hs.step = match r.u8()? {
            0 => Step::Propose,
            1 => Step::Prevote,
            2 => Step::Precommit,
            tag => return Err(DecodeError::UnknownTag { what: "step", tag }.into()),
        };
        if r.bool()? {
            let round = r.u32()?;
            hs.locked = Some((round, block(&mut r)?));
        }
        if r.bool()? {
            let round = r.u32()?;
            let b = block(&mut r)?;
            let qc = QuorumCertificate::decode(r.var("certificate", 1 << 16)?)?;
            hs.valid = Some((round, b, qc));
        }
        let c = &self.config;
        for _ in 0..r.count("sent votes", 1 << 16, 6)? {
            let round = r.u32()?;
            let kind = if r.bool()? {
                VoteKind::Precommit
            } else {
                VoteKind::Prevote
            };
            let value = if r.bool()? { Some(r.array()?) } else { None };
            let vote = Vote::sign(
                c.chain_id,
                c.shard,
                kind,
                height,
                round,
                value,
                self.me,
                &self.secret,
            );
            hs.sent.insert((round, kind), vote);
        }
        for _ in 0..r.count("proposals", 1 << 16, 9)? {
            let round = r.u32()?;
            let b = block(&mut r)?;
            let valid_round = if r.bool()? { Some(r.u32()?) } else { None };
            let polka = match (&hs.valid, valid_round) {
                (Some((vr, vb, qc)), Some(r)) if *vr == r && vb.hash() == b.hash() => {
                    Some(qc.clone())
                }
                _ => None,
            };
            let p = Proposal::sign(
                c.chain_id,
                c.shard,
                height,
                round,
                b,
                valid_round,
                polka,
                self.me,
                &self.secret,
            );
            hs.my_proposals.insert(round, p);
        }
        r.finish()?;
        for b in hs
            .locked
            .iter()
            .map(|(_, b)| b)
            .chain(hs.valid.iter().map(|(_, b, _)| b))
        {
            hs.blocks.insert(b.hash(), b.clone());
        }
        if let Some((vr, b, qc)) = &hs.valid {
            hs.polkas.insert((*vr, b.hash()), qc.clone());
        }
        for v in hs.sent.values() {
            hs.votes
                .entry((v.round, v.kind))
                .or_default()
                .insert(self.me, v.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
