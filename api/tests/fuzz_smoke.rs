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

/// Mutations per target; with the seeds, a second or two in a debug build.
const MUTATIONS: usize = 3000;

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
            labels: BTreeMap::from([("K8S_POD_NAME".into(), "p".into())]),
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
            endpoints: 1,
            pools: vec!["10.1.0.0/16".parse().unwrap()],
            readiness: readiness(),
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
            labels: BTreeMap::from([("app".into(), "web".into())]),
            handle: "h1".into(),
            created: 1_700_000_000,
        }]),
        bytes(&IpamView {
            pools: vec![PoolView {
                cidr: "fd00::/48".parse().unwrap(),
                block_prefix: 122,
                size: 1 << 80,
                used: 3,
                blocks_claimed: 1,
                blocks_total: 1 << 74,
            }],
            blocks: vec![BlockView {
                cidr: "fd00::/122".parse().unwrap(),
                affinity: Some("n1".into()),
                used: 3,
                size: 64,
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

/// Values of every JSON type, and the numbers at the edges of the types parsed into.
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

/// `base` with each node in turn (object members and list items, at any depth)
/// replaced by each of [`wrong_values`], and with each object member removed.
fn wrong_type_at_every_key(base: &Value) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut paths = Vec::new();
    collect_paths(base, &mut Vec::new(), &mut paths);
    for path in &paths {
        for wrong in wrong_values() {
            let mut v = base.clone();
            if let Some(slot) = pointer_mut(&mut v, path) {
                *slot = wrong;
            }
            out.push(v.to_string().into_bytes());
        }
        let (last, parent) = path.split_last().expect("paths are not empty");
        let mut v = base.clone();
        if let Some(Value::Object(m)) = pointer_mut(&mut v, parent) {
            m.remove(last);
            out.push(v.to_string().into_bytes());
        }
    }
    out
}

fn collect_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        prefix.push(key);
        out.push(prefix.clone());
        collect_paths(child, prefix, out);
        prefix.pop();
    }
}

fn pointer_mut<'a>(mut v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get_mut(key)?,
            Value::Array(a) => a.get_mut(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
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

// ===== mutations =====

/// xorshift64*: tiny, seeded, the same sequence on every machine. (cni/tests/fuzz_smoke.rs
/// has the same one; the crates share no test code.)
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small; the modulo bias does not matter for picking mutations.
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes a mutation likes to insert: JSON and HTTP syntax, NUL, non-UTF-8, digits.
const INTERESTING: &[u8] = b"{}[]\":,;\r\n\\/.-0129afE+ \0\x7f\x80\xc3\xff";

fn mutations(seeds: &[Vec<u8>], count: usize, rng_seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(rng_seed);
    (0..count)
        .map(|_| {
            let mut data = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                mutate(&mut data, seeds, &mut rng);
            }
            data
        })
        .collect()
}

fn mutate(data: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    let len = data.len();
    match rng.below(7) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n)
                .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                .collect();
            data.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            data.drain(start..end);
        }
        4 => data.truncate(rng.below(len + 1)),
        5 if len > 0 => {
            // Repeat a slice: grows lists, nesting and chunk runs.
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            let piece = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        _ => {
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
    }
}

/// Inputs above this size run once but are not mutated: they are there for their size.
const MUTATE_MAX: usize = 16 * 1024;

fn smoke(body: fn(&[u8]), seeds: Vec<Vec<u8>>, rng_seed: u64) {
    for seed in &seeds {
        body(seed);
    }
    let small: Vec<Vec<u8>> = seeds
        .into_iter()
        .filter(|s| s.len() <= MUTATE_MAX)
        .collect();
    for input in mutations(&small, MUTATIONS, rng_seed) {
        body(&input);
    }
}

// ===== the targets =====

#[test]
fn api_requests() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for request in requests() {
        seeds.push(request.to_string().into_bytes());
        seeds.extend(wrong_type_at_every_key(&request));
    }
    seeds.extend(json_edge_cases());
    smoke(fuzzing::requests, seeds, 0x5eed_0004);
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
        bodies.extend(wrong_type_at_every_key(&answer).into_iter().step_by(7));
    }
    bodies.extend(json_edge_cases());
    for (i, body) in bodies.iter().enumerate() {
        let status = [200, 200, 503, 400, 500][i % 5];
        seeds.push(framed(status, body, i % 2 == 1));
    }
    smoke(fuzzing::http_response, seeds, 0x5eed_0005);
}
