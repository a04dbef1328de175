//! Which container veths have an `ingress` qdisc: the `bandwidth` plugin's (with a
//! mirred filter to its ifb) shapes what the container sends there. The fast path's
//! clsact cannot share that slot, and would skip the shaping anyway, so such a veth
//! is left to the kernel.

use std::collections::HashSet;
use std::process::Command;

/// Devices with an `ingress` qdisc, from `tc -j qdisc show`; empty when tc cannot be
/// run (then the attach itself fails on a taken slot). A `clsact` qdisc is not
/// counted: it may be strait's own, and other filters can share it.
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
        .filter(|q| q["kind"].as_str() == Some("ingress"))
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
        // clsact may be strait's own (or shared): only `ingress` counts.
        assert_eq!(found, HashSet::from(["strait2".to_string()]));
        assert!(parse(b"not json").is_empty());
    }
}
