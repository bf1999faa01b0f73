//! The validator's schedule: when it relays Atomix locks again, how often a follower asks, which member
//! publishes a shard's head. (Catch-up's limits are in [`super::catch_up`].) These are protocol
//! decisions, so they live here with the node's logic, in milliseconds of the caller's clock (`now_ms`), and
//! use no clock, no randomness and no unordered iteration of their own: one sequence of inputs gives one
//! schedule, in the real node and in the simulator alike.

use crate::ids::MemberIndex;
use std::collections::{BTreeMap, BTreeSet};

use crate::ShardId;

/// A follower that made no progress asks members for blocks this often.
pub const FOLLOWER_ASK_EVERY_MS: u64 = 500;
/// Atomix relays: each committed height's locks are relayed at commit by every member, then again after 2,
/// 8, 32 and 128 s by one member (in turn by height), proven against the tip of the moment, since nothing
/// tells the input shard that the output shard committed them; output shards drop what they already
/// committed.
pub const RELAY_FIRST_RETRY_MS: u64 = 2_000;
/// Each retry waits this many times longer than the one before.
pub const RELAY_BACKOFF: u64 = 4;
/// Relays of one range of heights, the first (at commit) included.
pub const RELAY_ATTEMPTS: u32 = 5;
/// Relays waiting for their time; past this new ones are dropped (the API's `relay_lock` and the
/// relays at the next lane opening are the fallback).
pub const RELAYS_QUEUED_MAX: usize = 4096;
/// Heights whose locks a validator relays again when it opens a shard lane (after a restart), since the
/// retries it had planned before were in memory only.
pub const RELAY_ON_OPEN_HEIGHTS: u64 = 256;
/// Steps whose evidence a validator remembers having sent (then it starts over).
pub const EVIDENCE_SENT_MAX: usize = 4096;
/// A shard's head goes to the beacon topic every this many heights (from one member, in rotation): enough
/// for the beacon chain to link it and for other shards to follow it without a BLS check per block.
pub const HEAD_EVERY_BLOCKS: u64 = 8;
/// While the beacon chain's link of a shard lags its tip and the shard is held (see [`head_lags`]), every
/// member of the committee that certified the tip publishes the tip's head again this often. A head is
/// published once by one member at commit, every [`HEAD_EVERY_BLOCKS`] heights; without the repeats, one lost
/// head (or the crash of the one member whose turn it was) at an era's last height would hold the shard
/// there, and a shard whose committee stops between two heads would leave its last blocks unlinked. The
/// beacon chain redraws a shard's committee from its *linked* block when the link has not moved for a whole
/// epoch, so the link must reach the tip of a stalled shard before that: the repeats start as soon as the
/// link has not moved since the last draw, or the lane committed nothing for this long.
pub const HEAD_REPEAT_MS: u64 = 2_000;

/// Whether a shard whose tip is `tip`, and whose newest head the beacon chain linked is `linked`, needs its
/// head published again: the link lags by two head intervals, or it lags at all while the shard is held (its
/// link has not moved since the beacon's last draw, its lane is idle, or it waits at the end of its era). A
/// live shard's heads move its link every [`HEAD_EVERY_BLOCKS`] heights, so it repeats little.
pub fn head_lags(tip: u64, linked: u64, held: bool) -> bool {
    linked < tip && (held || linked.saturating_add(2 * HEAD_EVERY_BLOCKS) <= tip)
}

/// The beacon chain makes a block at most this often: its blocks carry the shards' heads, which come every
/// few hundred milliseconds, and an idle beacon should not cost what a busy shard does.
pub const BEACON_COMMIT_WAIT_MS: u64 = 500;

/// Whether member `me` of a committee of `members` publishes the head of `height` (every
/// [`HEAD_EVERY_BLOCKS`] heights, the members in turn).
pub fn head_duty(height: u64, members: usize, me: MemberIndex) -> bool {
    let members = members.max(1) as u64;
    height.is_multiple_of(HEAD_EVERY_BLOCKS)
        && (height / HEAD_EVERY_BLOCKS) % members == u64::from(me)
}

/// Whether member `me` of a committee of `members` retries the relays of `height` (one member per height,
/// in turn, so that a loaded chain does not carry a copy of every retry per member).
pub fn relay_retry_duty(height: u64, members: usize, me: MemberIndex) -> bool {
    height % (members.max(1) as u64) == u64::from(me)
}

/// One relay of the Atomix locks that a shard's heights `from..=to` made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    pub shard: ShardId,
    pub from: u64,
    pub to: u64,
    /// Attempts already made (0: this is the first).
    pub attempt: u32,
}

impl Relay {
    /// The attempt after this one and how long after this one it is due, if any is left.
    pub fn next(self) -> Option<(u64, Relay)> {
        if self.attempt + 1 >= RELAY_ATTEMPTS {
            return None;
        }
        let wait = RELAY_FIRST_RETRY_MS.saturating_mul(RELAY_BACKOFF.saturating_pow(self.attempt));
        Some((
            wait,
            Relay {
                attempt: self.attempt + 1,
                ..self
            },
        ))
    }
}

/// The relays waiting for their time, in due order (ties in the order they were planned).
#[derive(Debug, Default)]
pub struct RelaySchedule {
    due: BTreeMap<(u64, u64), Relay>,
    seq: u64,
}

impl RelaySchedule {
    /// Plans `relay` for `at` (ms); dropped when [`RELAYS_QUEUED_MAX`] are waiting.
    pub fn plan(&mut self, at: u64, relay: Relay) {
        if self.due.len() >= RELAYS_QUEUED_MAX {
            return;
        }
        self.seq += 1;
        self.due.insert((at, self.seq), relay);
    }

    /// The next relay due at or before `now_ms`, taken off the schedule.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Relay> {
        let entry = self.due.first_entry()?;
        if entry.key().0 > now_ms {
            return None;
        }
        Some(entry.remove())
    }

    /// When the earliest planned relay is due.
    pub fn next_due(&self) -> Option<u64> {
        self.due.first_key_value().map(|((at, _), _)| *at)
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// The steps (shard, height, round, offender) whose evidence a validator already sent to the beacon chain:
/// a member that signs many conflicting messages for one step is one fault, and its flood is not amplified.
#[derive(Debug, Default)]
pub struct EvidenceSent {
    sent: BTreeSet<(ShardId, u64, u32, MemberIndex)>,
}

impl EvidenceSent {
    /// Whether the evidence of `step` is new (and remembers it if so).
    pub fn first(&mut self, step: (ShardId, u64, u32, MemberIndex)) -> bool {
        if self.sent.contains(&step) {
            return false;
        }
        if self.sent.len() >= EVIDENCE_SENT_MAX {
            self.sent.clear();
        }
        self.sent.insert(step);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_retry_at_2_8_32_128_seconds_then_stop() {
        let mut relay = Relay {
            shard: ShardId(1),
            from: 5,
            to: 5,
            attempt: 0,
        };
        let mut waits = Vec::new();
        while let Some((wait, next)) = relay.next() {
            waits.push(wait);
            relay = next;
        }
        assert_eq!(waits, [2_000, 8_000, 32_000, 128_000]);
        assert_eq!(relay.attempt, RELAY_ATTEMPTS - 1);
    }

    #[test]
    fn the_schedule_releases_relays_in_due_order_and_is_bounded() {
        let mut s = RelaySchedule::default();
        let r = |from| Relay {
            shard: ShardId(0),
            from,
            to: from,
            attempt: 0,
        };
        s.plan(300, r(3));
        s.plan(100, r(1));
        s.plan(100, r(2));
        assert_eq!(s.next_due(), Some(100));
        assert_eq!(s.pop_due(99), None);
        assert_eq!(s.pop_due(100).map(|r| r.from), Some(1));
        assert_eq!(s.pop_due(100).map(|r| r.from), Some(2));
        assert_eq!(s.pop_due(299), None);
        assert_eq!(s.pop_due(1_000).map(|r| r.from), Some(3));
        for i in 0..RELAYS_QUEUED_MAX as u64 + 10 {
            s.plan(i, r(i));
        }
        assert_eq!(s.len(), RELAYS_QUEUED_MAX);
    }

    #[test]
    fn heads_and_relay_retries_rotate_over_the_members() {
        let heads: Vec<u16> = (1..=64u64)
            .filter_map(|h| (0..4).find(|&me| head_duty(h, 4, MemberIndex(me))))
            .collect();
        assert_eq!(heads, [1, 2, 3, 0, 1, 2, 3, 0]);
        for h in 0..16 {
            assert_eq!(
                (0..4)
                    .filter(|&me| relay_retry_duty(h, 4, MemberIndex(me)))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn evidence_of_a_step_is_sent_once() {
        let mut e = EvidenceSent::default();
        assert!(e.first((ShardId(1), 2, 0, MemberIndex(3))));
        assert!(!e.first((ShardId(1), 2, 0, MemberIndex(3))));
        assert!(e.first((ShardId(1), 2, 1, MemberIndex(3))));
    }
}
