//! Whether this host rewrites destinations in netfilter, which the fast path must not
//! bypass (`--fast-path auto`).
//!
//! A DNAT on this host needs the host's conntrack to translate the replies back. The
//! fast path hands container-to-container packets over without netfilter, so a
//! reply that needs translating would reach the client untranslated and the
//! connection would fail:
//! - kube-proxy DNATs a service address to a backend; the backend's reply comes back
//!   over the fabric, addressed to the client container.
//! - CNI `portmap` (and Docker's published ports) DNAT a host port to a container;
//!   that container's reply to a client container goes out through the fast path.
//!
//! So `auto` keeps the fast path off while the nat table holds any DNAT or REDIRECT
//! rule, kube-proxy's chains or table, or IPVS virtual services. Cilium likewise keeps
//! BPF host routing off unless it does the service translation itself.

use std::process::Command;

/// The reason the fast path must stay off, or `None` when nothing rewrites
/// destinations here.
pub fn destination_nat() -> Option<String> {
    if let Ok(table) = std::fs::read_to_string("/proc/net/ip_vs")
        && ipvs_has_services(&table)
    {
        return Some("IPVS virtual services exist (kube-proxy in ipvs mode)".into());
    }
    for tool in [
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "iptables-nft-save",
        "ip6tables-nft-save",
    ] {
        if let Some(out) = run(tool, &["-t", "nat"])
            && let Some(what) = iptables_dnat(&out)
        {
            return Some(format!("the nat table has {what} ({tool})"));
        }
    }
    if let Some(out) = run("nft", &["list", "ruleset"])
        && let Some(what) = nft_dnat(&out)
    {
        return Some(format!("nftables has {what}"));
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

/// What in `iptables-save -t nat` output rewrites destinations, if anything.
fn iptables_dnat(save: &str) -> Option<&'static str> {
    for line in save.lines() {
        if line.starts_with(":KUBE-SERVICES ") || line.starts_with("-A KUBE-SERVICES ") {
            return Some("kube-proxy's KUBE-SERVICES chain");
        }
        if line.starts_with("-A ") {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "-j" {
                    match words.next() {
                        Some("DNAT") => return Some("a DNAT rule"),
                        Some("REDIRECT") => return Some("a REDIRECT rule"),
                        _ => {}
                    }
                }
            }
        }
    }
    None
}

/// What in `nft list ruleset` output rewrites destinations, if anything.
fn nft_dnat(ruleset: &str) -> Option<&'static str> {
    for line in ruleset.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"table") && words.contains(&"kube-proxy") {
            return Some("kube-proxy's table");
        }
        // Statements, not names: `dnat to …`, `dnat ip to …`, `redirect to :8080`.
        if words.contains(&"dnat") {
            return Some("a dnat rule");
        }
        if words.contains(&"redirect") {
            return Some("a redirect rule");
        }
    }
    None
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
    fn dnat_in_iptables_save_is_found() {
        let masquerade_only = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                               -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE\n\
                               COMMIT\n";
        assert_eq!(iptables_dnat(masquerade_only), None);
        // An empty DOCKER chain (no published port) rewrites nothing.
        let docker_idle = "*nat\n:DOCKER - [0:0]\n\
                           -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n";
        assert_eq!(iptables_dnat(docker_idle), None);
        let portmap = "*nat\n:CNI-DN-1 - [0:0]\n-A CNI-DN-1 -p tcp -m tcp --dport 8080 \
                       -j DNAT --to-destination 10.244.0.5:80\nCOMMIT\n";
        assert_eq!(iptables_dnat(portmap), Some("a DNAT rule"));
        let redirect = "*nat\n-A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080\n";
        assert_eq!(iptables_dnat(redirect), Some("a REDIRECT rule"));
        let kube = "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        assert_eq!(
            iptables_dnat(kube),
            Some("kube-proxy's KUBE-SERVICES chain")
        );
    }

    #[test]
    fn dnat_in_nft_ruleset_is_found() {
        let filter_only = "table inet filter {\n\tchain input {\n\t\ttype filter hook input \
                           priority filter; policy accept;\n\t}\n}\n";
        assert_eq!(nft_dnat(filter_only), None);
        assert_eq!(
            nft_dnat("table ip kube-proxy {\n}\n"),
            Some("kube-proxy's table")
        );
        let dnat =
            "table ip nat {\n\tchain pre {\n\t\ttcp dport 8080 dnat to 10.244.0.5:80\n\t}\n}\n";
        assert_eq!(nft_dnat(dnat), Some("a dnat rule"));
        assert_eq!(
            nft_dnat("\t\ttcp dport 80 redirect to :8080\n"),
            Some("a redirect rule")
        );
    }
}
