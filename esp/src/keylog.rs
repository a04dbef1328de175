//! The test-only ESP key log: Wireshark `esp_sa` UAT lines, so that tshark (and
//! scapy, reading the same lines) can decrypt and verify what strait sends. This is
//! the ESP counterpart of SSLKEYLOGFILE: the caller decides whether to write one at
//! all (the agent only for a test's state dir); nothing else here writes keys.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use crate::key::SaKey;

/// An append-only file of `esp_sa` records.
#[derive(Debug)]
pub struct KeyLog {
    file: Mutex<File>,
}

impl KeyLog {
    /// Open (create, mode 0600, or append to) the file at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Record the SA with `spi` carrying packets from `src` to `dst` (the outer
    /// addresses).
    pub fn record(&self, src: IpAddr, dst: IpAddr, spi: u32, key: &SaKey) -> std::io::Result<()> {
        let line = record(src, dst, spi, key);
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(line.as_bytes())?;
        f.flush()
    }
}

/// One `esp_sa` UAT line (Wireshark 4.0's eight fields), newline included.
pub fn record(src: IpAddr, dst: IpAddr, spi: u32, key: &SaKey) -> String {
    let family = match src {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    };
    let hex: String = key
        .expose_keymat()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "\"{family}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{}\",\"0x{hex}\",\"NULL\",\"\"\n",
        key.cipher().wireshark_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cipher;

    #[test]
    fn writes_wireshark_esp_sa_lines() {
        let key = SaKey::new(Cipher::Aes128Gcm16, &[0xab; 20]).unwrap();
        let dir = std::env::temp_dir().join(format!("strait-esp-keylog-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let log = KeyLog::open(&dir).unwrap();
        log.record(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            0x1020304,
            &key,
        )
        .unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(
            text,
            format!(
                "\"IPv4\",\"192.0.2.1\",\"192.0.2.2\",\"0x01020304\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
                "ab".repeat(20)
            )
        );
    }
}
