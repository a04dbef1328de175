//! Docker's remote driver protocol (libnetwork's `NetworkDriver` and `IpamDriver`
//! plugin APIs), as dockerd speaks it to the agent's plugin socket, and the views of
//! `netctl docker`.
//!
//! dockerd POSTs JSON to `/Plugin.Activate`, `/NetworkDriver.<Method>` and
//! `/IpamDriver.<Method>`. Field names are Go's (`NetworkID`, `IPv4Data`, …). Some
//! requests come with no body at all (`Content-Length: 0`: Activate, GetCapabilities,
//! GetDefaultAddressSpaces), so [`decode`] reads an empty body as `{}`. A request the
//! driver cannot carry out is answered with status 200 and [`ErrorResponse`] (network
//! driver) or [`IpamErrorResponse`] (IPAM driver); one it cannot decode with a 4xx
//! status and the same body.
//!
//! Options are Go `map[string]interface{}` values: kept as JSON here and read by the
//! driver through the accessors below, so an option of an unexpected type is an error
//! the driver names rather than a decode failure of the whole request.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The media type dockerd accepts in answers.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Options keys dockerd sets.
pub mod option {
    /// CreateNetwork: the `-o key=value` options of `docker network create`.
    pub const GENERIC: &str = "com.docker.network.generic";
    /// CreateNetwork: `--ipv6`.
    pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
    /// CreateNetwork: `--internal` (dockerd 20.10 passes it among the generic options
    /// for remote drivers; read from both places).
    pub const INTERNAL: &str = "com.docker.network.internal";
    /// CreateEndpoint, Join, ProgramExternalConnectivity: `-p` mappings.
    pub const PORT_MAP: &str = "com.docker.network.portmap";
    /// CreateEndpoint, Join: the container's `EXPOSE`d ports.
    pub const EXPOSED_PORTS: &str = "com.docker.network.endpoint.exposedports";
    /// IpamDriver.RequestAddress: what the address is for.
    pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
    /// The [`REQUEST_ADDRESS_TYPE`] of a network's gateway.
    pub const GATEWAY_ADDRESS: &str = "com.docker.network.gateway";
    /// IpamDriver.RequestAddress: the endpoint's MAC (we ask for it).
    pub const MAC_ADDRESS: &str = "com.docker.network.endpoint.macaddress";
    /// `-o strait.pool=CIDR` on `docker network create`: serve the network from this
    /// strait pool when it gives no subnet.
    pub const STRAIT_POOL: &str = "strait.pool";
}

/// Decodes a request body; an empty body is `{}`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
}

/// `{"Err": "…"}`: the answer to a request the driver could not carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

/// `{"Error": "…"}`: the IPAM driver's form of [`ErrorResponse`] (libnetwork's remote
/// IPAM reads `Error`, not `Err`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamErrorResponse {
    #[serde(rename = "Error")]
    pub error: String,
}

/// `/Plugin.Activate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

/// `/NetworkDriver.GetCapabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    /// `local` or `global`: where the driver's allocations are valid.
    pub scope: String,
    /// `local` or `global`: how far its networks reach.
    pub connectivity_scope: String,
}

/// One entry of `IPv4Data`/`IPv6Data` in CreateNetwork.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: String,
    /// The subnet, `10.1.0.0/24`.
    #[serde(default)]
    pub pool: String,
    /// `10.1.0.1/24`; may be empty.
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `/NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

/// `/NetworkDriver.DeleteNetwork`, `/NetworkDriver.FreeNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The `Interface` of CreateEndpoint, asked and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    /// `10.1.0.5/24`; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

impl EndpointInterface {
    pub fn is_empty(&self) -> bool {
        self.address.is_empty() && self.address_ipv6.is_empty() && self.mac_address.is_empty()
    }
}

/// `/NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default, deserialize_with = "null_as_default")]
    pub interface: EndpointInterface,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, Value>,
}

/// The answer to CreateEndpoint: an interface only when dockerd gave none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// `/NetworkDriver.DeleteEndpoint`, `Leave`, `EndpointOperInfo`,
/// `RevokeExternalConnectivity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `/NetworkDriver.EndpointOperInfo`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfoResponse {
    #[serde(rename = "Value")]
    pub value: BTreeMap<String, Value>,
}

/// `/NetworkDriver.Join`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's network namespace, `<exec-root>/netns/<id>`.
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, Value>,
}

/// The interface libnetwork moves into the container: `SrcName` on the host, renamed
/// `<DstPrefix><n>` inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// A route libnetwork adds in the container after moving the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    /// `169.254.1.1/32`.
    pub destination: String,
    /// [`ROUTE_NEXT_HOP`] with `next_hop`, or [`ROUTE_CONNECTED`].
    pub route_type: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

/// [`StaticRoute::route_type`] of a route through a next hop.
pub const ROUTE_NEXT_HOP: u8 = 0;
/// [`StaticRoute::route_type`] of an on-link (connected) route.
pub const ROUTE_CONNECTED: u8 = 1;

/// `/NetworkDriver.Join`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<InterfaceName>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(
        rename = "GatewayIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub gateway_ipv6: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    /// Without a gateway, dockerd would attach the container to `docker_gwbridge`
    /// too; true stops it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_gateway_service: bool,
}

/// `/NetworkDriver.ProgramExternalConnectivity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, Value>,
}

/// One `-p` mapping (`com.docker.network.portmap`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// The container's address (dockerd leaves it empty).
    #[serde(rename = "IP", default)]
    pub ip: String,
    /// The container's port.
    pub port: u16,
    /// The host address to listen on; empty means every address.
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default)]
    pub host_port_end: u16,
}

/// `/NetworkDriver.DiscoverNew`, `DiscoverDelete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryRequest {
    #[serde(rename = "DiscoveryType", default)]
    pub discovery_type: i64,
    #[serde(rename = "DiscoveryData", default)]
    pub discovery_data: Value,
}

/// `/IpamDriver.GetCapabilities`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilitiesResponse {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

/// `/IpamDriver.GetDefaultAddressSpaces`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpacesResponse {
    pub local_default_address_space: String,
    pub global_default_address_space: String,
}

/// `/IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolRequest {
    /// Always sent by dockerd: a body without it is not a pool request.
    pub address_space: String,
    /// `--subnet`; empty asks the driver to choose.
    #[serde(default)]
    pub pool: String,
    /// `--ip-range`; empty means the whole pool.
    #[serde(default)]
    pub sub_pool: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

/// `/IpamDriver.RequestPool`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// `/IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `/IpamDriver.RequestAddress`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// `--ip`/`--ip6` (or `--gateway`); empty asks the driver to choose.
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, Value>,
}

/// `/IpamDriver.RequestAddress`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAddressResponse {
    /// `10.1.0.5/32`.
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data", default)]
    pub data: BTreeMap<String, String>,
}

/// `/IpamDriver.ReleaseAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// Go encodes a nil map or slice as `null`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string-valued option: `Ok(None)` when absent, an error naming it when it is not a
/// string.
pub fn string_option(
    options: &BTreeMap<String, Value>,
    key: &str,
) -> Result<Option<String>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("option {key} must be a string, got {other}")),
    }
}

/// A boolean option, as Go's JSON or `-o key=true` gives it.
pub fn bool_option(options: &BTreeMap<String, Value>, key: &str) -> Result<bool, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            _ => Err(format!("option {key} must be true or false, got {s:?}")),
        },
        Some(other) => Err(format!("option {key} must be true or false, got {other}")),
    }
}

/// The `-o` options of `docker network create` (CreateNetwork's generic map).
pub fn generic_options(
    options: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, String> {
    match options.get(option::GENERIC) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map.clone().into_iter().collect()),
        Some(other) => Err(format!(
            "option {} must be a map, got {other}",
            option::GENERIC
        )),
    }
}

/// The `-p` mappings among `options`.
pub fn port_bindings(options: &BTreeMap<String, Value>) -> Result<Vec<PortBinding>, String> {
    match options.get(option::PORT_MAP) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "option {} is not a list of port mappings: {e}",
                option::PORT_MAP
            )
        }),
    }
}

/// `netctl docker networks`: one Docker network strait serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Docker's network ID (per Docker host).
    pub id: String,
    /// Docker's name for it, once the agent has asked dockerd.
    #[serde(default)]
    pub name: Option<String>,
    /// The node whose dockerd created it.
    pub node: String,
    /// The subnets, IPv4 first; empty: the node's blocks.
    pub subnets: Vec<String>,
    /// `strait` (strait's IPAM driver) or `docker` (Docker's default IPAM).
    pub ipam: String,
    pub internal: bool,
    /// Seconds since the Unix epoch.
    pub created: u64,
}
