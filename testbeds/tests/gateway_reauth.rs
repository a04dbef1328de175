//! Reauthentication (RFC 7296 §2.8.3) between a strait site gateway and strongSwan's
//! charon (5.9, kernel-libipsec, `make_before_break = yes`), end to end: from strait's
//! side (`netctl ipsec rekey ext:onprem --reauth`) and from strongSwan's (`swanctl
//! --rekey --ike strait --reauth`), while a container on the other host of the site
//! pings the LAN behind strongSwan every 20 ms. No ping is lost, each reauthentication
//! leaves a new IKE SA and a new Child SA, and afterwards both ends agree on the SPIs.
//!
//! Root, etcd and strongSwan's charon with kernel-libipsec needed (visible SKIP
//! otherwise).

use std::time::Duration;

use strait_api::ipsec::IpsecPeer;
use strait_testbeds::cluster::ClusterHost;
use strait_testbeds::cluster::probe::ContinuousPing;
use strait_testbeds::esp::strongswan::ExternalGateway;
use strait_testbeds::gateway::{
    CONVERGE, GatewayBed, LAN_HOST, POLL, PSK, external, ping, privileged, wait_carried,
};
use strait_testbeds::wait_until;

/// charon's IKE SAs with us, as `swanctl --list-sas` numbers them (`strait: #3,
/// ESTABLISHED, …`), and the whole listing.
fn charon_ike_sas(charon: &ExternalGateway) -> (Vec<String>, String) {
    let sas = charon.swanctl(&["--list-sas"]).unwrap_or_default();
    let ids = sas
        .lines()
        .filter(|l| l.starts_with("strait: #") && l.contains("ESTABLISHED"))
        .filter_map(|l| l.split(',').next())
        .map(str::to_string)
        .collect();
    (ids, sas)
}

/// The gateway's one Child SA with the peer, by its inbound SPI, when there is one.
fn child_spi(p: &IpsecPeer) -> Option<String> {
    match &p.child_sas[..] {
        [c] if p.ike_state == "established" => Some(c.spi_in.clone()),
        _ => None,
    }
}

/// Waits until a reauthentication replaced the IKE SA `ike` (charon's number) and
/// the Child SA `spi_in` (ours): each end holds exactly one IKE SA and one Child SA,
/// new ones, and charon's are ours (by SPI). Returns the new pair.
fn wait_reauthenticated(
    h1: &ClusterHost,
    charon: &ExternalGateway,
    what: &str,
    (ike, spi_in): (&str, &str),
) -> (String, String) {
    let mut now = (String::new(), String::new());
    wait_until(what, CONVERGE, POLL, || {
        let p = external(h1).ok_or("the gateway does not carry the peer")?;
        let (ids, sas) = charon_ike_sas(charon);
        let child = child_spi(&p);
        match (&ids[..], child) {
            ([id], Some(spi)) if id != ike && spi != spi_in => {
                let c = &p.child_sas[0];
                let (i, o) = (
                    c.spi_in.trim_start_matches("0x"),
                    c.spi_out.trim_start_matches("0x"),
                );
                let old = spi_in.trim_start_matches("0x");
                if sas.contains(i)
                    && sas.contains(o)
                    && !sas.contains(old)
                    && sas.matches("INSTALLED").count() == 1
                {
                    now = (id.clone(), spi);
                    return Ok(());
                }
                Err(format!("SPIs differ: {p:?}\n{sas}"))
            }
            _ => Err(format!("{p:?}\n{sas}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", charon.log()));
    now
}

#[test]
fn reauthentication_from_either_side_loses_no_packet() {
    let t = "reauthentication_from_either_side_loses_no_packet";
    if !privileged(t) {
        return;
    }
    let mut bed = GatewayBed::start(2, &[0], None, &[]);
    let c2 = bed.cluster.add_container(1, "c2");
    let charon = bed
        .charon(&bed.swanctl_psk(PSK, "trap"), &[])
        .expect("charon");
    bed.add_peer_psk(PSK, &[]);
    let h1 = &bed.cluster.hosts()[0];
    wait_carried(h1, "the gateway's SAs with strongSwan", CONVERGE, &charon);
    assert!(ping(&c2.ns, LAN_HOST));
    let first = {
        let (ids, sas) = charon_ike_sas(&charon);
        let spi = external(h1).as_ref().and_then(child_spi);
        match (&ids[..], spi) {
            ([id], Some(spi)) => (id.clone(), spi),
            _ => panic!(
                "one IKE SA and one Child SA before: {sas}\n{:?}",
                external(h1)
            ),
        }
    };
    let lan: std::net::IpAddr = LAN_HOST.parse().unwrap();
    // 20 s of pings: both reauthentications and their overlaps fall inside.
    let run = ContinuousPing::start(&c2.ns, lan, 1000, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out) = h1.netctl(&["ipsec", "rekey", "ext:onprem", "--reauth"]);
    assert!(ok, "{out}");
    let ours = wait_reauthenticated(h1, &charon, "our reauthentication", (&first.0, &first.1));
    std::thread::sleep(Duration::from_secs(2));
    charon
        .swanctl(&["--rekey", "--ike", "strait", "--reauth"])
        .expect("charon reauthenticates");
    let theirs = wait_reauthenticated(
        h1,
        &charon,
        "strongSwan's reauthentication",
        (&ours.0, &ours.1),
    );
    let stats = run.finish().expect("ping");
    assert_eq!(stats.lost(), 0, "{stats:?}\n{}", charon.log());
    // Still the same pair at the end, agreed on by both ends; and the gateway never
    // reported the peer down.
    let settled = wait_reauthenticated(h1, &charon, "the end", (&first.0, &first.1));
    assert_eq!(settled, theirs);
    let p = external(h1).expect("peer");
    assert!(p.last_error.is_none(), "{p:?}");
}
