//! The fuzz targets' bodies (`strait_cni::fuzzing`, run by `fuzz/` under libFuzzer) on
//! a fixed, deterministic set of inputs, so every `cargo test` covers what the fuzzer
//! covers on a stable toolchain: every runtime capture in `tests/fixtures`, hand-made
//! edge cases, and seeded pseudo-random mutations of both. The bodies panic on a
//! finding; nothing else is asserted here.

mod common;

use serde_json::{Value, json};
use strait_cni::fuzzing;
use strait_fuzz_smoke::{self as smoke, Members, Mutations};

/// Mutations per target. With the seeds, this keeps the whole file to a few seconds in
/// a debug build.
const MUTATIONS: usize = 3000;

/// Bytes a mutation likes to insert: JSON and env syntax, NUL, non-UTF-8, digits.
const INTERESTING: &[u8] = b"{}[]\":,=;\n\\/.-0129aeE+\0\x7f\x80\xc3\xff";

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

/// The ENV section of every capture, in the `KEY=VALUE` lines the env target reads.
fn capture_envs() -> Vec<Vec<u8>> {
    common::captures()
        .iter()
        .map(|c| {
            c.env
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>()
                .into_bytes()
        })
        .collect()
}

/// The stdin of every capture, as the runtime sent it.
fn capture_stdins() -> Vec<Vec<u8>> {
    common::captures()
        .into_iter()
        .map(|c| c.stdin.into_bytes())
        .collect()
}

/// Every prevResult in the captures.
fn capture_prev_results() -> Vec<Vec<u8>> {
    common::captures()
        .iter()
        .filter_map(|c| serde_json::from_str::<Value>(&c.stdin).ok())
        .filter_map(|v| v.get("prevResult").map(Value::to_string))
        .map(String::into_bytes)
        .collect()
}

fn env_edge_cases() -> Vec<Vec<u8>> {
    let attach =
        "CNI_CONTAINERID=c1\nCNI_NETNS=/run/netns/x\nCNI_IFNAME=eth0\nCNI_PATH=/opt/cni/bin\n";
    let mut out: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\n\n\n".to_vec(),
        b"=".to_vec(),
        b"CNI_COMMAND".to_vec(),
        b"CNI_COMMAND=".to_vec(),
        b"CNI_COMMAND=add".to_vec(),
        b"CNI_COMMAND=ADD\0".to_vec(),
        b"CNI_COMMAND=\xff\xfe".to_vec(),
        // Duplicate keys.
        b"CNI_COMMAND=ADD\nCNI_COMMAND=FROB\nCNI_COMMAND=GC\nCNI_PATH=/x".to_vec(),
        // NULs, invalid UTF-8 and multi-byte characters in every value.
        b"CNI_COMMAND=ADD\nCNI_CONTAINERID=c\0d\nCNI_NETNS=\0\nCNI_IFNAME=eth\x000\nCNI_ARGS=IP=10.0.0.1\0".to_vec(),
        b"CNI_COMMAND=DEL\nCNI_CONTAINERID=\xc3\xa9\nCNI_IFNAME=\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac".to_vec(),
        b"CNI_COMMAND=CHECK\nCNI_CONTAINERID=\xff\nCNI_NETNS=\xff\nCNI_IFNAME=\xff".to_vec(),
        // Interface names around IFNAMSIZ, counted in bytes and in characters.
        format!("CNI_COMMAND=ADD\n{attach}CNI_IFNAME={}", "é".repeat(8)).into_bytes(),
        format!("CNI_COMMAND=ADD\n{attach}CNI_IFNAME={}", "a".repeat(15)).into_bytes(),
        format!("CNI_COMMAND=ADD\n{attach}CNI_IFNAME={}", "a".repeat(16)).into_bytes(),
        // Values as long as Linux lets one environment string be (MAX_ARG_STRLEN, 128 KiB
        // with the name).
        format!("CNI_COMMAND=ADD\n{attach}CNI_CONTAINERID={}", "f".repeat(MAX_ENV)).into_bytes(),
        format!("CNI_COMMAND=ADD\n{attach}CNI_ARGS={}", "K8S_X=y;".repeat(MAX_ENV / 8)).into_bytes(),
    ];
    for args in [
        "",
        ";;;",
        "=",
        "==",
        "IgnoreUnknown",
        "IgnoreUnknown=",
        "IgnoreUnknown=1;=;",
        "IgnoreUnknown=TRUE;FOO=1",
        "IP=",
        "IP=,,,",
        "IP=10.0.0.1/99",
        "IP=10.0.0.1/4294967296",
        "IP=::ffff:10.0.0.1/128,fe80::1%eth0",
        "IP=999.0.0.1",
        "MAC=",
        "MAC=::::",
        "MAC=-----",
        "MAC=02:42:0a:01:02:0é",
        "MAC=0:2:4:2:0:a:0:1:0:2",
        "MAC=02-42-0a:01-02:03",
        "K8S_=",
        "K8S_POD_NAME=a=b=c;K8S_POD_NAME=d",
    ] {
        out.push(format!("CNI_COMMAND=ADD\n{attach}CNI_ARGS={args}").into_bytes());
    }
    out.push(format!("CNI_COMMAND=ADD\n{attach}CNI_ARGS=IP={}", ip_list(5000)).into_bytes());
    out
}

/// Roughly the longest value Linux passes in one environment string.
const MAX_ENV: usize = 128 * 1024 - 16;

/// `n` distinct addresses, comma-separated: the static-IP lists deduplicate.
fn ip_list(n: usize) -> String {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255))
        .collect::<Vec<_>>()
        .join(",")
}

/// A config that uses every key the plugin reads, each with a valid value.
fn full_config() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "fuzznet",
        "type": "strait",
        "socket": "/run/strait/strait.sock",
        "stateDir": "/var/lib/strait",
        "mtu": 1450,
        "runtimeConfig": {
            "ips": ["10.1.2.3/24", "fd00::3"],
            "mac": "02:42:0a:01:02:03",
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
            ]
        },
        "args": {"cni": {
            "ips": ["10.1.2.4"],
            "labels": [{"key": "app", "value": "web"}]
        }},
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
        "cni.dev/attachments": [{"containerID": "c2", "ifname": "eth1"}],
        "prevResult": full_prev_result()
    })
}

fn full_prev_result() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "br0", "mac": "22:d1:86:67:ff:a4", "mtu": 1500},
            {"name": "eth0", "mac": "02:42:0a:01:02:03", "sandbox": "/var/run/netns/fuzz",
             "socketPath": "/x.sock"}
        ],
        "ips": [
            {"interface": 1, "address": "10.1.2.3/24", "gateway": "10.1.2.1", "version": "4"}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1", "table": 100}],
        "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]}
    })
}

/// Values of every JSON type, and the numbers at the edges of the types parsed into,
/// put at every key of a full config and prevResult.
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
        json!(65536),
        json!(""),
        json!("x"),
        json!("\u{0}"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"": null}),
    ]
}

/// `depth` nested lists, or objects under `key`, with `leaf` at the bottom.
fn nested(depth: usize, key: Option<&str>, leaf: &str) -> String {
    match key {
        None => format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth)),
        Some(k) => format!(
            "{}{leaf}{}",
            format!("{{\"{k}\":").repeat(depth),
            "}".repeat(depth)
        ),
    }
}

/// JSON edge cases that no value can express: syntax, nesting, numbers, encodings.
fn json_edge_cases(wrap: impl Fn(&str) -> String) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    // Nesting around serde_json's recursion limit (128) and far past it, in lists and
    // in objects, where the parsers keep unknown keys verbatim.
    for depth in [1, 64, 126, 127, 128, 129, 1000, 100_000] {
        out.push(wrap(&nested(depth, None, "0")).into_bytes());
        out.push(wrap(&nested(depth, Some("a"), "0")).into_bytes());
    }
    // Unterminated nesting.
    out.push(wrap(&"[".repeat(100_000)).into_bytes());
    out.push(wrap(&"{\"a\":".repeat(100_000)).into_bytes());
    for number in [
        "0",
        "-0",
        "1e400",
        "-1e400",
        "1e-400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.0000000000000000000000000000001",
        "1E+2",
        &"9".repeat(10_000),
    ] {
        out.push(wrap(number).into_bytes());
    }
    for string in [
        r#""""#,
        r#""\u0000""#,
        r#""\ud800""#,
        r#""\udc00\ud800""#,
        r#""\uZZZZ""#,
        "\"\u{0}\"",
        "\"\u{10ffff}\"",
    ] {
        out.push(wrap(string).into_bytes());
    }
    // Raw bytes that are not UTF-8 inside a string.
    let mut bad = wrap("\"X\"").into_bytes();
    if let Some(i) = bad.iter().position(|b| *b == b'X') {
        bad.splice(i..=i, [0xff, 0xfe, 0xc3]);
    }
    out.push(bad);
    out
}

fn netconf_edge_cases() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b" \n\t".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"{".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"{}\0".to_vec(),
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\"}{}".to_vec(),
        // Duplicate keys: which one wins decides the version and name.
        br#"{"cniVersion":"1.0.0","cniVersion":"0.1.0","name":"n","name":"m"}"#.to_vec(),
        br#"{"cniVersion":"1.1.0","name":"n","prevResult":{},"prevResult":{"ips":[{"address":"10.0.0.1/8"}]}}"#.to_vec(),
        br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["10.0.0.1"],"IPs":[5]}}"#.to_vec(),
        br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":1,"HostPort":"x","containerPort":2}]}}"#.to_vec(),
    ];
    let base = full_config();
    out.push(base.to_string().into_bytes());
    out.extend(smoke::wrong_type_at_every_key(
        &base,
        &wrong_values(),
        Members::Keep,
    ));
    for key in [
        "cniVersion",
        "mtu",
        "prevResult",
        "runtimeConfig",
        "args",
        "cni.dev/valid-attachments",
    ] {
        out.extend(json_edge_cases(|v| {
            format!(r#"{{"cniVersion":"1.1.0","name":"n","{key}":{v}}}"#)
        }));
    }
    // The same depths under keys the plugin reads further down.
    for depth in [127, 128] {
        out.push(
            format!(
                r#"{{"cniVersion":"1.1.0","name":"n","runtimeConfig":{{"portMappings":[{{"hostPort":1,"containerPort":2,"x":{}}}]}}}}"#,
                nested(depth, None, "0")
            )
            .into_bytes(),
        );
    }
    // Long lists of static addresses: they are deduplicated as they are merged.
    let ips = ip_list(5000)
        .split(',')
        .map(|ip| format!("\"{ip}\""))
        .collect::<Vec<_>>()
        .join(",");
    out.push(
        format!(r#"{{"cniVersion":"1.1.0","name":"n","runtimeConfig":{{"ips":[{ips}]}}}}"#)
            .into_bytes(),
    );
    out
}

fn prev_result_edge_cases() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"{}".to_vec(),
        b"null".to_vec(),
        br#"{"interfaces":null,"ips":null,"routes":null,"dns":null}"#.to_vec(),
        br#"{"ips":[{"interface":18446744073709551615,"address":"10.0.0.1/32"}]}"#.to_vec(),
        br#"{"ips":[{"interface":-1,"address":"10.0.0.1/32"}]}"#.to_vec(),
        br#"{"ips":[{"address":"10.0.0.1/33"}]}"#.to_vec(),
        br#"{"ips":[{"address":"10.0.0.1"}]}"#.to_vec(),
        br#"{"ips":[{"address":"::/0","version":"4"}]}"#.to_vec(),
        br#"{"interfaces":[{"name":"a","name":"b","mtu":1,"mtu":2}]}"#.to_vec(),
        br#"{"interfaces":[{"name":"eth0","sandbox":"/var/run/netns/fuzz","extra":1,"extra":2}]}"#.to_vec(),
        // Unknown keys that shadow rendered ones.
        br#"{"interfaces":[{"name":"eth0","cniVersion":"x","version":"9"}],"ips":[{"address":"10.0.0.1/8","interface":0,"version":{}}]}"#.to_vec(),
    ];
    let base = full_prev_result();
    out.extend(smoke::wrong_type_at_every_key(
        &base,
        &wrong_values(),
        Members::Keep,
    ));
    // Deep values where the decoder keeps unknown keys verbatim (serde's flatten
    // buffers them, a second recursion over what serde_json already accepted).
    for depth in [126, 127, 128] {
        for (list, key) in [("interfaces", "x"), ("ips", "x"), ("routes", "x")] {
            let leaf = nested(depth, None, "0");
            let entry = match list {
                "interfaces" => format!(r#"{{"name":"eth0","{key}":{leaf}}}"#),
                "ips" => format!(r#"{{"address":"10.0.0.1/8","{key}":{leaf}}}"#),
                _ => format!(r#"{{"dst":"0.0.0.0/0","{key}":{leaf}}}"#),
            };
            out.push(format!(r#"{{"{list}":[{entry}]}}"#).into_bytes());
        }
        out.push(format!(r#"{{"dns":{}}}"#, nested(depth, Some("a"), "0")).into_bytes());
    }
    out.extend(json_edge_cases(|v| {
        format!(r#"{{"ips":[{{"address":{v}}}]}}"#)
    }));
    out.extend(json_edge_cases(|v| {
        format!(r#"{{"interfaces":[{{"name":"eth0","k":{v}}}]}}"#)
    }));
    out
}

// ===== the targets =====

#[test]
fn cni_env_and_args() {
    let mut seeds = capture_envs();
    seeds.extend(env_edge_cases());
    run(fuzzing::env_and_args, seeds, 0x5eed_0001);
}

#[test]
fn cni_netconf() {
    let mut seeds = capture_stdins();
    seeds.extend(netconf_edge_cases());
    run(fuzzing::netconf, seeds, 0x5eed_0002);
}

#[test]
fn cni_prev_result() {
    let mut seeds = capture_prev_results();
    assert!(!seeds.is_empty(), "the captures hold prevResults");
    seeds.extend(prev_result_edge_cases());
    run(fuzzing::prev_result, seeds, 0x5eed_0003);
}
