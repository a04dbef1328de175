//! CNI CHECK: the attachment is as ADD left it — record, reservation, interface,
//! addresses and routes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use strait_api::CheckRequest;

use super::records::attachment_id;
use super::validate::validate;
use super::{AttachError, Attacher};
use crate::endpoint::VethSpec;
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    pub async fn check(&self, req: CheckRequest) -> Result<(), AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        validate(&req.network, &req.container_id, &req.ifname)?;
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let _guard = self.locks.lock(&id).await;
        let fail = |reason: String| AttachError::Check {
            id: id.clone(),
            reason,
        };
        let ep = self
            .records
            .get(&id)
            .await?
            .ok_or_else(|| fail("no endpoint record".into()))?;
        let handle = self
            .ipam
            .get_handle(&id)
            .await?
            .ok_or_else(|| fail("no IP reservation (IPAM handle missing)".into()))?;
        let recorded: BTreeSet<IpAddr> = ep.ips.iter().map(|n| n.addr()).collect();
        let reserved: BTreeSet<IpAddr> = handle.ips.iter().copied().collect();
        if recorded != reserved {
            return Err(fail(format!(
                "reservation {reserved:?} differs from the endpoint's addresses {recorded:?}"
            )));
        }
        for want in &req.expected_ips {
            if !recorded.contains(&want.addr()) {
                return Err(fail(format!(
                    "address {want} from the runtime's result is not the endpoint's"
                )));
            }
        }
        let spec = VethSpec {
            host_ifname: ep.host_ifname.clone(),
            container_ifname: ep.ifname.clone(),
            netns: PathBuf::from(&req.netns),
            ips: recorded.iter().copied().collect(),
            mtu: ep.mtu,
            container_mac: None,
            // Not checked: an older strait's links carry no mark.
            owner: None,
            handover: false,
        };
        self.host
            .check_endpoint(&spec)
            .await
            .map_err(|e| fail(e.to_string()))
    }
}
