//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying a Child SA (REKEY_SA, with a KE when
//! PFS is on) and rekeying the IKE SA (§2.18), in both roles. The new SA comes first
//! and the old one is deleted after, so both are installed during the overlap. When
//! both ends rekey the same SA at once (§2.8.1), the new SA made with the lowest nonce
//! is redundant and deleted by the side that initiated it; the other side deletes the
//! old SA.

use std::time::Instant;

use crate::codec::{ExchangeType, Notify, NotifyType, Payload, ProtocolId, find_notify};
use crate::crypto::dh::KeyShare;
use crate::crypto::sk::SkCipher;
use crate::crypto::suite::Group;

use super::auth_exchange::add_child;
use super::proposal;
use super::sa::{IkeCollision, IkeSa, IkeState, InFlight, Intent, ours_is_redundant};
use super::{Event, Speaker};

type Built = Option<(ExchangeType, Vec<Payload>, InFlight)>;

fn nonce(inner: &[Payload]) -> Option<Vec<u8>> {
    inner.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n.clone()),
        _ => None,
    })
}

fn ke(inner: &[Payload]) -> Option<(u16, Vec<u8>)> {
    inner.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data.clone())),
        _ => None,
    })
}

fn sa_payload(inner: &[Payload]) -> Option<&Vec<crate::codec::Proposal>> {
    inner.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

fn error_notify(inner: &[Payload]) -> Option<NotifyType> {
    inner.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
        _ => None,
    })
}

pub(super) fn rekey_child_request(speaker: &mut Speaker, sa: &mut IkeSa, spi_in: u32) -> Built {
    let group = speaker
        .config
        .pfs
        .then(|| sa.suite.map(|s| s.group))
        .flatten();
    let new_spi_in = speaker.new_esp_spi();
    let ni = speaker.nonce();
    let share = match group {
        Some(g) => Some(KeyShare::generate(g, &speaker.rng).ok()?),
        None => None,
    };
    let child = sa
        .children
        .iter_mut()
        .find(|c| c.spi_in == spi_in && !c.rekeying && !c.replaced && !c.deleting)?;
    child.rekeying = true;
    let mut rekey = Notify::new(NotifyType::RekeySa, vec![]);
    rekey.protocol = ProtocolId::Esp.to_u8();
    rekey.spi = spi_in.to_be_bytes().to_vec();
    let mut inner = vec![
        Payload::Notify(rekey),
        Payload::Sa(proposal::esp_offer(&speaker.config, new_spi_in, group)),
        Payload::Nonce(ni.clone()),
    ];
    if let Some(s) = &share {
        inner.push(Payload::Ke {
            group: s.group().id(),
            data: s.public().to_vec(),
        });
    }
    inner.push(Payload::TsI(child.ts_local.clone()));
    inner.push(Payload::TsR(child.ts_remote.clone()));
    Some((
        ExchangeType::CreateChildSa,
        inner,
        InFlight::RekeyChild {
            old_spi_in: spi_in,
            new_spi_in,
            ni,
            share,
        },
    ))
}

pub(super) fn rekey_ike_request(speaker: &mut Speaker, sa: &mut IkeSa) -> Built {
    let group = sa.suite?.group;
    let new_spi = speaker.new_ike_spi();
    let ni = speaker.nonce();
    let share = KeyShare::generate(group, &speaker.rng).ok()?;
    let inner = vec![
        Payload::Sa(proposal::ike_offer(
            &speaker.config,
            new_spi.to_be_bytes().to_vec(),
        )),
        Payload::Nonce(ni.clone()),
        Payload::Ke {
            group: group.id(),
            data: share.public().to_vec(),
        },
    ];
    Some((
        ExchangeType::CreateChildSa,
        inner,
        InFlight::RekeyIke {
            new_spi,
            ni,
            share: Some(share),
        },
    ))
}

fn refuse(speaker: &mut Speaker, sa: &mut IkeSa, id: u32, kind: NotifyType, data: Vec<u8>) {
    speaker.respond(
        sa,
        ExchangeType::CreateChildSa,
        id,
        &[Payload::Notify(Notify::new(kind, data))],
    );
}

pub(super) fn handle_request(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    id: u32,
    inner: &[Payload],
    now: Instant,
) {
    let Some(offer) = sa_payload(inner) else {
        refuse(speaker, sa, id, NotifyType::InvalidSyntax, vec![]);
        return;
    };
    if offer.iter().any(|p| p.protocol == ProtocolId::Ike) {
        rekey_ike_responder(speaker, sa, id, inner, now);
    } else if find_notify(inner, NotifyType::RekeySa).is_some() {
        rekey_child_responder(speaker, sa, id, inner, now);
    } else {
        // strait carries one Child SA per IKE SA (and its rekeys).
        refuse(speaker, sa, id, NotifyType::NoAdditionalSas, vec![]);
    }
}

fn rekey_child_responder(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    id: u32,
    inner: &[Payload],
    now: Instant,
) {
    let rekey = find_notify(inner, NotifyType::RekeySa).expect("checked");
    let old_out = <[u8; 4]>::try_from(&rekey.spi[..])
        .ok()
        .map(u32::from_be_bytes);
    let Some(old) = sa
        .children
        .iter()
        .find(|c| Some(c.spi_out) == old_out && !c.deleting)
        .cloned()
    else {
        refuse(speaker, sa, id, NotifyType::ChildSaNotFound, vec![]);
        return;
    };
    let (Some(ni), Some(offer)) = (nonce(inner), sa_payload(inner)) else {
        refuse(speaker, sa, id, NotifyType::InvalidSyntax, vec![]);
        return;
    };
    let ike = sa.suite.expect("established");
    let ke = ke(inner);
    let (number, spi_out, suite) =
        match proposal::choose_esp(&speaker.config, offer, ke.as_ref().map(|k| k.0)) {
            Ok(c) => c,
            Err(NotifyType::InvalidKePayload) => {
                refuse(
                    speaker,
                    sa,
                    id,
                    NotifyType::InvalidKePayload,
                    ike.group.id().to_be_bytes().to_vec(),
                );
                return;
            }
            Err(n) => {
                refuse(speaker, sa, id, n, vec![]);
                return;
            }
        };
    let tsi = inner.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t.clone()),
        _ => None,
    });
    let tsr = inner.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t.clone()),
        _ => None,
    });
    let ts_remote = proposal::narrow(&tsi.unwrap_or_default(), &speaker.config.remote_ts);
    let ts_local = proposal::narrow(&tsr.unwrap_or_default(), &speaker.config.local_ts);
    if ts_remote.is_empty() || ts_local.is_empty() {
        refuse(speaker, sa, id, NotifyType::TsUnacceptable, vec![]);
        return;
    }
    let nr = speaker.nonce();
    let (g_ir, our_ke) = match (suite.group, ke) {
        (Some(g), Some((_, data))) => {
            let Ok(share) = KeyShare::generate(g, &speaker.rng) else {
                return;
            };
            let public = share.public().to_vec();
            match share.agree(&data) {
                Ok(s) => (Some(s), Some((g, public))),
                Err(_) => {
                    refuse(speaker, sa, id, NotifyType::InvalidSyntax, vec![]);
                    return;
                }
            }
        }
        _ => (None, None),
    };
    let keys = sa.keys.as_ref().expect("established").child(
        ike.prf,
        suite.cipher,
        g_ir.as_ref(),
        &ni,
        &nr,
    );
    let spi_in = speaker.new_esp_spi();
    let new = add_child(
        speaker,
        sa,
        spi_in,
        spi_out,
        suite,
        ts_local.clone(),
        ts_remote.clone(),
        keys,
        false,
        now,
    );
    let old_child = sa.child_by_in(old.spi_in).expect("found above");
    old_child.replaced = true;
    if old_child.rekeying {
        old_child.collision = Some((ni.clone(), nr.clone(), spi_in));
    }
    sa.child_rekeys += 1;
    let mut out = vec![
        Payload::Sa(proposal::esp_answer(number, spi_in, suite)),
        Payload::Nonce(nr),
    ];
    if let Some((g, public)) = our_ke {
        out.push(Payload::Ke {
            group: g.id(),
            data: public,
        });
    }
    out.push(Payload::TsI(ts_remote));
    out.push(Payload::TsR(ts_local));
    speaker.respond(sa, ExchangeType::CreateChildSa, id, &out);
    speaker.emit(Event::ChildSaRekeyed {
        old_spi_in: old.spi_in,
        old_spi_out: old.spi_out,
        new,
        initiator: false,
    });
}

#[allow(clippy::too_many_arguments)]
pub(super) fn rekey_child_response(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    old_spi_in: u32,
    new_spi_in: u32,
    ni: Vec<u8>,
    share: Option<KeyShare>,
    inner: &[Payload],
    now: Instant,
) {
    let retry = now + speaker.config.retransmit_timeout * 4;
    let Some(old) = sa.children.iter().find(|c| c.spi_in == old_spi_in).cloned() else {
        return; // deleted meanwhile: nothing left to replace
    };
    let fail = |sa: &mut IkeSa, reason: String| {
        tracing::warn!(peer = ?sa.peer, reason, "Child SA rekey failed; retrying");
        if let Some(c) = sa.child_by_in(old_spi_in) {
            c.rekeying = false;
            c.collision = None;
            if !c.replaced {
                c.rekey_at = retry;
            }
        }
    };
    if let Some(kind) = error_notify(inner) {
        fail(sa, format!("the peer answered {kind:?}"));
        return;
    }
    let (Some(answer), Some(nr)) = (sa_payload(inner), nonce(inner)) else {
        fail(sa, "the response lacks SA or Nr".into());
        return;
    };
    let group = share.as_ref().map(KeyShare::group);
    let (spi_out, suite) = match proposal::check_esp_answer(&speaker.config, answer, group) {
        Ok(c) => c,
        Err(reason) => {
            fail(sa, reason.into());
            return;
        }
    };
    let tsi = inner.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t.clone()),
        _ => None,
    });
    let tsr = inner.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t.clone()),
        _ => None,
    });
    let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
        fail(sa, "the response lacks traffic selectors".into());
        return;
    };
    if !proposal::within_offer(&tsi, &old.ts_local) || !proposal::within_offer(&tsr, &old.ts_remote)
    {
        fail(sa, "traffic selectors outside those offered".into());
        return;
    }
    let g_ir = match (share, ke(inner)) {
        (None, None) => None,
        (Some(s), Some((g, data))) if g == s.group().id() => match s.agree(&data) {
            Ok(secret) => Some(secret),
            Err(e) => {
                fail(sa, e.to_string());
                return;
            }
        },
        _ => {
            fail(sa, "the responder's KE does not match our PFS offer".into());
            return;
        }
    };
    let ike = sa.suite.expect("established");
    let keys = sa.keys.as_ref().expect("established").child(
        ike.prf,
        suite.cipher,
        g_ir.as_ref(),
        &ni,
        &nr,
    );
    let new = add_child(
        speaker, sa, new_spi_in, spi_out, suite, tsi, tsr, keys, true, now,
    );
    sa.child_rekeys += 1;
    let old_child = sa.child_by_in(old_spi_in).expect("found above");
    old_child.rekeying = false;
    old_child.replaced = true;
    let collision = old_child.collision.take();
    speaker.emit(Event::ChildSaRekeyed {
        old_spi_in: old.spi_in,
        old_spi_out: old.spi_out,
        new,
        initiator: true,
    });
    let delete = match collision {
        // §2.8.1: ours has the lowest nonce, so ours is the redundant one.
        Some((pni, pnr, _)) if ours_is_redundant((&ni, &nr), (&pni, &pnr)) => new_spi_in,
        // Ours stays; the peer deletes its redundant SA, we delete the old one.
        _ => old_spi_in,
    };
    speaker.request(
        sa,
        Intent::DeleteChild {
            spis_in: vec![delete],
        },
        now,
    );
}

fn rekey_ike_responder(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    id: u32,
    inner: &[Payload],
    now: Instant,
) {
    if matches!(
        sa.pending.as_ref().map(|p| &p.what),
        Some(InFlight::RekeyChild { .. } | InFlight::DeleteChild { .. })
    ) {
        // §2.25.2: our own exchange about a Child SA is in flight on this IKE SA.
        // Its answer comes on this SA while the children would already have moved
        // to the new one, so the peer retries the IKE rekey once ours is done.
        refuse(speaker, sa, id, NotifyType::TemporaryFailure, vec![]);
        return;
    }
    let offer = sa_payload(inner).expect("checked");
    let (Some(ni), Some((ke_group, ke_data))) = (nonce(inner), ke(inner)) else {
        refuse(speaker, sa, id, NotifyType::InvalidSyntax, vec![]);
        return;
    };
    let (number, suite) = match proposal::choose_ike(&speaker.config, offer, Some(ke_group)) {
        Ok(c) => c,
        Err(n) => {
            refuse(speaker, sa, id, n, vec![]);
            return;
        }
    };
    if suite.group.id() != ke_group {
        refuse(
            speaker,
            sa,
            id,
            NotifyType::InvalidKePayload,
            suite.group.id().to_be_bytes().to_vec(),
        );
        return;
    }
    let their_spi = offer
        .iter()
        .find(|p| p.number == number && p.protocol == ProtocolId::Ike)
        .and_then(|p| <[u8; 8]>::try_from(&p.spi[..]).ok())
        .map(u64::from_be_bytes)
        .filter(|s| *s != 0);
    let Some(their_spi) = their_spi else {
        refuse(speaker, sa, id, NotifyType::InvalidSyntax, vec![]);
        return;
    };
    let Ok(share) = KeyShare::generate(suite.group, &speaker.rng) else {
        return;
    };
    let public = share.public().to_vec();
    let Ok(g_ir) = share.agree(&ke_data) else {
        refuse(speaker, sa, id, NotifyType::InvalidSyntax, vec![]);
        return;
    };
    let nr = speaker.nonce();
    let new_spi = speaker.new_ike_spi();
    let mut new = successor(
        speaker, sa, new_spi, their_spi, false, &g_ir, &ni, &nr, suite, now,
    );
    if matches!(
        sa.pending.as_ref().map(|p| &p.what),
        Some(InFlight::RekeyIke { .. })
    ) {
        sa.ike_collision = Some(IkeCollision {
            ni: ni.clone(),
            nr: nr.clone(),
            new_local_spi: new_spi,
        });
    }
    new.children = std::mem::take(&mut sa.children);
    // Requests we had queued on the old SA continue on the new one, as they do
    // when we initiate the rekey.
    new.queue = sa
        .queue
        .drain(..)
        .filter(|i| !matches!(i, Intent::RekeyIke | Intent::DeleteIke))
        .collect();
    let out = vec![
        Payload::Sa(proposal::ike_answer(
            number,
            new_spi.to_be_bytes().to_vec(),
            suite,
        )),
        Payload::Nonce(nr),
        Payload::Ke {
            group: suite.group.id(),
            data: public,
        },
    ];
    speaker.respond(sa, ExchangeType::CreateChildSa, id, &out);
    retire(speaker, sa, now);
    if let Some(peer) = new.peer.clone() {
        speaker.emit(Event::IkeSaRekeyed { peer });
    }
    speaker.request_later(new, now);
}

/// The old IKE SA after a rekey: it waits for its Delete, or ends by itself.
fn retire(speaker: &Speaker, sa: &mut IkeSa, now: Instant) {
    sa.state = IkeState::Rekeyed;
    sa.superseded = true;
    sa.expire_at = Some(now + speaker.give_up_after());
}

/// The IKE SA a rekey makes, with the keys of §2.18.
#[allow(clippy::too_many_arguments)]
fn successor(
    speaker: &Speaker,
    old: &IkeSa,
    local_spi: u64,
    remote_spi: u64,
    initiator: bool,
    g_ir: &crate::crypto::Secret,
    ni: &[u8],
    nr: &[u8],
    suite: proposal::IkeSuite,
    now: Instant,
) -> IkeSa {
    let old_suite = old.suite.expect("established");
    let (spi_i, spi_r) = if initiator {
        (local_spi, remote_spi)
    } else {
        (remote_spi, local_spi)
    };
    let keys = old.keys.as_ref().expect("established").rekey(
        old_suite.prf,
        suite.prf,
        suite.cipher,
        g_ir,
        ni,
        nr,
        spi_i,
        spi_r,
    );
    let mut sa = IkeSa::new(local_spi, initiator, old.local, old.remote, now);
    sa.remote_spi = remote_spi;
    sa.peer = old.peer.clone();
    sa.state = IkeState::Established;
    sa.established = Some(now);
    sa.suite = Some(suite);
    let (tx, rx) = if initiator {
        (&keys.sk_ei, &keys.sk_er)
    } else {
        (&keys.sk_er, &keys.sk_ei)
    };
    sa.tx = Some(SkCipher::new(suite.cipher, tx));
    sa.rx = Some(SkCipher::new(suite.cipher, rx));
    sa.keys = Some(keys);
    sa.ni = ni.to_vec();
    sa.nr = nr.to_vec();
    sa.nat = old.nat;
    sa.fragment_size = old.fragment_size;
    sa.next_keepalive = old.next_keepalive;
    sa.ike_rekeys = old.ike_rekeys + 1;
    sa.child_rekeys = old.child_rekeys;
    let (rekey, expire) = speaker.jittered(now, speaker.config.ike_lifetime);
    sa.rekey_at = Some(rekey);
    sa.expire_at = Some(expire);
    // A rekey keeps the authentication: its reauthentication stays due when it was.
    sa.reauth_at = old.reauth_at;
    sa
}

pub(super) fn rekey_ike_response(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    new_spi: u64,
    ni: Vec<u8>,
    share: Option<KeyShare>,
    inner: &[Payload],
    now: Instant,
) {
    let collision = sa.ike_collision.take();
    let fail = |speaker: &Speaker, sa: &mut IkeSa, reason: &str| {
        tracing::warn!(peer = ?sa.peer, reason, "IKE SA rekey failed; retrying");
        if sa.state == IkeState::Established {
            sa.rekey_at = Some(now + speaker.config.retransmit_timeout * 4);
        }
    };
    if let Some(kind) = error_notify(inner) {
        fail(speaker, sa, &format!("the peer answered {kind:?}"));
        return;
    }
    let (Some(answer), Some(nr), Some((ke_group, ke_data)), Some(share)) =
        (sa_payload(inner), nonce(inner), ke(inner), share)
    else {
        fail(speaker, sa, "the response lacks SA, Nr or KE");
        return;
    };
    let suite = match proposal::check_ike_answer(&speaker.config, answer, 8) {
        Ok(s) => s,
        Err(reason) => {
            fail(speaker, sa, reason);
            return;
        }
    };
    let their_spi =
        u64::from_be_bytes(<[u8; 8]>::try_from(&answer[0].spi[..]).expect("checked size"));
    if suite.group != share.group() || ke_group != Group::id(suite.group) {
        fail(speaker, sa, "the responder's KE is not in our group");
        return;
    }
    let Ok(g_ir) = share.agree(&ke_data) else {
        fail(speaker, sa, "the responder's KE value is invalid");
        return;
    };
    let mut new = successor(
        speaker, sa, new_spi, their_spi, true, &g_ir, &ni, &nr, suite, now,
    );
    match collision {
        Some(c) if ours_is_redundant((&ni, &nr), (&c.ni, &c.nr)) => {
            // §2.8.1: ours is redundant. The children went to the peer's new SA; the
            // peer deletes the old one.
            new.queue.push_back(Intent::DeleteIke);
            new.superseded = true;
            speaker.request_later(new, now);
            return;
        }
        Some(c) => {
            // Ours stays: take the children back from the peer's redundant SA, which
            // the peer deletes.
            if let Some(other) = speaker.sas.get_mut(&c.new_local_spi) {
                new.children = std::mem::take(&mut other.children);
                other.superseded = true;
            }
        }
        None => new.children = std::mem::take(&mut sa.children),
    }
    // Requests queued on the old SA continue on the new one.
    new.queue = sa
        .queue
        .drain(..)
        .filter(|i| !matches!(i, Intent::RekeyIke | Intent::DeleteIke))
        .collect();
    if sa.state == IkeState::Established {
        retire(speaker, sa, now);
    }
    speaker.request(sa, Intent::DeleteIke, now);
    if let Some(peer) = new.peer.clone() {
        speaker.emit(Event::IkeSaRekeyed { peer });
    }
    speaker.request_later(new, now);
}

impl Speaker {
    /// Insert `sa` and send its first queued request.
    fn request_later(&mut self, mut sa: IkeSa, now: Instant) {
        self.next_request(&mut sa, now);
        self.sas.insert(sa.local_spi, sa);
    }
}
