//! The network configuration on stdin: strait's own keys (`socket`, `stateDir`,
//! `mtu`), the protocol's keys (`cniVersion`, `name`, `prevResult`, `runtimeConfig`,
//! `args`, `cni.dev/valid-attachments`) and their validation.
//!
//! Decoding is split in two so errors get the spec's codes: text that is not a JSON
//! object is code 6; an object with a missing or ill-typed key is code 7; a version we
//! do not speak is code 1. Keys another plugin in the chain owns (`ipam`, `bridge`,
//! `capabilities`…) are ignored, as the spec requires.
//!
//! `runtimeConfig`, `args` and the GC attachment list are matched case-insensitively:
//! runtimes are written in Go, whose JSON decoder is, and containerd sends
//! `"HostPort"` where podman sends `"hostPort"`. Those parts are decoded only by the
//! verbs that use them, so a DEL never fails over a key only ADD reads.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};
use strait_api::{Attachment, NamedPort};

use crate::env::CniArgs;
use crate::error::CniError;
use crate::requested::{parse_mac, parse_static_ip};
use crate::version::CniVersion;

/// The configuration exactly as decoded, before validation. Kept separate from
/// [`NetConf`] so an error can still be reported in the config's own `cniVersion`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawNetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(rename = "stateDir", default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Value>,
    /// The older name of the same list, still accepted.
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Value>,
}

/// Decode stdin: code 6 unless it is a JSON object, code 7 if a known key has the
/// wrong type.
pub fn decode(stdin: &[u8]) -> Result<RawNetConf, CniError> {
    let object = decode_object(stdin)?;
    serde_json::from_value(Value::Object(object))
        .map_err(|e| CniError::InvalidConfig(e.to_string()))
}

fn decode_object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    serde_json::from_slice::<Map<String, Value>>(stdin).map_err(|source| CniError::Decode {
        what: "the network configuration",
        source,
    })
}

/// The `cniVersion` of a VERSION probe's stdin. Empty stdin names none; podman sends
/// `{"cniVersion":"1.0.0"}`.
pub fn version_probe(stdin: &[u8]) -> Result<Option<String>, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match decode_object(stdin)?.get("cniVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::InvalidConfig(format!(
            "cniVersion must be a string, got {other}"
        ))),
    }
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The network name: scopes every attachment in the agent.
    pub name: String,
    /// The agent's unix socket.
    pub socket: PathBuf,
    /// Where DELs are queued while the agent is down.
    pub state_dir: PathBuf,
    pub mtu: Option<u32>,
    pub prev_result: Option<Value>,
    runtime_config: Option<Value>,
    args: Option<Value>,
    valid_attachments: Option<Value>,
    attachments: Option<Value>,
}

impl RawNetConf {
    /// The config's version if strait speaks it: errors are reported in it.
    pub fn version(&self) -> Option<CniVersion> {
        self.cni_version.as_deref().and_then(CniVersion::parse)
    }

    pub fn validate(self) -> Result<NetConf, CniError> {
        let cni_version = match self.cni_version.as_deref() {
            None | Some("") => {
                return Err(CniError::InvalidConfig("missing cniVersion".into()));
            }
            Some(v) => CniVersion::parse(v).ok_or_else(|| CniError::IncompatibleVersion {
                version: v.to_string(),
                reason: format!(
                    "strait supports {}",
                    crate::version::SUPPORTED.map(CniVersion::as_str).join(", ")
                ),
            })?,
        };
        let name = match self.name {
            None => return Err(CniError::InvalidConfig("missing name".into())),
            Some(n) => {
                validate_network_name(&n)?;
                n
            }
        };
        if let Some(mtu) = self.mtu {
            // 68 is IPv4's minimum; anything above 65535 is not a link MTU.
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::InvalidConfig(format!(
                    "mtu {mtu} is outside 68..=65535"
                )));
            }
        }
        // Relative paths would resolve against whatever directory the runtime runs
        // in, so the plugin and the agent could disagree about them.
        let absolute = |key: &str, path: Option<PathBuf>, default: &str| match path {
            None => Ok(PathBuf::from(default)),
            Some(p) if p.is_absolute() => Ok(p),
            Some(p) => Err(CniError::InvalidConfig(format!(
                "{key} {:?} must be an absolute path",
                p.display()
            ))),
        };
        Ok(NetConf {
            cni_version,
            name,
            socket: absolute("socket", self.socket, strait_api::DEFAULT_SOCKET)?,
            state_dir: absolute("stateDir", self.state_dir, strait_api::DEFAULT_STATE_DIR)?,
            mtu: self.mtu,
            prev_result: self.prev_result.filter(|v| !v.is_null()),
            runtime_config: self.runtime_config,
            args: self.args,
            valid_attachments: self.valid_attachments,
            attachments: self.attachments,
        })
    }
}

/// Spec §1: a network name starts with an alphanumeric character, then alphanumerics,
/// '_', '.' or '-'. It also names queue files, so the rule matters to us too.
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::InvalidConfig(format!(
            "name {name:?} must start with a letter or digit and contain only letters, \
             digits, '_', '.' and '-'"
        )))
    }
}

/// What ADD asks the agent for beyond the attachment itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddOptions {
    /// Static addresses from runtimeConfig `ips`, `args.cni.ips` and `CNI_ARGS` `IP=`,
    /// in that order, without duplicates (host-local also takes the union).
    pub ips: Vec<IpAddr>,
    /// runtimeConfig `mac`, else `CNI_ARGS` `MAC=`.
    pub mac: Option<String>,
    /// `CNI_ARGS` `K8S_POD_NAMESPACE`, else `args.cni.namespace`; the agent puts an
    /// endpoint without one in `default`.
    pub namespace: Option<String>,
    /// `CNI_ARGS` `K8S_POD_NAME`.
    pub pod: Option<String>,
    /// `args.cni.labels`, checked with Kubernetes' label syntax.
    pub labels: BTreeMap<String, String>,
    /// Named `portMappings` entries, then `args.cni.ports`, without duplicates.
    pub named_ports: Vec<NamedPort>,
    /// The host ports the agent serves ([`host_ports`] checks their protocols);
    /// a chained `portmap` may serve them too.
    pub port_mappings: Vec<PortMapping>,
}

/// The mappings as the agent takes them: TCP or UDP, which its datapath translates
/// (a chained `portmap` could map SCTP, but strait would then not serve the port
/// it was asked for: refused, naming the entry).
pub fn host_ports(mappings: &[PortMapping]) -> Result<Vec<strait_api::HostPort>, CniError> {
    mappings
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let protocol = strait_api::HostPortProtocol::parse(&m.protocol).ok_or_else(|| {
                CniError::InvalidConfig(format!(
                    "runtimeConfig.portMappings[{i}].protocol {:?}: strait serves tcp and udp \
                     host ports",
                    m.protocol
                ))
            })?;
            Ok(strait_api::HostPort {
                host_port: m.host_port,
                container_port: m.container_port,
                protocol,
                host_ip: m.host_ip.filter(|ip| !ip.is_unspecified()),
            })
        })
        .collect()
}

/// One runtimeConfig `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: Option<IpAddr>,
    /// The container port's name, where the runtime gives one: a named port.
    pub name: Option<String>,
}

impl NetConf {
    /// Gather ADD's requests from runtimeConfig, `args` and `CNI_ARGS`.
    pub fn add_options(&self, cni_args: &CniArgs) -> Result<AddOptions, CniError> {
        let mut out = AddOptions::default();

        if let Some(rc) = object(self.runtime_config.as_ref(), "runtimeConfig")? {
            for ip in ip_list(field(rc, "ips"), "runtimeConfig.ips")? {
                push_ip(ip, &mut out.ips);
            }
            if let Some(mac) = string(field(rc, "mac"), "runtimeConfig.mac")? {
                out.mac = Some(parse_mac(mac).ok_or_else(|| {
                    CniError::InvalidConfig(format!(
                        "runtimeConfig.mac {mac:?} is not a unicast MAC address"
                    ))
                })?);
            }
            out.port_mappings = port_mappings(field(rc, "portMappings"))?;
        }
        let mut named_ports = mapped_named_ports(&out.port_mappings)?;

        let cni = object(self.args.as_ref(), "args")?
            .and_then(|args| field(args, "cni"))
            .filter(|v| !v.is_null());
        if let Some(cni) = object(cni, "args.cni")? {
            for ip in ip_list(field(cni, "ips"), "args.cni.ips")? {
                push_ip(ip, &mut out.ips);
            }
            out.labels = labels(field(cni, "labels"))?;
            if let Some(ns) =
                string(field(cni, "namespace"), "args.cni.namespace")?.filter(|ns| !ns.is_empty())
            {
                strait_api::labels::validate_namespace(ns)
                    .map_err(|e| CniError::InvalidConfig(format!("args.cni.namespace: {e}")))?;
                out.namespace = Some(ns.to_string());
            }
            named_ports.extend(declared_ports(field(cni, "ports"))?);
        }

        for ip in &cni_args.ips {
            push_ip(*ip, &mut out.ips);
        }
        if out.mac.is_none() {
            out.mac.clone_from(&cni_args.mac);
        }
        // The runtime's own word on the pod's namespace wins over the network config's.
        if cni_args.namespace.is_some() {
            out.namespace.clone_from(&cni_args.namespace);
        }
        out.pod.clone_from(&cni_args.pod);
        out.named_ports = strait_api::labels::normalize_named_ports(named_ports)
            .map_err(CniError::InvalidConfig)?;
        Ok(out)
    }

    /// GC's `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
    ///
    /// Absent is an error, not an empty list: an empty list tells the agent to release
    /// every attachment of the network, which must never happen by omission.
    pub fn gc_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let (key, list) = match (&self.valid_attachments, &self.attachments) {
            (Some(v), _) if !v.is_null() => ("cni.dev/valid-attachments", v),
            (_, Some(v)) if !v.is_null() => ("cni.dev/attachments", v),
            _ => {
                return Err(CniError::InvalidConfig(
                    "GC needs cni.dev/valid-attachments (refusing to treat no list as an \
                     empty one)"
                        .into(),
                ));
            }
        };
        let Value::Array(items) = list else {
            return Err(CniError::InvalidConfig(format!("{key} must be a list")));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let what = format!("{key}[{i}]");
                let obj = object(Some(item), &what)?
                    .ok_or_else(|| CniError::InvalidConfig(format!("{what} is null")))?;
                let get = |k: &str| {
                    string(field(obj, k), &format!("{what}.{k}"))?
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| CniError::InvalidConfig(format!("{what} has no {k}")))
                };
                Ok(Attachment {
                    container_id: get("containerID")?,
                    ifname: get("ifname")?,
                })
            })
            .collect()
    }
}

fn push_ip(ip: IpAddr, ips: &mut Vec<IpAddr>) {
    if !ips.contains(&ip) {
        ips.push(ip);
    }
}

/// Look `key` up exactly, then ignoring ASCII case (as Go's encoding/json does).
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn object<'a>(
    v: Option<&'a Value>,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(CniError::InvalidConfig(format!(
            "{what} must be an object, got {other}"
        ))),
    }
}

fn string<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a str>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(CniError::InvalidConfig(format!(
            "{what} must be a string, got {other}"
        ))),
    }
}

fn array<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a [Value], CniError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(CniError::InvalidConfig(format!(
            "{what} must be a list, got {other}"
        ))),
    }
}

fn ip_list(v: Option<&Value>, what: &str) -> Result<Vec<IpAddr>, CniError> {
    array(v, what)?
        .iter()
        .map(|item| {
            let s = string(Some(item), what)?.unwrap_or_default();
            parse_static_ip(s).ok_or_else(|| {
                CniError::InvalidConfig(format!("{what}: {s:?} is not an IP address"))
            })
        })
        .collect()
}

/// `args.cni.labels` is a list of `{"key": k, "value": v}` (CNI conventions); each
/// must be a valid Kubernetes label, since policy selects by them.
fn labels(v: Option<&Value>) -> Result<BTreeMap<String, String>, CniError> {
    let what = "args.cni.labels";
    array(v, what)?
        .iter()
        .map(|item| {
            let obj = object(Some(item), what)?.ok_or_else(|| {
                CniError::InvalidConfig(format!("{what} entries must be objects"))
            })?;
            let key = string(field(obj, "key"), what)?
                .filter(|k| !k.is_empty())
                .ok_or_else(|| CniError::InvalidConfig(format!("{what} entry without key")))?;
            let value = string(field(obj, "value"), what)?.unwrap_or_default();
            let bad = |e: String| CniError::InvalidConfig(format!("{what}: {e}"));
            strait_api::labels::validate_key(key).map_err(bad)?;
            strait_api::labels::validate_value(key, value).map_err(bad)?;
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// The `portMappings` entries that name their container port.
fn mapped_named_ports(mappings: &[PortMapping]) -> Result<Vec<NamedPort>, CniError> {
    mappings
        .iter()
        .filter_map(|m| Some((m.name.as_deref()?, m)))
        .map(|(name, m)| {
            named_port(
                "runtimeConfig.portMappings",
                name,
                m.container_port,
                &m.protocol,
            )
        })
        .collect()
}

/// `args.cni.ports`: a list of `{"name": "http", "port": 8080, "protocol": "TCP"}`
/// (protocol TCP when absent).
fn declared_ports(v: Option<&Value>) -> Result<Vec<NamedPort>, CniError> {
    let what = "args.cni.ports";
    array(v, what)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let what = format!("{what}[{i}]");
            let obj = object(Some(item), &what)?
                .ok_or_else(|| CniError::InvalidConfig(format!("{what} is null")))?;
            let name = string(field(obj, "name"), &what)?
                .ok_or_else(|| CniError::InvalidConfig(format!("{what} has no name")))?;
            let port = field(obj, "port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    CniError::InvalidConfig(format!("{what}.port must be a port 1..=65535"))
                })?;
            let protocol = string(field(obj, "protocol"), &what)?
                .filter(|p| !p.is_empty())
                .unwrap_or("tcp");
            named_port(&what, name, port, protocol)
        })
        .collect()
}

fn named_port(what: &str, name: &str, port: u16, protocol: &str) -> Result<NamedPort, CniError> {
    let protocol = strait_api::labels::parse_port_protocol(protocol).ok_or_else(|| {
        CniError::InvalidConfig(format!(
            "{what}: port {name}: protocol {protocol:?} is not TCP, UDP or SCTP"
        ))
    })?;
    let p = NamedPort {
        name: name.to_string(),
        protocol,
        port,
    };
    strait_api::labels::validate_named_port(&p)
        .map_err(|e| CniError::InvalidConfig(format!("{what}: {e}")))?;
    Ok(p)
}

fn port_mappings(v: Option<&Value>) -> Result<Vec<PortMapping>, CniError> {
    let what = "runtimeConfig.portMappings";
    array(v, what)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let what = format!("{what}[{i}]");
            let obj = object(Some(item), &what)?
                .ok_or_else(|| CniError::InvalidConfig(format!("{what} is null")))?;
            let port = |key: &str| -> Result<u16, CniError> {
                field(obj, key)
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        CniError::InvalidConfig(format!("{what}.{key} must be a port 1..=65535"))
                    })
            };
            let host_ip = match string(field(obj, "hostIP"), &what)? {
                None | Some("") => None,
                Some(s) => Some(s.parse().map_err(|_| {
                    CniError::InvalidConfig(format!("{what}.hostIP {s:?} is not an IP address"))
                })?),
            };
            Ok(PortMapping {
                host_port: port("hostPort")?,
                container_port: port("containerPort")?,
                protocol: string(field(obj, "protocol"), &what)?
                    .filter(|p| !p.is_empty())
                    .unwrap_or("tcp")
                    .to_ascii_lowercase(),
                host_ip,
                name: string(field(obj, "name"), &what)?
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        decode(v.to_string().as_bytes())?.validate()
    }

    fn code<T: std::fmt::Debug>(r: Result<T, CniError>) -> u32 {
        r.expect_err("expected an error").code()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = conf(json!({"cniVersion": "1.1.0", "name": "n", "type": "strait"})).unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_1_0);
        assert_eq!(c.name, "n");
        assert_eq!(c.socket, PathBuf::from(strait_api::DEFAULT_SOCKET));
        assert_eq!(c.state_dir, PathBuf::from(strait_api::DEFAULT_STATE_DIR));
        assert_eq!(c.mtu, None);
        assert_eq!(c.prev_result, None);
    }

    #[test]
    fn strait_keys() {
        let c = conf(json!({
            "cniVersion": "0.4.0", "name": "n", "type": "strait",
            "socket": "/tmp/s.sock", "stateDir": "/tmp/state", "mtu": 1450,
            "ipam": {"type": "whatever"}, "capabilities": {"ips": true, "mac": true}
        }))
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(
            code(conf(json!({"cniVersion": "1.0.0", "name": "n", "mtu": 20}))),
            7
        );
        assert_eq!(
            code(conf(json!({"cniVersion": "1.0.0", "name": "n", "mtu": -1}))),
            7
        );
        assert_eq!(
            code(conf(
                json!({"cniVersion": "1.0.0", "name": "n", "socket": "rel.sock"})
            )),
            7
        );
    }

    #[test]
    fn decode_errors_are_code_6() {
        for bad in [
            &b"{"[..],
            b"",
            b"not json",
            b"[1,2]",
            b"\"str\"",
            b"{\"a\":1}x",
        ] {
            let e = decode(bad).unwrap_err();
            assert_eq!(e.code(), 6, "{:?}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn config_errors_are_code_7() {
        assert_eq!(code(conf(json!({"cniVersion": "1.0.0"}))), 7);
        assert_eq!(code(conf(json!({"cniVersion": "1.0.0", "name": ""}))), 7);
        assert_eq!(code(conf(json!({"cniVersion": "1.0.0", "name": "-x"}))), 7);
        assert_eq!(code(conf(json!({"cniVersion": "1.0.0", "name": "a/b"}))), 7);
        assert_eq!(code(conf(json!({"cniVersion": "1.0.0", "name": 5}))), 7);
        assert_eq!(code(conf(json!({"name": "n"}))), 7);
        assert_eq!(code(conf(json!({"name": "n", "cniVersion": ""}))), 7);
        let e = conf(json!({"cniVersion": "1.0.0"})).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
    }

    #[test]
    fn unsupported_version_is_code_1() {
        for v in ["0.1.0", "0.2.0", "2.0.0", "banana"] {
            let raw = decode(json!({"cniVersion": v, "name": "n"}).to_string().as_bytes()).unwrap();
            assert_eq!(raw.version(), None);
            assert_eq!(code(raw.validate()), 1, "{v}");
        }
    }

    #[test]
    fn version_probe_input() {
        assert_eq!(version_probe(b"").unwrap(), None);
        assert_eq!(version_probe(b" \n").unwrap(), None);
        assert_eq!(version_probe(b"{}").unwrap(), None);
        assert_eq!(
            version_probe(br#"{"cniVersion":"1.0.0"}"#)
                .unwrap()
                .as_deref(),
            Some("1.0.0")
        );
        assert_eq!(code(version_probe(b"{")), 6);
        assert_eq!(code(version_probe(br#"{"cniVersion":1}"#)), 7);
    }

    #[test]
    fn static_ips_from_every_source_deduplicated() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"ips": ["10.1.2.3/24"], "mac": "02:42:AC:11:00:02"},
            "args": {"cni": {"ips": ["10.1.2.3", "fd00::7"],
                             "labels": [{"key": "app", "value": "web"}]}}
        }))
        .unwrap();
        let args =
            CniArgs::parse("IgnoreUnknown=1;IP=10.9.9.9;K8S_POD_NAME=p;MAC=02:00:00:00:00:01")
                .unwrap();
        let o = c.add_options(&args).unwrap();
        let ips: Vec<IpAddr> = ["10.1.2.3", "fd00::7", "10.9.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(o.ips, ips);
        // runtimeConfig wins over CNI_ARGS for the MAC.
        assert_eq!(o.mac.as_deref(), Some("02:42:ac:11:00:02"));
        assert_eq!(o.labels["app"], "web");
        // K8S_POD_NAME is the pod's name, not a label.
        assert_eq!(o.pod.as_deref(), Some("p"));
        assert_eq!(o.labels.len(), 1, "{:?}", o.labels);
    }

    fn add_options(cni: Value, cni_args: &str) -> Result<AddOptions, CniError> {
        conf(json!({"cniVersion": "1.0.0", "name": "n", "args": {"cni": cni}}))
            .unwrap()
            .add_options(&CniArgs::parse(cni_args).unwrap())
    }

    #[test]
    fn namespace_from_cni_args_else_args_cni_else_none() {
        let o = add_options(json!({}), "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1").unwrap();
        assert_eq!(o.namespace.as_deref(), Some("ns1"));
        assert_eq!(o.pod.as_deref(), Some("p1"));
        assert!(
            o.labels.is_empty(),
            "CNI_ARGS are no labels: {:?}",
            o.labels
        );

        let o = add_options(json!({"namespace": "ns2"}), "").unwrap();
        assert_eq!(o.namespace.as_deref(), Some("ns2"));
        // The runtime's K8S_POD_NAMESPACE wins over the network config.
        let o = add_options(json!({"namespace": "ns2"}), "K8S_POD_NAMESPACE=ns1").unwrap();
        assert_eq!(o.namespace.as_deref(), Some("ns1"));
        // None given: the agent puts the endpoint in `default`.
        let o = add_options(json!({}), "").unwrap();
        assert_eq!((o.namespace, o.pod), (None, None));

        let e = add_options(json!({"namespace": "Not_A_Namespace"}), "").unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("args.cni.namespace"), "{e}");
        assert_eq!(code(add_options(json!({"namespace": 5}), "")), 7);
    }

    #[test]
    fn labels_must_be_kubernetes_labels() {
        let o = add_options(
            json!({"labels": [{"key": "app", "value": "web"},
                              {"key": "app.kubernetes.io/part-of", "value": ""}]}),
            "",
        )
        .unwrap();
        assert_eq!(o.labels["app"], "web");
        assert_eq!(o.labels["app.kubernetes.io/part-of"], "");
        for (labels, named) in [
            (json!([{"key": "bad key", "value": "x"}]), "\"bad key\""),
            (json!([{"key": "app", "value": "-web"}]), "app=\"-web\""),
            (
                json!([{"key": "Ex.com/app", "value": "x"}]),
                "\"Ex.com/app\"",
            ),
            (json!([{"key": "k".repeat(64), "value": "x"}]), "kkkk"),
        ] {
            let e = add_options(json!({"labels": labels}), "").unwrap_err();
            assert_eq!(e.code(), 7, "{e}");
            let text = e.to_string();
            assert!(
                text.contains("args.cni.labels") && text.contains(named),
                "{text}"
            );
        }
    }

    #[test]
    fn named_ports_from_port_mappings_and_args_cni() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp", "name": "http"},
                {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp", "name": "http",
                 "hostIP": "::1"},
                {"hostPort": 15353, "containerPort": 53}
            ]},
            "args": {"cni": {"ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "metrics", "port": 9090},
                {"name": "sig", "port": 2905, "protocol": "sctp"}
            ]}}
        }))
        .unwrap();
        let o = c.add_options(&CniArgs::default()).unwrap();
        let p = |name: &str, port, protocol: &str| NamedPort {
            name: name.into(),
            port,
            protocol: strait_api::labels::parse_port_protocol(protocol).unwrap(),
        };
        assert_eq!(
            o.named_ports,
            vec![
                p("http", 8080, "tcp"),
                p("dns", 53, "udp"),
                p("metrics", 9090, "tcp"),
                p("sig", 2905, "sctp")
            ]
        );
        assert_eq!(o.port_mappings.len(), 3, "the mappings stay as they were");
    }

    #[test]
    fn bad_named_ports_are_refused() {
        for (ports, named) in [
            (
                json!([{"name": "http", "port": 80, "protocol": "icmp"}]),
                "\"icmp\"",
            ),
            (
                json!([{"name": "http", "port": 0}]),
                "args.cni.ports[0].port",
            ),
            (json!([{"port": 80}]), "has no name"),
            (json!([{"name": "HTTP", "port": 80}]), "\"HTTP\""),
            (
                json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
                "http",
            ),
            (json!({"name": "http"}), "must be a list"),
        ] {
            let e = add_options(json!({"ports": ports}), "").unwrap_err();
            assert_eq!(e.code(), 7, "{e}");
            assert!(e.to_string().contains(named), "{e}");
        }
        let e = conf(
            json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {
            "portMappings": [{"hostPort": 1, "containerPort": 80, "protocol": "icmp",
                              "name": "web"}]}}),
        )
        .unwrap()
        .add_options(&CniArgs::default())
        .unwrap_err();
        assert!(e.to_string().contains("portMappings"), "{e}");
    }

    #[test]
    fn cni_args_mac_used_when_runtime_config_has_none() {
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n"})).unwrap();
        let args = CniArgs::parse("MAC=02:00:00:00:00:01").unwrap();
        assert_eq!(
            c.add_options(&args).unwrap().mac.as_deref(),
            Some("02:00:00:00:00:01")
        );
    }

    #[test]
    fn bad_runtime_config_is_code_7() {
        let opts = |rc: Value| {
            conf(json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": rc}))
                .unwrap()
                .add_options(&CniArgs::default())
        };
        assert_eq!(code(opts(json!({"ips": ["nope"]}))), 7);
        assert_eq!(code(opts(json!({"ips": "10.1.2.3"}))), 7);
        assert_eq!(code(opts(json!({"mac": "01:00:5e:00:00:01"}))), 7);
        assert_eq!(
            code(opts(
                json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]})
            )),
            7
        );
        assert_eq!(code(opts(json!("x"))), 7);
        // Keys strait does not use (bandwidth, dns…) pass.
        opts(json!({"bandwidth": {"ingressRate": 1}, "dns": {}})).unwrap();
    }

    #[test]
    fn port_mappings_accept_any_key_case() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 18081, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
                {"HostPort": 18095, "ContainerPort": 80, "Protocol": "UDP", "HostIP": "127.0.0.1"},
                {"hostport": 53, "containerport": 53}
            ]}
        }))
        .unwrap();
        let pm = c.add_options(&CniArgs::default()).unwrap().port_mappings;
        let localhost = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            pm,
            vec![
                PortMapping {
                    host_port: 18081,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: localhost,
                    name: None
                },
                PortMapping {
                    host_port: 18095,
                    container_port: 80,
                    protocol: "udp".into(),
                    host_ip: localhost,
                    name: None
                },
                PortMapping {
                    host_port: 53,
                    container_port: 53,
                    protocol: "tcp".into(),
                    host_ip: None,
                    name: None
                },
            ]
        );
    }

    #[test]
    fn host_ports_are_tcp_or_udp_and_an_unspecified_host_ip_is_every_address() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": "0.0.0.0"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"}
            ]}
        }))
        .unwrap();
        let hp = host_ports(&c.add_options(&CniArgs::default()).unwrap().port_mappings).unwrap();
        assert_eq!(hp[0].protocol, strait_api::HostPortProtocol::Tcp);
        assert_eq!(hp[0].host_ip, None, "0.0.0.0 is every address");
        assert_eq!(hp[1].protocol, strait_api::HostPortProtocol::Udp);
        assert_eq!(hp[1].host_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((hp[1].host_port, hp[1].container_port), (5353, 53));

        let sctp = conf(json!({
            "cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 2905, "containerPort": 2905, "protocol": "sctp"}]}
        }))
        .unwrap();
        let e =
            host_ports(&sctp.add_options(&CniArgs::default()).unwrap().port_mappings).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(
            e.to_string().contains("portMappings[0].protocol \"sctp\""),
            "{e}"
        );
    }

    #[test]
    fn runtime_config_keys_are_case_insensitive_too() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"IPs": ["10.1.2.3"], "Mac": "02:00:00:00:00:01"}
        }))
        .unwrap();
        let o = c.add_options(&CniArgs::default()).unwrap();
        assert_eq!(o.ips, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(o.mac.is_some());
    }

    #[test]
    fn gc_attachments() {
        let gc = |extra: Value| {
            let mut v = json!({"cniVersion": "1.1.0", "name": "n"});
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            conf(v).unwrap().gc_attachments()
        };
        let a = gc(json!({"cni.dev/valid-attachments": [
            {"containerID": "c1", "ifname": "eth0"},
            {"ContainerId": "c2", "IfName": "eth1"}
        ]}))
        .unwrap();
        assert_eq!(
            a,
            vec![
                Attachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                Attachment {
                    container_id: "c2".into(),
                    ifname: "eth1".into()
                }
            ]
        );
        let old =
            gc(json!({"cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]})).unwrap();
        assert_eq!(old.len(), 1);
        assert!(
            gc(json!({"cni.dev/valid-attachments": []}))
                .unwrap()
                .is_empty()
        );
        assert_eq!(code(gc(json!({}))), 7);
        assert_eq!(
            code(gc(
                json!({"cni.dev/valid-attachments": [{"ifname": "eth0"}]})
            )),
            7
        );
        assert_eq!(code(gc(json!({"cni.dev/valid-attachments": {}}))), 7);
    }
}
