//! Which container veths have a foreign ingress qdisc: the `bandwidth` plugin's
//! `ingress` qdisc (with a mirred filter to its ifb) shapes what the container sends.
//! The fast path runs before it (tcx first) and would skip the shaping, so such a
//! veth is left to the kernel.

use std::collections::HashSet;
use std::process::Command;

/// Devices with an `ingress` or `clsact` qdisc, from `tc -j qdisc show`; empty when
/// tc cannot be run (then nothing is detached).
pub fn devices_with_ingress_qdisc() -> HashSet<String> {
    match Command::new("tc").args(["-j", "qdisc", "show"]).output() {
        Ok(out) if out.status.success() => parse(&out.stdout),
        _ => HashSet::new(),
    }
}

fn parse(json: &[u8]) -> HashSet<String> {
    let Ok(serde_json::Value::Array(qdiscs)) = serde_json::from_slice(json) else {
        return HashSet::new();
    };
    qdiscs
        .iter()
        .filter(|q| matches!(q["kind"].as_str(), Some("ingress" | "clsact")))
        .filter_map(|q| q["dev"].as_str().map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ingress_qdiscs() {
        let out = br#"[{"kind":"noqueue","handle":"0:","dev":"strait1","root":true,"refcnt":2,"options":{}},
            {"kind":"ingress","handle":"ffff:","dev":"strait2","parent":"ffff:fff1","options":{}},
            {"kind":"clsact","handle":"ffff:","dev":"eth0","parent":"ffff:fff1","options":{}},
            {"kind":"tbf","handle":"1:","dev":"strait3","root":true,"options":{}}]"#;
        let found = parse(out);
        assert_eq!(
            found,
            HashSet::from(["strait2".to_string(), "eth0".to_string()])
        );
        assert!(parse(b"not json").is_empty());
    }
}
