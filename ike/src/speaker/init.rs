//! IKE_SA_INIT (RFC 7296 §1.2) in both roles: proposals, key exchange and nonces,
//! NAT detection (§2.23), stateless cookies under load (§2.6), the
//! INVALID_KE_PAYLOAD retry with the responder's group (§1.2) and the announcement of
//! IKE fragmentation (RFC 7383 §2.3).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ring::{digest, hmac};

use crate::codec::{
    ExchangeType, Header, Identity, Message, Notify, NotifyType, Payload, find_notify,
};
use crate::crypto::dh::KeyShare;
use crate::crypto::keys::IkeKeys;
use crate::crypto::sk::SkCipher;
use crate::crypto::suite::Group;

use super::sa::{IkeSa, IkeState, InFlight, Pending};
use super::{NatStatus, Speaker, auth_exchange, fragments, proposal};

/// SHA-1(SPIi | SPIr | IP | port), the NAT_DETECTION_*_IP data (§2.23).
fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Our NAT_DETECTION notifies. With `force` the source hash is over no address we
/// have, so the peer takes us to be behind a NAT and encapsulates ESP in UDP 4500 (as
/// strongSwan's `encap = yes` does): for a datapath that speaks nothing else.
fn nat_notifies(
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    force: bool,
) -> [Payload; 2] {
    let source = if force {
        nat_hash(spi_i, spi_r, SocketAddr::from(([0, 0, 0, 0], 0)))
    } else {
        nat_hash(spi_i, spi_r, local)
    };
    [
        Payload::Notify(Notify::new(NotifyType::NatDetectionSourceIp, source)),
        Payload::Notify(Notify::new(
            NotifyType::NatDetectionDestinationIp,
            nat_hash(spi_i, spi_r, remote),
        )),
    ]
}

/// Compare the peer's NAT_DETECTION notifies with the addresses we see. Without
/// them, no NAT is assumed.
fn detect_nat(
    payloads: &[Payload],
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> NatStatus {
    let sources: Vec<&Vec<u8>> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) if n.kind == NotifyType::NatDetectionSourceIp => Some(&n.data),
            _ => None,
        })
        .collect();
    let dest = find_notify(payloads, NotifyType::NatDetectionDestinationIp);
    NatStatus {
        remote_behind_nat: !sources.is_empty()
            && !sources
                .iter()
                .any(|s| **s == nat_hash(spi_i, spi_r, remote)),
        local_behind_nat: dest.is_some_and(|d| d.data != nat_hash(spi_i, spi_r, local)),
    }
}

fn fragmentation_supported() -> Payload {
    Payload::Notify(Notify::new(NotifyType::Ikev2FragmentationSupported, vec![]))
}

/// RFC 7383 §2.3: the peer reassembles if its IKE_SA_INIT says so; from then on
/// messages longer than `Config::fragment_size` go to it in fragments.
fn note_fragmentation(speaker: &Speaker, sa: &mut IkeSa, payloads: &[Payload]) {
    if speaker.config.fragment_size != 0
        && find_notify(payloads, NotifyType::Ikev2FragmentationSupported).is_some()
    {
        sa.fragment_size = Some(fragments::max_message_len(
            speaker.config.fragment_size,
            sa.local,
        ));
    }
}

/// CERTREQ payloads naming the authorities we check the peer's certificate against:
/// in our IKE_SA_INIT response, or our IKE_AUTH request as initiator (§3.7).
pub(super) fn cert_requests(speaker: &Speaker) -> impl Iterator<Item = Payload> {
    speaker
        .peer_auth
        .cert_requests()
        .into_iter()
        .map(|(encoding, data)| Payload::CertReq { encoding, data })
}

fn hash_algorithms(speaker: &Speaker) -> Option<Payload> {
    let algs = speaker.local_auth.hash_algorithms();
    (!algs.is_empty()).then(|| {
        let data = algs.iter().flat_map(|a| a.to_be_bytes()).collect();
        Payload::Notify(Notify::new(NotifyType::SignatureHashAlgorithms, data))
    })
}

impl Speaker {
    /// Opens an IKE SA with `peer`; returns its SPI (ours).
    pub(super) fn start_initiator(
        &mut self,
        peer: Identity,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> u64 {
        let spi = self.new_ike_spi();
        let mut sa = IkeSa::new(spi, true, local, remote, now);
        sa.peer = Some(peer);
        sa.ni = self.nonce();
        let group = self.config.groups[0];
        send_init(self, &mut sa, group, now);
        self.put_back(sa);
        spi
    }

    pub(super) fn handle_init_request(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        msg: &Message,
        now: Instant,
    ) {
        let h = &msg.header;
        if let Some(spi) = self.half_open.get(&(remote, h.spi_i)).copied() {
            // A retransmitted IKE_SA_INIT: the same answer.
            if let Some(sa) = self.sas.get(&spi)
                && sa.init_remote == bytes
                && let Some((0, cached)) = &sa.cached_response
            {
                let cached = cached.clone();
                self.transmit(local, remote, cached);
            }
            return;
        }
        let reply_plain = |speaker: &mut Speaker, payloads: Vec<Payload>| {
            let reply = Message {
                header: Header {
                    response: true,
                    initiator: false,
                    version: false,
                    ..h.clone()
                },
                payloads,
            };
            if let Ok(b) = reply.encode() {
                speaker.transmit(local, remote, b);
            }
        };
        let ni = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let sa_offer = msg.payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s.clone()),
            _ => None,
        });
        let ke = msg.payloads.iter().find_map(|p| match p {
            Payload::Ke { group, data } => Some((*group, data.clone())),
            _ => None,
        });
        let (Some(ni), Some(offer), Some((ke_group, ke_data))) = (ni, sa_offer, ke) else {
            reply_plain(
                self,
                vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidSyntax,
                    vec![],
                ))],
            );
            return;
        };
        // Under load, only an initiator that can receive at its address gets state.
        let half_open = self
            .sas
            .values()
            .filter(|s| s.state == IkeState::InitDone)
            .count();
        if half_open >= self.config.cookie_threshold {
            let expected = self.cookie(&ni, remote.ip(), h.spi_i);
            let sent = match msg.payloads.first() {
                Some(Payload::Notify(n)) if n.kind == NotifyType::Cookie => Some(&n.data),
                _ => None,
            };
            if sent != Some(&expected) {
                reply_plain(
                    self,
                    vec![Payload::Notify(Notify::new(NotifyType::Cookie, expected))],
                );
                return;
            }
        }
        let (number, suite) = match proposal::choose_ike(&self.config, &offer, Some(ke_group)) {
            Ok(c) => c,
            Err(n) => {
                let reason = super::explain::ike_mismatch(&self.config, &offer);
                tracing::warn!(%remote, reason, "IKE_SA_INIT refused");
                self.emit(super::Event::Failed {
                    remote,
                    peer: None,
                    reason,
                });
                reply_plain(self, vec![Payload::Notify(Notify::new(n, vec![]))]);
                return;
            }
        };
        if suite.group.id() != ke_group {
            let data = suite.group.id().to_be_bytes().to_vec();
            reply_plain(
                self,
                vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidKePayload,
                    data,
                ))],
            );
            return;
        }
        let Ok(share) = KeyShare::generate(suite.group, &self.rng) else {
            return;
        };
        let public = share.public().to_vec();
        let Ok(g_ir) = share.agree(&ke_data) else {
            reply_plain(
                self,
                vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidSyntax,
                    vec![],
                ))],
            );
            return;
        };
        let spi = self.new_ike_spi();
        let mut sa = IkeSa::new(spi, false, local, remote, now);
        sa.remote_spi = h.spi_i;
        sa.ni = ni;
        sa.nr = self.nonce();
        sa.suite = Some(suite);
        let keys = IkeKeys::derive(suite.prf, suite.cipher, &g_ir, &sa.ni, &sa.nr, h.spi_i, spi);
        sa.rx = Some(SkCipher::new(suite.cipher, &keys.sk_ei));
        sa.tx = Some(SkCipher::new(suite.cipher, &keys.sk_er));
        sa.keys = Some(keys);
        // The request's hashes were made with the SPIs of its header: SPIr zero.
        sa.nat = detect_nat(&msg.payloads, h.spi_i, 0, local, remote);
        // Forced encapsulation: we act as the side behind a NAT (keepalives, 4500).
        sa.nat.local_behind_nat |= self.config.force_udp_encap;
        let mut payloads = vec![
            Payload::Sa(proposal::ike_answer(number, Vec::new(), suite)),
            Payload::Ke {
                group: suite.group.id(),
                data: public,
            },
            Payload::Nonce(sa.nr.clone()),
        ];
        payloads.extend(cert_requests(self));
        payloads.extend(nat_notifies(
            h.spi_i,
            spi,
            local,
            remote,
            self.config.force_udp_encap,
        ));
        note_fragmentation(self, &mut sa, &msg.payloads);
        if sa.fragment_size.is_some() {
            // Only in answer to an initiator that announced it (§2.3).
            payloads.push(fragmentation_supported());
        }
        payloads.extend(hash_algorithms(self));
        let reply = Message {
            header: sa.header(ExchangeType::IkeSaInit, true, 0),
            payloads,
        };
        let Ok(out) = reply.encode() else { return };
        sa.init_remote = bytes.to_vec();
        sa.init_local = out.clone();
        sa.cached_response = Some((0, out.clone().into()));
        sa.expected_request_id = 1;
        self.half_open.insert((remote, h.spi_i), spi);
        self.transmit(local, remote, out);
        self.put_back(sa);
    }

    /// A cookie only this responder can make for this initiator (§2.6).
    fn cookie(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.cookie_secret.expose());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(ni);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        ctx.sign().as_ref().to_vec()
    }
}

/// Send (or send again, with a cookie or another group) our IKE_SA_INIT.
fn send_init(speaker: &mut Speaker, sa: &mut IkeSa, group: Group, now: Instant) {
    let Ok(share) = KeyShare::generate(group, &speaker.rng) else {
        return;
    };
    let mut payloads = Vec::new();
    if let Some(c) = &sa.cookie {
        payloads.push(Payload::Notify(Notify::new(NotifyType::Cookie, c.clone())));
    }
    payloads.push(Payload::Sa(proposal::ike_offer(
        &speaker.config,
        Vec::new(),
    )));
    payloads.push(Payload::Ke {
        group: group.id(),
        data: share.public().to_vec(),
    });
    payloads.push(Payload::Nonce(sa.ni.clone()));
    payloads.extend(nat_notifies(
        sa.local_spi,
        0,
        sa.local,
        sa.remote,
        speaker.config.force_udp_encap,
    ));
    if speaker.config.fragment_size != 0 {
        payloads.push(fragmentation_supported());
    }
    payloads.extend(hash_algorithms(speaker));
    sa.share = Some(share);
    let msg = Message {
        header: sa.header(ExchangeType::IkeSaInit, false, 0),
        payloads,
    };
    let Ok(bytes) = msg.encode() else { return };
    sa.init_local = bytes.clone();
    sa.next_request_id = 1;
    speaker.transmit(sa.local, sa.remote, bytes.clone());
    sa.pending = Some(Pending {
        message_id: 0,
        bytes: bytes.into(),
        retransmits: 0,
        next_send: now + speaker.config.retransmit_timeout,
        what: InFlight::Init,
    });
}

pub(super) fn handle_response(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    bytes: &[u8],
    msg: &Message,
    now: Instant,
) {
    if sa.state != IkeState::InitSent {
        return;
    }
    let payloads = &msg.payloads;
    if let Some(c) = find_notify(payloads, NotifyType::Cookie) {
        if sa.cookie.is_some() && sa.cookie.as_ref() == Some(&c.data) {
            return; // the same cookie again: retransmission will resolve it
        }
        sa.cookie = Some(c.data.clone());
        let group = sa
            .share
            .as_ref()
            .map_or(speaker.config.groups[0], KeyShare::group);
        send_init(speaker, sa, group, now);
        return;
    }
    if let Some(n) = find_notify(payloads, NotifyType::InvalidKePayload) {
        let wanted = <[u8; 2]>::try_from(&n.data[..])
            .ok()
            .map(u16::from_be_bytes);
        let current = sa.share.as_ref().map(KeyShare::group);
        match wanted.and_then(Group::from_id) {
            Some(g) if speaker.config.groups.contains(&g) && Some(g) != current => {
                send_init(speaker, sa, g, now);
            }
            _ => fail(
                speaker,
                sa,
                "the responder wants a key exchange group we do not offer",
            ),
        }
        return;
    }
    if let Some(Payload::Notify(n)) = payloads
        .iter()
        .find(|p| matches!(p, Payload::Notify(n) if n.kind.is_error()))
    {
        let reason = super::explain::refused(&speaker.config, n.kind, false);
        fail(speaker, sa, &reason);
        return;
    }
    let answer = payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    });
    let ke = payloads.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    });
    let nr = payloads.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n.clone()),
        _ => None,
    });
    let (Some(answer), Some((ke_group, ke_data)), Some(nr)) = (answer, ke, nr) else {
        fail(speaker, sa, "the IKE_SA_INIT response lacks SA, KE or Nr");
        return;
    };
    let suite = match proposal::check_ike_answer(&speaker.config, answer, 0) {
        Ok(s) => s,
        Err(reason) => {
            fail(speaker, sa, reason);
            return;
        }
    };
    let share = sa
        .share
        .take()
        .expect("an initiator in InitSent has its key share");
    if suite.group != share.group() || ke_group != suite.group.id() {
        fail(
            speaker,
            sa,
            "the responder's KE is not in the group of our KE",
        );
        return;
    }
    let Ok(g_ir) = share.agree(ke_data) else {
        fail(speaker, sa, "the responder's KE value is invalid");
        return;
    };
    sa.pending = None;
    sa.remote_spi = msg.header.spi_r;
    sa.nr = nr;
    sa.suite = Some(suite);
    sa.init_remote = bytes.to_vec();
    sa.last_received = now;
    let keys = IkeKeys::derive(
        suite.prf,
        suite.cipher,
        &g_ir,
        &sa.ni,
        &sa.nr,
        sa.local_spi,
        sa.remote_spi,
    );
    sa.tx = Some(SkCipher::new(suite.cipher, &keys.sk_ei));
    sa.rx = Some(SkCipher::new(suite.cipher, &keys.sk_er));
    sa.keys = Some(keys);
    sa.nat = detect_nat(payloads, sa.local_spi, sa.remote_spi, sa.local, sa.remote);
    sa.nat.local_behind_nat |= speaker.config.force_udp_encap;
    note_fragmentation(speaker, sa, payloads);
    if sa.nat.any() {
        // §2.23: IKE_AUTH and everything after goes to port 4500.
        sa.local.set_port(speaker.config.nat_t_port);
        sa.remote.set_port(speaker.config.nat_t_port);
    }
    auth_exchange::send_request(speaker, sa, now);
}

fn fail(speaker: &mut Speaker, sa: &mut IkeSa, reason: &str) {
    tracing::info!(peer = ?sa.peer, reason, "IKE_SA_INIT failed");
    speaker.close(sa, reason.to_string());
}
