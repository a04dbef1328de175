//! A peer's IKE and Child SAs as `netctl ipsec peers` shows them, for node peers
//! (the engine) and external peers (the site gateway) alike.

use std::net::SocketAddr;
use std::time::Instant;

use strait_api::ipsec::{ChildSaView, IpsecPeer, SaCounters};
use strait_ike::speaker::{ChildStatus, IkeState, SaStatus};

/// The IKE SA of a peer worth showing among `sas`: an established one first, then
/// the newest.
pub fn shown<'a>(sas: impl IntoIterator<Item = &'a SaStatus>) -> Option<&'a SaStatus> {
    sas.into_iter()
        .max_by_key(|s| (s.state == IkeState::Established, s.established))
}

/// Peer `name` with IKE SA `ike` (if any) and its Child SAs as `child` shows each;
/// no error and zero totals, for the caller to fill in.
pub fn peer(
    name: String,
    site: String,
    address: Option<SocketAddr>,
    ike: Option<&SaStatus>,
    child: impl Fn(&ChildStatus) -> ChildSaView,
    now: Instant,
) -> IpsecPeer {
    let since = |t: Instant| now.saturating_duration_since(t).as_secs();
    IpsecPeer {
        name,
        site,
        address,
        ike_state: ike.map_or("none".into(), |s| state_word(s.state).into()),
        initiator: ike.is_some_and(|s| s.initiator),
        ike_algorithms: ike
            .and_then(|s| s.suite)
            .map(|s| format!("{:?}/{:?}/{:?}", s.cipher, s.prf, s.group)),
        established_secs: ike.and_then(|s| s.established).map(since),
        ike_rekeys: ike.map_or(0, |s| s.ike_rekeys),
        child_rekeys: ike.map_or(0, |s| s.child_rekeys),
        last_dpd_secs: ike.and_then(|s| s.last_dpd).map(since),
        nat: ike.is_some_and(|s| s.nat.any()),
        child_sas: ike
            .map(|s| s.children.iter().map(&child).collect())
            .unwrap_or_default(),
        last_error: None,
        totals: Default::default(),
    }
}

/// One Child SA: SPIs as `ip xfrm` prints them, whether new packets leave on it, and
/// its counters where the datapath gave them.
pub fn child(
    c: &ChildStatus,
    active: bool,
    inbound: Option<SaCounters>,
    outbound: Option<SaCounters>,
) -> ChildSaView {
    ChildSaView {
        spi_in: format!("0x{:08x}", c.spi_in),
        spi_out: format!("0x{:08x}", c.spi_out),
        cipher: format!("{:?}", c.cipher),
        esn: c.esn,
        active,
        inbound,
        outbound,
    }
}

fn state_word(state: IkeState) -> &'static str {
    match state {
        IkeState::InitSent | IkeState::AuthSent | IkeState::InitDone => "connecting",
        IkeState::Established => "established",
        IkeState::Rekeyed => "rekeyed",
        IkeState::Deleting => "deleting",
        IkeState::Dead => "closed",
    }
}
