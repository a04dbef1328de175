//! `IpamDriver.*`: Docker's IPAM calls, answered from strait's IPAM.
//!
//! A pool is a strait pool, or a subnet (and `--ip-range`) inside one; its addresses
//! are reserved cluster-wide, each under a handle of its own named
//! `docker-ipam.<pool ID>.<n>`, from RequestAddress to ReleaseAddress. Addresses are
//! given as /32 and /128: containers are routed, as CNI ones are, whatever the subnet.
//!
//! The gateway Docker asks for is the link-local one every strait container uses
//! (`169.254.1.1`, `fe80::1`): it is no address of the pool, so none is spent on it.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::Family;
use strait_api::docker::{
    AddressSpacesResponse, IpamCapabilitiesResponse, ReleaseAddressRequest, ReleasePoolRequest,
    RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse, option,
    string_option,
};
use tracing::info;

use super::networks::{StoredPool, check_in_pools};
use super::{DockerError, DockerPlugin};
use crate::endpoint::{GATEWAY_V4, GATEWAY_V6};
use crate::ipam::{AllocRequest, DOCKER_HANDLE_PREFIX};

/// strait's address spaces (Docker shows them; they mean nothing else).
pub const LOCAL_ADDRESS_SPACE: &str = "strait-local";
pub const GLOBAL_ADDRESS_SPACE: &str = "strait-global";

/// The IPAM option that picks the strait pool of a network without a subnet.
pub const POOL_OPTION: &str = option::STRAIT_POOL;

pub fn capabilities() -> IpamCapabilitiesResponse {
    IpamCapabilitiesResponse {
        requires_mac_address: false,
        requires_request_replay: false,
    }
}

pub fn address_spaces() -> AddressSpacesResponse {
    AddressSpacesResponse {
        local_default_address_space: LOCAL_ADDRESS_SPACE.into(),
        global_default_address_space: GLOBAL_ADDRESS_SPACE.into(),
    }
}

/// The gateway of a family, as Docker wants it (with a prefix length).
pub fn gateway(family: Family) -> String {
    match family {
        Family::V4 => format!("{GATEWAY_V4}/32"),
        Family::V6 => format!("{GATEWAY_V6}/64"),
    }
}

/// The handle prefix of one pool's addresses.
fn pool_handles(pool_id: &str) -> String {
    format!("{DOCKER_HANDLE_PREFIX}{pool_id}.")
}

fn parse_net(what: &str, s: &str) -> Result<IpNet, DockerError> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|e| DockerError::new(format!("{what} {s:?} is not a CIDR: {e}")))
}

/// An address as Docker sends it: bare, or with a prefix length.
pub fn parse_addr(s: &str) -> Result<IpAddr, DockerError> {
    let bare = s.split('/').next().unwrap_or(s);
    bare.parse::<IpAddr>()
        .map_err(|e| DockerError::new(format!("{s:?} is not an IP address: {e}")))
}

fn full_length(ip: IpAddr) -> String {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{len}")
}

impl DockerPlugin {
    pub async fn request_pool(
        &self,
        req: RequestPoolRequest,
    ) -> Result<RequestPoolResponse, DockerError> {
        let family = if req.v6 { Family::V6 } else { Family::V4 };
        let pools = self.ipam.pools();
        let strait_pool = match string_option(&req.options, POOL_OPTION).map_err(DockerError)? {
            Some(p) => {
                let p = parse_net("strait.pool", &p)?;
                if !pools.iter().any(|q| q.cidr == p && !q.disabled) {
                    return Err(DockerError::new(format!(
                        "strait.pool {p} is not an enabled strait pool (pools: {})",
                        pools
                            .iter()
                            .map(|q| q.cidr.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(p)
            }
            None => None,
        };
        let subnet = match req.pool.trim() {
            "" => None,
            s => Some(parse_net("subnet", s)?),
        };
        let range = match req.sub_pool.trim() {
            "" => None,
            s => Some(parse_net("ip-range", s)?),
        };
        if let Some(s) = subnet {
            if Family::of_net(&s) != family {
                return Err(DockerError::new(format!(
                    "subnet {s} is not an {family} subnet"
                )));
            }
            self.networks.check_subnet(s, pools).await?;
            if let Some(p) = strait_pool
                && !p.contains(&s)
            {
                return Err(DockerError::new(format!(
                    "subnet {s} is not inside strait.pool {p}"
                )));
            }
        }
        if let Some(r) = range {
            match subnet {
                Some(s) if s.contains(&r) => {}
                Some(s) => {
                    return Err(DockerError::new(format!(
                        "ip-range {r} is not inside subnet {s}"
                    )));
                }
                None => {
                    return Err(DockerError::new("an ip-range needs a subnet (--subnet)"));
                }
            }
        }
        // The CIDR Docker will show: the subnet, or the strait pool the addresses come
        // from.
        let shown = match (subnet, strait_pool) {
            (Some(s), _) => s,
            (None, Some(p)) => p,
            (None, None) => pools
                .iter()
                .find(|p| p.family() == family && !p.disabled)
                .map(|p| p.cidr)
                .ok_or_else(|| {
                    DockerError::new(format!(
                        "no {family} pool is configured on this strait agent{}",
                        if req.v6 {
                            " (docker network create --ipv6 needs one)"
                        } else {
                            ""
                        }
                    ))
                })?,
        };
        check_in_pools(shown, pools)?;
        let id = format!("strait-{:016x}", nonce());
        let pool = StoredPool {
            id: id.clone(),
            node: self.node.clone(),
            family,
            subnet,
            range,
            strait_pool,
            created: now(),
        };
        self.networks.create_pool(&pool).await?;
        info!(pool = %id, cidr = %shown, "Docker IPAM pool requested");
        let mut data = std::collections::BTreeMap::new();
        // Docker takes the gateway from here and asks for no gateway address.
        data.insert(option::GATEWAY_ADDRESS.to_string(), gateway(family));
        Ok(RequestPoolResponse {
            pool_id: id,
            pool: shown.to_string(),
            data,
        })
    }

    pub async fn release_pool(&self, req: ReleasePoolRequest) -> Result<(), DockerError> {
        // Whatever Docker did not release one by one goes with the pool.
        for handle in self
            .ipam
            .handles_with_prefix(&pool_handles(&req.pool_id))
            .await?
        {
            if handle.node == self.node {
                self.ipam.release(&handle.handle).await?;
            }
        }
        self.networks.delete_pool(&req.pool_id).await?;
        Ok(())
    }

    pub async fn request_address(
        &self,
        req: RequestAddressRequest,
    ) -> Result<RequestAddressResponse, DockerError> {
        let pool = self.networks.pool(&req.pool_id).await?.ok_or_else(|| {
            DockerError::new(format!(
                "IPAM pool {} is not known to strait (released, or from before a reset of \
                 strait's store)",
                req.pool_id
            ))
        })?;
        let kind =
            string_option(&req.options, option::REQUEST_ADDRESS_TYPE).map_err(DockerError)?;
        if kind.as_deref() == Some(option::GATEWAY_ADDRESS) {
            // `--gateway`, or Docker asking although RequestPool named one: the
            // routed model's gateway is link-local, and nothing is reserved.
            let address = match req.address.trim() {
                "" => gateway(pool.family),
                given => given.to_string(),
            };
            return Ok(RequestAddressResponse {
                address,
                data: Default::default(),
            });
        }
        let mut alloc = AllocRequest {
            handle: format!("{}{:016x}", pool_handles(&pool.id), nonce()),
            network: pool.id.clone(),
            families: vec![pool.family],
            ..Default::default()
        };
        match req.address.trim() {
            "" => alloc.within = pool.within(),
            given => {
                let ip = parse_addr(given)?;
                if Family::of(&ip) != pool.family {
                    return Err(DockerError::new(format!(
                        "{ip} is not an {} address",
                        pool.family
                    )));
                }
                if let Some(s) = pool.subnet
                    && !s.contains(&ip)
                {
                    return Err(DockerError::new(format!(
                        "{ip} is not inside the network's subnet {s}"
                    )));
                }
                alloc.static_ips = vec![ip];
            }
        }
        let got = self.ipam.allocate(alloc).await?;
        let ip = got
            .ips
            .iter()
            .copied()
            .find(|ip| Family::of(ip) == pool.family)
            .ok_or_else(|| DockerError::new("strait IPAM gave no address of the family"))?;
        Ok(RequestAddressResponse {
            address: full_length(ip),
            data: Default::default(),
        })
    }

    pub async fn release_address(&self, req: ReleaseAddressRequest) -> Result<(), DockerError> {
        let ip = parse_addr(&req.address)?;
        if ip == IpAddr::V4(GATEWAY_V4) || ip == IpAddr::V6(GATEWAY_V6) {
            return Ok(());
        }
        match self.ipam.holder_of(ip).await? {
            None => Ok(()),
            Some(handle) if handle.starts_with(&pool_handles(&req.pool_id)) => {
                self.ipam.release(&handle).await?;
                Ok(())
            }
            // A static `--gateway` inside the subnet was never reserved; an address
            // someone else holds is not Docker's to release.
            Some(handle) => Err(DockerError::new(format!(
                "{ip} is held by {handle}, not by IPAM pool {}; nothing was released",
                req.pool_id
            ))),
        }
    }
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random 64-bit number for IDs: std's per-process random hash keys over the
/// time and a counter (no RNG crate needed for names that only must not repeat).
pub(super) fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
