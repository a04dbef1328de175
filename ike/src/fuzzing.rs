//! The fuzz targets' bodies, run by `fuzz/` under libFuzzer and by
//! `tests/fuzz_smoke.rs` on every `cargo test`. Each panics on a finding: a panic in
//! a decoder, a decoded value that does not encode, or one whose encoding decodes to
//! something else.

use crate::codec::{self, DecodeError, Message, Payload, payload_type};

/// What a failed decode answers with must be a notify that encodes.
fn answerable(e: &DecodeError) {
    let (kind, data) = e.notify();
    let n = Payload::Notify(codec::Notify::new(kind, data));
    let mut out = Vec::new();
    codec::encode_chain(&[n], &mut out)
        .unwrap_or_else(|e2| panic!("the notify for {e} does not encode: {e2}"));
}

/// Any bytes as one whole IKE message, header included.
pub fn message(data: &[u8]) {
    match Message::decode(data) {
        Ok(m) => {
            let bytes = m
                .encode()
                .unwrap_or_else(|e| panic!("decoded {m:?} does not encode: {e}"));
            let again = Message::decode(&bytes)
                .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
            assert_eq!(again, m, "round trip changed the message");
        }
        Err(e) => answerable(&e),
    }
}

/// Any bytes as a payload chain (what an Encrypted payload holds), starting with the
/// type in the first byte.
pub fn chain(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    match codec::decode_chain(*first, rest, false) {
        Ok(payloads) => {
            let mut out = Vec::new();
            let first = codec::encode_chain(&payloads, &mut out)
                .unwrap_or_else(|e| panic!("decoded {payloads:?} does not encode: {e}"));
            let again = codec::decode_chain(first, &out, false)
                .unwrap_or_else(|e| panic!("re-encoded {payloads:?} does not decode: {e}"));
            assert_eq!(again, payloads, "round trip changed the chain");
        }
        Err(e) => answerable(&e),
    }
}

/// Any bytes as an Encrypted Fragment payload (RFC 7383): the first byte is its
/// next-payload field, the rest its body (fragment number, total, sealed data).
pub fn encrypted_fragment(data: &[u8]) {
    let Some((next, body)) = data.split_first() else {
        return;
    };
    let Ok(len) = u16::try_from(body.len() + codec::PAYLOAD_HEADER_LEN) else {
        return;
    };
    let mut buf = vec![*next, 0];
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    match codec::decode_chain(payload_type::SKF, &buf, true) {
        Ok(payloads) => {
            let mut out = Vec::new();
            let first = codec::encode_chain(&payloads, &mut out)
                .unwrap_or_else(|e| panic!("decoded {payloads:?} does not encode: {e}"));
            assert_eq!(out, buf, "round trip changed the fragment");
            let again = codec::decode_chain(first, &out, true)
                .unwrap_or_else(|e| panic!("re-encoded {payloads:?} does not decode: {e}"));
            assert_eq!(again, payloads, "round trip changed the fragment");
        }
        Err(e) => answerable(&e),
    }
}

/// Any bytes as a series of authentic fragments from a peer that holds the keys:
/// reassembly must stay within its bounds and never panic.
pub fn reassembly(data: &[u8]) {
    crate::speaker::fragments::fuzz_reassembly(data);
}

/// `data` as the body of one payload of type `kind`.
fn payload(kind: u8, data: &[u8]) {
    let Some(result) = Payload::decode_body(kind, data) else {
        panic!("payload type {kind} has no decoder");
    };
    match result {
        Ok(p) => {
            let mut out = Vec::new();
            let first = codec::encode_chain(std::slice::from_ref(&p), &mut out)
                .unwrap_or_else(|e| panic!("decoded {p:?} does not encode: {e}"));
            let again = codec::decode_chain(first, &out, false)
                .unwrap_or_else(|e| panic!("re-encoded {p:?} does not decode: {e}"));
            assert_eq!(again, vec![p], "round trip changed the payload");
        }
        Err(e) => answerable(&e),
    }
}

macro_rules! payload_bodies {
    ($($(#[$doc:meta])* $name:ident = $kind:expr;)*) => {
        $($(#[$doc])* pub fn $name(data: &[u8]) { payload($kind, data) })*
    };
}

payload_bodies! {
    /// Any bytes as an SA payload body: proposals, transforms, attributes.
    sa = payload_type::SA;
    /// Any bytes as a KE payload body.
    ke = payload_type::KE;
    /// Any bytes as an IDi payload body (IDr is decoded by the same code).
    id = payload_type::IDI;
    /// Any bytes as a CERT payload body.
    cert = payload_type::CERT;
    /// Any bytes as a CERTREQ payload body.
    certreq = payload_type::CERTREQ;
    /// Any bytes as an AUTH payload body.
    auth = payload_type::AUTH;
    /// Any bytes as a Nonce payload body.
    nonce = payload_type::NONCE;
    /// Any bytes as a Notify payload body.
    notify = payload_type::NOTIFY;
    /// Any bytes as a Delete payload body.
    delete = payload_type::DELETE;
    /// Any bytes as a Vendor ID payload body.
    vendor = payload_type::VENDOR;
    /// Any bytes as a TSi payload body (TSr is decoded by the same code).
    ts = payload_type::TSI;
}

/// A speaker with a fresh key that accepts any peer key (none is known).
fn speaker(name: &str) -> crate::speaker::Speaker {
    use crate::auth::{Ed25519Signer, RawKeyVerifier};
    use crate::codec::Identity;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .expect("key generation");
    let signer = Ed25519Signer::from_pkcs8(pkcs8.as_ref(), true).expect("fresh key");
    let verifier = RawKeyVerifier::new(|_: &Identity| None);
    let config = crate::speaker::Config::new(Identity::Fqdn(name.into()));
    crate::speaker::Speaker::new(config, Box::new(signer), Box::new(verifier))
}

fn addrs() -> (std::net::SocketAddr, std::net::SocketAddr) {
    (
        "192.0.2.1:500".parse().expect("address"),
        "192.0.2.2:500".parse().expect("address"),
    )
}

/// Any bytes as a datagram to a responder: IKE_SA_INIT handling, cookies, the
/// unencrypted error answers; then its timers. Nothing may panic.
pub fn responder_datagram(data: &[u8]) {
    let mut s = speaker("responder");
    let (local, remote) = addrs();
    let now = std::time::Instant::now();
    s.handle_datagram(local, remote, data, now);
    s.handle_datagram(local, remote, data, now);
    s.poll(now + std::time::Duration::from_secs(60));
    while s.next_event().is_some() {}
}

/// Any bytes as the answer to an initiator's IKE_SA_INIT: the first 8 bytes are
/// overwritten with its SPI so that the answer reaches the SA. Nothing may panic.
pub fn initiator_response(data: &[u8]) {
    let mut s = speaker("initiator");
    let (local, remote) = addrs();
    let now = std::time::Instant::now();
    s.connect(
        crate::codec::Identity::Fqdn("responder".into()),
        local,
        remote,
        now,
    );
    let spi = s.status()[0].spi_i.to_be_bytes();
    let mut data = data.to_vec();
    if data.len() >= 8 {
        data[..8].copy_from_slice(&spi);
    }
    s.handle_datagram(local, remote, &data, now);
    s.poll(now + std::time::Duration::from_secs(60));
    while s.next_event().is_some() {}
}

/// Any bytes as an ID_DER_ASN1_DN: printed (which parses the DER `Name`) and matched
/// against a configured DN and against its own second half, as the gateway does
/// with a peer's identity.
pub fn dn(data: &[u8]) {
    let id = crate::codec::Identity::DerAsn1Dn(data.to_vec());
    let shown = id.to_string();
    assert!(shown.starts_with("dn:"), "{shown}");
    let expected =
        crate::codec::Identity::dn(&[("CN", "gw.example"), ("O", "Example")]).expect("a valid DN");
    let _ = id.matches(&expected);
    let (a, b) = data.split_at(data.len() / 2);
    let (a, b) = (
        crate::codec::Identity::DerAsn1Dn(a.to_vec()),
        crate::codec::Identity::DerAsn1Dn(b.to_vec()),
    );
    assert_eq!(a.matches(&b), b.matches(&a), "matching is symmetric");
    assert!(id.matches(&id), "a DN matches itself");
}

/// The clock of [`x509`]: 2027-01-15, within the seed certificates' validity.
const X509_CLOCK: u64 = 1_800_000_000;

/// The elements of [`x509`]'s input: `[u16 length][bytes]` one after another.
fn length_prefixed(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(rest.len());
        let (item, tail) = rest.split_at(len);
        out.push(item);
        data = tail;
    }
    out
}

/// What [`x509`] concluded: the CA was refused, or the peer's AUTH (method 14 over
/// `b"fuzz"`, claiming ID_FQDN `gw.example`) was checked with this outcome.
pub fn x509_outcome(data: &[u8]) -> Result<Result<(), String>, String> {
    use crate::auth::{AUTH_DIGITAL_SIGNATURE, CaVerifier, PeerAuth, x509 as cert};
    use crate::codec::Identity;
    let items = length_prefixed(data);
    let Some((ca, rest)) = items.split_first() else {
        return Err("no CA".into());
    };
    let (auth, certs): (&[u8], &[&[u8]]) = match rest.split_last() {
        Some((auth, certs)) => (auth, certs),
        None => (&[], &[]),
    };
    let certs: Vec<(u8, Vec<u8>)> = certs.iter().map(|c| (4, c.to_vec())).collect();
    // Whatever parses is described, as a refusal would.
    for (_, der) in &certs {
        if let Ok(c) = cert::parse(der) {
            let _ = cert::describe(&c);
            let _ = cert::identities(&c);
        }
    }
    let verifier = CaVerifier::from_der(vec![ca.to_vec()])?
        .with_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(X509_CLOCK));
    let requests = verifier.cert_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1.len(), 20, "one SHA-1 hash per CA");
    let prf = crate::crypto::prf::Prf::HmacSha256;
    for peer in [
        Identity::Ipv4([192, 0, 2, 1].into()),
        Identity::dn(&[("CN", "gw.example")]).expect("a valid DN"),
        Identity::KeyId(vec![1]),
    ] {
        let checked = verifier.check_certificates(&peer, &certs);
        let verified = verifier.verify(prf, &peer, b"fuzz", AUTH_DIGITAL_SIGNATURE, auth, &certs);
        if checked.is_err() {
            assert!(
                verified.is_err(),
                "AUTH verified where the certificate did not"
            );
        }
    }
    let peer = Identity::Fqdn("gw.example".into());
    Ok(verifier
        .verify(prf, &peer, b"fuzz", AUTH_DIGITAL_SIGNATURE, auth, &certs)
        .map_err(|e| e.to_string()))
}

/// Any bytes as a CA certificate, the CERT payloads of a peer and its AUTH data, each
/// `[u16 length][bytes]`: parsed, chained, identities and signature checked as
/// [`CaVerifier`](crate::auth::CaVerifier) does with an untrusted peer's. Nothing may
/// panic.
pub fn x509(data: &[u8]) {
    let _ = x509_outcome(data);
}
