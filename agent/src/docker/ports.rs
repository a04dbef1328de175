//! `-p` publishing for Docker endpoints: with a remote driver, dockerd installs no
//! DNAT and starts no docker-proxy, so the driver must.
//!
//! strait proxies in userspace, in the agent: one listener per mapping on the host
//! address and port, each TCP connection spliced to the container's address and port,
//! UDP datagrams relayed per client. No netfilter rule is made, so `--fast-path auto`
//! has no DNAT to turn itself off for, and a mapping on 127.0.0.1 works without
//! `route_localnet`. The cost is a copy through the agent; the service issue's eBPF
//! load balancer is the way to publish at packet level.
//!
//! Mappings are kept in the store (`docker/ports/<node>/<endpoint ID>`) when they are
//! programmed, and put back when the agent starts, since the proxies die with it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strait_api::docker::PortBinding;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::networks::ports_prefix;
use super::{DockerError, DockerPlugin};

/// How long a UDP client's relay lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// The stored form of `docker/ports/<node>/<endpoint ID>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPorts {
    pub endpoint_id: String,
    pub targets: Vec<IpAddr>,
    pub bindings: Vec<PortBinding>,
}

/// The running proxies, per Docker endpoint.
#[derive(Default)]
pub struct Proxies {
    running: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl Proxies {
    fn stop(&self, endpoint_id: &str) {
        let tasks = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(endpoint_id);
        for t in tasks.into_iter().flatten() {
            t.abort();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in self
            .running
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .flat_map(|(_, v)| v)
        {
            t.abort();
        }
    }
}

/// The target of a binding: the container's address of the host address's family
/// (IPv4 when the host address is unspecified).
fn target_of(binding: &PortBinding, host: IpAddr, targets: &[IpAddr]) -> Option<SocketAddr> {
    let want_v6 = host.is_ipv6() && !binding.host_ip.is_empty();
    targets
        .iter()
        .find(|t| t.is_ipv6() == want_v6)
        .or_else(|| targets.first())
        .map(|ip| SocketAddr::new(*ip, binding.port))
}

fn host_addr(binding: &PortBinding) -> Result<IpAddr, DockerError> {
    match binding.host_ip.trim() {
        "" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        s => s
            .parse()
            .map_err(|e| DockerError::new(format!("host IP {s:?} of -p: {e}"))),
    }
}

impl DockerPlugin {
    /// Starts a proxy per binding; all or none: a port in use fails the whole set.
    pub async fn publish_ports(
        &self,
        endpoint_id: &str,
        targets: &[IpAddr],
        bindings: Vec<PortBinding>,
    ) -> Result<(), DockerError> {
        self.ports.stop(endpoint_id);
        let tasks = start(targets, &bindings).await?;
        self.ports
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(endpoint_id.to_string(), tasks);
        let stored = StoredPorts {
            endpoint_id: endpoint_id.to_string(),
            targets: targets.to_vec(),
            bindings,
        };
        let key = format!("{}{endpoint_id}", ports_prefix(&self.node));
        if let Err(e) = self
            .store
            .put(&key, serde_json::to_vec(&stored).unwrap_or_default(), None)
            .await
        {
            self.ports.stop(endpoint_id);
            return Err(e.into());
        }
        Ok(())
    }

    pub async fn stop_ports(&self, endpoint_id: &str) -> Result<(), DockerError> {
        self.ports.stop(endpoint_id);
        let key = format!("{}{endpoint_id}", ports_prefix(&self.node));
        self.store.delete(&key).await?;
        Ok(())
    }

    /// Restarts the proxies of this node's endpoints after a restart; mappings whose
    /// endpoint is gone are dropped.
    pub(super) async fn restore_ports(&self) {
        let kvs = match self.store.range(&ports_prefix(&self.node)).await {
            Ok(r) => r.kvs,
            Err(e) => {
                warn!(error = %e, "reading Docker port mappings; they are not restored");
                return;
            }
        };
        for kv in kvs {
            let Ok(stored) = serde_json::from_slice::<StoredPorts>(&kv.value) else {
                warn!(key = %kv.key, "unreadable Docker port mapping; dropped");
                let _ = self.store.delete(&kv.key).await;
                continue;
            };
            let id = super::driver::endpoint_record_id(&stored.endpoint_id);
            match self.attacher.handover_record(&id).await {
                Ok(Some(_)) => match start(&stored.targets, &stored.bindings).await {
                    Ok(tasks) => {
                        info!(endpoint = %super::networks::short(&stored.endpoint_id), "port mappings restored");
                        self.ports
                            .running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(stored.endpoint_id.clone(), tasks);
                    }
                    Err(e) => {
                        warn!(endpoint = %stored.endpoint_id, error = %e, "restoring port mappings")
                    }
                },
                Ok(None) => {
                    let _ = self.store.delete(&kv.key).await;
                }
                Err(e) => {
                    warn!(endpoint = %stored.endpoint_id, error = %e, "restoring port mappings")
                }
            }
        }
    }
}

/// Binds every listener first, then starts the relays: a failure binds nothing.
async fn start(
    targets: &[IpAddr],
    bindings: &[PortBinding],
) -> Result<Vec<JoinHandle<()>>, DockerError> {
    enum Bound {
        Tcp(TcpListener, SocketAddr),
        Udp(UdpSocket, SocketAddr),
    }
    let mut bound = Vec::new();
    for b in bindings {
        let host = host_addr(b)?;
        if b.host_port == 0 {
            return Err(DockerError::new(format!(
                "publishing port {} needs a host port with strait (-p HOSTPORT:{}): Docker would not \
                 learn a port the driver picked",
                b.port, b.port
            )));
        }
        let end = b.host_port_end.max(b.host_port);
        if end != b.host_port {
            return Err(DockerError::new(format!(
                "host port ranges ({}-{end}) are not supported by strait; publish one port",
                b.host_port
            )));
        }
        let Some(target) = target_of(b, host, targets) else {
            return Err(DockerError::new("the endpoint has no address to publish"));
        };
        let at = SocketAddr::new(host, b.host_port);
        let proto = match b.proto {
            6 => "tcp",
            17 => "udp",
            other => {
                return Err(DockerError::new(format!(
                    "publishing protocol {other} is not supported by strait (tcp and udp are)"
                )));
            }
        };
        let in_use =
            |e: std::io::Error| DockerError::new(format!("cannot publish {at}/{proto}: {e}"));
        bound.push(match b.proto {
            6 => Bound::Tcp(TcpListener::bind(at).await.map_err(in_use)?, target),
            _ => Bound::Udp(UdpSocket::bind(at).await.map_err(in_use)?, target),
        });
    }
    Ok(bound
        .into_iter()
        .map(|b| match b {
            Bound::Tcp(l, target) => tokio::spawn(relay_tcp(l, target)),
            Bound::Udp(s, target) => tokio::spawn(relay_udp(s, target)),
        })
        .collect())
}

async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    loop {
        let (mut client, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "accept on a published port");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => debug!(%from, %target, error = %e, "published port: container refused"),
            }
        });
    }
}

async fn relay_udp(socket: UdpSocket, target: SocketAddr) {
    let socket = Arc::new(socket);
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let existing = clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&from)
            .cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let local: SocketAddr = if target.is_ipv6() {
                    "[::]:0".parse().unwrap_or_else(|_| unreachable!())
                } else {
                    "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
                };
                let Ok(u) = UdpSocket::bind(local).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(from, u.clone());
                // Replies go back to the client until it is idle.
                let (back, up, table) = (socket.clone(), u.clone(), clients.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up.recv(&mut buf)).await {
                        let _ = back.send_to(&buf[..n], from).await;
                    }
                    table
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&from);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}
