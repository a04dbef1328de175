//! IKE_AUTH (RFC 7296 §1.2, §2.15) in both roles: identities, the AUTH payload over
//! each side's signed octets, and the first Child SA (tunnel mode) with its proposal
//! and traffic selector narrowing. Also the choice between two IKE SAs that both
//! sides opened at once: the one with the lower nonce goes, deleted by its initiator.

use std::time::Instant;

use crate::auth::signed_octets;
use crate::codec::{ExchangeType, Identity, Notify, NotifyType, Payload, find_notify};

use super::sa::{Child, IkeSa, IkeState, InFlight, Intent, Pending, ours_is_redundant};
use super::{Event, Speaker};
use super::{explain, proposal};

/// What an AUTHENTICATION_FAILED from the peer means for whoever reads our log.
pub(super) const PEER_REFUSED_OUR_AUTH: &str = "the peer refused our authentication (AUTHENTICATION_FAILED): check the pre-shared key or our certificate, and the identities both sides expect";

fn find<'a, T>(inner: &'a [Payload], f: impl Fn(&'a Payload) -> Option<T>) -> Option<T> {
    inner.iter().find_map(f)
}

fn certs(inner: &[Payload]) -> Vec<(u8, Vec<u8>)> {
    inner
        .iter()
        .filter_map(|p| match p {
            Payload::Cert { encoding, data } => Some((*encoding, data.clone())),
            _ => None,
        })
        .collect()
}

/// The reason a peer's identity is refused, in the words of the configuration.
fn not_expected(got: &Identity, expected: &Identity) -> String {
    format!("the peer says it is {got}; we expect {expected}")
}

/// Our ID, CERT and AUTH payloads; `peer_nonce` and `init` are the signed octets'
/// other parts, `sk_p` our SK_p*.
fn identify(speaker: &Speaker, sa: &IkeSa, initiator: bool) -> Option<Vec<Payload>> {
    let suite = sa.suite?;
    let keys = sa.keys.as_ref()?;
    let id = speaker.config.local_id.clone();
    let body = id.encode_body().ok()?;
    let (sk_p, peer_nonce) = if initiator {
        (&keys.sk_pi, &sa.nr)
    } else {
        (&keys.sk_pr, &sa.ni)
    };
    let octets = signed_octets(suite.prf, sk_p, &sa.init_local, peer_nonce, &body);
    let (method, data) = speaker.local_auth.sign(suite.prf, &octets).ok()?;
    let mut out = vec![if initiator {
        Payload::IdI(id)
    } else {
        Payload::IdR(id)
    }];
    for (encoding, data) in speaker.local_auth.certificates() {
        out.push(Payload::Cert { encoding, data });
    }
    if initiator {
        out.extend(super::init::cert_requests(speaker));
    }
    if initiator && let Some(remote_id) = &speaker.config.remote_id {
        out.push(Payload::IdR(remote_id.clone()));
    }
    out.push(Payload::Auth { method, data });
    Some(out)
}

/// Check the peer's AUTH; the peer's signed octets are its IKE_SA_INIT message, our
/// nonce and its MACed ID.
fn verify(
    speaker: &Speaker,
    sa: &IkeSa,
    peer: &Identity,
    inner: &[Payload],
    peer_is_initiator: bool,
) -> Result<(), String> {
    let (suite, keys) = (
        sa.suite.expect("keys exist"),
        sa.keys.as_ref().expect("keys exist"),
    );
    let Some((method, data)) = find(inner, |p| match p {
        Payload::Auth { method, data } => Some((*method, data)),
        _ => None,
    }) else {
        return Err("no AUTH payload".into());
    };
    let body = peer.encode_body().map_err(|e| e.to_string())?;
    let (sk_p, our_nonce) = if peer_is_initiator {
        (&keys.sk_pi, &sa.nr)
    } else {
        (&keys.sk_pr, &sa.ni)
    };
    let octets = signed_octets(suite.prf, sk_p, &sa.init_remote, our_nonce, &body);
    speaker
        .peer_auth
        .verify(suite.prf, peer, &octets, method, data, &certs(inner))
        .map_err(|e| e.to_string())
}

pub(super) fn send_request(speaker: &mut Speaker, sa: &mut IkeSa, now: Instant) {
    let Some(mut inner) = identify(speaker, sa, true) else {
        speaker.close(sa, "could not sign our AUTH".into());
        return;
    };
    let first_contact = sa
        .peer
        .as_ref()
        .is_some_and(|p| speaker.established_with(p).is_empty());
    if first_contact {
        // §2.4: we hold no other SA with this peer; any it holds with us is stale.
        inner.push(Payload::Notify(Notify::new(
            NotifyType::InitialContact,
            vec![],
        )));
    }
    let child_spi_in = speaker.new_esp_spi();
    let (ts_i, ts_r) = (
        speaker.config.local_ts.clone(),
        speaker.config.remote_ts.clone(),
    );
    inner.push(Payload::Sa(proposal::esp_offer(
        &speaker.config,
        child_spi_in,
        None,
    )));
    inner.push(Payload::TsI(ts_i.clone()));
    inner.push(Payload::TsR(ts_r.clone()));
    sa.offered_ts = (ts_i, ts_r);
    let message_id = sa.next_request_id;
    let header = sa.header(ExchangeType::IkeAuth, false, message_id);
    let Ok(bytes) = sa.seal(&header, &inner) else {
        return;
    };
    sa.next_request_id += 1;
    sa.state = IkeState::AuthSent;
    speaker.transmit(sa.local, sa.remote, bytes.clone());
    sa.pending = Some(Pending {
        message_id,
        bytes,
        retransmits: 0,
        next_send: now + speaker.config.retransmit_timeout,
        what: InFlight::Auth { child_spi_in },
    });
}

fn established(speaker: &mut Speaker, sa: &mut IkeSa, peer: Identity, now: Instant) {
    sa.peer = Some(peer.clone());
    sa.state = IkeState::Established;
    sa.established = Some(now);
    let (rekey, expire) = speaker.jittered(now, speaker.config.ike_lifetime);
    sa.rekey_at = Some(rekey);
    sa.expire_at = Some(expire);
    sa.reauth_at = super::reauth::schedule(speaker, now);
    speaker.half_open.retain(|_, v| *v != sa.local_spi);
    if sa.nat.local_behind_nat {
        sa.next_keepalive = Some(now + speaker.config.nat_keepalive);
    }
    speaker.emit(Event::IkeSaUp {
        peer,
        local: sa.local,
        remote: sa.remote,
        nat: sa.nat,
    });
}

/// A new Child SA in `sa` with the keys of the IKE_AUTH exchange.
#[allow(clippy::too_many_arguments)]
pub(super) fn add_child(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    spi_in: u32,
    spi_out: u32,
    suite: proposal::EspSuite,
    ts_local: Vec<crate::codec::TrafficSelector>,
    ts_remote: Vec<crate::codec::TrafficSelector>,
    keys: crate::crypto::keys::ChildKeys,
    we_initiated: bool,
    now: Instant,
) -> super::ChildSa {
    let (rekey_at, expire_at) = speaker.jittered(now, speaker.config.child_lifetime);
    let child = Child {
        spi_in,
        spi_out,
        suite,
        ts_local,
        ts_remote,
        established: now,
        rekey_at,
        expire_at,
        rekeying: false,
        replaced: false,
        deleting: false,
        collision: None,
    };
    let (key_in, key_out) = if we_initiated {
        (keys.responder_to_initiator, keys.initiator_to_responder)
    } else {
        (keys.initiator_to_responder, keys.responder_to_initiator)
    };
    let out = speaker.child_sa(sa, &child, key_in, key_out);
    sa.children.push(child);
    out
}

pub(super) fn handle_request(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    id: u32,
    inner: &[Payload],
    now: Instant,
) {
    let Some(peer) = find(inner, |p| match p {
        Payload::IdI(i) => Some(i.clone()),
        _ => None,
    }) else {
        let n = Notify::new(NotifyType::InvalidSyntax, vec![]);
        speaker.respond(sa, ExchangeType::IkeAuth, id, &[Payload::Notify(n)]);
        sa.state = IkeState::Dead;
        return;
    };
    let checked = match &speaker.config.remote_id {
        Some(expected) if !peer.matches(expected) => Err(not_expected(&peer, expected)),
        _ => verify(speaker, sa, &peer, inner, true),
    };
    if let Err(reason) = checked {
        tracing::warn!(%peer, reason, "IKE_AUTH: peer refused");
        let n = Notify::new(NotifyType::AuthenticationFailed, vec![]);
        speaker.respond(sa, ExchangeType::IkeAuth, id, &[Payload::Notify(n)]);
        speaker.failed(sa, Some(peer.clone()), &reason);
        speaker.emit(Event::AuthFailed { peer, reason });
        sa.state = IkeState::Dead;
        return;
    }
    let Some(mut out) = identify(speaker, sa, false) else {
        return;
    };
    if find_notify(inner, NotifyType::InitialContact).is_some() {
        forget_stale(speaker, sa, &peer);
    }
    established(speaker, sa, peer.clone(), now);
    // The Child SA: its failure leaves the IKE SA up (§1.2).
    let offer = find(inner, |p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    });
    let tsi = find(inner, |p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let tsr = find(inner, |p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    let mut child_up = None;
    let mut child_refused = "the peer asked for no Child SA".to_string();
    if let (Some(offer), Some(tsi), Some(tsr)) = (offer, tsi, tsr) {
        {
            let ts_remote = proposal::narrow(tsi, &speaker.config.remote_ts);
            let ts_local = proposal::narrow(tsr, &speaker.config.local_ts);
            match proposal::choose_esp(&speaker.config, offer, None) {
                Err(n) => {
                    child_refused = explain::esp_mismatch(&speaker.config, offer);
                    out.push(Payload::Notify(Notify::new(n, vec![])))
                }
                Ok(_) if ts_remote.is_empty() || ts_local.is_empty() => {
                    child_refused = explain::ts_mismatch(&speaker.config, tsi, tsr);
                    out.push(Payload::Notify(Notify::new(
                        NotifyType::TsUnacceptable,
                        vec![],
                    )))
                }
                Ok((number, spi_out, suite)) => {
                    let spi_in = speaker.new_esp_spi();
                    let ike = sa.suite.expect("keys exist");
                    let keys = sa.keys.as_ref().expect("keys exist").child(
                        ike.prf,
                        suite.cipher,
                        None,
                        &sa.ni,
                        &sa.nr,
                    );
                    out.push(Payload::Sa(proposal::esp_answer(number, spi_in, suite)));
                    out.push(Payload::TsI(ts_remote.clone()));
                    out.push(Payload::TsR(ts_local.clone()));
                    child_up = Some(add_child(
                        speaker, sa, spi_in, spi_out, suite, ts_local, ts_remote, keys, false, now,
                    ));
                }
            }
        }
    }
    speaker.respond(sa, ExchangeType::IkeAuth, id, &out);
    match child_up {
        Some(c) => super::reauth::child_up(speaker, sa, c, now),
        None => {
            tracing::warn!(%peer, reason = child_refused, "Child SA refused");
            speaker.emit(Event::ChildSaFailed {
                peer,
                reason: child_refused,
            })
        }
    }
    resolve_duplicates(speaker, sa, now);
}

pub(super) fn handle_response(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    child_spi_in: u32,
    inner: &[Payload],
    now: Instant,
) {
    let expected = sa.peer.clone().expect("an initiator knows its peer");
    if find_notify(inner, NotifyType::AuthenticationFailed).is_some() {
        tracing::warn!(peer = %expected, PEER_REFUSED_OUR_AUTH);
        speaker.failed(sa, None, PEER_REFUSED_OUR_AUTH);
        speaker.emit(Event::AuthFailed {
            peer: expected,
            reason: PEER_REFUSED_OUR_AUTH.into(),
        });
        sa.state = IkeState::Dead;
        return;
    }
    let idr = find(inner, |p| match p {
        Payload::IdR(i) => Some(i.clone()),
        _ => None,
    });
    let result = match idr {
        None => Err("no IDr in the IKE_AUTH response".to_string()),
        Some(id) if !id.matches(&expected) => Err(not_expected(&id, &expected)),
        Some(id) => verify(speaker, sa, &id, inner, false),
    };
    if let Err(reason) = result {
        tracing::warn!(peer = %expected, reason, "IKE_AUTH: responder refused");
        // Tell the peer, once, that its AUTH failed (§2.21.2).
        let header = sa.header(ExchangeType::Informational, false, sa.next_request_id);
        let n = Payload::Notify(Notify::new(NotifyType::AuthenticationFailed, vec![]));
        if let Ok(b) = sa.seal(&header, &[n]) {
            speaker.transmit(sa.local, sa.remote, b);
        }
        speaker.failed(sa, None, &reason);
        speaker.emit(Event::AuthFailed {
            peer: expected,
            reason,
        });
        sa.state = IkeState::Dead;
        return;
    }
    established(speaker, sa, expected.clone(), now);
    let answer = find(inner, |p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    });
    let tsi = find(inner, |p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let tsr = find(inner, |p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    let outcome = match (answer, tsi, tsr) {
        (Some(answer), Some(tsi), Some(tsr)) => {
            match proposal::check_esp_answer(&speaker.config, answer, None) {
                Err(reason) => Err(reason.to_string()),
                Ok(_)
                    if !proposal::within_offer(tsi, &sa.offered_ts.0)
                        || !proposal::within_offer(tsr, &sa.offered_ts.1) =>
                {
                    Err("the responder chose traffic selectors outside those offered".to_string())
                }
                Ok((spi_out, suite)) => {
                    let ike = sa.suite.expect("keys exist");
                    let keys = sa.keys.as_ref().expect("keys exist").child(
                        ike.prf,
                        suite.cipher,
                        None,
                        &sa.ni,
                        &sa.nr,
                    );
                    Ok(add_child(
                        speaker,
                        sa,
                        child_spi_in,
                        spi_out,
                        suite,
                        tsi.clone(),
                        tsr.clone(),
                        keys,
                        true,
                        now,
                    ))
                }
            }
        }
        _ => Err(
            match inner.iter().find_map(|p| match p {
                Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
                _ => None,
            }) {
                Some(kind) => explain::refused(&speaker.config, kind, true),
                None => "the responder sent no Child SA".to_string(),
            },
        ),
    };
    match outcome {
        Ok(child) => super::reauth::child_up(speaker, sa, child, now),
        Err(reason) => {
            super::reauth::child_failed(speaker, sa);
            tracing::warn!(peer = %expected, reason, "Child SA refused");
            if answer.is_some() {
                // The responder installed what it chose: have it deleted.
                sa.queue.push_back(Intent::DeleteChild {
                    spis_in: vec![child_spi_in],
                });
            }
            speaker.emit(Event::ChildSaFailed {
                peer: expected,
                reason,
            });
        }
    }
    resolve_duplicates(speaker, sa, now);
    speaker.next_request(sa, now);
}

/// The peer says (INITIAL_CONTACT, §2.4) that it holds no other SA with us: it
/// restarted, and our SAs with it from before this exchange began are stale. They are
/// dropped without a Delete, which the peer could not read.
fn forget_stale(speaker: &mut Speaker, sa: &IkeSa, peer: &Identity) {
    let stale: Vec<u64> = speaker
        .established_with(peer)
        .into_iter()
        .filter(|spi| speaker.sas[spi].established.is_some_and(|t| t < sa.created))
        .collect();
    for spi in stale {
        let mut old = speaker.sas.remove(&spi).expect("listed");
        tracing::info!(%peer, "peer restarted (INITIAL_CONTACT): dropping its stale IKE SA");
        speaker.close(&mut old, "the peer restarted (INITIAL_CONTACT)".into());
        speaker.put_back(old);
    }
}

/// Both sides opened an IKE SA at once: keep the one whose lower nonce is higher
/// (the rule of RFC 7296 §2.8.1 for rekeys), the loser deleted by its initiator, so
/// both ends agree without talking.
fn resolve_duplicates(speaker: &mut Speaker, sa: &mut IkeSa, now: Instant) {
    // An SA up before this one began is not a duplicate: this one reauthenticates
    // it (see reauth).
    let others: Vec<u64> = speaker
        .established_with(sa.peer.as_ref().expect("established"))
        .into_iter()
        .filter(|spi| speaker.sas[spi].established.is_none_or(|t| t > sa.created))
        .collect();
    for other_spi in others {
        let mut other = speaker.sas.remove(&other_spi).expect("listed");
        let sa_redundant = ours_is_redundant((&sa.ni, &sa.nr), (&other.ni, &other.nr));
        let loser = if sa_redundant { &mut *sa } else { &mut other };
        if loser.initiator {
            tracing::info!(peer = ?loser.peer, "two IKE SAs with one peer: deleting ours");
            speaker.request(loser, Intent::DeleteIke, now);
        }
        speaker.put_back(other);
    }
}
