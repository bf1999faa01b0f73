//! Which lanes a validator keeps and in which role: the decisions of the driver's `reconcile`, as functions
//! of the beacon chain alone, so that every validator (and the simulator) derives its duties the same way.
//!
//! The shard lane keeps its shard while the validator is a member of the committee of the height it
//! decides (its duty there is not over), else moves to the shard of its seat in the newest epoch, else
//! keeps following the shard it has. A lane changes committee exactly where an era begins (see
//! `beacon::eras`): at a height boundary, or, for a stalled shard whose committee the beacon redrew, at the
//! height after the linked block, while the stalled committee is still on it.

use crate::ShardId;
use crate::address::Address;
use crate::beacon::{BeaconApp, BeaconState};
use crate::bft::Bls;
use crate::block::BEACON_SHARD;
use crate::store::Store;

use super::lane::{Duty, index_in};

/// The beacon lane's role: a member of the newest epoch's beacon committee (which certifies the next
/// beacon block), with its index and that committee, or `None`: follow.
pub fn beacon_role(known: &BeaconState, account: &Address) -> Option<Duty<Bls>> {
    let committee = known.committee(BEACON_SHARD)?;
    let member = index_in(&committee, account)?;
    Some(Duty { member, committee })
}

/// The role in `shard` at `height`: a member of the committee that certifies that height (from the beacon
/// state, or the beacon's archive of past epochs), or `None`: follow (also when the beacon does not know
/// that height's epoch yet, which holds the lane at the epoch boundary until it does).
pub fn shard_role<St: Store>(
    beacon: &BeaconApp<St>,
    account: &Address,
    shard: ShardId,
    height: u64,
) -> Option<Duty<Bls>> {
    let committee = beacon.committee_at(shard, height)?;
    let member = index_in(&committee, account)?;
    Some(Duty { member, committee })
}

/// The shard the shard lane should keep, given the lane it has now (its shard and the height it decides):
/// the current one while on duty there, else the shard of its seat in the newest epoch, else the current
/// one as a follower (a validator without a shard seat keeps following the shard it kept: it holds that
/// shard's history, which a committee drawn afresh after a stall may need to catch up from), else none.
pub fn shard_target<St: Store>(
    beacon: &BeaconApp<St>,
    account: &Address,
    current: Option<(ShardId, u64)>,
) -> Option<ShardId> {
    if let Some((shard, height)) = current
        && shard_role(beacon, account, shard, height).is_some()
    {
        return Some(shard);
    }
    match beacon.state().seat_of(account) {
        Some(a) if a.shard != BEACON_SHARD => Some(a.shard),
        _ => current.map(|(shard, _)| shard),
    }
}
