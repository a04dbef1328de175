//! External peers as text: the API's JSON bodies, the records in the store, and the
//! YAML or JSON documents of `netctl ipsec peer apply -f`.
//!
//! A decoding error never quotes a pre-shared key: serde's messages quote the value
//! they could not use (`invalid type: integer `1234…`, expected a string`), so any
//! `secret` found in the input is replaced by `<redacted>` in the message.

use std::collections::BTreeSet;

use serde_json::Value;

use super::ExternalPeer;

/// The most peers one apply writes: etcd refuses a transaction of more than 128
/// operations by default (`--max-txn-ops`).
pub const MAX_PEERS_PER_APPLY: usize = 128;

/// What replaces a pre-shared key in a message.
const REDACTED: &str = "<redacted>";

/// One peer from a JSON object (a `PUT` body, a stored record); not yet validated.
pub fn peer_from_json(bytes: &[u8]) -> Result<ExternalPeer, String> {
    match serde_json::from_slice::<ExternalPeer>(bytes) {
        Ok(peer) => Ok(peer),
        // Read as a plain value to find the keys to hide; when even that fails, its
        // syntax error is the one to give (serde_json's syntax errors quote nothing).
        Err(e) => match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Err(scrub(&e.to_string(), &v)),
            Err(syntax) => Err(syntax.to_string()),
        },
    }
}

/// A JSON array of peers (the body of an apply); each validated, no name twice.
pub fn peers_from_json(bytes: &[u8]) -> Result<Vec<ExternalPeer>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Value::Array(items) = value else {
        return Err("give a JSON array of peers".into());
    };
    let peers = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| peer_from_value(i + 1, item))
        .collect::<Result<Vec<_>, _>>()?;
    validate_all(&peers)?;
    Ok(peers)
}

/// The peers in `text`: YAML documents (separated by `---`) or JSON values, each one
/// peer or a list of peers. Every peer is validated and no name may come twice; the
/// first problem refuses them all, naming the entry (counted from 1 across the text).
pub fn parse_peer_documents(text: &str) -> Result<Vec<ExternalPeer>, String> {
    let mut peers = Vec::new();
    for value in values(text)? {
        let items = match value {
            Value::Null => continue,
            Value::Array(items) => items,
            one => vec![one],
        };
        for item in items {
            peers.push(peer_from_value(peers.len() + 1, item)?);
        }
    }
    if peers.is_empty() {
        return Err("no peer in the text".into());
    }
    validate_all(&peers)?;
    Ok(peers)
}

/// Checks a set of peers written together: each valid, no name twice, not too many.
pub fn validate_all(peers: &[ExternalPeer]) -> Result<(), String> {
    if peers.len() > MAX_PEERS_PER_APPLY {
        return Err(format!(
            "{} peers at once: apply at most {MAX_PEERS_PER_APPLY} per call",
            peers.len()
        ));
    }
    let mut names = BTreeSet::new();
    for p in peers {
        p.validate()?;
        if !names.insert(p.name.as_str()) {
            return Err(format!("peer {} is given twice", p.name));
        }
    }
    Ok(())
}

/// The text's values: a JSON stream when it starts like JSON, else a YAML stream.
fn values(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::Deserializer::from_str(trimmed)
            .into_iter::<Value>()
            .enumerate()
            .map(|(i, v)| v.map_err(|e| format!("JSON value {}: {e}", i + 1)))
            .collect();
    }
    let mut out = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        // The stream stops at its first error (and would repeat it for ever).
        let v: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("YAML document {}: {e}", i + 1))?;
        out.push(v);
    }
    Ok(out)
}

/// One peer from a decoded value; the error names the entry and hides any key.
fn peer_from_value(entry: usize, item: Value) -> Result<ExternalPeer, String> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    if !item.is_object() {
        return Err(format!(
            "entry {entry}: a peer is a mapping (name, site, auth, …), not {}",
            kind(&item)
        ));
    }
    serde_json::from_value::<ExternalPeer>(item.clone())
        .map_err(|e| format!("entry {entry}{name}: {}", scrub(&e.to_string(), &item)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `message` with every `secret` value of `input` replaced by [`REDACTED`].
fn scrub(message: &str, input: &Value) -> String {
    let mut secrets = Vec::new();
    collect_secrets(input, &mut secrets);
    let mut out = message.to_string();
    for s in secrets {
        // serde quotes strings with Rust's escapes: hide that form, then the raw one.
        out = out.replace(&format!("{s:?}"), REDACTED);
        // Shorter ones are refused anyway, and hiding every "a" would garble the text.
        if s.len() >= 4 {
            out = out.replace(&s, REDACTED);
        }
    }
    out
}

fn collect_secrets(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("secret", Value::String(s)) => out.push(s.clone()),
                    ("secret", Value::Number(n)) => out.push(n.to_string()),
                    _ => collect_secrets(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secrets(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "name: onprem\nsite: dc\naddress: 198.51.100.7\nauth:\n  method: psk\n  secret_file: /etc/strait/onprem.psk\nremote_networks: [192.168.50.0/24]\n";

    #[test]
    fn one_peer_a_list_and_several_documents_are_read() {
        assert_eq!(parse_peer_documents(ONE).unwrap().len(), 1);
        let two = format!("{ONE}---\n{}", ONE.replace("onprem", "cloud"));
        let peers = parse_peer_documents(&two).unwrap();
        let names: Vec<_> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["onprem", "cloud"]);
        let list = serde_json::to_string(&peers).unwrap();
        assert_eq!(parse_peer_documents(&list).unwrap(), peers);
        assert_eq!(peers_from_json(list.as_bytes()).unwrap(), peers);
    }

    #[test]
    fn one_bad_entry_refuses_all_and_is_named() {
        let bad = ONE
            .replace("onprem", "cloud")
            .replace("site: dc", "site: DC!");
        let e = parse_peer_documents(&format!("{ONE}---\n{bad}")).unwrap_err();
        assert!(e.contains("site"), "{e}");
        let e = parse_peer_documents(&format!("{ONE}---\n{ONE}")).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = parse_peer_documents(&format!("{ONE}---\nname: x\nbogus: 1\n")).unwrap_err();
        assert!(e.starts_with("entry 2 (x): "), "{e}");
        let e = parse_peer_documents("- 7\n").unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        assert!(parse_peer_documents("").is_err());
    }

    #[test]
    fn a_key_in_the_wrong_shape_is_not_quoted_back() {
        let secret = "1234567890123456789";
        let json = format!(
            r#"{{"name":"p","site":"dc","auth":{{"method":"psk","secret":{secret}}},"remote_networks":["10.9.0.0/16"]}}"#
        );
        let e = peer_from_json(json.as_bytes()).unwrap_err();
        assert!(!e.contains(secret) && e.contains("<redacted>"), "{e}");
        let yaml = format!("name: p\nsite: dc\nauth: {{method: psk, secret: {secret}}}\n");
        let e = parse_peer_documents(&yaml).unwrap_err();
        assert!(!e.contains(secret), "{e}");
        // A string where a list belongs is quoted by serde: hidden too.
        let json = r#"{"name":"p","site":"dc","auth":{"method":"psk","secret":"correct horse \"battery\""},"remote_networks":"correct horse \"battery\""}"#;
        let e = peer_from_json(json.as_bytes()).unwrap_err();
        assert!(!e.contains("horse"), "{e}");
    }
}
