//! UDP encapsulation of ESP (RFC 3948): what arrives on UDP port 4500 is an IKE
//! message behind a 4-octet non-ESP marker, a NAT keepalive (one 0xFF octet), or an
//! ESP packet (its first four octets are the SPI, never zero).

/// The non-ESP marker in front of IKE messages on port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The NAT keepalive payload (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];
/// The IKE/ESP port of NAT traversal.
pub const NAT_T_PORT: u16 = 4500;

/// What a UDP 4500 datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// An IKE message, the marker stripped.
    Ike(&'a [u8]),
    /// An ESP packet, from the SPI on.
    Esp(&'a [u8]),
    Keepalive,
    /// Too short to be any of them.
    Invalid,
}

/// Sort a datagram received on port 4500.
pub fn classify(d: &[u8]) -> Datagram<'_> {
    match d {
        [0xff] => Datagram::Keepalive,
        [0, 0, 0, 0, ike @ ..] => Datagram::Ike(ike),
        // Shorter than SPI + sequence number: not ESP.
        _ if d.len() < 8 => Datagram::Invalid,
        _ => Datagram::Esp(d),
    }
}

/// An IKE message with the non-ESP marker in front, ready for port 4500. The IKE
/// speaker hands its NAT keepalives down the same way; they go bare (RFC 3948 §2.3),
/// or the peer would read a one-octet IKE message and drop it.
pub fn ike_datagram(message: &[u8]) -> Vec<u8> {
    if message == NAT_KEEPALIVE {
        return NAT_KEEPALIVE.to_vec();
    }
    let mut d = Vec::with_capacity(4 + message.len());
    d.extend_from_slice(&NON_ESP_MARKER);
    d.extend_from_slice(message);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demultiplexes_ike_esp_and_keepalives() {
        assert_eq!(classify(&[0xff]), Datagram::Keepalive);
        let ike = ike_datagram(b"IKE_SA_INIT");
        assert_eq!(classify(&ike), Datagram::Ike(b"IKE_SA_INIT"));
        let esp = [0, 0, 1, 0, 0, 0, 0, 1, 9, 9];
        assert_eq!(classify(&esp), Datagram::Esp(&esp));
        assert_eq!(classify(&[]), Datagram::Invalid);
        assert_eq!(classify(&[1, 2, 3]), Datagram::Invalid);
        assert_eq!(classify(&[0, 0, 0]), Datagram::Invalid);
        assert_eq!(classify(&ike_datagram(&NAT_KEEPALIVE)), Datagram::Keepalive);
    }
}
