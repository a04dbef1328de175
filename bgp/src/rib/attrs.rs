//! The path attributes of one route as the RIB keeps them: the decision process reads
//! them and export rewrites them, so they are typed fields rather than the UPDATE's list.
//! A route's attributes are shared (`Arc`) by every prefix an UPDATE announced with them,
//! which is what keeps 100 000 prefixes cheap.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::codec::{
    AsPath, AsSegment, NextHop, Origin, PathAttribute, RawAttribute, SegmentKind, Update,
};

/// LOCAL_PREF assumed for a route that has none (the value FRR, BIRD and GoBGP use).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub origin: Origin,
    pub as_path: AsPath,
    pub next_hop: NextHop,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<u32>,
    /// RFC 4456 §8.
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Optional transitive attributes strait does not know, passed on.
    pub unknown: Vec<RawAttribute>,
}

impl Attrs {
    /// A route with nothing but the mandatory attributes (tests, local origination).
    pub fn new(next_hop: NextHop) -> Attrs {
        Attrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            aggregator: None,
            communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            unknown: Vec::new(),
        }
    }

    pub fn effective_local_pref(&self) -> u32 {
        self.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    /// The neighbouring AS MED is compared within (RFC 4271 §9.1.2.2 c): the first AS
    /// of the path; `None` for a path without one (a route from our own AS).
    pub fn neighbour_as(&self) -> Option<u32> {
        let first = self.as_path.segments.first()?;
        match first.kind {
            SegmentKind::Sequence => first.asns.first().copied(),
            _ => None,
        }
    }

    pub fn next_hop_addr(&self) -> IpAddr {
        match self.next_hop {
            NextHop::V4(a) => IpAddr::V4(a),
            NextHop::V6 { global, .. } => IpAddr::V6(global),
        }
    }

    /// Prepend `asn` to the leading AS_SEQUENCE (RFC 4271 §5.1.2), opening a new one if
    /// the path starts with a set or the sequence is full.
    pub fn prepend_as(&mut self, asn: u32) {
        match self.as_path.segments.first_mut() {
            Some(s) if s.kind == SegmentKind::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn)
            }
            _ => self.as_path.segments.insert(
                0,
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }

    /// The attributes to put in an UPDATE announcing `prefixes` with these attributes:
    /// NEXT_HOP for IPv4 (the prefixes go in the NLRI field), MP_REACH_NLRI for IPv6,
    /// and for IPv4 with an IPv6 next hop too (RFC 8950 §4). An UPDATE has one
    /// MP_REACH_NLRI, so such IPv4 prefixes and IPv6 ones go in separate calls (as
    /// [`crate::speaker::pack`] groups them, by family).
    pub fn to_update(&self, prefixes: &[IpNet]) -> Update {
        let mut attributes = vec![
            PathAttribute::Origin(self.origin),
            PathAttribute::AsPath(self.as_path.clone()),
        ];
        let mut nlri = Vec::new();
        let mut v6 = Vec::new();
        for p in prefixes {
            match p {
                IpNet::V4(n) => nlri.push(*n),
                IpNet::V6(_) => v6.push(*p),
            }
        }
        let mut v4_via_v6 = Vec::new();
        match self.next_hop {
            NextHop::V4(a) if !nlri.is_empty() => attributes.push(PathAttribute::NextHop(a)),
            NextHop::V4(_) => {}
            NextHop::V6 { .. } => {
                debug_assert!(
                    nlri.is_empty() || v6.is_empty(),
                    "IPv4 via IPv6 and IPv6 prefixes in one UPDATE"
                );
                v4_via_v6 = nlri.drain(..).map(IpNet::V4).collect();
            }
        }
        if let Some(m) = self.med {
            attributes.push(PathAttribute::MultiExitDisc(m));
        }
        if let Some(l) = self.local_pref {
            attributes.push(PathAttribute::LocalPref(l));
        }
        if self.atomic_aggregate {
            attributes.push(PathAttribute::AtomicAggregate);
        }
        if let Some((asn, address)) = self.aggregator {
            attributes.push(PathAttribute::Aggregator { asn, address });
        }
        if !self.communities.is_empty() {
            attributes.push(PathAttribute::Communities(self.communities.clone()));
        }
        if let Some(o) = self.originator_id {
            attributes.push(PathAttribute::OriginatorId(o));
        }
        if !self.cluster_list.is_empty() {
            attributes.push(PathAttribute::ClusterList(self.cluster_list.clone()));
        }
        for (family, nlri) in [
            (crate::codec::Family::Ipv4Unicast, v4_via_v6),
            (crate::codec::Family::Ipv6Unicast, v6),
        ] {
            if !nlri.is_empty() {
                attributes.push(PathAttribute::MpReach(crate::codec::MpReach {
                    family,
                    next_hop: self.next_hop,
                    nlri,
                }));
            }
        }
        attributes.extend(self.unknown.iter().cloned().map(PathAttribute::Unknown));
        Update {
            withdrawn: Vec::new(),
            attributes,
            nlri,
        }
    }
}

/// Routes one peer's UPDATE announced (each group shares its attributes) and withdrew.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteUpdate {
    pub announced: Vec<(Vec<IpNet>, Arc<Attrs>)>,
    pub withdrawn: Vec<IpNet>,
}

impl RouteUpdate {
    /// The routes a decoded UPDATE carries: IPv4 NLRI with NEXT_HOP, MP_REACH_NLRI with
    /// its own next hop, withdrawals from both fields. An UPDATE announcing IPv4 NLRI
    /// without NEXT_HOP cannot come out of the decoder (RFC 7606 treat-as-withdraw).
    pub fn from_update(u: &Update) -> RouteUpdate {
        let mut v4_next_hop = None;
        let mut rest = Attrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED));
        for a in &u.attributes {
            match a {
                PathAttribute::Origin(o) => rest.origin = *o,
                PathAttribute::AsPath(p) => rest.as_path = p.clone(),
                PathAttribute::NextHop(n) => v4_next_hop = Some(*n),
                PathAttribute::MultiExitDisc(m) => rest.med = Some(*m),
                PathAttribute::LocalPref(l) => rest.local_pref = Some(*l),
                PathAttribute::AtomicAggregate => rest.atomic_aggregate = true,
                PathAttribute::Aggregator { asn, address } => {
                    rest.aggregator = Some((*asn, *address))
                }
                PathAttribute::Communities(c) => rest.communities = c.clone(),
                PathAttribute::OriginatorId(o) => rest.originator_id = Some(*o),
                PathAttribute::ClusterList(c) => rest.cluster_list = c.clone(),
                PathAttribute::Unknown(r) => rest.unknown.push(r.clone()),
                // The decoder merges AS4_PATH into AS_PATH for 2-octet sessions.
                PathAttribute::MpReach(_)
                | PathAttribute::MpUnreach(_)
                | PathAttribute::As4Path(_) => {}
            }
        }
        let base = rest;
        let mut out = RouteUpdate::default();
        if let (false, Some(nh)) = (u.nlri.is_empty(), v4_next_hop) {
            let mut a = base.clone();
            a.next_hop = NextHop::V4(nh);
            out.announced
                .push((u.nlri.iter().map(|n| IpNet::V4(*n)).collect(), Arc::new(a)));
        }
        if let Some(m) = u.mp_reach()
            && !m.nlri.is_empty()
        {
            let mut a = base;
            a.next_hop = m.next_hop;
            out.announced.push((m.nlri.clone(), Arc::new(a)));
        }
        out.withdrawn = u.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
        if let Some(m) = u.mp_unreach() {
            out.withdrawn.extend_from_slice(&m.withdrawn);
        }
        out
    }
}
