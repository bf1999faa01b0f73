//! Catch-up over request-response: which peer a validator behind asks for finalised blocks, and how much a
//! validator serves to whom. Both sides are protocol decisions, so they live here with the node's logic, in
//! milliseconds of the caller's clock, with no clock, randomness or unordered iteration of their own.
//!
//! A peer is named by what the driver knows it by: the libp2p `PeerId` of the connection a message came in
//! on (authenticated by the transport), never by anything inside a message. A gossiped `Status` only tells
//! this validator that a peer claims a height (and round); nothing is published in answer to it. The asker
//! ([`CatchUp`]) asks one peer at a time per chain for blocks, and a peer that answers junk, too many bytes
//! or nothing is put aside and the next one asked; at the height being decided, a peer that says it is in a
//! later round is asked for its votes of the rounds this validator has not finished (at most one such ask
//! per chain in flight, and one per [`VOTE_ASK_EVERY_MS`]). The server ([`ServeBudget`]) answers a peer at most [`SERVE_BURST`] requests at
//! once and one per [`SERVE_REFILL_MS`] after that, and all peers together at most
//! [`SERVE_BLOCKS_PER_SECOND`] blocks and [`SERVE_BYTES_PER_SECOND`] bytes a second, since peer ids cost
//! nothing to make.

use std::collections::BTreeMap;

use crate::ShardId;

use super::wire::BlocksRequest;

/// A peer as the driver names it: the bytes of its libp2p `PeerId` (the simulator uses any bytes). It comes
/// from the transport, so a peer cannot speak as another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer(pub Vec<u8>);

/// Peers whose claimed heights are remembered, over both chains; past this the one heard from longest ago
/// is forgotten (honest members announce their height every few hundred milliseconds).
pub const KNOWN_PEERS_MAX: usize = 128;
/// A peer not heard from for this long is not asked.
pub const PEER_STALE_MS: u64 = 10_000;
/// An ask with no answer by then counts as failed (the driver's own request timeout is shorter).
pub const ASK_TIMEOUT_MS: u64 = 6_000;
/// A peer that answered junk (undecodable, over the byte limit, blocks not following on from the asked
/// height, or blocks the chain refuses) is not asked again for this long.
pub const JUNK_BAN_MS: u64 = 60_000;
/// A peer that was busy, answered no block, or could not be reached, is not asked again for this long.
pub const BACKOFF_MS: u64 = 2_000;
/// Votes are asked for at most this often per chain (the pace at which members re-send their own round's
/// messages).
pub const VOTE_ASK_EVERY_MS: u64 = 250;

/// Requests a server answers from one peer at once, before the refill pace applies.
pub const SERVE_BURST: u32 = 4;
/// A peer gets one more request answered per this many milliseconds (4 a second).
pub const SERVE_REFILL_MS: u64 = 250;
/// Blocks a server sends a second to all peers together.
pub const SERVE_BLOCKS_PER_SECOND: usize = 512;
/// Bytes of blocks a server sends a second to all peers together.
pub const SERVE_BYTES_PER_SECOND: usize = 64 << 20;
/// Peers whose request budgets are remembered; past this, full budgets (which equal a new peer's) are
/// forgotten first, then the oldest.
pub const SERVE_PEERS_MAX: usize = 1024;

/// One ask in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub id: u64,
    pub peer: Peer,
    pub request: BlocksRequest,
    pub deadline: u64,
}

impl Ask {
    pub fn shard(&self) -> ShardId {
        self.request.shard()
    }

    fn is_votes(&self) -> bool {
        matches!(self.request, BlocksRequest::Votes { .. })
    }
}

#[derive(Debug, Clone)]
struct Known {
    height: u64,
    seen_ms: u64,
    /// Not asked before this time (a ban or a back-off).
    not_before: u64,
    /// When it was last asked: among peers alike, the one asked longest ago (or never) goes first, which
    /// spreads the load.
    asked_ms: Option<u64>,
    /// Whether it ever answered blocks this validator applied: such peers go before the others, so that
    /// peer ids that only claim heights (and answer slowly or never) cannot keep a validator waiting on
    /// each of them in turn once an honest peer has served it.
    served: bool,
}

/// The asking side: the heights peers claim per chain, the asks in flight (one per chain) and who is set
/// aside.
#[derive(Debug, Default)]
pub struct CatchUp {
    known: BTreeMap<(ShardId, Peer), Known>,
    asks: BTreeMap<u64, Ask>,
    next_id: u64,
    /// When votes were last asked for, per chain.
    votes_asked: BTreeMap<ShardId, u64>,
}

impl CatchUp {
    /// Peer `peer` says it is deciding `height` of `shard` (so holds the blocks below it).
    pub fn heard(&mut self, now_ms: u64, shard: ShardId, peer: Peer, height: u64) {
        let key = (shard, peer);
        if let Some(k) = self.known.get_mut(&key) {
            k.height = height;
            k.seen_ms = now_ms;
            return;
        }
        if self.known.len() >= KNOWN_PEERS_MAX {
            let busy: Vec<&(ShardId, Peer)> = self
                .asks
                .values()
                .map(|a| (a.shard(), a.peer.clone()))
                .filter_map(|k| self.known.get_key_value(&k).map(|(k, _)| k))
                .collect();
            let oldest = self
                .known
                .iter()
                .filter(|(k, _)| !busy.contains(k))
                .min_by_key(|(_, v)| v.seen_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.known.remove(&k);
                }
                None => return,
            }
        }
        self.known.insert(
            key,
            Known {
                height,
                seen_ms: now_ms,
                not_before: 0,
                asked_ms: None,
                served: false,
            },
        );
    }

    /// The ask to make now for `shard`, whose next needed height is `need`, if one is due: none in flight
    /// for that chain, and a peer heard recently claiming to be past `need` and not set aside.
    pub fn next_ask(&mut self, now_ms: u64, shard: ShardId, need: u64) -> Option<Ask> {
        self.expire(now_ms);
        if self
            .asks
            .values()
            .any(|a| a.shard() == shard && !a.is_votes())
        {
            return None;
        }
        let peer = self
            .known
            .range((shard, Peer(Vec::new()))..)
            .take_while(|((s, _), _)| *s == shard)
            .filter(|(_, k)| {
                k.height > need
                    && k.not_before <= now_ms
                    && now_ms.saturating_sub(k.seen_ms) <= PEER_STALE_MS
            })
            .min_by_key(|(_, k)| (!k.served, k.asked_ms))
            .map(|((_, p), _)| p.clone())?;
        if let Some(k) = self.known.get_mut(&(shard, peer.clone())) {
            k.asked_ms = Some(now_ms);
        }
        Some(self.make(now_ms, peer, BlocksRequest::Blocks { shard, from: need }))
    }

    /// The ask to make now of `peer`, which says it is in round `theirs` of `height` of `shard`, the height
    /// this validator decides in round `round`: its votes of the rounds from `round` on, if `theirs` is
    /// later, no votes ask of that chain is in flight, none was made in the last [`VOTE_ASK_EVERY_MS`] and
    /// the peer is not set aside.
    pub fn votes_ask(
        &mut self,
        now_ms: u64,
        shard: ShardId,
        peer: Peer,
        height: u64,
        (round, theirs): (u32, u32),
    ) -> Option<Ask> {
        self.expire(now_ms);
        let recent = self
            .votes_asked
            .get(&shard)
            .is_some_and(|at| now_ms < at.saturating_add(VOTE_ASK_EVERY_MS));
        let aside = self
            .known
            .get(&(shard, peer.clone()))
            .is_some_and(|k| k.not_before > now_ms);
        if theirs <= round
            || recent
            || aside
            || self
                .asks
                .values()
                .any(|a| a.shard() == shard && a.is_votes())
        {
            return None;
        }
        self.votes_asked.insert(shard, now_ms);
        let request = BlocksRequest::Votes {
            shard,
            height,
            round,
        };
        Some(self.make(now_ms, peer, request))
    }

    fn make(&mut self, now_ms: u64, peer: Peer, request: BlocksRequest) -> Ask {
        self.next_id += 1;
        let ask = Ask {
            id: self.next_id,
            peer,
            request,
            deadline: now_ms.saturating_add(ASK_TIMEOUT_MS),
        };
        self.asks.insert(ask.id, ask.clone());
        ask
    }

    /// The ask `id` made to `peer`, taken off the in-flight list (`None`: not ours, or not that peer's).
    pub fn answered(&mut self, id: u64, peer: &Peer) -> Option<Ask> {
        if self.asks.get(&id).is_none_or(|a| a.peer != *peer) {
            return None;
        }
        self.asks.remove(&id)
    }

    /// Records that `peer` answered blocks of `shard` that this validator applied.
    pub fn served(&mut self, shard: ShardId, peer: &Peer) {
        if let Some(k) = self.known.get_mut(&(shard, peer.clone())) {
            k.served = true;
        }
    }

    /// Sets `peer` aside on `shard` until `until`.
    pub fn set_aside(&mut self, shard: ShardId, peer: &Peer, until: u64) {
        if let Some(k) = self.known.get_mut(&(shard, peer.clone())) {
            k.not_before = k.not_before.max(until);
        }
    }

    /// When the earliest ask in flight times out.
    pub fn next_deadline(&self) -> Option<u64> {
        self.asks.values().map(|a| a.deadline).min()
    }

    /// Asks in flight.
    pub fn in_flight(&self) -> usize {
        self.asks.len()
    }

    /// Peers whose claims are remembered.
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// Asks past their deadline fail: their peers are set aside for [`BACKOFF_MS`].
    fn expire(&mut self, now_ms: u64) {
        let late: Vec<u64> = self
            .asks
            .values()
            .filter(|a| a.deadline <= now_ms)
            .map(|a| a.id)
            .collect();
        for id in late {
            if let Some(a) = self.asks.remove(&id) {
                self.set_aside(a.shard(), &a.peer, now_ms.saturating_add(BACKOFF_MS));
            }
        }
    }
}

/// A peer's request budget: a token bucket of [`SERVE_BURST`] requests refilled one per
/// [`SERVE_REFILL_MS`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// The time the bucket was last refilled up to.
    at: u64,
}

/// The serving side: what each peer may still ask, and what all peers together got this second.
#[derive(Debug, Default)]
pub struct ServeBudget {
    peers: BTreeMap<Peer, Bucket>,
    second: u64,
    blocks: usize,
    bytes: usize,
}

impl ServeBudget {
    /// Whether a request of `peer` at `now_ms` is answered with blocks (it takes one of the peer's tokens),
    /// or `None` if the peer is over its budget; if answered, how many blocks and bytes it may get at most
    /// (what is left of this second's budget for all peers).
    pub fn admit(&mut self, now_ms: u64, peer: &Peer) -> Option<(usize, usize)> {
        let second = now_ms / 1_000;
        if second != self.second {
            self.second = second;
            self.blocks = 0;
            self.bytes = 0;
        }
        let blocks_left = SERVE_BLOCKS_PER_SECOND.saturating_sub(self.blocks);
        let bytes_left = SERVE_BYTES_PER_SECOND.saturating_sub(self.bytes);
        if blocks_left == 0 || bytes_left == 0 {
            return None;
        }
        if !self.peers.contains_key(peer) && self.peers.len() >= SERVE_PEERS_MAX {
            self.forget(now_ms);
        }
        let bucket = self.peers.entry(peer.clone()).or_insert(Bucket {
            tokens: SERVE_BURST,
            at: now_ms,
        });
        refill(bucket, now_ms);
        if bucket.tokens == 0 {
            return None;
        }
        bucket.tokens -= 1;
        Some((blocks_left, bytes_left))
    }

    /// Counts what an answer carried against this second's budget.
    pub fn spent(&mut self, blocks: usize, bytes: usize) {
        self.blocks = self.blocks.saturating_add(blocks);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Peers whose budgets are remembered.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Makes room for one more peer: budgets that refilled (the same as a new peer's) go first, then the
    /// least recently refilled one.
    fn forget(&mut self, now_ms: u64) {
        self.peers.retain(|_, b| {
            refill(b, now_ms);
            b.tokens < SERVE_BURST
        });
        if self.peers.len() >= SERVE_PEERS_MAX
            && let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(p, _)| p.clone())
        {
            self.peers.remove(&oldest);
        }
    }
}

fn refill(bucket: &mut Bucket, now_ms: u64) {
    let elapsed = now_ms.saturating_sub(bucket.at);
    let earned = elapsed / SERVE_REFILL_MS;
    let tokens = u64::from(bucket.tokens).saturating_add(earned);
    if tokens >= u64::from(SERVE_BURST) {
        bucket.tokens = SERVE_BURST;
        bucket.at = now_ms;
    } else {
        // `tokens < SERVE_BURST` here, so it fits.
        bucket.tokens = u32::try_from(tokens).unwrap_or(SERVE_BURST);
        bucket.at = bucket.at.saturating_add(earned * SERVE_REFILL_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u64) -> Peer {
        Peer(i.to_be_bytes().to_vec())
    }

    #[test]
    fn one_ask_per_chain_to_a_peer_past_the_height_spread_over_peers_and_set_aside_on_failure() {
        let mut c = CatchUp::default();
        assert_eq!(c.next_ask(0, ShardId(1), 5), None, "nobody claims anything");
        c.heard(0, ShardId(1), peer(1), 5);
        assert_eq!(
            c.next_ask(0, ShardId(1), 5),
            None,
            "not past the height needed"
        );
        c.heard(0, ShardId(1), peer(1), 9);
        c.heard(0, ShardId(1), peer(2), 9);
        c.heard(0, ShardId(2), peer(3), 100);
        let a = c.next_ask(10, ShardId(1), 5).expect("an ask");
        assert_eq!(
            (a.request, a.peer.clone()),
            (
                BlocksRequest::Blocks {
                    shard: ShardId(1),
                    from: 5
                },
                peer(1)
            )
        );
        assert_eq!(
            c.next_ask(10, ShardId(1), 5),
            None,
            "one ask per chain in flight"
        );
        let b = c
            .next_ask(10, ShardId(2), 7)
            .expect("the other chain asks on its own");
        assert_eq!(b.peer, peer(3));
        assert_eq!(
            c.answered(a.id, &peer(2)),
            None,
            "only the asked peer answers"
        );
        assert_eq!(c.answered(a.id, &peer(1)), Some(a.clone()));
        assert_eq!(c.answered(a.id, &peer(1)), None, "an answer is taken once");
        // The next ask goes to the peer asked longest ago.
        let a2 = c.next_ask(20, ShardId(1), 6).expect("an ask");
        assert_eq!(a2.peer, peer(2));
        // A failed peer is set aside; the other is asked.
        c.answered(a2.id, &peer(2));
        c.set_aside(ShardId(1), &peer(2), 20 + JUNK_BAN_MS);
        assert_eq!(c.next_ask(30, ShardId(1), 6).map(|a| a.peer), Some(peer(1)));
        // An unanswered ask times out (the other chain's too), and its peer is set aside for a while.
        assert_eq!(c.next_ask(31, ShardId(1), 6), None);
        let late = 30 + ASK_TIMEOUT_MS;
        assert_eq!(c.next_ask(late, ShardId(1), 6), None, "both set aside");
        assert_eq!(c.in_flight(), 0, "both asks timed out");
        assert_eq!(c.next_ask(late + BACKOFF_MS - 1, ShardId(1), 6), None);
        assert_eq!(
            c.next_ask(late + BACKOFF_MS, ShardId(1), 6).map(|a| a.peer),
            Some(peer(1)),
            "back after its back-off"
        );
        // A peer that served blocks goes before peers that never did, however recently it was asked.
        let mut c = CatchUp::default();
        c.heard(0, ShardId(1), peer(1), 9);
        c.heard(0, ShardId(1), peer(2), 9);
        let first = c.next_ask(0, ShardId(1), 5).expect("an ask");
        c.answered(first.id, &first.peer);
        c.served(ShardId(1), &first.peer);
        c.heard(1, ShardId(1), peer(3), 9);
        assert_eq!(
            c.next_ask(1, ShardId(1), 6).map(|a| a.peer),
            Some(first.peer)
        );
        // Stale peers are not asked.
        let mut c = CatchUp::default();
        c.heard(0, ShardId(1), peer(1), 9);
        assert_eq!(c.next_ask(PEER_STALE_MS + 1, ShardId(1), 5), None);
    }

    #[test]
    fn votes_are_asked_of_a_peer_in_a_later_round_one_ask_at_a_time_and_not_too_often() {
        let mut c = CatchUp::default();
        assert_eq!(
            c.votes_ask(0, ShardId(1), peer(1), 5, (2, 2)),
            None,
            "not later"
        );
        let a = c
            .votes_ask(0, ShardId(1), peer(1), 5, (2, 3))
            .expect("an ask");
        assert_eq!(
            a.request,
            BlocksRequest::Votes {
                shard: ShardId(1),
                height: 5,
                round: 2
            }
        );
        // A blocks ask of the same chain is not held up by it.
        c.heard(0, ShardId(1), peer(2), 9);
        assert!(c.next_ask(0, ShardId(1), 5).is_some());
        assert_eq!(
            c.votes_ask(1, ShardId(1), peer(2), 5, (2, 9)),
            None,
            "one in flight"
        );
        c.answered(a.id, &peer(1));
        assert_eq!(
            c.votes_ask(VOTE_ASK_EVERY_MS - 1, ShardId(1), peer(2), 5, (2, 9)),
            None,
            "not too often"
        );
        assert!(
            c.votes_ask(VOTE_ASK_EVERY_MS, ShardId(1), peer(2), 5, (2, 9))
                .is_some()
        );
    }

    #[test]
    fn a_flood_of_claims_is_bounded_and_keeps_the_peer_being_asked() {
        let mut c = CatchUp::default();
        c.heard(0, ShardId(1), peer(0), 9);
        let a = c.next_ask(0, ShardId(1), 5).expect("an ask");
        for i in 1..10_000 {
            c.heard(i, ShardId(1), peer(i), u64::MAX);
        }
        assert!(c.known() <= KNOWN_PEERS_MAX);
        assert_eq!(c.answered(a.id, &peer(0)), Some(a));
    }

    #[test]
    fn a_peer_gets_its_burst_then_four_a_second_and_all_peers_share_a_bound() {
        let mut s = ServeBudget::default();
        let p = peer(1);
        // 1,000 requests in one second: the burst, then one per refill interval.
        let answered = (0..1_000u64).filter(|i| s.admit(*i, &p).is_some()).count();
        assert_eq!(answered, SERVE_BURST as usize + 3);
        // Another peer has its own budget.
        assert!(s.admit(999, &peer(2)).is_some());
        // A second of quiet refills it, never beyond the burst.
        let answered = (0..100u64).filter(|_| s.admit(5_000, &p).is_some()).count();
        assert_eq!(answered, SERVE_BURST as usize);
        // All peers together: at most this second's block budget.
        let mut s = ServeBudget::default();
        let mut blocks = 0;
        for i in 0..10_000u64 {
            if let Some((left, _)) = s.admit(7_000, &peer(i)) {
                let n = left.min(32);
                s.spent(n, 0);
                blocks += n;
            }
        }
        assert_eq!(blocks, SERVE_BLOCKS_PER_SECOND);
        assert!(s.len() <= SERVE_PEERS_MAX);
        // The table stays bounded under a stream of new peer ids, and never refuses a new peer for it.
        for i in 0..5_000u64 {
            s.admit(8_000 + i, &peer(100_000 + i));
        }
        assert!(s.len() <= SERVE_PEERS_MAX);
        assert!(s.admit(20_000, &peer(7)).is_some());
    }
}
