//! IKE fragmentation (RFC 7383) for one IKE SA: whether and how an encrypted message
//! we send is split ([`Datagrams`], [`max_message_len`]), and the reassembly of the
//! peer's fragmented messages under strict bounds.
//!
//! A hostile peer (or anyone who can spoof its address) must not be able to make us
//! keep much: a fragment is only kept once it authenticates (§2.6), only for the one
//! request we expect next or the response to our request in flight, at most
//! [`MAX_FRAGMENTS`] of them and [`MAX_MESSAGE`] bytes per set, and a set is dropped
//! as soon as it completes or its message ID is no longer the one we wait for.

use std::net::SocketAddr;

use crate::codec::{self, ExchangeType, Message, Payload};
use crate::crypto::CryptoError;

use super::Speaker;
use super::sa::IkeSa;

/// The smallest `Config::fragment_size` honoured: RFC 7383 §2.5.1's IPv4 minimum
/// datagram (576 bytes) every IPv4 path carries unfragmented.
pub const MIN_FRAGMENT_SIZE: usize = 576;
/// The most fragments one message may have; a set announcing more is dropped
/// unopened.
pub const MAX_FRAGMENTS: u16 = 64;
/// The most plaintext one reassembled message may hold.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// One message as it goes on the wire: a single datagram, or its fragments in order.
/// Retransmissions resend all of them, as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Datagrams(pub Vec<Vec<u8>>);

impl From<Vec<u8>> for Datagrams {
    fn from(bytes: Vec<u8>) -> Self {
        Datagrams(vec![bytes])
    }
}

/// The longest IKE message (UDP payload, without the non-ESP marker) we send to a
/// peer that reassembles, for a configured `fragment_size` that counts the whole IP
/// datagram, as strongSwan's `charon.fragment_size` does.
pub(crate) fn max_message_len(fragment_size: usize, local: SocketAddr) -> usize {
    let ip_header = if local.is_ipv4() { 20 } else { 40 };
    // UDP header, and the non-ESP marker on port 4500 (counted always: the SA may
    // move there after NAT detection).
    fragment_size.max(MIN_FRAGMENT_SIZE) - ip_header - 8 - 4
}

/// The fragments of one message received so far, decrypted.
#[derive(Debug)]
struct Reassembly {
    message_id: u32,
    exchange: ExchangeType,
    /// The first inner payload type, from fragment 1.
    first_inner: Option<u8>,
    parts: Vec<Option<Vec<u8>>>,
    size: usize,
}

impl Reassembly {
    fn new(message_id: u32, exchange: ExchangeType, total: u16) -> Self {
        Reassembly {
            message_id,
            exchange,
            first_inner: None,
            parts: vec![None; total as usize],
            size: 0,
        }
    }

    fn total(&self) -> usize {
        self.parts.len()
    }

    fn complete(&self) -> bool {
        self.parts.iter().all(Option::is_some)
    }
}

/// The sets being reassembled on one IKE SA: the peer's request and the response to
/// ours (each side has a window of one).
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    request: Option<Reassembly>,
    response: Option<Reassembly>,
}

impl Inbound {
    fn slot(&mut self, response: bool) -> &mut Option<Reassembly> {
        if response {
            &mut self.response
        } else {
            &mut self.request
        }
    }

    /// Plaintext bytes held.
    pub fn bytes(&self) -> usize {
        [&self.request, &self.response]
            .iter()
            .filter_map(|r| r.as_ref())
            .map(|r| r.size)
            .sum()
    }
}

/// The inner payloads of an encrypted `msg` (the datagram `bytes`) that passed the
/// message-ID checks: at once for an SK message, or when the last missing fragment of
/// an SKF set arrives. `None` while fragments are missing, or for a fragment dropped
/// without a word (not negotiated, out of bounds, a duplicate, a smaller set).
pub(crate) fn open(
    sa: &mut IkeSa,
    bytes: &[u8],
    msg: &Message,
) -> Option<Result<Vec<Payload>, CryptoError>> {
    let h = &msg.header;
    // Sets for a message we no longer wait for are dead weight.
    let pending = sa.pending.as_ref().map(|p| p.message_id);
    let expected = sa.expected_request_id;
    if sa
        .inbound
        .request
        .as_ref()
        .is_some_and(|r| r.message_id != expected)
    {
        sa.inbound.request = None;
    }
    if sa
        .inbound
        .response
        .as_ref()
        .is_some_and(|r| Some(r.message_id) != pending)
    {
        sa.inbound.response = None;
    }
    let rx = sa.rx.as_ref()?;
    let Some(Payload::EncryptedFragment(frag)) = msg.payloads.last() else {
        let opened = rx.open(bytes, msg);
        if opened.is_ok() {
            *sa.inbound.slot(h.response) = None;
        }
        return Some(opened);
    };
    if sa.fragment_size.is_none() {
        tracing::debug!("IKE fragment from a peer that did not announce fragmentation dropped");
        return None;
    }
    // Cheap checks first: nothing is decrypted for a set we would not keep.
    if frag.total > MAX_FRAGMENTS || frag.data.len() > MAX_MESSAGE {
        tracing::debug!(total = frag.total, "IKE fragment beyond the limits dropped");
        return None;
    }
    let slot = sa.inbound.slot(h.response);
    if let Some(r) = slot.as_ref()
        && r.message_id == h.message_id
        && r.exchange == h.exchange
    {
        // §2.6: a smaller total than the set's is stale; a part we have is a duplicate.
        let total = usize::from(frag.total);
        if total < r.total()
            || (total == r.total() && r.parts[usize::from(frag.number) - 1].is_some())
        {
            return None;
        }
    }
    let plain = match rx.open_fragment(bytes, frag) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let fresh = match slot.as_ref() {
        Some(r) => {
            r.message_id != h.message_id
                || r.exchange != h.exchange
                || usize::from(frag.total) > r.total()
        }
        None => true,
    };
    if fresh {
        // §2.6: a larger total means the sender resent with smaller fragments.
        *slot = Some(Reassembly::new(h.message_id, h.exchange, frag.total));
    }
    let r = slot.as_mut().expect("just filled");
    if r.size + plain.len() > MAX_MESSAGE {
        tracing::debug!(
            message_id = h.message_id,
            "fragmented IKE message over the size limit dropped"
        );
        *slot = None;
        return None;
    }
    if frag.number == 1 {
        r.first_inner = Some(frag.first_inner);
    }
    r.size += plain.len();
    r.parts[usize::from(frag.number) - 1] = Some(plain);
    if !r.complete() {
        return None;
    }
    let r = slot.take().expect("complete");
    let first = r.first_inner.expect("fragment 1 is in a complete set");
    let whole: Vec<u8> = r.parts.into_iter().flatten().flatten().collect();
    Some(codec::decode_chain(first, &whole, false).map_err(CryptoError::Inner))
}

/// Whether `msg`, a retransmission of the request we answered last, should have our
/// answer sent again: a whole message always (as before fragmentation), a fragmented
/// one only for its authentic fragment 1, so that a set brings one answer (§2.6.2).
pub(crate) fn answers_retransmission(sa: &IkeSa, bytes: &[u8], msg: &Message) -> bool {
    match msg.payloads.last() {
        Some(Payload::EncryptedFragment(frag)) => {
            frag.number == 1
                && sa
                    .rx
                    .as_ref()
                    .is_some_and(|rx| rx.open_fragment(bytes, frag).is_ok())
        }
        _ => true,
    }
}

impl Speaker {
    /// Plaintext bytes held for fragmented messages not yet complete, over all IKE
    /// SAs: bounded by [`MAX_MESSAGE`] twice per SA.
    pub fn reassembly_bytes(&self) -> usize {
        self.sas.values().map(|sa| sa.inbound.bytes()).sum()
    }
}

/// The body of the `ike_reassembly` fuzz target: each 8 bytes of `data` are one
/// fragment (message ID offset, number, total, flags, length, fill byte) sealed with
/// the SA's key, or, with flag bit 0, a corrupted copy that must not authenticate.
pub(crate) fn fuzz_reassembly(data: &[u8]) {
    use crate::crypto::Secret;
    use crate::crypto::sk::SkCipher;
    use crate::crypto::suite::Cipher;
    let key = Secret::new(vec![7; Cipher::AesGcm16_256.keymat_len()]);
    let addr: SocketAddr = "192.0.2.1:500".parse().expect("address");
    let mut sa = IkeSa::new(1, false, addr, addr, std::time::Instant::now());
    sa.remote_spi = 2;
    sa.rx = Some(SkCipher::new(Cipher::AesGcm16_256, &key));
    sa.fragment_size = Some(1000);
    sa.expected_request_id = 2;
    let mut tx = SkCipher::new(Cipher::AesGcm16_256, &key);
    for rec in data.chunks(8) {
        let b = |i: usize| rec.get(i).copied().unwrap_or(0);
        let header = codec::Header {
            spi_i: 2,
            spi_r: 1,
            minor_version: 0,
            exchange: if b(5) & 2 == 0 {
                ExchangeType::Informational
            } else {
                ExchangeType::CreateChildSa
            },
            initiator: true,
            version: false,
            response: b(5) & 4 != 0,
            message_id: 2 + u32::from(b(0) % 3),
        };
        let (number, total) = (
            u16::from_be_bytes([b(1), b(2)]),
            u16::from_be_bytes([b(3), b(4)]),
        );
        let chunk = vec![b(7); usize::from(b(6)) * 8];
        let Ok(mut bytes) = tx.seal_fragment(&header, b(7), number, total, &chunk) else {
            continue;
        };
        if b(5) & 1 != 0 {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
        if b(5) & 8 != 0 {
            sa.expected_request_id = 2 + u32::from(b(0) % 3);
        }
        let before = sa.inbound.bytes();
        let Ok(msg) = Message::decode(&bytes) else {
            continue;
        };
        let opened = open(&mut sa, &bytes, &msg);
        if b(5) & 1 != 0 {
            assert!(
                !matches!(opened, Some(Ok(_))),
                "a corrupted fragment completed a set"
            );
            assert!(
                sa.inbound.bytes() <= before,
                "a corrupted fragment was kept"
            );
        }
        assert!(
            sa.inbound.bytes() <= 2 * MAX_MESSAGE,
            "reassembly over its bound"
        );
    }
}

#[cfg(test)]
mod tests {
    //! A peer that holds the SA's keys and still lies: every fragment here
    //! authenticates, so only the bounds of the reassembly stand in the way.

    use std::time::Instant;

    use super::*;
    use crate::codec::{Header, Notify, NotifyType};
    use crate::crypto::Secret;
    use crate::crypto::sk::SkCipher;
    use crate::crypto::suite::Cipher;

    fn key() -> Secret {
        Secret::new(vec![7; Cipher::AesGcm16_256.keymat_len()])
    }

    /// A responder SA expecting request 2, and the peer's sending key.
    fn sa() -> (IkeSa, SkCipher) {
        let addr: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let mut sa = IkeSa::new(1, false, addr, addr, Instant::now());
        sa.remote_spi = 2;
        sa.rx = Some(SkCipher::new(Cipher::AesGcm16_256, &key()));
        sa.fragment_size = Some(1000);
        sa.expected_request_id = 2;
        (sa, SkCipher::new(Cipher::AesGcm16_256, &key()))
    }

    fn header(message_id: u32) -> Header {
        Header {
            spi_i: 2,
            spi_r: 1,
            minor_version: 0,
            exchange: ExchangeType::Informational,
            initiator: true,
            version: false,
            response: false,
            message_id,
        }
    }

    fn feed(sa: &mut IkeSa, bytes: &[u8]) -> Option<Result<Vec<Payload>, CryptoError>> {
        let msg = Message::decode(bytes).expect("a well-formed fragment");
        open(sa, bytes, &msg)
    }

    fn fragment(tx: &mut SkCipher, id: u32, number: u16, total: u16, len: usize) -> Vec<u8> {
        tx.seal_fragment(&header(id), 0, number, total, &vec![0xaa; len])
            .unwrap()
    }

    #[test]
    fn a_set_reassembles_in_any_order_and_is_freed() {
        let (mut sa, mut tx) = sa();
        let inner = vec![Payload::Notify(Notify::new(
            NotifyType::Other(40000),
            vec![0x42; 2000],
        ))];
        let mut set = tx.seal_fragments(&header(2), &inner, 600).unwrap();
        assert!(set.len() >= 4, "{} fragments", set.len());
        assert!(set.iter().all(|f| f.len() <= 600));
        set.reverse();
        let (last, rest) = set.split_last().unwrap();
        for f in rest {
            assert!(feed(&mut sa, f).is_none());
            assert!(feed(&mut sa, f).is_none(), "a duplicate is ignored");
        }
        assert!(sa.inbound.bytes() > 0);
        assert_eq!(feed(&mut sa, last), Some(Ok(inner)));
        assert_eq!(sa.inbound.bytes(), 0, "a complete set is not kept");
    }

    #[test]
    fn a_smaller_total_is_ignored_and_a_larger_one_starts_over() {
        let (mut sa, mut tx) = sa();
        assert!(feed(&mut sa, &fragment(&mut tx, 2, 1, 3, 100)).is_none());
        assert!(feed(&mut sa, &fragment(&mut tx, 2, 2, 2, 100)).is_none());
        assert_eq!(sa.inbound.bytes(), 100, "the stale smaller set is not kept");
        assert!(feed(&mut sa, &fragment(&mut tx, 2, 3, 5, 50)).is_none());
        assert_eq!(
            sa.inbound.bytes(),
            50,
            "the larger set replaced the old one"
        );
    }

    #[test]
    fn too_many_fragments_or_bytes_are_not_kept() {
        let (mut sa, mut tx) = sa();
        let over = MAX_FRAGMENTS + 1;
        assert!(feed(&mut sa, &fragment(&mut tx, 2, 1, over, 100)).is_none());
        assert_eq!(sa.inbound.bytes(), 0);
        // 64 fragments of 1100 bytes: over 64 KiB before the set completes.
        let mut peak = 0;
        for n in 1..=MAX_FRAGMENTS {
            assert!(feed(&mut sa, &fragment(&mut tx, 2, n, MAX_FRAGMENTS, 1100)).is_none());
            peak = peak.max(sa.inbound.bytes());
        }
        assert!(peak <= MAX_MESSAGE, "{peak} bytes held");
        assert!(sa.inbound.bytes() < MAX_MESSAGE);
    }

    #[test]
    fn only_the_expected_message_is_kept() {
        let (mut sa, mut tx) = sa();
        assert!(feed(&mut sa, &fragment(&mut tx, 2, 1, 2, 100)).is_none());
        assert_eq!(sa.inbound.bytes(), 100);
        // The request was answered some other way: the set is dead weight.
        sa.expected_request_id = 3;
        assert!(feed(&mut sa, &fragment(&mut tx, 3, 1, 2, 10)).is_none());
        assert_eq!(sa.inbound.bytes(), 10);
        // Without negotiation nothing is kept at all.
        let (mut plain, mut tx) = super::tests::sa();
        plain.fragment_size = None;
        assert!(feed(&mut plain, &fragment(&mut tx, 2, 1, 2, 100)).is_none());
        assert_eq!(plain.inbound.bytes(), 0);
    }
}
