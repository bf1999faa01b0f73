//! Prometheus metrics in the text exposition format, kept in atomics (no registry, no locks).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Requests answered, by status class 1xx..5xx.
    responses: [AtomicU64; 5],
    bytes_sent: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub shard_fetches: AtomicU64,
    pub shard_fetch_failures: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_bytes: AtomicU64,
}

impl Metrics {
    /// Records one answered request: its status and the time to its response head.
    pub fn record(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
        let s = latency.as_secs_f64();
        for (bucket, &le) in self.latency_buckets.iter().zip(&LATENCY_BUCKETS_S) {
            if s <= le {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.responses.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP huds_gateway_requests_total Requests answered, by status class.\n# TYPE huds_gateway_requests_total counter"
        );
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "huds_gateway_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "huds_gateway_sent_bytes_total",
            "Response body bytes sent.",
            self.bytes_sent(),
        );
        let _ = writeln!(
            out,
            "# HELP huds_gateway_response_seconds Time from request to response head.\n# TYPE huds_gateway_response_seconds histogram"
        );
        for (b, le) in self.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
            let _ = writeln!(
                out,
                "huds_gateway_response_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "huds_gateway_response_seconds_bucket{{le=\"+Inf\"}} {count}\nhuds_gateway_response_seconds_sum {}\nhuds_gateway_response_seconds_count {count}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let rows = [
            (
                "huds_gateway_cache_hits_total",
                "Requests answered from the gateway's caches.",
                &self.cache_hits,
            ),
            (
                "huds_gateway_cache_misses_total",
                "Requests that had to open or resolve content.",
                &self.cache_misses,
            ),
            (
                "huds_gateway_shard_fetches_total",
                "Shards fetched for segment rebuilds.",
                &self.shard_fetches,
            ),
            (
                "huds_gateway_shard_fetch_failures_total",
                "Shard fetches that found no usable copy.",
                &self.shard_fetch_failures,
            ),
            (
                "huds_gateway_uploads_total",
                "Uploads stored.",
                &self.uploads,
            ),
            (
                "huds_gateway_upload_bytes_total",
                "Bytes stored by uploads.",
                &self.upload_bytes,
            ),
        ];
        for (name, help, c) in rows {
            counter(&mut out, name, help, c.load(Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.record(200, Duration::from_millis(3));
        m.record(404, Duration::from_millis(300));
        let text = m.render();
        for line in [
            "huds_gateway_requests_total{class=\"2xx\"} 1",
            "huds_gateway_requests_total{class=\"4xx\"} 1",
            "huds_gateway_response_seconds_bucket{le=\"0.005\"} 1",
            "huds_gateway_response_seconds_bucket{le=\"0.5\"} 2",
            "huds_gateway_response_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
