//! INFORMATIONAL (RFC 7296 §1.4): Delete of Child SAs and of the IKE SA, the empty
//! request of dead-peer detection, and the AUTHENTICATION_FAILED an initiator sends
//! when the responder's AUTH did not verify.

use std::time::Instant;

use crate::codec::{Delete, ExchangeType, NotifyType, Payload, ProtocolId, find_notify};

use super::sa::{IkeSa, InFlight};
use super::{Event, Speaker};

pub(super) fn delete_child_request(
    sa: &mut IkeSa,
    spis_in: Vec<u32>,
) -> (ExchangeType, Vec<Payload>, InFlight) {
    for c in sa
        .children
        .iter_mut()
        .filter(|c| spis_in.contains(&c.spi_in))
    {
        c.deleting = true;
    }
    let d = Delete {
        protocol: ProtocolId::Esp,
        spis: spis_in.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
    };
    (
        ExchangeType::Informational,
        vec![Payload::Delete(d)],
        InFlight::DeleteChild { spis_in },
    )
}

pub(super) fn delete_ike_request() -> (ExchangeType, Vec<Payload>, InFlight) {
    let d = Delete {
        protocol: ProtocolId::Ike,
        spis: Vec::new(),
    };
    (
        ExchangeType::Informational,
        vec![Payload::Delete(d)],
        InFlight::DeleteIke,
    )
}

fn remove_children(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    pick: impl Fn(&super::sa::Child) -> bool,
) -> Vec<u32> {
    let peer = sa.peer.clone();
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut sa.children)
        .into_iter()
        .partition(|c| pick(c));
    sa.children = kept;
    let mut spis_in = Vec::new();
    for c in gone {
        spis_in.push(c.spi_in);
        if let Some(peer) = peer.clone() {
            speaker.emit(Event::ChildSaDeleted {
                peer,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
            });
        }
    }
    spis_in
}

pub(super) fn delete_child_response(speaker: &mut Speaker, sa: &mut IkeSa, spis_in: &[u32]) {
    remove_children(speaker, sa, |c| spis_in.contains(&c.spi_in));
}

pub(super) fn handle_request(
    speaker: &mut Speaker,
    sa: &mut IkeSa,
    id: u32,
    inner: &[Payload],
    _now: Instant,
) {
    if find_notify(inner, NotifyType::AuthenticationFailed).is_some() {
        speaker.respond(sa, ExchangeType::Informational, id, &[]);
        if let Some(peer) = sa.peer.clone() {
            speaker.emit(Event::AuthFailed {
                peer,
                reason: super::auth_exchange::PEER_REFUSED_OUR_AUTH.into(),
            });
        }
        sa.superseded = true; // AuthFailed says it all
        speaker.close(sa, String::new());
        return;
    }
    let deletes: Vec<&Delete> = inner
        .iter()
        .filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        })
        .collect();
    if deletes.iter().any(|d| d.protocol == ProtocolId::Ike) {
        speaker.respond(sa, ExchangeType::Informational, id, &[]);
        speaker.close(sa, "deleted by the peer".into());
        return;
    }
    let mut ours = Vec::new();
    for d in deletes.iter().filter(|d| d.protocol == ProtocolId::Esp) {
        let spis_out: Vec<u32> = d
            .spis
            .iter()
            .filter_map(|s| <[u8; 4]>::try_from(&s[..]).ok().map(u32::from_be_bytes))
            .collect();
        ours.extend(remove_children(speaker, sa, |c| {
            spis_out.contains(&c.spi_out)
        }));
    }
    let answer = if ours.is_empty() {
        Vec::new()
    } else {
        vec![Payload::Delete(Delete {
            protocol: ProtocolId::Esp,
            spis: ours.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        })]
    };
    speaker.respond(sa, ExchangeType::Informational, id, &answer);
}
