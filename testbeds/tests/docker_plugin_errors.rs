//! Bad input to the Docker plugin, straight on its socket (no dockerd): raw HTTP/1.1
//! POSTs as dockerd sends them, to a real `straitd --docker-plugin` in a test host.
//!
//! Malformed JSON, unknown networks and endpoints, a pool overlapping another
//! network's, a pool outside every strait pool, and requests for a network that is
//! gone all answer an error in the form dockerd reads (`{"Err": "..."}` from the
//! network driver, `{"Error": "..."}` from the IPAM driver, or a non-200 status), and
//! afterwards nothing is allocated: `netctl ipam check` is clean,
//! no address is used, no endpoint is listed. `Plugin.Activate` with an empty body
//! names both interfaces.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use strait_testbeds::docker::{netctl, netctl_json};
use strait_testbeds::host::Host;
use strait_testbeds::require_root;

const POOLS: &[&str] = &["10.86.0.0/16", "fd00:86::/48"];

/// A host whose agent serves the plugin at `<dir>/strait.sock`; dockerd's API socket
/// it is given does not exist (nothing here needs names from dockerd).
struct Bed {
    // Drop order: the host (agent) before the dir holding its plugin socket.
    host: Host,
    plugin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-plug-", strait_testbeds::unique_prefix()))
            .tempdir()
            .expect("temp dir");
        let plugin = dir.path().join("strait.sock");
        let no_docker = dir.path().join("no-docker.sock");
        let host = Host::with_opts(
            |o| {
                o.extra.extend([
                    "--docker-plugin".to_string(),
                    "--docker-plugin-socket".to_string(),
                    plugin.to_string_lossy().into_owned(),
                    "--docker-host".to_string(),
                    no_docker.to_string_lossy().into_owned(),
                ]);
            },
            POOLS,
        );
        // Ready means every socket the agent was told to serve is bound: dockerd (or
        // a script) started after readiness must find the plugin.
        assert!(
            UnixStream::connect(&plugin).is_ok(),
            "the agent says ready but its plugin socket {} does not accept",
            plugin.display()
        );
        Self {
            host,
            plugin,
            _dir: dir,
        }
    }

    fn post(&self, method: &str, body: &[u8]) -> Reply {
        post(&self.plugin, method, body)
    }

    fn post_json(&self, method: &str, body: Value) -> Reply {
        self.post(method, body.to_string().as_bytes())
    }

    /// Nothing allocated, no endpoint, `netctl ipam check` clean, no `strait*` link.
    fn assert_nothing_allocated(&self, what: &str) {
        let sock = &self.host.agent.socket;
        let eps = netctl_json(sock, &["endpoints"]);
        assert_eq!(eps.as_array().map(Vec::len), Some(0), "{what}: {eps:#}");
        let (ok, out, err) = netctl(sock, &["ipam", "check"]);
        assert!(ok, "{what}: netctl ipam check: {out}{err}");
        assert_eq!(
            self.host.used_addresses(),
            0,
            "{what}: {:#?}",
            self.host.ipam()
        );
        let links = self.host.wait_no_strait_links();
        assert!(links.is_empty(), "{what}: links left: {links:?}");
    }
}

/// One HTTP answer to `method`.
#[derive(Debug)]
struct Reply {
    method: String,
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The error dockerd reads from this answer, if any, decoded as dockerd 20.10
    /// decodes it: a non-200 answer is an error, its text the body's `Err` (or the
    /// whole body); a 200 answer is an error when it carries a non-empty `Err`
    /// (NetworkDriver: libnetwork's remote driver `Response{Err}`) or `Error`
    /// (IpamDriver: libnetwork's remote IPAM `Response{Error}`; an `Err` there is
    /// ignored, and dockerd goes on with the empty answer).
    fn err(&self) -> Option<String> {
        let v: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        if self.status != 200 {
            let text = v["Err"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| self.body.clone());
            return Some(text).filter(|t| !t.trim().is_empty());
        }
        let field = if self.method.starts_with("IpamDriver.") {
            "Error"
        } else {
            "Err"
        };
        v[field]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(String::from)
    }
}

/// `POST /<method>` with `body` over the plugin's unix socket, as dockerd sends it
/// (its `Accept` header, an empty `Host`). A small HTTP/1.1 client: one request per
/// connection, `Content-Length` or chunked answers.
fn post(socket: &Path, method: &str, body: &[u8]) -> Reply {
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /{method} HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n\
         Accept: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut raw = vec![];
    s.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method}: no HTTP answer: {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method}: bad status line: {head}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        method: method.to_string(),
        status,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The answer is an error dockerd shows its user (see [`Reply::err`]); its text.
fn expect_err(r: &Reply, what: &str) -> String {
    r.err().unwrap_or_else(|| {
        panic!(
            "{what}: dockerd would not see an error in {} {}",
            r.status, r.body
        )
    })
}

/// The answer is a success: 200 and neither `Err` nor `Error`.
fn expect_ok(r: &Reply, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let v = r.json();
    for field in ["Err", "Error"] {
        assert!(
            v[field].as_str().is_none_or(str::is_empty),
            "{what}: {}",
            r.body
        );
    }
    v
}

fn hex_id(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

/// The address space the plugin's IPAM names for local networks.
fn address_space(bed: &Bed) -> String {
    let v = expect_ok(
        &bed.post("IpamDriver.GetDefaultAddressSpaces", b""),
        "GetDefaultAddressSpaces",
    );
    v["LocalDefaultAddressSpace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no LocalDefaultAddressSpace: {v}"))
        .to_string()
}

/// RequestPool for `pool`, a gateway address, and CreateNetwork `id` on it, as dockerd
/// does for `docker network create -d strait --ipam-driver strait --subnet POOL`.
/// Returns the PoolID and the gateway address (with its length).
fn create_network(bed: &Bed, id: &str, space: &str, pool: &str) -> (String, String) {
    let v = expect_ok(
        &bed.post_json(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": space, "Pool": pool, "SubPool": "", "Options": {}, "V6": false}),
        ),
        "RequestPool",
    );
    let pool_id = v["PoolID"].as_str().expect("PoolID").to_string();
    let v = expect_ok(
        &bed.post_json(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "",
                   "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        ),
        "RequestAddress (gateway)",
    );
    let gateway = v["Address"].as_str().expect("gateway Address").to_string();
    expect_ok(
        &bed.post_json(
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": id,
                   "Options": {"com.docker.network.enable_ipv6": false,
                               "com.docker.network.generic": {}},
                   "IPv4Data": [{"AddressSpace": space, "Gateway": gateway, "Pool": pool}],
                   "IPv6Data": []}),
        ),
        "CreateNetwork",
    );
    (pool_id, gateway)
}

/// DeleteNetwork, ReleaseAddress of the gateway, ReleasePool: dockerd's order.
fn delete_network(bed: &Bed, id: &str, pool_id: &str, gateway: &str) {
    expect_ok(
        &bed.post_json("NetworkDriver.DeleteNetwork", json!({"NetworkID": id})),
        "DeleteNetwork",
    );
    let gw = gateway.split('/').next().unwrap_or(gateway);
    expect_ok(
        &bed.post_json(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool_id, "Address": gw}),
        ),
        "ReleaseAddress (gateway)",
    );
    expect_ok(
        &bed.post_json("IpamDriver.ReleasePool", json!({"PoolID": pool_id})),
        "ReleasePool",
    );
}

fn endpoint_body(net: &str, ep: &str, addr: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep,
           "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": "02:42:0a:56:14:05"},
           "Options": {"com.docker.network.endpoint.exposedports": [],
                       "com.docker.network.portmap": []}})
}

macro_rules! privileged {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

#[test]
fn docker_plugin_activate_names_both_interfaces() {
    privileged!("docker_plugin_activate_names_both_interfaces");
    let bed = Bed::new();
    let v = expect_ok(&bed.post("Plugin.Activate", b""), "Plugin.Activate");
    let mut implements: Vec<&str> = v["Implements"]
        .as_array()
        .unwrap_or_else(|| panic!("no Implements: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    implements.sort();
    assert_eq!(implements, ["IpamDriver", "NetworkDriver"], "{v}");
    // The other body-less requests dockerd sends after activation.
    for m in [
        "NetworkDriver.GetCapabilities",
        "IpamDriver.GetCapabilities",
    ] {
        expect_ok(&bed.post(m, b""), m);
    }
    address_space(&bed);
}

#[test]
fn docker_plugin_malformed_json_is_refused() {
    privileged!("docker_plugin_malformed_json_is_refused");
    let bed = Bed::new();
    // Not JSON at all, for every method; then, per method, JSON whose fields have
    // the wrong types (what a decoder must refuse, not read as an empty request).
    let broken: &[&[u8]] = &[b"{", b"not json", b"\xff\xfe", b"{\"a\": }"];
    let mistyped: &[(&str, &str)] = &[
        ("NetworkDriver.CreateNetwork", r#"{"NetworkID": 5}"#),
        (
            "NetworkDriver.CreateEndpoint",
            r#"{"NetworkID": "x", "EndpointID": ["y"]}"#,
        ),
        (
            "NetworkDriver.Join",
            r#"{"NetworkID": "x", "EndpointID": "y", "SandboxKey": 7}"#,
        ),
        (
            "IpamDriver.RequestPool",
            r#"{"AddressSpace": "x", "Pool": 10, "V6": "no"}"#,
        ),
        (
            "IpamDriver.RequestAddress",
            r#"{"PoolID": 5, "Address": ""}"#,
        ),
    ];
    for (m, body) in mistyped {
        for b in broken.iter().copied().chain([body.as_bytes()]) {
            let r = bed.post(m, b);
            expect_err(&r, &format!("{m} {:?}", String::from_utf8_lossy(b)));
        }
    }
    // The socket still serves.
    expect_ok(&bed.post("Plugin.Activate", b""), "Plugin.Activate after");
    bed.assert_nothing_allocated("after malformed requests");
}

#[test]
fn docker_plugin_unknown_network_and_endpoint() {
    privileged!("docker_plugin_unknown_network_and_endpoint");
    let bed = Bed::new();
    let (net, ep) = (hex_id(0xa1), hex_id(0xb1));
    let r = bed.post_json(
        "NetworkDriver.CreateEndpoint",
        endpoint_body(&net, &ep, "10.86.1.5/24"),
    );
    expect_err(&r, "CreateEndpoint on an unknown network");
    let join = json!({"NetworkID": net, "EndpointID": ep,
                      "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": {}});
    expect_err(
        &bed.post_json("NetworkDriver.Join", join.clone()),
        "Join on an unknown network",
    );
    // A known network, an unknown endpoint.
    let space = address_space(&bed);
    let known = hex_id(0xa2);
    let (pool_id, gw) = create_network(&bed, &known, &space, "10.86.10.0/24");
    let mut join_known = join.clone();
    join_known["NetworkID"] = json!(known);
    expect_err(
        &bed.post_json("NetworkDriver.Join", join_known),
        "Join of an unknown endpoint",
    );
    // Leave and DeleteEndpoint of an unknown endpoint may succeed (idempotent), as
    // long as they leave nothing behind.
    for m in ["NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"] {
        for n in [&net, &known] {
            let r = bed.post_json(m, json!({"NetworkID": n, "EndpointID": ep}));
            if r.err().is_none() {
                expect_ok(&r, m);
            }
        }
    }
    delete_network(&bed, &known, &pool_id, &gw);
    bed.assert_nothing_allocated("after unknown networks and endpoints");
}

#[test]
fn docker_plugin_pool_overlapping_or_outside_is_refused() {
    privileged!("docker_plugin_pool_overlapping_or_outside_is_refused");
    let bed = Bed::new();
    let space = address_space(&bed);
    let net = hex_id(0xc1);
    let (pool_id, gw) = create_network(&bed, &net, &space, "10.86.20.0/24");
    for overlap in ["10.86.20.0/24", "10.86.20.128/25", "10.86.0.0/19"] {
        let r = bed.post_json(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": space, "Pool": overlap, "SubPool": "", "Options": {},
                   "V6": false}),
        );
        expect_err(&r, &format!("RequestPool {overlap} over 10.86.20.0/24"));
    }
    for outside in ["192.168.99.0/24", "10.87.0.0/24", "fd00:99::/64"] {
        let r = bed.post_json(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": space, "Pool": outside, "SubPool": "", "Options": {},
                   "V6": outside.contains(':')}),
        );
        let e = expect_err(&r, &format!("RequestPool {outside}"));
        assert!(
            e.contains("outside every strait pool"),
            "RequestPool {outside}: unclear error: {e}"
        );
    }
    // The network's own pool still serves.
    let v = expect_ok(
        &bed.post_json(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "", "Options": {}}),
        ),
        "RequestAddress in the first pool",
    );
    let addr = v["Address"].as_str().expect("Address").to_string();
    assert!(addr.starts_with("10.86.20."), "{addr}");
    expect_ok(
        &bed.post_json(
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool_id, "Address": addr.split('/').next().unwrap()}),
        ),
        "ReleaseAddress",
    );
    delete_network(&bed, &net, &pool_id, &gw);
    bed.assert_nothing_allocated("after refused pools");
}

#[test]
fn docker_plugin_requests_after_the_network_is_gone() {
    privileged!("docker_plugin_requests_after_the_network_is_gone");
    let bed = Bed::new();
    let space = address_space(&bed);
    let net = hex_id(0xd1);
    let (pool_id, gw) = create_network(&bed, &net, &space, "10.86.30.0/24");
    delete_network(&bed, &net, &pool_id, &gw);
    let ep = hex_id(0xe1);
    expect_err(
        &bed.post_json(
            "NetworkDriver.CreateEndpoint",
            endpoint_body(&net, &ep, "10.86.30.5/24"),
        ),
        "CreateEndpoint after DeleteNetwork",
    );
    expect_err(
        &bed.post_json(
            "NetworkDriver.Join",
            json!({"NetworkID": net, "EndpointID": ep,
                   "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": {}}),
        ),
        "Join after DeleteNetwork",
    );
    expect_err(
        &bed.post_json(
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "", "Options": {}}),
        ),
        "RequestAddress after ReleasePool",
    );
    bed.assert_nothing_allocated("after requests for a gone network");
    // The pool is free again: a new network may have it.
    let net2 = hex_id(0xd2);
    let (pool2, gw2) = create_network(&bed, &net2, &space, "10.86.30.0/24");
    delete_network(&bed, &net2, &pool2, &gw2);
    bed.assert_nothing_allocated("after the second network");
}
