//! Kubernetes `v1` Service, checked as the API server checks it (ports, names, IPs and
//! families, affinity, traffic policies), with its defaulting (protocol TCP,
//! `targetPort` = `port`, `SingleStack`, affinity timeout 3 h), turned into
//! [`Service`]. strait's own knobs are annotations: `strait.io/health-check`
//! (`tcp`, or `http:` and a path) and `strait.io/health-check-interval` (`500ms`,
//! `2s`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use strait_policy::doc::{
    Invalid, Metadata, NameRule, Node, Obj, PortValue, Result, dns1123_label, labels, metadata,
    port_number, port_value,
};

use super::{DEFAULT_NAMESPACE, Failed, one_of};
use crate::model::{
    CheckKind, DEFAULT_AFFINITY_SECS, Family, FamilyPolicy, HealthCheck, MAX_AFFINITY_SECS,
    NODE_PORTS, Protocol, Service, ServiceKind, ServicePort, TargetPort,
};

pub(super) const KIND: &str = "Service";
pub(super) const API_VERSION: &str = "v1";

pub const HEALTH_CHECK_ANNOTATION: &str = "strait.io/health-check";
pub const HEALTH_INTERVAL_ANNOTATION: &str = "strait.io/health-check-interval";
/// A backend leaves after this many failed checks in a row, and comes back after as
/// many passed: at the default interval, out within a second.
const FALL: u8 = 2;
const RISE: u8 = 2;
const DEFAULT_INTERVAL_MS: u32 = 500;
const INTERVAL_MS: std::ops::RangeInclusive<u32> = 100..=60_000;

/// Every `ServiceSpec` field; those strait cannot honour are refused by name below.
const SPEC_FIELDS: &[&str] = &[
    "ports",
    "selector",
    "clusterIP",
    "clusterIPs",
    "type",
    "externalIPs",
    "sessionAffinity",
    "sessionAffinityConfig",
    "ipFamilies",
    "ipFamilyPolicy",
    "internalTrafficPolicy",
    "externalTrafficPolicy",
    "publishNotReadyAddresses",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "loadBalancerClass",
    "allocateLoadBalancerNodePorts",
    "healthCheckNodePort",
    "externalName",
    "trafficDistribution",
];

pub(super) fn parse(node: &Node<'_>) -> std::result::Result<Service, Failed> {
    let root = node.obj().map_err(|e| (None, e))?;
    root.only(&["apiVersion", "kind", "metadata", "spec", "status"])
        .map_err(|e| (None, e))?;
    let meta = metadata(&root, NameRule::Label).map_err(|e| (None, e))?;
    let namespace = meta
        .namespace()
        .map_err(|e| (None, e))?
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let object = Some(format!("{KIND} {namespace}/{}", meta.name));
    spec(&root, &meta, namespace).map_err(|e| (object, e))
}

fn spec(root: &Obj<'_>, meta: &Metadata<'_>, namespace: String) -> Result<Service> {
    let spec = root.required("spec")?.obj()?;
    spec.only(SPEC_FIELDS)?;
    let kind = match spec.get("type") {
        None => ServiceKind::ClusterIP,
        Some(node) => match one_of(
            &node,
            &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        )? {
            "ClusterIP" => ServiceKind::ClusterIP,
            "NodePort" => ServiceKind::NodePort,
            "LoadBalancer" => {
                return Err(node.invalid(
                    "strait has no provider of load-balancer addresses: use NodePort, or \
                     externalIPs with the addresses you route to the nodes",
                ));
            }
            _ => {
                return Err(node.invalid(
                    "ExternalName is a DNS alias, and strait serves no DNS: such a service \
                     has no virtual IP to balance",
                ));
            }
        },
    };
    for &field in super::LOAD_BALANCER_FIELDS {
        if let Some(node) = spec.get(field) {
            return Err(node.invalid("may only be used when `type` is 'LoadBalancer'"));
        }
    }
    if let Some(node) = spec.get("externalName") {
        return Err(node.invalid("may only be used when `type` is 'ExternalName'"));
    }
    if let Some(node) = spec.get("trafficDistribution") {
        return Err(node.invalid(
            "strait does not implement trafficDistribution (topology-aware routing); \
             internalTrafficPolicy: Local keeps traffic on the client's node",
        ));
    }

    let cluster_ips = cluster_ips(&spec)?;
    let (ip_families, ip_family_policy) = families(&spec, &cluster_ips)?;
    let ports = ports(&spec, kind)?;
    let selector = match spec.get("selector") {
        None => None,
        Some(node) => Some(labels(&node)?),
    };
    let external_ips = match spec.get("externalIPs") {
        None => Vec::new(),
        Some(list) => {
            let mut seen = BTreeSet::new();
            let mut ips = Vec::new();
            for item in list.list()? {
                let ip = address(&item)?;
                if !seen.insert(ip) {
                    return Err(item.invalid(format!("duplicate value {ip}")));
                }
                ips.push(ip);
            }
            ips
        }
    };
    let affinity_secs = affinity(&spec)?;
    let internal_local = match spec.get("internalTrafficPolicy") {
        None => false,
        Some(node) => one_of(&node, &["Cluster", "Local"])? == "Local",
    };
    let external_local = match spec.get("externalTrafficPolicy") {
        None => false,
        Some(node) => {
            let local = one_of(&node, &["Cluster", "Local"])? == "Local";
            if kind != ServiceKind::NodePort && external_ips.is_empty() {
                return Err(node.invalid(
                    "may only be set when `type` is 'NodePort' or the service has externalIPs",
                ));
            }
            local
        }
    };
    let publish_not_ready = match spec.get("publishNotReadyAddresses") {
        None => false,
        Some(node) => node.bool()?,
    };
    let health_check = health_check(meta)?;
    if health_check.is_some() && !ports.iter().any(|p| p.protocol == Protocol::TCP) {
        return Err(Invalid::new(
            &meta.path("annotations"),
            format!(
                "{HEALTH_CHECK_ANNOTATION}: the check connects to the first TCP port, and                  this service has none"
            ),
        ));
    }
    Ok(Service {
        namespace,
        name: meta.name.clone(),
        kind,
        cluster_ips,
        ip_families,
        ip_family_policy,
        ports,
        selector,
        external_ips,
        affinity_secs,
        internal_local,
        external_local,
        publish_not_ready,
        health_check,
    })
}

fn address(node: &Node<'_>) -> Result<IpAddr> {
    let s = node.str()?;
    s.parse::<IpAddr>()
        .map_err(|_| node.invalid(format!("{s:?}: must be a valid IP address")))
}

/// `clusterIP` and `clusterIPs`: empty (the agent allocates), or one address per
/// family; `None` (headless) is refused.
fn cluster_ips(spec: &Obj<'_>) -> Result<Vec<IpAddr>> {
    let single = spec.get("clusterIP");
    let list = spec.get("clusterIPs");
    let mut given: Vec<(Node<'_>, &str)> = Vec::new();
    if let Some(list) = &list {
        for item in list.list()? {
            let s = item.str()?;
            given.push((item, s));
        }
    }
    if let Some(node) = &single {
        let s = node.str()?;
        match given.first() {
            None => given.push((node.clone(), s)),
            Some((_, first)) if *first == s => {}
            Some((_, first)) => {
                return Err(node.invalid(format!(
                    "must be the first of clusterIPs ({first:?}), not {s:?}"
                )));
            }
        }
    }
    if given.iter().any(|(_, s)| *s == "None") {
        let node = &given.iter().find(|(_, s)| *s == "None").expect("found").0;
        return Err(node.invalid(
            "headless services (clusterIP: None) are served by DNS alone, which strait \
             does not do: leave clusterIP empty, or give one",
        ));
    }
    if given.iter().all(|(_, s)| s.is_empty()) {
        return Ok(Vec::new());
    }
    if given.len() > 2 {
        return Err(given[2]
            .0
            .invalid("at most two cluster IPs, one per family"));
    }
    let mut ips = Vec::new();
    for (node, _) in &given {
        let ip = address(node)?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(node.invalid(format!("{ip} cannot be a service address")));
        }
        if ips.iter().any(|other| Family::of(other) == Family::of(&ip)) {
            return Err(node.invalid("the cluster IPs must be of different families"));
        }
        ips.push(ip);
    }
    Ok(ips)
}

/// `ipFamilies` and `ipFamilyPolicy`, with Kubernetes' defaulting: the families of
/// the given cluster IPs, else IPv4 (and IPv6 when the policy asks for two).
fn families(spec: &Obj<'_>, cluster_ips: &[IpAddr]) -> Result<(Vec<Family>, FamilyPolicy)> {
    let policy_node = spec.get("ipFamilyPolicy");
    let policy = match &policy_node {
        None if cluster_ips.len() == 2 => FamilyPolicy::RequireDualStack,
        None => FamilyPolicy::SingleStack,
        Some(node) => match one_of(
            node,
            &["SingleStack", "PreferDualStack", "RequireDualStack"],
        )? {
            "SingleStack" => FamilyPolicy::SingleStack,
            "PreferDualStack" => FamilyPolicy::PreferDualStack,
            _ => FamilyPolicy::RequireDualStack,
        },
    };
    let mut families = Vec::new();
    if let Some(list) = spec.get("ipFamilies") {
        for item in list.list()? {
            let family = match one_of(&item, &["IPv4", "IPv6"])? {
                "IPv4" => Family::IPv4,
                _ => Family::IPv6,
            };
            if families.contains(&family) {
                return Err(item.invalid(format!("duplicate value {family}")));
            }
            families.push(family);
        }
        if families.len() > 2 {
            return Err(list.invalid("at most two families"));
        }
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        match families.get(i) {
            Some(family) if *family != Family::of(ip) => {
                return Err(spec
                    .required("ipFamilies")?
                    .invalid(format!("{family} does not match cluster IP {ip}")));
            }
            Some(_) => {}
            None => families.push(Family::of(ip)),
        }
    }
    if families.is_empty() {
        families.push(Family::IPv4);
    }
    match policy {
        FamilyPolicy::SingleStack if families.len() > 1 => {
            return Err(policy_node
                .map(|n| n.invalid("SingleStack allows one family, and two are given"))
                .unwrap_or_else(|| {
                    Invalid::new(
                        "spec.ipFamilyPolicy",
                        "SingleStack allows one family, and two are given",
                    )
                }));
        }
        FamilyPolicy::PreferDualStack | FamilyPolicy::RequireDualStack if families.len() == 1 => {
            let other = match families[0] {
                Family::IPv4 => Family::IPv6,
                Family::IPv6 => Family::IPv4,
            };
            families.push(other);
        }
        _ => {}
    }
    Ok((families, policy))
}

fn ports(spec: &Obj<'_>, kind: ServiceKind) -> Result<Vec<ServicePort>> {
    let list = spec.required("ports")?;
    let items = list.list()?;
    if items.is_empty() {
        return Err(list.invalid("required value: a service needs at least one port"));
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeMap::new();
    let mut node_ports = BTreeSet::new();
    let mut ports = Vec::new();
    for item in &items {
        let obj = item.obj()?;
        obj.only(&[
            "name",
            "protocol",
            "appProtocol",
            "port",
            "targetPort",
            "nodePort",
        ])?;
        let name = match obj.get("name") {
            None => String::new(),
            Some(node) => {
                let name = node.str()?;
                if !name.is_empty() {
                    dns1123_label(name).map_err(|e| node.invalid(format!("{name:?}: {e}")))?;
                }
                name.to_string()
            }
        };
        if items.len() > 1 && name.is_empty() {
            return Err(Invalid::new(
                &obj.child_path("name"),
                "required value: every port of a service with more than one needs a name",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(Invalid::new(
                &obj.child_path("name"),
                format!("duplicate value {name:?}"),
            ));
        }
        let protocol = match obj.get("protocol") {
            None => Protocol::TCP,
            Some(node) => match node.str()? {
                "TCP" => Protocol::TCP,
                "UDP" => Protocol::UDP,
                "SCTP" => return Err(node.invalid("strait balances TCP and UDP, not SCTP")),
                other => {
                    return Err(strait_policy::doc::unsupported(
                        &node,
                        other,
                        &["TCP", "UDP", "SCTP"],
                    ));
                }
            },
        };
        if let Some(node) = obj.get("appProtocol") {
            node.str()?;
        }
        let port_node = obj.required("port")?;
        let port = port_number(&port_node)?;
        if let Some(first) = seen.insert((port, protocol), ports.len()) {
            return Err(port_node.invalid(format!(
                "duplicate value {port}/{protocol}: ports[{first}] has it already"
            )));
        }
        let target_port = match obj.get("targetPort") {
            None => TargetPort::Number(port),
            Some(node) => match port_value(&node)? {
                PortValue::Number(n) => TargetPort::Number(n),
                PortValue::Name(name) => TargetPort::Name(name),
            },
        };
        let node_port = match obj.get("nodePort") {
            None => None,
            Some(node) => {
                if kind != ServiceKind::NodePort {
                    return Err(node.invalid("may only be used when `type` is 'NodePort'"));
                }
                let n = node.integer()?;
                let n = u16::try_from(n)
                    .ok()
                    .filter(|n| NODE_PORTS.contains(n))
                    .ok_or_else(|| {
                        node.invalid(format!(
                            "{n}: provided port is not in the valid range. The range of \
                             valid ports is {}-{}",
                            NODE_PORTS.start(),
                            NODE_PORTS.end()
                        ))
                    })?;
                if !node_ports.insert((n, protocol)) {
                    return Err(node.invalid(format!("duplicate value {n}/{protocol}")));
                }
                Some(n)
            }
        };
        ports.push(ServicePort {
            name,
            protocol,
            port,
            target_port,
            node_port,
        });
    }
    Ok(ports)
}

fn affinity(spec: &Obj<'_>) -> Result<Option<u32>> {
    let client_ip = match spec.get("sessionAffinity") {
        None => false,
        Some(node) => one_of(&node, &["None", "ClientIP"])? == "ClientIP",
    };
    let Some(config) = spec.get("sessionAffinityConfig") else {
        return Ok(client_ip.then_some(DEFAULT_AFFINITY_SECS));
    };
    let config = config.obj()?;
    config.only(&["clientIP"])?;
    let Some(client) = config.get("clientIP") else {
        return Ok(client_ip.then_some(DEFAULT_AFFINITY_SECS));
    };
    let client = client.obj()?;
    client.only(&["timeoutSeconds"])?;
    let Some(timeout) = client.get("timeoutSeconds") else {
        return Ok(client_ip.then_some(DEFAULT_AFFINITY_SECS));
    };
    if !client_ip {
        return Err(timeout.invalid("must not be set when `sessionAffinity` is not 'ClientIP'"));
    }
    let secs = timeout.integer()?;
    u32::try_from(secs)
        .ok()
        .filter(|s| (1..=MAX_AFFINITY_SECS).contains(s))
        .map(Some)
        .ok_or_else(|| {
            timeout.invalid(format!(
                "{secs}: must be greater than 0 and less than {MAX_AFFINITY_SECS}"
            ))
        })
}

/// `strait.io/health-check: tcp` or `http:/path`, and its interval.
fn health_check(meta: &Metadata<'_>) -> Result<Option<HealthCheck>> {
    let interval = meta.annotation(HEALTH_INTERVAL_ANNOTATION);
    let Some(check) = meta.annotation(HEALTH_CHECK_ANNOTATION) else {
        if interval.is_some() {
            return Err(Invalid::new(
                &meta.path("annotations"),
                format!("{HEALTH_INTERVAL_ANNOTATION} without {HEALTH_CHECK_ANNOTATION}"),
            ));
        }
        return Ok(None);
    };
    let refuse = |message: String| Invalid::new(&meta.path("annotations"), message);
    let kind = if check == "tcp" {
        CheckKind::Tcp
    } else if let Some(path) = check.strip_prefix("http:") {
        if !path.starts_with('/') || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(refuse(format!(
                "{HEALTH_CHECK_ANNOTATION}: {check:?}: the path after \"http:\" must start \
                 with '/' and hold no spaces"
            )));
        }
        CheckKind::Http {
            path: path.to_string(),
        }
    } else {
        return Err(refuse(format!(
            "{HEALTH_CHECK_ANNOTATION}: {check:?}: must be \"tcp\" or \"http:\" and a path \
             (\"http:/healthz\")"
        )));
    };
    let interval_ms = match interval {
        None => DEFAULT_INTERVAL_MS,
        Some(text) => parse_interval(text)
            .filter(|ms| INTERVAL_MS.contains(ms))
            .ok_or_else(|| {
                refuse(format!(
                    "{HEALTH_INTERVAL_ANNOTATION}: {text:?}: must be a duration between \
                     {}ms and {}s (\"500ms\", \"2s\")",
                    INTERVAL_MS.start(),
                    INTERVAL_MS.end() / 1000
                ))
            })?,
    };
    Ok(Some(HealthCheck {
        kind,
        interval_ms,
        fall: FALL,
        rise: RISE,
    }))
}

/// `500ms` or `2s`, in milliseconds.
fn parse_interval(text: &str) -> Option<u32> {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().ok()
    } else {
        text.strip_suffix('s')?
            .parse::<u32>()
            .ok()?
            .checked_mul(1000)
    }
}
