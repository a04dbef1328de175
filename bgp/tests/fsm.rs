//! The RFC 4271 §8 state machine, driven by events and a fake clock (an `Instant`
//! advanced by hand): the transitions a session depends on.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use strait_bgp::codec::{
    AfiSafi, Capability, Context, DecodeError, ExtendedNextHop, Family, Message, Notification,
    Open, Update,
};
use strait_bgp::fsm::{
    Action, Config, DownReason, Event, Fsm, Keep, State, Timer, collision_keeps, negotiate,
};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config() -> Config {
    Config {
        local_asn: 65001,
        peer_asn: 65002,
        bgp_id: LOCAL_ID,
        hold_time: 90,
        connect_retry: Duration::from_secs(5),
        idle_hold: Duration::from_secs(2),
        passive: false,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
        ],
    }
}

fn peer_open(asn: u32, hold: u16) -> Open {
    Open::new(
        asn,
        hold,
        PEER_ID,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
        ],
    )
}

fn notification_sent(actions: &[Action]) -> Option<(u8, u8)> {
    actions.iter().find_map(|a| match a {
        Action::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    })
}

/// A session brought to Established with a peer proposing `hold`.
fn established(t0: Instant, hold: u16) -> Fsm {
    let mut fsm = Fsm::new(config());
    assert_eq!(fsm.handle(t0, Event::ManualStart), [Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
    let out = fsm.handle(t0, Event::TcpConnectionConfirmed);
    assert_eq!(out, [Action::Send(Message::Open(config().open()))]);
    assert_eq!(fsm.state(), State::OpenSent);
    let out = fsm.handle(t0, Event::Message(Message::Open(peer_open(65002, hold))));
    assert_eq!(out, [Action::Send(Message::Keepalive)]);
    assert_eq!(fsm.state(), State::OpenConfirm);
    let out = fsm.handle(t0, Event::Message(Message::Keepalive));
    assert!(matches!(out.as_slice(), [Action::SessionUp(_)]), "{out:?}");
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn active_open_reaches_established_with_negotiated_hold_and_families() {
    let t0 = Instant::now();
    let fsm = established(t0, 30);
    let n = fsm.negotiated().unwrap();
    assert_eq!((n.hold_time, n.keepalive), (30, 10));
    assert_eq!(
        n.codec,
        Context {
            four_octet_as: true,
            families: vec![Family::Ipv4Unicast],
            ipv4_via_ipv6: false,
        }
    );
    assert!(n.route_refresh);
    assert_eq!(
        fsm.deadline(Timer::Hold),
        Some(t0 + Duration::from_secs(30))
    );
    assert_eq!(
        fsm.deadline(Timer::Keepalive),
        Some(t0 + Duration::from_secs(10))
    );
    assert_eq!(fsm.deadline(Timer::ConnectRetry), None);
}

#[test]
fn ipv4_via_ipv6_next_hops_only_when_both_offer_it() {
    let with = |mut o: Open| {
        o.capabilities.push(Capability::ExtendedNextHop(vec![
            ExtendedNextHop::IPV4_UNICAST_VIA_IPV6,
        ]));
        o
    };
    let (a, b) = (peer_open(65001, 30), peer_open(65002, 30));
    assert!(
        negotiate(&with(a.clone()), &with(b.clone()))
            .codec
            .ipv4_via_ipv6
    );
    assert!(!negotiate(&with(a.clone()), &b).codec.ipv4_via_ipv6);
    assert!(!negotiate(&a, &with(b.clone())).codec.ipv4_via_ipv6);
    // Another triple (IPv4 SAFI 128 via IPv6) is not IPv4 unicast.
    let mut other = b;
    other
        .capabilities
        .push(Capability::ExtendedNextHop(vec![ExtendedNextHop {
            afi: 1,
            safi: 128,
            next_hop_afi: 2,
        }]));
    assert!(!negotiate(&with(a), &other).codec.ipv4_via_ipv6);
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    let fsm = established(Instant::now(), 0);
    assert_eq!(fsm.negotiated().unwrap().hold_time, 0);
    assert_eq!(fsm.deadline(Timer::Hold), None);
    assert_eq!(fsm.deadline(Timer::Keepalive), None);
    assert_eq!(fsm.next_deadline(), None);
}

#[test]
fn keepalives_are_sent_every_third_of_the_hold_time_and_traffic_resets_hold() {
    let t0 = Instant::now();
    let mut fsm = established(t0, 30);
    let t10 = t0 + Duration::from_secs(10);
    assert_eq!(fsm.poll(t10 - Duration::from_millis(1)), []);
    assert_eq!(fsm.poll(t10), [Action::Send(Message::Keepalive)]);
    assert_eq!(
        fsm.deadline(Timer::Keepalive),
        Some(t10 + Duration::from_secs(10))
    );
    // The peer's KEEPALIVE pushes the hold deadline out.
    let t25 = t0 + Duration::from_secs(25);
    assert_eq!(fsm.handle(t25, Event::Message(Message::Keepalive)), []);
    assert_eq!(
        fsm.deadline(Timer::Hold),
        Some(t25 + Duration::from_secs(30))
    );
}

#[test]
fn hold_timer_expiry_sends_notification_and_restarts_after_idle_hold() {
    let t0 = Instant::now();
    let mut fsm = established(t0, 30);
    // Only our keepalives go out; the peer is silent.
    let t30 = t0 + Duration::from_secs(30);
    let out = fsm.poll(t30);
    assert_eq!(notification_sent(&out), Some((4, 0)));
    assert!(out.contains(&Action::Disconnect));
    assert!(
        out.contains(&Action::SessionDown(DownReason::Sent(Notification::new(
            4, 0
        ))))
    );
    assert_eq!(fsm.state(), State::Idle);
    let restart = fsm.deadline(Timer::IdleHold).expect("restarts by itself");
    assert_eq!(fsm.poll(restart), [Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn manual_stop_sends_cease_and_stays_down() {
    let t0 = Instant::now();
    let mut fsm = established(t0, 90);
    let out = fsm.handle(t0, Event::ManualStop);
    assert_eq!(notification_sent(&out), Some((6, 2)));
    assert!(out.contains(&Action::SessionDown(DownReason::ManualStop)));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.next_deadline(), None);
}

#[test]
fn updates_are_delivered_only_when_established() {
    let t0 = Instant::now();
    let mut fsm = established(t0, 90);
    let u = Update::default();
    assert_eq!(
        fsm.handle(t0, Event::Message(Message::Update(u.clone()))),
        [Action::Deliver(u.clone())]
    );
    // An UPDATE in OpenSent is an FSM error (RFC 6608 subcode 1).
    let mut early = Fsm::new(config());
    early.handle(t0, Event::ManualStart);
    early.handle(t0, Event::TcpConnectionConfirmed);
    let out = early.handle(t0, Event::Message(Message::Update(u)));
    assert_eq!(notification_sent(&out), Some((5, 1)));
    assert_eq!(early.state(), State::Idle);
}

#[test]
fn wrong_peer_as_is_refused() {
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(t0, Event::ManualStart);
    fsm.handle(t0, Event::TcpConnectionConfirmed);
    let out = fsm.handle(t0, Event::Message(Message::Open(peer_open(65099, 90))));
    assert_eq!(notification_sent(&out), Some((2, 2)));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.negotiated(), None);
}

#[test]
fn decode_errors_send_their_notification() {
    let t0 = Instant::now();
    let mut fsm = established(t0, 90);
    let err = DecodeError::MalformedAttributeList { reason: "test" };
    let out = fsm.handle(t0, Event::DecodeError(err));
    assert_eq!(notification_sent(&out), Some((3, 1)));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn peer_notification_ends_the_session_without_a_reply() {
    let t0 = Instant::now();
    let mut fsm = established(t0, 90);
    let cease = Notification::new(6, 2);
    let out = fsm.handle(t0, Event::Message(Message::Notification(cease.clone())));
    assert_eq!(notification_sent(&out), None);
    assert!(out.contains(&Action::SessionDown(DownReason::Received(cease))));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn failed_connection_waits_in_active_and_retries() {
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(t0, Event::ManualStart);
    fsm.handle(t0, Event::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(fsm.connect_retry_counter, 1);
    let retry = fsm.deadline(Timer::ConnectRetry).unwrap();
    assert_eq!(fsm.poll(retry), [Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
    // The peer may connect to us while we wait in Active.
    fsm.handle(retry, Event::TcpConnectionFails);
    let out = fsm.handle(retry, Event::TcpConnectionConfirmed);
    assert!(matches!(out.as_slice(), [Action::Send(Message::Open(_))]));
}

#[test]
fn passive_session_only_listens() {
    let mut fsm = Fsm::new(Config {
        passive: true,
        ..config()
    });
    assert_eq!(fsm.handle(Instant::now(), Event::ManualStart), []);
    assert_eq!(fsm.state(), State::Active);
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    assert_eq!(
        collision_keeps(LOCAL_ID, 65001, PEER_ID, 65002),
        Keep::Inbound
    );
    assert_eq!(
        collision_keeps(PEER_ID, 65002, LOCAL_ID, 65001),
        Keep::Outbound
    );
    // Equal identifiers (eBGP, RFC 6286): the higher AS wins.
    assert_eq!(
        collision_keeps(LOCAL_ID, 65003, LOCAL_ID, 65002),
        Keep::Outbound
    );
}

#[test]
fn negotiation_without_multiprotocol_means_ipv4_only_and_2_octet_as_when_one_side_lacks_it() {
    let local = Open::new(
        65001,
        90,
        LOCAL_ID,
        vec![Capability::Multiprotocol(AfiSafi::IPV6_UNICAST)],
    );
    let old = Open {
        my_as: 65002,
        hold_time: 180,
        bgp_id: PEER_ID,
        capabilities: vec![],
    };
    let n = negotiate(&local, &old);
    assert_eq!(n.hold_time, 90);
    assert!(!n.codec.four_octet_as);
    // We offered IPv6 only, the peer (implicitly) IPv4 only: nothing in common.
    assert_eq!(n.codec.families, vec![]);
}
