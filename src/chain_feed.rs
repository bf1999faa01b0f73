//! The chain's part of the status page, from the chain runtime that runs beside the node: heights, state roots
//! and committees (with their likelihood weights) from the validators and the beacon, and the last blocks
//! finalised, collected from the validators' commit notices into a bounded ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chain_node::ChainApi;
use chain_node::api::hex;

use gateway::{BlockSummary, ChainStatus, ChainStatusSource, CommitteeMember, ShardChain};

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
                        shard: u32::from(notice.shard),
                        height: notice.height,
                        hash: hex(&notice.block),
                        txs: u32::try_from(notice.tx_ids.len()).unwrap_or(u32::MAX),
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
        let beacon = self.api.beacon();
        let heads: Vec<_> = self
            .api
            .validators()
            .iter()
            .filter(|v| v.is_running())
            .map(|v| v.heads())
            .collect();
        let shards = beacon
            .committees
            .iter()
            .enumerate()
            .map(|(s, committee)| {
                let best = heads
                    .iter()
                    .filter_map(|h| h.get(s).cloned().flatten())
                    .max_by_key(|h| h.height);
                ShardChain {
                    id: s as u32,
                    height: best.as_ref().map_or(0, |h| h.height),
                    state_root: best
                        .as_ref()
                        .map_or_else(String::new, |h| hex(&h.state_root)),
                    committee: committee
                        .members
                        .iter()
                        .map(|m| CommitteeMember {
                            validator: m.id.to_string(),
                            weight: m.weight.to_string(),
                        })
                        .collect(),
                }
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
            epoch: beacon.epoch,
            shards,
            recent_blocks,
        })
    }
}
