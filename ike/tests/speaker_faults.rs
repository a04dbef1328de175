//! The speaker under faults: lost, duplicated, delayed and corrupted datagrams,
//! a dead peer, a flood of IKE_SA_INIT, and a lying peer.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use strait_ike::codec::{
    ExchangeType, Header, Message, NotifyType, Payload, Proposal, ProtocolId, Transform,
    transform_type,
};
use strait_ike::crypto::prf::Prf;
use strait_ike::speaker::{Event, IkeState};

const LIMIT: Duration = Duration::from_secs(30);

fn is(d: &Datagram, exchange: ExchangeType, response: bool) -> bool {
    d.message()
        .is_some_and(|m| m.header.exchange == exchange && m.header.response == response)
}

#[test]
fn dead_peer_detection_closes_the_sa() {
    let mut net = Net::pair();
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    // B falls silent.
    let b = net.nodes[1].addr;
    net.fault = Box::new(move |d| {
        if d.from == b || d.to == b {
            Fault::Drop
        } else {
            Fault::Deliver
        }
    });
    net.run_for(Duration::from_secs(60));
    let a = &net.nodes[0];
    assert!(a.speaker.status().is_empty());
    assert!(
        a.installed().is_empty(),
        "the Child SA is deleted with the IKE SA"
    );
    let reason = a.events.iter().find_map(|e| match e {
        Event::IkeSaDown { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("dead peer"));
    let dpds = net
        .sent
        .iter()
        .filter(|d| d.from.ip() == a.addr.ip() && is(d, ExchangeType::Informational, false))
        .count();
    assert_eq!(dpds, 1 + 3, "one DPD request and three retransmissions");
}

#[test]
fn dpd_keeps_a_live_peer() {
    let mut net = Net::pair();
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.nodes[0].speaker.status()[0].state,
        IkeState::Established
    );
    assert!(net.nodes[0].speaker.status()[0].last_dpd.is_some());
}

#[test]
fn retransmission_backs_off_and_gives_up() {
    let mut net = Net::pair();
    net.fault = Box::new(|_| Fault::Drop);
    net.connect(0, 1);
    let start = net.now;
    net.run_for(Duration::from_secs(30));
    let inits: Vec<_> = net
        .sent
        .iter()
        .filter(|d| is(d, ExchangeType::IkeSaInit, false))
        .collect();
    assert_eq!(inits.len(), 4, "the request and three retransmissions");
    assert!(
        inits.windows(2).all(|w| w[0].bytes == w[1].bytes),
        "retransmissions are the same bytes"
    );
    let a = &net.nodes[0];
    assert!(a.speaker.status().is_empty());
    assert!(
        a.events
            .iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. }))
    );
    // 0.5 + 1 + 2 + 4 s: the give-up comes 7.5 s after the first send.
    assert!(net.now >= start + Duration::from_millis(7500));
}

#[test]
fn lost_datagrams_are_retransmitted_until_established() {
    let mut net = Net::pair();
    // The first copy of every datagram is lost, requests and responses alike: each
    // request gets through only when retransmitted, and each answer only when the
    // retransmitted request is answered again from the cache (byte for byte). A
    // fixed pattern over the send order instead (every third lost) can line up with
    // one exchange's retransmissions and lose them all.
    let mut seen = std::collections::HashSet::new();
    net.fault = Box::new(move |d| {
        if seen.insert(d.bytes.clone()) {
            Fault::Drop
        } else {
            Fault::Deliver
        }
    });
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    assert_mirror(&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&node_id(1), now);
    net.nodes[1].speaker.rekey_ike(&node_id(0), now);
    net.run_for(Duration::from_secs(20));
    let (a, b) = (net.nodes[0].installed(), net.nodes[1].installed());
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_mirror(&a[0], &b[0]);
    assert!(net.sent.len() > 10);
}

#[test]
fn duplicated_requests_are_answered_from_the_cache() {
    let mut net = Net::pair();
    net.fault = Box::new(|_| Fault::Duplicate);
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&node_id(1), now);
    net.run_for(Duration::from_secs(5));
    for n in &net.nodes {
        assert_eq!(n.count(|e| matches!(e, Event::ChildSaUp(_))), 1);
        assert_eq!(n.count(|e| matches!(e, Event::ChildSaRekeyed { .. })), 1);
        assert_eq!(n.installed().len(), 1);
    }
    // B answered the duplicate IKE_AUTH with the very same bytes.
    let auth_responses: Vec<_> = net
        .sent
        .iter()
        .filter(|d| is(d, ExchangeType::IkeAuth, true))
        .collect();
    assert_eq!(auth_responses.len(), 2);
    assert_eq!(auth_responses[0].bytes, auth_responses[1].bytes);
    assert_mirror(&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
}

#[test]
fn delayed_and_reordered_datagrams_do_not_break_the_exchanges() {
    let mut net = Net::pair();
    let n = Rc::new(Cell::new(0u32));
    let seen = n.clone();
    net.fault = Box::new(move |_| {
        seen.set(seen.get() + 1);
        match seen.get() % 3 {
            0 => Fault::Delay(Duration::from_millis(700)),
            _ => Fault::Deliver,
        }
    });
    net.connect(0, 1);
    assert!(net.run_until(LIMIT, Net::established));
    let now = net.now;
    net.nodes[0].speaker.rekey_child(&node_id(1), now);
    net.nodes[1].speaker.rekey_ike(&node_id(0), now);
    net.run_for(Duration::from_secs(10));
    let (a, b) = (net.nodes[0].installed(), net.nodes[1].installed());
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_mirror(&a[0], &b[0]);
    assert_eq!(net.nodes[0].speaker.status().len(), 1);
}

#[test]
fn a_corrupted_message_is_dropped_without_a_state_change() {
    let mut net = Net::pair();
    let corrupted = Rc::new(Cell::new(false));
    let flag = corrupted.clone();
    net.fault = Box::new(move |d| {
        if !flag.get() && is(d, ExchangeType::IkeAuth, false) {
            flag.set(true);
            Fault::Corrupt(d.bytes.len() - 20) // inside the ciphertext
        } else {
            Fault::Deliver
        }
    });
    net.connect(0, 1);
    // Until A retransmits, B has seen only the corrupted IKE_AUTH.
    net.run_for(Duration::from_millis(400));
    assert!(corrupted.get());
    let b = &net.nodes[1];
    assert_eq!(b.speaker.status()[0].state, IkeState::InitDone);
    assert!(b.events.is_empty());
    let b_sent = net
        .sent
        .iter()
        .filter(|d| d.from.ip() == b.addr.ip())
        .count();
    assert_eq!(
        b_sent, 1,
        "B answered IKE_SA_INIT only, not the corrupted IKE_AUTH"
    );
    assert!(net.run_until(LIMIT, Net::established));
    assert_mirror(&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
}

#[test]
fn a_flood_of_ike_sa_init_gets_cookies_and_a_real_initiator_still_gets_in() {
    let mut b_config = config(1);
    b_config.cookie_threshold = 4;
    let mut net = Net::new(vec![config(0), b_config, config(2)]);
    // Node C floods B from spoofed addresses; B's answers go nowhere.
    for i in 0..20u8 {
        let spoofed = format!("198.51.100.{}:500", i + 1).parse().unwrap();
        let (id, remote, now) = (net.nodes[1].id.clone(), net.nodes[1].addr, net.now);
        net.nodes[2].speaker.connect(id, spoofed, remote, now);
    }
    net.run_for(Duration::from_millis(100));
    let half_open = net.nodes[1].speaker.status();
    assert_eq!(half_open.len(), 4, "B keeps state for the threshold only");
    let cookies = net
        .sent
        .iter()
        .filter(|d| {
            d.message()
                .is_some_and(|m| m.header.response && m.notify(NotifyType::Cookie).is_some())
        })
        .count();
    assert_eq!(cookies, 16);
    // The real initiator retries with the cookie and gets in.
    net.connect(0, 1);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        !n.nodes[0].installed().is_empty()
    }));
    let a_inits: Vec<Message> = net
        .sent
        .iter()
        .filter(|d| d.from.ip() == net.nodes[0].addr.ip() && is(d, ExchangeType::IkeSaInit, false))
        .filter_map(Datagram::message)
        .collect();
    assert_eq!(a_inits.len(), 2);
    assert!(a_inits[0].notify(NotifyType::Cookie).is_none());
    assert!(matches!(&a_inits[1].payloads[0], Payload::Notify(n) if n.kind == NotifyType::Cookie));
    assert_mirror(
        &net.nodes[0].installed()[0],
        &net.nodes[1].installed().last().unwrap().clone(),
    );
    // The half-open SAs expire.
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.nodes[1].speaker.status().len(), 1);
}

fn init_request(payloads: Vec<Payload>) -> Vec<u8> {
    Message {
        header: Header {
            spi_i: 0x1234,
            spi_r: 0,
            minor_version: 0,
            exchange: ExchangeType::IkeSaInit,
            initiator: true,
            version: false,
            response: false,
            message_id: 0,
        },
        payloads,
    }
    .encode()
    .unwrap()
}

fn answers(net: &Net, kind: NotifyType) -> bool {
    net.sent
        .iter()
        .filter_map(Datagram::message)
        .any(|m| m.header.response && m.header.spi_i == 0x1234 && m.notify(kind).is_some())
}

#[test]
fn a_lying_peers_bad_lengths_get_invalid_syntax_or_unsupported_critical_payload() {
    let mut net = Net::pair();
    let (a, b) = (net.nodes[0].addr, net.nodes[1].addr);
    let mut bad = init_request(vec![Payload::Nonce(vec![1; 32])]);
    bad[31] = 0xff; // the nonce's length runs past the message
    net.inject(a, b, bad);
    net.run_for(Duration::from_millis(100));
    assert!(answers(&net, NotifyType::InvalidSyntax));

    let mut critical = init_request(vec![Payload::Nonce(vec![1; 32])]);
    critical[16] = 200; // the first payload is of an unknown type ...
    critical[29] = 0x80; // ... and critical
    net.inject(a, b, critical);
    net.run_for(Duration::from_millis(100));
    assert!(answers(&net, NotifyType::UnsupportedCriticalPayload));

    // A request without SA/KE: INVALID_SYNTAX too.
    net.inject(a, b, init_request(vec![Payload::Nonce(vec![1; 32])]));
    net.run_for(Duration::from_millis(100));
    assert!(
        net.nodes[1].speaker.status().is_empty(),
        "no state for any of them"
    );
}

#[test]
fn a_proposal_nobody_can_meet_gets_no_proposal_chosen() {
    let mut net = Net::pair();
    let (a, b) = (net.nodes[0].addr, net.nodes[1].addr);
    let offer = Payload::Sa(vec![Proposal {
        number: 1,
        protocol: ProtocolId::Ike,
        spi: vec![],
        transforms: vec![
            Transform::with_key_length(transform_type::ENCR, 12, 128), // AES-CBC
            Transform::new(transform_type::PRF, 2),
            Transform::new(transform_type::DH, 14),
        ],
    }]);
    let ke = Payload::Ke {
        group: 14,
        data: vec![1; 256],
    };
    net.inject(
        a,
        b,
        init_request(vec![offer, ke, Payload::Nonce(vec![1; 32])]),
    );
    net.run_for(Duration::from_millis(100));
    assert!(answers(&net, NotifyType::NoProposalChosen));
    assert!(net.nodes[1].speaker.status().is_empty());
}

#[test]
fn a_responder_choosing_what_was_not_offered_is_refused() {
    let mut a = config(0);
    a.prfs = vec![Prf::HmacSha256];
    let mut net = Net::new(vec![a, config(1)]);
    // Rewrite the responder's choice in flight: PRF 5 becomes PRF 6, never offered.
    let responder = net.nodes[1].addr;
    net.fault = Box::new(move |d| {
        if d.from == responder
            && let Some(mut m) = d.message()
            && m.header.exchange == ExchangeType::IkeSaInit
        {
            for p in &mut m.payloads {
                if let Payload::Sa(props) = p {
                    for t in &mut props[0].transforms {
                        if t.kind == transform_type::PRF {
                            t.id = 6;
                        }
                    }
                }
            }
            // The hook cannot replace bytes: drop the truth, inject the lie below.
            LIES.with(|l| l.borrow_mut().push(m.encode().unwrap()));
            return Fault::Drop;
        }
        Fault::Deliver
    });
    net.connect(0, 1);
    net.run_for(Duration::from_millis(50));
    let lie = LIES.with(|l| l.borrow_mut().remove(0));
    let (from, to) = (net.nodes[1].addr, net.nodes[0].addr);
    net.inject(from, to, lie);
    net.run_for(Duration::from_millis(50));
    let reason = net.nodes[0].events.iter().find_map(|e| match e {
        Event::IkeSaDown { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("not offered"));
    assert!(net.nodes[0].speaker.status().is_empty());
}

thread_local! {
    static LIES: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}
