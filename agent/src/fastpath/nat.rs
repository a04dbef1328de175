//! Whether this host NATs service traffic for containers, which the fast path must
//! not bypass (`--fast-path auto`).
//!
//! kube-proxy DNATs a container's connection to a service address on the client's
//! host; the backend's replies come back over the fabric and need that host's
//! conntrack to be translated back. The fast path would hand them to the container
//! untranslated, and the connection would fail. So with kube-proxy present (iptables
//! or nftables mode, or IPVS services) `auto` keeps the fast path off, as Cilium keeps
//! BPF host routing off without its own service handling.

use std::process::Command;

/// The reason the fast path must stay off, or `None` when no service NAT is found.
pub fn service_nat() -> Option<String> {
    if let Ok(table) = std::fs::read_to_string("/proc/net/ip_vs")
        && ipvs_has_services(&table)
    {
        return Some("IPVS virtual services exist (kube-proxy in ipvs mode)".into());
    }
    for tool in ["iptables-legacy-save", "iptables-nft-save"] {
        if let Some(out) = run(tool, &["-t", "nat"])
            && has_kube_services(&out)
        {
            return Some(format!(
                "kube-proxy's KUBE-SERVICES chain is in the nat table ({tool})"
            ));
        }
    }
    if let Some(out) = run("nft", &["list", "tables"])
        && nft_has_kube_proxy(&out)
    {
        return Some("nftables has kube-proxy's table".into());
    }
    None
}

/// Output of a tool that may not be installed (then there are no rules of its kind).
fn run(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `/proc/net/ip_vs` lists one line per virtual service (`TCP  0A000001:0050 rr`)
/// after its header.
fn ipvs_has_services(table: &str) -> bool {
    table.lines().any(|l| {
        let first = l.split_whitespace().next().unwrap_or("");
        matches!(first, "TCP" | "UDP" | "SCTP" | "FWM")
    })
}

fn has_kube_services(iptables_save: &str) -> bool {
    iptables_save
        .lines()
        .any(|l| l.starts_with(":KUBE-SERVICES ") || l.starts_with("-A KUBE-SERVICES "))
}

fn nft_has_kube_proxy(tables: &str) -> bool {
    tables
        .lines()
        .any(|l| l.split_whitespace().last() == Some("kube-proxy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipvs_header_alone_is_no_service() {
        let empty = "IP Virtual Server version 1.2.1 (size=4096)\n\
                     Prot LocalAddress:Port Scheduler Flags\n  \
                     -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n";
        assert!(!ipvs_has_services(empty));
        let one = format!("{empty}TCP  0A600001:01BB rr\n  -> 0AF40002:01BB Masq 1 0 0\n");
        assert!(ipvs_has_services(&one));
    }

    #[test]
    fn kube_services_chain_is_found_in_iptables_save() {
        let docker_only = "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                           -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n";
        assert!(!has_kube_services(docker_only));
        let kube = "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        assert!(has_kube_services(kube));
    }

    #[test]
    fn kube_proxy_nft_table_is_found() {
        assert!(nft_has_kube_proxy(
            "table inet filter\ntable ip kube-proxy\n"
        ));
        assert!(!nft_has_kube_proxy("table inet filter\ntable ip nat\n"));
    }
}
