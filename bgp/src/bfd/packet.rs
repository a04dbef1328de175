//! The BFD Control packet (RFC 5880 §4.1) and the reception checks of §6.8.6 that need
//! no session: version, length, detect multiplier, multipoint, discriminators.
//!
//! Authentication (the A bit) is not supported: such packets are rejected with their
//! own error, as §6.8.6 requires of a session with no authentication configured.
//! Decoding never panics; every rejection is a typed [`PacketError`].

/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// The length of a Control packet without an authentication section.
pub const CONTROL_LEN: usize = 24;

/// Session state as carried in the Sta field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// The Diag field: why the sender's session last changed state (§4.1). Values 9–31
/// are reserved; they are kept as received rather than rejected, since a receiver has
/// no use for the diagnostic beyond reporting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    Reserved(u8),
}

impl Diagnostic {
    pub fn code(self) -> u8 {
        match self {
            Diagnostic::None => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Reserved(c) => c & 0x1f,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code & 0x1f {
            0 => Diagnostic::None,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            c => Diagnostic::Reserved(c),
        }
    }
}

/// A BFD Control packet without authentication. Intervals are in microseconds, as on
/// the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: State,
    /// P: the sender asks for a packet with F set (a Poll Sequence, §6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// D: the sender wants Demand mode.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received datagram is not an acceptable Control packet (§6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("datagram of {len} bytes is shorter than a BFD Control packet ({CONTROL_LEN})")]
    Truncated { len: usize },
    #[error("BFD version {version} (only version 1 is spoken)")]
    BadVersion { version: u8 },
    #[error("authentication section present (A bit) but no authentication is configured")]
    AuthenticationNotSupported,
    #[error(
        "Length field {length} is below {CONTROL_LEN} or beyond the datagram ({datagram} bytes)"
    )]
    BadLength { length: u8, datagram: usize },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("Multipoint (M) bit is set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Your Discriminator is zero in state {state}")]
    ZeroYourDiscriminator { state: State },
    #[error("both Poll and Final bits are set")]
    PollAndFinal,
}

const FLAG_P: u8 = 0x20;
const FLAG_F: u8 = 0x10;
const FLAG_C: u8 = 0x08;
const FLAG_A: u8 = 0x04;
const FLAG_D: u8 = 0x02;
const FLAG_M: u8 = 0x01;

impl ControlPacket {
    /// Parse and check a received datagram (the UDP payload).
    pub fn decode(buf: &[u8]) -> Result<Self, PacketError> {
        if buf.len() < CONTROL_LEN {
            return Err(PacketError::Truncated { len: buf.len() });
        }
        let version = buf[0] >> 5;
        if version != VERSION {
            return Err(PacketError::BadVersion { version });
        }
        let flags = buf[1];
        if flags & FLAG_A != 0 {
            return Err(PacketError::AuthenticationNotSupported);
        }
        let length = buf[3];
        if usize::from(length) < CONTROL_LEN || usize::from(length) > buf.len() {
            return Err(PacketError::BadLength {
                length,
                datagram: buf.len(),
            });
        }
        let word = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let packet = ControlPacket {
            diagnostic: Diagnostic::from_code(buf[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & FLAG_P != 0,
            final_: flags & FLAG_F != 0,
            control_plane_independent: flags & FLAG_C != 0,
            demand: flags & FLAG_D != 0,
            detect_mult: buf[2],
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        };
        if packet.detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        if flags & FLAG_M != 0 {
            return Err(PacketError::Multipoint);
        }
        if packet.my_discriminator == 0 {
            return Err(PacketError::ZeroMyDiscriminator);
        }
        if packet.your_discriminator == 0 && !matches!(packet.state, State::Down | State::AdminDown)
        {
            return Err(PacketError::ZeroYourDiscriminator {
                state: packet.state,
            });
        }
        // §6.5: "A BFD Control packet MUST NOT have both the Poll (P) and Final (F)
        // bits set"; such a packet cannot be answered meaningfully.
        if packet.poll && packet.final_ {
            return Err(PacketError::PollAndFinal);
        }
        Ok(packet)
    }

    /// The 24 bytes on the wire (A and M clear, Length 24).
    pub fn encode(&self) -> [u8; CONTROL_LEN] {
        let mut out = [0u8; CONTROL_LEN];
        out[0] = (VERSION << 5) | self.diagnostic.code();
        let mut flags = (self.state as u8) << 6;
        for (set, bit) in [
            (self.poll, FLAG_P),
            (self.final_, FLAG_F),
            (self.control_plane_independent, FLAG_C),
            (self.demand, FLAG_D),
        ] {
            if set {
                flags |= bit;
            }
        }
        out[1] = flags;
        out[2] = self.detect_mult;
        out[3] = CONTROL_LEN as u8;
        out[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        out[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        out[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        out[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        out[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Up packet as FRR's bfdd sends it with 300 ms timers and detect mult 3
    /// (C bit clear, echo RX 50 ms), written out by hand from §4.1.
    const UP_300MS: [u8; 24] = [
        0x20, 0xc0, 0x03, 0x18, // version 1, diag 0; Sta=Up; mult 3; length 24
        0x11, 0x22, 0x33, 0x44, // My Discriminator
        0x55, 0x66, 0x77, 0x88, // Your Discriminator
        0x00, 0x04, 0x93, 0xe0, // Desired Min TX 300 000 µs
        0x00, 0x04, 0x93, 0xe0, // Required Min RX 300 000 µs
        0x00, 0x00, 0xc3, 0x50, // Required Min Echo RX 50 000 µs
    ];

    fn up_packet() -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state: State::Up,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x1122_3344,
            your_discriminator: 0x5566_7788,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 50_000,
        }
    }

    #[test]
    fn decodes_vector() {
        assert_eq!(ControlPacket::decode(&UP_300MS), Ok(up_packet()));
        assert_eq!(up_packet().encode(), UP_300MS);
    }

    #[test]
    fn down_with_diag_and_poll_vector() {
        // Down, diag 1 (detection time expired), P set, Your Discriminator still zero.
        let bytes = [
            0x21, 0x60, 0x05, 0x18, 0, 0, 0, 7, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x0f,
            0x42, 0x40, 0, 0, 0, 0,
        ];
        let p = ControlPacket::decode(&bytes).unwrap();
        assert_eq!(p.state, State::Down);
        assert_eq!(p.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert!(p.poll && !p.final_);
        assert_eq!(p.detect_mult, 5);
        assert_eq!(p.desired_min_tx_us, 1_000_000);
        assert_eq!(p.encode(), bytes);
    }

    #[test]
    fn round_trips_every_state_flag_and_diag() {
        for state in [State::AdminDown, State::Down, State::Init, State::Up] {
            for code in 0..32u8 {
                for bits in 0..8u8 {
                    let p = ControlPacket {
                        diagnostic: Diagnostic::from_code(code),
                        state,
                        poll: bits & 1 != 0,
                        final_: false,
                        control_plane_independent: bits & 2 != 0,
                        demand: bits & 4 != 0,
                        ..up_packet()
                    };
                    assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
                    let f = ControlPacket {
                        poll: false,
                        final_: true,
                        ..p
                    };
                    assert_eq!(ControlPacket::decode(&f.encode()), Ok(f));
                }
            }
        }
    }

    #[test]
    fn longer_length_and_trailing_bytes_are_accepted() {
        // §6.8.6 rejects only a Length below the minimum or beyond the payload.
        let mut bytes = UP_300MS.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes[3] = 28;
        assert_eq!(ControlPacket::decode(&bytes), Ok(up_packet()));
    }

    fn with(f: impl FnOnce(&mut [u8; 24])) -> Result<ControlPacket, PacketError> {
        let mut b = UP_300MS;
        f(&mut b);
        ControlPacket::decode(&b)
    }

    #[test]
    fn rejects_what_6_8_6_discards() {
        assert_eq!(
            ControlPacket::decode(&UP_300MS[..23]),
            Err(PacketError::Truncated { len: 23 })
        );
        assert_eq!(
            ControlPacket::decode(&[]),
            Err(PacketError::Truncated { len: 0 })
        );
        assert_eq!(
            with(|b| b[0] = 0x40),
            Err(PacketError::BadVersion { version: 2 })
        );
        assert_eq!(
            with(|b| b[1] |= FLAG_A),
            Err(PacketError::AuthenticationNotSupported)
        );
        assert_eq!(
            with(|b| b[3] = 23),
            Err(PacketError::BadLength {
                length: 23,
                datagram: 24
            })
        );
        assert_eq!(
            with(|b| b[3] = 25),
            Err(PacketError::BadLength {
                length: 25,
                datagram: 24
            })
        );
        assert_eq!(with(|b| b[2] = 0), Err(PacketError::ZeroDetectMult));
        assert_eq!(with(|b| b[1] |= FLAG_M), Err(PacketError::Multipoint));
        assert_eq!(
            with(|b| b[4..8].fill(0)),
            Err(PacketError::ZeroMyDiscriminator)
        );
        assert_eq!(
            with(|b| b[8..12].fill(0)),
            Err(PacketError::ZeroYourDiscriminator { state: State::Up })
        );
        assert_eq!(
            with(|b| {
                b[8..12].fill(0);
                b[1] = (State::Init as u8) << 6;
            }),
            Err(PacketError::ZeroYourDiscriminator { state: State::Init })
        );
        assert_eq!(
            with(|b| b[1] |= FLAG_P | FLAG_F),
            Err(PacketError::PollAndFinal)
        );
        // Zero Your Discriminator is fine in Down and AdminDown.
        for sta in [State::Down, State::AdminDown] {
            let p = with(|b| {
                b[8..12].fill(0);
                b[1] = (sta as u8) << 6;
            })
            .unwrap();
            assert_eq!(p.state, sta);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        // A cheap deterministic sweep over lengths and byte patterns; the fuzz target
        // does the thorough job.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..64 {
            for _ in 0..200 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                if let Ok(p) = ControlPacket::decode(&buf) {
                    assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
                }
            }
        }
    }
}
