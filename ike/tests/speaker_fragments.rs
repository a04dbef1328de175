//! IKE fragmentation (RFC 7383) over the in-memory network: with a small
//! `fragment_size` and many traffic selectors, IKE_AUTH and CREATE_CHILD_SA travel as
//! Encrypted Fragments both ways; lost fragments are retransmitted as a set;
//! duplicated and reordered fragments reassemble; forged, oversized and out-of-window
//! fragments change nothing; a peer that does not announce fragmentation gets whole
//! messages.

mod common;

use std::time::Duration;

use common::*;
use strait_ike::codec::{
    EncryptedFragment, ExchangeType, Header, Message, NotifyType, Payload, TrafficSelector,
};
use strait_ike::speaker::{ChildSa, Config, Event};

const LIMIT: Duration = Duration::from_secs(30);
/// The legal minimum, so that the messages below need several fragments.
const FRAGMENT_SIZE: usize = 576;
/// 576 less the IPv4 and UDP headers and the non-ESP marker.
const LONGEST: usize = FRAGMENT_SIZE - 20 - 8 - 4;

/// Node `i` with a small fragment size and 30 selectors each way: IKE_AUTH and every
/// CREATE_CHILD_SA for a Child SA are over 1000 bytes.
fn big(i: usize) -> Config {
    let mut c = config(i);
    c.fragment_size = FRAGMENT_SIZE;
    let many: Vec<TrafficSelector> = (0..30)
        .map(|n| TrafficSelector::prefix(format!("10.{n}.0.0/16").parse().unwrap()))
        .collect();
    c.local_ts = many.clone();
    c.remote_ts = many;
    c
}

/// The header, fragment number and total of an Encrypted Fragment datagram.
fn skf(d: &Datagram) -> Option<(Header, u16, u16)> {
    let m = d.message()?;
    match m.payloads.last() {
        Some(Payload::EncryptedFragment(f)) => Some((m.header, f.number, f.total)),
        _ => None,
    }
}

/// The fragments node `from` sent of `exchange` requests (or responses).
fn fragments(net: &Net, from: usize, exchange: ExchangeType, response: bool) -> Vec<Datagram> {
    let ip = net.nodes[from].addr.ip();
    net.sent
        .iter()
        .filter(|d| d.from.ip() == ip)
        .filter(|d| {
            skf(d).is_some_and(|(h, _, _)| h.exchange == exchange && h.response == response)
        })
        .cloned()
        .collect()
}

fn total(frags: &[Datagram]) -> usize {
    frags
        .first()
        .and_then(skf)
        .map_or(0, |(_, _, t)| t as usize)
}

fn one_child_each(net: &Net) -> (ChildSa, ChildSa) {
    let (a, b) = (net.nodes[0].installed(), net.nodes[1].installed());
    assert_eq!(a.len(), 1, "A: {a:?}");
    assert_eq!(b.len(), 1, "B: {b:?}");
    assert_mirror(&a[0], &b[0]);
    (a[0].clone(), b[0].clone())
}

fn rekeyed(net: &Net, n: usize) -> bool {
    net.nodes
        .iter()
        .all(|node| node.count(|e| matches!(e, Event::ChildSaRekeyed { .. })) == n)
        && one_child_each_quiet(net)
}

fn one_child_each_quiet(net: &Net) -> bool {
    net.nodes.iter().all(|n| n.installed().len() == 1)
}

fn no_failures(net: &Net) {
    for n in &net.nodes {
        assert_eq!(
            n.count(|e| matches!(
                e,
                Event::IkeSaDown { .. } | Event::AuthFailed { .. } | Event::ChildSaFailed { .. }
            )),
            0,
            "{}: {:?}",
            n.id,
            n.events
        );
    }
}

#[test]
fn ike_auth_and_rekeys_travel_in_fragments_both_ways() {
    let mut net = Net::new(vec![big(0), big(1)]);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    one_child_each(&net);
    // Both IKE_SA_INITs announce it.
    for d in net.sent.iter().take(2) {
        let m = d.message().unwrap();
        assert_eq!(m.header.exchange, ExchangeType::IkeSaInit);
        assert!(
            m.notify(NotifyType::Ikev2FragmentationSupported).is_some(),
            "{m:?}"
        );
    }
    let req = fragments(&net, 0, ExchangeType::IkeAuth, false);
    let resp = fragments(&net, 1, ExchangeType::IkeAuth, true);
    assert!(total(&req) >= 2 && req.len() == total(&req), "{req:?}");
    assert!(total(&resp) >= 2 && resp.len() == total(&resp), "{resp:?}");
    let after_init = |net: &Net| {
        net.sent
            .iter()
            .filter(|d| d.message().unwrap().header.exchange != ExchangeType::IkeSaInit)
            .map(|d| d.bytes.len())
            .max()
            .unwrap()
    };
    assert!(after_init(&net) <= LONGEST, "{} bytes", after_init(&net));

    // A Child SA rekey from A, an IKE SA rekey, then a Child SA rekey from B on the
    // new IKE SA: every CREATE_CHILD_SA with selectors is fragmented both ways.
    let (a, b) = (net.nodes[0].id.clone(), net.nodes[1].id.clone());
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&b, now);
    assert!(net.run_until(LIMIT, |n| rekeyed(n, 1)));
    assert!(fragments(&net, 0, ExchangeType::CreateChildSa, false).len() >= 2);
    assert!(fragments(&net, 1, ExchangeType::CreateChildSa, true).len() >= 2);
    let now = net.now;
    net.nodes[0].speaker.rekey_ike(&b, now);
    assert!(net.run_until(
        LIMIT,
        |n| n.nodes[0].count(|e| matches!(e, Event::IkeSaRekeyed { .. })) == 1
    ));
    net.run_for(Duration::from_secs(2));
    let before = fragments(&net, 1, ExchangeType::CreateChildSa, false).len();
    let now = net.now;
    net.nodes[1].speaker.rekey_child(&a, now);
    assert!(net.run_until(LIMIT, |n| rekeyed(n, 2)));
    assert!(fragments(&net, 1, ExchangeType::CreateChildSa, false).len() >= before + 2);
    one_child_each(&net);
    assert!(after_init(&net) <= LONGEST);
    no_failures(&net);
    for n in &net.nodes {
        assert_eq!(n.speaker.reassembly_bytes(), 0);
    }
}

#[test]
fn lost_fragments_are_retransmitted_as_a_set() {
    let mut net = Net::new(vec![big(0), big(1)]);
    let (mut req_lost, mut resp_lost) = (false, false);
    net.fault = Box::new(move |d| {
        match skf(d) {
            // The second fragment of the first IKE_AUTH request, and the last of the
            // first response.
            Some((h, 2, _)) if h.exchange == ExchangeType::IkeAuth && !h.response && !req_lost => {
                req_lost = true;
                return Fault::Drop;
            }
            Some((h, n, t))
                if h.exchange == ExchangeType::IkeAuth && h.response && n == t && !resp_lost =>
            {
                resp_lost = true;
                return Fault::Drop;
            }
            _ => {}
        }
        Fault::Deliver
    });
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    one_child_each(&net);
    no_failures(&net);
    let req = fragments(&net, 0, ExchangeType::IkeAuth, false);
    let resp = fragments(&net, 1, ExchangeType::IkeAuth, true);
    // The request went three times (lost fragment, lost answer), always the same set.
    assert_eq!(req.len(), 3 * total(&req), "{req:?}");
    let mut distinct: Vec<&Vec<u8>> = req.iter().map(|d| &d.bytes).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        total(&req),
        "retransmissions resend the same fragments"
    );
    // The answer went twice: once, then once for the whole retransmitted set (on its
    // fragment 1), not once per fragment.
    assert_eq!(resp.len(), 2 * total(&resp), "{resp:?}");
}

#[test]
fn duplicated_and_reordered_fragments_reassemble() {
    let mut net = Net::new(vec![big(0), big(1)]);
    net.fault = Box::new(|d| match skf(d) {
        // Fragment 1 comes last, every other fragment twice.
        Some((_, 1, _)) => Fault::Delay(Duration::from_millis(30)),
        Some(_) => Fault::Duplicate,
        None => Fault::Deliver,
    });
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    one_child_each(&net);
    let now = net.now;
    let b = net.nodes[1].id.clone();
    net.nodes[0].speaker.rekey_child(&b, now);
    assert!(net.run_until(LIMIT, |n| rekeyed(n, 1)));
    no_failures(&net);
    // Duplicates did not bring answers of their own.
    let resp = fragments(&net, 1, ExchangeType::IkeAuth, true);
    assert_eq!(resp.len(), total(&resp));
    for n in &net.nodes {
        assert_eq!(n.speaker.reassembly_bytes(), 0);
    }
}

#[test]
fn forged_oversized_and_out_of_window_fragments_change_nothing() {
    let mut net = Net::new(vec![big(0), big(1)]);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    net.run_for(Duration::from_secs(1));
    let s = net.nodes[1].speaker.status()[0].clone();
    let (a_addr, b_addr) = (net.nodes[0].addr, net.nodes[1].addr);
    let forged = |message_id: u32, number: u16, total: u16, len: usize| {
        Message {
            header: Header {
                spi_i: s.spi_i,
                spi_r: s.spi_r,
                minor_version: 0,
                exchange: ExchangeType::Informational,
                initiator: true,
                version: false,
                response: false,
                message_id,
            },
            payloads: vec![Payload::EncryptedFragment(EncryptedFragment {
                first_inner: 0,
                number,
                total,
                data: vec![0x5a; len],
            })],
        }
        .encode()
        .unwrap()
    };
    let sent_by_b = |net: &Net| net.sent.iter().filter(|d| d.from == b_addr).count();
    let (b_sent, b_events) = (sent_by_b(&net), net.nodes[1].events.clone());
    // A thousand fragments of the next request that do not authenticate, sets
    // announcing too many fragments, and fragments far outside the window.
    for i in 0..1000u16 {
        let bytes = match i % 3 {
            0 => forged(2, i % 50 + 1, 50, 1000),
            1 => forged(2, 1, 1000 + i, 1000),
            _ => forged(2 + 5 + u32::from(i), 1, 2, 1000),
        };
        net.inject(a_addr, b_addr, bytes);
        net.run_for(Duration::from_millis(1));
        assert_eq!(net.nodes[1].speaker.reassembly_bytes(), 0);
    }
    assert_eq!(sent_by_b(&net), b_sent, "nothing answered");
    assert_eq!(net.nodes[1].events, b_events, "nothing happened");
    // The SA still works.
    let now = net.now;
    let b = net.nodes[1].id.clone();
    net.nodes[0].speaker.rekey_child(&b, now);
    assert!(net.run_until(LIMIT, |n| rekeyed(n, 1)));
    no_failures(&net);
}

#[test]
fn a_peer_that_does_not_announce_fragmentation_gets_whole_messages() {
    let mut quiet = big(1);
    quiet.fragment_size = 0;
    let mut net = Net::new(vec![big(0), quiet]);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    one_child_each(&net);
    no_failures(&net);
    assert!(net.sent.iter().all(|d| skf(d).is_none()));
    let b_init = net
        .sent
        .iter()
        .find(|d| d.from == net.nodes[1].addr)
        .and_then(Datagram::message)
        .unwrap();
    assert!(
        b_init
            .notify(NotifyType::Ikev2FragmentationSupported)
            .is_none()
    );
    let auth = net
        .sent
        .iter()
        .filter_map(|d| d.message().map(|m| (m, d.bytes.len())))
        .find(|(m, _)| m.header.exchange == ExchangeType::IkeAuth && !m.header.response)
        .unwrap();
    assert!(auth.1 > LONGEST, "IKE_AUTH went whole, {} bytes", auth.1);
}
