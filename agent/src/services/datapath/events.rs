//! Translation events from the `strait_svc_events` ring buffer (`netctl
//! monitor`): decoded into [`Translation`]s and sent on a broadcast channel
//! ([`super::ServicesDatapath::translations`]) by a thread that reads the ring
//! while anyone listens. The programs send events only while `strait_svc_monitor`
//! says so, which the reader sets when it starts and clears when it stops, so
//! translating costs no event while nobody watches.

use std::mem::offset_of;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{Array, MapData, RingBuf};
use tokio::sync::broadcast;

use super::Protocol;
use super::abi::{Event, XLATE_CONNECT, XLATE_NAT, XLATE_NAT_SNAT, XLATE_SENDMSG};
use super::maps::key_addr;

/// Which translation made an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranslationKind {
    /// A socket's `connect()`.
    Connect,
    /// An unconnected UDP socket's `sendmsg()`.
    Sendmsg,
    /// A new flow from outside the node, DNATed.
    Nat,
    /// The same, SNATed to the node too (a backend on another node).
    NatSnat,
}

/// One translation as the programs report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`).
    pub monotonic_ns: u64,
    pub kind: TranslationKind,
    pub proto: Protocol,
    /// A packet's source (packet-level translation); `None` for a socket, whose
    /// own address is usually not bound when it connects.
    pub client: Option<SocketAddr>,
    /// A socket's process (tgid), network namespace cookie and cgroup v2 id; 0 for
    /// a packet.
    pub pid: u32,
    pub netns_cookie: u64,
    pub cgroup_id: u64,
    pub frontend: SocketAddr,
    pub backend: SocketAddr,
}

fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// One ring buffer record; `None` when it is not an event (its size or kind).
pub(super) fn decode(b: &[u8]) -> Option<Translation> {
    if b.len() < size_of::<Event>() {
        return None;
    }
    let u64_at = |at| u64::from_ne_bytes(bytes(b, at));
    let addr = |at| -> IpAddr { key_addr(bytes(b, at)) };
    let port = |at| u16::from_be_bytes(bytes(b, at));
    let kind = match b[offset_of!(Event, kind)] {
        XLATE_CONNECT => TranslationKind::Connect,
        XLATE_SENDMSG => TranslationKind::Sendmsg,
        XLATE_NAT => TranslationKind::Nat,
        XLATE_NAT_SNAT => TranslationKind::NatSnat,
        _ => return None,
    };
    let client = matches!(kind, TranslationKind::Nat | TranslationKind::NatSnat).then(|| {
        SocketAddr::new(
            addr(offset_of!(Event, client)),
            port(offset_of!(Event, client_port)),
        )
    });
    Some(Translation {
        monotonic_ns: u64_at(offset_of!(Event, time_ns)),
        kind,
        proto: Protocol::from_number(b[offset_of!(Event, proto)])?,
        client,
        pid: u32::from_ne_bytes(bytes(b, offset_of!(Event, pid))),
        netns_cookie: u64_at(offset_of!(Event, netns_cookie)),
        cgroup_id: u64_at(offset_of!(Event, cgroup_id)),
        frontend: SocketAddr::new(
            addr(offset_of!(Event, frontend)),
            port(offset_of!(Event, frontend_port)),
        ),
        backend: SocketAddr::new(
            addr(offset_of!(Event, backend)),
            port(offset_of!(Event, backend_port)),
        ),
    })
}

/// The ring buffer and the switch that turns the programs' events on.
pub(super) struct Source {
    pub(super) ring: RingBuf<MapData>,
    pub(super) monitor: Array<MapData, u32>,
}

impl Source {
    /// Every event the ring buffer holds now.
    pub(super) fn drain(&mut self) -> Vec<Translation> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(e) = decode(&item) {
                out.push(e);
            }
        }
        out
    }

    pub(super) fn set(&mut self, on: bool) -> Result<(), aya::maps::MapError> {
        self.monitor.set(0, u32::from(on), 0)
    }
}

/// The source while no reader thread has it.
pub(super) type Slot = Arc<Mutex<Option<Source>>>;

/// How long the reader sleeps when the ring buffer is empty: the latency of
/// `netctl monitor`, at 50 wake-ups a second.
const POLL: Duration = Duration::from_millis(20);

/// Reads the ring buffer on the calling thread until every receiver is gone, then
/// turns the events off and puts the source back in `slot`. The last check of the
/// receivers is made holding `slot`, as a new subscriber subscribes holding it, so
/// none is left without a reader.
pub(super) fn read(mut source: Source, tx: broadcast::Sender<Translation>, slot: Slot) {
    if let Err(e) = source.set(true) {
        tracing::warn!(error = %e, "services events: cannot turn them on");
    }
    loop {
        let batch = source.drain();
        if batch.is_empty() {
            let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
            if tx.receiver_count() == 0 {
                let _ = source.set(false);
                *held = Some(source);
                return;
            }
            drop(held);
            std::thread::sleep(POLL);
            continue;
        }
        for e in batch {
            // No receiver (they all went between two events): the next empty
            // batch ends the reader.
            let _ = tx.send(e);
        }
    }
}
