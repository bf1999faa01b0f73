//! What a validator counts, for `/metrics` on the node's API: gossip in and out, commits, its lanes' heights
//! and rounds, the mempool, and how long the transactions it admitted took to become final. The validator's
//! task records into `prometheus-client` metrics (atomics behind `Arc`s); the API encodes them as they stand.
//! [`ChainMetrics`] adds what the chain as a whole shows (epoch, each shard's height, every validator's
//! reputation signals), read from [`ChainApi::snapshot`] when scraped. `specs/metrics.md` names each one.

use std::collections::{HashMap, VecDeque};

use chain::crypto::Hash;
use chain::node::Topic;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ChainApi;

/// Upper bounds of the finality histogram's buckets, in seconds: blocks take a few hundred milliseconds, a
/// stalled committee tens of seconds.
const FINALITY_BUCKETS_S: [f64; 12] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];
/// Admitted transactions whose finality is being timed, at most: past this the oldest is forgotten (it was
/// dropped from the mempool or is very late), so a flood of submissions costs bounded memory.
const PENDING_TXS_MAX: usize = 65_536;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// `heads`, `beacon` or `shard`.
    pub topic: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    /// `beacon` or `shard`.
    pub lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    pub lane: &'static str,
    /// `member` (decided it in the committee) or `follower` (took it with its certificate).
    pub role: &'static str,
}

/// One validator's metrics; clones share the values.
#[derive(Clone, Debug)]
pub struct ValidatorMetrics {
    pub gossip_received: Family<TopicLabels, Counter>,
    pub gossip_published: Family<TopicLabels, Counter>,
    /// Messages gossipsub dropped on their way to slow peers.
    pub gossip_dropped: Counter,
    /// Peers subscribed to the topic of the validator's shard lane.
    pub topic_peers: Gauge,
    pub commits: Family<CommitLabels, Counter>,
    /// Transactions in the blocks the shard lane committed.
    pub transactions_committed: Counter,
    /// The lanes' last committed heights.
    pub height: Family<LaneLabels, Gauge>,
    /// The shard lane's consensus round at its next height (above 0: rounds timed out).
    pub round: Gauge,
    /// The epoch of the shard lane's next height.
    pub epoch: Gauge,
    /// 1 while the validator sits on the committee of its shard lane, else 0.
    pub member: Gauge,
    /// Transactions waiting in the shard lane's mempool.
    pub mempool_transactions: Gauge,
    /// Seconds from admitting a client's transaction to committing it.
    pub finality_seconds: Histogram,
}

impl Default for ValidatorMetrics {
    fn default() -> Self {
        ValidatorMetrics {
            gossip_received: Family::default(),
            gossip_published: Family::default(),
            gossip_dropped: Counter::default(),
            topic_peers: Gauge::default(),
            commits: Family::default(),
            transactions_committed: Counter::default(),
            height: Family::default(),
            round: Gauge::default(),
            epoch: Gauge::default(),
            member: Gauge::default(),
            mempool_transactions: Gauge::default(),
            finality_seconds: Histogram::new(FINALITY_BUCKETS_S),
        }
    }
}

/// The label of a gossip topic.
pub fn topic_label(topic: Topic) -> &'static str {
    match topic {
        Topic::Heads => "heads",
        Topic::Beacon => "beacon",
        Topic::Shard(_) => "shard",
    }
}

/// A count as a gauge's value (gauges are signed; no count here comes near 2^63).
pub fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ValidatorMetrics {
    /// Registers every metric under `registry`, which names the validator in a label. Every label set starts
    /// at 0, so each series is there from the first scrape.
    pub fn register(&self, registry: &mut Registry) {
        for topic in ["heads", "beacon", "shard"] {
            let _ = self.gossip_received.get_or_create(&TopicLabels { topic });
            let _ = self.gossip_published.get_or_create(&TopicLabels { topic });
        }
        for lane in ["beacon", "shard"] {
            let _ = self.height.get_or_create(&LaneLabels { lane });
            for role in ["member", "follower"] {
                let _ = self.commits.get_or_create(&CommitLabels { lane, role });
            }
        }
        registry.register(
            "chain_gossip_received",
            "Gossip messages received, by topic",
            self.gossip_received.clone(),
        );
        registry.register(
            "chain_gossip_published",
            "Gossip messages published, by topic",
            self.gossip_published.clone(),
        );
        registry.register(
            "chain_gossip_dropped",
            "Gossip messages dropped on their way to slow peers",
            self.gossip_dropped.clone(),
        );
        registry.register(
            "chain_topic_peers",
            "Peers subscribed to the topic of the validator's shard",
            self.topic_peers.clone(),
        );
        registry.register(
            "chain_commits",
            "Blocks committed, by lane and by role (member or follower)",
            self.commits.clone(),
        );
        registry.register(
            "chain_transactions_committed",
            "Transactions in the shard blocks committed",
            self.transactions_committed.clone(),
        );
        registry.register(
            "chain_lane_height",
            "The last height committed, by lane",
            self.height.clone(),
        );
        registry.register(
            "chain_round",
            "The consensus round at the shard lane's next height",
            self.round.clone(),
        );
        registry.register(
            "chain_lane_epoch",
            "The epoch of the shard lane's next height",
            self.epoch.clone(),
        );
        registry.register(
            "chain_member",
            "1 while the validator sits on its shard's committee, else 0",
            self.member.clone(),
        );
        registry.register(
            "chain_mempool_transactions",
            "Transactions waiting in the shard lane's mempool",
            self.mempool_transactions.clone(),
        );
        registry.register(
            "chain_finality_seconds",
            "Seconds from admitting a client's transaction to committing it",
            self.finality_seconds.clone(),
        );
    }
}

/// When each admitted transaction came in, until its commit: what the finality histogram is fed from.
#[derive(Default)]
pub struct FinalityClock {
    admitted: HashMap<Hash, u64>,
    order: VecDeque<Hash>,
}

impl FinalityClock {
    /// Starts timing `id` at `now_ms` (a transaction admitted twice keeps its first time).
    pub fn admitted(&mut self, id: Hash, now_ms: u64) {
        if self.admitted.contains_key(&id) {
            return;
        }
        if self.order.len() >= PENDING_TXS_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.admitted.remove(&oldest);
        }
        self.admitted.insert(id, now_ms);
        self.order.push_back(id);
    }

    /// Stops timing `id`; its finality latency in seconds if it was being timed.
    pub fn committed(&mut self, id: &Hash, now_ms: u64) -> Option<f64> {
        let at = self.admitted.remove(id)?;
        // The order queue keeps the id until it reaches the front: removing from its middle would cost a
        // scan, and a stale entry there only frees no room when it is popped.
        Some(now_ms.saturating_sub(at) as f64 / 1000.0)
    }

    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// The shard's number, or `beacon`.
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidatorLabels {
    pub validator: String,
}

/// The chain as this node sees it, refreshed from [`ChainApi::snapshot`] each time `/metrics` is read, so it
/// agrees with `huds chain status`.
#[derive(Clone, Debug, Default)]
pub struct ChainMetrics {
    pub epoch: Gauge,
    pub shard_height: Family<ShardLabels, Gauge>,
    pub validator_stake_iost: Family<ValidatorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub validator_votes: Family<ValidatorLabels, Gauge>,
    pub validator_certificates: Family<ValidatorLabels, Gauge>,
    pub validator_blocks_proposed: Family<ValidatorLabels, Gauge>,
}

impl ChainMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "chain_epoch",
            "The epoch of the most advanced beacon chain this node keeps",
            self.epoch.clone(),
        );
        registry.register(
            "chain_height",
            "The highest certified height known here, by shard (and the beacon chain's)",
            self.shard_height.clone(),
        );
        registry.register(
            "chain_validator_stake_iost",
            "Each registered validator's stake in IOST",
            self.validator_stake_iost.clone(),
        );
        registry.register(
            "chain_validator_votes",
            "Votes each validator has in certificates this epoch",
            self.validator_votes.clone(),
        );
        registry.register(
            "chain_validator_certificates",
            "Certificates each validator could have voted in this epoch",
            self.validator_certificates.clone(),
        );
        registry.register(
            "chain_validator_blocks_proposed",
            "Blocks each validator proposed this epoch",
            self.validator_blocks_proposed.clone(),
        );
    }

    /// Sets every value from the chain as `api` sees it now.
    pub fn refresh(&self, api: &ChainApi) {
        let snapshot = api.snapshot();
        self.epoch.set(gauge(snapshot.epoch));
        for s in &snapshot.shards {
            self.shard_height
                .get_or_create(&ShardLabels {
                    shard: s.id.to_string(),
                })
                .set(gauge(s.height()));
        }
        let Some(view) = api.beacon_view() else {
            return;
        };
        self.shard_height
            .get_or_create(&ShardLabels {
                shard: "beacon".into(),
            })
            .set(gauge(view.height));
        for v in &view.state.validators {
            let labels = ValidatorLabels {
                validator: v.id.to_string(),
            };
            self.validator_stake_iost
                .get_or_create(&labels)
                .set(v.stake.0 as f64 / chain::amount::BASE_UNITS_PER_IOST as f64);
            self.validator_votes
                .get_or_create(&labels)
                .set(gauge(v.signals.votes_in_certificates));
            self.validator_certificates
                .get_or_create(&labels)
                .set(gauge(v.signals.certificates));
            self.validator_blocks_proposed
                .get_or_create(&labels)
                .set(gauge(v.signals.blocks_proposed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finality_is_timed_from_admission_to_commit_and_bounded() {
        let mut clock = FinalityClock::default();
        clock.admitted([1; 32], 1_000);
        clock.admitted([1; 32], 1_500);
        assert_eq!(clock.committed(&[1; 32], 1_750), Some(0.75));
        assert_eq!(clock.committed(&[1; 32], 2_000), None);
        for i in 0..(PENDING_TXS_MAX as u64 + 10) {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            clock.admitted(id, i);
        }
        assert!(clock.len() <= PENDING_TXS_MAX);
        assert_eq!(
            clock.committed(&[0; 32], 0),
            None,
            "the oldest was forgotten"
        );
    }
}
