//! The userspace ESP datapath end to end, checked by independent decoders.
//!
//! Three namespaces: a client `c` behind gateway `a` (10.1.0.0/24), and gateway `b`
//! (10.2.0.1 on its TUN); `a` and `b` joined by a veth (192.0.2.0/24) carrying ESP in
//! UDP 4500 between two `Userspace` datapaths with static, matching SAs. Checked:
//! nothing leaves before an SA exists; ping and TCP pass; a capture on the veth holds
//! only ESP; tshark (with the test key log) finds a good ICV on every ESP packet and
//! decodes the inner ICMP, and scapy's `SecurityAssociation` decrypts every packet; a
//! capture with one flipped byte is refused by both, and the same packet fed to
//! strait is counted as an ICV failure and not delivered; full-size DF packets pass
//! at the TUN MTU and a larger one gets the kernel's "fragmentation needed"; IKE
//! datagrams share the port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strait_esp::keylog::KeyLog;
use strait_esp::{Cipher, Datapath, Direction, PeerConfig, Userspace, UserspaceConfig, mtu};
use strait_testbeds::esp::{A_OUTER, B_OUTER, Line, StraitOpts, StraitPair};
use strait_testbeds::netns::Netns;
use strait_testbeds::wire::Capture;
use strait_testbeds::{bench, require_root, unique_prefix, wait_until};

const SPI_AB: u32 = 0xa000_0001;
const SPI_BA: u32 = 0xb000_0001;

fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A python with scapy's IPsec layer (Debian's python3-scapy lives under
/// /usr/bin/python3, which a pyenv shim on PATH may hide).
fn scapy_python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import scapy.layers.ipsec"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `tcpdump -r` with a filter: how many packets match.
fn count(pcap: &Path, filter: &str) -> usize {
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(pcap)
        .arg(filter)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// tshark's verdict on each ESP packet: (spi, sequence, icv_good, inner ICMP type).
fn tshark(pcap: &Path, keylog: &Path) -> Vec<(String, String, String, String)> {
    let mut argv: Vec<String> = [
        "-n",
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]
    .map(String::from)
    .to_vec();
    for line in std::fs::read_to_string(keylog).unwrap().lines() {
        argv.push("-o".into());
        argv.push(format!("uat:esp_sa:{line}"));
    }
    argv.extend(
        [
            "-r",
            pcap.to_str().unwrap(),
            "-Y",
            "esp",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "esp.spi",
            "-e",
            "esp.sequence",
            "-e",
            "esp.icv_good",
            "-e",
            "icmp.type",
        ]
        .map(String::from),
    );
    let out = Command::new("tshark").args(&argv).output().unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            let g = |i: usize| f.get(i).copied().unwrap_or("").to_string();
            (g(0), g(1), g(2), g(3))
        })
        .collect()
}

fn scapy(py: &str, pcap: &Path, keylog: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/scapy_esp_verify.py");
    let out = Command::new(py)
        .arg(script)
        .arg(pcap)
        .arg(keylog)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Copy of an Ethernet pcap with one octet flipped in the first ESP packet from `a`
/// to `b` (the top octet of its sequence number, which the ICV covers); also returns
/// that packet's UDP payload as flipped.
fn flip_first_esp(pcap: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut out = pcap.to_vec();
    assert_eq!(
        &pcap[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "little-endian microsecond pcap"
    );
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + len];
        at += 16 + len;
        if frame.len() < 14 + 20 + 8 + 16 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let udp = &ip[ihl..];
        if ip[9] != 17 || ip[12..16] != [192, 0, 2, 1] || udp[2..4] != 4500u16.to_be_bytes() {
            continue;
        }
        let payload_at = at - len + 14 + ihl + 8;
        if udp[8..12] == [0; 4] {
            continue;
        }
        out[payload_at + 4] ^= 0x80;
        let end = at;
        return (out.clone(), out[payload_at..end].to_vec());
    }
    panic!("no ESP packet from a to b in the capture");
}

/// The two gateways of `strait_testbeds::esp` and a client `c` behind `a`
/// (10.1.0.2, default route via `a`'s 10.1.0.1).
struct Bed {
    // Datapaths first: they stop (and their TUNs go) before the namespaces do.
    pair: StraitPair,
    c: Netns,
    line: Line,
    keylog: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn dp_a(&self) -> &Userspace {
        &self.pair.dp_a
    }

    fn dp_b(&self) -> &Userspace {
        &self.pair.dp_b
    }
}

fn bed() -> Bed {
    bed_with(false)
}

fn bed_with(persist: bool) -> Bed {
    let p = unique_prefix();
    let line = Line::new(&p);
    let c = Netns::new(format!("{p}c"));
    let (veth_ac, veth_ca) = (format!("{p}ac"), format!("{p}ca"));
    c.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    c.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    line.a.exec_ok(&[
        "ip",
        "link",
        "add",
        &veth_ac,
        "type",
        "veth",
        "peer",
        "name",
        &veth_ca,
        "netns",
        c.name(),
    ]);
    line.a
        .exec_ok(&["ip", "addr", "add", "10.1.0.1/24", "dev", &veth_ac]);
    c.exec_ok(&["ip", "addr", "add", "10.1.0.2/24", "dev", &veth_ca]);
    line.a.exec_ok(&["ip", "link", "set", &veth_ac, "up"]);
    c.exec_ok(&["ip", "link", "set", &veth_ca, "up"]);
    c.exec_ok(&["ip", "route", "add", "default", "via", "10.1.0.1"]);
    let pair = StraitPair::start(
        &line,
        StraitOpts {
            tun_a: format!("{p}ea"),
            tun_b: format!("{p}eb"),
            queues: 2,
            port: 4500,
            mtu: mtu::inner_mtu(1500, false),
            persist,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let keylog = dir.path().join("esp_sa");
    Bed {
        pair,
        c,
        line,
        keylog,
        _dir: dir,
    }
}

fn install_sas(bed: &Bed, cipher: Cipher) {
    // Wireshark 4.0's esp_sa table has no ESN column, so the oracle SAs use 32-bit
    // sequence numbers; ESN is covered by tests/sa.rs (and scapy's vectors there).
    let log = KeyLog::open(&bed.keylog).unwrap();
    bed.pair
        .install(cipher, (SPI_AB, SPI_BA), 0x11, false, Some(&log));
}

fn inbound_status(dp: &Userspace, spi: u32) -> strait_esp::SaStatus {
    dp.sa_status()
        .into_iter()
        .find(|r| r.direction == Direction::Inbound && r.status.spi == spi)
        .expect("inbound SA installed")
        .status
}

#[test]
fn esp_between_two_namespaces_passes_the_wire_oracles() {
    if !require_root("esp_between_two_namespaces_passes_the_wire_oracles") {
        return;
    }
    let missing: Vec<&str> = ["tcpdump", "tshark", "iperf3", "ping"]
        .into_iter()
        .filter(|t| !tool(t))
        .collect();
    let Some(py) = scapy_python() else {
        eprintln!(
            "SKIP: esp_between_two_namespaces_passes_the_wire_oracles: no python3 with scapy"
        );
        return;
    };
    if !missing.is_empty() {
        eprintln!("SKIP: esp_between_two_namespaces_passes_the_wire_oracles: missing {missing:?}");
        return;
    }
    strait_testbeds::netns::reap_leftovers();
    let bed = bed();
    let work = tempfile::tempdir().unwrap();

    // No SA yet: nothing crosses, nothing leaves in clear, the drops are counted.
    let cap = Capture::start_with(
        bed.line.a.name(),
        &bed.line.veth_a,
        &work.path().join("before.pcap"),
        256,
    );
    assert!(!bed.c.ping("10.2.0.1"), "ping passed without any SA");
    let before = cap.stop();
    assert_eq!(
        count(&before, "not arp"),
        0,
        "something left before an SA existed"
    );
    assert!(bed.dp_a().drops().no_sa >= 1, "{:?}", bed.dp_a().drops());

    install_sas(&bed, Cipher::Aes256Gcm16);

    // IKE shares the port: a datagram with the non-ESP marker reaches b's caller.
    let ike = bed.dp_b().take_ike_receiver().unwrap();
    bed.dp_a()
        .send_ike(
            SocketAddr::new(B_OUTER.parse().unwrap(), 4500),
            b"IKE_SA_INIT",
        )
        .unwrap();
    let got = ike
        .recv_timeout(Duration::from_secs(5))
        .expect("IKE datagram delivered");
    assert_eq!(got.message, b"IKE_SA_INIT");
    assert_eq!(got.from, SocketAddr::new(A_OUTER.parse().unwrap(), 4500));

    // Ping and full-size DF packets, captured for the oracles.
    let cap = Capture::start_with(
        bed.line.a.name(),
        &bed.line.veth_a,
        &work.path().join("esp.pcap"),
        2048,
    );
    bed.c
        .exec_ok(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.2.0.1"]);
    let full = (mtu::inner_mtu(1500, false) - 28).to_string();
    bed.c.exec_ok(&[
        "ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", &full, "10.2.0.1",
    ]);
    let pcap = cap.stop();

    // One byte more with DF: the kernel's ICMP "fragmentation needed" from a, with
    // the TUN's MTU in it.
    let over = (mtu::inner_mtu(1500, false) - 28 + 1).to_string();
    let out = bed.c.exec(&[
        "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", &over, "10.2.0.1",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an oversized DF packet got through: {text}"
    );
    assert!(
        text.contains(&format!("mtu = {}", mtu::inner_mtu(1500, false)))
            || text.contains(&format!("mtu={}", mtu::inner_mtu(1500, false))),
        "no fragmentation-needed with the TUN MTU: {text}"
    );
    // Each queue holds more than a TUN's default 500 packets for a worker kept off
    // the CPU.
    let tun = bed.line.a.ip_json(&["link", "show", &bed.pair.opts.tun_a]);
    assert_eq!(
        tun[0]["txqlen"].as_u64(),
        Some(u64::from(strait_esp::userspace::TUN_QUEUE_LEN)),
        "{tun}"
    );

    // Only ESP on the line.
    let esp = count(&pcap, "udp port 4500");
    let listing = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        esp >= 16,
        "expected 8 echo requests and replies as ESP, saw {esp}:\n{}",
        String::from_utf8_lossy(&listing.stdout)
    );
    assert_eq!(
        count(&pcap, "not arp and not udp port 4500"),
        0,
        "non-ESP on the line"
    );
    assert_eq!(count(&pcap, "icmp"), 0);

    // Oracle 1: tshark verifies every ICV and sees the inner ICMP.
    let verdicts = tshark(&pcap, &bed.keylog);
    assert_eq!(
        verdicts.len(),
        esp,
        "tshark saw every ESP packet: {verdicts:?}"
    );
    for v in &verdicts {
        assert_eq!(v.2, "1", "ICV not good: {v:?}");
        assert!(
            v.3 == "8" || v.3 == "0",
            "inner ICMP echo not decoded: {v:?}"
        );
    }
    let spis: std::collections::BTreeSet<&str> = verdicts.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(spis.len(), 2, "both directions seen: {spis:?}");

    // Oracle 2: scapy decrypts every packet.
    let (ok, text) = scapy(py, &pcap, &bed.keylog);
    assert!(ok, "scapy refused strait's ESP:\n{text}");
    assert!(
        text.contains(&format!("{esp} verified, 0 failed")),
        "{text}"
    );

    // One flipped octet: both oracles refuse that packet, and so does strait.
    let (flipped, datagram) = flip_first_esp(&std::fs::read(&pcap).unwrap());
    let bad = work.path().join("flipped.pcap");
    std::fs::write(&bad, flipped).unwrap();
    let verdicts = tshark(&bad, &bed.keylog);
    let bad_icv = verdicts.iter().filter(|v| v.2 != "1").count();
    assert_eq!(
        bad_icv, 1,
        "tshark should refuse exactly the flipped packet: {verdicts:?}"
    );
    let (ok, text) = scapy(py, &bad, &bed.keylog);
    assert!(
        !ok && text.contains(&format!("{} verified, 1 failed", esp - 1)),
        "{text}"
    );

    let before = inbound_status(bed.dp_b(), SPI_AB);
    bed.dp_b()
        .inject(SocketAddr::new(A_OUTER.parse().unwrap(), 4500), &datagram);
    let after = inbound_status(bed.dp_b(), SPI_AB);
    assert_eq!(after.icv_failures, before.icv_failures + 1, "{after:?}");
    assert_eq!(
        (after.packets, after.seq),
        (before.packets, before.seq),
        "not delivered"
    );

    // TCP, while a capture of the headers shows nothing but ESP.
    let cap = Capture::start_with(
        bed.line.a.name(),
        &bed.line.veth_a,
        &work.path().join("tcp.pcap"),
        96,
    );
    let server = bench::IperfServer::start(&bed.line.b, "10.2.0.1".parse().unwrap());
    let run =
        bench::iperf(&bed.c, "10.2.0.1".parse().unwrap(), 2, false).expect("iperf3 through ESP");
    drop(server);
    let tcp = cap.stop();
    eprintln!(
        "iperf3 through the userspace datapath: {:.2} Gbit/s",
        run.gbits
    );
    assert!(run.gbits > 0.0);
    assert!(count(&tcp, "udp port 4500") > 100);
    assert_eq!(
        count(&tcp, "not arp and not udp port 4500"),
        0,
        "TCP in clear on the line"
    );

    let (sa, drops) = (inbound_status(bed.dp_b(), SPI_AB), bed.dp_b().drops());
    assert_eq!(
        (sa.replay_failures, drops.inner_refused, drops.unknown_spi),
        (0, 0, 0),
        "{sa:?} {drops:?}"
    );
}

/// A peer sending from a source outside its prefixes is refused after decryption.
#[test]
fn inner_source_outside_the_peer_prefixes_is_dropped() {
    if !require_root("inner_source_outside_the_peer_prefixes_is_dropped") {
        return;
    }
    if !tool("ping") {
        eprintln!("SKIP: inner_source_outside_the_peer_prefixes_is_dropped: no ping");
        return;
    }
    strait_testbeds::netns::reap_leftovers();
    let bed = bed();
    install_sas(&bed, Cipher::Aes128Gcm16);
    assert!(
        wait_until(
            "ping through ESP",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || bed.c.ping("10.2.0.1")
        )
        .is_ok()
    );
    // b now believes only 10.1.0.128/25 is behind a: c's 10.1.0.2 is not.
    bed.dp_b()
        .add_peer(
            "a",
            PeerConfig {
                local: B_OUTER.parse().unwrap(),
                remote: SocketAddr::new(A_OUTER.parse().unwrap(), 4500),
                prefixes: vec!["10.1.0.128/25".parse().unwrap()],
            },
        )
        .unwrap();
    assert!(!bed.c.ping("10.2.0.1"));
    assert!(
        bed.dp_b().drops().inner_refused >= 1,
        "{:?}",
        bed.dp_b().drops()
    );
}

/// `ip -j link show dev` in `ns`: the device's index, if it exists.
fn ifindex(ns: &Netns, dev: &str) -> Option<u64> {
    if !ns
        .exec(&["ip", "link", "show", "dev", dev])
        .status
        .success()
    {
        return None;
    }
    ns.ip_json(&["link", "show", "dev", dev])[0]["ifindex"].as_u64()
}

fn route_dev(ns: &Netns, prefix: &str) -> Option<String> {
    ns.ip_json(&["route", "show", prefix])[0]["dev"]
        .as_str()
        .map(String::from)
}

/// A persistent TUN outlives its datapath: the device and the route into it stay,
/// what is routed there is dropped (nothing crosses the line, in clear or not, even
/// with a default route over it), and a new datapath of the same name adopts the
/// device (same index) and carries traffic again; that one, not persistent, takes the
/// device with it.
#[test]
fn a_persistent_tun_outlives_the_datapath_and_is_adopted() {
    if !require_root("a_persistent_tun_outlives_the_datapath_and_is_adopted") {
        return;
    }
    let missing: Vec<&str> = ["tcpdump", "ping"]
        .into_iter()
        .filter(|t| !tool(t))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIP: a_persistent_tun_outlives_the_datapath_and_is_adopted: missing {missing:?}"
        );
        return;
    }
    strait_testbeds::netns::reap_leftovers();
    let Bed {
        pair,
        c,
        line,
        keylog: _,
        _dir,
    } = bed_with(true);
    let StraitPair { dp_a, dp_b, opts } = pair;
    let tun_a = opts.tun_a.clone();
    let old = StraitPair {
        dp_a,
        dp_b,
        opts: opts.clone(),
    };
    old.install(Cipher::Aes128Gcm16, (SPI_AB, SPI_BA), 0x11, true, None);
    wait_until(
        "ping through ESP",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || c.ping("10.2.0.1"),
    )
    .unwrap();
    let index = ifindex(&line.a, &tun_a).expect("the TUN exists");
    // Were the TUN's route gone, this would carry the traffic over the line in clear.
    line.a
        .exec_ok(&["ip", "route", "add", "default", "via", B_OUTER]);

    let StraitPair { dp_a, dp_b, .. } = old;
    drop(dp_a);
    assert_eq!(
        ifindex(&line.a, &tun_a),
        Some(index),
        "the device outlived it"
    );
    assert_eq!(
        route_dev(&line.a, "10.2.0.0/24").as_deref(),
        Some(tun_a.as_str()),
        "the route into it stays"
    );
    let work = tempfile::tempdir().unwrap();
    let cap = Capture::start_with(
        line.a.name(),
        &line.veth_a,
        &work.path().join("gap.pcap"),
        256,
    );
    assert!(!c.ping("10.2.0.1"), "ping passed with no datapath");
    let out = line
        .a
        .exec(&["ping", "-c", "2", "-W", "1", "-I", "10.1.0.1", "10.2.0.1"]);
    assert!(!out.status.success(), "ping from a passed with no datapath");
    let gap = cap.stop();
    assert_eq!(
        count(&gap, "not arp"),
        0,
        "something crossed the line with no datapath"
    );

    // A new datapath of the same name adopts the device.
    let mut cfg = UserspaceConfig::new(&tun_a);
    cfg.queues = 2;
    cfg.persist = false;
    let dp_a = line
        .a
        .run_in(move || Userspace::start(cfg).map_err(std::io::Error::other))
        .unwrap();
    assert_eq!(
        ifindex(&line.a, &tun_a),
        Some(index),
        "adopted, not made anew"
    );
    dp_a.add_peer(
        "b",
        PeerConfig {
            local: A_OUTER.parse().unwrap(),
            remote: SocketAddr::new(B_OUTER.parse().unwrap(), 4500),
            prefixes: vec!["10.2.0.0/24".parse().unwrap()],
        },
    )
    .unwrap();
    let new = StraitPair { dp_a, dp_b, opts };
    new.install(
        Cipher::Aes128Gcm16,
        (SPI_AB + 1, SPI_BA + 1),
        0x44,
        true,
        None,
    );
    wait_until(
        "ping through the adopted TUN",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || c.ping("10.2.0.1"),
    )
    .unwrap();

    // Not persistent: it takes the device (and its route) with it.
    let StraitPair { dp_a, dp_b, .. } = new;
    drop(dp_a);
    assert_eq!(ifindex(&line.a, &tun_a), None, "the device went with it");
    assert_eq!(route_dev(&line.a, "10.2.0.0/24"), None);
    drop(dp_b);
    drop(c);
    drop(line);
}
