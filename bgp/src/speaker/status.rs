//! What `netctl bgp peers` and `netctl bgp rib` show: plain snapshots of the owner
//! task's state, taken on request.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::bfd;
use crate::codec::{AsPath, NextHop};
use crate::fsm::{DownReason, State};
use crate::rib::{Path, Rib};

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    pub description: String,
    pub rr_client: bool,
    pub state: State,
    /// When the session last reached Established; `None` while it is not.
    pub established_since: Option<SystemTime>,
    pub uptime: Option<Duration>,
    /// Routes in its Adj-RIB-In (after import policy).
    pub received: usize,
    /// Of those, how many are the Loc-RIB's best path.
    pub accepted: usize,
    /// Routes in its Adj-RIB-Out.
    pub sent: usize,
    /// Routes its import policy refused (not in `received`).
    pub refused: usize,
    /// `None` without BFD or before the session first came up.
    pub bfd: Option<bfd::State>,
    /// Why the session last went down, human readable.
    pub last_error: Option<String>,
}

impl PeerStatus {
    pub fn state_name(&self) -> &'static str {
        state_name(self.state)
    }
}

/// The RFC 4271 §8 name of a state, as FRR and BIRD print it.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Idle => "Idle",
        State::Connect => "Connect",
        State::Active => "Active",
        State::OpenSent => "OpenSent",
        State::OpenConfirm => "OpenConfirm",
        State::Established => "Established",
    }
}

/// One destination of the Loc-RIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibEntry {
    pub prefix: IpNet,
    /// Best first.
    pub paths: Vec<RibPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibPath {
    pub next_hop: NextHop,
    /// `None` for a route we originate.
    pub from_peer: Option<IpAddr>,
    pub as_path: AsPath,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub best: bool,
    /// Its next hop is installed for the prefix (best or an ECMP member).
    pub in_fib: bool,
    /// Kept from a restarting peer (graceful restart).
    pub stale: bool,
}

/// A route a peer announced that its import policy refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRoute {
    pub peer: IpAddr,
    pub prefix: IpNet,
    pub reason: crate::policy::Refusal,
}

/// Why a session went down, in words.
pub fn down_reason(r: &DownReason) -> String {
    match r {
        DownReason::ManualStop => "stopped".into(),
        DownReason::Sent(n) => format!("sent NOTIFICATION {}/{}", n.code, n.subcode),
        DownReason::Received(n) => format!("received NOTIFICATION {}/{}", n.code, n.subcode),
        DownReason::ConnectionLost => "connection lost".into(),
    }
}

fn entry(prefix: &IpNet, paths: &[Path], fib: &[NextHop]) -> RibEntry {
    RibEntry {
        prefix: *prefix,
        paths: paths
            .iter()
            .enumerate()
            .map(|(i, p)| RibPath {
                next_hop: p.attrs.next_hop,
                from_peer: (!p.is_local()).then_some(p.peer),
                as_path: p.attrs.as_path.clone(),
                local_pref: p.attrs.local_pref,
                med: p.attrs.med,
                originator_id: p.attrs.originator_id,
                cluster_list: p.attrs.cluster_list.clone(),
                best: i == 0,
                in_fib: !p.is_local() && fib.contains(&p.attrs.next_hop),
                stale: p.stale,
            })
            .collect(),
    }
}

/// The Loc-RIB, or one prefix of it, sorted by prefix.
pub fn rib_entries(rib: &Rib, only: Option<IpNet>) -> Vec<RibEntry> {
    let mut out: Vec<RibEntry> = match only {
        Some(p) => {
            let p = p.trunc();
            let paths = rib.paths(&p);
            if paths.is_empty() {
                Vec::new()
            } else {
                vec![entry(&p, &paths, &rib.fib_next_hops(&p))]
            }
        }
        None => rib
            .destinations()
            .map(|(p, paths, fib)| entry(&p, &paths, &fib))
            .collect(),
    };
    out.sort_by_key(|e| e.prefix);
    out
}
