//! BGP through the tunnel to another vendor's gateway: a strait site of two hosts (h1
//! its gateway), strongSwan's charon in front of a LAN, and FRR on the LAN host
//! (192.168.50.10, AS 64600) announcing 192.168.60.0/24, a network strait is told
//! nothing about. The session runs between inside addresses, as a cloud VPN's does:
//! 169.254.100.1 on strait's gateway, the LAN host on the other side; charon's
//! selectors are "any" on its side.
//!
//! Routes are learned in both directions: FRR gets the site's pool, and containers on
//! both hosts reach 192.168.60.1 (h2's through h1). When the line is cut, both ends
//! withdraw what they learned (the hold timer, 3 s); when it returns, the session and
//! the routes come back. When the peer is deleted, nothing of it is left: no learned
//! route on any node, no session address on the gateway.
//!
//! Root, etcd, charon with kernel-libipsec and FRR needed (visible SKIP otherwise).

use std::net::IpAddr;
use std::time::Duration;

use strait_testbeds::gateway::{
    CONVERGE, GatewayBed, LAN_HOST, POLL, PSK, ping, privileged, wait_carried,
};
use strait_testbeds::peers::{Frr, Neighbor, PeerConfig};
use strait_testbeds::wait_until;

/// Our end of the session, on the gateway.
const INSIDE: &str = "169.254.100.1";
/// The network only BGP tells strait about, and a host in it (on the router).
const LEARNED: &str = "192.168.60.0/24";
const LEARNED_HOST: &str = "192.168.60.1";
const POOL: &str = "10.244.0.0/16";

fn frr_available(test: &str) -> bool {
    if std::path::Path::new("/usr/lib/frr/bgpd").exists() {
        return true;
    }
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: FRR (/usr/lib/frr/bgpd) is not installed");
    }
    eprintln!("SKIP {test}: FRR is not installed");
    false
}

/// Whether FRR has `prefix` in its BGP table.
fn frr_has(frr: &Frr, prefix: &str) -> bool {
    frr.vtysh_json("show bgp ipv4 unicast json")
        .map(|v| v["routes"].get(prefix).is_some())
        .unwrap_or(false)
}

/// Host `i`'s IPsec table, as `ip route show table 2083` prints it.
fn ipsec_table(bed: &GatewayBed, i: usize) -> String {
    let out = bed.cluster.hosts()[i].exec(&["ip", "route", "show", "table", "2083"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn routes_are_learned_both_ways_through_the_tunnel_and_withdrawn_with_it() {
    let t = "routes_are_learned_both_ways_through_the_tunnel_and_withdrawn_with_it";
    if !privileged(t) || !frr_available(t) {
        return;
    }
    let mut bed = GatewayBed::start(2, &[0], None, &[]);
    let c1 = bed.cluster.add_container(0, "c1");
    let c2 = bed.cluster.add_container(1, "c2");
    // The router's networks: the one it announces, and the way back to our inside
    // address (through charon) so FRR can resolve the next hop of what we announce.
    bed.lan.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{LEARNED_HOST}/24"),
        "dev",
        "lo",
    ]);
    bed.lan.exec_ok(&["ip", "link", "set", "lo", "up"]);
    bed.lan.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{INSIDE}/32"),
        "via",
        "192.168.50.1",
    ]);
    // The other site's own routing: its gateway reaches the router's network.
    bed.charon_ns()
        .exec_ok(&["ip", "route", "add", LEARNED, "via", LAN_HOST]);
    let inside: IpAddr = INSIDE.parse().unwrap();
    let router: std::net::Ipv4Addr = LAN_HOST.parse().unwrap();
    let mut config = PeerConfig::new(router, 64600)
        .neighbor(
            Neighbor::new(inside, 64512)
                .local(IpAddr::V4(router))
                .ebgp_multihop(4),
        )
        .originate(&[LEARNED]);
    config.hold_time = 3;
    let frr = Frr::start(&bed.lan, config).expect("FRR on the LAN host");
    // charon: "any" on its side, our pool and our inside address on ours.
    let conf = bed
        .swanctl_psk(PSK, "none")
        .replace("local_ts = 192.168.50.0/24", "local_ts = 0.0.0.0/0")
        .replace(
            &format!("remote_ts = {POOL}"),
            &format!("remote_ts = {POOL},{INSIDE}/32"),
        );
    let charon = bed.charon(&conf, &[]).expect("charon");
    bed.add_peer_psk(
        PSK,
        &[
            "--bgp-asn",
            "64600",
            "--bgp-address",
            LAN_HOST,
            "--bgp-local-address",
            INSIDE,
        ],
    );
    let h1 = &bed.cluster.hosts()[0];
    wait_carried(h1, "the gateway's SAs with strongSwan", CONVERGE, &charon);
    // Selectors "any" towards the peer; ours are the pool and the session address.
    let p = strait_testbeds::gateway::external(h1).expect("peer");
    let c = &p.child_sas[0];
    assert!(
        c.ts_remote == "0.0.0.0/0" && c.ts_local.contains(&format!("{INSIDE}/32")),
        "{c:?}"
    );
    wait_until("FRR learns the site's pool", CONVERGE, POLL, || {
        if frr_has(&frr, POOL) {
            Ok(())
        } else {
            Err(frr.vtysh("show bgp summary").unwrap_or_default())
        }
    })
    .unwrap();
    wait_until(
        "h2 routes the learned network through h1",
        CONVERGE,
        POLL,
        || {
            let table = ipsec_table(&bed, 1);
            if table.contains(&format!("{LEARNED} via {}", h1.underlay_v4)) {
                Ok(())
            } else {
                Err(table)
            }
        },
    )
    .unwrap();
    for c in [&c1, &c2] {
        assert!(ping(&c.ns, LEARNED_HOST), "{} → {LEARNED_HOST}", c.name);
    }
    // The static network stays routed beside the learned one.
    assert!(ping(&c2.ns, LAN_HOST), "c2 → {LAN_HOST}");

    // Cut the line: the hold timer ends the session on both ends, and both withdraw.
    let drop = |op: &str| {
        for chain in ["INPUT", "OUTPUT"] {
            bed.charon_ns()
                .exec_ok(&["iptables", op, chain, "-p", "udp", "-j", "DROP"]);
        }
    };
    drop("-I");
    wait_until("FRR withdraws the site's pool", CONVERGE, POLL, || {
        if frr_has(&frr, POOL) {
            Err(frr.vtysh("show bgp summary").unwrap_or_default())
        } else {
            Ok(())
        }
    })
    .unwrap();
    for i in [0, 1] {
        wait_until(
            "strait withdraws the learned network",
            CONVERGE,
            POLL,
            || {
                let table = ipsec_table(&bed, i);
                if table.contains(LEARNED) {
                    Err(table)
                } else {
                    Ok(())
                }
            },
        )
        .unwrap();
    }
    assert!(
        ipsec_table(&bed, 1).contains("192.168.50.0/24"),
        "the static network stays routed to the gateway: {}",
        ipsec_table(&bed, 1)
    );

    // The line returns: the session and the routes come back.
    drop("-D");
    wait_until(
        "the routes come back",
        Duration::from_secs(90),
        POLL,
        || {
            if frr_has(&frr, POOL) && ipsec_table(&bed, 1).contains(LEARNED) {
                Ok(())
            } else {
                Err(format!(
                    "{}\n{}",
                    frr.vtysh("show bgp summary").unwrap_or_default(),
                    ipsec_table(&bed, 1)
                ))
            }
        },
    )
    .unwrap();
    assert!(ping(&c2.ns, LEARNED_HOST), "c2 → {LEARNED_HOST} again");

    // The peer deleted: the session stops, its learned networks leave every node,
    // and the gateway gives up the session address.
    let (ok, out) = h1.netctl(&["ipsec", "peer", "delete", "onprem"]);
    assert!(ok, "{out}");
    wait_until("everything of the peer is gone", CONVERGE, POLL, || {
        let addrs = h1.exec(&["ip", "-o", "addr", "show"]);
        let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
        let tables = format!("{}{}", ipsec_table(&bed, 0), ipsec_table(&bed, 1));
        if tables.contains(LEARNED) || addrs.contains(INSIDE) || frr_has(&frr, POOL) {
            Err(format!("{tables}\n{addrs}"))
        } else {
            Ok(())
        }
    })
    .unwrap();
}
