//! The kernel XFRM datapath against the real kernel, in test-made namespaces (root).
//!
//! Checked: `probe` agrees with `ip xfrm state add` of the same state; a peer's
//! policies appear in `ip xfrm policy` with the right selectors and template, follow
//! a change of its prefixes and go away with it, leaving other software's policies
//! alone; installing an SA either works (a kernel with ESP) or fails with an error
//! naming the missing support and leaves nothing behind (this machine); IKE shares
//! the UDP 4500 socket, bypasses the policies that cover the peers' own addresses,
//! and the kernel takes ESP off that socket.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use strait_esp::kernel::{self, REQID_BASE};
use strait_esp::{
    Cipher, Datapath, DatapathError, Direction, PeerConfig, SaConfig, SaKey, Xfrm, XfrmConfig,
};
use strait_testbeds::netns::Netns;
use strait_testbeds::{require_root, unique_prefix, wait_until};

fn start(ns: &Netns) -> Xfrm {
    ns.run_in(|| Xfrm::start(XfrmConfig::default()).map_err(std::io::Error::other))
        .expect("start the kernel datapath")
}

/// `ip xfrm policy` as one line per policy, whitespace collapsed; without socket
/// policies (the datapath's own IKE socket has two).
fn policies(ns: &Netns) -> Vec<String> {
    let mut v = blocks(&ns.exec_ok(&["ip", "xfrm", "policy", "list"]));
    v.retain(|p| !p.contains(" socket "));
    v
}

fn states(ns: &Netns) -> Vec<String> {
    blocks(&ns.exec_ok(&["ip", "xfrm", "state", "list"]))
}

fn blocks(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if words.is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace)
            && let Some(last) = out.last_mut()
        {
            last.push(' ');
            last.push_str(&words);
            continue;
        }
        out.push(words);
    }
    out.sort();
    out
}

fn sa(spi: u32, esn: bool) -> SaConfig {
    let bytes: Vec<u8> = (0..20u8).map(|i| i.wrapping_mul(13) ^ 0x5a).collect();
    SaConfig {
        spi,
        key: SaKey::new(Cipher::Aes128Gcm16, &bytes).unwrap(),
        esn,
        replay_window: 2048,
        udp_encap: true,
    }
}

fn peer(prefixes: &[&str]) -> PeerConfig {
    PeerConfig {
        local: "192.0.2.1".parse().unwrap(),
        remote: "192.0.2.2:4500".parse().unwrap(),
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

/// What `ip xfrm policy` prints for strait's three policies of one prefix.
fn expected(prefix: &str, any: &str, priority: u32, reqid: u32) -> Vec<String> {
    let out = format!(
        "src {any} dst {prefix} dir out priority {priority} ptype main \
         tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid {reqid} mode tunnel"
    );
    let inward = |dir: &str| {
        format!(
            "src {prefix} dst {any} dir {dir} priority {priority} ptype main \
             tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid {reqid} mode tunnel"
        )
    };
    vec![out, inward("in"), inward("fwd")]
}

/// Whether `ip` can add the probe's kind of state here, and if not, its message.
fn ip_can_add_esp(ns: &Netns) -> Result<(), String> {
    let key = format!("0x{}", "00".repeat(20));
    let out = ns.exec(&[
        "ip",
        "xfrm",
        "state",
        "add",
        "src",
        "127.0.0.1",
        "dst",
        "127.0.0.2",
        "proto",
        "esp",
        "spi",
        "0x4242",
        "reqid",
        "0x5354ffff",
        "mode",
        "tunnel",
        "flag",
        "esn",
        "replay-window",
        "32",
        "aead",
        "rfc4106(gcm(aes))",
        &key,
        "128",
        "encap",
        "espinudp",
        "4500",
        "4500",
        "0.0.0.0",
        "mark",
        "0x5354ffff",
        "mask",
        "0xffffffff",
    ]);
    if out.status.success() {
        ns.exec_ok(&[
            "ip",
            "xfrm",
            "state",
            "delete",
            "src",
            "127.0.0.1",
            "dst",
            "127.0.0.2",
            "proto",
            "esp",
            "spi",
            "0x4242",
            "mark",
            "0x5354ffff",
            "mask",
            "0xffffffff",
        ]);
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let msg = err
        .trim()
        .trim_start_matches("Error: ")
        .trim_end_matches('.');
    Err(msg.to_string())
}

#[test]
fn probe_agrees_with_iproute2() {
    if !require_root("probe_agrees_with_iproute2") {
        return;
    }
    let ns = Netns::new(format!("{}p", unique_prefix()));
    let probe = ns.run_in(|| Ok(kernel::probe())).unwrap();
    match ip_can_add_esp(&ns) {
        Ok(()) => assert_eq!(probe, Ok(()), "ip adds the state, probe must agree"),
        Err(ip_says) => {
            assert!(
                std::path::Path::new("/proc/net/xfrm_stat").exists(),
                "no XFRM at all"
            );
            let why = probe.expect_err("ip cannot add an ESP state, so probe must fail");
            assert!(
                why.starts_with("kernel has no ESP: ") && why.contains(&ip_says),
                "probe says {why:?}, ip says {ip_says:?}"
            );
        }
    }
    // The throwaway state is gone either way.
    assert_eq!(states(&ns), Vec::<String>::new());
}

#[test]
fn policies_follow_the_peer_and_go_with_it() {
    if !require_root("policies_follow_the_peer_and_go_with_it") {
        return;
    }
    let ns = Netns::new(format!("{}q", unique_prefix()));
    // Someone else's policy, which strait must leave alone.
    let foreign = "src 10.9.0.0/16 dst 0.0.0.0/0 dir in priority 5 ptype main \
                   tmpl src 198.51.100.1 dst 198.51.100.2 proto esp reqid 7 mode tunnel";
    ns.exec_ok(&[
        "ip",
        "xfrm",
        "policy",
        "add",
        "src",
        "10.9.0.0/16",
        "dst",
        "0.0.0.0/0",
        "dir",
        "in",
        "priority",
        "5",
        "tmpl",
        "src",
        "198.51.100.1",
        "dst",
        "198.51.100.2",
        "proto",
        "esp",
        "reqid",
        "7",
        "mode",
        "tunnel",
    ]);
    let x = start(&ns);

    x.add_peer("b", peer(&["10.2.0.0/24", "fd00:2::/64"]))
        .unwrap();
    let reqid = x.reqid("b").unwrap();
    assert_eq!(reqid, REQID_BASE + 1);
    let mut want = expected("10.2.0.0/24", "0.0.0.0/0", 0x2000 + 104, reqid);
    want.extend(expected("fd00:2::/64", "::/0", 0x2000 + 64, reqid));
    want.push(foreign.to_string());
    want.sort();
    assert_eq!(policies(&ns), want);

    // Adding it again with other prefixes: the v6 prefix goes, 10.3.0.0/16 comes.
    x.add_peer("b", peer(&["10.2.0.0/24", "10.3.0.0/16"]))
        .unwrap();
    let mut want = expected("10.2.0.0/24", "0.0.0.0/0", 0x2000 + 104, reqid);
    want.extend(expected("10.3.0.0/16", "0.0.0.0/0", 0x2000 + 112, reqid));
    want.push(foreign.to_string());
    want.sort();
    assert_eq!(policies(&ns), want);

    // A second peer gets its own reqid.
    let mut c = peer(&["10.4.0.0/24"]);
    c.remote = "192.0.2.3:4500".parse().unwrap();
    x.add_peer("c", c).unwrap();
    assert_eq!(x.reqid("c"), Some(REQID_BASE + 2));
    assert_eq!(policies(&ns).len(), 1 + 3 * 3);

    // Bad input changes nothing.
    let mut bad = peer(&["10.5.0.0/24"]);
    bad.remote = "[2001:db8::2]:4500".parse().unwrap();
    assert!(matches!(
        x.add_peer("d", bad),
        Err(DatapathError::Invalid(_))
    ));
    assert_eq!(policies(&ns).len(), 1 + 3 * 3);

    x.remove_peer("b").unwrap();
    assert!(matches!(
        x.remove_peer("b"),
        Err(DatapathError::UnknownPeer(_))
    ));
    let left = policies(&ns);
    assert_eq!(left.len(), 1 + 3);
    assert!(left.iter().all(|p| !p.contains(&format!("reqid {reqid} "))));

    // purge takes the rest of strait's, and only strait's.
    let n = ns
        .run_in(|| kernel::purge().map_err(std::io::Error::other))
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(policies(&ns), vec![foreign.to_string()]);
}

#[test]
fn installing_sas_works_or_fails_cleanly() {
    if !require_root("installing_sas_works_or_fails_cleanly") {
        return;
    }
    let ns = Netns::new(format!("{}s", unique_prefix()));
    let has_esp = ns.run_in(|| Ok(kernel::probe())).unwrap();
    let x = start(&ns);
    x.add_peer("b", peer(&["10.2.0.0/24"])).unwrap();
    let before = policies(&ns);
    assert_eq!(before.len(), 3);

    match has_esp {
        Err(why) => {
            eprintln!("this kernel has no ESP ({why}): checking the failure path");
            for r in [
                x.install_inbound("b", sa(0xb000_0001, true)),
                x.install_outbound("b", sa(0xa000_0001, false)),
            ] {
                let e = r.expect_err("no ESP here");
                let text = e.to_string();
                assert!(
                    matches!(e, DatapathError::Unsupported(_))
                        && text.contains("ESP")
                        && text.contains("rfc4106(gcm(aes))")
                        && text.contains("CONFIG_INET_ESP"),
                    "{text}"
                );
            }
            // Nothing half-made: no state, the peer's policies as they were, nothing
            // to report or remove.
            assert_eq!(states(&ns), Vec::<String>::new());
            assert_eq!(policies(&ns), before);
            assert!(x.sa_status().is_empty());
            assert!(matches!(
                x.remove_sa("b", Direction::Inbound, 0xb000_0001),
                Err(DatapathError::UnknownSa { .. })
            ));
        }
        Ok(()) => {
            x.install_inbound("b", sa(0xb000_0001, true)).unwrap();
            assert!(matches!(
                x.install_inbound("b", sa(0xb000_0001, true)),
                Err(DatapathError::DuplicateSpi(0xb000_0001))
            ));
            x.install_outbound("b", sa(0xa000_0001, true)).unwrap();
            x.install_outbound("b", sa(0xa000_0002, true)).unwrap();
            let st = states(&ns);
            assert_eq!(st.len(), 3, "{st:#?}");
            assert!(st.iter().all(|s| s.contains("proto esp")
                && s.contains(&format!("reqid {}", REQID_BASE + 1))
                && s.contains("mode tunnel")
                && s.contains("encap type espinudp")
                && s.contains("rfc4106(gcm(aes))")));
            let report = x.sa_status();
            let active: Vec<_> = report
                .iter()
                .filter(|r| r.direction == Direction::Outbound && r.active)
                .map(|r| r.status.spi)
                .collect();
            assert_eq!(active, vec![0xa000_0002]);
            assert_eq!(report.len(), 3);
            x.remove_sa("b", Direction::Outbound, 0xa000_0002).unwrap();
            assert_eq!(states(&ns).len(), 2);
            x.remove_peer("b").unwrap();
            assert_eq!(states(&ns), Vec::<String>::new());
            assert_eq!(policies(&ns), Vec::<String>::new());
        }
    }
}

#[test]
fn ike_shares_the_port_and_bypasses_the_policies() {
    if !require_root("ike_shares_the_port_and_bypasses_the_policies") {
        return;
    }
    let p = unique_prefix();
    let (a, b) = (Netns::new(format!("{p}a")), Netns::new(format!("{p}b")));
    let (va, vb) = (format!("{p}va"), format!("{p}vb"));
    a.exec_ok(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    a.exec_ok(&["ip", "link", "set", &vb, "netns", b.name()]);
    a.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", &va]);
    a.exec_ok(&["ip", "link", "set", &va, "up"]);
    b.exec_ok(&["ip", "addr", "add", "192.0.2.2/24", "dev", &vb]);
    b.exec_ok(&["ip", "link", "set", &vb, "up"]);
    assert!(a.ping("192.0.2.2"), "the link works before any policy");

    let (xa, xb) = (start(&a), start(&b));
    let rx_b = xb.take_ike_receiver().unwrap();
    assert!(xb.take_ike_receiver().is_none());
    // Each peer's prefixes hold the other's own address: everything between them
    // now needs ESP, except IKE on the datapath's socket.
    xa.add_peer("b", peer(&["192.0.2.0/24"])).unwrap();
    let mut to_a = peer(&["192.0.2.0/24"]);
    to_a.local = "192.0.2.2".parse().unwrap();
    to_a.remote = "192.0.2.1:4500".parse().unwrap();
    xb.add_peer("a", to_a).unwrap();

    assert!(
        !a.ping("192.0.2.2"),
        "plain traffic must not pass without an SA"
    );
    assert!(xa.drops().no_sa > 0, "{:?}", xa.drops());

    xa.send_ike("192.0.2.2:4500".parse().unwrap(), b"IKE_SA_INIT")
        .unwrap();
    let got = rx_b
        .recv_timeout(Duration::from_secs(5))
        .expect("IKE through");
    assert_eq!(got.from, "192.0.2.1:4500".parse::<SocketAddr>().unwrap());
    assert_eq!(got.message, b"IKE_SA_INIT");

    // On the socket: the kernel takes ESP off it (UDP_ENCAP), and eats keepalives;
    // IKE behind its marker comes through, marker stripped. A kernel with ESP drops
    // an unknown SPI and counts it; one without drops it uncounted.
    assert!(xb.decapsulates_esp().unwrap());
    let has_esp = b.run_in(|| Ok(kernel::probe().is_ok())).unwrap();
    let plain = b.run_in(|| UdpSocket::bind("127.0.0.1:0")).unwrap();
    plain.connect("127.0.0.1:4500").unwrap();
    let before = xb.drops().unknown_spi;
    plain
        .send(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 9, 9, 9, 9])
        .unwrap();
    if has_esp {
        wait_until(
            "the kernel counts the ESP packet for an unknown SPI",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || xb.drops().unknown_spi > before,
        )
        .unwrap();
    }
    plain.send(&[0xff]).unwrap();
    plain.send(b"\0\0\0\0INFORMATIONAL").unwrap();
    let got = rx_b
        .recv_timeout(Duration::from_secs(5))
        .expect("IKE on loopback");
    assert_eq!(got.message, b"INFORMATIONAL");
    assert!(
        rx_b.try_recv().is_err(),
        "only the IKE message comes through"
    );
}
