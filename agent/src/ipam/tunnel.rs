//! Tunnel addresses: the VXLAN device's own addresses, one per configured family, taken
//! from this node's blocks by IPAM under the handle `strait-tunnel.<node>`. They are the
//! onlink gateway other hosts route this node's blocks through, so they must survive an
//! agent restart: the handle is read first and allocated only when absent, or when an
//! address of it is no longer in an enabled pool (its pool was disabled or removed): the
//! tunnel then moves, so it never holds a pool back from being drained.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_api::Family;
use tracing::{info, warn};

use super::pool::pool_of;
use super::{AllocRequest, Ipam, IpamError, tunnel_handle};

/// The "network" recorded in the tunnel handle.
const TUNNEL_NETWORK: &str = "strait-tunnel";

/// One tunnel address per family (absent for a family without a pool).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl TunnelAddrs {
    fn of(ips: &[IpAddr]) -> Self {
        let mut t = TunnelAddrs::default();
        for ip in ips {
            match ip {
                IpAddr::V4(a) => {
                    t.v4.get_or_insert(*a);
                }
                IpAddr::V6(a) => {
                    t.v6.get_or_insert(*a);
                }
            }
        }
        t
    }
}

/// This node's tunnel addresses: the existing handle's, or newly allocated ones.
pub async fn ensure_tunnel_addresses(ipam: &Ipam) -> Result<TunnelAddrs, IpamError> {
    let handle = tunnel_handle(ipam.node());
    if let Some(h) = ipam.get_handle(&handle).await? {
        let stale: Vec<IpAddr> = h
            .ips
            .iter()
            .copied()
            .filter(|ip| pool_of(ipam.pools(), *ip).is_none_or(|p| p.disabled))
            .collect();
        if stale.is_empty() {
            let t = TunnelAddrs::of(&h.ips);
            warn_if_short(ipam, &t);
            return Ok(t);
        }
        info!(
            handle = %handle,
            ips = ?stale,
            "tunnel addresses outside the enabled pools (pool disabled or removed): moving them"
        );
        ipam.release(&handle).await?;
    }
    let req = AllocRequest {
        handle: handle.clone(),
        network: TUNNEL_NETWORK.into(),
        container_id: ipam.node().to_string(),
        // The interface recorded in the tunnel handle (for `netctl ipam check` readers).
        ifname: crate::fabric::VXLAN_DEVICE.into(),
        ..Default::default()
    };
    match ipam.allocate(req).await {
        Ok(a) => {
            info!(handle = %handle, ips = ?a.ips, "allocated tunnel addresses");
            Ok(TunnelAddrs::of(&a.ips))
        }
        // Another agent of this node name (or our own earlier, unanswered attempt)
        // got there first: its addresses are ours.
        Err(IpamError::DuplicateHandle(_)) => match ipam.get_handle(&handle).await? {
            Some(h) => Ok(TunnelAddrs::of(&h.ips)),
            None => Err(IpamError::Interrupted(format!(
                "tunnel handle {handle} existed and then vanished; retry"
            ))),
        },
        Err(e) => Err(e),
    }
}

/// A pool of a new family added after the handle was made gets no tunnel address (a
/// handle's addresses are allocated together); say so rather than leave a silent gap.
fn warn_if_short(ipam: &Ipam, t: &TunnelAddrs) {
    for pool in ipam.pools().iter().filter(|p| !p.disabled) {
        let missing = match pool.family() {
            Family::V4 => t.v4.is_none(),
            Family::V6 => t.v6.is_none(),
        };
        if missing {
            warn!(
                pool = %pool.cidr,
                handle = %tunnel_handle(ipam.node()),
                "the tunnel handle has no address of this pool's family (pool added later?); \
                 release the handle and restart the agent to get one"
            );
        }
    }
}
