//! A peer's IKE and Child SAs as `netctl ipsec peers` shows them, for node peers
//! (the engine) and external peers (the site gateway) alike: the speaker's view of
//! the SAs, the datapath's counters of each, and the per-peer totals ([`Tally`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use strait_api::ipsec::{ChildSaView, IpsecPeer, PeerTotals, SaCounters};
use strait_esp::{Direction, SaReport};
use strait_ike::speaker::{ChildStatus, IkeState, SaStatus, selectors};

/// The IKE SA of a peer worth showing among `sas`: an established one first, then
/// the newest.
pub fn shown<'a>(sas: impl IntoIterator<Item = &'a SaStatus>) -> Option<&'a SaStatus> {
    sas.into_iter()
        .max_by_key(|s| (s.state == IkeState::Established, s.established))
}

/// Peer `name` with IKE SA `ike` (if any) and its Child SAs as `child` shows each;
/// no error and zero totals, for the caller to fill in.
pub fn peer(
    name: String,
    site: String,
    address: Option<SocketAddr>,
    ike: Option<&SaStatus>,
    child: impl Fn(&ChildStatus) -> ChildSaView,
    now: Instant,
) -> IpsecPeer {
    let since = |t: Instant| now.saturating_duration_since(t).as_secs();
    IpsecPeer {
        name,
        site,
        address,
        ike_state: ike.map_or("none".into(), |s| state_word(s.state).into()),
        initiator: ike.is_some_and(|s| s.initiator),
        ike_algorithms: ike
            .and_then(|s| s.suite)
            .map(|s| format!("{:?}/{:?}/{:?}", s.cipher, s.prf, s.group)),
        established_secs: ike.and_then(|s| s.established).map(since),
        ike_rekeys: ike.map_or(0, |s| s.ike_rekeys),
        child_rekeys: ike.map_or(0, |s| s.child_rekeys),
        last_dpd_secs: ike.and_then(|s| s.last_dpd).map(since),
        nat: ike.is_some_and(|s| s.nat.any()),
        child_sas: ike
            .map(|s| s.children.iter().map(&child).collect())
            .unwrap_or_default(),
        last_error: None,
        totals: Default::default(),
    }
}

/// One Child SA: SPIs as `ip xfrm` prints them, its negotiated selectors, whether new
/// packets leave on it, and its counters where the datapath gave them.
pub fn child(
    c: &ChildStatus,
    active: bool,
    inbound: Option<SaCounters>,
    outbound: Option<SaCounters>,
) -> ChildSaView {
    ChildSaView {
        spi_in: format!("0x{:08x}", c.spi_in),
        spi_out: format!("0x{:08x}", c.spi_out),
        cipher: format!("{:?}", c.cipher),
        esn: c.esn,
        active,
        inbound,
        outbound,
        ts_local: selectors(&c.ts_local),
        ts_remote: selectors(&c.ts_remote),
    }
}

/// One SA direction of datapath peer `peer` as the datapath reported it in `esp`:
/// its counters, and whether new packets leave on it.
pub fn counters(
    esp: &[SaReport],
    peer: &str,
    direction: Direction,
    spi: u32,
) -> Option<(SaCounters, bool)> {
    esp.iter()
        .find(|s| s.peer == peer && s.direction == direction && s.status.spi == spi)
        .map(|s| {
            (
                SaCounters {
                    packets: s.status.packets,
                    bytes: s.status.bytes,
                    seq: s.status.seq,
                    replay_failures: s.status.replay_failures,
                    icv_failures: s.status.icv_failures,
                },
                s.active,
            )
        })
}

/// One Child SA of datapath peer `peer` with the datapath's counters of both
/// directions; active when its outbound SA is the one new packets leave on.
pub fn child_counted(c: &ChildStatus, peer: &str, esp: &[SaReport]) -> ChildSaView {
    let inbound = counters(esp, peer, Direction::Inbound, c.spi_in);
    let outbound = counters(esp, peer, Direction::Outbound, c.spi_out);
    child(
        c,
        outbound.as_ref().is_some_and(|(_, active)| *active),
        inbound.map(|(c, _)| c),
        outbound.map(|(c, _)| c),
    )
}

/// Each SA's counters when last read, so what they grew by can be added to their
/// peer's totals, which outlive the SAs (rekeys replace them).
#[derive(Default)]
pub struct Tally {
    seen: HashMap<(String, Direction, u32), strait_esp::SaStatus>,
}

impl Tally {
    /// What every datapath peer's SAs in `esp` grew by since the last read, by peer
    /// name (rekeys and authentication failures are the caller's to count); SAs that
    /// are gone are forgotten.
    pub fn count(&mut self, esp: &[SaReport]) -> BTreeMap<String, PeerTotals> {
        let mut grown: BTreeMap<String, PeerTotals> = BTreeMap::new();
        let mut seen = HashMap::with_capacity(esp.len());
        for sa in esp {
            let key = (sa.peer.clone(), sa.direction, sa.status.spi);
            let before = self.seen.get(&key);
            let grew = |now: u64, then: fn(&strait_esp::SaStatus) -> u64| {
                now.saturating_sub(before.map_or(0, then))
            };
            let t = grown.entry(sa.peer.clone()).or_default();
            let packets = grew(sa.status.packets, |s| s.packets);
            let bytes = grew(sa.status.bytes, |s| s.bytes);
            match sa.direction {
                Direction::Inbound => {
                    t.packets_in += packets;
                    t.bytes_in += bytes;
                    t.replay_failures += grew(sa.status.replay_failures, |s| s.replay_failures);
                    t.icv_failures += grew(sa.status.icv_failures, |s| s.icv_failures);
                }
                Direction::Outbound => {
                    t.packets_out += packets;
                    t.bytes_out += bytes;
                }
            }
            seen.insert(key, sa.status);
        }
        self.seen = seen;
        grown
    }
}

/// Adds `grew` (from [`Tally::count`]) to `totals`.
pub fn add(totals: &mut PeerTotals, grew: &PeerTotals) {
    totals.packets_in += grew.packets_in;
    totals.packets_out += grew.packets_out;
    totals.bytes_in += grew.bytes_in;
    totals.bytes_out += grew.bytes_out;
    totals.replay_failures += grew.replay_failures;
    totals.icv_failures += grew.icv_failures;
    totals.child_rekeys += grew.child_rekeys;
    totals.auth_failures += grew.auth_failures;
}

fn state_word(state: IkeState) -> &'static str {
    match state {
        IkeState::InitSent | IkeState::AuthSent | IkeState::InitDone => "connecting",
        IkeState::Established => "established",
        IkeState::Rekeyed => "rekeyed",
        IkeState::Deleting => "deleting",
        IkeState::Dead => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(peer: &str, direction: Direction, spi: u32, packets: u64) -> SaReport {
        SaReport {
            peer: peer.into(),
            direction,
            active: true,
            near_limit: false,
            status: strait_esp::SaStatus {
                spi,
                cipher: strait_esp::Cipher::Aes256Gcm16,
                esn: false,
                packets,
                bytes: packets * 100,
                replay_failures: 0,
                icv_failures: 0,
                malformed: 0,
                seq: packets,
            },
        }
    }

    #[test]
    fn totals_add_what_each_sa_grew_by_and_outlive_the_sa() {
        let mut tally = Tally::default();
        let mut totals = PeerTotals::default();
        let mut read = |esp: &[SaReport], tally: &mut Tally| {
            for (peer, grew) in tally.count(esp) {
                assert_eq!(peer, "ext:onprem");
                add(&mut totals, &grew);
            }
            totals.clone()
        };
        let first = [
            report("ext:onprem", Direction::Inbound, 1, 3),
            report("ext:onprem", Direction::Outbound, 2, 4),
        ];
        let t = read(&first, &mut tally);
        assert_eq!((t.packets_in, t.packets_out, t.bytes_in), (3, 4, 300));
        // Read again: only the growth counts.
        let grown = [
            report("ext:onprem", Direction::Inbound, 1, 5),
            report("ext:onprem", Direction::Outbound, 2, 4),
        ];
        let t = read(&grown, &mut tally);
        assert_eq!((t.packets_in, t.packets_out), (5, 4));
        // A rekey: the old SAs are gone, the new ones count from zero.
        let rekeyed = [
            report("ext:onprem", Direction::Inbound, 11, 1),
            report("ext:onprem", Direction::Outbound, 12, 2),
        ];
        let t = read(&rekeyed, &mut tally);
        assert_eq!((t.packets_in, t.packets_out), (6, 6));
    }

    #[test]
    fn a_child_sa_shows_the_datapaths_counters_of_its_own_spis() {
        let esp = [
            report("ext:onprem", Direction::Inbound, 1, 3),
            report("ext:onprem", Direction::Outbound, 2, 4),
            report("node-b", Direction::Inbound, 1, 9),
        ];
        let (c, active) = counters(&esp, "ext:onprem", Direction::Inbound, 1).unwrap();
        assert_eq!((c.packets, c.bytes, active), (3, 300, true));
        assert!(counters(&esp, "ext:onprem", Direction::Outbound, 1).is_none());
        assert!(counters(&esp, "ext:other", Direction::Inbound, 1).is_none());
    }
}
