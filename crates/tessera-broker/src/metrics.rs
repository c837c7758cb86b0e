//! The resolver's counters, exported in Prometheus text format by the gateway's `/metrics`.
//! Relaxed atomics only: a cache hit adds one increment.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tessera_config::BrokerMode;

/// Upper bounds (seconds) of the acquisition latency histogram.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub(crate) struct ResolverMetrics {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    /// Callers that joined an acquisition already in flight for the same (user, server).
    pub(crate) coalesced: AtomicU64,
    /// Acquisitions by mode (token_exchange, entra_obo, oauth_connect) and outcome (ok, error).
    acquisitions: [[AtomicU64; 2]; 3],
    /// Acquisition latency: cumulative bucket counts, then +Inf; sum in microseconds.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

fn mode_index(mode: BrokerMode) -> usize {
    match mode {
        BrokerMode::TokenExchange => 0,
        BrokerMode::EntraObo => 1,
        BrokerMode::OauthConnect => 2,
    }
}

const MODES: [&str; 3] = ["token_exchange", "entra_obo", "oauth_connect"];

impl ResolverMetrics {
    pub(crate) fn acquisition(&self, mode: BrokerMode, ok: bool, took: Duration) {
        self.acquisitions[mode_index(mode)][usize::from(!ok)].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tessera_broker_cache_hits_total Credential lookups answered from memory.\n# TYPE tessera_broker_cache_hits_total counter\ntessera_broker_cache_hits_total {}",
            self.hits.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_broker_cache_misses_total Credential lookups that needed an acquisition (store, refresh or exchange).\n# TYPE tessera_broker_cache_misses_total counter\ntessera_broker_cache_misses_total {}",
            self.misses.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_broker_coalesced_waits_total Callers that waited for an acquisition already in flight for the same user and server.\n# TYPE tessera_broker_coalesced_waits_total counter\ntessera_broker_coalesced_waits_total {}",
            self.coalesced.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_broker_acquisitions_total Credential acquisitions by mode and outcome.\n# TYPE tessera_broker_acquisitions_total counter"
        );
        for (m, mode) in MODES.iter().enumerate() {
            for (o, outcome) in ["success", "failure"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tessera_broker_acquisitions_total{{mode=\"{mode}\",outcome=\"{outcome}\"}} {}",
                    self.acquisitions[m][o].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tessera_broker_acquisition_seconds Time to obtain a credential (store, refresh or token endpoint).\n# TYPE tessera_broker_acquisition_seconds histogram"
        );
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Relaxed);
            let _ = writeln!(
                out,
                "tessera_broker_acquisition_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "tessera_broker_acquisition_seconds_bucket{{le=\"+Inf\"}} {cumulative}\ntessera_broker_acquisition_seconds_sum {}\ntessera_broker_acquisition_seconds_count {cumulative}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_every_acquisition() {
        let m = ResolverMetrics::default();
        m.acquisition(BrokerMode::TokenExchange, true, Duration::from_millis(3));
        m.acquisition(BrokerMode::TokenExchange, false, Duration::from_millis(30));
        m.acquisition(BrokerMode::OauthConnect, true, Duration::from_secs(20));
        m.hits.fetch_add(5, Relaxed);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("tessera_broker_cache_hits_total 5"), "{out}");
        assert!(
            out.contains(
                "tessera_broker_acquisitions_total{mode=\"token_exchange\",outcome=\"failure\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("tessera_broker_acquisition_seconds_bucket{le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("tessera_broker_acquisition_seconds_bucket{le=\"0.05\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("tessera_broker_acquisition_seconds_bucket{le=\"10\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("tessera_broker_acquisition_seconds_bucket{le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("tessera_broker_acquisition_seconds_count 3"),
            "{out}"
        );
    }
}
