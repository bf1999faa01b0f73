//! The chain's part of the status page, from the chain runtime that runs beside the node: heights, state roots
//! and committees (with their likelihood weights and stakes) and the validator registry from the validators and
//! the beacon, with amounts in IOST for people; and the last blocks finalised, collected from the validators'
//! commit notices into a bounded ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chain_node::ChainApi;
use chain_node::api::hex;

use gateway::{
    BlockSummary, ChainStatus, ChainStatusSource, CommitteeMember, ShardChain, ShardEconomy,
    ValidatorRow,
};

/// Recent blocks kept for the page.
const RECENT_BLOCKS_MAX: usize = 32;

/// A [`ChainStatusSource`] over a [`ChainApi`].
pub struct ChainFeed {
    api: ChainApi,
    recent: Mutex<VecDeque<BlockSummary>>,
}

impl ChainFeed {
    /// Starts listening to every validator's commits (on the current tokio runtime).
    pub fn start(api: ChainApi) -> Arc<ChainFeed> {
        let feed = Arc::new(ChainFeed {
            api: api.clone(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_BLOCKS_MAX)),
        });
        for v in api.validators() {
            let mut commits = v.commits();
            let weak = Arc::downgrade(&feed);
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let notice = match commits.recv().await {
                        Ok(n) => n,
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return,
                    };
                    let Some(feed) = weak.upgrade() else { return };
                    feed.record(BlockSummary {
                        shard: u32::from(notice.shard.0),
                        height: notice.height,
                        hash: hex(&notice.block),
                        txs: u32::try_from(notice.tx_ids.len()).unwrap_or(u32::MAX),
                        proofs: notice.proofs,
                        proposer: notice.proposer.to_string(),
                    });
                }
            });
        }
        feed
    }

    /// Keeps a block once, however many of this node's validators report it; newest first.
    fn record(&self, b: BlockSummary) {
        let mut recent = self
            .recent
            .lock()
            .expect("recent-blocks lock is never poisoned");
        if recent
            .iter()
            .any(|r| r.shard == b.shard && r.height == b.height)
        {
            return;
        }
        if recent.len() == RECENT_BLOCKS_MAX {
            recent.pop_back();
        }
        recent.push_front(b);
    }
}

impl ChainStatusSource for ChainFeed {
    fn chain_status(&self) -> Option<ChainStatus> {
        // The same snapshot `GET /api/v0/chain/status` (and so `huds chain status`) reads; amounts are written
        // for people here, by `Amount::for_people`, so the page prints what the CLI prints.
        let snapshot = self.api.snapshot();
        let shards = snapshot
            .shards
            .iter()
            .map(|s| {
                let total: u128 = s.committee.iter().map(|m| m.weight).sum();
                let stake = s.committee_stake();
                ShardChain {
                    id: u32::from(s.id.0),
                    epoch: s.epoch,
                    height: s.height(),
                    state_root: s
                        .head
                        .as_ref()
                        .map_or_else(String::new, |h| hex(&h.state_root)),
                    committee: s
                        .committee
                        .iter()
                        .map(|m| CommitteeMember {
                            validator: m.id.to_string(),
                            weight: m.weight.to_string(),
                            share: share(m.weight, total),
                            stake: m.stake.map(|a| a.to_string()),
                            stake_for_people: m.stake.map(|a| a.for_people()),
                        })
                        .collect(),
                    committee_stake: stake.to_string(),
                    committee_stake_for_people: stake.for_people(),
                    economy: s.economy.map(|e| {
                        let iost = |a: u128| {
                            chain::Amount(u64::try_from(a).unwrap_or(u64::MAX)).for_people()
                        };
                        ShardEconomy {
                            deals_active: e.deals_active,
                            escrow_left: iost(e.escrow_left),
                            paid: iost(e.paid),
                            refunded: iost(e.refunded),
                            proofs_waiting: e.proofs_waiting,
                        }
                    }),
                }
            })
            .collect();
        let validators = snapshot
            .validators
            .iter()
            .map(|v| ValidatorRow {
                validator: v.id.to_string(),
                seat: v.seat.map(|s| {
                    if s == chain::block::BEACON_SHARD {
                        "beacon".to_string()
                    } else {
                        format!("shard {s}")
                    }
                }),
                stake: v.stake.to_string(),
                stake_for_people: v.stake.for_people(),
                reputation_ppm: v.reputation_ppm,
                reputation: share(u128::from(v.reputation_ppm), 1_000_000),
            })
            .collect();
        let recent_blocks = self
            .recent
            .lock()
            .expect("recent-blocks lock is never poisoned")
            .iter()
            .cloned()
            .collect();
        Some(ChainStatus {
            epoch: snapshot.epoch,
            shards,
            validators,
            recent_blocks,
        })
    }
}

/// `part` of `total` as a percentage with one decimal ("25.0%"), exact for 128-bit weights.
fn share(part: u128, total: u128) -> String {
    if total == 0 {
        return "0.0%".to_string();
    }
    // Tenths of a percent, rounded to nearest; `part <= total` so the product fits unless weights exceed
    // 2^118, where the division comes first at a precision loss no reader can see.
    let tenths = match part.checked_mul(2000) {
        Some(p) => (p / total).div_ceil(2),
        None => (part / (total / 2000).max(1)).div_ceil(2),
    };
    format!("{}.{}%", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_read_as_percentages() {
        assert_eq!(share(1, 4), "25.0%");
        assert_eq!(share(1, 3), "33.3%");
        assert_eq!(share(2, 3), "66.7%");
        assert_eq!(share(5, 5), "100.0%");
        assert_eq!(share(0, 0), "0.0%");
        assert_eq!(share(10u128.pow(21), 4 * 10u128.pow(21)), "25.0%");
        assert_eq!(share(u128::MAX / 4, u128::MAX), "25.0%");
    }
}
