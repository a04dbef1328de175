//! Reauthentication (RFC 7296 §2.8.3) over the in-memory network, make-before-break,
//! from either end: a new IKE SA with a new Child SA comes up beside the old ones,
//! the new Child SA replaces the old as a rekey would (both installed during the
//! overlap), then the old IKE SA is deleted; on request, on a lost datagram, when the
//! old SA's Delete never arrives, and by the configured interval.

mod common;

use std::time::Duration;

use common::*;
use strait_ike::codec::ExchangeType;
use strait_ike::speaker::{ChildSa, Event, IkeState, SaStatus};

const LIMIT: Duration = Duration::from_secs(30);

fn established(net: &mut Net) {
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
}

fn quiet(net: &mut Net) {
    net.run_for(Duration::from_secs(5));
}

/// Each node has exactly one IKE SA (established) with one Child SA installed, and
/// the two ends agree on the SPIs of both.
fn one_of_each(net: &Net) -> (SaStatus, ChildSa) {
    let (sa, sb) = (net.nodes[0].speaker.status(), net.nodes[1].speaker.status());
    assert_eq!((sa.len(), sb.len()), (1, 1), "{sa:#?}\n{sb:#?}");
    assert_eq!(sa[0].state, IkeState::Established);
    assert_eq!((sa[0].spi_i, sa[0].spi_r), (sb[0].spi_i, sb[0].spi_r));
    let (a, b) = (net.nodes[0].installed(), net.nodes[1].installed());
    assert_eq!(a.len(), 1, "A: {a:?}");
    assert_eq!(b.len(), 1, "B: {b:?}");
    assert_mirror(&a[0], &b[0]);
    assert_eq!(sa[0].children.len(), 1);
    assert_eq!(sa[0].children[0].spi_in, a[0].spi_in);
    (sa[0].clone(), a[0].clone())
}

/// From the first Child SA on, a node always has one installed: the new one comes
/// before the old one goes.
fn never_without_child(node: &Node) {
    let mut live = 0i32;
    for e in &node.events {
        match e {
            Event::ChildSaUp(_) | Event::ChildSaRekeyed { .. } => live += 1,
            Event::ChildSaDeleted { .. } => {
                live -= 1;
                assert!(
                    live > 0,
                    "{} was left without a Child SA: {:#?}",
                    node.id,
                    node.events
                );
            }
            _ => {}
        }
    }
}

/// After a reauthentication of `old` (node 0's view): new IKE and Child SAs on both
/// ends, the new Child SA announced as the replacement of the old one (by the node
/// that reauthenticated as the one that asked), no IKE SA reported down.
fn replaced(net: &Net, old_ike: &SaStatus, old_child: &ChildSa, by: usize) {
    let (ike, child) = one_of_each(net);
    assert_ne!((ike.spi_i, ike.spi_r), (old_ike.spi_i, old_ike.spi_r));
    assert_ne!(child.spi_in, old_child.spi_in);
    assert_ne!(child.key_in, old_child.key_in);
    for (i, n) in net.nodes.iter().enumerate() {
        never_without_child(n);
        assert_eq!(
            n.count(|e| matches!(e, Event::IkeSaDown { .. })),
            0,
            "{:#?}",
            n.events
        );
        assert_eq!(
            n.count(|e| matches!(e, Event::ChildSaUp(_))),
            1,
            "{:#?}",
            n.events
        );
        let old_in = if i == 0 {
            old_child.spi_in
        } else {
            old_child.spi_out
        };
        let rekeyed: Vec<_> = n
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaRekeyed {
                    old_spi_in,
                    initiator,
                    ..
                } => Some((*old_spi_in, *initiator)),
                _ => None,
            })
            .collect();
        assert_eq!(rekeyed, vec![(old_in, i == by)], "{}", n.id);
        let deleted = n
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaDeleted { spi_in, .. } => Some(*spi_in),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert_eq!(
            deleted,
            vec![old_in],
            "{}: only the old Child SA goes",
            n.id
        );
    }
}

#[test]
fn reauthentication_from_either_end_replaces_the_sas_before_deleting_the_old() {
    for by in [0, 1] {
        let mut net = Net::pair();
        established(&mut net);
        let (old_ike, old_child) = one_of_each(&net);
        let now = net.now;
        let other = node_id(1 - by);
        net.nodes[by].speaker.reauthenticate(&other, now);
        quiet(&mut net);
        replaced(&net, &old_ike, &old_child, by);
        // The new IKE SA is the one that works now: a Child SA rekey from the
        // other end, and another reauthentication.
        let (ike, child) = one_of_each(&net);
        let now = net.now;
        let id = node_id(by);
        net.nodes[1 - by].speaker.rekey_child(&id, now);
        quiet(&mut net);
        let (_, rekeyed) = one_of_each(&net);
        assert_ne!(rekeyed.spi_in, child.spi_in);
        let now = net.now;
        net.nodes[1 - by].speaker.reauthenticate(&id, now);
        quiet(&mut net);
        let (again, _) = one_of_each(&net);
        assert_ne!((again.spi_i, again.spi_r), (ike.spi_i, ike.spi_r));
    }
}

/// Every message of the reauthentication is lost once (IKE_SA_INIT, IKE_AUTH and the
/// old SA's Delete, requests and responses): retransmissions carry it through, and
/// the end is the same.
#[test]
fn a_reauthentication_survives_lost_datagrams() {
    for by in [0, 1] {
        let mut net = Net::pair();
        established(&mut net);
        let (old_ike, old_child) = one_of_each(&net);
        let mut seen: Vec<(ExchangeType, bool, u64, u64)> = Vec::new();
        net.fault = Box::new(move |d| {
            let Some(m) = d.message() else {
                return Fault::Deliver;
            };
            let h = m.header;
            // The responder's SPI is 0 only in the first IKE_SA_INIT request.
            let key = (
                h.exchange,
                h.response,
                h.spi_i,
                if h.exchange == ExchangeType::IkeSaInit {
                    0
                } else {
                    h.spi_r
                },
            );
            if seen.contains(&key) {
                Fault::Deliver
            } else {
                seen.push(key);
                Fault::Drop
            }
        });
        let now = net.now;
        let other = node_id(1 - by);
        net.nodes[by].speaker.reauthenticate(&other, now);
        net.run_for(Duration::from_secs(20));
        replaced(&net, &old_ike, &old_child, by);
    }
}

/// The old IKE SA's Delete never gets through: the reauthenticating end gives up on
/// it, the other lets it go by itself after as long; both then hold only the new
/// SAs, and neither reports the peer down.
#[test]
fn an_old_ike_sa_whose_delete_is_lost_still_ends_on_both_sides() {
    for by in [0, 1] {
        let mut net = Net::pair();
        established(&mut net);
        let (old_ike, old_child) = one_of_each(&net);
        let spis = (old_ike.spi_i, old_ike.spi_r);
        net.fault = Box::new(move |d| match d.message() {
            Some(m)
                if (m.header.spi_i, m.header.spi_r) == spis
                    && m.header.exchange == ExchangeType::Informational =>
            {
                Fault::Drop
            }
            _ => Fault::Deliver,
        });
        let now = net.now;
        let other = node_id(1 - by);
        net.nodes[by].speaker.reauthenticate(&other, now);
        net.run_for(Duration::from_secs(60));
        replaced(&net, &old_ike, &old_child, by);
    }
}

#[test]
fn the_reauthentication_interval_reauthenticates_on_its_own() {
    // Node 1, the responder of the first IKE SA, has the interval.
    let mut configs = vec![config(0), config(1)];
    configs[1].reauth_after = Some(Duration::from_secs(60));
    let mut net = Net::new(configs);
    established(&mut net);
    let (old_ike, old_child) = one_of_each(&net);
    net.run_for(Duration::from_secs(40));
    assert_eq!(one_of_each(&net).0.spi_i, old_ike.spi_i, "not due yet");
    net.run_for(Duration::from_secs(30));
    replaced(&net, &old_ike, &old_child, 1);
    // And again, an interval after the new one was authenticated.
    let (ike, _) = one_of_each(&net);
    net.run_for(Duration::from_secs(65));
    let (again, _) = one_of_each(&net);
    assert_ne!(again.spi_i, ike.spi_i);
}

/// Two IKE SAs opened at once (neither up when the other began) are still
/// duplicates, not a reauthentication: one stays, with one Child SA.
#[test]
fn ike_sas_opened_at_once_are_still_duplicates() {
    let mut net = Net::pair();
    net.connect(0, 1);
    net.connect(1, 0);
    quiet(&mut net);
    quiet(&mut net);
    one_of_each(&net);
}
