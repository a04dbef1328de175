//! [`MacAddr`]: an Ethernet MAC address, and the one parser of its text form that the
//! agent, the CNI plugin and netctl share.
//!
//! Text form, both ways:
//! - written (`Display`, serde) lower case with colons: `02:42:ac:11:00:02`, what
//!   `ip link` prints and what the agent has always stored;
//! - read (`FromStr`, serde) as six pairs of hex digits, upper or lower case, separated
//!   all by `:` or all by `-` (`02-42-AC-11-00-02`, the form Windows and some runtimes
//!   pass in `CNI_ARGS`). A pair is exactly two digits; nothing else is accepted (no
//!   dots, no mixed separators, no leading `+`).
//!
//! Parsing says nothing about what the address may be used for: a multicast or
//! all-zero MAC parses. Whoever needs an interface's own address checks
//! [`MacAddr::is_unicast`] (and [`MacAddr::is_zero`]) and says why in its own words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The I/G bit (least significant bit of the first octet) is set: a group address,
    /// which no interface may take as its own.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The I/G bit is clear: an individual address. Includes the all-zero address,
    /// which the kernel refuses on an interface too (see [`MacAddr::is_zero`]).
    pub const fn is_unicast(self) -> bool {
        !self.is_multicast()
    }

    /// `00:00:00:00:00:00`.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not six hex pairs separated by `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MAC {0:?} is not six hex pairs")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            // from_str_radix alone would take "+a" or "a": a pair is two hex digits.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        match parts.next() {
            None => Ok(Self(octets)),
            Some(_) => Err(err()),
        }
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_colons_or_dashes_in_either_case_and_writes_lower_case_colons() {
        let want = MacAddr::new([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        for text in [
            "02:42:ac:11:00:02",
            "02:42:AC:11:00:02",
            "02-42-ac-11-00-02",
            "02-42-AC-11-00-02",
        ] {
            assert_eq!(text.parse::<MacAddr>(), Ok(want), "{text}");
        }
        assert_eq!(want.to_string(), "02:42:ac:11:00:02");
        assert_eq!(format!("{want:?}"), "02:42:ac:11:00:02");
    }

    #[test]
    fn refuses_anything_but_six_pairs_of_hex_digits() {
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02:42:ac:11:00:",
            "0:42:ac:11:00:02",
            "e:12:34:56:78:9a",
            "002:42:ac:11:00:02",
            "02:42:ac:11:00:0g",
            "zz:42:0a:00:00:01",
            "+2:42:ac:11:00:02",
            "02:42-ac:11:00:02",
            "02.42.ac.11.00.02",
            "0242ac110002",
            " 02:42:ac:11:00:02",
        ] {
            let err = bad.parse::<MacAddr>().expect_err(bad);
            assert_eq!(err.to_string(), format!("MAC {bad:?} is not six hex pairs"));
        }
    }

    #[test]
    fn multicast_is_the_ig_bit_and_parses_all_the_same() {
        let mcast: MacAddr = "01:00:5e:00:00:01".parse().unwrap();
        assert!(mcast.is_multicast() && !mcast.is_unicast());
        let bcast: MacAddr = "ff:ff:ff:ff:ff:ff".parse().unwrap();
        assert!(bcast.is_multicast());
        let own: MacAddr = "0e:12:34:56:78:9a".parse().unwrap();
        assert!(own.is_unicast() && !own.is_multicast() && !own.is_zero());
        let zero: MacAddr = "00:00:00:00:00:00".parse().unwrap();
        assert!(zero.is_zero() && zero.is_unicast());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let mac = MacAddr::new([0xee, 0x01, 0x02, 0xab, 0xcd, 0xef]);
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            r#""ee:01:02:ab:cd:ef""#
        );
        assert_eq!(
            serde_json::from_str::<MacAddr>(r#""EE-01-02-AB-CD-EF""#).unwrap(),
            mac
        );
        let err = serde_json::from_str::<MacAddr>(r#""ee:01""#).unwrap_err();
        assert!(err.to_string().contains("is not six hex pairs"), "{err}");
        assert!(serde_json::from_str::<MacAddr>("[238, 1, 2, 171, 205, 239]").is_err());
        let octets: [u8; 6] = mac.into();
        assert_eq!(MacAddr::from(octets), mac);
    }
}
