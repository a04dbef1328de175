//! Interop with gobgpd 3.10 (Debian package `gobgpd`, in a namespace of the test's,
//! driven with the `gobgp` CLI): eBGP between 4-octet AS numbers over IPv4 carrying
//! IPv4 and IPv6 unicast, routes both ways, TCP MD5 with the right and a wrong key.
//! (gobgpd gets no kernel FIB here: its zebra client is broken with FRR 8.4.)
//! Needs root and gobgpd; skips visibly without them unless STRAIT_REQUIRE_PRIVILEGED=1.

mod common;
mod interop;

use interop::{SessionCase, session_scenario};
use strait_testbeds::peers::{Gobgp, require};

fn require_gobgp(test: &str) -> bool {
    require(
        test,
        &[("gobgpd", "--version"), ("gobgp", "--version")],
        "gobgpd",
    )
}

fn gobgp(ns: &strait_testbeds::netns::Netns, c: strait_testbeds::peers::PeerConfig) -> Gobgp {
    Gobgp::start(ns, c).expect("start gobgpd")
}

#[test]
fn gobgp_and_strait_exchange_ipv4_and_ipv6_routes() {
    if require_gobgp("gobgp_and_strait_exchange_ipv4_and_ipv6_routes") {
        let case = SessionCase {
            strait_passive: false,
            md5: None,
        };
        session_scenario(case, None, gobgp);
    }
}

#[test]
fn gobgp_opens_the_session_to_a_passive_strait() {
    if require_gobgp("gobgp_opens_the_session_to_a_passive_strait") {
        let case = SessionCase {
            strait_passive: true,
            md5: None,
        };
        session_scenario(case, None, gobgp);
    }
}

#[test]
fn md5_session_with_gobgp() {
    if require_gobgp("md5_session_with_gobgp") {
        // gobgpd connects: the key is checked on our listening socket.
        let case = SessionCase {
            strait_passive: true,
            md5: Some(("strait-gobgp", "strait-gobgp")),
        };
        session_scenario(case, None, gobgp);
    }
}

#[test]
fn md5_mismatch_with_gobgp_gives_no_session() {
    if require_gobgp("md5_mismatch_with_gobgp_gives_no_session") {
        // We connect, signing with a key gobgpd does not accept.
        let case = SessionCase {
            strait_passive: false,
            md5: Some(("strait-key", "gobgp-key")),
        };
        session_scenario(case, None, gobgp);
    }
}

#[test]
fn strait_reflects_routes_between_gobgp_clients() {
    if require_gobgp("strait_reflects_routes_between_gobgp_clients") {
        interop::rr_scenario(72, None, gobgp);
    }
}

#[test]
fn speaker_md5_peer_with_gobgp() {
    if require_gobgp("speaker_md5_peer_with_gobgp") {
        interop::speaker_md5_scenario(75, "strait-gobgp", "strait-gobgp", gobgp);
    }
}

#[test]
fn speaker_md5_mismatch_with_gobgp_gives_no_session() {
    if require_gobgp("speaker_md5_mismatch_with_gobgp_gives_no_session") {
        interop::speaker_md5_scenario(76, "strait-key", "gobgp-key", gobgp);
    }
}
