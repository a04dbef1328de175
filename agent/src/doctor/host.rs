//! Checks of the host's kernel settings, read from `/proc/sys` and `/sys` of the
//! agent's own network namespace (the host's): forwarding, reverse-path filtering,
//! the conntrack table's fill, and the kernel features strait uses. Each reader takes
//! the root it reads under, so the verdicts are unit-tested on made-up trees.

use std::path::Path;

use strait_api::FabricMode;
use strait_api::doctor::Check;

use crate::fabric::VXLAN_DEVICE;

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

/// IPv4 forwarding always; IPv6 forwarding when a pool is IPv6. straitd turns both on
/// at start: off now means someone turned it off since.
pub fn forwarding(proc_sys: &Path, ipv6: bool) -> Check {
    let v4 = read(proc_sys, "net/ipv4/ip_forward");
    let v6 = read(proc_sys, "net/ipv6/conf/all/forwarding");
    let mut off = Vec::new();
    if v4.as_deref() != Some("1") {
        off.push("net.ipv4.ip_forward");
    }
    if ipv6 && v6.as_deref() != Some("1") {
        off.push("net.ipv6.conf.all.forwarding");
    }
    if off.is_empty() {
        let families = if ipv6 { "IPv4 and IPv6" } else { "IPv4" };
        return Check::ok("ip-forwarding", format!("{families} forwarding on"));
    }
    let sets: Vec<String> = off.iter().map(|k| format!("{k}=1")).collect();
    Check::fail(
        "ip-forwarding",
        format!(
            "{} off: this host routes no container traffic",
            off.join(" and ")
        ),
        format!(
            "`sysctl -w {}` and find what turned it off (straitd sets it at start; a \
             sysctl.d file or another agent may reset it)",
            sets.join(" ")
        ),
    )
}

/// Strict reverse-path filtering (1) drops packets whose source the host would not
/// route back the way they came. strait's own paths are symmetric (a container's
/// address is routed over its veth, a block over the fabric device), so strict is
/// harmless with vxlan and host-gw; with BGP's ECMP a block's packets may arrive on
/// one uplink and be routed back over another, and strict mode drops them. The
/// effective value of an interface is the higher of `all` and its own.
pub fn rp_filter(proc_sys: &Path, fabric: FabricMode, devices: &[String]) -> Check {
    let all = read(proc_sys, "net/ipv4/conf/all/rp_filter").and_then(|v| v.parse::<u8>().ok());
    let mut strict = Vec::new();
    for dev in devices {
        let own = read(proc_sys, &format!("net/ipv4/conf/{dev}/rp_filter"))
            .and_then(|v| v.parse::<u8>().ok());
        if own.unwrap_or(0).max(all.unwrap_or(0)) == 1 {
            strict.push(dev.clone());
        }
    }
    if strict.is_empty() {
        return Check::ok(
            "rp-filter",
            format!(
                "loose or off on {}",
                if devices.is_empty() {
                    "every interface".to_string()
                } else {
                    devices.join(", ")
                }
            ),
        );
    }
    if fabric == FabricMode::Bgp {
        return Check::warn(
            "rp-filter",
            format!(
                "strict on {}: with ECMP a container's packets may arrive on another \
                 uplink than the route back, and are dropped",
                strict.join(", ")
            ),
            format!(
                "`sysctl -w net.ipv4.conf.all.rp_filter=2 {}` (loose)",
                strict
                    .iter()
                    .map(|d| format!("net.ipv4.conf.{d}.rp_filter=2"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
    Check::ok(
        "rp-filter",
        format!(
            "strict on {}; strait's routes are symmetric there",
            strict.join(", ")
        ),
    )
}

/// The kernel's connection tracking table: a full table drops new connections of
/// every container (and of the host).
pub fn conntrack(proc_sys: &Path) -> Check {
    let count =
        read(proc_sys, "net/netfilter/nf_conntrack_count").and_then(|v| v.parse::<u64>().ok());
    let max = read(proc_sys, "net/netfilter/nf_conntrack_max").and_then(|v| v.parse::<u64>().ok());
    let (Some(count), Some(max)) = (count, max) else {
        return Check::skip("conntrack", "no conntrack table (nf_conntrack not loaded)");
    };
    if max == 0 {
        return Check::skip("conntrack", "nf_conntrack_max is 0");
    }
    let percent = count * 100 / max;
    let detail = format!("{count} of {max} entries ({percent}%)");
    let fix = "raise net.netfilter.nf_conntrack_max (`sysctl -w \
               net.netfilter.nf_conntrack_max=N`), or find the workload opening \
               connections (`conntrack -S`)";
    match percent {
        0..80 => Check::ok("conntrack", detail),
        80..95 => Check::warn("conntrack", format!("{detail}: near full"), fix),
        _ => Check::fail(
            "conntrack",
            format!("{detail}: new connections are being dropped"),
            fix,
        ),
    }
}

/// What the kernel offers of what strait uses, as this agent found it.
pub struct Features {
    /// eBPF programs loaded and attached (the policy datapath, the fast path).
    pub ebpf: Result<String, String>,
    /// Whether the fabric wants a VXLAN device, and whether it exists.
    pub vxlan_wanted: bool,
    pub vxlan_device: bool,
    /// ESP in the kernel (XFRM), or why strait's userspace datapath runs instead.
    pub esp: Option<String>,
}

/// The running kernel's release. Always from the real /proc/sys: only `net/` is under
/// `--proc-sys-dir`, and a container's read-only /proc/sys still reads.
pub fn kernel_release() -> String {
    read(Path::new("/proc/sys"), "kernel/osrelease").unwrap_or_else(|| "unknown".into())
}

pub fn kernel(release: &str, f: &Features) -> Check {
    let mut notes = vec![format!("Linux {release}")];
    match &f.ebpf {
        Ok(s) => notes.push(format!("eBPF: {s}")),
        Err(e) => {
            return Check::fail(
                "kernel",
                format!("Linux {release}: eBPF: {e}"),
                "run a kernel with BPF, BPF_SYSCALL and cgroup/tc BPF (5.10 or later), \
                 with bpffs at /sys/fs/bpf, and give straitd CAP_BPF and CAP_SYS_ADMIN",
            );
        }
    }
    if f.vxlan_wanted {
        if !f.vxlan_device {
            return Check::fail(
                "kernel",
                format!("Linux {release}: the fabric wants {VXLAN_DEVICE} and it does not exist"),
                "load the vxlan module (`modprobe vxlan`) and see the agent's log for \
                 why the device could not be made",
            );
        }
        notes.push("VXLAN: yes".into());
    }
    if let Some(esp) = &f.esp {
        notes.push(format!("ESP: {esp}"));
    }
    Check::ok("kernel", notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::doctor::Verdict;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, value) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{value}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn forwarding_off_fails_with_the_sysctl_to_set() {
        let on = tree(&[
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
        ]);
        assert_eq!(forwarding(on.path(), true).verdict, Verdict::Ok);
        let off = tree(&[
            ("net/ipv4/ip_forward", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
        ]);
        let c = forwarding(off.path(), false);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("net.ipv4.ip_forward"), "{c:?}");
        assert!(!c.detail.contains("ipv6"), "no IPv6 pool: {c:?}");
        assert!(c.fix.unwrap().contains("sysctl -w net.ipv4.ip_forward=1"));
        let c = forwarding(off.path(), true);
        assert!(c.detail.contains("net.ipv6.conf.all.forwarding"), "{c:?}");
    }

    #[test]
    fn strict_rp_filter_warns_only_where_ecmp_makes_paths_asymmetric() {
        let t = tree(&[
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/eth0/rp_filter", "1"),
        ]);
        let devs = vec!["eth0".to_string()];
        assert_eq!(
            rp_filter(t.path(), FabricMode::Vxlan, &devs).verdict,
            Verdict::Ok
        );
        let c = rp_filter(t.path(), FabricMode::Bgp, &devs);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.fix.unwrap().contains("net.ipv4.conf.eth0.rp_filter=2"));
        let loose = tree(&[("net/ipv4/conf/all/rp_filter", "2")]);
        assert_eq!(
            rp_filter(loose.path(), FabricMode::Bgp, &devs).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn conntrack_fill() {
        let t = |n: &str| {
            tree(&[
                ("net/netfilter/nf_conntrack_count", n),
                ("net/netfilter/nf_conntrack_max", "1000"),
            ])
        };
        assert_eq!(conntrack(t("10").path()).verdict, Verdict::Ok);
        assert_eq!(conntrack(t("850").path()).verdict, Verdict::Warn);
        assert_eq!(conntrack(t("990").path()).verdict, Verdict::Fail);
        assert_eq!(conntrack(tree(&[]).path()).verdict, Verdict::Skip);
    }

    #[test]
    fn kernel_features() {
        let f = |ebpf: Result<String, String>, dev| Features {
            ebpf,
            vxlan_wanted: true,
            vxlan_device: dev,
            esp: Some("userspace (kernel has no ESP)".into()),
        };
        let c = kernel("6.18.44", &f(Ok("fast path, policy".into()), true));
        assert_eq!(c.verdict, Verdict::Ok);
        assert!(c.detail.contains("Linux 6.18.44"), "{c:?}");
        let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(
            kernel_release(),
            running.trim(),
            "uname's release is procfs's"
        );
        assert_eq!(
            kernel("6.18.44", &f(Ok("x".into()), false)).verdict,
            Verdict::Fail
        );
        assert_eq!(
            kernel("6.18.44", &f(Err("no bpffs".into()), true)).verdict,
            Verdict::Fail
        );
    }
}
