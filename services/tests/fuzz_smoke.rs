//! The fuzz target's body (`strait_services::fuzzing::documents`, run by `fuzz/` under
//! libFuzzer) on a fixed, deterministic set of inputs, so every `cargo test` covers
//! what the fuzzer covers on a stable toolchain: the seed corpus
//! (`fuzz/corpus/service_documents`), edge cases, a wrong value at every field of a
//! valid Service and EndpointSlice, and seeded pseudo-random mutations of all of them.

use std::path::Path;

use serde_json::{Value, json};
use strait_fuzz_smoke::{self as smoke, Members, Mutations, wrong_type_at_every_key};
use strait_services::fuzzing;

const MUTATIONS: usize = 4000;

const INTERESTING: &[u8] = b"{}[]\":,-#&*!|>'?%@`\n \t.0123456789/eEaAzZ~\0\x7f\xc3\xff";

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/service_documents");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "the seed corpus is missing");
    seeds
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop",
                     "annotations": {"strait.io/health-check": "tcp",
                                     "strait.io/health-check-interval": "1s"}},
        "spec": {
            "type": "NodePort", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
            "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
            "selector": {"app": "web"}, "externalIPs": ["192.0.2.1"],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
            "publishNotReadyAddresses": false,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http",
                       "nodePort": 30080},
                      {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353}],
        },
    })
}

fn slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "h1",
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
    })
}

#[test]
fn service_documents() {
    let mut seeds = corpus();
    for s in [
        "",
        "---",
        "[]",
        "{}",
        "kind: List\napiVersion: v1\nitems: [{kind: List, apiVersion: v1}]",
        "\0",
    ] {
        seeds.push(s.as_bytes().to_vec());
    }
    let wrong = [
        json!(null),
        json!(-1),
        json!(70000),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
    ];
    for base in [service(), slice()] {
        assert!(
            strait_services::parse_documents(&base.to_string()).is_ok(),
            "the smoke test's own documents must be valid: {:?}",
            strait_services::parse_documents(&base.to_string())
        );
        seeds.extend(wrong_type_at_every_key(&base, &wrong, Members::AlsoRemove));
    }
    let mutations = Mutations {
        count: MUTATIONS,
        rng_seed: 0x5e41_1ce5,
        interesting: INTERESTING,
    };
    smoke::run(fuzzing::documents, seeds, &mutations);
}

/// The committed seeds are valid documents.
#[test]
fn seeds_are_accepted() {
    for seed in corpus() {
        let text = String::from_utf8(seed).unwrap();
        if let Err(e) = strait_services::parse_documents(&text) {
            panic!("seed refused: {e}\n{text}");
        }
    }
}
