//! Which ESP datapath this node runs: the kernel's XFRM where the kernel has ESP,
//! strait's own userspace ESP over a TUN device where it has not. Picked once, at the
//! first moment a pair needs encryption; `--ipsec-datapath` overrides the probe.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use strait_esp::kernel::{Xfrm, XfrmConfig};
use strait_esp::{Datapath, Userspace, UserspaceConfig};

use super::steering::ESP_MARK;

/// Name of the userspace datapath's TUN device (a `strait*` link, like every link
/// strait makes). It is persistent: it outlives the agent, with the routes pointing
/// at it, so that a restart never lets a packet out in clear.
pub const TUN_NAME: &str = "strait.esp";

/// `--ipsec-datapath`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DatapathChoice {
    /// The kernel's if it has ESP, else userspace.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

impl FromStr for DatapathChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kernel" => Ok(Self::Kernel),
            "userspace" => Ok(Self::Userspace),
            _ => Err(format!(
                "IPsec datapath {s:?}: give auto, kernel or userspace"
            )),
        }
    }
}

impl fmt::Display for DatapathChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Kernel => "kernel",
            Self::Userspace => "userspace",
        })
    }
}

/// A started datapath and why it was the one.
pub struct Started {
    pub datapath: Arc<dyn Datapath>,
    pub reason: String,
}

/// What the userspace datapath needs of the agent.
#[derive(Debug, Clone)]
pub struct DatapathSettings {
    pub choice: DatapathChoice,
    /// UDP port of IKE and ESP-in-UDP (4500).
    pub port: u16,
    /// The underlay's MTU, which ESP packets must fit.
    pub underlay_mtu: u32,
    /// Queues of the userspace datapath (0: one per CPU).
    pub queues: usize,
    /// Whether ESP leaves over IPv6 (its overhead is 20 octets more).
    pub outer_ipv6: bool,
}

impl DatapathSettings {
    /// The largest packet that enters ESP (the TUN device's MTU): the underlay's less
    /// outer IP and UDP headers, SPI and sequence number, IV, trailer and ICV, the
    /// padding aligned (RFC 4303, RFC 4106, RFC 3948): 1438 on a 1500 IPv4 underlay.
    pub fn tun_mtu(&self) -> u32 {
        strait_esp::mtu::inner_mtu(self.underlay_mtu, self.outer_ipv6)
    }

    /// What encryption takes from a packet's room: 62 octets on a 1500 IPv4 underlay.
    pub fn overhead(&self) -> u32 {
        self.underlay_mtu - self.tun_mtu()
    }
}

/// Starts the datapath `settings` ask for, probing the kernel for `auto`.
pub fn start(settings: &DatapathSettings) -> Result<Started, String> {
    let kernel = match settings.choice {
        DatapathChoice::Userspace => Err("--ipsec-datapath userspace".to_string()),
        DatapathChoice::Auto | DatapathChoice::Kernel => kernel_esp(),
    };
    match (settings.choice, kernel) {
        (DatapathChoice::Kernel, Err(why)) => Err(format!(
            "--ipsec-datapath kernel, but the kernel cannot hold ESP SAs: {why}"
        )),
        (_, Ok(())) => {
            let cfg = XfrmConfig {
                bind: std::net::SocketAddr::from(([0, 0, 0, 0], settings.port)),
                mark: Some(ESP_MARK),
            };
            let datapath =
                Xfrm::start(cfg).map_err(|e| format!("starting the kernel XFRM datapath: {e}"))?;
            Ok(Started {
                datapath: Arc::new(datapath),
                reason: "the kernel has ESP".to_string(),
            })
        }
        (_, Err(why)) => {
            let mut cfg = UserspaceConfig::new(TUN_NAME);
            cfg.bind = std::net::SocketAddr::from(([0, 0, 0, 0], settings.port));
            cfg.mark = Some(ESP_MARK);
            cfg.persist = true;
            cfg.mtu = Some(settings.tun_mtu());
            cfg.queues = settings.queues;
            let datapath = Userspace::start(cfg)
                .map_err(|e| format!("starting the userspace ESP datapath: {e}"))?;
            Ok(Started {
                datapath: Arc::new(datapath),
                reason: why,
            })
        }
    }
}

/// Which datapath [`start`] would pick, and why, without starting it: what
/// `netctl status` says before anything needs encryption.
pub fn predict(settings: &DatapathSettings) -> (&'static str, String) {
    match settings.choice {
        DatapathChoice::Userspace => ("userspace", "--ipsec-datapath userspace".into()),
        choice => match (kernel_esp(), choice) {
            (Ok(()), _) => ("kernel", "the kernel has ESP".into()),
            (Err(why), DatapathChoice::Kernel) => {
                ("none", format!("--ipsec-datapath kernel, but {why}"))
            }
            (Err(why), _) => ("userspace", why),
        },
    }
}

/// Whether this kernel can hold ESP SAs with AES-GCM (a throwaway state added and
/// deleted in this namespace).
fn kernel_esp() -> Result<(), String> {
    strait_esp::kernel::probe()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_as_the_flag_takes_them() {
        for c in [
            DatapathChoice::Auto,
            DatapathChoice::Kernel,
            DatapathChoice::Userspace,
        ] {
            assert_eq!(c.to_string().parse::<DatapathChoice>(), Ok(c));
        }
        assert!(
            "xfrm"
                .parse::<DatapathChoice>()
                .unwrap_err()
                .contains("auto, kernel or userspace")
        );
    }
}
