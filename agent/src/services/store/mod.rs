//! Services in the store: the documents `netctl service apply` writes, and the claims
//! that keep every cluster IP and node port to one service.
//!
//! Keys below `/strait/v1/`:
//! - `services/<ns>/<name>`: `{"source": <the document as given>, "service": <the
//!   normalized Service, with the cluster IPs and node ports it was given>}`;
//! - `endpointslices/<ns>/<name>`: `{"source": …, "slice": <EndpointSlice>}`;
//! - `service-ips/<ip>` and `node-ports/<tcp|udp>/<port>`: `<ns>/<name>`, the service
//!   holding it. A claim is written in the transaction that writes its service, on
//!   the condition that it is absent (or already that service's), so two agents
//!   applying at once can never give one address to two services.
//!
//! [`ServiceStore::apply`] reads the cluster's claims, fills in what the documents left
//! to the agent (cluster IPs from the service pool, node ports from the range; a
//! service applied again keeps what it had, as Kubernetes keeps `clusterIP`), checks
//! what they gave (inside the pool, not another service's), and writes everything in
//! one transaction: all or nothing. A transaction that lost a race is retried on a
//! fresh read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_api::Origin;
use strait_services::documents::{Document, Parsed};
use strait_services::model::{EndpointSlice, Family, FamilyPolicy, Protocol, Service};

use super::pool;
use crate::store::{Compare, PREFIX, Revision, Store, StoreError, Txn, TxnGroup, TxnOp};

/// Attempts of one apply against concurrent writers before it gives up.
const ATTEMPTS: usize = 5;

pub fn services_prefix() -> String {
    format!("{PREFIX}services/")
}

pub fn slices_prefix() -> String {
    format!("{PREFIX}endpointslices/")
}

fn ips_prefix() -> String {
    format!("{PREFIX}service-ips/")
}

fn ports_prefix() -> String {
    format!("{PREFIX}node-ports/")
}

fn ip_claim(ip: &IpAddr) -> String {
    format!("{}{ip}", ips_prefix())
}

/// The claim that holds node port `port` to one service, cluster-wide (host ports
/// check it too: `attach::hostports`).
pub fn port_claim(protocol: Protocol, port: u16) -> String {
    let p = match protocol {
        Protocol::TCP => "tcp",
        Protocol::UDP => "udp",
    };
    format!("{}{p}/{port}", ports_prefix())
}

/// A stored service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceValue {
    pub source: serde_json::Value,
    pub service: Service,
    /// Who wrote it (`netctl`, or the Kubernetes API server through the agent).
    #[serde(default, skip_serializing_if = "Origin::is_netctl")]
    pub origin: Origin,
}

/// A stored EndpointSlice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceValue {
    pub source: serde_json::Value,
    pub slice: EndpointSlice,
    #[serde(default, skip_serializing_if = "Origin::is_netctl")]
    pub origin: Origin,
}

/// One object as `get` and `list` return it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// Below `/strait/v1/`: `services/NS/NAME` or `endpointslices/NS/NAME`.
    pub key: String,
    pub revision: Revision,
    pub source: serde_json::Value,
    /// The normalized object (with what the agent allocated), as JSON.
    pub normalized: serde_json::Value,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: stored value is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}: not a service or endpoint slice key (services/NS/NAME, endpointslices/NS/NAME)")]
    BadKey(String),
    #[error("{0} appears twice in one apply")]
    Duplicate(String),
    /// The documents ask for what the cluster cannot give: a refusal, nothing written.
    #[error("{0}")]
    Refused(String),
    #[error("other agents kept changing the services while this apply ran; try again")]
    Contended,
    #[error(
        "{0} comes from the Kubernetes API server, which owns it: change it with kubectl \
         (nothing was written)"
    )]
    OwnedByKubernetes(String),
}

pub fn decode_service(key: &str, value: &[u8]) -> Result<ServiceValue, ServiceStoreError> {
    serde_json::from_slice(value).map_err(|e| ServiceStoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub fn decode_slice(key: &str, value: &[u8]) -> Result<SliceValue, ServiceStoreError> {
    serde_json::from_slice(value).map_err(|e| ServiceStoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// What one apply wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub revision: Revision,
    pub objects: Vec<AppliedObject>,
}

/// Per object of an apply, in document order: its key, and the service as written
/// (with its allocated addresses and ports); `None` for a slice.
pub type AppliedObject = (String, Option<Service>);

/// The cluster's services and claims as one apply read them.
struct Snapshot {
    services: BTreeMap<String, (ServiceValue, Revision)>,
    ips: BTreeMap<IpAddr, String>,
    ports: BTreeMap<(Protocol, u16), String>,
}

#[derive(Clone)]
pub struct ServiceStore {
    store: Arc<dyn Store>,
    pools: Vec<IpNet>,
}

impl ServiceStore {
    pub fn new(store: Arc<dyn Store>, pools: Vec<IpNet>) -> Self {
        Self { store, pools }
    }

    /// Writes every object of one apply, with what the agent allocates for them.
    /// Everything is checked and allocated before anything is written; the writes
    /// are one transaction, or, past etcd's limit of operations per transaction,
    /// several, each service whole with its claims in one. Should another writer
    /// get in between (a claim taken, a service changed), the apply is planned again
    /// on the store as it then is.
    pub async fn apply(&self, parsed: &[Parsed]) -> Result<Applied, ServiceStoreError> {
        self.apply_as(parsed, Origin::Netctl).await
    }

    /// [`ServiceStore::apply`] by `origin`. `netctl` may not change what the
    /// Kubernetes API server owns; the Kubernetes integration may change anything.
    pub async fn apply_as(
        &self,
        parsed: &[Parsed],
        origin: Origin,
    ) -> Result<Applied, ServiceStoreError> {
        let mut seen = BTreeSet::new();
        for p in parsed {
            let key = key_of(&p.document);
            if !seen.insert(key.clone()) {
                return Err(ServiceStoreError::Duplicate(key));
            }
            if origin == Origin::Netctl && self.owned_by_kubernetes(&key).await? {
                return Err(ServiceStoreError::OwnedByKubernetes(key));
            }
        }
        for _ in 0..ATTEMPTS {
            let snap = self.snapshot().await?;
            let (groups, objects) = self.plan(parsed, &snap, origin)?;
            let mut revision = None;
            let mut written = true;
            for txn in Txn::packed(groups) {
                let resp = self.store.txn(txn).await?;
                if !resp.succeeded {
                    written = false;
                    break;
                }
                revision = Some(resp.revision);
            }
            if written {
                let revision = match revision {
                    Some(r) => r,
                    None => self.store.revision().await?,
                };
                return Ok(Applied { revision, objects });
            }
        }
        Err(ServiceStoreError::Contended)
    }

    async fn snapshot(&self) -> Result<Snapshot, ServiceStoreError> {
        let mut services = BTreeMap::new();
        for kv in self.store.range(&services_prefix()).await?.kvs {
            let short = kv.key.strip_prefix(PREFIX).unwrap_or(&kv.key).to_string();
            services.insert(
                short,
                (decode_service(&kv.key, &kv.value)?, kv.mod_revision),
            );
        }
        let mut ips = BTreeMap::new();
        for kv in self.store.range(&ips_prefix()).await?.kvs {
            if let Some(ip) = kv
                .key
                .strip_prefix(&ips_prefix())
                .and_then(|s| s.parse().ok())
            {
                ips.insert(ip, String::from_utf8_lossy(&kv.value).into_owned());
            }
        }
        let mut ports = BTreeMap::new();
        for kv in self.store.range(&ports_prefix()).await?.kvs {
            let rest = kv.key.strip_prefix(&ports_prefix()).unwrap_or_default();
            let parsed = rest.split_once('/').and_then(|(p, n)| {
                let protocol = match p {
                    "tcp" => Protocol::TCP,
                    "udp" => Protocol::UDP,
                    _ => return None,
                };
                Some((protocol, n.parse().ok()?))
            });
            if let Some(k) = parsed {
                ports.insert(k, String::from_utf8_lossy(&kv.value).into_owned());
            }
        }
        Ok(Snapshot {
            services,
            ips,
            ports,
        })
    }

    /// The writes for `parsed` on the cluster as `snap` has it: per object, the
    /// compares and the operations that go in one transaction.
    fn plan(
        &self,
        parsed: &[Parsed],
        snap: &Snapshot,
        origin: Origin,
    ) -> Result<(Vec<TxnGroup>, Vec<AppliedObject>), ServiceStoreError> {
        let mut groups = Vec::new();
        let mut objects = Vec::new();
        // Claims made by this apply so far, so two new services of one apply do not
        // pick the same address.
        let mut ips_taken: BTreeSet<IpAddr> = snap.ips.keys().copied().collect();
        let mut ports_taken: BTreeSet<(Protocol, u16)> = snap.ports.keys().copied().collect();
        for p in parsed {
            let key = key_of(&p.document);
            let full = format!("{PREFIX}{key}");
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            match &p.document {
                Document::EndpointSlice(slice) => {
                    let value = SliceValue {
                        source: p.source.clone(),
                        slice: slice.clone(),
                        origin,
                    };
                    ops.push(TxnOp::Put {
                        key: full,
                        value: serde_json::to_vec(&value).unwrap_or_default(),
                        lease: None,
                    });
                    objects.push((key, None));
                }
                Document::Service(doc) => {
                    let id = doc.id();
                    let old = snap.services.get(&key);
                    compares.push(match old {
                        Some((_, rev)) => Compare::mod_revision(full.clone(), *rev),
                        None => Compare::absent(full.clone()),
                    });
                    let old_service = old.map(|(v, _)| &v.service);
                    let mut service = doc.clone();
                    self.cluster_ips(&mut service, old_service, snap, &mut ips_taken)?;
                    node_ports(&mut service, old_service, snap, &mut ports_taken)?;
                    // Claims: the new ones written on the condition they are free (or
                    // ours already); the ones the old version held and this one does
                    // not, released.
                    let owned = id.as_bytes().to_vec();
                    // External IPs are the operator's addresses, which other things may
                    // answer on too: not claimed.
                    let claims = claims_of(&service);
                    for claim in &claims {
                        let ours_already =
                            old_service.is_some_and(|o| claims_of(o).contains(claim));
                        compares.push(if ours_already {
                            Compare::value(claim.clone(), owned.clone())
                        } else {
                            Compare::absent(claim.clone())
                        });
                        ops.push(TxnOp::Put {
                            key: claim.clone(),
                            value: owned.clone(),
                            lease: None,
                        });
                    }
                    if let Some(o) = old_service {
                        for released in claims_of(o).difference(&claims) {
                            ops.push(TxnOp::Delete {
                                key: released.clone(),
                            });
                        }
                    }
                    let value = ServiceValue {
                        source: p.source.clone(),
                        service: service.clone(),
                        origin,
                    };
                    ops.push(TxnOp::Put {
                        key: full,
                        value: serde_json::to_vec(&value).unwrap_or_default(),
                        lease: None,
                    });
                    objects.push((key, Some(service)));
                }
            }
            groups.push((compares, ops));
        }
        Ok((groups, objects))
    }

    /// Fills in `service`'s cluster IPs, or checks the ones its document gave.
    fn cluster_ips(
        &self,
        service: &mut Service,
        old: Option<&Service>,
        snap: &Snapshot,
        taken: &mut BTreeSet<IpAddr>,
    ) -> Result<(), ServiceStoreError> {
        let id = service.id();
        let refuse = |m: String| ServiceStoreError::Refused(format!("Service {id}: {m}"));
        if !service.cluster_ips.is_empty() {
            for ip in &service.cluster_ips {
                pool::usable(&self.pools, *ip).map_err(&refuse)?;
                if let Some(holder) = snap.ips.get(ip).filter(|h| **h != id) {
                    return Err(refuse(format!(
                        "cluster IP {ip} is already Service {holder}'s"
                    )));
                }
            }
            if let Some(old) = old.filter(|o| o.cluster_ips != service.cluster_ips) {
                return Err(refuse(format!(
                    "the cluster IPs are {:?} and cannot change (as in Kubernetes): delete \
                     the service and apply it again",
                    old.cluster_ips
                )));
            }
            taken.extend(service.cluster_ips.iter().copied());
            return Ok(());
        }
        // Applied again without addresses: it keeps those it has (for the families it
        // still wants).
        if let Some(old) = old {
            let kept: Vec<IpAddr> = service
                .ip_families
                .iter()
                .filter_map(|f| old.cluster_ips.iter().find(|ip| Family::of(ip) == *f))
                .copied()
                .collect();
            if kept.len() == service.ip_families.len() {
                service.cluster_ips = kept;
                return Ok(());
            }
        }
        let mut ips = Vec::new();
        for (i, family) in service.ip_families.clone().iter().enumerate() {
            let kept = old
                .and_then(|o| o.cluster_ips.iter().find(|ip| Family::of(ip) == *family))
                .copied();
            if let Some(ip) = kept {
                ips.push(ip);
                continue;
            }
            let Some(pool) = pool::pool_of(&self.pools, *family) else {
                let required = i == 0 || service.ip_family_policy == FamilyPolicy::RequireDualStack;
                if required {
                    return Err(refuse(format!(
                        "it needs an {family} address and there is no {family} service \
                         pool (--service-pool)"
                    )));
                }
                continue;
            };
            let ip = pool::free_address(pool, taken, &id)
                .ok_or_else(|| refuse(format!("the service pool {pool} is full")))?;
            taken.insert(ip);
            ips.push(ip);
        }
        service.ip_families = ips.iter().map(Family::of).collect();
        service.cluster_ips = ips;
        Ok(())
    }

    /// Deletes a service (with its claims) or a slice; whether it existed. `netctl`
    /// may not delete what the Kubernetes API server owns.
    pub async fn delete(&self, key: &str) -> Result<(bool, Revision), ServiceStoreError> {
        if self.owned_by_kubernetes(key).await? {
            return Err(ServiceStoreError::OwnedByKubernetes(
                key.strip_prefix(PREFIX).unwrap_or(key).to_string(),
            ));
        }
        self.delete_as_kubernetes(key).await
    }

    /// Whether `key` holds an object the Kubernetes API server owns.
    async fn owned_by_kubernetes(&self, key: &str) -> Result<bool, ServiceStoreError> {
        Ok(self
            .get(key)
            .await?
            .is_some_and(|o| o.origin == Origin::Kubernetes))
    }

    /// [`ServiceStore::delete`] for the Kubernetes integration: whoever wrote it.
    pub async fn delete_as_kubernetes(
        &self,
        key: &str,
    ) -> Result<(bool, Revision), ServiceStoreError> {
        let full = full_key(key)?;
        for _ in 0..ATTEMPTS {
            let Some(kv) = self.store.get(&full).await? else {
                return Ok((false, self.store.revision().await?));
            };
            let mut ops = vec![TxnOp::Delete { key: full.clone() }];
            if full.starts_with(&services_prefix()) {
                let v = decode_service(&kv.key, &kv.value)?;
                let owned = v.service.id().into_bytes();
                // A claim goes only if it is still this service's.
                for claim in claims_of(&v.service) {
                    if let Some(c) = self.store.get(&claim).await?
                        && c.value == owned
                    {
                        ops.push(TxnOp::Delete { key: claim });
                    }
                }
            }
            let resp = self
                .store
                .txn(
                    Txn::new()
                        .when([Compare::mod_revision(full.clone(), kv.mod_revision)])
                        .and_then(ops),
                )
                .await?;
            if resp.succeeded {
                return Ok((true, resp.revision));
            }
        }
        Err(ServiceStoreError::Contended)
    }

    pub async fn get(&self, key: &str) -> Result<Option<StoredObject>, ServiceStoreError> {
        let full = full_key(key)?;
        match self.store.get(&full).await? {
            Some(kv) => object(&kv.key, &kv.value, kv.mod_revision).map(Some),
            None => Ok(None),
        }
    }

    /// Every service and slice, sorted by key.
    pub async fn list(&self) -> Result<Vec<StoredObject>, ServiceStoreError> {
        let mut out = Vec::new();
        for prefix in [services_prefix(), slices_prefix()] {
            for kv in self.store.range(&prefix).await?.kvs {
                out.push(object(&kv.key, &kv.value, kv.mod_revision)?);
            }
        }
        Ok(out)
    }
}

/// The claim keys a stored service holds.
fn claims_of(s: &Service) -> BTreeSet<String> {
    let mut claims: BTreeSet<String> = s.cluster_ips.iter().map(ip_claim).collect();
    claims.extend(
        s.ports
            .iter()
            .filter_map(|p| p.node_port.map(|n| port_claim(p.protocol, n))),
    );
    claims
}

/// Fills in the node ports a NodePort service's document left out (keeping those an
/// earlier version had), and checks the given ones are free.
fn node_ports(
    service: &mut Service,
    old: Option<&Service>,
    snap: &Snapshot,
    taken: &mut BTreeSet<(Protocol, u16)>,
) -> Result<(), ServiceStoreError> {
    let id = service.id();
    for i in 0..service.ports.len() {
        let (protocol, port, name) = {
            let p = &service.ports[i];
            (p.protocol, p.port, p.name.clone())
        };
        if let Some(n) = service.ports[i].node_port {
            if let Some(holder) = snap.ports.get(&(protocol, n)).filter(|h| **h != id) {
                return Err(ServiceStoreError::Refused(format!(
                    "Service {id}: node port {n}/{protocol} is already Service {holder}'s"
                )));
            }
            taken.insert((protocol, n));
            continue;
        }
        if service.kind != strait_services::model::ServiceKind::NodePort {
            continue;
        }
        let kept = old.and_then(|o| {
            o.ports
                .iter()
                .find(|p| p.name == name && p.protocol == protocol && p.port == port)
                .and_then(|p| p.node_port)
        });
        let n = match kept {
            Some(n) => n,
            None => {
                let same_protocol: BTreeSet<u16> = taken
                    .iter()
                    .filter(|(p, _)| *p == protocol)
                    .map(|(_, n)| *n)
                    .collect();
                pool::free_node_port(&same_protocol, &format!("{id}/{name}")).ok_or_else(|| {
                    ServiceStoreError::Refused(format!(
                        "Service {id}: no {protocol} node port is free"
                    ))
                })?
            }
        };
        taken.insert((protocol, n));
        service.ports[i].node_port = Some(n);
    }
    Ok(())
}

/// `services/NS/NAME` or `endpointslices/NS/NAME`.
pub fn key_of(doc: &Document) -> String {
    match doc {
        Document::Service(s) => format!("services/{}/{}", s.namespace, s.name),
        Document::EndpointSlice(s) => format!("endpointslices/{}/{}", s.namespace, s.name),
    }
}

fn full_key(key: &str) -> Result<String, ServiceStoreError> {
    let short = key.strip_prefix(PREFIX).unwrap_or(key);
    let ok = matches!(
        short.split('/').collect::<Vec<_>>().as_slice(),
        ["services" | "endpointslices", ns, name] if !ns.is_empty() && !name.is_empty()
    );
    if ok {
        Ok(format!("{PREFIX}{short}"))
    } else {
        Err(ServiceStoreError::BadKey(key.to_string()))
    }
}

fn object(key: &str, value: &[u8], revision: Revision) -> Result<StoredObject, ServiceStoreError> {
    let short = key.strip_prefix(PREFIX).unwrap_or(key).to_string();
    if short.starts_with("services/") {
        let v = decode_service(key, value)?;
        Ok(StoredObject {
            key: short,
            revision,
            source: v.source,
            normalized: serde_json::to_value(&v.service).unwrap_or_default(),
            origin: v.origin,
        })
    } else {
        let v = decode_slice(key, value)?;
        Ok(StoredObject {
            key: short,
            revision,
            source: v.source,
            normalized: serde_json::to_value(&v.slice).unwrap_or_default(),
            origin: v.origin,
        })
    }
}

#[cfg(test)]
mod tests;
