//! Two speakers establishing IKE and Child SAs over the in-memory network: every
//! group, cipher and ESN choice, keys that mirror, INVALID_KE_PAYLOAD, both sides
//! initiating at once, wrong keys, and traffic selectors.

mod common;

use std::time::Duration;

use common::*;
use strait_ike::codec::{NotifyType, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{Event, IkeState};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn establishes_with_each_group_cipher_and_esn() {
    for group in [Group::Curve25519, Group::Ecp256] {
        for cipher in [Cipher::AesGcm16_128, Cipher::AesGcm16_256] {
            for (esn, prf) in [(true, Prf::HmacSha256), (false, Prf::HmacSha384)] {
                let configs = (0..2)
                    .map(|i| {
                        let mut c = config(i);
                        c.groups = vec![group];
                        c.ike_ciphers = vec![cipher];
                        c.esp_ciphers = vec![cipher];
                        c.prfs = vec![prf];
                        c.esn = vec![esn];
                        c
                    })
                    .collect();
                let mut net = Net::new(configs);
                net.connect(0, 1);
                assert!(
                    net.run_until(LIMIT, Net::established),
                    "{group:?} {cipher:?}"
                );
                let (a, b) = (&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
                assert_mirror(a, b);
                assert_eq!((a.cipher, a.esn), (cipher, esn));
                assert_eq!(a.key_in.len(), cipher.keymat_len());
                assert_eq!(a.peer, node_id(1));
                assert_eq!(b.peer, node_id(0));
                assert!(!a.udp_encap);
                for n in &net.nodes {
                    let s = n.speaker.status();
                    assert_eq!(s.len(), 1);
                    assert_eq!(s[0].state, IkeState::Established);
                    let suite = s[0].suite.unwrap();
                    assert_eq!((suite.group, suite.cipher, suite.prf), (group, cipher, prf));
                    assert_eq!(s[0].children.len(), 1);
                }
                let (sa, sb) = (
                    &net.nodes[0].speaker.status()[0],
                    &net.nodes[1].speaker.status()[0],
                );
                assert_eq!((sa.spi_i, sa.spi_r), (sb.spi_i, sb.spi_r));
                assert!(sa.initiator && !sb.initiator);
                assert_eq!(
                    net.nodes[0].count(|e| matches!(e, Event::IkeSaUp { .. })),
                    1
                );
            }
        }
    }
}

#[test]
fn invalid_ke_payload_retries_with_the_responders_group() {
    let mut a = config(0);
    a.groups = vec![Group::Ecp256, Group::Curve25519];
    let mut b = config(1);
    b.groups = vec![Group::Curve25519];
    let mut net = Net::new(vec![a, b]);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    let invalid_ke = net.sent.iter().filter_map(Datagram::message).any(|m| {
        m.header.response
            && m.notify(NotifyType::InvalidKePayload)
                .is_some_and(|n| n.data == 31u16.to_be_bytes())
    });
    assert!(invalid_ke, "the responder asked for group 31");
    let s = net.nodes[0].speaker.status();
    assert_eq!(s[0].suite.unwrap().group, Group::Curve25519);
    assert_mirror(&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
}

#[test]
fn init_carries_nat_detection_and_signature_hash_algorithms() {
    let mut net = Net::pair();
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    for m in net.sent.iter().filter_map(Datagram::message).take(2) {
        assert!(m.notify(NotifyType::NatDetectionSourceIp).is_some());
        assert!(m.notify(NotifyType::NatDetectionDestinationIp).is_some());
        let sha = m.notify(NotifyType::SignatureHashAlgorithms).unwrap();
        assert_eq!(sha.data, vec![0, 5], "Identity (RFC 8420)");
    }
    for n in &net.nodes {
        assert!(!n.speaker.status()[0].nat.any());
    }
}

#[test]
fn a_nat_on_the_path_is_detected_ike_moves_to_4500_and_keepalives_flow() {
    let mut net = Net::pair();
    // A sits behind a NAT that maps 10.9.9.9 to its public 192.0.2.1.
    let private: std::net::SocketAddr = "10.9.9.9:500".parse().unwrap();
    net.nat = Some((private.ip(), net.nodes[0].addr.ip()));
    let (id, remote, now) = (net.nodes[1].id.clone(), net.nodes[1].addr, net.now);
    net.nodes[0].speaker.connect(id, private, remote, now);
    assert!(net.run_until(LIMIT, Net::established));
    let (sa, sb) = (net.nodes[0].speaker.status(), net.nodes[1].speaker.status());
    assert!(sa[0].nat.local_behind_nat && !sa[0].nat.remote_behind_nat);
    assert!(sb[0].nat.remote_behind_nat && !sb[0].nat.local_behind_nat);
    assert_eq!(sa[0].remote.port(), 4500);
    assert_eq!(sb[0].remote, "192.0.2.1:4500".parse().unwrap());
    let auth = net
        .sent
        .iter()
        .find(|d| d.message().is_some_and(|m| m.header.message_id == 1))
        .unwrap();
    assert_eq!(
        (auth.from.port(), auth.to.port()),
        (4500, 4500),
        "IKE_AUTH on 4500"
    );
    assert!(net.nodes[0].installed()[0].udp_encap && net.nodes[1].installed()[0].udp_encap);
    net.run_for(Duration::from_secs(25));
    let keepalives: Vec<_> = net.sent.iter().filter(|d| d.bytes == [0xff]).collect();
    assert!(
        !keepalives.is_empty(),
        "the side behind the NAT sends keepalives"
    );
    assert!(
        keepalives
            .iter()
            .all(|d| d.from.ip() == net.nodes[0].addr.ip())
    );
}

/// A speaker that forces UDP encapsulation makes its peer believe it is behind a NAT
/// where there is none, in either role: IKE moves to 4500, both Child SAs say
/// `udp_encap`, and the forcing side sends the keepalives.
#[test]
fn forced_udp_encapsulation_works_without_a_nat_in_both_roles() {
    for forcing in [0, 1] {
        let mut configs = vec![config(0), config(1)];
        configs[forcing].force_udp_encap = true;
        let mut net = Net::new(configs);
        net.connect(0, 1);
        assert!(net.run_until(LIMIT, Net::established));
        let other = 1 - forcing;
        let (f, o) = (
            net.nodes[forcing].speaker.status(),
            net.nodes[other].speaker.status(),
        );
        assert!(f[0].nat.local_behind_nat, "{f:?}");
        assert!(
            o[0].nat.remote_behind_nat && !o[0].nat.local_behind_nat,
            "{o:?}"
        );
        assert_eq!((f[0].remote.port(), o[0].remote.port()), (4500, 4500));
        for n in &net.nodes {
            assert!(n.installed()[0].udp_encap);
        }
        net.run_for(Duration::from_secs(25));
        let keepalives: Vec<_> = net.sent.iter().filter(|d| d.bytes == [0xff]).collect();
        assert!(!keepalives.is_empty());
        let forcer = net.nodes[forcing].addr.ip();
        assert!(keepalives.iter().all(|d| d.from.ip() == forcer));
    }
}

#[test]
fn both_sides_initiating_at_once_end_with_one_ike_sa() {
    let mut net = Net::pair();
    net.connect(0, 1);
    net.connect(1, 0);
    net.run_for(LIMIT);
    let (sa, sb) = (net.nodes[0].speaker.status(), net.nodes[1].speaker.status());
    assert_eq!(sa.len(), 1, "{sa:?}");
    assert_eq!(sb.len(), 1, "{sb:?}");
    assert_eq!((sa[0].spi_i, sa[0].spi_r), (sb[0].spi_i, sb[0].spi_r));
    let (ia, ib) = (net.nodes[0].installed(), net.nodes[1].installed());
    assert_eq!((ia.len(), ib.len()), (1, 1));
    assert_mirror(&ia[0], &ib[0]);
}

#[test]
fn a_wrong_key_at_the_responder_is_refused() {
    let mut net = Net::pair();
    let (_, other) = keypair();
    net.nodes[1].keys.lock().unwrap().insert(node_id(0), other);
    net.connect(0, 1);
    net.run_for(LIMIT);
    for n in &net.nodes {
        assert!(n.children_up().is_empty(), "no Child SA at {}", n.id);
        assert!(n.speaker.status().is_empty(), "no SA left at {}", n.id);
    }
    let b_failed = net.nodes[1].events.iter().any(|e| {
        matches!(e, Event::AuthFailed { peer, reason } if *peer == node_id(0) && reason.contains("differs from the one on record"))
    });
    assert!(b_failed, "{:?}", net.nodes[1].events);
    let a_failed = net.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::AuthFailed { .. }));
    assert!(a_failed, "{:?}", net.nodes[0].events);
    let notified = net
        .sent
        .iter()
        .filter_map(Datagram::message)
        .any(|m| m.header.response && m.header.message_id == 1);
    assert!(notified, "the responder answered IKE_AUTH");
}

#[test]
fn a_wrong_key_at_the_initiator_is_refused_and_the_responder_told() {
    let mut net = Net::pair();
    let (_, other) = keypair();
    net.nodes[0].keys.lock().unwrap().insert(node_id(1), other);
    net.connect(0, 1);
    net.run_for(LIMIT);
    assert!(net.nodes[0].children_up().is_empty());
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::AuthFailed { .. }))
    );
    // The responder installed its Child SA before it could know; it is gone again.
    assert!(net.nodes[1].installed().is_empty());
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::AuthFailed { .. }))
    );
    for n in &net.nodes {
        assert!(n.speaker.status().is_empty(), "{:?}", n.speaker.status());
    }
}

#[test]
fn an_unknown_peer_is_refused() {
    let mut net = Net::pair();
    net.nodes[1].keys.lock().unwrap().clear();
    net.connect(0, 1);
    net.run_for(LIMIT);
    let reason = net.nodes[1].events.iter().find_map(|e| match e {
        Event::AuthFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("no public key"));
}

#[test]
fn traffic_selectors_are_narrowed_to_the_responders_policy() {
    let ts = |s: &str| TrafficSelector::prefix(s.parse().unwrap());
    let mut a = config(0);
    a.local_ts = vec![ts("10.1.0.0/16")];
    a.remote_ts = vec![ts("10.0.0.0/8")];
    let mut b = config(1);
    b.local_ts = vec![ts("10.2.0.0/16")];
    b.remote_ts = vec![ts("10.1.0.0/24")];
    let mut net = Net::new(vec![a, b]);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    let ca = &net.nodes[0].installed()[0];
    assert_eq!(ca.ts_local, vec![ts("10.1.0.0/24")]);
    assert_eq!(ca.ts_remote, vec![ts("10.2.0.0/16")]);
    assert_mirror(ca, &net.nodes[1].installed()[0]);
}

#[test]
fn selectors_the_responder_does_not_allow_get_ts_unacceptable() {
    let ts = |s: &str| TrafficSelector::prefix(s.parse().unwrap());
    let mut a = config(0);
    a.local_ts = vec![ts("10.1.0.0/16")];
    let mut b = config(1);
    b.remote_ts = vec![ts("10.9.0.0/16")];
    let mut net = Net::new(vec![a, b]);
    net.connect(0, 1);
    net.run_for(LIMIT);
    assert!(net.nodes[0].installed().is_empty());
    let reason = net.nodes[0].events.iter().find_map(|e| match e {
        Event::ChildSaFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        reason
            .unwrap()
            .contains("the peer refused our traffic selectors (TS_UNACCEPTABLE")
    );
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::IkeSaUp { .. }))
    );
}

#[test]
fn status_shows_no_key_material() {
    let mut net = Net::pair();
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    let c = &net.nodes[0].installed()[0];
    let shown = format!("{:?} {:?}", net.nodes[0].speaker.status(), c);
    assert!(shown.contains("redacted"));
    let key_hex: String = c
        .key_in
        .expose()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!shown.contains(&key_hex[..8]));
}

#[test]
fn a_restarted_peer_replaces_its_stale_sas_with_initial_contact() {
    let mut net = Net::pair();
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    let stale = net.nodes[0].installed()[0].clone();
    net.run_for(Duration::from_secs(1));
    net.restart(1, config(1));
    net.connect(1, 0);
    assert!(net.run_until(LIMIT, |n| !n.nodes[1].installed().is_empty()));
    net.run_for(Duration::from_secs(1));
    let a = &net.nodes[0];
    assert_eq!(a.speaker.status().len(), 1, "the stale IKE SA is gone");
    let (ia, ib) = (a.installed(), net.nodes[1].installed());
    assert_eq!((ia.len(), ib.len()), (1, 1));
    assert_ne!(ia[0].spi_in, stale.spi_in);
    assert_mirror(&ia[0], &ib[0]);
    assert!(a.events.iter().any(|e| matches!(e,
        Event::ChildSaDeleted { spi_in, .. } if *spi_in == stale.spi_in)));
    assert!(a.events.iter().any(|e| matches!(e,
        Event::IkeSaDown { reason, .. } if reason.contains("INITIAL_CONTACT"))));
}
