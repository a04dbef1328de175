//! The passive side: one listening socket (per address) for every peer. An accepted
//! connection is handed to the session configured for its source address; a connection
//! from an address no session is configured for is closed at once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::md5;

/// Where the listener hands a peer's connections: [`super::SessionHandle::incoming`].
pub type Incoming = mpsc::UnboundedSender<TcpStream>;

type Peers = Arc<Mutex<HashMap<IpAddr, Incoming>>>;

pub struct Listener {
    socket: Arc<tokio::net::TcpListener>,
    peers: Peers,
    accept: JoinHandle<()>,
    local: SocketAddr,
}

/// The address as the session knows it: an IPv4 peer reaching a dual-stack socket
/// shows up IPv4-mapped.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

impl Listener {
    /// Listen on `addr` (port 179 for a real speaker) and start accepting, on the
    /// current tokio runtime. The socket is created in the calling thread's network
    /// namespace.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = Arc::new(socket.listen(64)?);
        let local = listener.local_addr()?;
        let peers: Peers = Arc::default();
        let accept = tokio::spawn(accept_loop(listener.clone(), peers.clone()));
        Ok(Listener {
            socket: listener,
            peers,
            accept,
            local,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Hand connections from `peer` to `to`, signed with `md5_key` when given (the key
    /// is set on the listening socket, so the kernel checks the handshake already).
    pub fn register(&self, peer: IpAddr, md5_key: Option<&[u8]>, to: Incoming) -> io::Result<()> {
        if let Some(key) = md5_key {
            md5::set_key(self.socket.as_ref(), peer, key)?;
        }
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(canonical(peer), to);
        Ok(())
    }

    /// Stop accepting `peer`; its MD5 key, if any, is removed.
    pub fn unregister(&self, peer: IpAddr) -> io::Result<()> {
        let had = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&canonical(peer));
        if had.is_some() {
            // Removing a key that was never set fails with ENOENT: nothing to undo.
            match md5::set_key(self.socket.as_ref(), peer, &[]) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: Arc<tokio::net::TcpListener>, peers: Peers) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: keep listening.
                tracing::warn!(error = %e, "bgp: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = canonical(from.ip());
        let to = peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned();
        match to {
            Some(to) => {
                if to.send(stream).is_err() {
                    tracing::debug!(%peer, "bgp: connection for a session that ended");
                }
            }
            None => tracing::info!(%peer, "bgp: connection from an unconfigured peer closed"),
        }
    }
}
