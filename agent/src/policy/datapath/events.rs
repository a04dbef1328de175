//! Flow events from the `strait_pol_events` ring buffer: decoded into
//! [`RawFlowEvent`]s and sent on a broadcast channel (`PolicyDatapath::subscribe`)
//! by a thread that reads it while anyone listens ([`read`]). A slow
//! subscriber lags and loses events (broadcast); the ring buffer itself counts what
//! it could not hold under `events_lost`.

use std::mem::offset_of;
use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use std::time::Duration;
use strait_policy::ir::Direction;

use tokio::sync::broadcast;

use super::abi::{self, Event, NONE};
use super::maps::key_addr;
use crate::policy::dataplane::RawFlowEvent;

fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// One ring buffer record; `None` when it is not an event's size.
pub(super) fn decode(b: &[u8]) -> Option<RawFlowEvent> {
    if b.len() < size_of::<Event>() {
        return None;
    }
    let u32_at = |at| u32::from_ne_bytes(bytes(b, at));
    let u16_at = |at| u16::from_ne_bytes(bytes(b, at));
    let addr = |at| -> IpAddr { key_addr(bytes(b, at)) };
    let some = |r: u32| (r != NONE).then_some(r);
    Some(RawFlowEvent {
        monotonic_ns: u64::from_ne_bytes(bytes(b, offset_of!(Event, time_ns))),
        ifindex: u32_at(offset_of!(Event, ifindex)),
        direction: if b[offset_of!(Event, dir)] == abi::DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        src: addr(offset_of!(Event, src)),
        dst: addr(offset_of!(Event, dst)),
        src_port: u16_at(offset_of!(Event, sport)),
        dst_port: u16_at(offset_of!(Event, dport)),
        protocol: b[offset_of!(Event, proto)],
        src_identity: u32_at(offset_of!(Event, src_identity)),
        dst_identity: u32_at(offset_of!(Event, dst_identity)),
        allowed: b[offset_of!(Event, allowed)] != 0,
        audit: b[offset_of!(Event, audit)] != 0,
        rule: some(u32_at(offset_of!(Event, rule))),
        log_rule: some(u32_at(offset_of!(Event, log_rule))),
    })
}

/// Every event the ring buffer holds now.
pub(super) fn drain(ring: &mut RingBuf<MapData>) -> Vec<RawFlowEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(e) = decode(&item) {
            out.push(e);
        }
    }
    out
}

/// How long the reader sleeps when the ring buffer is empty: the latency of
/// `netctl monitor`, at 50 wake-ups a second.
const POLL: Duration = Duration::from_millis(20);

/// Reads the ring buffer on the calling thread until every receiver is gone, then
/// gives it back. (A thread that polls rather than a tokio `AsyncFd`: tokio's safe
/// constructors of it are deprecated, and this needs no `unsafe`.)
pub(super) fn read(
    mut ring: RingBuf<MapData>,
    tx: broadcast::Sender<RawFlowEvent>,
) -> RingBuf<MapData> {
    loop {
        let batch = drain(&mut ring);
        if batch.is_empty() {
            if tx.receiver_count() == 0 {
                return ring;
            }
            std::thread::sleep(POLL);
            continue;
        }
        for e in batch {
            if tx.send(e).is_err() {
                return ring;
            }
        }
    }
}
