//! The VXLAN device `strait.vxlan`: made to match the configuration, adopted as it is
//! when it already does (no flush: peers' traffic keeps flowing across a restart).

use tracing::{info, warn};

use super::{FabricConfig, FabricError, VXLAN_DEVICE, vtep_mac, vxlan_mtu};
use crate::hostnet::HostNet;
use crate::netlink::{Vxlan, VxlanSpec, ignore_not_found};

/// Ensures `strait.vxlan` exists with the configured VNI, port and local address, no
/// learning, the VTEP MAC of this node, the MTU the underlay leaves room for, and up.
/// A device with other tunnel parameters (or a non-VXLAN link by that name) is
/// recreated; a wrong MTU, MAC or state is fixed in place.
pub(crate) async fn ensure_device(
    nl: &impl HostNet,
    cfg: &FabricConfig,
) -> Result<Vxlan, FabricError> {
    let local = cfg
        .underlay
        .v4
        .map(std::net::IpAddr::V4)
        .or(cfg.underlay.v6.map(std::net::IpAddr::V6))
        .ok_or(FabricError::VxlanWithoutUnderlay)?;
    let underlay = underlay_link(nl, cfg, local).await?;
    let spec = VxlanSpec {
        name: VXLAN_DEVICE.to_string(),
        vni: cfg.vni,
        port: cfg.port,
        local,
        mac: vtep_mac(&cfg.node),
        mtu: vxlan_mtu(underlay.mtu, local.is_ipv6()),
    };
    if let Some(existing) = nl.vxlan_by_name(VXLAN_DEVICE).await? {
        let tunnel_matches = existing.vni == Some(spec.vni)
            && existing.port == Some(spec.port)
            && existing.local == Some(spec.local)
            && !existing.learning;
        if tunnel_matches {
            return fix_in_place(nl, existing, &spec).await;
        }
        warn!(
            device = VXLAN_DEVICE,
            kind = ?existing.link.kind,
            vni = ?existing.vni,
            port = ?existing.port,
            local = ?existing.local,
            learning = existing.learning,
            "recreating the VXLAN device: its tunnel parameters are not the configured ones \
             (vni {}, port {}, local {})",
            spec.vni,
            spec.port,
            spec.local
        );
        ignore_not_found(nl.delete_link_index(existing.link.index).await)?;
    }
    info!(device = VXLAN_DEVICE, vni = spec.vni, port = spec.port, local = %spec.local, mtu = spec.mtu, "creating the VXLAN device");
    crate::netlink::ignore_exists(nl.create_vxlan(&spec).await)?;
    let created = nl.vxlan_by_name(VXLAN_DEVICE).await?.ok_or_else(|| {
        FabricError::Netlink(crate::netlink::NetlinkError::Incomplete {
            op: "create vxlan",
            object: VXLAN_DEVICE.to_string(),
            what: "the device right after creating it",
        })
    })?;
    // Before the first up, so no link-local address is ever generated.
    nl.disable_ipv6_addrgen(created.link.index).await?;
    fix_in_place(nl, created, &spec).await
}

/// The underlay interface: the named one, else the one holding the `local` address.
async fn underlay_link(
    nl: &impl HostNet,
    cfg: &FabricConfig,
    local: std::net::IpAddr,
) -> Result<crate::netlink::Link, FabricError> {
    if let Some(name) = &cfg.underlay.iface {
        return nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| FabricError::NoUnderlayIface(name.clone()));
    }
    let holder = nl
        .all_addresses()
        .await?
        .into_iter()
        .find(|a| a.ip == local)
        .ok_or(FabricError::NoUnderlayLink(local))?;
    nl.link_by_index(holder.index)
        .await?
        .ok_or(FabricError::NoUnderlayLink(local))
}

async fn fix_in_place(
    nl: &impl HostNet,
    mut device: Vxlan,
    spec: &VxlanSpec,
) -> Result<Vxlan, FabricError> {
    let index = device.link.index;
    if device.link.mtu != spec.mtu {
        info!(
            device = VXLAN_DEVICE,
            from = device.link.mtu,
            to = spec.mtu,
            "setting the VXLAN MTU"
        );
        nl.set_mtu(index, spec.mtu).await?;
        device.link.mtu = spec.mtu;
    }
    if device.link.mac != Some(spec.mac) {
        info!(device = VXLAN_DEVICE, "setting the VTEP MAC");
        nl.set_mac(index, spec.mac).await?;
        device.link.mac = Some(spec.mac);
    }
    if !device.link.up {
        nl.set_up(index).await?;
        device.link.up = true;
    }
    Ok(device)
}

/// Deletes `strait.vxlan` if it exists: in any mode but vxlan it is a leftover.
pub(crate) async fn remove_device(nl: &impl HostNet) -> Result<(), FabricError> {
    if let Some(link) = nl.link_by_name(VXLAN_DEVICE).await? {
        info!(
            device = VXLAN_DEVICE,
            "removing the VXLAN device: the fabric is not vxlan"
        );
        ignore_not_found(nl.delete_link_index(link.index).await)?;
    }
    Ok(())
}
