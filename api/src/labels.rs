//! An endpoint's labels, namespace and named ports as Kubernetes spells them: the
//! syntax checks the CNI plugin, the agent and `netctl` share, and a label update
//! (`netctl endpoint label ID key=value … key-`) with kubectl's rules.
//!
//! The rules are Kubernetes' own (apimachinery `validation.IsQualifiedName`,
//! `IsValidLabelValue`, `IsDNS1123Label`, `IsValidPortName`), so a label or port that
//! works here works in a NetworkPolicy written for Kubernetes, and the other way round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strait_policy::ir::Protocol;
use strait_policy::view::NamedPort;

/// The longest label name and value (and a namespace's name).
const MAX_NAME: usize = 63;
/// The longest DNS subdomain (a label key's prefix).
const MAX_PREFIX: usize = 253;
/// The longest port name (IANA service names).
const MAX_PORT_NAME: usize = 15;

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
pub fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || prefix.len() > MAX_PREFIX || !is_dns_subdomain(prefix))
    {
        return Err(format!(
            "label key {key:?}: the prefix before '/' must be a DNS subdomain (lower-case \
             letters, digits, '-' and '.', at most {MAX_PREFIX} characters)"
        ));
    }
    if name.is_empty() {
        return Err(format!("label key {key:?}: the name must not be empty"));
    }
    if name.len() > MAX_NAME || !is_label_name(name) {
        return Err(format!(
            "label key {key:?}: the name must be at most {MAX_NAME} characters, letters, \
             digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or what a key's name may be.
pub fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= MAX_NAME && is_label_name(value)) {
        Ok(())
    } else {
        Err(format!(
            "label {key}={value:?}: a value must be empty or at most {MAX_NAME} characters, \
             letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// Every key and value of `labels`; the error names the first bad label.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    labels.iter().try_for_each(|(k, v)| {
        validate_key(k)?;
        validate_value(k, v)
    })
}

/// A namespace name: a DNS label (at most 63 lower-case letters, digits and `-`,
/// starting and ending with a letter or digit), as Kubernetes requires.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAME
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "namespace {namespace:?} must be at most {MAX_NAME} lower-case letters, digits \
             and '-', starting and ending with a letter or digit"
        ))
    }
}

/// A named port: an IANA service name (at most 15 lower-case letters, digits and `-`,
/// at least one letter, no `-` at either end or twice in a row), a port 1–65535, and
/// TCP, UDP or SCTP.
pub fn validate_named_port(p: &NamedPort) -> Result<(), String> {
    let n = &p.name;
    let name_ok = !n.is_empty()
        && n.len() <= MAX_PORT_NAME
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--");
    if !name_ok {
        return Err(format!(
            "port name {n:?} must be at most {MAX_PORT_NAME} lower-case letters, digits and \
             '-', with at least one letter and no '-' at either end or twice in a row"
        ));
    }
    if p.port == 0 {
        return Err(format!("named port {n}: port 0 is not a port"));
    }
    if ![Protocol::TCP, Protocol::UDP, Protocol::SCTP].contains(&p.protocol) {
        return Err(format!(
            "named port {n}: protocol {} is not TCP, UDP or SCTP",
            p.protocol
        ));
    }
    Ok(())
}

/// Each named port checked, identical duplicates dropped (runtimes repeat a mapping
/// per host address), and one name naming two different ports refused.
pub fn normalize_named_ports(ports: Vec<NamedPort>) -> Result<Vec<NamedPort>, String> {
    let mut out: Vec<NamedPort> = Vec::with_capacity(ports.len());
    for p in ports {
        validate_named_port(&p)?;
        match out.iter().find(|q| q.name == p.name) {
            Some(q) if *q == p => {}
            Some(q) => {
                return Err(format!(
                    "port name {} names both {}/{} and {}/{}",
                    p.name, q.port, q.protocol, p.port, p.protocol
                ));
            }
            None => out.push(p),
        }
    }
    Ok(out)
}

/// `TCP`, `UDP` or `SCTP` in any case, as a named port's protocol.
pub fn parse_port_protocol(s: &str) -> Option<Protocol> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::TCP),
        "udp" => Some(Protocol::UDP),
        "sctp" => Some(Protocol::SCTP),
        _ => None,
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|part| {
        let b = part.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_NAME
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// `POST /v1/endpoints/{id}/labels`: what `netctl endpoint label` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelUpdate {
    /// Labels to add or change.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to remove (`key-`); a key the endpoint does not have is no error.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Change a label that has another value already (kubectl's `--overwrite`).
    #[serde(default)]
    pub overwrite: bool,
}

impl LabelUpdate {
    /// Parse kubectl's arguments: `key=value` sets, `key-` removes.
    pub fn from_args<S: AsRef<str>>(args: &[S], overwrite: bool) -> Result<Self, String> {
        let mut update = LabelUpdate {
            overwrite,
            ..Default::default()
        };
        for arg in args {
            let arg = arg.as_ref();
            if let Some((k, v)) = arg.split_once('=') {
                update.set.insert(k.to_string(), v.to_string());
            } else if let Some(k) = arg.strip_suffix('-').filter(|k| !k.is_empty()) {
                update.remove.push(k.to_string());
            } else {
                return Err(format!("{arg:?} is neither key=value nor key-"));
            }
        }
        update.check()?;
        Ok(update)
    }

    /// The update on its own: something to do, good keys and values, no key both set
    /// and removed.
    pub fn check(&self) -> Result<(), String> {
        if self.set.is_empty() && self.remove.is_empty() {
            return Err("no labels to set or remove".into());
        }
        validate_labels(&self.set)?;
        for k in &self.remove {
            if k.is_empty() {
                return Err("an empty key cannot be removed".into());
            }
            if self.set.contains_key(k) {
                return Err(format!(
                    "label {k:?} is both set and removed in the same update"
                ));
            }
        }
        Ok(())
    }

    /// The labels after the update, or why it is refused (nothing changes then): a
    /// bad update, or a label that has another value already without `overwrite`.
    pub fn apply(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        self.check()?;
        if !self.overwrite {
            for (k, v) in &self.set {
                if let Some(old) = labels.get(k).filter(|old| *old != v) {
                    return Err(format!(
                        "label {k:?} already has the value {old:?}; use --overwrite to change it"
                    ));
                }
            }
        }
        let mut out = labels.clone();
        for k in &self.remove {
            out.remove(k);
        }
        out.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(out)
    }
}

/// `k=v,k2=v2`, sorted by key (netctl's LABELS column).
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A DNS subdomain of `len` characters: labels of 63 joined by dots.
    fn dns(len: usize) -> String {
        let mut s = String::new();
        while s.len() < len {
            if !s.is_empty() {
                s.push('.');
            }
            let n = (len - s.len()).min(63);
            s.push_str(&"a".repeat(n));
        }
        s
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        for ok in [
            "app",
            "a",
            "app.kubernetes.io/name",
            "example.com/tier",
            "A_b-c.d",
            &"k".repeat(63),
            &format!("{}/x", dns(253)),
        ] {
            validate_key(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "-app",
            "app-",
            "a b",
            "/app",
            "Example.com/app",
            "ex_ample.com/app",
            "a/b/c",
            "app/",
            &"k".repeat(64),
            &format!("{}/x", dns(254)),
            &format!("{}.b/x", "a".repeat(64)),
        ] {
            let e = validate_key(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        for ok in ["", "web", "v1.2_3-x", &"v".repeat(63)] {
            validate_value("k", ok).unwrap();
        }
        for bad in ["-web", "web-", "a/b", "a b", &"v".repeat(64)] {
            let e = validate_value("k", bad).expect_err(bad);
            assert!(e.starts_with("label k="), "{e}");
        }
        let e = validate_labels(&map(&[("app", "web"), ("bad key", "x")])).unwrap_err();
        assert!(e.contains("\"bad key\""), "the bad label is named: {e}");
    }

    #[test]
    fn namespaces_are_dns_labels() {
        for ok in ["default", "ns1", "a-b", &"n".repeat(63)] {
            validate_namespace(ok).unwrap();
        }
        for bad in ["", "NS", "a_b", "a.b", "-a", "a-", &"n".repeat(64)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn named_ports_are_iana_names_of_tcp_udp_sctp() {
        let p = |name: &str, port, protocol| NamedPort {
            name: name.into(),
            port,
            protocol,
        };
        validate_named_port(&p("http", 8080, Protocol::TCP)).unwrap();
        validate_named_port(&p("dns-1", 53, Protocol::UDP)).unwrap();
        validate_named_port(&p("s", 9, Protocol::SCTP)).unwrap();
        for bad in ["", "HTTP", "80", "a--b", "-a", "a-", "sixteen-chars-xx"] {
            assert!(
                validate_named_port(&p(bad, 80, Protocol::TCP)).is_err(),
                "{bad}"
            );
        }
        assert!(validate_named_port(&p("http", 0, Protocol::TCP)).is_err());
        let e = validate_named_port(&p("x", 1, Protocol::ICMP)).unwrap_err();
        assert!(e.contains("icmp"), "{e}");

        let ports = normalize_named_ports(vec![
            p("http", 80, Protocol::TCP),
            p("http", 80, Protocol::TCP),
            p("dns", 53, Protocol::UDP),
        ])
        .unwrap();
        assert_eq!(ports.len(), 2);
        let e = normalize_named_ports(vec![
            p("http", 80, Protocol::TCP),
            p("http", 81, Protocol::TCP),
        ])
        .unwrap_err();
        assert!(e.contains("http"), "{e}");
        assert_eq!(parse_port_protocol("Udp"), Some(Protocol::UDP));
        assert_eq!(parse_port_protocol("icmp"), None);
    }

    #[test]
    fn label_updates_follow_kubectl() {
        let u = LabelUpdate::from_args(&["tier=db", "old-"], false).unwrap();
        assert_eq!(u.set, map(&[("tier", "db")]));
        assert_eq!(u.remove, vec!["old".to_string()]);
        let labels = map(&[("app", "web"), ("old", "x")]);
        assert_eq!(
            u.apply(&labels).unwrap(),
            map(&[("app", "web"), ("tier", "db")])
        );

        // A changed value needs --overwrite; the same value does not.
        let change = LabelUpdate::from_args(&["app=api"], false).unwrap();
        let e = change.apply(&labels).unwrap_err();
        assert!(e.contains("\"app\"") && e.contains("--overwrite"), "{e}");
        LabelUpdate::from_args(&["app=web"], false)
            .unwrap()
            .apply(&labels)
            .unwrap();
        let change = LabelUpdate {
            overwrite: true,
            ..change
        };
        assert_eq!(change.apply(&labels).unwrap()["app"], "api");

        // Removing what is not there is no error (kubectl only warns).
        LabelUpdate::from_args(&["nothere-"], false)
            .unwrap()
            .apply(&labels)
            .unwrap();

        for bad in [
            &["app"][..],
            &["-"],
            &[],
            &["a=b", "a-"],
            &["bad key=x"],
            &["k=-v"],
        ] {
            assert!(LabelUpdate::from_args(bad, false).is_err(), "{bad:?}");
        }
        // A body that skipped from_args is checked all the same.
        let raw = LabelUpdate {
            set: map(&[("k", "bad value")]),
            ..Default::default()
        };
        assert!(raw.apply(&labels).is_err());
    }

    #[test]
    fn labels_format_sorted() {
        assert_eq!(format_labels(&map(&[("b", "2"), ("a", "1")])), "a=1,b=2");
        assert_eq!(format_labels(&BTreeMap::new()), "");
    }
}
