//! Prometheus metrics of the agent. Request metrics are recorded where requests are
//! served; state gauges (endpoints, pool usage) are refreshed at scrape time from the
//! owners of that state, so they can never drift from it.
//!
//! Network policy's metrics (the end of this file): verdicts per policy, direction
//! and verdict, counted from the flow events (every denial; allowed flows once, on
//! their first packet), and the datapath's drops by reason, read from its per-CPU
//! counters at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod network;
pub use network::NetworkMetrics;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyVerdictLabels {
    /// `NS/NAME`, `cluster/NAME`, or `default` (no rule decided: the endpoint is not
    /// selected, or isolated and nothing allows).
    pub policy: String,
    pub direction: String,
    /// allowed, denied, audit (denied, passed in audit).
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerDirectionLabels {
    pub peer: String,
    pub direction: String,
}

pub struct Metrics {
    registry: Registry,
    pub policy_verdicts: Family<PolicyVerdictLabels, Counter>,
    pub policy_drops: Family<ReasonLabels, Counter>,
    pub policy_events_lost: Counter,
    /// The datapath's totals at the last scrape, to add what they grew by.
    policy_seen: Mutex<BTreeMap<String, u64>>,
    pub requests: Family<VerbLabels, Counter>,
    pub duration: Family<VerbOnly, Histogram>,
    pub endpoints: Gauge,
    pub pool_used: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub pool_size: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub gc_released: Counter,
    pub ipsec_peers: Gauge,
    pub ipsec_peers_up: Gauge,
    pub ipsec_packets: Family<PeerDirectionLabels, Counter>,
    pub ipsec_bytes: Family<PeerDirectionLabels, Counter>,
    pub ipsec_replay_failures: Family<PeerLabels, Counter>,
    pub ipsec_icv_failures: Family<PeerLabels, Counter>,
    pub ipsec_child_rekeys: Family<PeerLabels, Counter>,
    pub ipsec_auth_failures: Family<PeerLabels, Counter>,
    pub ipsec_drops: Family<ReasonLabels, Counter>,
    /// The engine's totals at the last scrape, to add what they grew by.
    ipsec_seen: Mutex<BTreeMap<String, u64>>,
    pub service_backends: Family<ServiceBackendLabels, Gauge>,
    pub service_connects: Family<ReasonLabels, Counter>,
    services_seen: Mutex<BTreeMap<String, u64>>,
    pub service_backend_connects: Family<ServiceBackendConnectLabels, Counter>,
    /// Each backend's datapath count at the last scrape, to add what it grew by.
    backend_connects_seen: Mutex<BTreeMap<ServiceBackendConnectLabels, u64>>,
    /// The fabric, BGP and the fast path.
    pub network: NetworkMetrics,
}

/// One backend of one frontend. Series come and go with the backends a node
/// serves (a backend gone from every view is dropped), so their number follows
/// the services, not the traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ServiceBackendConnectLabels {
    pub service: String,
    pub frontend: String,
    /// `10.244.1.5:8080`, `[fd00::5]:8080`.
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceBackendLabels {
    pub service: String,
    pub frontend: String,
    /// `usable`, `down` (its health check fails) or `unusable` (not ready, or not
    /// allowed by the traffic policy).
    pub state: String,
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
        let policy_verdicts = Family::<PolicyVerdictLabels, Counter>::default();
        let policy_drops = Family::<ReasonLabels, Counter>::default();
        let policy_events_lost = Counter::default();
        registry.register(
            "policy_verdicts",
            "Policy verdicts by deciding policy, direction and verdict (denials per packet, \
             allowed flows per connection)",
            policy_verdicts.clone(),
        );
        registry.register(
            "policy_drops",
            "Packets the policy datapath dropped, by reason",
            policy_drops.clone(),
        );
        registry.register(
            "policy_events_lost",
            "Flow events the datapath's ring buffer could not hold",
            policy_events_lost.clone(),
        );
        let ipsec_peers = Gauge::default();
        let ipsec_peers_up = Gauge::default();
        let ipsec_packets = Family::<PeerDirectionLabels, Counter>::default();
        let ipsec_bytes = Family::<PeerDirectionLabels, Counter>::default();
        let ipsec_replay_failures = Family::<PeerLabels, Counter>::default();
        let ipsec_icv_failures = Family::<PeerLabels, Counter>::default();
        let ipsec_child_rekeys = Family::<PeerLabels, Counter>::default();
        let ipsec_auth_failures = Family::<PeerLabels, Counter>::default();
        let ipsec_drops = Family::<ReasonLabels, Counter>::default();
        let service_backends = Family::<ServiceBackendLabels, Gauge>::default();
        let service_connects = Family::<ReasonLabels, Counter>::default();
        let service_backend_connects = Family::<ServiceBackendConnectLabels, Counter>::default();
        registry.register(
            "service_backend_connects",
            "Connections this node gave each backend of each service frontend: socket \
             connects, unconnected UDP datagrams, new flows from outside",
            service_backend_connects.clone(),
        );
        registry.register(
            "service_backends",
            "Backends of each service frontend on this node, by state",
            service_backends.clone(),
        );
        registry.register(
            "service_connects",
            "Connects (and unconnected sends) to service addresses, by outcome: translated \
             to a backend, refused for want of one",
            service_connects.clone(),
        );
        registry.register(
            "ipsec_peers",
            "Nodes this node encrypts with",
            ipsec_peers.clone(),
        );
        registry.register(
            "ipsec_peers_up",
            "Of those, the ones with an established IKE SA",
            ipsec_peers_up.clone(),
        );
        registry.register(
            "ipsec_packets",
            "ESP packets per peer and direction, over all SAs",
            ipsec_packets.clone(),
        );
        registry.register(
            "ipsec_bytes",
            "ESP payload bytes per peer and direction, over all SAs",
            ipsec_bytes.clone(),
        );
        registry.register(
            "ipsec_replay_failures",
            "ESP packets refused as replays, per peer",
            ipsec_replay_failures.clone(),
        );
        registry.register(
            "ipsec_icv_failures",
            "ESP packets whose integrity check failed, per peer",
            ipsec_icv_failures.clone(),
        );
        registry.register(
            "ipsec_child_rekeys",
            "Child SA rekeys, per peer",
            ipsec_child_rekeys.clone(),
        );
        registry.register(
            "ipsec_auth_failures",
            "IKE authentications that failed, per peer",
            ipsec_auth_failures.clone(),
        );
        registry.register(
            "ipsec_drops",
            "Packets the ESP datapath dropped rather than send in clear or deliver, by reason",
            ipsec_drops.clone(),
        );
        let network = NetworkMetrics::register(&mut registry);
        Self {
            network,
            ipsec_peers,
            ipsec_peers_up,
            ipsec_packets,
            ipsec_bytes,
            ipsec_replay_failures,
            ipsec_icv_failures,
            ipsec_child_rekeys,
            ipsec_auth_failures,
            ipsec_drops,
            ipsec_seen: Mutex::new(BTreeMap::new()),
            service_backends,
            service_connects,
            services_seen: Mutex::new(BTreeMap::new()),
            service_backend_connects,
            backend_connects_seen: Mutex::new(BTreeMap::new()),
            registry,
            policy_verdicts,
            policy_drops,
            policy_events_lost,
            policy_seen: Mutex::new(BTreeMap::new()),
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

    /// Brings the IPsec metrics up to the engine's `status`: gauges set, counters
    /// grown by what the totals grew since the last scrape.
    pub fn record_ipsec(&self, status: &strait_api::ipsec::IpsecStatus) {
        self.ipsec_peers.set(status.peers.len() as i64);
        let up = status.peers.iter().filter(|p| p.ike_state == "established");
        self.ipsec_peers_up.set(up.count() as i64);
        let mut seen = self.ipsec_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut grow = |key: String, total: u64, counter: &Counter| {
            let before = seen.insert(key, total).unwrap_or(0);
            counter.inc_by(total.saturating_sub(before));
        };
        for p in &status.peers {
            let t = &p.totals;
            let dir = |d: &str| PeerDirectionLabels {
                peer: p.name.clone(),
                direction: d.into(),
            };
            let peer = PeerLabels {
                peer: p.name.clone(),
            };
            let n = &p.name;
            grow(
                format!("pkts-in/{n}"),
                t.packets_in,
                &self.ipsec_packets.get_or_create(&dir("in")),
            );
            grow(
                format!("pkts-out/{n}"),
                t.packets_out,
                &self.ipsec_packets.get_or_create(&dir("out")),
            );
            grow(
                format!("bytes-in/{n}"),
                t.bytes_in,
                &self.ipsec_bytes.get_or_create(&dir("in")),
            );
            grow(
                format!("bytes-out/{n}"),
                t.bytes_out,
                &self.ipsec_bytes.get_or_create(&dir("out")),
            );
            grow(
                format!("replay/{n}"),
                t.replay_failures,
                &self.ipsec_replay_failures.get_or_create(&peer),
            );
            grow(
                format!("icv/{n}"),
                t.icv_failures,
                &self.ipsec_icv_failures.get_or_create(&peer),
            );
            grow(
                format!("rekeys/{n}"),
                t.child_rekeys,
                &self.ipsec_child_rekeys.get_or_create(&peer),
            );
            grow(
                format!("auth/{n}"),
                t.auth_failures,
                &self.ipsec_auth_failures.get_or_create(&peer),
            );
        }
        let d = &status.drops;
        for (reason, total) in [
            ("no_route", d.no_route),
            ("no_sa", d.no_sa),
            ("seal_failed", d.seal_failed),
            ("unknown_spi", d.unknown_spi),
            ("inner_refused", d.inner_refused),
            ("other", d.other),
        ] {
            let labels = ReasonLabels {
                reason: reason.into(),
            };
            grow(
                format!("drop/{reason}"),
                total,
                &self.ipsec_drops.get_or_create(&labels),
            );
        }
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

/// The policy datapath's counters, totals since its maps were made (they survive an
/// agent restart). A trait so the API and its tests need no kernel.
pub trait PolicyCounters: Send + Sync {
    /// Packets per reason (`denied_rule`, `allowed_reply`, …) and whether that reason
    /// drops the packet.
    fn by_reason(&self) -> Result<Vec<ReasonCount>, String>;
    /// Events the ring buffer could not hold.
    fn events_lost(&self) -> Result<u64, String>;
}

/// The eBPF datapath's per-CPU counters, summed.
impl PolicyCounters for crate::policy::datapath::PolicyDatapath {
    fn by_reason(&self) -> Result<Vec<ReasonCount>, String> {
        Ok(self
            .stats()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(reason, count)| ReasonCount {
                reason: reason.name().to_string(),
                dropped: reason.dropped(),
                count,
            })
            .collect())
    }

    fn events_lost(&self) -> Result<u64, String> {
        let stats = self.stats().map_err(|e| e.to_string())?;
        Ok(stats
            .get(&crate::policy::datapath::PolicyReason::EventsLost)
            .copied()
            .unwrap_or(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: String,
    pub dropped: bool,
    pub count: u64,
}

impl Metrics {
    /// One flow event, counted under the policy of its deciding rule.
    pub fn count_policy_verdict(&self, e: &strait_api::policy::FlowEvent) {
        let verdict = strait_api::policy_wire::verdict_of(e);
        self.policy_verdicts
            .get_or_create(&PolicyVerdictLabels {
                policy: e
                    .rule
                    .as_ref()
                    .map_or_else(|| "default".to_string(), |r| r.policy.clone()),
                direction: e.direction.clone(),
                verdict: verdict.as_str().to_string(),
            })
            .inc();
    }

    /// The datapath's totals read now: each counter grows by what its total grew by
    /// since the last read. A total that went down (the maps were made anew) counts
    /// from zero again.
    /// Services at scrape time: backends per frontend and state (label sets of gone
    /// frontends dropped), and the datapath's connect outcomes grown since the last
    /// read.
    pub fn record_services(
        &self,
        views: &[strait_api::services::ServiceView],
        counters: &[(String, u64)],
    ) {
        self.service_backends.clear();
        for v in views {
            for f in v.frontends.iter().filter(|f| !f.frontend.is_empty()) {
                let mut by_state: BTreeMap<&str, i64> =
                    [("usable", 0), ("down", 0), ("unusable", 0)].into();
                for b in &f.backends {
                    let state = match (b.usable, b.healthy) {
                        (true, _) => "usable",
                        (false, Some(false)) => "down",
                        (false, _) => "unusable",
                    };
                    *by_state.entry(state).or_default() += 1;
                }
                for (state, n) in by_state {
                    self.service_backends
                        .get_or_create(&ServiceBackendLabels {
                            service: v.name.clone(),
                            frontend: f.frontend.clone(),
                            state: state.to_string(),
                        })
                        .set(n);
                }
            }
        }
        self.record_backend_connects(views);
        let mut seen = self.services_seen.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, total) in counters {
            let last = seen.insert(reason.clone(), *total).unwrap_or(0);
            let grew = if *total >= last { total - last } else { *total };
            self.service_connects
                .get_or_create(&ReasonLabels {
                    reason: reason.clone(),
                })
                .inc_by(grew);
        }
    }

    /// Per backend, what its datapath count grew by since the last scrape. The
    /// datapath's count restarts at 0 when a backend leaves the table and comes
    /// back (health, readiness): that is counted from 0 again, so the counter never
    /// goes back. Backends in no view any more lose their series.
    fn record_backend_connects(&self, views: &[strait_api::services::ServiceView]) {
        let mut seen = self
            .backend_connects_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::BTreeSet::new();
        for v in views {
            for f in v.frontends.iter().filter(|f| !f.frontend.is_empty()) {
                for b in &f.backends {
                    let labels = ServiceBackendConnectLabels {
                        service: v.name.clone(),
                        frontend: f.frontend.clone(),
                        backend: std::net::SocketAddr::new(b.address, b.port).to_string(),
                    };
                    let last = seen.insert(labels.clone(), b.connections).unwrap_or(0);
                    let grew = if b.connections >= last {
                        b.connections - last
                    } else {
                        b.connections
                    };
                    self.service_backend_connects
                        .get_or_create(&labels)
                        .inc_by(grew);
                    present.insert(labels);
                }
            }
        }
        seen.retain(|labels, _| {
            let keep = present.contains(labels);
            if !keep {
                self.service_backend_connects.remove(labels);
            }
            keep
        });
    }

    pub fn record_policy_counters(&self, reasons: &[ReasonCount], events_lost: u64) {
        let mut seen = self.policy_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut grew = |key: String, total: u64| {
            let last = seen.insert(key, total).unwrap_or(0);
            if total >= last { total - last } else { total }
        };
        for r in reasons.iter().filter(|r| r.dropped) {
            let n = grew(format!("drop/{}", r.reason), r.count);
            self.policy_drops
                .get_or_create(&ReasonLabels {
                    reason: r.reason.clone(),
                })
                .inc_by(n);
        }
        let n = grew("events_lost".into(), events_lost);
        self.policy_events_lost.inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shop/web` with one cluster IP frontend of `backends`.
    fn web_view(
        backends: Vec<strait_api::services::BackendView>,
    ) -> strait_api::services::ServiceView {
        use strait_api::services::{FrontendView, ServiceView};
        ServiceView {
            name: "shop/web".into(),
            kind: "ClusterIP".into(),
            cluster_ips: vec![],
            external_ips: vec![],
            ports: vec![],
            frontends: vec![FrontendView {
                frontend: "10.96.0.10:80/TCP".into(),
                scope: "ClusterIP".into(),
                backends,
                table_size: 509,
                installed: true,
                error: None,
            }],
        }
    }
    use strait_api::policy::{FlowEvent, FlowPeer, RuleView};

    fn event(rule: Option<&str>, allowed: bool, audit: bool) -> FlowEvent {
        let peer = |a: &str| FlowPeer {
            address: a.parse().expect("ip"),
            port: 80,
            identity: 256,
            endpoint: None,
            namespace: None,
            labels: Default::default(),
        };
        FlowEvent {
            time_ns: 0,
            node: "n1".into(),
            direction: "ingress".into(),
            endpoint: None,
            src: peer("10.0.0.1"),
            dst: peer("10.0.0.2"),
            protocol: "tcp".into(),
            allowed,
            audit,
            rule: rule.map(|p| RuleView {
                id: 1,
                policy: p.into(),
                index: 0,
                action: "deny".into(),
                audit,
            }),
            log_rule: None,
        }
    }

    #[test]
    fn verdicts_are_counted_per_policy_direction_and_verdict() {
        let m = Metrics::new();
        m.count_policy_verdict(&event(Some("cluster/deny-db"), false, false));
        m.count_policy_verdict(&event(Some("cluster/deny-db"), false, false));
        m.count_policy_verdict(&event(Some("team-a/audit"), true, true));
        m.count_policy_verdict(&event(None, false, false));
        let text = m.encode();
        for line in [
            r#"strait_policy_verdicts_total{policy="cluster/deny-db",direction="ingress",verdict="denied"} 2"#,
            r#"strait_policy_verdicts_total{policy="team-a/audit",direction="ingress",verdict="audit"} 1"#,
            r#"strait_policy_verdicts_total{policy="default",direction="ingress",verdict="denied"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn drops_follow_the_datapaths_totals() {
        let m = Metrics::new();
        let reasons = |denied: u64, default: u64| {
            vec![
                ReasonCount {
                    reason: "denied_rule".into(),
                    dropped: true,
                    count: denied,
                },
                ReasonCount {
                    reason: "denied_default".into(),
                    dropped: true,
                    count: default,
                },
                ReasonCount {
                    reason: "allowed_reply".into(),
                    dropped: false,
                    count: 1000,
                },
            ]
        };
        m.record_policy_counters(&reasons(5, 2), 1);
        m.record_policy_counters(&reasons(8, 2), 4);
        // The maps were made anew: their counters start from zero.
        m.record_policy_counters(&reasons(1, 2), 4);
        let text = m.encode();
        for line in [
            r#"strait_policy_drops_total{reason="denied_rule"} 9"#,
            r#"strait_policy_drops_total{reason="denied_default"} 2"#,
            "strait_policy_events_lost_total 4",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("allowed_reply"), "{text}");
    }

    #[test]
    fn ipsec_counters_grow_by_what_the_totals_grew() {
        use strait_api::ipsec::{IpsecMode, IpsecPeer, IpsecStatus, PeerTotals};
        let m = Metrics::new();
        let status = |bytes_out: u64, rekeys: u64| IpsecStatus {
            node: "h1".into(),
            site: "dc".into(),
            mode: IpsecMode::CrossSite,
            datapath: Some("userspace".into()),
            datapath_reason: None,
            mtu: Some(1385),
            peers: vec![IpsecPeer {
                name: "h3".into(),
                site: "cloud".into(),
                address: None,
                ike_state: "established".into(),
                initiator: true,
                ike_algorithms: None,
                established_secs: Some(1),
                ike_rekeys: 0,
                child_rekeys: 0,
                last_dpd_secs: None,
                nat: false,
                child_sas: vec![],
                last_error: None,
                totals: PeerTotals {
                    bytes_out,
                    child_rekeys: rekeys,
                    ..Default::default()
                },
            }],
            drops: Default::default(),
        };
        m.record_ipsec(&status(1000, 1));
        m.record_ipsec(&status(1500, 3));
        // Scraped again without change: nothing is counted twice.
        m.record_ipsec(&status(1500, 3));
        let text = m.encode();
        for line in [
            "strait_ipsec_peers_up 1",
            r#"strait_ipsec_bytes_total{peer="h3",direction="out"} 1500"#,
            r#"strait_ipsec_child_rekeys_total{peer="h3"} 3"#,
            r#"strait_ipsec_drops_total{reason="no_sa"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn service_backends_by_state_and_connects_by_outcome() {
        use strait_api::services::BackendView;
        let backend = |usable: bool, healthy: Option<bool>| BackendView {
            address: "10.244.0.2".parse().unwrap(),
            port: 8080,
            node: Some("h1".into()),
            ready: true,
            healthy,
            usable,
            slots: 0,
            connections: 0,
            origin: "h1/c".into(),
        };
        let m = Metrics::new();
        m.record_services(
            &[web_view(vec![
                backend(true, Some(true)),
                backend(false, Some(false)),
            ])],
            &[("translated".into(), 10)],
        );
        m.record_services(
            &[web_view(vec![backend(true, None)])],
            &[("translated".into(), 25)],
        );
        let text = m.encode();
        for line in [
            r#"strait_service_backends{service="shop/web",frontend="10.96.0.10:80/TCP",state="usable"} 1"#,
            r#"strait_service_backends{service="shop/web",frontend="10.96.0.10:80/TCP",state="down"} 0"#,
            r#"strait_service_connects_total{reason="translated"} 25"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // A service gone: its gauges go too.
        m.record_services(&[], &[]);
        assert!(!m.encode().contains("shop/web"));
    }

    #[test]
    fn backend_connects_only_grow_and_leave_with_their_backend() {
        use strait_api::services::BackendView;
        let backend = |addr: &str, connections: u64| BackendView {
            address: addr.parse().unwrap(),
            port: 8080,
            node: None,
            ready: true,
            healthy: None,
            usable: true,
            slots: 1,
            connections,
            origin: "h1/c".into(),
        };
        let series = |addr: &str| {
            format!(
                r#"strait_service_backend_connects_total{{service="shop/web",frontend="10.96.0.10:80/TCP",backend="{addr}:8080"}}"#
            )
        };
        let value = |m: &Metrics, addr: &str| -> Option<u64> {
            let want = series(addr);
            m.encode()
                .lines()
                .find_map(|l| l.strip_prefix(&want))
                .map(|v| v.trim().parse().unwrap())
        };
        let m = Metrics::new();
        m.record_services(
            &[web_view(vec![
                backend("10.244.0.2", 7),
                backend("10.244.0.3", 4),
            ])],
            &[],
        );
        assert_eq!(value(&m, "10.244.0.2"), Some(7));
        assert_eq!(value(&m, "10.244.0.3"), Some(4));
        m.record_services(
            &[web_view(vec![
                backend("10.244.0.2", 10),
                backend("10.244.0.3", 4),
            ])],
            &[],
        );
        assert_eq!(value(&m, "10.244.0.2"), Some(10));
        // .2 left the table and came back (the datapath counts from 0 again); .3
        // left the service.
        m.record_services(&[web_view(vec![backend("10.244.0.2", 2)])], &[]);
        assert_eq!(value(&m, "10.244.0.2"), Some(12), "never backwards");
        assert_eq!(
            value(&m, "10.244.0.3"),
            None,
            "a gone backend's series goes"
        );
    }
}
