//! The network's own metrics: the fabric's reconciliations and its drift from the
//! kernel, BGP sessions and their prefixes, the forwarding fast path's counters. All
//! are read at scrape time from their owners (the fabric's report, the speaker's peer
//! table, the programs' per-CPU counters), so they never drift from `netctl routes`,
//! `netctl bgp peers` and `netctl fastpath`, which show the same numbers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strait_api::bgp::BgpPeerStatus;
use strait_api::routes::{EntryKind, EntryState, RouteReport};

use super::{PeerLabels, ReasonLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// `route`, `fdb`, `neighbour`, `address`.
    pub kind: String,
    /// `missing` (wanted, not in the kernel) or `stale` (strait's, no longer wanted).
    pub state: String,
}

pub struct NetworkMetrics {
    fabric_reconciles: Family<ResultLabels, Counter>,
    fabric_drift: Family<DriftLabels, Gauge>,
    bgp_established: Family<PeerLabels, Gauge>,
    bgp_received: Family<PeerLabels, Gauge>,
    bgp_advertised: Family<PeerLabels, Gauge>,
    fastpath_packets: Family<ReasonLabels, Counter>,
    /// Totals at the last scrape, to grow the counters by what their sources grew.
    seen: Mutex<BTreeMap<String, u64>>,
}

impl NetworkMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            fabric_reconciles: Family::default(),
            fabric_drift: Family::default(),
            bgp_established: Family::default(),
            bgp_received: Family::default(),
            bgp_advertised: Family::default(),
            fastpath_packets: Family::default(),
            seen: Mutex::new(BTreeMap::new()),
        };
        registry.register(
            "fabric_reconciles",
            "Fabric reconciliations of routes, FDB and neighbours against the kernel, by result",
            m.fabric_reconciles.clone(),
        );
        registry.register(
            "fabric_drift",
            "Fabric entries that differ from the kernel now: missing or stale, by kind \
             (what netctl routes lists)",
            m.fabric_drift.clone(),
        );
        registry.register(
            "bgp_session_established",
            "1 while the BGP session with the peer is Established, else 0",
            m.bgp_established.clone(),
        );
        registry.register(
            "bgp_prefixes_received",
            "Prefixes the peer announces to this node",
            m.bgp_received.clone(),
        );
        registry.register(
            "bgp_prefixes_advertised",
            "Prefixes this node announces to the peer",
            m.bgp_advertised.clone(),
        );
        registry.register(
            "fastpath_packets",
            "Packets the eBPF fast path counted, by reason (fwd_fabric, fwd_endpoint, \
             pass_*: handed to the kernel's forwarding)",
            m.fastpath_packets.clone(),
        );
        m
    }

    /// The fabric as `netctl routes` shows it: reconciliations grown to its totals,
    /// drift counted afresh.
    pub fn record_fabric(&self, report: &RouteReport) {
        let ok = report.reconciles.saturating_sub(report.reconcile_errors);
        self.grow(
            "fabric/ok",
            ok,
            &self.fabric_reconciles,
            ResultLabels {
                result: "ok".into(),
            },
        );
        self.grow(
            "fabric/error",
            report.reconcile_errors,
            &self.fabric_reconciles,
            ResultLabels {
                result: "error".into(),
            },
        );
        self.fabric_drift.clear();
        for kind in [
            EntryKind::Route,
            EntryKind::Fdb,
            EntryKind::Neighbour,
            EntryKind::Address,
        ] {
            for state in [EntryState::Missing, EntryState::Stale] {
                let n = report
                    .entries
                    .iter()
                    .filter(|e| e.kind == kind && e.state == state)
                    .count();
                let labels = DriftLabels {
                    kind: word(&kind),
                    state: word(&state),
                };
                self.fabric_drift.get_or_create(&labels).set(n as i64);
            }
        }
    }

    /// The speaker's sessions; a peer gone from the table is gone from the metrics.
    pub fn record_bgp(&self, peers: &[BgpPeerStatus]) {
        self.bgp_established.clear();
        self.bgp_received.clear();
        self.bgp_advertised.clear();
        for p in peers {
            let labels = PeerLabels {
                peer: p.name.clone(),
            };
            self.bgp_established
                .get_or_create(&labels)
                .set(i64::from(p.established()));
            let received = i64::try_from(p.prefixes_received).unwrap_or(i64::MAX);
            self.bgp_received.get_or_create(&labels).set(received);
            let sent = i64::try_from(p.prefixes_sent).unwrap_or(i64::MAX);
            self.bgp_advertised.get_or_create(&labels).set(sent);
        }
    }

    /// The fast path's counters by reason, totals since its programs were loaded.
    pub fn record_fast_path(&self, by_reason: &BTreeMap<String, u64>) {
        for (reason, total) in by_reason {
            self.grow(
                &format!("fastpath/{reason}"),
                *total,
                &self.fastpath_packets,
                ReasonLabels {
                    reason: reason.clone(),
                },
            );
        }
    }

    fn grow<L>(&self, key: &str, total: u64, family: &Family<L, Counter>, labels: L)
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
    {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let before = seen.insert(key.to_string(), total).unwrap_or(0);
        // A source that restarted from zero (new programs) counts again from there.
        let grown = if total >= before {
            total - before
        } else {
            total
        };
        family.get_or_create(&labels).inc_by(grown);
    }
}

/// The kebab-case word the API uses for a kind or state.
fn word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::routes::ReportEntry;

    fn has(out: &str, line: &str) {
        assert!(out.contains(line), "{line} not in:\n{out}");
    }

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn fabric_reconciles_and_drift_follow_the_report() {
        let mut registry = Registry::with_prefix("strait");
        let m = NetworkMetrics::register(&mut registry);
        let entry = |kind, state| ReportEntry {
            kind,
            node: Some("h2".into()),
            entry: "x".into(),
            state,
        };
        let mut report = RouteReport {
            reconciles: 10,
            reconcile_errors: 2,
            entries: vec![
                entry(EntryKind::Fdb, EntryState::Missing),
                entry(EntryKind::Route, EntryState::Ok),
                entry(EntryKind::Route, EntryState::Stale),
            ],
            ..Default::default()
        };
        m.record_fabric(&report);
        let out = scrape(&registry);
        has(&out, r#"strait_fabric_reconciles_total{result="ok"} 8"#);
        has(&out, r#"strait_fabric_reconciles_total{result="error"} 2"#);
        has(&out, r#"strait_fabric_drift{kind="fdb",state="missing"} 1"#);
        has(&out, r#"strait_fabric_drift{kind="route",state="stale"} 1"#);
        report.reconciles = 13;
        report.entries.clear();
        m.record_fabric(&report);
        let out = scrape(&registry);
        has(&out, r#"strait_fabric_reconciles_total{result="ok"} 11"#);
        has(&out, r#"strait_fabric_drift{kind="fdb",state="missing"} 0"#);
    }

    #[test]
    fn bgp_peers_come_and_go_with_the_speakers_table() {
        let mut registry = Registry::with_prefix("strait");
        let m = NetworkMetrics::register(&mut registry);
        let peer = |name: &str, state: &str| BgpPeerStatus {
            address: "10.0.0.2".parse().unwrap(),
            port: 179,
            asn: 64512,
            kind: strait_api::bgp::PeerKind::Node,
            name: name.into(),
            state: state.into(),
            uptime_secs: None,
            prefixes_received: 3,
            prefixes_accepted: 3,
            prefixes_sent: 2,
            prefixes_refused: 0,
            bfd: None,
            last_error: None,
        };
        m.record_bgp(&[peer("h2", "Established"), peer("tor", "Active")]);
        let out = scrape(&registry);
        has(&out, r#"strait_bgp_session_established{peer="h2"} 1"#);
        has(&out, r#"strait_bgp_session_established{peer="tor"} 0"#);
        has(&out, r#"strait_bgp_prefixes_received{peer="h2"} 3"#);
        has(&out, r#"strait_bgp_prefixes_advertised{peer="h2"} 2"#);
        m.record_bgp(&[peer("h2", "Established")]);
        assert!(!scrape(&registry).contains(r#"peer="tor""#));
    }

    #[test]
    fn fast_path_counters_grow_by_what_the_programs_counted() {
        let mut registry = Registry::with_prefix("strait");
        let m = NetworkMetrics::register(&mut registry);
        let totals = |n| BTreeMap::from([("fwd_fabric".to_string(), n)]);
        m.record_fast_path(&totals(5));
        m.record_fast_path(&totals(9));
        let out = scrape(&registry);
        has(
            &out,
            r#"strait_fastpath_packets_total{reason="fwd_fabric"} 9"#,
        );
        // New programs count from zero again: the counter goes on growing.
        m.record_fast_path(&totals(4));
        let out = scrape(&registry);
        has(
            &out,
            r#"strait_fastpath_packets_total{reason="fwd_fabric"} 13"#,
        );
    }
}
