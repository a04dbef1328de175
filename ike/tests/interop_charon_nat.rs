//! NAT traversal (RFC 7296 §2.23, RFC 3948) through a real NAT: our speaker in one
//! netns behind a router netns that masquerades (iptables MASQUERADE), strongSwan's
//! charon in a third. NAT detection finds our side translated, IKE moves to UDP 4500,
//! our NAT keepalives cross the NAT (counted by an iptables rule in charon's netns),
//! the Child SA is UDP-encapsulated with the keys charon has, and Child SA and IKE SA
//! rekeys work through the NAT. Skips visibly without root, charon or the kernel's
//! NAT support.

mod common;

use std::time::{Duration, Instant};

use common::charon::*;
use strait_ike::speaker::{Event, Speaker};
use strait_testbeds::netns::Netns;
use strait_testbeds::unique_prefix;

/// Ours, behind the NAT.
const OURS: &str = "10.236.1.2";
const ROUTER_INSIDE: &str = "10.236.1.1";
/// The router's outside address: what charon sees us as.
const ROUTER_OUTSIDE: &str = "10.236.2.1";
const THEIRS: &str = "10.236.2.2";
/// A NAT keepalive in IPv4: IP and UDP headers and one 0xff byte.
const KEEPALIVE_IP_LEN: &str = "29";

/// Keepalives charon's netns received from the NAT's outside address.
fn keepalives_through_nat(theirs: &Netns) -> u64 {
    let table = theirs.exec_ok(&["iptables", "-L", "INPUT", "-v", "-n", "-x"]);
    table
        .lines()
        .find(|l| l.contains("udp dpt:4500") && l.contains(ROUTER_OUTSIDE))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the counting rule is in place")
}

#[test]
fn charon_and_strait_traverse_a_masquerading_nat() {
    let name = "charon_and_strait_traverse_a_masquerading_nat";
    if !can_run(name) {
        return;
    }
    let prefix = unique_prefix();
    let ours = Netns::new(format!("{prefix}s"));
    let router = Netns::new(format!("{prefix}r"));
    let theirs = Netns::new(format!("{prefix}c"));
    ours.exec_ok(&[
        "ip",
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "in0",
        "netns",
        router.name(),
    ]);
    router.exec_ok(&[
        "ip",
        "link",
        "add",
        "out0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        theirs.name(),
    ]);
    for (ns, dev, addr) in [
        (&ours, "eth0", OURS),
        (&router, "in0", ROUTER_INSIDE),
        (&router, "out0", ROUTER_OUTSIDE),
        (&theirs, "eth0", THEIRS),
    ] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev]);
        ns.exec_ok(&["ip", "link", "set", dev, "up"]);
    }
    ours.exec_ok(&["ip", "route", "add", "default", "via", ROUTER_INSIDE]);
    router.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // The NAT and the keepalive counter live in the test's own namespaces: they go
    // with them.
    let nat = router.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "out0",
        "-j",
        "MASQUERADE",
    ]);
    let counter = theirs.exec(&[
        "iptables",
        "-A",
        "INPUT",
        "-s",
        ROUTER_OUTSIDE,
        "-p",
        "udp",
        "--dport",
        "4500",
        "-m",
        "length",
        "--length",
        KEEPALIVE_IP_LEN,
    ]);
    for out in [&nat, &counter] {
        if !out.status.success() {
            eprintln!(
                "SKIP: {name}: iptables NAT or length match unavailable: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
    }
    theirs.exec_ok(&["ip", "addr", "add", "10.236.20.1/32", "dev", "lo"]);
    let dir = tempfile::tempdir().unwrap();
    let (signer, verifier) = raw_keys(dir.path());
    let charon = Charon::start(
        &theirs,
        dir.path(),
        &swanctl_raw_keys(&RawKeyConf {
            local_addrs: THEIRS,
            remote_addrs: "%any",
            local_ts: "10.236.20.0/24",
            remote_ts: "10.236.10.0/24",
            connection_extra: "",
        }),
        "",
    );
    let mut config = config(strait_id(), &["10.236.10.0/24"], &["10.236.20.0/24"]);
    config.nat_keepalive = Duration::from_secs(1);
    let mut driver = Driver::new(
        Speaker::new(config, Box::new(signer), Box::new(verifier)),
        sockets(&ours, OURS),
    );
    let peer = charon_id();
    driver.connect(peer.clone(), THEIRS);
    let up = driver.run_until(Duration::from_secs(15), |e| !children(e).is_empty());
    assert!(
        up,
        "no Child SA with charon through the NAT: {:?}\n{}",
        driver.events,
        charon.all_output()
    );

    // NAT detection: we are translated (charon with libipsec also claims to be, to
    // force UDP encapsulation, so only our side's flag tells a real NAT).
    let status = driver.speaker.status();
    assert_eq!(status.len(), 1, "{status:?}");
    assert!(status[0].nat.local_behind_nat, "{status:?}");
    assert_eq!(status[0].local, format!("{OURS}:4500").parse().unwrap());
    assert_eq!(status[0].remote, format!("{THEIRS}:4500").parse().unwrap());
    assert!(
        driver
            .events
            .iter()
            .any(|e| matches!(e, Event::IkeSaUp { nat, .. } if nat.local_behind_nat))
    );
    let child = children(&driver.events)[0].clone();
    assert!(child.udp_encap);
    assert_eq!(child.remote, format!("{THEIRS}:4500").parse().unwrap());
    assert_keys_match(&charon, &child, true);
    let log = charon.log();
    assert!(log.contains("remote host is behind NAT"), "{log}");
    assert!(log.contains(&format!("{ROUTER_OUTSIDE}[4500]")), "{log}");
    // Everything after IKE_SA_INIT went from and to port 4500.
    let init_done = driver
        .wire
        .iter()
        .position(|w| w.local.port() == 4500)
        .expect("IKE moved to 4500");
    assert!(
        driver.wire[init_done..]
            .iter()
            .all(|w| w.local.port() == 4500 && w.remote.port() == 4500)
    );

    // Keepalives cross the NAT (one a second).
    driver.run_until(Duration::from_millis(3500), |_| false);
    let crossed = keepalives_through_nat(&theirs);
    assert!(crossed >= 2, "{crossed} keepalives reached charon");

    // Rekeys through the NAT: Child SA, IKE SA, then Child SA on the new IKE SA.
    driver.speaker.rekey_child(&peer, Instant::now());
    let rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            && e.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. }))
    });
    assert!(rekeyed, "{:?}\n{}", driver.events, charon.log());
    let newest = (*children(&driver.events).last().unwrap()).clone();
    assert!(newest.udp_encap);
    assert_keys_match(&charon, &newest, true);
    driver.speaker.rekey_ike(&peer, Instant::now());
    let ike_rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::IkeSaRekeyed { .. }))
    });
    assert!(ike_rekeyed, "{:?}\n{}", driver.events, charon.log());
    driver.run_until(Duration::from_secs(2), |_| false);
    let status = driver.speaker.status();
    assert_eq!(status.len(), 1, "{status:?}");
    assert!(status[0].nat.local_behind_nat, "the new IKE SA keeps NAT-T");
    driver.speaker.rekey_child(&peer, Instant::now());
    let again = driver.run_until(Duration::from_secs(10), |e| {
        e.iter()
            .filter(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            .count()
            == 2
    });
    assert!(again, "{:?}\n{}", driver.events, charon.log());
    assert_keys_match(&charon, children(&driver.events).last().unwrap(), true);
    // The new IKE SA keeps the NAT mapping alive too.
    let before = keepalives_through_nat(&theirs);
    driver.run_until(Duration::from_millis(2500), |_| false);
    assert!(keepalives_through_nat(&theirs) > before);
    driver.close(&peer);
    drop(charon);
}
