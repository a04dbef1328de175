//! CNI ADD: reserve, record, plumb — or leave nothing behind.

use std::net::IpAddr;
use std::path::PathBuf;

use strait_api::{AddRequest, AddResponse, Endpoint, InterfaceInfo, IpInfo, RouteInfo};
use tracing::{info, warn};

use super::events::EndpointEvent;
use super::records::attachment_id;
use super::validate::{check_mtu, check_netns, check_policy_facts, parse_mac, validate};
use super::{AttachError, Attacher, lock, unix_now};
use crate::endpoint::{self, VethCreated, VethSpec};
use crate::hostnet::HostNet;
use crate::ipam::AllocRequest;
use crate::netlink::format_mac;

impl<K: HostNet> Attacher<K> {
    pub async fn add(&self, req: AddRequest) -> Result<AddResponse, AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        validate(&req.network, &req.container_id, &req.ifname)?;
        // Checked before anything is reserved, so a bad MAC costs nothing to undo.
        let requested_mac = match &req.mac {
            Some(m) => Some(parse_mac(m).map_err(AttachError::Invalid)?),
            None => None,
        };
        let (namespace, named_ports) = check_policy_facts(&req)?;
        let facts = self.facts_at_add(
            &namespace,
            req.pod.as_deref(),
            super::labels::PodFacts {
                labels: req.labels.clone(),
                named_ports,
            },
        );
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let _guard = self.locks.lock(&id).await;

        if let Some(old) = self.records.get(&id).await? {
            if self.host_end_present(&old.host_ifname).await? {
                return Err(AttachError::Duplicate(id));
            }
            // A record without its interface: the ADD that wrote it never answered
            // (the agent died before or while plumbing, or the interface was taken
            // away since). The runtime knows of no attachment, so this ADD is its
            // retry: the old reservation goes, and the ADD starts afresh.
            warn!(%id, link = %old.host_ifname, "the attachment's interface is gone; releasing its record and adding it again");
            self.ipam
                .release_with(&id, vec![self.records.delete_op(&id)])
                .await?;
        }
        // Whatever DEL of this attachment waits in the queue came before this ADD, and
        // what it had to release is released now.
        self.forget_queued_del(&req.network, &req.container_id, &req.ifname);
        check_netns(&self.host, &req.netns)?;
        // Before anything is reserved: a refused host port costs nothing to undo.
        let (port_mappings, host_ports_held) =
            self.hold_host_ports(&id, &req.port_mappings).await?;

        let host_ifname = endpoint::host_ifname(&req.network, &req.container_id, &req.ifname);
        let container_mac =
            requested_mac.unwrap_or_else(|| endpoint::default_container_mac(&host_ifname));
        let mtu = req.mtu.unwrap_or_else(|| self.cfg.container_mtu());
        check_mtu(mtu, self.ipam.pools())?;
        // The record is complete but for the addresses, which IPAM picks: it is written
        // in the allocation's own transaction, so it exists exactly when they do.
        let mut ep = Endpoint {
            id: id.clone(),
            node: self.cfg.node.clone(),
            network: req.network.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            host_ifname: host_ifname.clone(),
            mac: format_mac(&container_mac),
            host_mac: format_mac(&endpoint::host_mac(&host_ifname)),
            ips: Vec::new(),
            mtu,
            labels: facts.labels,
            namespace,
            pod: req.pod.clone(),
            named_ports: facts.named_ports,
            // The policy control plane allocates it from the record.
            identity: None,
            handle: id.clone(),
            created: unix_now(),
            host_ports: req.host_ports,
            port_mappings,
        };
        self.name_identity(&mut ep).await?;
        let record_op = self.records.put_op(ep.clone());

        let t_start = std::time::Instant::now();
        let alloc = self
            .ipam
            .allocate(AllocRequest {
                handle: id.clone(),
                network: req.network.clone(),
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                netns: req.netns.clone(),
                static_ips: req.ips.clone(),
                extra: Some(record_op),
                ..Default::default()
            })
            .await?;
        let ipam_ms = t_start.elapsed().as_secs_f64() * 1e3;
        // The record holding them is written (or the ADD failed, holding none).
        drop(host_ports_held);
        let ep = Endpoint {
            ips: alloc.ips.iter().map(|ip| host_net(*ip)).collect(),
            ..ep
        };

        let spec = VethSpec {
            host_ifname: host_ifname.clone(),
            container_ifname: req.ifname.clone(),
            netns: PathBuf::from(&req.netns),
            ips: alloc.ips.clone(),
            mtu,
            container_mac: Some(container_mac),
            owner: Some(self.cfg.owner.clone()),
            handover: false,
        };
        let t_plumb = std::time::Instant::now();
        match self.build_interface(&ep, &spec).await {
            Ok(created) => {
                info!(
                    %id, host_ifname, ips = ?alloc.ips, ipam_ms,
                    plumb_ms = t_plumb.elapsed().as_secs_f64() * 1e3,
                    "attached"
                );
                Ok(add_response(&ep, &created))
            }
            Err(e) => {
                // Undo the reservation and the record together; plumb (or enforce)
                // already undid the interface.
                let drop_record = vec![self.records.delete_op(&id)];
                if let Err(re) = self.ipam.release_with(&id, drop_record).await {
                    warn!(%id, error = %re, "releasing addresses after a failed ADD");
                }
                Err(e)
            }
        }
    }

    /// Policy: the record names the endpoint's identity from the start.
    pub(super) async fn name_identity(&self, ep: &mut Endpoint) -> Result<(), AttachError> {
        if let Some(enforcement) = self.enforcement.get() {
            ep.identity = Some(
                enforcement
                    .identity(ep)
                    .await
                    .map_err(AttachError::Policy)?,
            );
        }
        Ok(())
    }

    /// Builds the recorded endpoint's veth, puts its policy in place and tells the
    /// subscribers. On failure nothing of the interface is left; the caller undoes the
    /// record and the reservation.
    pub(super) async fn build_interface(
        &self,
        ep: &Endpoint,
        spec: &VethSpec,
    ) -> Result<VethCreated, AttachError> {
        let created = self.plumb(spec).await?;
        self.enforce(ep, &created).await?;
        self.publish(&EndpointEvent::Attached {
            endpoint: ep,
            host_ifindex: created.host_ifindex,
        });
        Ok(created)
    }

    /// Puts policy in place on the new veth before ADD answers; on failure the veth
    /// goes (the caller releases the rest).
    pub(super) async fn enforce(
        &self,
        ep: &Endpoint,
        created: &VethCreated,
    ) -> Result<(), AttachError> {
        let Some(enforcement) = self.enforcement.get() else {
            return Ok(());
        };
        let key = super::records::endpoint_key(&self.cfg.node, &ep.id);
        if let Err(e) = enforcement.enforce(&key, ep, created.host_ifindex).await {
            self.delete_link_in_background(created.host_ifname.clone());
            return Err(AttachError::Policy(e));
        }
        Ok(())
    }

    /// Builds the veth. A link of the same name with no record (the caller checked,
    /// under the attachment's lock) is a leftover of a crash mid-ADD: it is ours to
    /// remove, and the creation is tried once more.
    async fn plumb(&self, spec: &VethSpec) -> Result<VethCreated, AttachError> {
        let name = &spec.host_ifname;
        self.wait_for_deletion(name).await;
        // Taken after the wait: an ADD that waits for its old veth holds no slot. (The
        // semaphore is never closed; if it were, building without a slot is harmless.)
        let _slot = self.plumbing.acquire().await.ok();
        lock(&self.creating).insert(name.to_string());
        let result = match self.host.create_endpoint(spec).await {
            Err(endpoint::EndpointError::HostLinkExists { .. }) => {
                warn!(link = %name, "removing a leftover link of the same name");
                match self.host.delete_link(name).await {
                    Ok(()) => self.host.create_endpoint(spec).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        lock(&self.creating).remove(name);
        Ok(result?)
    }

    /// Whether the host end `name` is on the host and not on its way out.
    pub(super) async fn host_end_present(&self, name: &str) -> Result<bool, AttachError> {
        if self.deleting.contains(name) {
            return Ok(false);
        }
        let link = self
            .host
            .link_by_name(name)
            .await
            .map_err(endpoint::EndpointError::from)?;
        Ok(link.is_some())
    }

    async fn wait_for_deletion(&self, host_ifname: &str) {
        if let Some(mut rx) = self.deleting.subscribe(host_ifname) {
            // An error means the deleting task is gone; either way the deletion is over.
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

/// How many ADDs build their interface at once: one per CPU, at most 8.
///
/// The rest wait their turn in arrival order (tokio's semaphore is fair). Almost all of
/// a setup is kernel work, most of it under the kernel's one rtnl lock, so more setups
/// in flight add no throughput; they only share the CPUs, and then every ADD of a
/// burst finishes near the end of it. First come, first served lets each finish soon
/// after it arrives (`scripts/bench-cni.sh` measures the burst; docs/testing.md has
/// the figures). A single slot did no better than none.
pub(super) fn plumbing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

fn host_net(ip: IpAddr) -> ipnet::IpNet {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    ipnet::IpNet::new(ip, len).unwrap_or_else(|_| unreachable!("full-length prefix is valid"))
}

/// The CNI result of a built endpoint: both interfaces, the addresses with their
/// link-local gateways, and a default route per family.
fn add_response(ep: &Endpoint, created: &VethCreated) -> AddResponse {
    let interfaces = vec![
        InterfaceInfo {
            name: created.host_ifname.clone(),
            mac: created.host_mac.clone(),
            sandbox: None,
            mtu: Some(ep.mtu),
        },
        InterfaceInfo {
            name: ep.ifname.clone(),
            mac: created.container_mac.clone(),
            sandbox: Some(ep.netns.clone()),
            mtu: Some(ep.mtu),
        },
    ];
    let mut routes = Vec::new();
    let ips = ep
        .ips
        .iter()
        .map(|net| {
            let gw = if net.addr().is_ipv4() {
                IpAddr::V4(endpoint::GATEWAY_V4)
            } else {
                IpAddr::V6(endpoint::GATEWAY_V6)
            };
            let default: ipnet::IpNet = if gw.is_ipv4() {
                "0.0.0.0/0".parse().unwrap_or_else(|_| unreachable!())
            } else {
                "::/0".parse().unwrap_or_else(|_| unreachable!())
            };
            if !routes.iter().any(|r: &RouteInfo| r.dst == default) {
                routes.push(RouteInfo {
                    dst: default,
                    gw: Some(gw),
                });
            }
            IpInfo {
                address: *net,
                gateway: Some(gw),
                interface: 1,
            }
        })
        .collect();
    AddResponse {
        interfaces,
        ips,
        routes,
        mtu: ep.mtu,
    }
}
