//! NOTIFICATION (RFC 4271 §4.5): error code, subcode and data, kept as sent so codes
//! from later RFCs pass through.

use super::Reader;

/// NOTIFICATION error codes (IANA "BGP Error (Notification) Codes").
pub mod codes {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

/// The header check guarantees the two octets of code and subcode.
pub(crate) fn decode(body: &[u8]) -> Notification {
    let mut r = Reader::new(body);
    Notification {
        code: r.u8().unwrap_or(0),
        subcode: r.u8().unwrap_or(0),
        data: r.rest().to_vec(),
    }
}

pub(crate) fn encode(n: &Notification, out: &mut Vec<u8>) {
    out.push(n.code);
    out.push(n.subcode);
    out.extend_from_slice(&n.data);
}
