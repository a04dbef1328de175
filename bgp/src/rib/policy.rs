//! The import and export policy hooks. strait has no policy language yet; the hooks are
//! where one plugs in. Policies are pure: the RIB may call them once per prefix and
//! peer, in any order.

use std::sync::Arc;

use ipnet::IpNet;

use super::PeerConfig;
use super::attrs::Attrs;

pub trait Policy: Send {
    /// A route `peer` announced, after the RIB's own checks (AS_PATH and route-reflection
    /// loops, LOCAL_PREF from eBGP stripped). `None` rejects it: it is treated as
    /// withdrawn and does not count towards the peer's prefix limit.
    fn import(&self, peer: &PeerConfig, prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        let _ = (peer, prefix);
        Some(Arc::clone(attrs))
    }

    /// A best path about to be advertised to `peer`, after the export rules (split
    /// horizon, route reflection, eBGP rewrites). `None` keeps it from that peer.
    fn export(&self, peer: &PeerConfig, prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        let _ = (peer, prefix);
        Some(Arc::clone(attrs))
    }
}

/// Accept everything in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Policy for AcceptAll {}
