//! Docker networks and IPAM pools in the store, and the rules between them.
//!
//! * `docker/networks/<network ID>`: a network this cluster's dockerds created with
//!   `-d strait` ([`StoredNetwork`]). Network IDs are random per dockerd, so one key
//!   space serves every node.
//! * `docker/pools/<node>/<pool ID>`: a pool strait's IPAM driver handed out
//!   ([`StoredPool`]), from RequestPool to ReleasePool.
//! * `docker/ports/<node>/<endpoint ID>`: the `-p` mappings of an endpoint (see
//!   [`super::ports`]).
//!
//! A network is its subnet: the same subnet created on several Docker hosts is one
//! network (addresses are cluster-unique, the fabric connects them), a subnet that
//! overlaps another network's without being it is refused, and a subnet must lie inside
//! a strait pool, where IPAM can reserve its addresses cluster-wide.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_api::Family;

use super::DockerError;
use crate::ipam::Pool;
use crate::store::{Compare, PREFIX, Store, Txn, TxnOp};

/// `docker/networks/`.
pub fn networks_prefix() -> String {
    format!("{PREFIX}docker/networks/")
}

pub fn network_key(id: &str) -> String {
    format!("{}{id}", networks_prefix())
}

/// `docker/pools/` (every node's).
pub fn pools_prefix() -> String {
    format!("{PREFIX}docker/pools/")
}

pub fn pool_key(node: &str, id: &str) -> String {
    format!("{}{node}/{id}", pools_prefix())
}

/// `docker/ports/<node>/`.
pub fn ports_prefix(node: &str) -> String {
    format!("{PREFIX}docker/ports/{node}/")
}

/// Who hands out a network's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpamKind {
    /// strait's IPAM driver (`--ipam-driver strait`): addresses are already reserved
    /// when the endpoint is created.
    Strait,
    /// Docker's default IPAM: Docker picks from the subnet, strait reserves at
    /// CreateEndpoint.
    Docker,
}

/// The stored form of `docker/networks/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNetwork {
    pub id: String,
    /// Docker's name, once asked.
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    pub ipam: IpamKind,
    /// The subnets Docker gave (IPv4 first).
    pub subnets: Vec<IpNet>,
    #[serde(default)]
    pub internal: bool,
    pub created: u64,
}

/// The stored form of `docker/pools/<node>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPool {
    pub id: String,
    pub node: String,
    pub family: Family,
    /// `--subnet`; `None`: the node's blocks.
    pub subnet: Option<IpNet>,
    /// `--ip-range`.
    #[serde(default)]
    pub range: Option<IpNet>,
    /// `--ipam-opt strait.pool=`: the strait pool to serve from, without a subnet.
    #[serde(default)]
    pub strait_pool: Option<IpNet>,
    pub created: u64,
}

impl StoredPool {
    /// Where dynamic addresses come from; empty: anywhere in the family's pools.
    pub fn within(&self) -> Vec<IpNet> {
        self.range
            .or(self.subnet)
            .or(self.strait_pool)
            .into_iter()
            .collect()
    }
}

/// Typed access to the stored networks and pools.
#[derive(Clone)]
pub struct Networks {
    store: Arc<dyn Store>,
    node: String,
}

impl Networks {
    pub fn new(store: Arc<dyn Store>, node: String) -> Self {
        Self { store, node }
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredNetwork>, DockerError> {
        read(&*self.store, &network_key(id)).await
    }

    /// The network of `id`, or the error a request about an unknown network gets.
    pub async fn require(&self, id: &str) -> Result<StoredNetwork, DockerError> {
        self.get(id).await?.ok_or_else(|| {
            DockerError::new(format!(
                "network {} is not known to strait (deleted, or created before strait's store \
                 was reset): remove it with `docker network rm` and create it again",
                short(id)
            ))
        })
    }

    pub async fn list(&self) -> Result<Vec<StoredNetwork>, DockerError> {
        list(&*self.store, &networks_prefix()).await
    }

    /// Stores `net` unless a network of its id exists; an existing equal one is fine
    /// (a retried CreateNetwork).
    pub async fn create(&self, net: &StoredNetwork) -> Result<(), DockerError> {
        let key = network_key(&net.id);
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([put(&key, net)]);
        if self.store.txn(txn).await?.succeeded {
            return Ok(());
        }
        match self.get(&net.id).await? {
            Some(old) if old.subnets == net.subnets && old.ipam == net.ipam => Ok(()),
            _ => Err(DockerError::new(format!(
                "network {} exists already with other settings",
                short(&net.id)
            ))),
        }
    }

    pub async fn set_name(&self, id: &str, name: &str) -> Result<(), DockerError> {
        if let Some(mut net) = self.get(id).await?
            && net.name.as_deref() != Some(name)
        {
            net.name = Some(name.to_string());
            self.store
                .put(
                    &network_key(id),
                    serde_json::to_vec(&net).unwrap_or_default(),
                    None,
                )
                .await?;
        }
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> Result<bool, DockerError> {
        Ok(self.store.delete(&network_key(id)).await?)
    }

    pub async fn pool(&self, id: &str) -> Result<Option<StoredPool>, DockerError> {
        read(&*self.store, &pool_key(&self.node, id)).await
    }

    pub async fn pools(&self) -> Result<Vec<StoredPool>, DockerError> {
        list(&*self.store, &pools_prefix()).await
    }

    pub async fn create_pool(&self, pool: &StoredPool) -> Result<(), DockerError> {
        let key = pool_key(&self.node, &pool.id);
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([put(&key, pool)]);
        if !self.store.txn(txn).await?.succeeded {
            return Err(DockerError::new(format!("pool {} exists already", pool.id)));
        }
        Ok(())
    }

    pub async fn delete_pool(&self, id: &str) -> Result<bool, DockerError> {
        Ok(self.store.delete(&pool_key(&self.node, id)).await?)
    }

    /// Refuses `subnet` for a new network or pool on this node: outside every strait
    /// pool, or overlapping another network's subnet without being the same network
    /// on another node.
    pub async fn check_subnet(&self, subnet: IpNet, pools: &[Pool]) -> Result<(), DockerError> {
        check_in_pools(subnet, pools)?;
        let mut taken: Vec<(IpNet, String, String)> = Vec::new();
        for p in self.pools().await? {
            if let Some(s) = p.subnet {
                taken.push((s, p.node.clone(), format!("pool {}", p.id)));
            }
        }
        for n in self.list().await? {
            for s in &n.subnets {
                // A strait-IPAM network without a subnet shows its whole pool: it takes
                // the node's blocks and claims no subnet of it.
                if n.ipam == IpamKind::Strait && pools.iter().any(|p| p.cidr == *s) {
                    continue;
                }
                let what = match &n.name {
                    Some(name) => format!("network {name}"),
                    None => format!("network {}", short(&n.id)),
                };
                taken.push((*s, n.node.clone(), what));
            }
        }
        check_overlap(subnet, &self.node, &taken)
    }
}

/// A subnet must lie inside an enabled strait pool of its family.
pub fn check_in_pools(subnet: IpNet, pools: &[Pool]) -> Result<(), DockerError> {
    let family = Family::of_net(&subnet);
    if pools
        .iter()
        .any(|p| !p.disabled && p.cidr.contains(&subnet))
    {
        return Ok(());
    }
    let list: Vec<String> = pools
        .iter()
        .filter(|p| p.family() == family && !p.disabled)
        .map(|p| p.cidr.to_string())
        .collect();
    Err(DockerError::new(format!(
        "subnet {subnet} is outside every strait pool ({}): give a --subnet inside one, or \
         leave --subnet out and use --ipam-driver strait to take addresses from this node's blocks",
        if list.is_empty() {
            format!("no {family} pool is configured")
        } else {
            list.join(", ")
        }
    )))
}

/// `subnet` against the subnets in use (`(subnet, node, what)`): the same subnet on
/// another node is the same network; any other overlap is refused.
pub fn check_overlap(
    subnet: IpNet,
    node: &str,
    taken: &[(IpNet, String, String)],
) -> Result<(), DockerError> {
    for (other, other_node, what) in taken {
        let overlaps = other.contains(&subnet.network()) || subnet.contains(&other.network());
        if !overlaps {
            continue;
        }
        if *other == subnet && other_node != node {
            continue;
        }
        return Err(DockerError::new(format!(
            "subnet {subnet} overlaps {other}, the subnet of {what} on node {other_node}: \
             choose another subnet{}",
            if *other == subnet {
                " (a subnet is one network per Docker host)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// The first 12 characters of a Docker ID, as `docker network ls` shows it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn put<T: Serialize>(key: &str, value: &T) -> TxnOp {
    TxnOp::Put {
        key: key.to_string(),
        value: serde_json::to_vec(value).unwrap_or_default(),
        lease: None,
    }
}

async fn read<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, DockerError> {
    match store.get(key).await? {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| DockerError::new(format!("unreadable record {key}: {e}"))),
        None => Ok(None),
    }
}

async fn list<T: for<'de> Deserialize<'de>>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<T>, DockerError> {
    let mut out = Vec::new();
    for kv in store.range(prefix).await?.kvs {
        match serde_json::from_slice(&kv.value) {
            Ok(v) => out.push(v),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable Docker record")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> Pool {
        Pool {
            cidr: cidr.parse().unwrap(),
            block_prefix: 26,
            disabled: false,
        }
    }

    #[test]
    fn a_subnet_must_lie_inside_a_pool() {
        let pools = [pool("10.244.0.0/16")];
        assert!(check_in_pools("10.244.5.0/24".parse().unwrap(), &pools).is_ok());
        let e = check_in_pools("172.18.0.0/16".parse().unwrap(), &pools).unwrap_err();
        assert!(
            e.0.contains("outside every strait pool (10.244.0.0/16)"),
            "{e}"
        );
        let e = check_in_pools("fd00::/64".parse().unwrap(), &pools).unwrap_err();
        assert!(e.0.contains("no IPv6 pool"), "{e}");
    }

    #[test]
    fn the_same_subnet_on_another_node_is_the_same_network() {
        let taken = [(
            "10.244.5.0/24".parse().unwrap(),
            "node-b".to_string(),
            "network web".to_string(),
        )];
        let s: IpNet = "10.244.5.0/24".parse().unwrap();
        assert!(check_overlap(s, "node-a", &taken).is_ok());
        let e = check_overlap(s, "node-b", &taken).unwrap_err();
        assert!(e.0.contains("one network per Docker host"), "{e}");
        let e = check_overlap("10.244.5.128/25".parse().unwrap(), "node-a", &taken).unwrap_err();
        assert!(
            e.0.contains("overlaps 10.244.5.0/24, the subnet of network web"),
            "{e}"
        );
        assert!(check_overlap("10.244.6.0/24".parse().unwrap(), "node-b", &taken).is_ok());
    }
}
