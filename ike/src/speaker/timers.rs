//! The clock-driven part of the speaker: retransmission with exponential backoff and
//! give-up (RFC 7296 §2.1), half-open expiry, rekey and expiry by lifetime, dead-peer
//! detection after an idle interval (§2.4), NAT keepalives (RFC 3948 §4) and the
//! reauthentication interval (§2.8.3).

use std::time::Instant;

use super::sa::{IkeSa, IkeState, InFlight, Intent};
use super::{Speaker, reauth};

pub(super) fn poll(speaker: &mut Speaker, now: Instant) {
    let spis: Vec<u64> = speaker.sas.keys().copied().collect();
    for spi in spis {
        let Some(mut sa) = speaker.sas.remove(&spi) else {
            continue;
        };
        poll_sa(speaker, &mut sa, now);
        speaker.put_back(sa);
    }
}

fn poll_sa(speaker: &mut Speaker, sa: &mut IkeSa, now: Instant) {
    let tries = speaker.config.retransmit_tries;
    let base = speaker.config.retransmit_timeout;
    if let Some(p) = sa.pending.as_mut()
        && p.next_send <= now
    {
        if p.retransmits >= tries {
            let reason = match p.what {
                InFlight::DeleteIke => "deleted (the peer did not confirm)",
                InFlight::Dpd => "dead peer: no answer to dead-peer detection",
                _ => "the peer did not answer (retransmissions exhausted)",
            };
            tracing::info!(peer = ?sa.peer, reason, "IKE SA given up");
            speaker.close(sa, reason.into());
            return;
        }
        p.retransmits += 1;
        p.next_send = now + base * 2u32.saturating_pow(p.retransmits);
        let bytes = p.bytes.clone();
        speaker.transmit(sa.local, sa.remote, bytes);
    }
    match sa.state {
        IkeState::InitDone if now >= sa.created + speaker.config.half_open_timeout => {
            sa.state = IkeState::Dead;
        }
        IkeState::Rekeyed if sa.expire_at.is_some_and(|t| t <= now) => {
            // No Delete came. A rekeyed SA has no Child SAs left; a reauthenticated
            // one takes its replaced ones along.
            sa.superseded = true;
            speaker.close(sa, "replaced".into());
        }
        IkeState::Established => established(speaker, sa, now),
        _ => {}
    }
}

fn established(speaker: &mut Speaker, sa: &mut IkeSa, now: Instant) {
    if sa.expire_at.is_some_and(|t| t <= now) {
        sa.expire_at = None;
        speaker.request(sa, Intent::DeleteIke, now);
        return;
    }
    if sa.rekey_at.is_some_and(|t| t <= now) && !reauth::under_way(speaker, sa.local_spi) {
        // (While our reauthentication is under way, the new IKE SA replaces this
        // one anyway; a rekey then would only race it.)
        sa.rekey_at = None;
        speaker.request(sa, Intent::RekeyIke, now);
    }
    if sa.reauth_at.is_some_and(|t| t <= now) {
        reauth::due(speaker, sa, now);
    }
    let mut intents = Vec::new();
    for c in &mut sa.children {
        if !c.deleting && c.expire_at <= now {
            c.deleting = true;
            intents.push(Intent::DeleteChild {
                spis_in: vec![c.spi_in],
            });
        } else if !c.rekeying && !c.replaced && !c.deleting && c.rekey_at <= now {
            intents.push(Intent::RekeyChild { spi_in: c.spi_in });
        }
    }
    for i in intents {
        speaker.request(sa, i, now);
    }
    if sa.pending.is_none()
        && sa.queue.is_empty()
        && now >= sa.last_received + speaker.config.dpd_interval
    {
        speaker.request(sa, Intent::Dpd, now);
    }
    if let Some(t) = sa.next_keepalive
        && t <= now
    {
        sa.next_keepalive = Some(now + speaker.config.nat_keepalive);
        speaker.transmit(sa.local, sa.remote, vec![0xff]);
    }
}

pub(super) fn next_deadline(speaker: &Speaker) -> Option<Instant> {
    let mut times: Vec<Instant> = Vec::new();
    for sa in speaker.sas.values() {
        times.extend(sa.pending.as_ref().map(|p| p.next_send));
        match sa.state {
            IkeState::InitDone => times.push(sa.created + speaker.config.half_open_timeout),
            IkeState::Rekeyed => times.extend(sa.expire_at),
            IkeState::Established => {
                if !reauth::under_way(speaker, sa.local_spi) {
                    times.extend(sa.rekey_at);
                }
                times.extend(sa.expire_at);
                times.extend(sa.reauth_at);
                times.extend(sa.next_keepalive);
                for c in &sa.children {
                    if !c.deleting {
                        times.push(c.expire_at);
                    }
                    // While a request is in flight a due rekey waits in the queue;
                    // its past deadline would make the caller poll in a busy loop.
                    if !c.rekeying && !c.replaced && !c.deleting && sa.pending.is_none() {
                        times.push(c.rekey_at);
                    }
                }
                if sa.pending.is_none() {
                    times.push(sa.last_received + speaker.config.dpd_interval);
                }
            }
            _ => {}
        }
    }
    times.into_iter().min()
}
