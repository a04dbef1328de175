//! NAT traversal between a strait site gateway and another vendor's gateway: the
//! site's hosts sit behind a router that masquerades them (iptables MASQUERADE,
//! UDP source ports rewritten, nothing new let in), strongSwan's charon (5.9,
//! kernel-libipsec) is on the public side with a LAN behind it. strait initiates;
//! charon accepts a peer from any address (`remote_addrs = %any`) that proves the
//! site's FQDN identity, since the gateway's own address never reaches it.
//!
//! Only strait initiates the IKE SA: charon cannot address the natted gateway (the
//! NAT forwards nothing new inbound and has no port forward), as with any site
//! behind a NAT. charon does start exchanges of its own inside the established IKE
//! SA (a Child SA rekey), which cross the NAT's mapping inbound.
//!
//! Root, etcd and strongSwan's charon with kernel-libipsec needed (visible SKIP
//! otherwise).

use strait_testbeds::gateway::{
    Behind, CONVERGE, GatewayBed, LAN, LAN_HOST, NAT_CHARON, NAT_INSIDE, NAT_PUBLIC, POLL, POOL,
    PSK, external, ping, privileged, wait_carried, wait_counted,
};
use strait_testbeds::wait_until;

/// charon on the public side: its address as its identity, the site's gateway by
/// its FQDN from wherever the NAT makes it come from.
fn swanctl_conf() -> String {
    format!(
        "connections {{\n  strait {{\n    version = 2\n    local_addrs = {NAT_CHARON}\n    \
         remote_addrs = %any\n    proposals = aes256gcm16-prfsha384-x25519\n    local {{\n      \
         auth = psk\n      id = {NAT_CHARON}\n    }}\n    remote {{\n      auth = psk\n      \
         id = gw.dc.strait.test\n    }}\n    children {{\n      lan {{\n        \
         local_ts = {LAN}\n        remote_ts = {POOL}\n        \
         esp_proposals = aes256gcm16-x25519\n        mode = tunnel\n      }}\n    }}\n  }}\n}}\n\
         secrets {{\n  ike-strait {{\n    id-a = {NAT_CHARON}\n    id-b = gw.dc.strait.test\n    \
         secret = \"{PSK}\"\n  }}\n}}\n"
    )
}

#[test]
fn nat_traversal_carries_the_site_to_strongswan_through_a_masquerading_router() {
    let t = "nat_traversal_carries_the_site_to_strongswan_through_a_masquerading_router";
    if !privileged(t) {
        return;
    }
    let mut bed = GatewayBed::start_natted(2, &[0], &[], Behind::Site);
    let c1 = bed.cluster.add_container(0, "c1");
    let c2 = bed.cluster.add_container(1, "c2");
    let charon = bed.charon(&swanctl_conf(), &[]).expect("charon");
    let doc = format!(
        "name: onprem\nsite: dc\naddress: {NAT_CHARON}\nauth: {{method: psk, secret: {PSK}}}\n\
         local_id: fqdn:gw.dc.strait.test\nremote_networks: [{LAN}]\n"
    );
    bed.apply_peer(0, &doc);
    let h1 = &bed.cluster.hosts()[0];
    wait_carried(h1, "the gateway's SAs through the NAT", CONVERGE, &charon);
    let p = external(h1).expect("peer");
    assert!(
        p.initiator && p.nat,
        "strait initiated, NAT-T in use: {p:?}"
    );

    // charon sees the gateway only as the NAT's public address, on a rewritten port,
    // and has ESP in UDP.
    let sas = charon.swanctl(&["--list-sas"]).expect("list-sas");
    let remote = format!("remote 'gw.dc.strait.test' @ {NAT_PUBLIC}[");
    assert!(sas.contains(&remote), "{sas}");
    let port: u16 = sas[sas.find(&remote).unwrap() + remote.len()..]
        .split(']')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the gateway's port in {sas}"));
    assert!((30000..31000).contains(&port), "a port of the NAT's: {sas}");
    assert!(sas.contains("TUNNEL-in-UDP"), "ESP in UDP: {sas}");

    for c in [&c1, &c2] {
        assert!(ping(&c.ns, LAN_HOST), "{} → {LAN_HOST}", c.name);
        assert!(
            ping(&bed.lan, &c.ip4().to_string()),
            "{LAN_HOST} → {}",
            c.name
        );
    }
    // Everything crossed the NAT in UDP 4500, nothing as bare ESP.
    let (esp, udp4500) = bed.nat_counters();
    assert_eq!(esp, 0, "bare ESP through the NAT");
    assert!(udp4500 > 0, "nothing in UDP 4500 through the NAT");

    // The datapath's counters for the external peer, per SA and in total, in the API
    // and in `netctl ipsec peers`.
    let p = wait_counted(h1);
    let (ok, table) = h1.netctl(&["ipsec", "peers"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("ext:onprem"))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert!(ok, "{table}");
    let (pkts_in, pkts_out): (u64, u64) = (row[6].parse().unwrap(), row[7].parse().unwrap());
    assert!(pkts_in > 0 && pkts_out > 0, "{table}");
    assert!(pkts_in >= p.totals.packets_in, "{table}\n{p:?}");

    // charon rekeys the Child SA: its request comes in through the NAT's mapping.
    charon
        .swanctl(&["--rekey", "--child", "lan"])
        .expect("charon rekeys");
    wait_until(
        "charon's rekey through the NAT",
        CONVERGE,
        POLL,
        || match external(h1) {
            Some(p) if p.child_rekeys >= 1 && p.child_sas.iter().any(|c| c.active) => Ok(()),
            other => Err(format!("{other:?}\n{}", charon.log())),
        },
    )
    .unwrap();
    assert!(ping(&c2.ns, LAN_HOST), "c2 → {LAN_HOST} after the rekey");
    let after = external(h1).expect("peer");
    assert!(
        after.totals.packets_out > p.totals.packets_out && after.totals.child_rekeys >= 1,
        "totals keep counting over the rekey: {after:?}"
    );
}

/// A branch office behind a NAT dials in: the peer is declared without an address
/// (strait only answers), charon initiates towards the gateway's underlay address
/// from behind a masquerading router. strait serves it from wherever its IKE comes
/// from, sends ESP to the NAT's mapped port, and shows where the peer is.
#[test]
fn a_peer_behind_a_nat_without_an_address_dials_in_and_is_served() {
    let t = "a_peer_behind_a_nat_without_an_address_dials_in_and_is_served";
    if !privileged(t) {
        return;
    }
    let mut bed = GatewayBed::start_natted(2, &[0], &[], Behind::Peer);
    let c2 = bed.cluster.add_container(1, "c2");
    let h1_addr = bed.cluster.hosts()[0].underlay_v4;
    let conf = format!(
        "connections {{\n  strait {{\n    version = 2\n    local_addrs = {NAT_CHARON}\n    \
         remote_addrs = {h1_addr}\n    proposals = aes256gcm16-prfsha384-x25519\n    local {{\n      \
         auth = psk\n      id = branch.onprem.test\n    }}\n    remote {{\n      auth = psk\n      \
         id = {h1_addr}\n    }}\n    children {{\n      lan {{\n        \
         local_ts = {LAN}\n        remote_ts = {POOL}\n        \
         esp_proposals = aes256gcm16-x25519\n        mode = tunnel\n        start_action = start\n      }}\n    }}\n  }}\n}}\n\
         secrets {{\n  ike-strait {{\n    id-a = branch.onprem.test\n    id-b = {h1_addr}\n    \
         secret = \"{PSK}\"\n  }}\n}}\n"
    );
    let doc = format!(
        "name: onprem\nsite: dc\ninitiate: peer\nauth: {{method: psk, secret: {PSK}}}\n\
         remote_id: fqdn:branch.onprem.test\nremote_networks: [{LAN}]\n"
    );
    bed.apply_peer(0, &doc);
    let charon = bed.charon(&conf, &[]).expect("charon");
    let h1 = &bed.cluster.hosts()[0];
    wait_carried(h1, "the branch's SAs through its NAT", CONVERGE, &charon);
    let p = external(h1).expect("peer");
    assert!(
        !p.initiator && p.nat,
        "the branch initiated, through a NAT: {p:?}"
    );
    let at = p.address.expect("where the branch is");
    assert_eq!(at.ip().to_string(), NAT_INSIDE, "{p:?}");
    assert!((30000..31000).contains(&at.port()), "a mapped port: {p:?}");
    assert!(ping(&c2.ns, LAN_HOST), "c2 → {LAN_HOST}");
    assert!(ping(&bed.lan, &c2.ip4().to_string()), "{LAN_HOST} → c2");
    let (esp, udp4500) = bed.nat_counters();
    assert_eq!(esp, 0, "bare ESP through the NAT");
    assert!(udp4500 > 0, "nothing in UDP 4500 through the NAT");
}
