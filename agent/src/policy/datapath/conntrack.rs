//! strait's own conntrack (`strait_ct`, an LRU hash the programs keep): listing it
//! for `netctl`, and collecting expired entries. The programs treat an expired
//! entry as absent (its flow's next packet is a new flow); [`gc`], which the agent
//! runs every [`GC_INTERVAL`], frees its slot.
//!
//! Timeouts (`strait/abi.h`): TCP 60 s until both sides have sent an ACK, 6 h
//! established, 10 s after a FIN or RST; ICMP 30 s; UDP and everything else 60 s.
//! Each packet of the flow, either way, renews it.

use std::net::IpAddr;
use std::time::Duration;

use strait_policy::ir::Direction;

use super::abi::{self, CtEntry, CtKey, NONE};
use super::maps::{Maps, key_addr, map_err};
use super::sys::monotonic_ns;
use crate::policy::dataplane::DataplaneError;

/// How often the agent collects expired entries.
pub const GC_INTERVAL: Duration = Duration::from_secs(30);

/// One conntrack entry, as `netctl` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The check that made it: the endpoint's ingress (it received the flow's first
    /// packet) or egress (it sent it).
    pub direction: Direction,
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// ICMP echo: the identifier in `src_port` (request) or `dst_port` (reply).
    pub src_port: u16,
    pub dst_port: u16,
    /// Time left; zero when expired and not yet collected.
    pub expires_in: Duration,
    pub generation: u32,
    /// The rule that allowed it; `None`: the default.
    pub rule: Option<u32>,
    pub tcp_flags_fwd: u8,
    pub tcp_flags_rev: u8,
    pub audit: bool,
    pub packets: u64,
    pub bytes: u64,
}

fn flow(k: &CtKey, e: &CtEntry, now: u64) -> Flow {
    Flow {
        direction: if k.dir == abi::DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        protocol: k.proto,
        src: key_addr(k.src),
        dst: key_addr(k.dst),
        src_port: u16::from_be_bytes(k.sport),
        dst_port: u16::from_be_bytes(k.dport),
        expires_in: Duration::from_nanos(e.expires.saturating_sub(now)),
        generation: e.generation,
        rule: (e.rule != NONE).then_some(e.rule),
        tcp_flags_fwd: e.tcp_flags_fwd,
        tcp_flags_rev: e.tcp_flags_rev,
        audit: e.audit != 0,
        packets: e.packets,
        bytes: e.bytes,
    }
}

/// Every entry.
pub(super) fn list(maps: &Maps) -> Result<Vec<Flow>, DataplaneError> {
    let now = monotonic_ns();
    let mut out = Vec::new();
    for entry in maps.conntrack.iter() {
        match entry {
            Ok((k, e)) => out.push(flow(&k, &e, now)),
            // Deleted (by a program or the LRU) between listing its key and reading it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err(abi::CONNTRACK)(e)),
        }
    }
    Ok(out)
}

/// Deletes every entry expired at `now` (monotonic ns); returns how many.
pub(super) fn gc_at(maps: &mut Maps, now: u64) -> Result<usize, DataplaneError> {
    let mut expired = Vec::new();
    for entry in maps.conntrack.iter() {
        match entry {
            Ok((k, e)) if e.expires <= now => expired.push(k),
            Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(abi::CONNTRACK)(e)),
        }
    }
    let mut deleted = 0;
    for k in expired {
        // A packet may have renewed it since it was read: read again first.
        if let Ok(e) = maps.conntrack.get(&k, 0)
            && e.expires <= now
            && maps.conntrack.remove(&k).is_ok()
        {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// [`gc_at`] now.
pub(super) fn gc(maps: &mut Maps) -> Result<usize, DataplaneError> {
    gc_at(maps, monotonic_ns())
}
