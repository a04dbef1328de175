//! The underlay: the network the hosts share, as a datacenter would give it.
//!
//! One namespace holds a bridge per subnet (the L2 segments). With one subnet every
//! host sits on segment A; with two, a router namespace joins A and B, so hosts on
//! different segments reach each other only through a routed hop (host-gw's "not on the
//! same L2" case). The underlay namespace itself never forwards: it only bridges, and
//! holds etcd's address on segment A.
//!
//! Addressing (inside the test's own namespaces only):
//!
//! | segment | IPv4 | IPv6 |
//! |---|---|---|
//! | A | 10.0.0.0/24 | fd00:10:0:1::/64 |
//! | B | 10.0.1.0/24 | fd00:10:0:2::/64 |
//!
//! `.254`/`::fe` on A is the underlay namespace's bridge (etcd listens there), `.253`/
//! `::fd` is the router on each segment, host `hN` is `.N`/`::N` on its segment, and
//! extra peers (benchmark baselines) are `.100+N`.
//!
//! With two **sites** ([`Layout::TwoSites`]), each segment is a site with a router of
//! its own, and the two routers are joined by a point-to-point "dedicated line"
//! (10.0.254.0/30 and fd00:10:0:fe::/64, device `line` in both), shaped with `tbf` to
//! the line's rate. Everything between the sites crosses that one link, so a capture on
//! it sees all of it. (This kernel has no `netem`, so the line adds no delay.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::Netns;

/// An L2 segment of the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Segment {
    A,
    B,
}

impl Segment {
    fn index(self) -> u8 {
        match self {
            Segment::A => 0,
            Segment::B => 1,
        }
    }

    /// The bridge of this segment in the underlay namespace.
    pub fn bridge(self) -> &'static str {
        match self {
            Segment::A => "br-a",
            Segment::B => "br-b",
        }
    }

    /// The fixed MAC of the segment's bridge (locally administered unicast).
    pub fn bridge_mac(self) -> String {
        format!("02:5b:00:00:00:{:02x}", self.index() + 0xa)
    }

    /// The `n`th IPv4 address of the segment.
    pub fn v4(self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, self.index(), n)
    }

    /// The `n`th IPv6 address of the segment.
    pub fn v6(self, n: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0x10,
            0,
            u16::from(self.index()) + 1,
            0,
            0,
            0,
            n.into(),
        )
    }

    /// Where a host on this segment sends what is not on its segment: the router when
    /// there is one, else the underlay bridge (which drops it, as a datacenter edge
    /// with no route would).
    fn gateway(self, routed: bool) -> (Ipv4Addr, Ipv6Addr) {
        let n = if routed { ROUTER } else { BRIDGE };
        (self.v4(n), self.v6(n))
    }
}

/// Host number of the underlay namespace's own address on segment A.
pub const BRIDGE: u8 = 254;
/// Host number of the router on each segment.
pub const ROUTER: u8 = 253;
/// Host numbers of extra peers start here.
pub const PEER_BASE: u8 = 100;

/// How the underlay joins the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One L2 segment.
    OneSegment,
    /// Segments A and B joined by one router.
    TwoSegments,
    /// Two sites, A and B, each a segment with its own router; the routers are joined
    /// by a dedicated line of the given rate.
    TwoSites(Line),
}

impl Layout {
    fn two_segments(self) -> bool {
        self != Layout::OneSegment
    }
}

/// The dedicated line between two sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Rate in Mbit/s, shaped with `tbf` on both ends; `None`: as fast as a veth.
    pub rate_mbit: Option<u32>,
}

/// Name of a host's end of its underlay veth: the agents' `--underlay-iface`.
pub const UNDERLAY_DEV: &str = "eth0";

/// Name of the line's device in both site routers.
pub const LINE_DEV: &str = "line";

/// The site a segment is, with [`Layout::TwoSites`] (the agents' `--site`).
pub fn site_of(seg: Segment) -> &'static str {
    match seg {
        Segment::A => "site-a",
        Segment::B => "site-b",
    }
}

/// The underlay namespaces: the bridges, and the router(s) when there are two segments.
pub struct Underlay {
    pub mtu: u32,
    pub layout: Layout,
    // Drop order: the routers go before the bridges they are plugged into.
    /// The router on segment A: the only one with two segments, site A's with two sites.
    pub router: Option<Netns>,
    /// Site B's router, with two sites.
    pub router_b: Option<Netns>,
    pub ns: Netns,
}

impl Underlay {
    /// Build the bridges and the routers `layout` asks for, all links with `mtu`.
    pub fn new(prefix: &str, mtu: u32, layout: Layout) -> Self {
        let ns = Netns::new(format!("{prefix}u"));
        quiet_dad(&ns);
        let mtu_s = mtu.to_string();
        let segments: &[Segment] = if layout.two_segments() {
            &[Segment::A, Segment::B]
        } else {
            &[Segment::A]
        };
        for seg in segments {
            let br = seg.bridge();
            // A fixed MAC: a bridge without one takes the lowest of its ports' and
            // changes as ports join, leaving hosts with a stale ARP entry for etcd.
            ns.exec_ok(&[
                "ip",
                "link",
                "add",
                br,
                "address",
                &seg.bridge_mac(),
                "mtu",
                &mtu_s,
                "type",
                "bridge",
            ]);
            ns.exec_ok(&["ip", "link", "set", br, "up"]);
        }
        // The underlay's own foot on segment A: etcd's address.
        add_addrs(&ns, Segment::A.bridge(), Segment::A, BRIDGE);

        let (router, router_b) = match layout {
            Layout::OneSegment => (None, None),
            Layout::TwoSegments => {
                let r = router_ns(&format!("{prefix}r"));
                for seg in [Segment::A, Segment::B] {
                    plug_router(&ns, seg, &r, mtu);
                }
                (Some(r), None)
            }
            Layout::TwoSites(line) => {
                let (ra, rb) = (
                    router_ns(&format!("{prefix}ra")),
                    router_ns(&format!("{prefix}rb")),
                );
                plug_router(&ns, Segment::A, &ra, mtu);
                plug_router(&ns, Segment::B, &rb, mtu);
                join_sites(&ra, &rb, mtu, line);
                (Some(ra), Some(rb))
            }
        };
        if router.is_some() {
            // etcd on segment A answers hosts on B through the router.
            let (gw4, gw6) = (Segment::A.v4(ROUTER), Segment::A.v6(ROUTER));
            ns.exec_ok(&["ip", "route", "add", "10.0.1.0/24", "via", &gw4.to_string()]);
            ns.exec_ok(&[
                "ip",
                "-6",
                "route",
                "add",
                "fd00:10:0:2::/64",
                "via",
                &gw6.to_string(),
            ]);
        }
        Self {
            mtu,
            layout,
            router,
            router_b,
            ns,
        }
    }

    /// With two sites: takes the dedicated line down (both ends, as a cut line) or
    /// brings it back up with its routes.
    pub fn set_line_up(&self, up: bool) {
        let (Some(ra), Some(rb)) = (&self.router, &self.router_b) else {
            panic!("set_line_up needs two sites");
        };
        let state = if up { "up" } else { "down" };
        for r in [ra, rb] {
            r.exec_ok(&["ip", "link", "set", LINE_DEV, state]);
        }
        if !up {
            return;
        }
        // Taking a link down takes its routes along; they come back once both ends
        // have carrier again (until then the gateway is unreachable).
        for (r, other, seg) in [(ra, 2, Segment::B), (rb, 1, Segment::A)] {
            let v4 = format!("{}/24", seg.v4(0));
            let v6 = format!("{}/64", seg.v6(0));
            let (gw4, gw6) = (
                format!("10.0.254.{other}"),
                format!("fd00:10:0:fe::{other}"),
            );
            let argvs: [&[&str]; 2] = [
                &["ip", "route", "replace", &v4, "via", &gw4],
                &["ip", "-6", "route", "replace", &v6, "via", &gw6],
            ];
            for argv in argvs {
                crate::wait::wait_until(
                    &format!("{argv:?} in {}", r.name()),
                    std::time::Duration::from_secs(10),
                    std::time::Duration::from_millis(100),
                    || r.exec(argv).status.success(),
                )
                .unwrap();
            }
        }
    }

    /// With two sites: site A's router and the line's device in it, where a capture
    /// sees every packet between the sites.
    pub fn line(&self) -> Option<(&Netns, &'static str)> {
        match self.layout {
            Layout::TwoSites(_) => self.router.as_ref().map(|r| (r, LINE_DEV)),
            _ => None,
        }
    }

    /// Where etcd listens: the underlay namespace's address on segment A.
    pub fn etcd_ip(&self) -> IpAddr {
        IpAddr::V4(Segment::A.v4(BRIDGE))
    }

    /// Plug `ns` into `seg` through a veth whose inner end is [`UNDERLAY_DEV`], address it as
    /// number `n` of the segment, and give it a default route (v4 and v6) to the
    /// segment's gateway. Returns the addresses.
    pub fn attach(&self, ns: &Netns, port: &str, seg: Segment, n: u8) -> (Ipv4Addr, Ipv6Addr) {
        quiet_dad(ns);
        plug(&self.ns, seg, port, ns, UNDERLAY_DEV, self.mtu);
        add_addrs(ns, UNDERLAY_DEV, seg, n);
        let (gw4, gw6) = seg.gateway(self.router.is_some());
        ns.exec_ok(&["ip", "route", "add", "default", "via", &gw4.to_string()]);
        ns.exec_ok(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &gw6.to_string(),
        ]);
        (seg.v4(n), seg.v6(n))
    }

    /// The namespaces, routers first.
    pub fn netns(&self) -> impl Iterator<Item = &Netns> {
        self.router
            .iter()
            .chain(&self.router_b)
            .chain(std::iter::once(&self.ns))
    }
}

/// A namespace that forwards IPv4 and IPv6.
fn router_ns(name: &str) -> Netns {
    let r = Netns::new(name.to_string());
    quiet_dad(&r);
    r.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    r.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    r
}

/// Plugs router `r` into segment `seg` as its `.253`/`::fd`.
fn plug_router(underlay: &Netns, seg: Segment, r: &Netns, mtu: u32) {
    let inner = format!("seg-{}", seg.bridge().trim_start_matches("br-"));
    let outer = format!("r-{}", seg.bridge().trim_start_matches("br-"));
    plug(underlay, seg, &outer, r, &inner, mtu);
    add_addrs(r, &inner, seg, ROUTER);
}

/// The dedicated line: a veth `line` from site A's router to site B's, addressed
/// point to point, each router routing the other site's segment over it, both ends
/// shaped to the line's rate.
fn join_sites(ra: &Netns, rb: &Netns, mtu: u32, line: Line) {
    let mtu_s = mtu.to_string();
    ra.exec_ok(&[
        "ip",
        "link",
        "add",
        LINE_DEV,
        "mtu",
        &mtu_s,
        "type",
        "veth",
        "peer",
        "name",
        LINE_DEV,
        "netns",
        rb.name(),
        "mtu",
        &mtu_s,
    ]);
    for (r, me, other, seg) in [(ra, 1, 2, Segment::B), (rb, 2, 1, Segment::A)] {
        r.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.0.254.{me}/30"),
            "dev",
            LINE_DEV,
        ]);
        r.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("fd00:10:0:fe::{me}/64"),
            "dev",
            LINE_DEV,
            "nodad",
        ]);
        // A cut line keeps its addresses, as a real one would (IPv6 drops them
        // on link down otherwise).
        r.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{LINE_DEV}.keep_addr_on_down=1"),
        ]);
        r.exec_ok(&["ip", "link", "set", LINE_DEV, "up"]);
        let v4 = format!("{}/24", seg.v4(0));
        let v6 = format!("{}/64", seg.v6(0));
        r.exec_ok(&[
            "ip",
            "route",
            "add",
            &v4,
            "via",
            &format!("10.0.254.{other}"),
        ]);
        r.exec_ok(&[
            "ip",
            "-6",
            "route",
            "add",
            &v6,
            "via",
            &format!("fd00:10:0:fe::{other}"),
        ]);
        if let Some(rate) = line.rate_mbit {
            // A bucket of about 2 ms at the rate, at least 64 KiB (a GSO segment).
            let burst = (u64::from(rate) * 1_000_000 / 8 / 500).max(64 * 1024);
            r.exec_ok(&[
                "tc",
                "qdisc",
                "add",
                "dev",
                LINE_DEV,
                "root",
                "tbf",
                "rate",
                &format!("{rate}mbit"),
                "burst",
                &burst.to_string(),
                "latency",
                "20ms",
            ]);
        }
    }
}

/// A veth from the underlay's `seg` bridge (end `outer`) to `inner` in `other`, both
/// ends with `mtu`, up.
fn plug(underlay: &Netns, seg: Segment, outer: &str, other: &Netns, inner: &str, mtu: u32) {
    let mtu = mtu.to_string();
    underlay.exec_ok(&[
        "ip",
        "link",
        "add",
        outer,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        inner,
        "netns",
        other.name(),
        "mtu",
        &mtu,
    ]);
    underlay.exec_ok(&["ip", "link", "set", outer, "master", seg.bridge(), "up"]);
    other.exec_ok(&["ip", "link", "set", inner, "up"]);
}

fn add_addrs(ns: &Netns, dev: &str, seg: Segment, n: u8) {
    ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", seg.v4(n)),
        "dev",
        dev,
    ]);
    ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{}/64", seg.v6(n)),
        "dev",
        dev,
        "nodad",
    ]);
}

/// No duplicate address detection in the namespace: the addresses are ours by
/// construction, and DAD would leave IPv6 unusable for the first seconds.
fn quiet_dad(ns: &Netns) {
    for key in ["all", "default"] {
        ns.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{key}.accept_dad=0"),
        ]);
    }
}
