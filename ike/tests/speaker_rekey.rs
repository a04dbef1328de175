//! Rekeys over the in-memory network: Child SA and IKE SA, on request, by lifetime
//! and on the datapath's limit signal, with both Child SAs installed during the
//! overlap, and simultaneous rekeys from both ends (RFC 7296 §2.8.1).

mod common;

use std::time::Duration;

use common::*;
use strait_ike::speaker::{ChildSa, Event, Lifetime};

const LIMIT: Duration = Duration::from_secs(30);

fn established() -> Net {
    let mut net = Net::pair();
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    net
}

fn quiet(net: &mut Net) {
    net.run_for(Duration::from_secs(5));
}

/// Each node has exactly one Child SA installed, and they mirror.
fn one_child_each(net: &Net) -> (ChildSa, ChildSa) {
    let (a, b) = (net.nodes[0].installed(), net.nodes[1].installed());
    assert_eq!(a.len(), 1, "A: {a:?}");
    assert_eq!(b.len(), 1, "B: {b:?}");
    assert_mirror(&a[0], &b[0]);
    (a[0].clone(), b[0].clone())
}

/// At no point of a node's event history is it without an installed Child SA
/// after the first one came up: the new SA is installed before the old goes.
fn never_without_child(node: &Node) {
    let mut live = 0i32;
    let mut up = false;
    for e in &node.events {
        match e {
            Event::ChildSaUp(_) | Event::ChildSaRekeyed { .. } => {
                live += 1;
                up = true;
            }
            Event::ChildSaDeleted { .. } => {
                live -= 1;
                assert!(
                    !up || live > 0,
                    "{} was left without a Child SA: {:?}",
                    node.id,
                    node.events
                );
            }
            _ => {}
        }
    }
}

#[test]
fn child_rekey_installs_the_new_sa_before_deleting_the_old() {
    let mut net = established();
    let (old, _) = one_child_each(&net);
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&node_id(1), now);
    quiet(&mut net);
    let (new_a, _) = one_child_each(&net);
    assert_ne!(new_a.spi_in, old.spi_in);
    assert_ne!(new_a.key_in, old.key_in);
    for n in &net.nodes {
        never_without_child(n);
        let rekeyed = n
            .events
            .iter()
            .position(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            .unwrap();
        let deleted = n
            .events
            .iter()
            .position(|e| matches!(e, Event::ChildSaDeleted { .. }))
            .unwrap();
        assert!(rekeyed < deleted);
        assert_eq!(n.speaker.status()[0].child_rekeys, 1);
    }
    match &net.nodes[0]
        .events
        .iter()
        .find(|e| matches!(e, Event::ChildSaRekeyed { .. }))
    {
        Some(Event::ChildSaRekeyed {
            old_spi_in,
            initiator,
            ..
        }) => {
            assert_eq!(*old_spi_in, old.spi_in);
            assert!(*initiator, "node 0 asked for the rekey");
        }
        other => panic!("{other:?}"),
    }
    // The side that deletes the old SA is told to stop sending on it first.
    let deleting = net.nodes[0]
        .events
        .iter()
        .position(
            |e| matches!(e, Event::ChildSaDeleting { spi_out, .. } if *spi_out == old.spi_out),
        )
        .expect("ChildSaDeleting for the old SA");
    let deleted = net.nodes[0]
        .events
        .iter()
        .position(|e| matches!(e, Event::ChildSaDeleted { .. }))
        .unwrap();
    assert!(deleting < deleted);
    // The responder is told it answered, so that it waits before sending on the new SA.
    assert!(net.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::ChildSaRekeyed {
            initiator: false,
            ..
        }
    )));
}

#[test]
fn child_rekey_without_pfs_also_mirrors() {
    let mut configs = vec![config(0), config(1)];
    for c in &mut configs {
        c.pfs = false;
    }
    let mut net = Net::new(configs);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    let now = net.now;
    net.nodes[1].speaker.rekey_child(&node_id(0), now);
    quiet(&mut net);
    let (a, _) = one_child_each(&net);
    assert_eq!(
        net.nodes[0].count(|e| matches!(e, Event::ChildSaRekeyed { .. })),
        1
    );
    assert!(a.spi_in != 0);
}

#[test]
fn ike_rekey_keeps_the_child_sa_and_the_new_sa_works() {
    let mut net = established();
    let (child, _) = one_child_each(&net);
    let before = net.nodes[0].speaker.status()[0].clone();
    let now = net.now;
    net.nodes[0].speaker.rekey_ike(&node_id(1), now);
    quiet(&mut net);
    let (sa, sb) = (net.nodes[0].speaker.status(), net.nodes[1].speaker.status());
    assert_eq!((sa.len(), sb.len()), (1, 1), "{sa:?} {sb:?}");
    assert_ne!(sa[0].spi_i, before.spi_i);
    assert_eq!((sa[0].spi_i, sa[0].spi_r), (sb[0].spi_i, sb[0].spi_r));
    assert_eq!((sa[0].ike_rekeys, sb[0].ike_rekeys), (1, 1));
    assert_eq!(
        sa[0].children[0].spi_in, child.spi_in,
        "the Child SA moved over untouched"
    );
    for n in &net.nodes {
        assert_eq!(n.count(|e| matches!(e, Event::IkeSaRekeyed { .. })), 1);
        assert_eq!(n.count(|e| matches!(e, Event::IkeSaDown { .. })), 0);
        assert_eq!(n.count(|e| matches!(e, Event::ChildSaDeleted { .. })), 0);
    }
    // The new IKE SA carries exchanges: a Child SA rekey and a responder-side one.
    let now = net.now;
    net.nodes[1].speaker.rekey_child(&node_id(0), now);
    quiet(&mut net);
    let (a, _) = one_child_each(&net);
    assert_ne!(a.spi_in, child.spi_in);
    let now = net.now;
    net.nodes[1].speaker.rekey_ike(&node_id(0), now);
    quiet(&mut net);
    assert_eq!(net.nodes[0].speaker.status()[0].ike_rekeys, 2);
    one_child_each(&net);
}

#[test]
fn simultaneous_child_rekey_leaves_one_new_sa() {
    let mut net = established();
    let (old, _) = one_child_each(&net);
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&node_id(1), now);
    net.nodes[1].speaker.rekey_child(&node_id(0), now);
    quiet(&mut net);
    let (a, _) = one_child_each(&net);
    assert_ne!(a.spi_in, old.spi_in);
    for n in &net.nodes {
        assert_eq!(
            n.count(|e| matches!(e, Event::ChildSaRekeyed { .. })),
            2,
            "{:?}",
            n.events
        );
        never_without_child(n);
        assert_eq!(n.speaker.status()[0].children.len(), 1);
    }
}

#[test]
fn simultaneous_ike_rekey_leaves_one_ike_sa() {
    let mut net = established();
    let (child, _) = one_child_each(&net);
    let now = net.now;
    net.nodes[0].speaker.rekey_ike(&node_id(1), now);
    net.nodes[1].speaker.rekey_ike(&node_id(0), now);
    quiet(&mut net);
    let (sa, sb) = (net.nodes[0].speaker.status(), net.nodes[1].speaker.status());
    assert_eq!((sa.len(), sb.len()), (1, 1), "{sa:?}\n{sb:?}");
    assert_eq!((sa[0].spi_i, sa[0].spi_r), (sb[0].spi_i, sb[0].spi_r));
    assert_eq!(sa[0].children.len(), 1, "{sa:?}");
    assert_eq!(sa[0].children[0].spi_in, child.spi_in);
    for n in &net.nodes {
        assert_eq!(n.count(|e| matches!(e, Event::ChildSaDeleted { .. })), 0);
        assert_eq!(n.count(|e| matches!(e, Event::IkeSaDown { .. })), 0);
    }
    // And it works.
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&node_id(1), now);
    quiet(&mut net);
    one_child_each(&net);
}

#[test]
fn lifetimes_rekey_child_and_ike_sas_by_time() {
    let mut configs = vec![config(0), config(1)];
    for c in &mut configs {
        c.child_lifetime = Lifetime {
            soft: Duration::from_secs(20),
            hard: Duration::from_secs(30),
            jitter: Duration::from_secs(5),
        };
        c.ike_lifetime = Lifetime {
            soft: Duration::from_secs(45),
            hard: Duration::from_secs(60),
            jitter: Duration::from_secs(5),
        };
    }
    let mut net = Net::new(configs);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    assert!(net.nodes[0].installed()[0].soft_lifetime <= Duration::from_secs(20));
    net.run_for(Duration::from_secs(130));
    // The clock may stop inside a rekey's overlap (old and new both installed until
    // the Delete's round trip ends): let the overlap finish, without new rekeys.
    assert!(net.run_until(Duration::from_secs(1), |n| {
        let (a, b) = (n.nodes[0].installed(), n.nodes[1].installed());
        a.len() == 1 && b.len() == 1 && a[0].spi_in == b[0].spi_out
    }));
    one_child_each(&net);
    let s = net.nodes[0].speaker.status();
    assert_eq!(s.len(), 1);
    assert!(s[0].child_rekeys >= 4, "{s:?}");
    assert!(s[0].ike_rekeys >= 2, "{s:?}");
    for n in &net.nodes {
        never_without_child(n);
        assert_eq!(n.count(|e| matches!(e, Event::IkeSaDown { .. })), 0);
    }
}

#[test]
fn the_datapaths_limit_signal_rekeys_that_child_sa() {
    let mut net = established();
    let (old, _) = one_child_each(&net);
    let now = net.now;
    net.nodes[0].speaker.child_limit_reached(old.spi_in, now);
    quiet(&mut net);
    let (new, _) = one_child_each(&net);
    assert_ne!(new.spi_in, old.spi_in);
    // An SPI that is not ours changes nothing.
    let now = net.now;
    net.nodes[0].speaker.child_limit_reached(7, now);
    quiet(&mut net);
    assert_eq!(net.nodes[0].speaker.status()[0].child_rekeys, 1);
}

#[test]
fn delete_takes_down_both_ends() {
    let mut net = established();
    let now = net.now;
    net.nodes[1].speaker.delete(&node_id(0), now);
    quiet(&mut net);
    for n in &net.nodes {
        assert!(n.speaker.status().is_empty());
        assert!(n.installed().is_empty());
        assert_eq!(n.count(|e| matches!(e, Event::IkeSaDown { .. })), 1);
    }
}

/// One end rekeys the Child SA while the other rekeys the IKE SA, at the same
/// instant (the order lifetimes with jitter make now and then). The Child SA
/// exchange runs on the old IKE SA while its children move to the new one; after
/// both, each end has one Child SA, they mirror, and the next rekey works.
#[test]
fn child_rekey_crossing_an_ike_rekey_keeps_the_child_sa() {
    for (child_side, ike_side) in [(0, 1), (1, 0)] {
        let mut net = established();
        let (old, _) = one_child_each(&net);
        let now = net.now;
        net.nodes[child_side]
            .speaker
            .rekey_child(&node_id(ike_side), now);
        net.nodes[ike_side]
            .speaker
            .rekey_ike(&node_id(child_side), now);
        quiet(&mut net);
        let (a, _) = one_child_each(&net);
        assert_ne!(a.spi_in, old.spi_in, "the Child SA was rekeyed");
        for n in &net.nodes {
            never_without_child(n);
            let s = n.speaker.status();
            assert_eq!(s.len(), 1, "{s:?}");
            assert_eq!(s[0].children.len(), 1, "{s:?}");
            assert_eq!(s[0].ike_rekeys, 1, "{s:?}");
        }
        // Both SAs still rekey afterwards, from either end.
        let now = net.now;
        net.nodes[child_side]
            .speaker
            .rekey_child(&node_id(ike_side), now);
        quiet(&mut net);
        let now = net.now;
        net.nodes[ike_side]
            .speaker
            .rekey_child(&node_id(child_side), now);
        quiet(&mut net);
        let (b, _) = one_child_each(&net);
        assert_ne!(b.spi_in, a.spi_in);
    }
}
