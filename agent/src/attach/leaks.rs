//! Leaks: the operator's IPAM check and release (`netctl ipam check|release`) and the
//! agent's own leak GC, which releases reservations whose attachment has been gone for
//! longer than the grace period.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use strait_api::{Endpoint, IpamIssue, IpamReport, ReleaseResponse};
use tracing::info;

use super::{AttachError, Attacher};
use crate::hostnet::{HostNet, NetnsState};

impl<K: HostNet> Attacher<K> {
    /// The IPAM consistency report, plus endpoint records whose reservation is gone.
    pub async fn ipam_check(&self, grace: Duration) -> Result<IpamReport, AttachError> {
        let endpoints = self.records.list().await?;
        let links = self.endpoint_link_names().await?;
        let by_id: HashMap<&str, &Endpoint> =
            endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
        let node = self.cfg.node.clone();
        let alive = |h: &crate::ipam::Handle| -> Result<(), String> {
            if h.node != node {
                // Another node's attachment: only that node can judge it.
                return Ok(());
            }
            if h.handle.starts_with(crate::ipam::TUNNEL_HANDLE_PREFIX) {
                // This node's VXLAN device addresses: held as long as the node lives
                // (a dead node's go with its blocks, through the reclaimer).
                return Ok(());
            }
            if h.handle.starts_with(crate::ipam::DOCKER_HANDLE_PREFIX) {
                // Reserved through Docker's IPAM driver API: held until Docker
                // releases them, with no endpoint record of their own.
                return Ok(());
            }
            let Some(ep) = by_id.get(h.handle.as_str()) else {
                return Err("no endpoint record".into());
            };
            if !links.contains(&ep.host_ifname) {
                return Err(format!("host interface {} is gone", ep.host_ifname));
            }
            if self.host.netns_state(Path::new(&ep.netns)) == NetnsState::Missing {
                return Err(format!("network namespace {} is gone", ep.netns));
            }
            Ok(())
        };
        let mut report = self.ipam.check(grace, &alive).await?;
        for ep in &endpoints {
            if self.ipam.get_handle(&ep.handle).await?.is_none() {
                report.issues.push(IpamIssue::EndpointWithoutHandle {
                    endpoint: ep.id.clone(),
                    handle: ep.handle.clone(),
                });
            }
        }
        Ok(report)
    }

    /// Release what a report found, re-verifying each finding first.
    pub async fn ipam_release(&self, report: &IpamReport) -> Result<ReleaseResponse, AttachError> {
        let mut resp = self.ipam.release_from_report(report).await?;
        // Endpoint records go with their released handles, and records whose handle
        // was already gone are removed with their interface.
        let released: HashSet<&str> = resp.released.iter().map(String::as_str).collect();
        let mut extra = Vec::new();
        for issue in &report.issues {
            let id = match issue {
                IpamIssue::LeakedHandle { handle, .. } if released.contains(handle.as_str()) => {
                    handle
                }
                IpamIssue::EndpointWithoutHandle { endpoint, .. } => endpoint,
                _ => continue,
            };
            let _guard = self.locks.lock(id).await;
            if let Some(ep) = self.records.get(id).await? {
                if matches!(issue, IpamIssue::EndpointWithoutHandle { .. })
                    && self.ipam.get_handle(&ep.handle).await?.is_some()
                {
                    resp.skipped.push(id.clone());
                    continue;
                }
                self.records.delete(id).await?;
                self.delete_link_in_background(ep.host_ifname.clone());
                if matches!(issue, IpamIssue::EndpointWithoutHandle { .. }) {
                    extra.push(id.clone());
                }
            }
        }
        resp.released.extend(extra);
        Ok(resp)
    }

    /// The agent's own leak GC. Returns how many reservations it released.
    pub async fn gc_leaks(&self) -> Result<usize, AttachError> {
        let mut report = self.ipam_check(self.cfg.gc_grace).await?;
        // Only act on leaks; structural findings are for an operator to look at.
        report
            .issues
            .retain(|i| matches!(i, IpamIssue::LeakedHandle { .. }));
        if report.issues.is_empty() {
            return Ok(0);
        }
        let resp = self.ipam_release(&report).await?;
        if !resp.released.is_empty() {
            info!(released = ?resp.released, "GC released leaked reservations");
        }
        Ok(resp.released.len())
    }
}
