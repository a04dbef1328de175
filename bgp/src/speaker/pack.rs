//! Adj-RIB-Out changes into UPDATE messages: announcements grouped by their shared
//! attributes (the RIB hands out one `Arc<Attrs>` per source UPDATE and peer), as many
//! prefixes per UPDATE as fit in 4096 bytes (RFC 4271 §4), withdrawals batched the
//! same way. This is what makes reflecting a full table cost a few hundred messages
//! rather than one per prefix.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use crate::codec::{self, Context, MAX_MESSAGE_LEN, Message, Update};
use crate::rib::Attrs;
use crate::session::withdrawal;

/// Bytes kept free below the message limit: an attribute whose length grows past 255
/// while packing needs one more length octet than the probe had (RFC 4271 §4.3
/// Extended Length).
const SLACK: usize = 4;

/// A prefix's size in NLRI encoding: length octet and the significant octets.
fn nlri_len(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// The final state of each prefix for one peer, in the order to send: withdrawals,
/// then announcements, each group of shared attributes cut into UPDATEs that fit.
/// `routes` holds each prefix once (the caller keeps only the latest change).
pub fn pack(
    routes: impl IntoIterator<Item = (IpNet, Option<Arc<Attrs>>)>,
    ctx: &Context,
) -> Vec<Update> {
    let mut withdrawn: [Vec<IpNet>; 2] = [Vec::new(), Vec::new()];
    // By attributes (their address; the Arc held keeps it unique) and family: an
    // UPDATE carries one next hop per family.
    let mut groups: HashMap<(usize, bool), (Arc<Attrs>, Vec<IpNet>)> = HashMap::new();
    for (prefix, attrs) in routes {
        let v6 = matches!(prefix, IpNet::V6(_));
        match attrs {
            None => withdrawn[usize::from(v6)].push(prefix),
            Some(a) => groups
                .entry((Arc::as_ptr(&a) as usize, v6))
                .or_insert_with(|| (a, Vec::new()))
                .1
                .push(prefix),
        }
    }
    let mut out = Vec::new();
    for w in &withdrawn {
        chunk(w, ctx, withdrawal, &mut out);
    }
    for (attrs, prefixes) in groups.values() {
        chunk(prefixes, ctx, |ps| attrs.to_update(ps), &mut out);
    }
    out
}

/// Cut `prefixes` into UPDATEs made by `make`, each within the message limit. The
/// fixed part is measured once by encoding a one-prefix UPDATE.
fn chunk(
    prefixes: &[IpNet],
    ctx: &Context,
    make: impl Fn(&[IpNet]) -> Update,
    out: &mut Vec<Update>,
) {
    let Some(first) = prefixes.first() else {
        return;
    };
    let probe = make(std::slice::from_ref(first));
    let fixed = match codec::encode(&Message::Update(probe), ctx) {
        Ok(bytes) => bytes.len() - nlri_len(first),
        Err(e) => {
            tracing::error!(error = %e, "bgp: UPDATE does not encode, routes not sent");
            return;
        }
    };
    let budget = MAX_MESSAGE_LEN.saturating_sub(fixed + SLACK);
    let (mut start, mut used) = (0, 0);
    for (i, p) in prefixes.iter().enumerate() {
        let n = nlri_len(p);
        if used + n > budget && i > start {
            out.push(make(&prefixes[start..i]));
            (start, used) = (i, 0);
        }
        used += n;
    }
    out.push(make(&prefixes[start..]));
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::codec::{AsPath, AsSegment, Decoded, NextHop, SegmentKind};
    use crate::rib::RouteUpdate;

    fn v4_prefixes(n: u32, len: u8) -> Vec<IpNet> {
        (0..n)
            .map(|i| {
                let a = Ipv4Addr::from(0x0a00_0000 + (i << (32 - u32::from(len))));
                IpNet::V4(ipnet::Ipv4Net::new(a, len).unwrap())
            })
            .collect()
    }

    fn v6_prefixes(n: u32) -> Vec<IpNet> {
        (0..n)
            .map(|i| {
                let a = Ipv6Addr::from(
                    0xfd00_0000_0000_0000_0000_0000_0000_0000u128 + (u128::from(i) << 64),
                );
                IpNet::V6(ipnet::Ipv6Net::new(a, 64).unwrap())
            })
            .collect()
    }

    fn attrs(v6: bool) -> Arc<Attrs> {
        let nh = if v6 {
            NextHop::V6 {
                global: "fd00::1".parse().unwrap(),
                link_local: None,
            }
        } else {
            NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))
        };
        let mut a = Attrs::new(nh);
        a.as_path = AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![65001, 4_200_000_000],
            }],
        };
        a.local_pref = Some(100);
        a.cluster_list = vec![Ipv4Addr::new(10, 0, 0, 9)];
        Arc::new(a)
    }

    /// Encode every UPDATE, check the limit, decode it back, and collect what the
    /// peer would learn.
    fn roundtrip(updates: &[Update], ctx: &Context) -> (Vec<IpNet>, Vec<IpNet>) {
        let (mut announced, mut withdrawn) = (Vec::new(), Vec::new());
        for u in updates {
            let bytes = codec::encode(&Message::Update(u.clone()), ctx).unwrap();
            assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} bytes", bytes.len());
            let Ok(Decoded::Message(Message::Update(d))) = codec::decode(&bytes, ctx) else {
                panic!("does not decode");
            };
            let r = RouteUpdate::from_update(&d);
            for (ps, _) in r.announced {
                announced.extend(ps);
            }
            withdrawn.extend(r.withdrawn);
        }
        announced.sort();
        withdrawn.sort();
        (announced, withdrawn)
    }

    #[test]
    fn full_table_packs_into_full_messages_and_loses_nothing() {
        for ctx in [
            Context::modern(),
            Context {
                four_octet_as: false,
                ..Context::modern()
            },
        ] {
            let mut v4 = v4_prefixes(20_000, 24);
            let mut v6 = v6_prefixes(5_000);
            let (a4, a6) = (attrs(false), attrs(true));
            let routes = v4
                .iter()
                .map(|p| (*p, Some(a4.clone())))
                .chain(v6.iter().map(|p| (*p, Some(a6.clone()))));
            let updates = pack(routes, &ctx);
            // /24s take 4 bytes and /64s 9: a full UPDATE holds about 1000 and 450.
            assert!(
                updates.len() <= 20_000 / 950 + 5_000 / 430 + 2,
                "{} UPDATEs",
                updates.len()
            );
            let (mut announced, withdrawn) = roundtrip(&updates, &ctx);
            let mut want: Vec<IpNet> = v4.drain(..).chain(v6.drain(..)).collect();
            want.sort();
            announced.sort();
            assert_eq!(announced, want);
            assert!(withdrawn.is_empty());
        }
    }

    #[test]
    fn withdrawals_and_groups_of_any_size_fit() {
        let ctx = Context::modern();
        for n in [1, 2, 255, 256, 1017, 1018, 1019, 3000] {
            let v4 = v4_prefixes(n, 32);
            let v6 = v6_prefixes(n);
            let routes = v4.iter().chain(v6.iter()).map(|p| (*p, None));
            let (announced, withdrawn) = roundtrip(&pack(routes, &ctx), &ctx);
            assert!(announced.is_empty());
            assert_eq!(withdrawn.len(), 2 * n as usize, "n = {n}");
            let routes = v6.iter().map(|p| (*p, Some(attrs(true))));
            let (announced, _) = roundtrip(&pack(routes, &ctx), &ctx);
            assert_eq!(announced.len(), n as usize, "n = {n}");
        }
    }

    /// RFC 8950: IPv4 prefixes with an IPv6 next hop travel in MP_REACH_NLRI of AFI
    /// 1, never beside IPv6 prefixes (one MP_REACH_NLRI per UPDATE), and come back
    /// with their next hop.
    #[test]
    fn ipv4_routes_via_ipv6_go_in_mp_reach_and_round_trip() {
        let ctx = Context::modern();
        assert!(ctx.ipv4_via_ipv6);
        let v4 = v4_prefixes(3000, 24);
        let v6 = v6_prefixes(10);
        let a6 = attrs(true);
        let routes = v4.iter().chain(v6.iter()).map(|p| (*p, Some(a6.clone())));
        let updates = pack(routes, &ctx);
        for u in &updates {
            assert!(
                u.nlri.is_empty(),
                "no IPv4 NLRI field with an IPv6 next hop"
            );
            let reach: Vec<_> = u
                .attributes
                .iter()
                .filter(|a| matches!(a, codec::PathAttribute::MpReach(_)))
                .collect();
            assert_eq!(reach.len(), 1, "{u:?}");
        }
        let mut want: Vec<IpNet> = v4.iter().chain(v6.iter()).copied().collect();
        want.sort();
        let (announced, _) = roundtrip(&updates, &ctx);
        assert_eq!(announced, want);
        for u in &updates {
            let bytes = codec::encode(&Message::Update(u.clone()), &ctx).unwrap();
            let Ok(Decoded::Message(Message::Update(d))) = codec::decode(&bytes, &ctx) else {
                panic!("does not decode");
            };
            for (_, a) in RouteUpdate::from_update(&d).announced {
                assert_eq!(a.next_hop, a6.next_hop);
            }
        }
        // Without RFC 8950 such an UPDATE does not encode at all.
        let plain = Context {
            ipv4_via_ipv6: false,
            ..Context::modern()
        };
        let u = a6.to_update(&v4[..1]);
        assert!(codec::encode(&Message::Update(u), &plain).is_err());
    }

    #[test]
    fn different_attributes_are_different_updates() {
        let ctx = Context::modern();
        let (a, b) = (attrs(false), attrs(false));
        let p = v4_prefixes(4, 24);
        let routes = vec![
            (p[0], Some(a.clone())),
            (p[1], Some(b.clone())),
            (p[2], Some(a.clone())),
            (p[3], None),
        ];
        let updates = pack(routes, &ctx);
        assert_eq!(updates.len(), 3, "{updates:?}");
        assert_eq!(updates[0].withdrawn.len(), 1);
        assert!(pack(Vec::new(), &ctx).is_empty());
    }
}
