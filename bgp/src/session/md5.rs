//! TCP MD5 signatures (RFC 2385) through Linux's TCP_MD5SIG socket option: a key per
//! peer address, set on the listening socket (for connections the peer opens) and on
//! the connecting socket (for ours). A segment with a wrong or missing signature is
//! dropped by the kernel, so a peer with another key never completes the handshake.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Linux's `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` (linux/tcp.h): a 128-octet sockaddr_storage, flags, prefix
/// length, key length, ifindex, then the key.
const SOCKADDR_STORAGE_LEN: usize = 128;
const OPT_LEN: usize = SOCKADDR_STORAGE_LEN + 1 + 1 + 2 + 4 + MAX_KEY_LEN;

/// The option's bytes for `peer` and `key`; an empty key removes the peer's key.
fn option_bytes(peer: IpAddr, key: &[u8]) -> io::Result<[u8; OPT_LEN]> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key of {} octets, at most {MAX_KEY_LEN}", key.len()),
        ));
    }
    let mut b = [0u8; OPT_LEN];
    match peer {
        IpAddr::V4(a) => {
            // sockaddr_in: family (host order), port 0, address.
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // sockaddr_in6: family, port 0, flowinfo 0, address, scope id 0.
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    // Key length: u16 after the flags and prefix-length octets.
    let at = SOCKADDR_STORAGE_LEN + 2;
    b[at..at + 2].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    let key_at = SOCKADDR_STORAGE_LEN + 8;
    b[key_at..key_at + key.len()].copy_from_slice(key);
    Ok(b)
}

/// Sign every segment to and from `peer` on `socket` with `key` (empty: stop signing).
pub fn set_key(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    let opt = option_bytes(peer, key)?;
    setsockopt_md5(socket.as_raw_fd(), &opt)
}

// The one unsafe call of the session driver: neither std, tokio nor nix wrap
// TCP_MD5SIG. The buffer is a plain byte array of exactly the length passed.
#[allow(unsafe_code)]
fn setsockopt_md5(fd: std::os::fd::RawFd, opt: &[u8; OPT_LEN]) -> io::Result<()> {
    // SAFETY: `opt` is valid for reads of OPT_LEN bytes for the duration of the call,
    // and the kernel copies it before returning.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            opt.as_ptr().cast(),
            OPT_LEN as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_longer_than_the_kernel_takes_is_refused() {
        let err = option_bytes("10.0.0.1".parse().unwrap(), &[b'k'; 81]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn layout_matches_linux_tcp_md5sig() {
        let b = option_bytes("10.0.0.1".parse().unwrap(), b"secret").unwrap();
        assert_eq!(OPT_LEN, 216);
        assert_eq!(&b[4..8], &[10, 0, 0, 1]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 6);
        assert_eq!(&b[136..142], b"secret");
    }
}
