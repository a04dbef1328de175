//! The body of the fuzz target `policy_documents` (`fuzz/fuzz_targets/`), here so the
//! same code also runs as a deterministic smoke test under `cargo test`
//! (`tests/fuzz_smoke.rs`). Not part of the crate's API.
//!
//! Checked besides "no panic": a refusal names a document that exists and renders;
//! what is accepted reads back the same from its `source` (what the store keeps and
//! `netctl policy get` shows), and its policy serialises (what the agent stores).

use crate::parse::{Document, parse_documents};

/// `policy_documents`: any bytes as the text of `netctl policy apply -f`.
pub fn documents(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_documents(&text) {
        Ok(parsed) => {
            for p in parsed {
                let again = parse_documents(&p.source.to_string())
                    .unwrap_or_else(|e| panic!("source {} does not parse again: {e}", p.source));
                assert_eq!(again.len(), 1, "source {} is one document", p.source);
                assert_eq!(again[0].document, p.document, "source {}", p.source);
                if let Document::Policy(policy) = &p.document {
                    serde_json::to_string(policy).expect("a policy serialises");
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
