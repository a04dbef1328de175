//! The fuzz targets' bodies (`strait_api::fuzzing`, run by `fuzz/` under libFuzzer) on
//! a fixed, deterministic set of inputs, so every `cargo test` covers what the fuzzer
//! covers on a stable toolchain: a valid instance of every request and answer type,
//! hand-made edge cases, and seeded pseudo-random mutations of both. The bodies panic
//! on a finding; nothing else is asserted here.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use strait_api::fuzzing;
use strait_api::*;
use strait_fuzz_smoke::{self as smoke, Members, Mutations, wrong_type_at_every_key};

mod common;

/// Mutations per target; with the seeds, a second or two in a debug build.
const MUTATIONS: usize = 3000;

/// Bytes a mutation likes to insert: JSON and HTTP syntax, NUL, non-UTF-8, digits.
const INTERESTING: &[u8] = b"{}[]\":,;\r\n\\/.-0129afE+ \0\x7f\x80\xc3\xff";

/// Run a target's body over its seeds and [`MUTATIONS`] mutations of them.
fn run(body: fn(&[u8]), seeds: Vec<Vec<u8>>, rng_seed: u64) {
    let mutations = Mutations {
        count: MUTATIONS,
        rng_seed,
        interesting: INTERESTING,
    };
    smoke::run(body, seeds, &mutations);
}

// ===== seeds =====

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("API types serialise")
}

fn attachment() -> Attachment {
    Attachment {
        container_id: "c0ffee01".into(),
        ifname: "eth0".into(),
    }
}

fn report() -> IpamReport {
    IpamReport {
        revision: 42,
        grace_secs: 600,
        issues: vec![
            IpamIssue::LeakedHandle {
                handle: "h1".into(),
                ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
                reason: "netns gone".into(),
                age_secs: 900,
            },
            IpamIssue::OrphanAllocation {
                block: "10.1.0.0/26".parse().unwrap(),
                ip: "10.1.0.6".parse().unwrap(),
                handle: "h2".into(),
            },
            IpamIssue::MissingAllocation {
                handle: "h3".into(),
                ip: "10.1.0.7".parse().unwrap(),
            },
            IpamIssue::EndpointWithoutHandle {
                endpoint: "e1".into(),
                handle: "h4".into(),
            },
            IpamIssue::DuplicateIp {
                ip: "10.1.0.8".parse().unwrap(),
                handles: vec!["h5".into(), "h6".into()],
            },
        ],
    }
}

/// A valid body of every request type the agent decodes, every optional field set.
fn requests() -> Vec<Value> {
    vec![
        json(&AddRequest {
            network: "net".into(),
            container_id: "c0ffee01".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            mac: Some("02:42:0a:01:00:05".into()),
            mtu: Some(1450),
            namespace: Some("ns1".into()),
            pod: Some("p".into()),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            named_ports: vec![strait_api::NamedPort {
                name: "http".into(),
                protocol: strait_policy::ir::Protocol::TCP,
                port: 8080,
            }],
            host_ports: true,
            port_mappings: Vec::new(),
        }),
        json(&DelRequest {
            network: "net".into(),
            container_id: "c0ffee01".into(),
            ifname: "eth0".into(),
            netns: Some("/var/run/netns/x".into()),
        }),
        json(&CheckRequest {
            network: "net".into(),
            container_id: "c0ffee01".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            expected_ips: vec!["10.1.0.5/32".parse().unwrap()],
        }),
        json(&StatusRequest {
            network: "net".into(),
        }),
        json(&GcRequest {
            network: "net".into(),
            valid_attachments: vec![attachment()],
        }),
        json(&ReleaseRequest { report: report() }),
        json(&strait_api::labels::LabelUpdate {
            set: BTreeMap::from([("tier".into(), "db".into())]),
            remove: vec!["old".into()],
            overwrite: true,
        }),
    ]
}

fn readiness() -> Readiness {
    Readiness {
        ready: false,
        code: code::LIMITED_CONNECTIVITY,
        reasons: vec!["vxlan device missing".into()],
    }
}

/// A valid body of every answer type the plugin and netctl decode, as the agent writes
/// it. Bytes rather than [`Value`]s: an IPv6 pool's counts are u128s past what a
/// `Value` holds.
fn answers() -> Vec<Vec<u8>> {
    fn bytes<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("API types serialise")
    }
    vec![
        bytes(&AddResponse {
            interfaces: vec![
                InterfaceInfo {
                    name: "strait1a2b".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: None,
                    mtu: Some(1450),
                },
                InterfaceInfo {
                    name: "eth0".into(),
                    mac: "02:42:0a:01:00:05".into(),
                    sandbox: Some("/var/run/netns/x".into()),
                    mtu: None,
                },
            ],
            ips: vec![IpInfo {
                address: "10.1.0.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: 1,
            }],
            routes: vec![RouteInfo {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            mtu: 1450,
        }),
        bytes(&GcResponse {
            released: vec![attachment()],
            errors: vec!["veth busy".into()],
        }),
        bytes(&readiness()),
        bytes(&AgentStatus {
            node: "n1".into(),
            version: "0.1.0".into(),
            store: "embedded".into(),
            state_dir: "/var/lib/strait".into(),
            uptime_secs: 5,
            mtu: 1450,
            endpoints: Some(1),
            pools: vec!["10.1.0.0/16".parse().unwrap()],
            readiness: readiness(),
            fast_path: Some(FastPathStatus {
                mode: FastPathMode::Auto,
                active: true,
                reason: None,
                fabric_device: Some("strait.vxlan".into()),
                endpoints: 1,
                tunnels: 2,
                to_fabric: 10,
                to_endpoint: 9,
                to_stack: 1,
                by_reason: [("pass_no_entry".to_string(), 1)].into(),
            }),
            ipsec: Some(strait_api::IpsecSummary {
                mode: strait_api::ipsec::IpsecMode::CrossSite,
                datapath: "userspace".into(),
                reason: Some("kernel has no ESP".into()),
                peers: 2,
                peers_up: 1,
            }),
        }),
        bytes(&vec![Endpoint {
            id: "e1".into(),
            node: "n1".into(),
            network: "net".into(),
            container_id: "c0ffee01".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            host_ifname: "strait1a2b".into(),
            mac: "02:42:0a:01:00:05".into(),
            host_mac: "ee:ee:ee:ee:ee:ee".into(),
            ips: vec!["10.1.0.5/32".parse().unwrap()],
            mtu: 1450,
            namespace: "ns1".into(),
            pod: Some("p".into()),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            named_ports: vec![strait_api::NamedPort {
                name: "http".into(),
                protocol: strait_policy::ir::Protocol::TCP,
                port: 8080,
            }],
            identity: Some(7),
            handle: "h1".into(),
            created: 1_700_000_000,
            host_ports: true,
            port_mappings: Vec::new(),
        }]),
        bytes(&IpamView {
            pools: vec![PoolView {
                cidr: "fd00::/48".parse().unwrap(),
                block_prefix: 122,
                size: 1 << 80,
                usable: (1 << 80) - 1,
                used: 3,
                blocks_claimed: 1,
                blocks_total: 1 << 74,
                disabled: false,
            }],
            blocks: vec![BlockView {
                cidr: "fd00::/122".parse().unwrap(),
                affinity: Some("n1".into()),
                used: 3,
                size: 64,
                lent: vec![("fd00::5".parse().unwrap(), "n2".into())],
            }],
        }),
        bytes(&report()),
        bytes(&ReleaseResponse {
            released: vec!["h1".into()],
            skipped: vec!["h2".into()],
        }),
        bytes(
            &ApiError::new(code::POOL_EXHAUSTED, "no free address")
                .with_details("pool 10.1.0.0/16"),
        ),
    ]
}

/// Values of every JSON type, and the numbers at the edges of the types parsed into,
/// put at every key of the valid requests and answers (each member is also removed).
fn wrong_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(4294967296u64),
        json!(""),
        json!("x"),
        json!("\u{0}"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"": null}),
        json!({"kind": "duplicate_ip"}),
    ]
}

/// JSON that no value can express: syntax, nesting past serde_json's recursion limit
/// (128), numbers past every integer type, broken encodings, duplicate keys.
fn json_edge_cases() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b" ".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"{".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"{}\0".to_vec(),
        b"{}{}".to_vec(),
        br#"{"network":"a","network":"b"}"#.to_vec(),
        br#"{"network":"a\ud800"}"#.to_vec(),
        br#"{"network":"a\u0000"}"#.to_vec(),
        b"{\"network\":\"\xff\xfe\"}".to_vec(),
        br#"{"report":{"revision":1e400,"grace_secs":-0,"issues":[]}}"#.to_vec(),
        br#"{"report":{"revision":-9223372036854775809,"grace_secs":18446744073709551616,"issues":[]}}"#.to_vec(),
        br#"{"report":{"revision":1,"grace_secs":1,"issues":[{"kind":"leaked_handle","kind":"duplicate_ip"}]}}"#.to_vec(),
        br#"{"report":{"revision":1,"grace_secs":1,"issues":[{"kind":"no_such_kind"}]}}"#.to_vec(),
        br#"{"report":{"revision":1,"grace_secs":1,"issues":[{"ip":"10.0.0.1","handles":[],"kind":"duplicate_ip"}]}}"#.to_vec(),
        br#"{"pools":[{"cidr":"10.0.0.0/8","block_prefix":26,"size":340282366920938463463374607431768211455,"used":340282366920938463463374607431768211456,"blocks_claimed":0,"blocks_total":1}],"blocks":[]}"#.to_vec(),
    ];
    for depth in [64, 127, 128, 129, 100_000] {
        out.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
        out.push(
            format!(
                r#"{{"network":{}0{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes(),
        );
        // The tagged enum buffers its fields before it knows the variant: a second
        // recursion over what serde_json accepted.
        out.push(
            format!(
                r#"{{"report":{{"revision":1,"grace_secs":1,"issues":[{{"x":{}0{},"kind":"duplicate_ip"}}]}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes(),
        );
    }
    out.push("[".repeat(100_000).into_bytes());
    out
}

/// Raw HTTP responses: framing the client must get right or refuse.
fn http_edge_cases() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        &b""[..],
        b"\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 99999 X\r\n\r\n",
        b"HTTP/1.1 -200 X\r\n\r\n",
        b"HTTP/1.1 +200 X\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length:2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n:\r\n\r\n{}",
        b"HTTP/1.1 200 \xff\xfe\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX: \xc3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffe\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\xff\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 500 Internal\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 500 Internal\r\n\r\nnot json \xff",
        b"HTTP/1.1 503 X\r\n\r\n{\"code\":11,\"message\":\"starting\"}",
        b"HTTP/1.1 503 X\r\n\r\n{\"code\":-1,\"message\":5}",
        b"HTTP/1.1 503 X\r\n\r\n{\"code\":4294967296,\"message\":\"m\",\"details\":null}",
        b"HTTP/1.1 200 OK\r\n\r\n\0",
    ]
    .iter()
    .map(|r| r.to_vec())
    .collect();
    // Many chunks, many headers: the parser walks both one at a time.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..10_000 {
        chunked.extend_from_slice(b"1\r\n \r\n");
    }
    chunked.extend_from_slice(b"2\r\n{}\r\n0\r\n\r\n");
    out.push(chunked);
    let headers = "X-A: b\r\n".repeat(10_000);
    out.push(format!("HTTP/1.1 200 OK\r\n{headers}\r\n{{}}").into_bytes());
    out
}

/// `body` as the agent sends it: status line, Content-Length or chunked framing.
fn framed(status: u16, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n").into_bytes();
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        for piece in body.chunks(7) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
    out
}

// ===== the targets =====

#[test]
fn api_requests() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for request in requests() {
        seeds.push(request.to_string().into_bytes());
        seeds.extend(wrong_type_at_every_key(
            &request,
            &wrong_values(),
            Members::AlsoRemove,
        ));
    }
    seeds.extend(json_edge_cases());
    run(fuzzing::requests, seeds, 0x5eed_0004);
}

#[test]
fn api_http_response() {
    let mut seeds = http_edge_cases();
    let mut bodies = answers();
    for answer in answers() {
        // A few wrong types per answer is plenty here: api_requests covers the JSON
        // side, this target the framing around it. (u128 counts come back as floats
        // in a Value; as seeds for mutation that is fine.)
        let answer: Value = serde_json::from_slice(&answer).expect("answers are JSON");
        bodies.extend(
            wrong_type_at_every_key(&answer, &wrong_values(), Members::AlsoRemove)
                .into_iter()
                .step_by(7),
        );
    }
    bodies.extend(json_edge_cases());
    for (i, body) in bodies.iter().enumerate() {
        let status = [200, 200, 503, 400, 500][i % 5];
        seeds.push(framed(status, body, i % 2 == 1));
    }
    run(fuzzing::http_response, seeds, 0x5eed_0005);
}

#[test]
fn docker_requests() {
    let mut seeds: Vec<Vec<u8>> = vec![Vec::new()];
    for (_, _, request) in common::docker_captures() {
        if request.is_null() {
            continue;
        }
        seeds.push(request.to_string().into_bytes());
        seeds.extend(wrong_type_at_every_key(
            &request,
            &wrong_values(),
            Members::AlsoRemove,
        ));
    }
    seeds.extend(json_edge_cases());
    run(fuzzing::docker_requests, seeds, 0x5eed_0006);
}

/// Valid external peers of every shape: a PSK in the store or in a file, certificates,
/// BGP, identities of each kind.
fn gateway_peers() -> Vec<Value> {
    vec![
        json!({"name": "onprem", "site": "dc", "address": "198.51.100.7",
               "auth": {"method": "psk", "secret": "correct horse battery"},
               "remote_id": "fqdn:gw.onprem.example",
               "remote_networks": ["192.168.50.0/24"]}),
        json!({"name": "nat-ed", "site": "dc", "initiate": "peer",
               "auth": {"method": "psk", "secret_file": "/etc/strait/nat.psk"},
               "local_id": "ipv4:10.0.0.1", "local_networks": ["10.50.0.0/16"],
               "remote_networks": ["172.16.0.0/12", "fd00:9::/48"]}),
        json!({"name": "cloud", "site": "eu-1", "address": "2001:db8::9", "initiate": "strait",
               "auth": {"method": "cert", "cert_file": "/etc/strait/gw.pem",
                        "key_file": "/etc/strait/gw.key", "ca_file": "/etc/strait/ca.pem"},
               "remote_id": "dn:CN=vpn.cloud.example,O=Cloud",
               "bgp": {"address": "10.9.0.1", "asn": 64600}}),
    ]
}

#[test]
fn gateway_peer_documents() {
    let peers = gateway_peers();
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for p in &peers {
        seeds.push(p.to_string().into_bytes());
        seeds.push(serde_yaml_ng::to_string(p).unwrap().into_bytes());
        seeds.extend(wrong_type_at_every_key(
            p,
            &wrong_values(),
            Members::AlsoRemove,
        ));
    }
    seeds.push(Value::Array(peers.clone()).to_string().into_bytes());
    let yaml: Vec<String> = peers
        .iter()
        .map(|p| serde_yaml_ng::to_string(p).unwrap())
        .collect();
    seeds.push(yaml.join("---\n").into_bytes());
    seeds.push(format!("---\n{}---\n", yaml[0]).into_bytes());
    seeds.push(b"- name: a\n- [1, 2]\n".to_vec());
    seeds.push(b"name: a\nname: b\n".to_vec());
    seeds.push(b"&a [*a]\n".to_vec());
    seeds.extend(json_edge_cases());
    run(fuzzing::peer_documents, seeds, 0x5eed_0007);
}
