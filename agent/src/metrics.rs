//! Prometheus metrics of the agent. Request metrics are recorded where requests are
//! served; state gauges (endpoints, pool usage) are refreshed at scrape time from the
//! owners of that state, so they can never drift from it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbOnly {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<VerbLabels, Counter>,
    pub duration: Family<VerbOnly, Histogram>,
    pub endpoints: Gauge,
    pub pool_used: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub pool_size: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub gc_released: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strait");
        let requests = Family::<VerbLabels, Counter>::default();
        // 0.5 ms .. ~4 s: ADD latency lives in the low milliseconds.
        let duration = Family::<VerbOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let endpoints = Gauge::default();
        let pool_used = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        let pool_size = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        let gc_released = Counter::default();
        registry.register(
            "cni_requests",
            "CNI requests served, by verb and result",
            requests.clone(),
        );
        registry.register(
            "cni_request_duration_seconds",
            "Time to serve a CNI request in the agent",
            duration.clone(),
        );
        registry.register("endpoints", "Attachments on this node", endpoints.clone());
        registry.register(
            "ipam_pool_used_addresses",
            "Allocated addresses per pool",
            pool_used.clone(),
        );
        registry.register(
            "ipam_pool_size_addresses",
            "Addresses per pool",
            pool_size.clone(),
        );
        registry.register(
            "ipam_gc_released",
            "Leaked reservations released by the agent's GC",
            gc_released.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            endpoints,
            pool_used,
            pool_size,
            gc_released,
        }
    }

    pub fn observe(&self, verb: &str, ok: bool, took: Duration) {
        self.requests
            .get_or_create(&VerbLabels {
                verb: verb.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&VerbOnly {
                verb: verb.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
