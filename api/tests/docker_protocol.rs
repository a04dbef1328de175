//! The remote driver protocol's types against every request dockerd 20.10 sent in
//! captured scenarios (tests/fixtures/docker-plugin: activation, run/rm, static IP and
//! MAC with `-p` and an alias, connect/disconnect, network rm, strait-style IPAM with
//! and without a subnet, IPv6, joins with and without a gateway). Each body must decode
//! as the type of the method it was sent to, and what the driver reads from it must
//! be there.

use serde_json::Value;
use strait_api::docker::*;

mod common;

use common::docker_captures as captures;

fn body(v: &Value) -> Vec<u8> {
    if v.is_null() {
        Vec::new()
    } else {
        v.to_string().into_bytes()
    }
}

#[test]
fn every_captured_request_decodes_as_its_method_type() {
    let all = captures();
    assert!(
        all.len() >= 90,
        "expected the whole capture set, found {}",
        all.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for (file, path, req) in &all {
        let b = body(req);
        let what = format!("{} ({path})", file.display());
        seen.insert(path.clone());
        match path.as_str() {
            "/Plugin.Activate"
            | "/NetworkDriver.GetCapabilities"
            | "/IpamDriver.GetCapabilities"
            | "/IpamDriver.GetDefaultAddressSpaces" => {
                assert!(b.is_empty(), "{what}: dockerd sends these without a body");
                decode::<Value>(&b).expect(&what);
            }
            "/NetworkDriver.CreateNetwork" => {
                let r: CreateNetworkRequest = decode(&b).expect(&what);
                assert_eq!(r.network_id.len(), 64, "{what}");
                assert!(!r.ipv4_data.is_empty(), "{what}");
                assert!(r.ipv4_data[0].pool.contains('/'), "{what}");
                generic_options(&r.options).expect(&what);
                bool_option(&r.options, option::ENABLE_IPV6).expect(&what);
            }
            "/NetworkDriver.DeleteNetwork" => {
                let r: NetworkRequest = decode(&b).expect(&what);
                assert_eq!(r.network_id.len(), 64, "{what}");
            }
            "/NetworkDriver.CreateEndpoint" => {
                let r: CreateEndpointRequest = decode(&b).expect(&what);
                assert!(
                    r.interface.address.contains('/'),
                    "{what}: Docker gives the address with its prefix"
                );
                port_bindings(&r.options).expect(&what);
            }
            "/NetworkDriver.Join" => {
                let r: JoinRequest = decode(&b).expect(&what);
                assert!(r.sandbox_key.contains("/netns/"), "{what}");
                port_bindings(&r.options).expect(&what);
            }
            "/NetworkDriver.ProgramExternalConnectivity" => {
                let r: ExternalConnectivityRequest = decode(&b).expect(&what);
                port_bindings(&r.options).expect(&what);
            }
            "/NetworkDriver.EndpointOperInfo"
            | "/NetworkDriver.Leave"
            | "/NetworkDriver.DeleteEndpoint"
            | "/NetworkDriver.RevokeExternalConnectivity" => {
                let r: EndpointRequest = decode(&b).expect(&what);
                assert_eq!(r.endpoint_id.len(), 64, "{what}");
            }
            "/IpamDriver.RequestPool" => {
                let r: RequestPoolRequest = decode(&b).expect(&what);
                string_option(&r.options, option::STRAIT_POOL).expect(&what);
            }
            "/IpamDriver.RequestAddress" => {
                let r: RequestAddressRequest = decode(&b).expect(&what);
                assert!(!r.pool_id.is_empty(), "{what}");
                string_option(&r.options, option::REQUEST_ADDRESS_TYPE).expect(&what);
            }
            "/IpamDriver.ReleaseAddress" => {
                let r: ReleaseAddressRequest = decode(&b).expect(&what);
                assert!(!r.address.is_empty(), "{what}");
            }
            "/IpamDriver.ReleasePool" => {
                decode::<ReleasePoolRequest>(&b).expect(&what);
            }
            other => panic!("{what}: a method the driver does not route: {other}"),
        }
    }
    for m in [
        "/NetworkDriver.CreateNetwork",
        "/NetworkDriver.Join",
        "/IpamDriver.RequestPool",
    ] {
        assert!(seen.contains(m), "no capture of {m}");
    }
}

#[test]
fn the_published_port_of_the_capture_is_read_in_full() {
    let (_, _, req) = captures()
        .into_iter()
        .find(|(f, p, _)| {
            p == "/NetworkDriver.ProgramExternalConnectivity"
                && f.to_string_lossy().contains("02-two-containers")
        })
        .expect("capture with -p");
    let r: ExternalConnectivityRequest = decode(&body(&req)).expect("decode");
    let b = port_bindings(&r.options).expect("bindings");
    assert_eq!(
        b,
        vec![PortBinding {
            proto: 6,
            ip: String::new(),
            port: 80,
            host_ip: "127.0.0.1".into(),
            host_port: 18090,
            host_port_end: 18090,
        }]
    );
}

#[test]
fn the_gateway_request_is_told_apart() {
    let found = captures().into_iter().any(|(_, p, req)| {
        p == "/IpamDriver.RequestAddress"
            && decode::<RequestAddressRequest>(&body(&req))
                .ok()
                .and_then(|r| {
                    string_option(&r.options, option::REQUEST_ADDRESS_TYPE)
                        .ok()
                        .flatten()
                })
                .as_deref()
                == Some(option::GATEWAY_ADDRESS)
    });
    assert!(found);
}

#[test]
fn bad_bodies_are_errors_and_answers_have_docker_field_names() {
    assert!(decode::<CreateNetworkRequest>(b"{not json").is_err());
    assert!(decode::<JoinRequest>(br#"{"NetworkID": 5}"#).is_err());
    // Go's nil maps and slices.
    let r: CreateEndpointRequest =
        decode(br#"{"NetworkID":"n","EndpointID":"e","Interface":null,"Options":null}"#)
            .expect("nulls");
    assert!(r.interface.is_empty());
    let j = serde_json::to_value(JoinResponse {
        interface_name: Some(InterfaceName {
            src_name: "stp1".into(),
            dst_prefix: "eth".into(),
        }),
        gateway: "169.254.1.1".into(),
        gateway_ipv6: String::new(),
        static_routes: vec![StaticRoute {
            destination: "169.254.1.1/32".into(),
            route_type: ROUTE_CONNECTED,
            next_hop: String::new(),
        }],
        disable_gateway_service: false,
    })
    .expect("json");
    assert_eq!(
        j,
        serde_json::json!({
            "InterfaceName": {"SrcName": "stp1", "DstPrefix": "eth"},
            "Gateway": "169.254.1.1",
            "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}]
        })
    );
    assert_eq!(
        serde_json::to_value(ErrorResponse { err: "x".into() }).expect("json"),
        serde_json::json!({"Err": "x"})
    );
}
