//! A follower: a node that is not a member of a chain's committee but keeps that chain's ledger, by applying
//! finalised blocks and their precommit certificates. Validators follow the beacon chain (to know every
//! epoch's committees) and, before their turn, the shard they are seated on for a coming epoch, so that they
//! hold its state when the epoch begins (`specs/consensus.md` §4.6).
//!
//! It learns blocks from the `Decided` messages members broadcast on every commit, and asks for the ones it
//! misses with a `Status` from the index [`FOLLOWER`]: members' replicas answer it like a lagging member,
//! with up to `catch_up_blocks_max` finalised blocks. (The validator in `crate::node` does not publish that
//! `Status` and its replicas answer none with blocks: it fetches missing blocks over request-response,
//! `crate::node::catch_up`, and hands them to `on_decided` alike.) Each block is applied only in order, only with a precommit
//! certificate for exactly that block that verifies against the committee of its height (the driver says
//! which), and only if the ledger's own check of the block passes. Sans-IO like the replica.

use super::app::{App, LedgerError};
use super::{Committee, Message, QuorumCertificate, VoteScheme};
use crate::ids::{MemberIndex, ShardId};
use crate::types::block::Block;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The committee index followers use as `from` in their `Status`, and members' answers to them as `to`.
pub const FOLLOWER: MemberIndex = MemberIndex(u16::MAX);
/// Finalised blocks ahead of the follower's height it keeps until their turn.
const AHEAD_MAX: u64 = 64;

/// What a follower did with a block.
#[derive(Debug, Clone)]
pub enum Followed<S: VoteScheme> {
    /// Nothing: old, too far ahead, of another chain or with a certificate that does not verify.
    Ignored,
    /// Kept for later: it is ahead of the height, or its height's committee is not known yet.
    Kept,
    /// Committed, with every kept block it made applicable, in order, with their certificates.
    Committed(Vec<(Arc<Block>, QuorumCertificate<S>)>),
}

pub struct Follower<S: VoteScheme, A: App> {
    chain_id: u32,
    shard: ShardId,
    app: A,
    ahead: BTreeMap<u64, (Arc<Block>, QuorumCertificate<S>)>,
    ask_every_ms: u64,
    last_asked_ms: Option<u64>,
    progressed: bool,
}

impl<S: VoteScheme, A: App> Follower<S, A> {
    pub fn new(chain_id: u32, shard: ShardId, app: A, ask_every_ms: u64) -> Self {
        Self {
            chain_id,
            shard,
            app,
            ahead: BTreeMap::new(),
            ask_every_ms,
            last_asked_ms: None,
            progressed: false,
        }
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

    /// The next height it needs.
    pub fn height(&self) -> u64 {
        self.app.tip().height + 1
    }

    /// A finalised block with its certificate, from any peer. `committee_at(height)` is the committee that
    /// certifies `height` (`None`: not known yet). A store failure is returned: the ledger can no longer be
    /// trusted to persist, and the driver stops.
    pub fn on_decided(
        &mut self,
        block: Arc<Block>,
        certificate: QuorumCertificate<S>,
        committee_at: impl Fn(u64) -> Option<Committee<S>>,
    ) -> Result<Followed<S>, LedgerError> {
        let height = block.header.height;
        let next = self.height();
        let fits = block.header.shard == self.shard
            && block.header.chain_id == self.chain_id
            && certificate.finalises(&block.header)
            && block.body_matches_header();
        if !fits || height < next || height > next + AHEAD_MAX {
            return Ok(Followed::Ignored);
        }
        // Checked on arrival when the committee is known, so a forged certificate costs one check and
        // never displaces a good block.
        if let Some(committee) = committee_at(height)
            && certificate.verify(self.chain_id, &committee).is_err()
        {
            return Ok(Followed::Ignored);
        }
        self.ahead.insert(height, (block, certificate));
        let mut committed = Vec::new();
        loop {
            let next = self.height();
            self.ahead.retain(|h, _| *h >= next);
            let Some(entry) = self.ahead.first_entry() else {
                break;
            };
            let height = *entry.key();
            if height > next {
                break;
            }
            let Some(committee) = committee_at(height) else {
                break;
            };
            let (block, certificate) = entry.remove();
            if certificate.verify(self.chain_id, &committee).is_err()
                || self.app.check_finalised(&block).is_err()
            {
                // A certified block this ledger refuses: ask again, from another member.
                break;
            }
            self.app.commit(&block, certificate.encode())?;
            committed.push((block, certificate));
        }
        if committed.is_empty() {
            return Ok(Followed::Kept);
        }
        self.progressed = true;
        Ok(Followed::Committed(committed))
    }

    /// A `Status` to send (from [`FOLLOWER`]) if one is due: at the start, right after progress (to fetch
    /// the next blocks at once) and every `ask_every_ms`.
    pub fn poll_status(&mut self, now_ms: u64) -> Option<Message<S>> {
        let due = self.progressed
            || self
                .last_asked_ms
                .is_none_or(|at| now_ms >= at.saturating_add(self.ask_every_ms));
        if !due {
            return None;
        }
        self.progressed = false;
        self.last_asked_ms = Some(now_ms);
        Some(Message::Status {
            shard: self.shard,
            height: self.height(),
            round: 0,
        })
    }

    /// When the next `Status` is due.
    pub fn poll_timeout(&self) -> u64 {
        self.last_asked_ms
            .map_or(0, |at| at.saturating_add(self.ask_every_ms))
    }
}
