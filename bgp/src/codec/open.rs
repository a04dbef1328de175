//! OPEN (RFC 4271 §4.2) and the capabilities optional parameter (RFC 5492): the
//! capabilities strait acts on are typed, any other is kept as sent.

use std::net::Ipv4Addr;

use super::{AS_TRANS, AfiSafi, DecodeError, EncodeError, Reader};

/// Optional parameter type 2 (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;

const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_EXTENDED_NEXT_HOP: u8 = 5;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field: [`AS_TRANS`] when the real AS is in
    /// the 4-octet AS capability. [`Open::asn`] gives the real one.
    pub my_as: u16,
    /// Seconds; 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    /// In the order received; several capability parameters are read as one list.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for AS `asn`, with `my_as` set to AS_TRANS and the 4-octet AS capability
    /// added when `asn` needs four octets (RFC 6793 §3).
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability if present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn has(&self, wanted: &Capability) -> bool {
        self.capabilities.contains(wanted)
    }

    /// Whether the OPEN offers `wanted` in its Extended Next Hop Encoding capability.
    pub fn extended_next_hop(&self, wanted: ExtendedNextHop) -> bool {
        self.capabilities.iter().any(|c| match c {
            Capability::ExtendedNextHop(list) => list.contains(&wanted),
            _ => false,
        })
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol(AfiSafi),
    /// RFC 2918 §2 (code 2).
    RouteRefresh,
    /// RFC 6793 §3 (code 65).
    FourOctetAs(u32),
    /// RFC 8950 §3 (code 5): the NLRI families the sender accepts with a next hop of
    /// another address family.
    ExtendedNextHop(Vec<ExtendedNextHop>),
    /// RFC 4724 §3 (code 64).
    GracefulRestart(GracefulRestart),
    /// Any other capability, kept so it can be logged or reported as unsupported.
    Unknown { code: u8, value: Vec<u8> },
}

/// One triple of the Extended Next Hop Encoding capability (RFC 8950 §3): NLRI of
/// `afi`/`safi` may carry a next hop of `next_hop_afi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedNextHop {
    pub afi: u16,
    /// Two octets here, unlike everywhere else a SAFI appears.
    pub safi: u16,
    pub next_hop_afi: u16,
}

impl ExtendedNextHop {
    /// IPv4 unicast routes with an IPv6 next hop: IPv4 over an IPv6-only session.
    pub const IPV4_UNICAST_VIA_IPV6: ExtendedNextHop = ExtendedNextHop {
        afi: 1,
        safi: 1,
        next_hop_afi: 2,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: the sender has restarted.
    pub restart_state: bool,
    /// The N bit (RFC 8538): graceful restart also covers NOTIFICATIONs.
    pub notification: bool,
    /// Seconds, at most 4095.
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi_safi: AfiSafi,
    /// The F bit: forwarding state for this family was kept across the restart.
    pub forwarding_preserved: bool,
}

pub(crate) fn decode(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader::new(body);
    let short = DecodeError::MalformedOpen {
        reason: "shorter than its fixed fields",
    };
    let version = r.u8().ok_or(short.clone())?;
    if version != 4 {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let (Some(my_as), Some(hold_time), Some(id), Some(params_len)) =
        (r.u16(), r.u16(), r.array::<4>(), r.u8())
    else {
        return Err(short);
    };
    let bgp_id = Ipv4Addr::from(id);
    if usize::from(params_len) != r.rest().len() {
        return Err(DecodeError::MalformedOpen {
            reason: "optional parameters length does not match the message",
        });
    }
    let mut capabilities = Vec::new();
    while !r.is_empty() {
        let (Some(kind), Some(len)) = (r.u8(), r.u8()) else {
            return Err(DecodeError::MalformedOpen {
                reason: "truncated optional parameter",
            });
        };
        let value = r.take(usize::from(len)).ok_or(DecodeError::MalformedOpen {
            reason: "optional parameter overruns the parameters",
        })?;
        if kind != PARAM_CAPABILITIES {
            return Err(DecodeError::UnsupportedOptionalParameter { kind });
        }
        decode_capabilities(value, &mut capabilities)?;
    }
    let open = Open {
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    };
    // RFC 7607: AS 0 is never a peer's AS, in either field.
    if open.my_as == 0 || open.asn() == 0 {
        return Err(DecodeError::BadPeerAs { asn: open.asn() });
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime { hold_time });
    }
    // RFC 6286 §2.1: any non-zero identifier.
    if bgp_id.is_unspecified() {
        return Err(DecodeError::BadBgpIdentifier { id: bgp_id });
    }
    Ok(open)
}

fn decode_capabilities(buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    let malformed = |reason| DecodeError::MalformedOpen { reason };
    while !r.is_empty() {
        let (Some(code), Some(len)) = (r.u8(), r.u8()) else {
            return Err(malformed("truncated capability"));
        };
        let value = r
            .take(usize::from(len))
            .ok_or(malformed("capability overruns its parameter"))?;
        let mut v = Reader::new(value);
        let cap = match code {
            CAP_MULTIPROTOCOL => {
                let (Some(afi), Some(_reserved), Some(safi), true) =
                    (v.u16(), v.u8(), v.u8(), len == 4)
                else {
                    return Err(malformed("multiprotocol capability is not 4 octets"));
                };
                Capability::Multiprotocol(AfiSafi { afi, safi })
            }
            CAP_ROUTE_REFRESH if len == 0 => Capability::RouteRefresh,
            CAP_ROUTE_REFRESH => return Err(malformed("route refresh capability has a value")),
            CAP_FOUR_OCTET_AS => match (v.u32(), len) {
                (Some(asn), 4) => Capability::FourOctetAs(asn),
                _ => return Err(malformed("4-octet AS capability is not 4 octets")),
            },
            CAP_GRACEFUL_RESTART => {
                let head = v
                    .u16()
                    .ok_or(malformed("graceful restart capability too short"))?;
                if !v.rest().len().is_multiple_of(4) {
                    return Err(malformed("graceful restart families are not 4 octets each"));
                }
                let mut families = Vec::new();
                while let (Some(afi), Some(safi), Some(flags)) = (v.u16(), v.u8(), v.u8()) {
                    families.push(GracefulRestartFamily {
                        afi_safi: AfiSafi { afi, safi },
                        forwarding_preserved: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            CAP_EXTENDED_NEXT_HOP => {
                if value.is_empty() || !value.len().is_multiple_of(6) {
                    return Err(malformed(
                        "extended next hop capability is not 6 octets per entry",
                    ));
                }
                let mut entries = Vec::new();
                while let (Some(afi), Some(safi), Some(next_hop_afi)) = (v.u16(), v.u16(), v.u16())
                {
                    entries.push(ExtendedNextHop {
                        afi,
                        safi,
                        next_hop_afi,
                    });
                }
                Capability::ExtendedNextHop(entries)
            }
            _ => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        };
        out.push(cap);
    }
    Ok(())
}

pub(crate) fn encode(o: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(4);
    out.extend_from_slice(&o.my_as.to_be_bytes());
    out.extend_from_slice(&o.hold_time.to_be_bytes());
    out.extend_from_slice(&o.bgp_id.octets());
    // Capabilities packed in order into as few parameters as fit (255 octets each):
    // never longer than the parameters they were decoded from.
    let mut params = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for cap in &o.capabilities {
        let value = encode_capability(cap)?;
        if current.len() + value.len() > 255 {
            push_param(&mut params, &current);
            current.clear();
        }
        current.extend_from_slice(&value);
    }
    if !current.is_empty() {
        push_param(&mut params, &current);
    }
    let params_len = u8::try_from(params.len()).map_err(|_| EncodeError::Unrepresentable {
        what: "OPEN optional parameters",
    })?;
    out.push(params_len);
    out.extend_from_slice(&params);
    Ok(())
}

fn push_param(params: &mut Vec<u8>, caps: &[u8]) {
    params.push(PARAM_CAPABILITIES);
    // At most 255: encode_capability keeps each capability within a parameter.
    params.push(caps.len() as u8);
    params.extend_from_slice(caps);
}

/// One capability, code and length included.
fn encode_capability(cap: &Capability) -> Result<Vec<u8>, EncodeError> {
    let (code, value) = match cap {
        Capability::Multiprotocol(a) => {
            let mut v = a.afi.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, a.safi]);
            (CAP_MULTIPROTOCOL, v)
        }
        Capability::RouteRefresh => (CAP_ROUTE_REFRESH, vec![]),
        Capability::FourOctetAs(asn) => (CAP_FOUR_OCTET_AS, asn.to_be_bytes().to_vec()),
        Capability::ExtendedNextHop(entries) => {
            if entries.is_empty() || entries.len() > 42 {
                return Err(EncodeError::Unrepresentable {
                    what: "extended next hop capability of no or over 42 entries",
                });
            }
            let mut v = Vec::with_capacity(entries.len() * 6);
            for e in entries {
                v.extend_from_slice(&e.afi.to_be_bytes());
                v.extend_from_slice(&e.safi.to_be_bytes());
                v.extend_from_slice(&e.next_hop_afi.to_be_bytes());
            }
            (CAP_EXTENDED_NEXT_HOP, v)
        }
        Capability::GracefulRestart(g) => {
            if g.restart_time > 0x0fff {
                return Err(EncodeError::Unrepresentable {
                    what: "graceful restart time",
                });
            }
            let head = g.restart_time
                | if g.restart_state { 0x8000 } else { 0 }
                | if g.notification { 0x4000 } else { 0 };
            let mut v = head.to_be_bytes().to_vec();
            for f in &g.families {
                v.extend_from_slice(&f.afi_safi.afi.to_be_bytes());
                v.push(f.afi_safi.safi);
                v.push(if f.forwarding_preserved { 0x80 } else { 0 });
            }
            (CAP_GRACEFUL_RESTART, v)
        }
        Capability::Unknown { code, value } => (*code, value.clone()),
    };
    // A capability must fit in one optional parameter, its 2-octet header included.
    let len = u8::try_from(value.len()).ok().filter(|l| *l <= 253).ok_or(
        EncodeError::Unrepresentable {
            what: "capability over 253 octets",
        },
    )?;
    let mut out = vec![code, len];
    out.extend_from_slice(&value);
    Ok(out)
}
