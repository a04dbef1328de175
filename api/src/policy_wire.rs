//! The policy API's own requests and answers around [`crate::policy`]'s views: what
//! an apply changed per object (for kubectl-like output), a trace request, the
//! monitor's filter (as a query string, and the match the agent applies) and the
//! lines of its NDJSON stream.

use serde::{Deserialize, Serialize};

use crate::policy::{ApplyOutcome, FlowEvent};

/// What `POST /v1/policies` answers: the [`ApplyOutcome`] (its fields at the top
/// level, so a client that reads only those still can) and, per object, whether the
/// apply created it, changed it or found it as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    #[serde(flatten)]
    pub outcome: ApplyOutcome,
    #[serde(default)]
    pub objects: Vec<AppliedObject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedObject {
    /// As `list` names it (`policy/k8s/NS/NAME`, `policy/cluster/NAME`,
    /// `namespaces/NAME`).
    pub key: String,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// What `DELETE /v1/policies/KEY` answers (404 when there was no such object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOutcome {
    pub key: String,
    /// The store revision after the delete (for `netctl policy status --wait-revision`).
    pub revision: i64,
}

/// `POST /v1/policy/trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// An endpoint id, `[NS/]k=v,...`, or an address or CIDR.
    pub from: String,
    pub to: String,
    /// The IP protocol number (6 tcp, 17 udp, 132 sctp, 1 icmp, 58 icmpv6).
    pub protocol: u8,
    /// The destination port, or for ICMP `type << 8 | code`.
    pub port: u16,
}

/// Parses `80/tcp`, `53/udp`, `5000/sctp`, `8/icmp` (type 8, code 0), `3:1/icmp`
/// (type 3, code 1), `128/icmpv6`; a bare port is TCP. Returns (protocol, port).
pub fn parse_port_spec(spec: &str) -> Result<(u8, u16), String> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" => 58,
        other => {
            return Err(format!(
                "{spec:?}: unknown protocol {other:?} (tcp, udp, sctp, icmp, icmpv6)"
            ));
        }
    };
    let number = |s: &str, what: &str, max: u16| {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{spec:?}: {what} {s:?} is not a number from 0 to {max}"))
    };
    let port = if matches!(protocol, 1 | 58) {
        let (t, c) = port.split_once(':').unwrap_or((port, "0"));
        number(t, "ICMP type", 255)? << 8 | number(c, "ICMP code", 255)?
    } else {
        let p = number(port, "port", u16::MAX)?;
        if p == 0 {
            return Err(format!("{spec:?}: port 0 is not a destination port"));
        }
        p
    };
    Ok((protocol, port))
}

/// Which flow events `netctl monitor` wants; the agent filters before sending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorFilter {
    pub verdict: Option<VerdictFilter>,
    /// Either side is this endpoint (or the verdict was made for it).
    pub endpoint: Option<String>,
    /// Either side is in this namespace.
    pub namespace: Option<String>,
    /// Either side's port.
    pub port: Option<u16>,
    /// Also service translations (`{"xlate": …}` lines). Asked for by the client,
    /// so an older `netctl`, which cannot read them, never gets them.
    #[serde(default)]
    pub translations: bool,
    /// Only the translations to this service (`NS/NAME`), and no flow events.
    #[serde(default)]
    pub service: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictFilter {
    /// Dropped (not those audit let pass).
    Denied,
    /// Passed without a deny, audit or not.
    Allowed,
    /// Denied by policy but passed because of audit.
    Audit,
}

impl std::str::FromStr for VerdictFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "denied" => Ok(Self::Denied),
            "allowed" => Ok(Self::Allowed),
            "audit" => Ok(Self::Audit),
            other => Err(format!(
                "unknown verdict {other:?}: use denied, allowed or audit"
            )),
        }
    }
}

impl VerdictFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Allowed => "allowed",
            Self::Audit => "audit",
        }
    }
}

/// The verdict of one event as the filter and `netctl monitor` name it: an audit
/// event is one a deny would have dropped.
pub fn verdict_of(e: &FlowEvent) -> VerdictFilter {
    match (e.allowed, e.audit) {
        (false, _) => VerdictFilter::Denied,
        (true, true) => VerdictFilter::Audit,
        (true, false) => VerdictFilter::Allowed,
    }
}

impl MonitorFilter {
    pub fn matches(&self, e: &FlowEvent) -> bool {
        let sides = [&e.src, &e.dst];
        self.service.is_none()
            && self.verdict.is_none_or(|v| verdict_of(e) == v)
            && self.endpoint.as_deref().is_none_or(|id| {
                e.endpoint.as_deref() == Some(id)
                    || sides.iter().any(|p| p.endpoint.as_deref() == Some(id))
            })
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| sides.iter().any(|p| p.namespace.as_deref() == Some(ns)))
            && self
                .port
                .is_none_or(|port| sides.iter().any(|p| p.port == port))
    }

    /// Whether a translation is shown: asked for, and neither a verdict nor an
    /// endpoint asked for (a translation has neither); the namespace is the
    /// service's, the port the frontend's or the backend's.
    pub fn matches_translation(&self, t: &TranslationEvent) -> bool {
        let ns = t
            .service
            .as_deref()
            .and_then(|s| s.split_once('/'))
            .map(|(ns, _)| ns);
        (self.translations || self.service.is_some())
            && self.verdict.is_none()
            && self.endpoint.is_none()
            && self
                .service
                .as_deref()
                .is_none_or(|s| t.service.as_deref() == Some(s))
            && self.namespace.as_deref().is_none_or(|n| ns == Some(n))
            && self
                .port
                .is_none_or(|p| t.frontend.port() == p || t.backend.port() == p)
    }

    /// As a query string for [`crate::paths::POLICY_MONITOR`] (empty, or `?k=v&…`).
    /// Values are percent-encoded where they could end a parameter.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.verdict {
            parts.push(format!("verdict={}", v.as_str()));
        }
        if let Some(e) = &self.endpoint {
            parts.push(format!("endpoint={}", crate::query::escape(e)));
        }
        if let Some(n) = &self.namespace {
            parts.push(format!("namespace={}", crate::query::escape(n)));
        }
        if let Some(p) = self.port {
            parts.push(format!("port={p}"));
        }
        if self.translations {
            parts.push("translations=true".into());
        }
        if let Some(svc) = &self.service {
            parts.push(format!("service={}", crate::query::escape(svc)));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// One line of the monitor's stream: an event, or how many the client missed
/// (its buffer in the agent overflowed, or the kernel's ring buffer did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MonitorLine {
    Lost {
        lost: u64,
    },
    Event(Box<FlowEvent>),
    /// `{"xlate": …}`: a service translation (only when the client asked).
    Translation {
        xlate: Box<TranslationEvent>,
    },
}

/// One service translation: a client sent to a backend instead of the service
/// address it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslationEvent {
    /// Unix time, nanoseconds (when the agent read it).
    pub time_ns: u64,
    pub node: String,
    /// `socket` (a connect), `sendmsg` (an unconnected UDP datagram), `nat` or
    /// `nat-snat` (a new flow from outside the node, SNATed to it with `nat-snat`).
    pub via: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// A packet's source; none for a socket (not bound yet when it connects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<std::net::SocketAddr>,
    /// A socket's process, network namespace cookie and cgroup v2 id (0 for a
    /// packet).
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub netns_cookie: u64,
    #[serde(default)]
    pub cgroup_id: u64,
    /// The process's name when the agent could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub frontend: std::net::SocketAddr,
    pub backend: std::net::SocketAddr,
    /// `NS/NAME` and the port's name, from this node's plan (none when the
    /// frontend is no longer planned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FlowPeer;

    fn event(allowed: bool, audit: bool) -> FlowEvent {
        let peer = |a: &str, port, ep: &str, ns: &str| FlowPeer {
            address: a.parse().unwrap(),
            port,
            identity: 300,
            endpoint: Some(ep.into()),
            namespace: Some(ns.into()),
            labels: [("app".to_string(), "web".to_string())].into(),
        };
        FlowEvent {
            time_ns: 1,
            node: "h1".into(),
            direction: "ingress".into(),
            endpoint: Some("b".into()),
            src: peer("10.0.0.2", 40000, "a", "team-a"),
            dst: peer("10.0.0.3", 80, "b", "team-b"),
            protocol: "tcp".into(),
            allowed,
            audit,
            rule: None,
            log_rule: None,
        }
    }

    #[test]
    fn port_specs_parse_or_say_why_not() {
        assert_eq!(parse_port_spec("80/tcp"), Ok((6, 80)));
        assert_eq!(parse_port_spec("53/UDP"), Ok((17, 53)));
        assert_eq!(parse_port_spec("8080"), Ok((6, 8080)));
        assert_eq!(parse_port_spec("8/icmp"), Ok((1, 8 << 8)));
        assert_eq!(parse_port_spec("3:1/icmp"), Ok((1, 3 << 8 | 1)));
        assert_eq!(parse_port_spec("128/icmpv6"), Ok((58, 128 << 8)));
        assert!(
            parse_port_spec("80/gre")
                .unwrap_err()
                .contains("unknown protocol")
        );
        assert!(parse_port_spec("70000/tcp").unwrap_err().contains("port"));
        assert!(parse_port_spec("0/udp").unwrap_err().contains("port 0"));
        assert!(
            parse_port_spec("300/icmp")
                .unwrap_err()
                .contains("ICMP type")
        );
    }

    #[test]
    fn the_filter_matches_verdicts_sides_and_ports() {
        let denied = event(false, false);
        let audit = event(true, true);
        let allowed = event(true, false);
        let only = |v| MonitorFilter {
            verdict: Some(v),
            ..Default::default()
        };
        assert!(only(VerdictFilter::Denied).matches(&denied));
        assert!(!only(VerdictFilter::Denied).matches(&audit));
        assert!(only(VerdictFilter::Audit).matches(&audit));
        assert!(!only(VerdictFilter::Allowed).matches(&audit));
        assert!(only(VerdictFilter::Allowed).matches(&allowed));
        assert!(MonitorFilter::default().matches(&denied));
        let f = |endpoint: Option<&str>, namespace: Option<&str>, port| MonitorFilter {
            verdict: None,
            endpoint: endpoint.map(str::to_string),
            namespace: namespace.map(str::to_string),
            port,
            ..Default::default()
        };
        assert!(f(Some("a"), None, None).matches(&denied));
        assert!(!f(Some("c"), None, None).matches(&denied));
        assert!(f(None, Some("team-b"), Some(80)).matches(&denied));
        assert!(!f(None, Some("team-c"), None).matches(&denied));
        assert!(!f(None, None, Some(81)).matches(&denied));
    }

    #[test]
    fn the_filter_becomes_a_query() {
        assert_eq!(MonitorFilter::default().to_query(), "");
        let q = MonitorFilter {
            verdict: Some(VerdictFilter::Denied),
            endpoint: Some("n.c 1&x".into()),
            namespace: None,
            port: Some(80),
            ..Default::default()
        }
        .to_query();
        assert_eq!(q, "?verdict=denied&endpoint=n.c%201%26x&port=80");
    }

    #[test]
    fn monitor_lines_tell_events_from_losses() {
        let xlate = TranslationEvent {
            time_ns: 1,
            node: "h1".into(),
            via: "socket".into(),
            protocol: "tcp".into(),
            client: None,
            pid: 42,
            netns_cookie: 4096,
            cgroup_id: 7,
            command: Some("curl".into()),
            frontend: "10.96.0.10:80".parse().unwrap(),
            backend: "10.244.2.3:8080".parse().unwrap(),
            service: Some("shop/web".into()),
            port_name: Some("http".into()),
        };
        let text = serde_json::to_string(&MonitorLine::Translation {
            xlate: Box::new(xlate.clone()),
        })
        .unwrap();
        assert!(text.starts_with(r#"{"xlate":"#), "{text}");
        let back: MonitorLine = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            MonitorLine::Translation {
                xlate: Box::new(xlate.clone())
            }
        );
        // Filters: asked for or not, by service, namespace and port; never with a
        // verdict or an endpoint.
        let f = |f: MonitorFilter| f.matches_translation(&xlate);
        assert!(!f(MonitorFilter::default()), "only when asked");
        assert!(f(MonitorFilter {
            translations: true,
            ..Default::default()
        }));
        assert!(f(MonitorFilter {
            service: Some("shop/web".into()),
            ..Default::default()
        }));
        assert!(!f(MonitorFilter {
            service: Some("shop/db".into()),
            ..Default::default()
        }));
        assert!(f(MonitorFilter {
            translations: true,
            namespace: Some("shop".into()),
            port: Some(8080),
            ..Default::default()
        }));
        assert!(!f(MonitorFilter {
            translations: true,
            port: Some(81),
            ..Default::default()
        }));
        assert!(!f(MonitorFilter {
            translations: true,
            verdict: Some(VerdictFilter::Denied),
            ..Default::default()
        }));
        assert!(
            !MonitorFilter {
                service: Some("shop/web".into()),
                ..Default::default()
            }
            .matches(&event(true, false)),
            "a service filter shows translations only"
        );
        assert_eq!(
            MonitorFilter {
                translations: true,
                service: Some("shop/web".into()),
                ..Default::default()
            }
            .to_query(),
            "?translations=true&service=shop%2Fweb"
        );

        let line: MonitorLine = serde_json::from_str(r#"{"lost": 7}"#).unwrap();
        assert_eq!(line, MonitorLine::Lost { lost: 7 });
        let e = event(false, false);
        let text = serde_json::to_string(&MonitorLine::Event(Box::new(e.clone()))).unwrap();
        assert!(!text.contains("\n"));
        let back: MonitorLine = serde_json::from_str(&text).unwrap();
        assert_eq!(back, MonitorLine::Event(Box::new(e)));
    }
}
