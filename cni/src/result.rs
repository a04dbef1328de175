//! The ADD result: built from the agent's answer, merged after a `prevResult` when
//! strait is chained behind another plugin, and printed in the shape of the config's
//! `cniVersion` (spec §5 "ADD Success").
//!
//! One in-memory form covers every supported version; only [`CniResult::render`]
//! knows the differences:
//! - 0.3.0, 0.3.1, 0.4.0: each IP carries `"version": "4"|"6"`; no interface `mtu`;
//! - 1.0.0: no IP `version`; no interface `mtu`;
//! - 1.1.0: interface `mtu` where known.
//!
//! Keys of a `prevResult` this module does not model (`socketPath`, `pciID`, route
//! `table`/`scope`, the whole `dns` object…) are kept verbatim, since the spec says a
//! plugin must pass on what came before it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strait_api::AddResponse;

use crate::error::CniError;
use crate::version::CniVersion;

/// An interface of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An address of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// A 0.x prevResult's `"version"`; dropped on input because [`CniResult::render`]
    /// derives it from the address for the versions that want it.
    #[serde(default, skip_serializing)]
    version: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A result in the version-independent form.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Passed through untouched: strait adds no DNS settings of its own.
    #[serde(default)]
    pub dns: Map<String, Value>,
}

impl CniResult {
    /// Decode a `prevResult` (any supported version's shape).
    pub fn from_prev(prev: &Value) -> Result<Self, CniError> {
        let result = CniResult::deserialize(prev).map_err(|source| CniError::Decode {
            what: "prevResult",
            source,
        })?;
        Ok(result)
    }

    /// The result of strait's own ADD, from the agent's answer.
    ///
    /// The agent lists [host veth, container interface]. Should it leave every
    /// `sandbox` unset, the interface named `ifname` gets `netns`: runtimes find the
    /// container's interface by its sandbox.
    pub fn from_agent(resp: &AddResponse, ifname: &str, netns: &str) -> Result<Self, String> {
        let mut interfaces: Vec<Interface> = resp
            .interfaces
            .iter()
            .map(|i| Interface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                mtu: i.mtu.or(Some(resp.mtu)).filter(|m| *m != 0),
                sandbox: i.sandbox.clone().unwrap_or_default(),
                extra: Map::new(),
            })
            .collect();
        if interfaces.iter().all(|i| i.sandbox.is_empty())
            && let Some(i) = interfaces.iter_mut().rev().find(|i| i.name == ifname)
        {
            i.sandbox = netns.to_string();
        }
        let ips = resp
            .ips
            .iter()
            .map(|ip| {
                if ip.interface >= interfaces.len() {
                    return Err(format!(
                        "address {} names interface {} of {}",
                        ip.address,
                        ip.interface,
                        interfaces.len()
                    ));
                }
                Ok(IpConfig {
                    interface: Some(ip.interface),
                    address: ip.address,
                    gateway: ip.gateway,
                    version: None,
                    extra: Map::new(),
                })
            })
            .collect::<Result<_, _>>()?;
        let routes = resp
            .routes
            .iter()
            .map(|r| Route {
                dst: r.dst,
                gw: r.gw,
                extra: Map::new(),
            })
            .collect();
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns: Map::new(),
        })
    }

    /// Append `ours` after what an earlier plugin produced, moving our addresses'
    /// interface indexes past the earlier interfaces.
    pub fn chain(mut self, ours: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(ours.interfaces);
        self.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(ours.routes);
        // Earlier DNS settings stay; strait has none to add.
        self
    }

    /// Addresses this result put on the interface `ifname` inside `netns`: what CHECK
    /// asks the agent to verify.
    pub fn addresses_on(&self, ifname: &str, netns: &str) -> Vec<IpNet> {
        self.ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|i| {
                        i.name == ifname && (i.sandbox.is_empty() || i.sandbox == netns)
                    })
            })
            .map(|ip| ip.address)
            .collect()
    }

    /// The result as `version` spells it.
    pub fn render(&self, version: CniVersion) -> Rendered<'_> {
        Rendered {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| RenderedInterface {
                    name: &i.name,
                    mac: &i.mac,
                    mtu: i.mtu.filter(|_| version.interfaces_carry_mtu()),
                    sandbox: &i.sandbox,
                    extra: &i.extra,
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| RenderedIp {
                    version: version.ips_carry_version().then_some(match ip.address {
                        IpNet::V4(_) => "4",
                        IpNet::V6(_) => "6",
                    }),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                    extra: &ip.extra,
                })
                .collect(),
            routes: &self.routes,
            dns: &self.dns,
        }
    }
}

/// A result ready to print. Empty lists are left out, as the reference plugins do.
#[derive(Debug, Serialize)]
pub struct Rendered<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<RenderedInterface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<RenderedIp<'a>>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    dns: &'a Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct RenderedInterface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    mac: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "str::is_empty")]
    sandbox: &'a str,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct RenderedIp<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strait_api::{InterfaceInfo, IpInfo, RouteInfo};

    use super::*;

    const NETNS: &str = "/var/run/netns/cni-1";

    fn agent_answer() -> AddResponse {
        AddResponse {
            interfaces: vec![
                InterfaceInfo {
                    name: "strait1a2b3c4d".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: None,
                    mtu: None,
                },
                InterfaceInfo {
                    name: "eth0".into(),
                    mac: "02:42:0a:00:00:05".into(),
                    sandbox: Some(NETNS.into()),
                    mtu: None,
                },
            ],
            ips: vec![
                IpInfo {
                    address: "10.244.1.5/32".parse().unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    interface: 1,
                },
                IpInfo {
                    address: "fd00:244::5/128".parse().unwrap(),
                    gateway: Some("fe80::1".parse().unwrap()),
                    interface: 1,
                },
            ],
            routes: vec![
                RouteInfo {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("169.254.1.1".parse().unwrap()),
                },
                RouteInfo {
                    dst: "::/0".parse().unwrap(),
                    gw: None,
                },
            ],
            mtu: 1450,
        }
    }

    fn ours() -> CniResult {
        CniResult::from_agent(&agent_answer(), "eth0", NETNS).unwrap()
    }

    fn render(r: &CniResult, v: CniVersion) -> Value {
        serde_json::to_value(r.render(v)).unwrap()
    }

    #[test]
    fn golden_1_1_0_reports_mtu() {
        assert_eq!(
            render(&ours(), CniVersion::V1_1_0),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "strait1a2b3c4d", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1450},
                    {"name": "eth0", "mac": "02:42:0a:00:00:05", "mtu": 1450, "sandbox": NETNS}
                ],
                "ips": [
                    {"interface": 1, "address": "10.244.1.5/32", "gateway": "169.254.1.1"},
                    {"interface": 1, "address": "fd00:244::5/128", "gateway": "fe80::1"}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                    {"dst": "::/0"}
                ],
                "dns": {}
            })
        );
    }

    #[test]
    fn golden_1_0_0_has_no_mtu() {
        assert_eq!(
            render(&ours(), CniVersion::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "strait1a2b3c4d", "mac": "ee:ee:ee:ee:ee:ee"},
                    {"name": "eth0", "mac": "02:42:0a:00:00:05", "sandbox": NETNS}
                ],
                "ips": [
                    {"interface": 1, "address": "10.244.1.5/32", "gateway": "169.254.1.1"},
                    {"interface": 1, "address": "fd00:244::5/128", "gateway": "fe80::1"}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                    {"dst": "::/0"}
                ],
                "dns": {}
            })
        );
    }

    #[test]
    fn golden_0_x_tags_ip_versions() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            assert_eq!(
                render(&ours(), v),
                json!({
                    "cniVersion": v.as_str(),
                    "interfaces": [
                        {"name": "strait1a2b3c4d", "mac": "ee:ee:ee:ee:ee:ee"},
                        {"name": "eth0", "mac": "02:42:0a:00:00:05", "sandbox": NETNS}
                    ],
                    "ips": [
                        {"version": "4", "interface": 1, "address": "10.244.1.5/32",
                         "gateway": "169.254.1.1"},
                        {"version": "6", "interface": 1, "address": "fd00:244::5/128",
                         "gateway": "fe80::1"}
                    ],
                    "routes": [
                        {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                        {"dst": "::/0"}
                    ],
                    "dns": {}
                }),
                "{v}"
            );
        }
    }

    #[test]
    fn sandbox_filled_when_agent_leaves_it_out() {
        let mut resp = agent_answer();
        resp.interfaces[1].sandbox = None;
        let r = CniResult::from_agent(&resp, "eth0", NETNS).unwrap();
        assert_eq!(r.interfaces[0].sandbox, "");
        assert_eq!(r.interfaces[1].sandbox, NETNS);
    }

    #[test]
    fn agent_index_out_of_range_is_refused() {
        let mut resp = agent_answer();
        resp.ips[0].interface = 2;
        assert!(CniResult::from_agent(&resp, "eth0", NETNS).is_err());
    }

    #[test]
    fn chaining_keeps_prev_and_renumbers_ours() {
        let prev = CniResult::from_prev(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "22:d1:86:67:ff:a4"},
                {"name": "veth1", "mac": "2a:a4:7e:b0:e2:0e", "socketPath": "/x.sock"},
                {"name": "net1", "mac": "7e:a2:77:3e:c2:34", "sandbox": NETNS}
            ],
            "ips": [{"interface": 2, "address": "10.213.12.3/24", "gateway": "10.213.12.1"}],
            "routes": [{"dst": "10.0.0.0/8", "table": 100}],
            "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]}
        }))
        .unwrap();
        let merged = prev.chain(ours());
        assert_eq!(
            render(&merged, CniVersion::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "br0", "mac": "22:d1:86:67:ff:a4"},
                    {"name": "veth1", "mac": "2a:a4:7e:b0:e2:0e", "socketPath": "/x.sock"},
                    {"name": "net1", "mac": "7e:a2:77:3e:c2:34", "sandbox": NETNS},
                    {"name": "strait1a2b3c4d", "mac": "ee:ee:ee:ee:ee:ee"},
                    {"name": "eth0", "mac": "02:42:0a:00:00:05", "sandbox": NETNS}
                ],
                "ips": [
                    {"interface": 2, "address": "10.213.12.3/24", "gateway": "10.213.12.1"},
                    {"interface": 4, "address": "10.244.1.5/32", "gateway": "169.254.1.1"},
                    {"interface": 4, "address": "fd00:244::5/128", "gateway": "fe80::1"}
                ],
                "routes": [
                    {"dst": "10.0.0.0/8", "table": 100},
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                    {"dst": "::/0"}
                ],
                "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]}
            })
        );
    }

    #[test]
    fn prev_result_0_4_0_converts_up_and_down() {
        let prev = CniResult::from_prev(&json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": NETNS}],
            "ips": [{"version": "4", "interface": 0, "address": "10.1.0.2/24"}],
            "dns": {}
        }))
        .unwrap();
        assert_eq!(
            render(&prev, CniVersion::V1_0_0)["ips"],
            json!([{"interface": 0, "address": "10.1.0.2/24"}])
        );
        assert_eq!(
            render(&prev, CniVersion::V0_4_0)["ips"],
            json!([{"version": "4", "interface": 0, "address": "10.1.0.2/24"}])
        );
        // No routes: the key is left out rather than printed empty.
        assert!(render(&prev, CniVersion::V0_4_0).get("routes").is_none());
    }

    #[test]
    fn bad_prev_result_is_a_decode_error() {
        let e = CniResult::from_prev(&json!({"ips": [{"address": "nope"}]})).unwrap_err();
        assert_eq!(e.code(), 6);
        assert!(e.to_string().contains("prevResult"), "{e}");
    }

    #[test]
    fn addresses_on_our_interface_only() {
        let prev = CniResult::from_prev(&json!({
            "interfaces": [
                {"name": "host0"},
                {"name": "eth0", "sandbox": NETNS},
                {"name": "eth0", "sandbox": "/other/ns"}
            ],
            "ips": [
                {"interface": 0, "address": "192.168.0.1/32"},
                {"interface": 1, "address": "10.1.0.2/32"},
                {"interface": 2, "address": "10.9.0.2/32"},
                {"address": "10.8.0.2/32"},
                {"interface": 7, "address": "10.7.0.2/32"}
            ]
        }))
        .unwrap();
        assert_eq!(
            prev.addresses_on("eth0", NETNS),
            vec!["10.1.0.2/32".parse::<IpNet>().unwrap()]
        );
    }
}
