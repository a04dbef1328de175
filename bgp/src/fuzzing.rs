//! The fuzz targets' bodies, run by `fuzz/` under libFuzzer and by
//! `tests/fuzz_smoke.rs` on every `cargo test`. Each panics on a finding: a panic in
//! the decoder, a decoded message that does not encode, or one whose encoding decodes
//! to something else.

use crate::codec::{self, Context, Decoded, HEADER_LEN, MAX_MESSAGE_LEN, MessageType};

/// The sessions a message is read in: before/without and with the 4-octet AS, IPv6
/// and extended next hop (RFC 8950) capabilities, since AS_PATH and MP attributes
/// decode differently.
fn contexts() -> [Context; 2] {
    [Context::default(), Context::modern()]
}

/// Whatever decodes must survive a round trip; whatever fails must name a
/// NOTIFICATION that can be sent.
fn check(buf: &[u8]) {
    let _ = codec::frame_length(buf);
    for ctx in contexts() {
        match codec::decode(buf, &ctx) {
            Ok(Decoded::Message(m)) => {
                let bytes = codec::encode(&m, &ctx)
                    .unwrap_or_else(|e| panic!("decoded {m:?} does not encode: {e}"));
                match codec::decode(&bytes, &ctx) {
                    Ok(Decoded::Message(again)) => {
                        assert_eq!(again, m, "round trip changed the message")
                    }
                    other => panic!("re-encoded {m:?} decodes to {other:?}"),
                }
            }
            Ok(Decoded::TreatAsWithdraw { .. }) => {}
            Err(e) => {
                let n = codec::Message::Notification(e.notification());
                codec::encode(&n, &ctx)
                    .unwrap_or_else(|e2| panic!("NOTIFICATION for {e} does not encode: {e2}"));
            }
        }
    }
}

/// Any bytes as one whole message, header included.
pub fn message(data: &[u8]) {
    check(data);
}

/// `data` as the body of a message of type `kind`, behind a valid header, so the
/// fuzzer spends its time in the body decoder.
fn body(kind: MessageType, data: &[u8]) {
    let Some(body) = data.get(..data.len().min(MAX_MESSAGE_LEN - HEADER_LEN)) else {
        return;
    };
    let mut buf = vec![0xff; 16];
    buf.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(body);
    check(&buf);
}

/// Any bytes as an UPDATE body.
pub fn update(data: &[u8]) {
    body(MessageType::Update, data);
}

/// Any bytes as an OPEN body.
pub fn open(data: &[u8]) {
    body(MessageType::Open, data);
}

/// Any bytes as one BFD control packet (RFC 5880 §4.1): what decodes must encode to
/// bytes that decode to the same packet; nothing may panic.
pub fn bfd_packet(data: &[u8]) {
    use crate::bfd::packet::ControlPacket;
    if let Ok(p) = ControlPacket::decode(data) {
        let again = ControlPacket::decode(&p.encode())
            .unwrap_or_else(|e| panic!("re-encoded {p:?} does not decode: {e}"));
        assert_eq!(again, p, "BFD round trip changed the packet");
    }
}
