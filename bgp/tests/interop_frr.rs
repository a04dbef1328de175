//! Interop with FRR 8.4 (Debian package `frr`: bgpd + zebra, in a namespace of the
//! test's): eBGP between 4-octet AS numbers over IPv4 carrying IPv4 and IPv6 unicast,
//! routes both ways and into FRR's kernel FIB, TCP MD5 with the right and a wrong key.
//! Needs root and FRR; skips visibly without them unless STRAIT_REQUIRE_PRIVILEGED=1.

mod common;
mod interop;

use interop::{SessionCase, session_scenario};
use strait_testbeds::peers::{Frr, require};

fn require_frr(test: &str) -> bool {
    require(
        test,
        &[
            ("/usr/lib/frr/bgpd", "--version"),
            ("/usr/lib/frr/zebra", "--version"),
            ("vtysh", "--version"),
        ],
        "frr",
    )
}

fn frr(ns: &strait_testbeds::netns::Netns, c: strait_testbeds::peers::PeerConfig) -> Frr {
    Frr::start(ns, c).expect("start FRR")
}

#[test]
fn frr_and_strait_exchange_ipv4_and_ipv6_routes() {
    if require_frr("frr_and_strait_exchange_ipv4_and_ipv6_routes") {
        let case = SessionCase {
            strait_passive: false,
            md5: None,
        };
        session_scenario(case, Some("bgp"), frr);
    }
}

#[test]
fn frr_opens_the_session_to_a_passive_strait() {
    if require_frr("frr_opens_the_session_to_a_passive_strait") {
        let case = SessionCase {
            strait_passive: true,
            md5: None,
        };
        session_scenario(case, Some("bgp"), frr);
    }
}

#[test]
fn md5_session_with_frr() {
    if require_frr("md5_session_with_frr") {
        // FRR connects: the key is checked on our listening socket.
        let case = SessionCase {
            strait_passive: true,
            md5: Some(("strait-frr", "strait-frr")),
        };
        session_scenario(case, Some("bgp"), frr);
    }
}

#[test]
fn md5_mismatch_with_frr_gives_no_session() {
    if require_frr("md5_mismatch_with_frr_gives_no_session") {
        // We connect, signing with a key FRR does not accept.
        let case = SessionCase {
            strait_passive: false,
            md5: Some(("strait-key", "frr-key")),
        };
        session_scenario(case, None, frr);
    }
}

#[test]
fn strait_reflects_routes_between_frr_clients() {
    if require_frr("strait_reflects_routes_between_frr_clients") {
        // FRR installs the reflected routes via zebra: next hop the other client.
        interop::rr_scenario(71, Some("bgp"), frr);
    }
}

#[test]
fn speaker_md5_peer_with_frr() {
    if require_frr("speaker_md5_peer_with_frr") {
        interop::speaker_md5_scenario(73, "strait-frr", "strait-frr", frr);
    }
}

#[test]
fn speaker_md5_mismatch_with_frr_gives_no_session() {
    if require_frr("speaker_md5_mismatch_with_frr_gives_no_session") {
        interop::speaker_md5_scenario(74, "strait-key", "frr-key", frr);
    }
}
