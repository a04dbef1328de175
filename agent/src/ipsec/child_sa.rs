//! Putting a negotiated Child SA into an ESP datapath: both directions, inbound first
//! (so the peer's first packet on it is taken), then outbound, in use at once or held
//! back. Shared by the node engine and the site gateway, whose peers differ only in
//! the name the datapath knows them by.

use strait_esp::{Datapath, SaConfig, SaKey};
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
