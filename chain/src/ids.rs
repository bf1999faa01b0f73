//! The two small numbers that name things in the chain: a shard, and a member's place in a committee.
//!
//! Both are `u16` on the wire and in JSON (a bare number: the newtypes change no encoding), and both are
//! newtypes in code so that a shard cannot be passed where a member index is meant, and neither where a
//! count or a height is.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

/// The index of a shard, in `0..shard_count`; the beacon chain is [`ShardId::BEACON`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The beacon chain's id where a shard id is expected (headers, votes and messages of the beacon
    /// chain carry it). No shard has it: a chain has fewer than `u16::MAX` shards.
    pub const BEACON: ShardId = ShardId(u16::MAX);

    /// The shard's position in a list of every shard.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Every shard of a chain with `count` shards, in order.
    pub fn all(count: u16) -> impl DoubleEndedIterator<Item = ShardId> + Clone {
        (0..count).map(ShardId)
    }

    /// The shard at `index` of a list of every shard; None past `u16::MAX`.
    pub fn at(index: usize) -> Option<ShardId> {
        u16::try_from(index).ok().map(ShardId)
    }

    /// Whether this id names the beacon chain rather than a shard.
    pub fn is_beacon(self) -> bool {
        self == Self::BEACON
    }
}

/// A shard id against a shard count: `shard < shard_count` is whether the shard exists.
impl PartialEq<u16> for ShardId {
    fn eq(&self, count: &u16) -> bool {
        self.0 == *count
    }
}

impl PartialOrd<u16> for ShardId {
    fn partial_cmp(&self, count: &u16) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(count)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ShardId {
    type Err = ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(ShardId)
    }
}

/// A member's place in a committee (`0..committee.len()`): who proposed, who voted, whom to send to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MemberIndex(pub u16);

impl MemberIndex {
    /// The member's position in the committee's list of members.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The member at `index` of a committee's list; None past `u16::MAX` (committees are far smaller).
    pub fn at(index: usize) -> Option<MemberIndex> {
        u16::try_from(index).ok().map(MemberIndex)
    }
}

impl From<ShardId> for usize {
    fn from(shard: ShardId) -> usize {
        shard.index()
    }
}

impl From<MemberIndex> for usize {
    fn from(member: MemberIndex) -> usize {
        member.index()
    }
}

impl From<MemberIndex> for u64 {
    fn from(member: MemberIndex) -> u64 {
        u64::from(member.0)
    }
}

impl fmt::Display for MemberIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Reader, Writer};

    #[test]
    fn the_newtypes_keep_the_bare_number_in_text_and_on_the_wire() {
        let (shard, member) = (ShardId(513), MemberIndex(7));
        assert_eq!(shard.to_string(), "513");
        assert_eq!("513".parse::<ShardId>(), Ok(shard));
        assert_eq!(member.to_string(), "7");
        let mut w = Writer::new();
        w.shard(shard).member(member);
        let bytes = w.finish();
        assert_eq!(bytes, [513u16.to_be_bytes(), 7u16.to_be_bytes()].concat());
        let mut r = Reader::new(&bytes);
        assert_eq!((r.shard(), r.member()), (Ok(shard), Ok(member)));
        assert_eq!(ShardId::BEACON.0, u16::MAX);
        assert!(ShardId::all(3).eq([ShardId(0), ShardId(1), ShardId(2)]));
        assert_eq!(ShardId::at(70_000), None);
        // JSON (the API's, the simulator's reports) carries the bare number too.
        let json = serde_json::json!({ "shard": shard, "member": member });
        assert_eq!(json.to_string(), r#"{"member":7,"shard":513}"#);
        assert_eq!(serde_json::from_str::<ShardId>("513").ok(), Some(shard));
    }
}
