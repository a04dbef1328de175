//! Attachments whose container end a runtime moves itself: Docker's remote driver
//! protocol. The driver makes a veth with both ends on the host at CreateEndpoint,
//! libnetwork moves the container end into the container at Join and configures it,
//! and the driver deletes the pair at DeleteEndpoint.
//!
//! Everything else is an ordinary attachment: the same endpoint record (so `netctl
//! endpoints`, policy and the fast path see it), the same host side, the same
//! events, leak check and sweep. Two things differ from CNI ADD:
//!
//! * the addresses are Docker's choice. Either strait reserves them now, under the
//!   attachment's own handle, as static addresses ([`Reservation::Static`]: Docker's
//!   default IPAM picked them from a subnet inside a strait pool), or Docker already
//!   holds them through strait's IPAM driver ([`Reservation::Held`]): the record then
//!   names that handle, and removing the attachment leaves it to Docker's
//!   ReleaseAddress.
//! * the record is written before the container's namespace is known; Join fills it
//!   in ([`Attacher::set_handover_netns`]).

use std::net::IpAddr;

use strait_api::Endpoint;
use tracing::{info, warn};

use super::{AttachError, Attacher, unix_now};
use crate::endpoint::{self, VethCreated, VethSpec};
use crate::hostnet::HostNet;
use crate::ipam::{AllocRequest, Family};
use crate::netlink::format_mac;
use crate::store::{Compare, Txn};

/// Where the addresses of a handed-over attachment are reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserve them now, under the attachment's id, as static addresses.
    Static,
    /// Already held under this handle (Docker's IPAM calls to strait).
    Held(String),
}

/// One attachment to build for a runtime that moves the container end itself.
#[derive(Debug, Clone)]
pub struct HandoverRequest {
    /// The record's id (its key), chosen by the caller so it can find it again.
    pub id: String,
    /// The network's name, as shown.
    pub network: String,
    /// The runtime's id of the attachment (Docker's endpoint ID).
    pub container_id: String,
    /// The container end's name on the host until the runtime renames it.
    pub peer_ifname: String,
    pub host_ifname: String,
    pub ips: Vec<IpAddr>,
    pub reservation: Reservation,
    pub mac: Option<[u8; 6]>,
    pub pod: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl<K: HostNet> Attacher<K> {
    /// Builds the attachment: reserves (or adopts) the addresses, records it, makes the
    /// veth, puts policy in place. A failure leaves nothing behind.
    pub async fn add_handover(&self, req: HandoverRequest) -> Result<VethCreated, AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        let id = req.id.clone();
        let _guard = self.locks.lock(&id).await;
        if let Some(old) = self.records.get(&id).await? {
            if self.host_end_present(&old.host_ifname).await? {
                return Err(AttachError::Duplicate(id));
            }
            warn!(%id, "the attachment's interface is gone; releasing its record and adding it again");
            self.drop_record(&old).await?;
        }
        let container_mac = req
            .mac
            .unwrap_or_else(|| endpoint::default_container_mac(&req.host_ifname));
        let mut ep = Endpoint {
            id: id.clone(),
            node: self.cfg.node.clone(),
            network: req.network.clone(),
            container_id: req.container_id.clone(),
            ifname: req.peer_ifname.clone(),
            netns: String::new(),
            host_ifname: req.host_ifname.clone(),
            mac: format_mac(&container_mac),
            host_mac: format_mac(&endpoint::host_mac(&req.host_ifname)),
            ips: req.ips.iter().map(|ip| ipnet::IpNet::from(*ip)).collect(),
            mtu: self.cfg.container_mtu(),
            namespace: strait_api::default_namespace(),
            pod: req.pod.clone(),
            labels: req.labels.clone(),
            named_ports: Vec::new(),
            identity: None,
            handle: match &req.reservation {
                Reservation::Static => id.clone(),
                Reservation::Held(handle) => handle.clone(),
            },
            created: unix_now(),
            host_ports: false,
            port_mappings: Vec::new(),
        };
        self.name_identity(&mut ep).await?;
        let record_op = self.records.put_op(ep.clone());
        match &req.reservation {
            Reservation::Static => {
                let families: Vec<Family> = req.ips.iter().map(Family::of).collect();
                self.ipam
                    .allocate(AllocRequest {
                        handle: id.clone(),
                        network: req.network.clone(),
                        container_id: req.container_id.clone(),
                        ifname: req.peer_ifname.clone(),
                        static_ips: req.ips.clone(),
                        families,
                        extra: Some(record_op),
                        ..Default::default()
                    })
                    .await?;
            }
            Reservation::Held(_) => {
                let key = super::records::endpoint_key(&self.cfg.node, &id);
                let txn = Txn::new()
                    .when([Compare::absent(key)])
                    .and_then(record_op(&req.ips));
                if !self.store.txn(txn).await?.succeeded {
                    return Err(AttachError::Duplicate(id));
                }
            }
        }

        let spec = VethSpec {
            host_ifname: req.host_ifname.clone(),
            container_ifname: req.peer_ifname.clone(),
            netns: Default::default(),
            ips: req.ips.clone(),
            mtu: self.cfg.container_mtu(),
            container_mac: Some(container_mac),
            owner: Some(self.cfg.owner.clone()),
            handover: true,
        };
        match self.build_interface(&ep, &spec).await {
            Ok(created) => {
                info!(%id, host_ifname = %req.host_ifname, ips = ?req.ips, "attached for hand-over");
                Ok(created)
            }
            Err(e) => {
                if let Err(re) = self.drop_record(&ep).await {
                    warn!(%id, error = %re, "undoing a failed hand-over attachment");
                }
                Err(e)
            }
        }
    }

    /// Join: the namespace the runtime moved the container end into.
    pub async fn set_handover_netns(&self, id: &str, netns: &str) -> Result<(), AttachError> {
        let netns = netns.to_string();
        self.records
            .update(id, move |r| {
                r.netns = netns.clone().into();
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Shown names learnt after the attachment was made (Docker's container name and
    /// network name, the interface's name inside the container).
    pub async fn set_handover_names(
        &self,
        id: &str,
        network: Option<String>,
        pod: Option<String>,
        ifname: Option<String>,
    ) -> Result<(), AttachError> {
        self.records
            .update(id, move |r| {
                if let Some(n) = &network {
                    r.network = n.clone();
                }
                if pod.is_some() {
                    r.pod = pod.clone();
                }
                if let Some(i) = &ifname {
                    r.ifname = i.clone();
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// DeleteEndpoint: the veth goes, the record goes, and the addresses go unless
    /// Docker's IPAM holds them. Nothing left is success.
    pub async fn remove_handover(&self, id: &str, host_ifname: &str) -> Result<(), AttachError> {
        // A record held for Docker's IPAM names another handle: releasing the
        // attachment's own (absent) handle then only deletes the record, in one
        // transaction, and Docker releases the addresses.
        self.release_attachment(id, host_ifname).await
    }

    /// The record of `id`, if any.
    pub async fn handover_record(&self, id: &str) -> Result<Option<Endpoint>, AttachError> {
        Ok(self.records.get(id).await?)
    }

    /// Removes the record (and the reservation it owns) of an attachment being undone.
    async fn drop_record(&self, ep: &Endpoint) -> Result<(), AttachError> {
        let op = self.records.delete_op(&ep.id);
        if ep.handle == ep.id {
            self.ipam.release_with(&ep.id, vec![op]).await?;
        } else {
            self.store.txn(Txn::new().and_then([op])).await?;
        }
        Ok(())
    }
}
