//! The body of the fuzz target `service_documents` (`fuzz/fuzz_targets/`), here so the
//! same code also runs as a deterministic smoke test under `cargo test`
//! (`tests/fuzz_smoke.rs`). Not part of the crate's API.
//!
//! Checked besides "no panic": a refusal names a document that exists and renders;
//! what is accepted reads back the same from its `source` (what `netctl service get`
//! shows), its object round-trips through the store's JSON, and resolving it against
//! an endpoint and a node address and filling a Maglev table holds the table's
//! invariants.

use crate::documents::{Document, parse_documents};
use crate::frontends::{EndpointView, resolve, usable};
use crate::maglev;
use crate::model::{EndpointSlice, Service};

/// `service_documents`: any bytes as the text of `netctl service apply -f`.
pub fn documents(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_documents(&text) {
        Ok(parsed) => {
            let slices: Vec<EndpointSlice> = parsed
                .iter()
                .filter_map(|p| match &p.document {
                    Document::EndpointSlice(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            for p in &parsed {
                let again = parse_documents(&p.source.to_string())
                    .unwrap_or_else(|e| panic!("source {} does not parse again: {e}", p.source));
                assert_eq!(again.len(), 1, "source {} is one document", p.source);
                assert_eq!(again[0].document, p.document, "source {}", p.source);
                match &p.document {
                    Document::Service(s) => {
                        let json = serde_json::to_string(s).expect("a service serialises");
                        let back: Service = serde_json::from_str(&json).expect("and reads back");
                        assert_eq!(&back, s);
                        exercise(s, &slices);
                    }
                    Document::EndpointSlice(s) => {
                        let json = serde_json::to_string(s).expect("a slice serialises");
                        let back: EndpointSlice =
                            serde_json::from_str(&json).expect("and reads back");
                        assert_eq!(&back, s);
                    }
                }
            }
        }
        Err(e) => {
            assert!(e.document >= 1, "{e:?}");
            assert!(!e.message.is_empty(), "{e:?}");
            let _ = e.to_string();
        }
    }
}

fn exercise(service: &Service, slices: &[EndpointSlice]) {
    let endpoint = EndpointView {
        id: "n1/c1".into(),
        namespace: service.namespace.clone(),
        labels: service.selector.clone().unwrap_or_default(),
        addresses: vec!["10.244.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        named_ports: vec![("http".into(), crate::model::Protocol::TCP, 8080)],
        node: "n1".into(),
        ready: true,
    };
    let nodes = ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    for r in resolve(service, &nodes, &[endpoint], slices) {
        let keys: Vec<String> = usable(&r, "n1", |_| false)
            .iter()
            .map(|b| b.key())
            .collect();
        let table = maglev::build(&keys, maglev::table_size(keys.len()));
        assert_eq!(table.slots.is_empty(), keys.is_empty());
        assert!(
            table
                .slots
                .iter()
                .all(|&s| (s as usize) < table.backends.len())
        );
    }
}
