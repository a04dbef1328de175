//! Putting a negotiated Child SA into an ESP datapath: both directions, inbound first
//! (so the peer's first packet on it is taken), then outbound, in use at once or held
//! back. Shared by the node engine and the site gateway, whose peers differ only in
//! the name the datapath knows them by.

use strait_esp::{Datapath, DatapathError, SaConfig, SaKey};
use strait_ike::speaker::ChildSa;

/// The anti-replay window of every inbound SA.
pub const REPLAY_WINDOW: u32 = 2048;

/// Installs `child` for datapath peer `name`; with `switch`, new packets leave on it
/// at once. `key_log` (tests only) gets both keys as Wireshark's `esp_sa` lines.
pub fn install(
    datapath: &dyn Datapath,
    key_log: Option<&strait_esp::keylog::KeyLog>,
    name: &str,
    child: &ChildSa,
    switch: bool,
) -> Result<(), String> {
    let cipher = match child.cipher {
        strait_ike::crypto::suite::Cipher::AesGcm16_128 => strait_esp::Cipher::Aes128Gcm16,
        strait_ike::crypto::suite::Cipher::AesGcm16_256 => strait_esp::Cipher::Aes256Gcm16,
    };
    let key_in = SaKey::new(cipher, child.key_in.expose()).map_err(|e| e.to_string())?;
    let key_out = SaKey::new(cipher, child.key_out.expose()).map_err(|e| e.to_string())?;
    if let Some(log) = key_log {
        let _ = log.record(child.remote.ip(), child.local.ip(), child.spi_in, &key_in);
        let _ = log.record(child.local.ip(), child.remote.ip(), child.spi_out, &key_out);
    }
    // ESP is always in UDP 4500: the userspace datapath speaks nothing else, and
    // either side may run it.
    let inbound = SaConfig {
        spi: child.spi_in,
        key: key_in,
        esn: child.esn,
        replay_window: REPLAY_WINDOW,
        udp_encap: true,
    };
    let outbound = SaConfig {
        spi: child.spi_out,
        key: key_out,
        esn: child.esn,
        replay_window: REPLAY_WINDOW,
        udp_encap: true,
    };
    datapath
        .install_inbound(name, inbound)
        .and_then(|()| datapath.add_outbound(name, outbound))
        .and_then(|()| match switch {
            true => datapath.activate_outbound(name, child.spi_out),
            false => Ok(()),
        })
        .map_err(|e| e.to_string())
}

/// The result of removing an SA half that may already be gone (its peer removed, or
/// the datapath handed over): only other errors are worth a warning.
pub fn ignore_unknown(result: Result<(), DatapathError>) {
    match result {
        Ok(()) | Err(DatapathError::UnknownSa { .. }) | Err(DatapathError::UnknownPeer(_)) => {}
        Err(e) => tracing::warn!(error = %e, "removing an SA"),
    }
}

/// How long a rekey's responder holds the new outbound SA back at most.
pub const SWITCH_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// New outbound SAs of rekeys we answered, installed but held back: our answer may
/// not have reached the initiator yet, which could not decrypt them. Each is put in
/// use once its inbound twin carried traffic (the initiator has installed it) or its
/// grace ran out. (When the SA in use is deleted first, the datapath hands over to
/// the newest installed one.)
#[derive(Debug, Default)]
pub struct HeldBack {
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    spi_in: u32,
    spi_out: u32,
    deadline: std::time::Instant,
}

impl HeldBack {
    pub fn hold(&mut self, spi_in: u32, spi_out: u32, now: std::time::Instant) {
        self.held.push(Held {
            spi_in,
            spi_out,
            deadline: now + SWITCH_GRACE,
        });
    }

    /// Forgets outbound SA `spi_out` (it is being deleted).
    pub fn forget(&mut self, spi_out: u32) {
        self.held.retain(|h| h.spi_out != spi_out);
    }

    /// Puts in use, for datapath peer `name`, the held SAs whose inbound twin carried
    /// traffic (per `esp`, the datapath's SA report) or whose grace ran out.
    pub fn switch_due(
        &mut self,
        datapath: &dyn Datapath,
        name: &str,
        esp: &[strait_esp::SaReport],
        now: std::time::Instant,
    ) {
        self.held.retain(|h| {
            let used = esp.iter().any(|s| {
                s.peer == name
                    && s.direction == strait_esp::Direction::Inbound
                    && s.status.spi == h.spi_in
                    && s.status.packets > 0
            });
            if !used && now < h.deadline {
                return true;
            }
            match datapath.activate_outbound(name, h.spi_out) {
                Ok(()) => tracing::debug!(peer = %name, spi_out = format!("{:08x}", h.spi_out), "outbound switched"),
                Err(e) => tracing::debug!(peer = %name, error = %e, "switching outbound"),
            }
            false
        });
    }
}

/// How long the inbound half of a deleted Child SA still takes packets. The peer
/// stopped sealing with it before its Delete left (or before it answered ours), but a
/// packet it sealed just before can arrive after the Delete: a datapath worker that
/// took the SA and was then kept off the CPU sends it late. Removed at once, that
/// packet would be dropped as an unknown SPI, a packet lost to a rekey. (strongSwan
/// waits 5 s by default for the same reason.)
pub const INBOUND_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Inbound halves of deleted Child SAs, still installed until their
/// [`INBOUND_LINGER`] ran out. Nothing leaves on them: their outbound twins are gone.
#[derive(Debug, Default)]
pub struct Retiring {
    inbound: Vec<(u32, std::time::Instant)>,
}

impl Retiring {
    /// Inbound SA `spi_in` is deleted: it goes after its linger.
    pub fn retire(&mut self, spi_in: u32, now: std::time::Instant) {
        self.inbound.push((spi_in, now + INBOUND_LINGER));
    }

    /// The inbound SAs whose linger ran out, forgotten here: the caller removes them.
    pub fn take_due(&mut self, now: std::time::Instant) -> Vec<u32> {
        self.inbound
            .extract_if(.., |&mut (_, deadline)| now >= deadline)
            .map(|(spi, _)| spi)
            .collect()
    }

    /// Removes from datapath peer `name` the inbound SAs whose linger ran out.
    pub fn remove_due(&mut self, datapath: &dyn Datapath, name: &str, now: std::time::Instant) {
        for spi in self.take_due(now) {
            ignore_unknown(datapath.remove_sa(name, strait_esp::Direction::Inbound, spi));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_deleted_inbound_sa_goes_only_after_its_linger() {
        let t0 = Instant::now();
        let mut r = Retiring::default();
        r.retire(0x11, t0);
        r.retire(0x22, t0 + Duration::from_secs(1));
        assert!(r.take_due(t0).is_empty());
        assert!(
            r.take_due(t0 + INBOUND_LINGER - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(r.take_due(t0 + INBOUND_LINGER), vec![0x11]);
        // Taken once: the next look has only the later one, when it is due.
        assert!(r.take_due(t0 + INBOUND_LINGER).is_empty());
        assert_eq!(r.take_due(t0 + Duration::from_secs(60)), vec![0x22]);
        assert!(r.take_due(t0 + Duration::from_secs(60)).is_empty());
    }
}
