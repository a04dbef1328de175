//! The XFRM netlink messages strait sends and reads, laid out by hand after the kernel
//! UAPI (`<linux/xfrm.h>`): `xfrm_usersa_info`, `xfrm_usersa_id`,
//! `xfrm_userpolicy_info`, `xfrm_userpolicy_id`, `xfrm_user_tmpl`, `xfrm_algo_aead`,
//! `xfrm_encap_tmpl`, `xfrm_replay_state_esn`, `xfrm_mark` and the `XFRMA_*`
//! attributes that carry them. Pure functions on byte buffers, no I/O: the tests
//! compare them with what `ip xfrm` sends for the same command.
//!
//! Netlink fields are in host byte order, except those the UAPI marks `__be`
//! (addresses, SPIs, ports), which are in network order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::key::{ICV_LEN, SaKey};

// Message types (XFRM_MSG_*).
pub const XFRM_MSG_NEWSA: u16 = 0x10;
pub const XFRM_MSG_DELSA: u16 = 0x11;
pub const XFRM_MSG_GETSA: u16 = 0x12;
pub const XFRM_MSG_DELPOLICY: u16 = 0x14;
pub const XFRM_MSG_GETPOLICY: u16 = 0x15;
pub const XFRM_MSG_UPDPOLICY: u16 = 0x19;

// Attributes (XFRMA_*).
pub const XFRMA_ENCAP: u16 = 4;
pub const XFRMA_TMPL: u16 = 5;
pub const XFRMA_REPLAY_VAL: u16 = 10;
pub const XFRMA_SRCADDR: u16 = 13;
pub const XFRMA_ALG_AEAD: u16 = 18;
pub const XFRMA_MARK: u16 = 21;
pub const XFRMA_REPLAY_ESN_VAL: u16 = 23;

pub const IPPROTO_ESP: u8 = 50;
pub const XFRM_MODE_TUNNEL: u8 = 1;
pub const XFRM_STATE_AF_UNSPEC: u8 = 32;
pub const XFRM_STATE_ESN: u8 = 128;
pub const UDP_ENCAP_ESPINUDP: u16 = 2;
pub const XFRM_POLICY_ALLOW: u8 = 0;
/// No limit (`XFRM_INF`).
pub const XFRM_INF: u64 = u64::MAX;
/// Largest replay window the kernel takes (`XFRMA_REPLAY_ESN_MAX`, in bits).
pub const REPLAY_WINDOW_MAX: u32 = 4096;
/// The kernel's name of AES-GCM with a 16-octet ICV in ESP (RFC 4106).
pub const AEAD_GCM: &str = "rfc4106(gcm(aes))";

/// Struct sizes on the kernel's side (x86_64 and aarch64 alike).
pub const SELECTOR_LEN: usize = 56;
pub const USERSA_INFO_LEN: usize = 224;
pub const USERSA_ID_LEN: usize = 24;
pub const USERPOLICY_INFO_LEN: usize = 168;
pub const USERPOLICY_ID_LEN: usize = 64;
pub const USER_TMPL_LEN: usize = 64;
pub const ENCAP_TMPL_LEN: usize = 24;
pub const ALGO_AEAD_LEN: usize = 72;
pub const REPLAY_ESN_LEN: usize = 24;

/// Which way a policy looks (`XFRM_POLICY_IN/OUT/FWD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyDir {
    In = 0,
    Out = 1,
    Fwd = 2,
}

impl PolicyDir {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::In),
            1 => Some(Self::Out),
            2 => Some(Self::Fwd),
            _ => None,
        }
    }
}

pub fn family(a: IpAddr) -> u16 {
    match a {
        IpAddr::V4(_) => libc::AF_INET as u16,
        IpAddr::V6(_) => libc::AF_INET6 as u16,
    }
}

fn u16_(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_ne_bytes());
}
fn u32_(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_ne_bytes());
}
fn u64_(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_ne_bytes());
}
fn zeros(b: &mut Vec<u8>, n: usize) {
    b.resize(b.len() + n, 0);
}

/// `xfrm_address_t`: 16 octets, an IPv4 address in the first four.
fn addr(b: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            b.extend_from_slice(&v4.octets());
            zeros(b, 12);
        }
        IpAddr::V6(v6) => b.extend_from_slice(&v6.octets()),
    }
}

/// Append one netlink attribute, padded to four octets.
pub fn attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    u16_(b, (4 + payload.len()) as u16);
    u16_(b, kind);
    b.extend_from_slice(payload);
    zeros(b, (4 - payload.len() % 4) % 4);
}

/// `xfrm_selector`: `nets` = (source, destination) of one family, or all zero but
/// the family (any packet).
fn selector(b: &mut Vec<u8>, family: u16, nets: Option<(IpNet, IpNet)>) {
    let start = b.len();
    let (src, dst) = match nets {
        Some((s, d)) => (Some(s), Some(d)),
        None => (None, None),
    };
    match dst {
        Some(d) => addr(b, d.network()),
        None => zeros(b, 16),
    }
    match src {
        Some(s) => addr(b, s.network()),
        None => zeros(b, 16),
    }
    zeros(b, 8); // dport, dport_mask, sport, sport_mask
    u16_(b, family);
    b.push(dst.map_or(0, |d| d.prefix_len()));
    b.push(src.map_or(0, |s| s.prefix_len()));
    zeros(b, 4); // proto, padding
    zeros(b, 8); // ifindex, user
    debug_assert_eq!(b.len() - start, SELECTOR_LEN);
}

/// `xfrm_lifetime_cfg` without limits, then a zero `xfrm_lifetime_cur`: strait's
/// IKE engine replaces SAs itself, by time, bytes and sequence number.
fn lifetimes(b: &mut Vec<u8>) {
    for _ in 0..4 {
        u64_(b, XFRM_INF); // soft/hard byte and packet limits
    }
    zeros(b, 32); // soft/hard add and use expiry: none
    zeros(b, 32); // xfrm_lifetime_cur
}

/// One ESP state in tunnel mode, as strait installs it.
#[derive(Debug, Clone)]
pub struct StateSpec<'a> {
    /// Outer source and destination (the tunnel's endpoints).
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
    pub reqid: u32,
    pub key: &'a SaKey,
    pub esn: bool,
    /// Replay window in packets (up to [`REPLAY_WINDOW_MAX`]); outbound states need
    /// one too when ESN is on.
    pub replay_window: u32,
    /// UDP encapsulation (RFC 3948): (source port, destination port).
    pub encap: Option<(u16, u16)>,
    /// `XFRMA_MARK` (value, mask): only packets with this mark use the state.
    pub mark: Option<(u32, u32)>,
}

/// Body of `XFRM_MSG_NEWSA`: `xfrm_usersa_info`, then `XFRMA_ALG_AEAD`,
/// `XFRMA_ENCAP`, `XFRMA_REPLAY_ESN_VAL` and `XFRMA_MARK`.
///
/// The selector is left empty with `XFRM_STATE_AF_UNSPEC`, so one SA carries IPv4 and
/// IPv6 inner packets alike; the policies decide what goes into it. The legacy 8-bit
/// `replay_window` stays 0 (the kernel refuses it beside `XFRMA_REPLAY_ESN_VAL`),
/// which carries the window with and without ESN.
pub fn new_sa(s: &StateSpec) -> Vec<u8> {
    let mut b = Vec::with_capacity(USERSA_INFO_LEN + 200);
    selector(&mut b, 0, None);
    // xfrm_id
    addr(&mut b, s.dst);
    b.extend_from_slice(&s.spi.to_be_bytes());
    b.push(IPPROTO_ESP);
    zeros(&mut b, 3);
    addr(&mut b, s.src);
    lifetimes(&mut b);
    zeros(&mut b, 12); // xfrm_stats
    u32_(&mut b, 0); // seq (of an ACQUIRE this answers: none)
    u32_(&mut b, s.reqid);
    u16_(&mut b, family(s.dst));
    b.push(XFRM_MODE_TUNNEL);
    b.push(0); // legacy replay_window
    b.push(XFRM_STATE_AF_UNSPEC | if s.esn { XFRM_STATE_ESN } else { 0 });
    zeros(&mut b, 7);
    debug_assert_eq!(b.len(), USERSA_INFO_LEN);

    attr(&mut b, XFRMA_ALG_AEAD, &algo_aead(s.key));
    if let Some((sport, dport)) = s.encap {
        attr(&mut b, XFRMA_ENCAP, &encap_tmpl(sport, dport));
    }
    attr(&mut b, XFRMA_REPLAY_ESN_VAL, &replay_esn(s.replay_window));
    if let Some((v, m)) = s.mark {
        attr(&mut b, XFRMA_MARK, &mark(v, m));
    }
    b
}

/// `xfrm_algo_aead`: `rfc4106(gcm(aes))`, key || salt, 128-bit ICV.
pub fn algo_aead(key: &SaKey) -> Vec<u8> {
    let keymat = key.expose_keymat();
    let mut b = Vec::with_capacity(ALGO_AEAD_LEN + keymat.len());
    b.extend_from_slice(AEAD_GCM.as_bytes());
    zeros(&mut b, 64 - AEAD_GCM.len());
    u32_(&mut b, (keymat.len() * 8) as u32);
    u32_(&mut b, (ICV_LEN * 8) as u32);
    b.extend_from_slice(keymat);
    b
}

/// `xfrm_encap_tmpl`: ESP in UDP between the two ports; no original address (the
/// kernel needs it only for transport mode behind a NAT).
pub fn encap_tmpl(sport: u16, dport: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(ENCAP_TMPL_LEN);
    u16_(&mut b, UDP_ENCAP_ESPINUDP);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    zeros(&mut b, 2);
    zeros(&mut b, 16);
    b
}

/// `xfrm_replay_state_esn` without its bitmap (counters start at zero; the kernel
/// allocates a zeroed bitmap of `bmp_len` words, as it does for `ip xfrm`).
pub fn replay_esn(window: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(REPLAY_ESN_LEN);
    u32_(&mut b, window.div_ceil(32)); // bmp_len, in 32-bit words
    zeros(&mut b, 16); // oseq, seq, oseq_hi, seq_hi
    u32_(&mut b, window);
    b
}

pub fn mark(v: u32, m: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(8);
    u32_(&mut b, v);
    u32_(&mut b, m);
    b
}

/// Body of `XFRM_MSG_DELSA` and `XFRM_MSG_GETSA`: `xfrm_usersa_id` (destination,
/// SPI, ESP) and `XFRMA_SRCADDR`, plus the mark the state was made with.
pub fn sa_id(dst: IpAddr, spi: u32, src: IpAddr, mark_: Option<(u32, u32)>) -> Vec<u8> {
    let mut b = Vec::with_capacity(USERSA_ID_LEN + 32);
    addr(&mut b, dst);
    b.extend_from_slice(&spi.to_be_bytes());
    u16_(&mut b, family(dst));
    b.push(IPPROTO_ESP);
    b.push(0);
    let mut a = Vec::with_capacity(16);
    addr(&mut a, src);
    attr(&mut b, XFRMA_SRCADDR, &a);
    if let Some((v, m)) = mark_ {
        attr(&mut b, XFRMA_MARK, &mark(v, m));
    }
    b
}

/// The template of a tunnel-mode ESP policy: which state (by endpoints and reqid, any
/// SPI) the kernel must apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tmpl {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub reqid: u32,
}

/// `xfrm_user_tmpl`: tunnel mode, ESP, SPI 0 (any state with this reqid), required,
/// any algorithm.
pub fn user_tmpl(t: &Tmpl) -> Vec<u8> {
    let mut b = Vec::with_capacity(USER_TMPL_LEN);
    addr(&mut b, t.dst);
    u32_(&mut b, 0); // spi
    b.push(IPPROTO_ESP);
    zeros(&mut b, 3);
    u16_(&mut b, family(t.dst));
    zeros(&mut b, 2);
    addr(&mut b, t.src);
    u32_(&mut b, t.reqid);
    b.push(XFRM_MODE_TUNNEL);
    b.push(0); // share: any
    b.push(0); // optional: no, the transform is required
    b.push(0);
    for _ in 0..3 {
        u32_(&mut b, u32::MAX); // aalgos, ealgos, calgos: any
    }
    b
}

/// One policy: packets from `src` to `dst` (one family) going `dir` must use `tmpl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySpec {
    pub src: IpNet,
    pub dst: IpNet,
    pub dir: PolicyDir,
    /// Lower wins.
    pub priority: u32,
    pub tmpl: Tmpl,
}

/// `xfrm_userpolicy_info` with all-zero counters and no lifetime limits.
fn userpolicy_info(
    b: &mut Vec<u8>,
    family_: u16,
    nets: Option<(IpNet, IpNet)>,
    dir: u8,
    priority: u32,
) {
    selector(b, family_, nets);
    lifetimes(b);
    u32_(b, priority);
    u32_(b, 0); // index: the kernel picks it
    b.push(dir);
    b.push(XFRM_POLICY_ALLOW);
    b.push(0); // flags
    b.push(0); // share
    zeros(b, 4);
}

/// Body of `XFRM_MSG_UPDPOLICY` (add or replace): `xfrm_userpolicy_info` and one
/// `XFRMA_TMPL`.
pub fn upd_policy(p: &PolicySpec) -> Vec<u8> {
    let mut b = Vec::with_capacity(USERPOLICY_INFO_LEN + 4 + USER_TMPL_LEN);
    userpolicy_info(
        &mut b,
        family(p.dst.addr()),
        Some((p.src, p.dst)),
        p.dir as u8,
        p.priority,
    );
    debug_assert_eq!(b.len(), USERPOLICY_INFO_LEN);
    attr(&mut b, XFRMA_TMPL, &user_tmpl(&p.tmpl));
    b
}

/// The per-socket policy that lets a socket's own traffic bypass every policy
/// (`IP_XFRM_POLICY`/`IPV6_XFRM_POLICY`): allow, no template.
pub fn socket_bypass(family_: u16, dir: PolicyDir) -> Vec<u8> {
    let mut b = Vec::with_capacity(USERPOLICY_INFO_LEN);
    userpolicy_info(&mut b, family_, None, dir as u8, 0);
    b
}

/// Body of `XFRM_MSG_DELPOLICY` by index (the kernel's id of a dumped policy).
pub fn policy_id(family_: u16, index: u32, dir: PolicyDir) -> Vec<u8> {
    let mut b = Vec::with_capacity(USERPOLICY_ID_LEN);
    selector(&mut b, family_, None);
    u32_(&mut b, index);
    b.push(dir as u8);
    zeros(&mut b, 3);
    b
}

// ---- Reading what the kernel sends back ----

fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 octets"))
}
fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 octets"))
}
fn rd_be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 octets"))
}

fn rd_addr(b: &[u8], at: usize, family_: u16) -> Option<IpAddr> {
    let raw: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    match i32::from(family_) {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
        _ => None,
    }
}

/// The attributes after a fixed header: (type, payload). Stops at the first
/// malformed one.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(rd_u16(b, 0));
        // The high bits of the type are the nested/byte-order flags.
        let kind = rd_u16(b, 2) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, payload))
    })
}

/// What strait reads of a state (`XFRM_MSG_NEWSA` in answer to GETSA or a dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
    pub proto: u8,
    pub reqid: u32,
    pub esn: bool,
    pub bytes: u64,
    pub packets: u64,
    pub replay_failures: u64,
    pub icv_failures: u64,
    /// Last sequence number sent (64 bits with ESN).
    pub oseq: u64,
    /// Highest sequence number received and authenticated.
    pub seq: u64,
    pub replay_window: u32,
    /// `XFRMA_MARK` (value, mask), needed to address a marked state.
    pub mark: Option<(u32, u32)>,
}

pub fn parse_state(b: &[u8]) -> Option<StateInfo> {
    if b.len() < USERSA_INFO_LEN {
        return None;
    }
    let fam = rd_u16(b, 212);
    let mut s = StateInfo {
        dst: rd_addr(b, 56, fam)?,
        spi: rd_be32(b, 72),
        proto: b[76],
        src: rd_addr(b, 80, fam)?,
        bytes: rd_u64(b, 160),
        packets: rd_u64(b, 168),
        replay_window: u32::from(b[215]),
        replay_failures: u64::from(rd_u32(b, 196)),
        icv_failures: u64::from(rd_u32(b, 200)),
        reqid: rd_u32(b, 208),
        esn: b[216] & XFRM_STATE_ESN != 0,
        oseq: 0,
        seq: 0,
        mark: None,
    };
    for (kind, p) in attrs(&b[USERSA_INFO_LEN..]) {
        match kind {
            XFRMA_REPLAY_ESN_VAL if p.len() >= REPLAY_ESN_LEN => {
                s.oseq = u64::from(rd_u32(p, 12)) << 32 | u64::from(rd_u32(p, 4));
                s.seq = u64::from(rd_u32(p, 16)) << 32 | u64::from(rd_u32(p, 8));
                s.replay_window = rd_u32(p, 20);
            }
            XFRMA_MARK if p.len() >= 8 => s.mark = Some((rd_u32(p, 0), rd_u32(p, 4))),
            XFRMA_REPLAY_VAL if p.len() >= 12 => {
                s.oseq = u64::from(rd_u32(p, 0));
                s.seq = u64::from(rd_u32(p, 4));
            }
            _ => {}
        }
    }
    Some(s)
}

/// What strait reads of a policy (`XFRM_MSG_NEWPOLICY` in a dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub family: u16,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub dir: u8,
    pub index: u32,
    pub priority: u32,
    /// The reqids of its templates.
    pub reqids: Vec<u32>,
}

pub fn parse_policy(b: &[u8]) -> Option<PolicyInfo> {
    if b.len() < USERPOLICY_INFO_LEN {
        return None;
    }
    let fam = rd_u16(b, 40);
    let net = |at: usize, len: u8| rd_addr(b, at, fam).and_then(|a| IpNet::new(a, len).ok());
    let reqids = attrs(&b[USERPOLICY_INFO_LEN..])
        .filter(|(k, _)| *k == XFRMA_TMPL)
        .flat_map(|(_, p)| p.chunks_exact(USER_TMPL_LEN).map(|t| rd_u32(t, 44)))
        .collect();
    Some(PolicyInfo {
        family: fam,
        dst: net(0, b[42]),
        src: net(16, b[43]),
        priority: rd_u32(b, 152),
        index: rd_u32(b, 156),
        dir: b[160],
        reqids,
    })
}

#[cfg(test)]
mod tests;
