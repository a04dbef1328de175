//! A candidate path as the Loc-RIB stores it: two pointers. The attributes are shared
//! by every prefix announced with them; the [`Source`] by every route one session of
//! a peer announced. The public [`Path`] is made from them on request.
//!
//! Staleness (graceful restart helper) is not stored per route: a route is stale when
//! its source is not its peer's current session (or the peer is not up). A restarting
//! peer's new session gets a new `Source`, so the routes of the old one read as stale
//! until they are announced again or swept.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::attrs::Attrs;
use super::decision::{LOCAL_PEER, Path};

/// One session of a peer (or this speaker, [`LOCAL_PEER`]), as its routes need it for
/// the decision process and export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    pub(super) addr: IpAddr,
    pub(super) ebgp: bool,
    /// Its BGP identifier on that session.
    pub(super) router_id: Ipv4Addr,
    /// A route-reflection client on that session.
    pub(super) rr_client: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) attrs: Arc<Attrs>,
    pub(super) source: Arc<Source>,
}

impl Route {
    pub(super) fn peer(&self) -> IpAddr {
        self.source.addr
    }

    pub(super) fn is_local(&self) -> bool {
        self.source.addr == LOCAL_PEER
    }

    /// RFC 4456 §9: ORIGINATOR_ID stands in for the BGP identifier where present.
    pub(super) fn identifier(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.source.router_id)
    }

    /// The same route: same attributes from the same session. Its exports are then
    /// the same too.
    pub(super) fn same(a: Option<&Route>, b: Option<&Route>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                Arc::ptr_eq(&a.attrs, &b.attrs) && Arc::ptr_eq(&a.source, &b.source)
            }
            _ => false,
        }
    }

    pub(super) fn to_path(&self, stale: bool) -> Path {
        Path {
            peer: self.source.addr,
            ebgp: self.source.ebgp,
            peer_router_id: self.source.router_id,
            attrs: Arc::clone(&self.attrs),
            stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::short::Short;

    #[test]
    fn a_destination_is_two_pointers_wide() {
        // The Loc-RIB's bucket is a u64 key and this: 24 octets per IPv4 prefix.
        assert_eq!(std::mem::size_of::<Route>(), 16);
        assert_eq!(std::mem::size_of::<Short<Route>>(), 16);
    }
}
