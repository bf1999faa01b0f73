//! What a storage node counts, for `/metrics` on its API: the shard protocol's requests in and out, the store,
//! the DHT and repair. Kept in `prometheus-client` metrics (atomics behind `Arc`s), so the node's tasks record
//! without locks and the API encodes them as they stand. `specs/metrics.md` names and explains each one.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::repair::SweepReport;
use crate::wire::{Request, Response};

/// A shard request's labels: `op` is `put`, `get` or `has`; `outcome` is `ok` (stored, data sent, present),
/// `not_found` (not held, or absent), `refused` (a put refused: bad bytes, too large, storage full, a failed
/// write) or, for requests sent only, `failed` (no answer: a dial failure, a timeout, a closed connection).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

/// A storage node's metrics; clones share the values.
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    /// Requests peers sent this node, by operation and outcome.
    pub served: Family<RequestLabels, Counter>,
    /// Requests this node sent peers (placement, reads, repair), by operation and outcome.
    pub requested: Family<RequestLabels, Counter>,
    /// Shard bytes received in accepted puts.
    pub received_bytes: Counter,
    /// Shard bytes sent in answers to gets.
    pub sent_bytes: Counter,
    /// Shards in the store: counted when the node starts, plus each shard stored for a peer since.
    pub shards: Gauge,
    /// Shard bytes in the store, on the same count (what `--storage` is measured against).
    pub stored_bytes: Gauge,
    /// The `--storage` limit in bytes; 0 when there is none (see `capacity_limited`).
    pub capacity_bytes: Gauge,
    /// 1 when a `--storage` limit is set (a limit of 0 then means "hold nothing"), 0 when there is none.
    pub capacity_limited: Gauge,
    /// Peers with an open connection.
    pub connected_peers: Gauge,
    /// Peers known to speak the shard protocol (placement chooses from these).
    pub storage_peers: Gauge,
    /// Peers in the Kademlia routing table.
    pub dht_routing_peers: Gauge,
    /// Provider records this node announced.
    pub dht_provides: Counter,
    /// Provider lookups this node started.
    pub dht_provider_queries: Counter,
    /// Repair sweeps finished.
    pub repair_sweeps: Counter,
    /// Shards rebuilt and placed by repair.
    pub repair_shards_rebuilt: Counter,
    /// Shard rebuilds or placements that failed.
    pub repair_failures: Counter,
    /// Segments the last sweep found short of shards and waiting out the grace period.
    pub repair_segments_waiting: Gauge,
    /// Segments the last sweep found unrecoverable (fewer than k shards anywhere).
    pub repair_segments_lost: Gauge,
}

impl NodeMetrics {
    /// Registers every metric under `registry` (which carries the `huds` prefix). Every label set a request
    /// can have starts at 0, so each series is there from the first scrape and rates start from a sample.
    pub fn register(&self, registry: &mut Registry) {
        for op in ["put", "get", "has", "sign"] {
            for outcome in ["ok", "not_found", "refused", "failed"] {
                let labels = RequestLabels { op, outcome };
                if outcome != "failed" {
                    let _ = self.served.get_or_create(&labels);
                }
                let _ = self.requested.get_or_create(&labels);
            }
        }
        registry.register(
            "shard_requests_served",
            "Shard requests peers sent this node, by operation and outcome",
            self.served.clone(),
        );
        registry.register(
            "shard_requests_sent",
            "Shard requests this node sent peers (placement, reads, repair), by operation and outcome",
            self.requested.clone(),
        );
        registry.register(
            "shard_received_bytes",
            "Shard bytes received in accepted puts",
            self.received_bytes.clone(),
        );
        registry.register(
            "shard_sent_bytes",
            "Shard bytes sent in answers to gets",
            self.sent_bytes.clone(),
        );
        registry.register(
            "store_shards",
            "Shards in the store (counted at start, plus those stored for peers since)",
            self.shards.clone(),
        );
        registry.register(
            "store_shard_bytes",
            "Shard bytes in the store, as the --storage limit counts them",
            self.stored_bytes.clone(),
        );
        registry.register(
            "store_capacity_bytes",
            "The --storage limit in bytes (0: none)",
            self.capacity_bytes.clone(),
        );
        registry.register(
            "store_capacity_limited",
            "1 when a --storage limit is set, 0 when there is none",
            self.capacity_limited.clone(),
        );
        registry.register(
            "connected_peers",
            "Peers with an open libp2p connection",
            self.connected_peers.clone(),
        );
        registry.register(
            "storage_peers",
            "Peers known to speak the shard protocol",
            self.storage_peers.clone(),
        );
        registry.register(
            "dht_routing_peers",
            "Peers in the Kademlia routing table",
            self.dht_routing_peers.clone(),
        );
        registry.register(
            "dht_provides",
            "Provider records announced",
            self.dht_provides.clone(),
        );
        registry.register(
            "dht_provider_queries",
            "Provider lookups started",
            self.dht_provider_queries.clone(),
        );
        registry.register(
            "repair_sweeps",
            "Repair sweeps finished",
            self.repair_sweeps.clone(),
        );
        registry.register(
            "repair_shards_rebuilt",
            "Shards rebuilt and placed by repair",
            self.repair_shards_rebuilt.clone(),
        );
        registry.register(
            "repair_failures",
            "Shard rebuilds or placements by repair that failed",
            self.repair_failures.clone(),
        );
        registry.register(
            "repair_segments_waiting",
            "Segments short of shards in the last sweep, waiting out the grace period",
            self.repair_segments_waiting.clone(),
        );
        registry.register(
            "repair_segments_lost",
            "Segments with fewer than k shards anywhere in the last sweep",
            self.repair_segments_lost.clone(),
        );
    }

    /// Counts one request this node answered.
    pub(crate) fn served(&self, request: &Request, response: &Response) {
        let labels = RequestLabels {
            op: op(request),
            outcome: outcome(Some(response)),
        };
        self.served.get_or_create(&labels).inc();
        match (request, response) {
            (Request::Put { data, .. }, Response::Stored) => {
                self.received_bytes.inc_by(data.len() as u64);
            }
            (Request::Get { .. }, Response::Data(d)) => {
                self.sent_bytes.inc_by(d.len() as u64);
            }
            _ => {}
        }
    }

    /// Counts one request this node sent, with its answer (`None`: it got none).
    pub(crate) fn requested(&self, op: &'static str, response: Option<&Response>) {
        let labels = RequestLabels {
            op,
            outcome: outcome(response),
        };
        self.requested.get_or_create(&labels).inc();
    }

    /// Records a finished repair sweep.
    pub(crate) fn sweep(&self, report: &SweepReport) {
        self.repair_sweeps.inc();
        self.repair_shards_rebuilt.inc_by(report.shards_rebuilt);
        self.repair_failures.inc_by(report.failures);
        self.repair_segments_waiting.set(gauge(report.waiting));
        self.repair_segments_lost.set(gauge(report.lost));
    }
}

/// A count as a gauge's value (gauges are signed; no count here comes near 2^63).
pub(crate) fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A request's `op` label.
pub(crate) fn op(request: &Request) -> &'static str {
    match request {
        Request::Put { .. } => "put",
        Request::Get { .. } => "get",
        Request::Has { .. } => "has",
        Request::Sign(_) => "sign",
        Request::Deal(_) => "deal",
    }
}

/// An answer's `outcome` label (`None`: no answer came).
fn outcome(response: Option<&Response>) -> &'static str {
    match response {
        None => "failed",
        Some(
            Response::Stored | Response::Data(_) | Response::Present(true) | Response::Signed(_),
        ) => "ok",
        Some(Response::NotFound | Response::Present(false)) => "not_found",
        Some(Response::Refused(_)) => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn requests_are_counted_by_operation_and_outcome() {
        let m = NodeMetrics::default();
        let cid = huds::cids::blake3_cid(b"shard");
        m.served(
            &Request::Put {
                cid,
                data: vec![0; 10],
            },
            &Response::Stored,
        );
        m.served(&Request::Get { cid }, &Response::Data(vec![0; 7]));
        m.served(&Request::Get { cid }, &Response::NotFound);
        m.requested(op(&Request::Has { cid }), None);
        let mut registry = Registry::with_prefix("huds");
        m.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("huds_shard_requests_served_total{op=\"put\",outcome=\"ok\"} 1"));
        assert!(
            text.contains("huds_shard_requests_served_total{op=\"get\",outcome=\"not_found\"} 1")
        );
        assert!(text.contains("huds_shard_requests_sent_total{op=\"has\",outcome=\"failed\"} 1"));
        assert!(text.contains("huds_shard_received_bytes_total 10"));
        assert!(text.contains("huds_shard_sent_bytes_total 7"));
    }
}
