//! CNI GC: release every attachment of a network on this node that the runtime no
//! longer lists, also reservations whose record never got written.

use std::collections::{BTreeMap, HashSet};

use strait_api::{Attachment, GcRequest, GcResponse};

use super::records::attachment_id;
use super::validate::validate_name;
use super::{AttachError, Attacher};
use crate::endpoint;
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    /// Keeps going past failures and reports them.
    pub async fn gc(&self, req: GcRequest) -> Result<GcResponse, AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        validate_name("network name", &req.network)?;
        let valid: HashSet<String> = req
            .valid_attachments
            .iter()
            .map(|a| attachment_id(&req.network, &a.container_id, &a.ifname))
            .collect();
        let mut stale: BTreeMap<String, (Attachment, String)> = BTreeMap::new();
        for ep in self.records.list().await? {
            if ep.network == req.network && !valid.contains(&ep.id) {
                let host = ep.host_ifname.clone();
                let att = Attachment {
                    container_id: ep.container_id,
                    ifname: ep.ifname,
                };
                stale.insert(ep.id.clone(), (att, host));
            }
        }
        // Reservations without an endpoint record (a crash between IPAM and the record).
        for h in self.ipam.list_handles().await? {
            if h.node == self.cfg.node
                && h.network == req.network
                && !valid.contains(&h.handle)
                && !stale.contains_key(&h.handle)
            {
                let host = endpoint::host_ifname(&h.network, &h.container_id, &h.ifname);
                let att = Attachment {
                    container_id: h.container_id.clone(),
                    ifname: h.ifname.clone(),
                };
                stale.insert(h.handle.clone(), (att, host));
            }
        }
        let mut resp = GcResponse::default();
        for (id, (att, host)) in stale {
            match self.release_attachment(&id, &host).await {
                Ok(()) => resp.released.push(att),
                Err(e) => resp.errors.push(format!("{id}: {e}")),
            }
        }
        Ok(resp)
    }
}
