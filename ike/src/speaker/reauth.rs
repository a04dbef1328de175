//! Reauthentication (RFC 7296 §2.8.3), make-before-break, in both roles. IKEv2 has
//! no exchange for it: the side that reauthenticates opens a second IKE SA with the
//! same peer (IKE_SA_INIT and IKE_AUTH, without INITIAL_CONTACT, so the old one
//! stays) with new Child SAs, moves traffic to them and deletes the old IKE SA.
//!
//! Here that means: when an IKE SA comes up while another with the same peer was
//! already up before it began, the new one takes over. The old one retires (it
//! refuses new exchanges and waits for its Delete, which we send when the
//! reauthentication was ours), its Child SAs count as replaced, and the new Child
//! SA comes as [`Event::ChildSaRekeyed`] of the old one, so that the datapath keeps
//! both during the overlap and the side that answered waits before sending on the
//! new SA, exactly as after a Child SA rekey. Two IKE SAs opened at once (neither up
//! when the other began) are duplicates instead, which auth_exchange resolves.

use std::time::Instant;

use crate::codec::Identity;

use super::sa::{IkeSa, IkeState, Intent};
use super::{ChildSa, Event, Speaker};

/// Start reauthenticating the IKE SA with our SPI `old_spi` (in the speaker's map),
/// unless that is under way.
pub(super) fn start(speaker: &mut Speaker, old_spi: u64, now: Instant) {
    let Some(old) = speaker.sas.remove(&old_spi) else {
        return;
    };
    open(speaker, &old, now);
    speaker.put_back(old);
}

/// A new IKE SA to `old`'s peer, from and to the addresses `old` uses now (after
/// NAT-T, port 4500), unless one is under way.
fn open(speaker: &mut Speaker, old: &IkeSa, now: Instant) {
    if under_way(speaker, old.local_spi) {
        return;
    }
    let Some(peer) = old.peer.clone() else {
        return;
    };
    tracing::info!(%peer, remote = %old.remote, "reauthenticating the IKE SA");
    let spi = speaker.start_initiator(peer, old.local, old.remote, now);
    if let Some(new) = speaker.sas.get_mut(&spi) {
        new.reauth_of = Some(old.local_spi);
    }
}

/// A reauthentication of ours of the IKE SA `old_spi` is in flight.
pub(super) fn under_way(speaker: &Speaker, old_spi: u64) -> bool {
    speaker
        .sas
        .values()
        .any(|sa| sa.reauth_of == Some(old_spi) && sa.established.is_none())
}

/// The timer: `sa` (established, out of the speaker's map) is due for its
/// reauthentication. The next try, should this one fail, waits as long as a
/// request's retransmissions take to give up.
pub(super) fn due(speaker: &mut Speaker, sa: &mut IkeSa, now: Instant) {
    sa.reauth_at = Some(now + speaker.give_up_after());
    open(speaker, sa, now);
}

/// The first reauthentication time of an IKE SA authenticated `now`.
pub(super) fn schedule(speaker: &Speaker, now: Instant) -> Option<Instant> {
    let after = speaker.config.reauth_after?;
    let jitter = speaker.config.ike_lifetime.jitter.min(after / 10);
    let (at, _) = speaker.jittered(
        now,
        super::Lifetime {
            soft: after,
            hard: after,
            jitter,
        },
    );
    Some(at)
}

/// The IKE SAs with `peer` the new IKE SA `sa` replaces: up before it began.
fn predecessors(speaker: &Speaker, sa: &IkeSa, peer: &Identity) -> Vec<u64> {
    speaker
        .established_with(peer)
        .into_iter()
        .filter(|spi| *spi != sa.local_spi)
        .filter(|spi| {
            speaker.sas[spi]
                .established
                .is_some_and(|t| t <= sa.created)
        })
        .collect()
}

/// `sa` just came up with Child SA `child`: announce it, as a replacement of its
/// predecessor's Child SA when `sa` reauthenticates an older IKE SA, which then
/// retires (and is deleted by us when the reauthentication was ours).
pub(super) fn child_up(speaker: &mut Speaker, sa: &IkeSa, child: ChildSa, now: Instant) {
    let olds = predecessors(speaker, sa, &child.peer);
    let mut replaced = None;
    for spi in olds {
        let mut old = speaker.sas.remove(&spi).expect("listed");
        tracing::info!(peer = %child.peer, ours = sa.initiator, "reauthenticated: the new IKE SA takes over");
        if replaced.is_none() {
            let live = || old.children.iter().filter(|c| !c.replaced);
            replaced = live()
                .find(|c| c.ts_local == child.ts_local && c.ts_remote == child.ts_remote)
                .or_else(|| live().next())
                .map(|c| (c.spi_in, c.spi_out));
        }
        retire(speaker, &mut old, now);
        if sa.initiator {
            speaker.request(&mut old, Intent::DeleteIke, now);
        }
        speaker.put_back(old);
    }
    match replaced {
        Some((old_spi_in, old_spi_out)) => speaker.emit(Event::ChildSaRekeyed {
            old_spi_in,
            old_spi_out,
            new: child,
            initiator: sa.initiator,
        }),
        None => speaker.emit(Event::ChildSaUp(child)),
    }
}

/// Our reauthentication `sa` came up without its Child SA: the old IKE SA keeps
/// carrying the traffic, the new one goes (and the timer tries again later).
pub(super) fn child_failed(speaker: &mut Speaker, sa: &mut IkeSa) {
    if sa
        .reauth_of
        .is_some_and(|old| speaker.sas.contains_key(&old))
    {
        tracing::warn!(peer = ?sa.peer, "reauthentication without a Child SA: the old IKE SA stays");
        sa.superseded = true;
        sa.queue.push_back(Intent::DeleteIke);
    }
}

/// The old IKE SA after a reauthentication: its Child SAs replaced, new requests
/// refused, its queued ones dropped but a Delete; it waits for its Delete (ours, or
/// the peer's), or ends by itself and takes its Child SAs along.
fn retire(speaker: &Speaker, old: &mut IkeSa, now: Instant) {
    old.state = IkeState::Rekeyed;
    old.superseded = true;
    old.expire_at = Some(now + speaker.give_up_after());
    old.queue.retain(|i| *i == Intent::DeleteIke);
    for c in &mut old.children {
        c.replaced = true;
    }
}
