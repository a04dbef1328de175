//! The policy maps, typed by [`super::abi`]: an endpoint's tables as map entries
//! (ports as the prefixes of their ranges) and back, the ipcache, the counters.
//! Addresses are keyed as 16 bytes, IPv4 as IPv4-mapped IPv6, as the programs do.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap};
use ipnet::IpNet;
use strait_policy::ir::{Action, Direction, Protocol};
use strait_policy::tables::{CIDR_CLASS_FLAG, Cell, DirectionTables, EndpointTables, Segment};

use super::abi::{
    self, AddrKey, CIDRS, CONNTRACK, CellValue, CidrKey, CtEntry, CtKey, ENDPOINTS, EndpointValue,
    IPCACHE, IpcacheValue, NONE, REASON_MAX, RULE_STATS, RULES, RuleKey, RuleStatKey, STATS,
};
use crate::policy::dataplane::DataplaneError;

/// How a rule decided the flows counted under it (`enum strait_pol_verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleVerdict {
    Allowed,
    Denied,
    /// Denied, and passed because of audit.
    Audit,
}

pub(super) type RuleEntry = (Key<RuleKey>, CellValue);
pub(super) type CidrEntry = (Key<CidrKey>, u32);

pub(super) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::Map {
        map,
        reason: e.to_string(),
    }
}

fn take(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(map).ok_or(DataplaneError::Map {
        map,
        reason: "not in the object".into(),
    })
}

pub(super) struct Maps {
    pub(super) endpoints: HashMap<MapData, u32, EndpointValue>,
    pub(super) rules: LpmTrie<MapData, RuleKey, CellValue>,
    pub(super) cidrs: LpmTrie<MapData, CidrKey, u32>,
    pub(super) ipcache: LpmTrie<MapData, AddrKey, IpcacheValue>,
    pub(super) conntrack: HashMap<MapData, CtKey, CtEntry>,
    stats: PerCpuArray<MapData, u64>,
    rule_stats: PerCpuHashMap<MapData, RuleStatKey, u64>,
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            endpoints: HashMap::try_from(take(ebpf, ENDPOINTS)?).map_err(map_err(ENDPOINTS))?,
            rules: LpmTrie::try_from(take(ebpf, RULES)?).map_err(map_err(RULES))?,
            cidrs: LpmTrie::try_from(take(ebpf, CIDRS)?).map_err(map_err(CIDRS))?,
            ipcache: LpmTrie::try_from(take(ebpf, IPCACHE)?).map_err(map_err(IPCACHE))?,
            conntrack: HashMap::try_from(take(ebpf, CONNTRACK)?).map_err(map_err(CONNTRACK))?,
            stats: PerCpuArray::try_from(take(ebpf, STATS)?).map_err(map_err(STATS))?,
            rule_stats: PerCpuHashMap::try_from(take(ebpf, RULE_STATS)?)
                .map_err(map_err(RULE_STATS))?,
        })
    }

    /// Every counter of `strait_pol_stats`, summed over CPUs, by reason index.
    pub(super) fn stats(&self) -> Result<[u64; REASON_MAX], DataplaneError> {
        let mut out = [0u64; REASON_MAX];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self.stats.get(&(i as u32), 0).map_err(map_err(STATS))?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Flows per (rule, verdict), summed over CPUs; rule `None` is the default.
    pub(super) fn rule_stats(
        &self,
    ) -> Result<BTreeMap<(Option<u32>, RuleVerdict), u64>, DataplaneError> {
        let mut out = BTreeMap::new();
        for entry in self.rule_stats.iter() {
            let (k, per_cpu) = entry.map_err(map_err(RULE_STATS))?;
            let rule = (k.rule != NONE).then_some(k.rule);
            let verdict = match k.verdict {
                abi::VERDICT_ALLOWED => RuleVerdict::Allowed,
                abi::VERDICT_DENIED => RuleVerdict::Denied,
                abi::VERDICT_AUDIT => RuleVerdict::Audit,
                _ => continue,
            };
            out.insert((rule, verdict), per_cpu.iter().sum());
        }
        Ok(out)
    }
}

/// IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
pub(crate) fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// [`addr_key`] back.
pub(crate) fn key_addr(key: AddrKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A prefix's length over the 128 bits of an address key (IPv4 behind 96).
fn addr_prefix_len(net: &IpNet) -> u32 {
    match net {
        IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    }
}

/// [`addr_prefix_len`] and [`addr_key`] back, given the family.
fn key_net(len: u32, addr: AddrKey, v4: bool) -> Option<IpNet> {
    let len = u8::try_from(len).ok()?;
    if v4 {
        let ip = Ipv6Addr::from(addr).to_ipv4_mapped()?;
        IpNet::new(IpAddr::V4(ip), len.checked_sub(96)?).ok()
    } else {
        IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), len).ok()
    }
}

pub(super) fn ipcache_key(net: IpNet) -> Key<AddrKey> {
    let net = net.trunc();
    Key::new(addr_prefix_len(&net), addr_key(net.addr()))
}

/// An ipcache key back; IPv4-mapped keys of 96 bits or more are IPv4.
pub(super) fn ipcache_net(key: &Key<AddrKey>) -> Option<IpNet> {
    let data = key.data();
    let v4 = key.prefix_len() >= 96 && Ipv6Addr::from(data).to_ipv4_mapped().is_some();
    key_net(key.prefix_len(), data, v4)
}

/// The prefixes (value, length in bits) that cover `first..=last` exactly, fewest
/// first: what an LPM trie keyed by port matches a range with.
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    while lo <= hi {
        // The largest aligned block starting at `lo` that stays within `hi`.
        let mut bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1 << bits) - 1 > hi {
            bits -= 1;
        }
        out.push((lo as u16, (16 - bits) as u8));
        lo += 1 << bits;
    }
    out
}

/// A port prefix back to its range.
fn prefix_range(value: u16, len: u8) -> (u16, u16) {
    let size = 1u32 << (16 - u32::from(len.min(16)));
    (value, (u32::from(value) + size - 1) as u16)
}

fn dir_byte(d: Direction) -> u8 {
    match d {
        Direction::Ingress => abi::DIR_INGRESS,
        Direction::Egress => abi::DIR_EGRESS,
    }
}

fn cell_value(c: &Cell) -> Result<CellValue, String> {
    let (decision_rule, decision_action, decision_audit) = match c.decision {
        None => (NONE, abi::ACTION_PASS, 0),
        Some((rule, action, audit)) => {
            let action = match action {
                Action::Allow => abi::ACTION_ALLOW,
                Action::Deny => abi::ACTION_DENY,
                Action::Pass => abi::ACTION_PASS,
                Action::Log => return Err(format!("rule {rule}: a log rule cannot decide")),
            };
            (rule, action, u8::from(audit))
        }
    };
    Ok(CellValue {
        decision_rule,
        log_rule: c.log.unwrap_or(NONE),
        allow_rule: c.allow.unwrap_or(NONE),
        decision_action,
        decision_audit,
        pad: [0; 2],
    })
}

fn cell_of(v: &CellValue) -> Cell {
    let some = |r: u32| (r != NONE).then_some(r);
    Cell {
        decision: some(v.decision_rule).map(|r| {
            let action = match v.decision_action {
                abi::ACTION_ALLOW => Action::Allow,
                abi::ACTION_DENY => Action::Deny,
                _ => Action::Pass,
            };
            (r, action, v.decision_audit != 0)
        }),
        log: some(v.log_rule),
        allow: some(v.allow_rule),
    }
}

/// The flags of an endpoint's entry.
pub(super) fn flags(t: &EndpointTables) -> u8 {
    let mut f = 0;
    if t.ingress.isolated {
        f |= abi::F_ISOLATED_INGRESS;
    }
    if t.egress.isolated {
        f |= abi::F_ISOLATED_EGRESS;
    }
    if t.ingress.default_audit {
        f |= abi::F_AUDIT_INGRESS;
    }
    if t.egress.default_audit {
        f |= abi::F_AUDIT_EGRESS;
    }
    f
}

/// Every map entry of `tables` for endpoint `ifindex` under `version`. Refuses
/// tables the maps cannot hold as they are: overlapping segments, an identity or
/// a class with the CIDR class bit, a log rule as a decision.
pub(super) fn entries(
    ifindex: u32,
    version: u8,
    tables: &EndpointTables,
) -> Result<(Vec<RuleEntry>, Vec<CidrEntry>), String> {
    let mut rules = Vec::new();
    let mut cidrs = Vec::new();
    for d in [Direction::Ingress, Direction::Egress] {
        let t = tables.direction(d);
        let dir = dir_byte(d);
        let mut segments = |peer: u32, proto: Protocol, segs: &[Segment]| -> Result<(), String> {
            let mut sorted: Vec<&Segment> = segs.iter().collect();
            sorted.sort_by_key(|s| s.first);
            for (i, s) in sorted.iter().enumerate() {
                if s.first > s.last {
                    return Err(format!(
                        "{d:?} peer {peer:#x} {proto}: empty range {}-{}",
                        s.first, s.last
                    ));
                }
                if i > 0 && sorted[i - 1].last >= s.first {
                    return Err(format!(
                        "{d:?} peer {peer:#x} {proto}: segments overlap at port {}",
                        s.first
                    ));
                }
                let value = cell_value(&s.cell)?;
                for (port, len) in port_prefixes(s.first, s.last) {
                    let key = RuleKey {
                        ifindex,
                        version,
                        dir,
                        proto: proto.0,
                        pad: 0,
                        peer,
                        port: port.to_be_bytes(),
                        pad2: [0; 2],
                    };
                    rules.push((
                        Key::new(abi::RULE_KEY_FIXED_BITS + u32::from(len), key),
                        value,
                    ));
                }
            }
            Ok(())
        };
        for ((identity, proto), segs) in &t.identities {
            if identity & CIDR_CLASS_FLAG != 0 {
                return Err(format!("identity {identity} has the CIDR class bit set"));
            }
            segments(*identity, *proto, segs)?;
        }
        for ((class, proto), segs) in &t.classes {
            if class & CIDR_CLASS_FLAG != 0 {
                return Err(format!("CIDR class {class} has the CIDR class bit set"));
            }
            segments(class | CIDR_CLASS_FLAG, *proto, segs)?;
        }
        for (net, class) in &t.cidrs {
            let net = net.trunc();
            let key = CidrKey {
                ifindex,
                version,
                dir,
                family: if net.addr().is_ipv4() { 4 } else { 6 },
                pad: 0,
                addr: addr_key(net.addr()),
            };
            cidrs.push((
                Key::new(abi::CIDR_KEY_FIXED_BITS + addr_prefix_len(&net), key),
                *class,
            ));
        }
    }
    Ok((rules, cidrs))
}

/// Segments in their canonical form: sorted, and neighbours with the same cell
/// as one. What [`read_back`] gives, since the maps do not keep where one segment
/// of a range ended and the next began.
fn coalesce(mut segs: Vec<Segment>) -> Vec<Segment> {
    segs.sort_by_key(|s| s.first);
    let mut out: Vec<Segment> = Vec::with_capacity(segs.len());
    for s in segs {
        match out.last_mut() {
            Some(prev) if prev.cell == s.cell && u32::from(prev.last) + 1 == u32::from(s.first) => {
                prev.last = s.last;
            }
            _ => out.push(s),
        }
    }
    out
}

/// `tables` with every segment list in canonical form (see [`coalesce`]): compare
/// this with what [`read_back`] gives.
pub fn canonical(tables: &EndpointTables) -> EndpointTables {
    let dir = |t: &DirectionTables| DirectionTables {
        isolated: t.isolated,
        default_audit: t.default_audit,
        identities: t
            .identities
            .iter()
            .map(|(k, v)| (*k, coalesce(v.clone())))
            .collect(),
        cidrs: t.cidrs.iter().map(|(n, c)| (n.trunc(), *c)).collect(),
        classes: t
            .classes
            .iter()
            .map(|(k, v)| (*k, coalesce(v.clone())))
            .collect(),
    };
    EndpointTables {
        ingress: dir(&tables.ingress),
        egress: dir(&tables.egress),
    }
}

/// Rebuilds an endpoint's tables from the entries of its live `version`.
pub(super) fn read_back(
    ifindex: u32,
    version: u8,
    flags: u8,
    rules: &[RuleEntry],
    cidrs: &[CidrEntry],
) -> EndpointTables {
    let mut tables = EndpointTables::default();
    tables.ingress.isolated = flags & abi::F_ISOLATED_INGRESS != 0;
    tables.egress.isolated = flags & abi::F_ISOLATED_EGRESS != 0;
    tables.ingress.default_audit = flags & abi::F_AUDIT_INGRESS != 0;
    tables.egress.default_audit = flags & abi::F_AUDIT_EGRESS != 0;
    for (key, cell) in rules {
        let k = key.data();
        if k.ifindex != ifindex || k.version != version {
            continue;
        }
        let t = tables.direction_mut(direction_of(k.dir));
        let len = key.prefix_len().saturating_sub(abi::RULE_KEY_FIXED_BITS) as u8;
        let (first, last) = prefix_range(u16::from_be_bytes(k.port), len);
        let seg = Segment {
            first,
            last,
            cell: cell_of(cell),
        };
        let proto = Protocol(k.proto);
        if k.peer & CIDR_CLASS_FLAG != 0 {
            t.classes
                .entry((k.peer & !CIDR_CLASS_FLAG, proto))
                .or_default()
                .push(seg);
        } else {
            t.identities.entry((k.peer, proto)).or_default().push(seg);
        }
    }
    for (key, class) in cidrs {
        let k = key.data();
        if k.ifindex != ifindex || k.version != version {
            continue;
        }
        let t = tables.direction_mut(direction_of(k.dir));
        let len = key.prefix_len().saturating_sub(abi::CIDR_KEY_FIXED_BITS);
        if let Some(net) = key_net(len, k.addr, k.family == 4) {
            t.cidrs.insert(net, *class);
        }
    }
    for t in [&mut tables.ingress, &mut tables.egress] {
        for segs in t.identities.values_mut().chain(t.classes.values_mut()) {
            *segs = coalesce(std::mem::take(segs));
        }
    }
    tables
}

/// The direction a key's `dir` byte names.
fn direction_of(dir: u8) -> Direction {
    if dir == abi::DIR_INGRESS {
        Direction::Ingress
    } else {
        Direction::Egress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_become_the_fewest_prefixes_that_cover_them_exactly() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, u16::MAX), vec![(0, 0)]);
        assert_eq!(port_prefixes(8080, 8083), vec![(8080, 14)]);
        assert_eq!(port_prefixes(1, 3), vec![(1, 16), (2, 15)]);
        assert_eq!(port_prefixes(65535, 65535), vec![(65535, 16)]);
        // Every port of a range is covered once, and nothing outside it.
        for (first, last) in [(1000, 2000), (1, 65534), (32768, 60999), (0, 0), (5, 6)] {
            let p = port_prefixes(first, last);
            let mut covered = vec![0u8; 65536];
            for (v, len) in &p {
                let (a, b) = prefix_range(*v, *len);
                assert_eq!(
                    *v & !(u16::MAX.checked_shl(16 - u32::from(*len)).unwrap_or(0)),
                    0
                );
                for port in a..=b {
                    covered[port as usize] += 1;
                }
            }
            for (port, n) in covered.iter().enumerate() {
                let inside = (first as usize..=last as usize).contains(&port);
                assert_eq!(*n, u8::from(inside), "port {port} of {first}-{last}");
            }
            assert!(p.len() <= 30, "{first}-{last}: {} prefixes", p.len());
        }
    }

    fn cell(allow: u32) -> Cell {
        Cell {
            decision: None,
            log: None,
            allow: Some(allow),
        }
    }

    #[test]
    fn tables_go_into_entries_and_come_back_as_they_were() {
        let mut t = EndpointTables::default();
        t.ingress.isolated = true;
        t.egress.default_audit = true;
        t.ingress.identities.insert(
            (300, Protocol::TCP),
            vec![
                Segment {
                    first: 80,
                    last: 80,
                    cell: cell(4),
                },
                Segment {
                    first: 1000,
                    last: 2000,
                    cell: cell(5),
                },
                Segment {
                    first: 2001,
                    last: 2001,
                    cell: Cell {
                        decision: Some((1, Action::Deny, true)),
                        log: Some(0),
                        allow: None,
                    },
                },
            ],
        );
        t.egress.cidrs.insert("10.0.0.0/8".parse().unwrap(), 0);
        t.egress.cidrs.insert("10.1.0.0/16".parse().unwrap(), 1);
        t.egress.cidrs.insert("fd00::/8".parse().unwrap(), 2);
        t.egress.cidrs.insert("::/0".parse().unwrap(), 3);
        t.egress.classes.insert(
            (0, Protocol::UDP),
            vec![Segment {
                first: 53,
                last: 53,
                cell: cell(7),
            }],
        );
        t.egress.classes.insert(
            (3, Protocol::OTHER),
            vec![Segment {
                first: 0,
                last: u16::MAX,
                cell: cell(8),
            }],
        );
        let (rules, cidrs) = entries(7, 1, &t).unwrap();
        assert_eq!(cidrs.len(), 4);
        // An IPv4 prefix sits behind the fixed bits and the mapping's 96.
        let ten = cidrs.iter().find(|(_, c)| *c == 0).unwrap();
        assert_eq!(ten.0.prefix_len(), 64 + 96 + 8);
        assert_eq!(ten.0.data().family, 4);
        let all6 = cidrs.iter().find(|(_, c)| *c == 3).unwrap();
        assert_eq!((all6.0.prefix_len(), all6.0.data().family), (64, 6));
        let back = read_back(7, 1, flags(&t), &rules, &cidrs);
        assert_eq!(back, canonical(&t));
        assert_eq!(back, t, "already canonical");
        // Another endpoint's or version's entries are not this one's.
        assert_eq!(
            read_back(7, 0, 0, &rules, &cidrs),
            EndpointTables::default()
        );
        assert_eq!(
            read_back(8, 1, 0, &rules, &cidrs),
            EndpointTables::default()
        );
    }

    #[test]
    fn neighbouring_segments_with_one_cell_read_back_as_one() {
        let mut t = EndpointTables::default();
        t.ingress.identities.insert(
            (300, Protocol::TCP),
            vec![
                Segment {
                    first: 81,
                    last: 90,
                    cell: cell(4),
                },
                Segment {
                    first: 80,
                    last: 80,
                    cell: cell(4),
                },
            ],
        );
        let (rules, cidrs) = entries(7, 0, &t).unwrap();
        let back = read_back(7, 0, 0, &rules, &cidrs);
        assert_eq!(back.ingress.identities[&(300, Protocol::TCP)].len(), 1);
        assert_eq!(back, canonical(&t));
    }

    #[test]
    fn tables_the_maps_cannot_hold_are_refused() {
        let mut t = EndpointTables::default();
        t.ingress.identities.insert(
            (300, Protocol::TCP),
            vec![
                Segment {
                    first: 80,
                    last: 90,
                    cell: cell(4),
                },
                Segment {
                    first: 90,
                    last: 95,
                    cell: cell(5),
                },
            ],
        );
        assert!(entries(7, 0, &t).err().unwrap().contains("overlap"));
        let mut t = EndpointTables::default();
        t.ingress
            .identities
            .insert((CIDR_CLASS_FLAG | 5, Protocol::TCP), vec![]);
        assert!(entries(7, 0, &t).err().unwrap().contains("CIDR class bit"));
        let mut t = EndpointTables::default();
        t.ingress.identities.insert(
            (300, Protocol::TCP),
            vec![Segment {
                first: 1,
                last: 1,
                cell: Cell {
                    decision: Some((1, Action::Log, false)),
                    log: None,
                    allow: None,
                },
            }],
        );
        assert!(entries(7, 0, &t).err().unwrap().contains("log rule"));
    }

    #[test]
    fn ipcache_keys_round_trip() {
        for net in [
            "10.244.1.7/32",
            "10.0.0.0/8",
            "fd00::1/128",
            "::/0",
            "0.0.0.0/0",
        ] {
            let net: IpNet = net.parse().unwrap();
            assert_eq!(ipcache_net(&ipcache_key(net)), Some(net));
        }
    }
}
