//! The fuzz target's body (`strait_policy::fuzzing::documents`, run by `fuzz/` under
//! libFuzzer) on a fixed, deterministic set of inputs, so every `cargo test` covers
//! what the fuzzer covers on a stable toolchain: the target's seed corpus
//! (`fuzz/corpus/policy_documents`), edge cases, a wrong value at every field of a
//! valid policy of each kind, and seeded pseudo-random mutations of all of them. The
//! body panics on a finding (a panic in the parser, a refusal that names no document,
//! an accepted document whose `source` does not read back the same).

use std::path::Path;

use serde_json::{Value, json};
use strait_fuzz_smoke::{self as smoke, Members, Mutations, wrong_type_at_every_key};
use strait_policy::fuzzing;

const MUTATIONS: usize = 4000;

/// Bytes a mutation likes to insert: YAML and JSON syntax (flow and block, anchors,
/// tags, block scalars, document markers), NUL, non-UTF-8, digits, letters of keywords.
const INTERESTING: &[u8] = b"{}[]\":,-#&*!|>'?%@`\n \t.0123456789/eEaAzZ~\0\x7f\xc3\xff";

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/policy_documents");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    // read_dir's order is the file system's; the mutations must not depend on it.
    seeds.sort();
    assert!(seeds.len() >= 5, "the seed corpus is missing");
    seeds
}

fn edge_cases() -> Vec<Vec<u8>> {
    let mut cases: Vec<Vec<u8>> = [
        "",
        "---",
        "...",
        "null",
        "[]",
        "{}",
        "[[]]",
        "~",
        "- a",
        "\u{feff}{}",
        "kind: List\napiVersion: v1\nitems: [{kind: List, apiVersion: v1}]",
        "a: &x [*x]",
        "a: &a [1]\nb: *a\nc: *a",
        "!!binary aGVsbG8=",
        "!Tag {kind: Namespace}",
        "? [a, b]\n: c",
        "{\"a\": 1, \"a\": 2}",
        "{\"port\": 1e400}",
        "{\"port\": -9223372036854775809}",
        "port: .nan",
        "port: 0x50",
        "'unterminated",
        "\0",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    cases.push(vec![0xff, 0xfe, b'{', b'}']);
    cases.push(format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes());
    cases.push(format!("{}x", "- ".repeat(200)).into_bytes());
    cases.push(format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes());
    cases
}

fn network_policy() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"a": "b"},
                     "annotations": {"strait.io/audit": "true"}},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"},
                            "matchExpressions": [{"key": "t", "operator": "In", "values": ["x"]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"protocol": "TCP", "port": 80, "endPort": 90},
                                   {"port": "http"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/48"}}], "ports": [{"protocol": "UDP"}]}],
        },
    })
}

fn cluster_policy() -> Value {
    json!({
        "apiVersion": "strait.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "guard"},
        "spec": {
            "order": 10, "audit": true, "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "podSelector": {}, "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "protocol": "TCP",
                         "from": [{"podSelector": {"matchLabels": {"a": "b"}}}],
                         "ports": [{"port": 80, "endPort": 81}]}],
            "egress": [{"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0},
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        },
    })
}

#[test]
fn policy_documents() {
    let mut seeds = corpus();
    seeds.extend(edge_cases());
    let wrong = [
        json!(null),
        json!(-1),
        json!(70000),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
    ];
    for base in [network_policy(), cluster_policy()] {
        assert!(
            strait_policy::parse_documents(&base.to_string()).is_ok(),
            "the smoke test's own policies must be valid, or the mutations only test refusals"
        );
        seeds.extend(wrong_type_at_every_key(&base, &wrong, Members::AlsoRemove));
    }
    let mutations = Mutations {
        count: MUTATIONS,
        rng_seed: 0x901c_d0c5,
        interesting: INTERESTING,
    };
    smoke::run(fuzzing::documents, seeds, &mutations);
}

/// The committed seeds are valid documents: otherwise the fuzzer starts from refusals
/// and never reaches what an accepted policy becomes.
#[test]
fn seeds_are_accepted() {
    for seed in corpus() {
        let text = String::from_utf8(seed).unwrap();
        if let Err(e) = strait_policy::parse_documents(&text) {
            panic!("seed refused: {e}\n{text}");
        }
    }
}
