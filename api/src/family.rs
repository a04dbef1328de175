//! [`Family`]: IPv4 or IPv6, the split every part of strait makes (one address per
//! family for a container, one block size per family, one tunnel address per family).
//! It lives here, below the agent's modules and the test beds, so none of them has to
//! import another for it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An address family. Dual stack means one address per configured family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Self {
        Self::of(&net.addr())
    }

    /// Bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_of_addresses_and_prefixes() {
        assert_eq!(Family::of(&"10.0.0.1".parse().unwrap()), Family::V4);
        assert_eq!(Family::of(&"fd00::1".parse().unwrap()), Family::V6);
        assert_eq!(Family::of_net(&"10.0.0.0/8".parse().unwrap()), Family::V4);
        assert_eq!(
            Family::of_net(&"::ffff:10.0.0.0/104".parse().unwrap()),
            Family::V6
        );
        assert_eq!((Family::V4.bits(), Family::V6.bits()), (32, 128));
        assert_eq!(format!("{} {}", Family::V4, Family::V6), "IPv4 IPv6");
        assert!(Family::V4 < Family::V6, "v4 sorts first (dual-stack order)");
    }
}
