//! BGP with the router behind each external peer this gateway carries, through the
//! peer's tunnel: strait-bgp's speaker, one per peer (each peer has its own AS pair
//! and its own routes), active only (it listens on no port, so it never competes with
//! the BGP fabric's listener on 179).
//!
//! A session exists while the peer's tunnel is up (an IKE SA with a Child SA in use);
//! when the tunnel goes, its speaker goes with it and the routes it learned are
//! withdrawn at once, everywhere in the site. When the router stops answering through
//! a tunnel that still looks up, the hold timer ends the session and does the same.
//! Graceful restart is off: a router behind a dead tunnel is not restarting, and its
//! networks must not stay routed into nothing.
//!
//! What a session learned goes to the store ([`super::learned`]) and from there to
//! every node of the site, this gateway included (its steering reads the same
//! records). A learned network that overlaps our own side (the pools, the peer's
//! `local_networks`, our session address) or holds the peer's IKE address is never
//! kept: a router must not be able to pull the site's own traffic, or the tunnel's
//! own packets, into the tunnel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use strait_bgp::rib::AcceptAll;
use strait_bgp::speaker::{FibEvent, PeerSpec, Speaker, SpeakerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::learned::{self, MAX_LEARNED};
use crate::store::Store;

/// A failed write of learned routes is tried again after this long.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// How long a stopping session may take to finish the store write it has under way.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// How long between connection attempts to a router: the tunnel is short, and a
/// session that comes up late leaves the learned networks unrouted meanwhile.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// One session through a carried peer's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The router behind the peer, and its AS.
    pub router: IpAddr,
    pub asn: u32,
    /// Our end (held on this gateway), and our AS.
    pub local: IpAddr,
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    /// What we announce: the site's pools and the peer's `local_networks`.
    pub announce: Vec<IpNet>,
    /// What we never take from the router (see the module doc).
    pub refuse: Vec<IpNet>,
}

impl Session {
    /// Whether a network the router announced may be routed into the tunnel.
    fn acceptable(&self, net: &IpNet) -> bool {
        super::plan::clear_of(net, &self.refuse)
    }
}

/// A task aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running session: told to stop by `stop`, aborted if dropped (when the manager
/// itself goes).
struct SessionTask {
    session: Session,
    stop: watch::Sender<bool>,
    task: Task,
}

/// The sessions of this gateway; see the module doc.
pub struct TunnelBgp {
    want: watch::Sender<BTreeMap<String, Session>>,
    _manager: Task,
}

impl TunnelBgp {
    /// Starts the manager for gateway `node` (on the current tokio runtime, in its
    /// network namespace). It removes this node's learned records of peers it does
    /// not carry, also those a previous run left.
    pub fn start(store: Arc<dyn Store>, node: String) -> Self {
        let (want, rx) = watch::channel(BTreeMap::new());
        let manager = Task(tokio::spawn(manage(store, node, rx)));
        TunnelBgp {
            want,
            _manager: manager,
        }
    }

    /// The sessions there should be now, by peer name.
    pub fn set(&self, sessions: BTreeMap<String, Session>) {
        self.want.send_if_modified(|current| {
            if *current == sessions {
                return false;
            }
            *current = sessions;
            true
        });
    }
}

async fn manage(
    store: Arc<dyn Store>,
    node: String,
    mut want: watch::Receiver<BTreeMap<String, Session>>,
) {
    let mut running: BTreeMap<String, SessionTask> = BTreeMap::new();
    loop {
        let sessions = want.borrow_and_update().clone();
        let gone: Vec<String> = running
            .iter()
            .filter(|(peer, t)| sessions.get(*peer) != Some(&t.session))
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in gone {
            let mut t = running.remove(&peer).expect("listed");
            info!(%peer, router = %t.session.router, "BGP through the tunnel stopped: its networks are withdrawn");
            // The session ends after the store write it has under way, so the delete
            // of its record below is the last word.
            let _ = t.stop.send(true);
            let _ = tokio::time::timeout(STOP_WAIT, &mut t.task.0).await;
        }
        let keep: Vec<&str> = running.keys().map(String::as_str).collect();
        // A stopped session's record goes before a new one starts writing, and also
        // when nothing changed but a previous run left records behind.
        if let Err(e) = learned::withdraw_all_but(&*store, &node, &keep).await {
            warn!(error = %e, "withdrawing learned routes from the store; retrying");
            tokio::time::sleep(STORE_RETRY).await;
            continue;
        }
        for (peer, s) in sessions {
            if running.contains_key(&peer) {
                continue;
            }
            info!(%peer, router = %s.router, asn = s.asn, local = %s.local, "BGP through the tunnel starting");
            let (stop, stopped) = watch::channel(false);
            let task = Task(tokio::spawn(run_session(
                store.clone(),
                node.clone(),
                peer.clone(),
                s.clone(),
                stopped,
            )));
            running.insert(
                peer,
                SessionTask {
                    session: s,
                    stop,
                    task,
                },
            );
        }
        if want.changed().await.is_err() {
            return;
        }
    }
}

/// One session: its speaker, and what it learned written to the store, until `stop`.
async fn run_session(
    store: Arc<dyn Store>,
    node: String,
    peer: String,
    s: Session,
    mut stop: watch::Receiver<bool>,
) {
    let mut config = SpeakerConfig::new(s.local_asn, s.router_id);
    config.listen = vec![];
    config.graceful_restart = None;
    config.multipath = 1;
    config.connect_retry = CONNECT_RETRY;
    let (speaker, mut fib) = match Speaker::start(config, Box::new(AcceptAll)).await {
        Ok(started) => started,
        Err(e) => {
            warn!(%peer, error = %e, "BGP through the tunnel: the speaker did not start");
            return;
        }
    };
    let mut spec = PeerSpec::new(s.router, s.asn);
    spec.local = Some(s.local);
    spec.graceful_restart = false;
    spec.max_prefixes = Some(MAX_LEARNED);
    spec.description = format!("router behind IPsec peer {peer}");
    let set = async {
        speaker.set_originated(s.announce.clone()).await?;
        speaker.set_peers(vec![spec]).await
    };
    if let Err(e) = set.await {
        warn!(%peer, error = %e, "BGP through the tunnel: configuring the speaker");
        return;
    }
    let mut learned: BTreeSet<IpNet> = BTreeSet::new();
    // The record starts empty, replacing what an earlier session of ours wrote.
    let mut dirty = true;
    loop {
        if dirty {
            let nets: Vec<IpNet> = learned.iter().copied().collect();
            match learned::publish(&*store, &peer, &node, nets).await {
                Ok(()) => dirty = false,
                Err(e) => warn!(%peer, error = %e, "writing learned routes to the store; retrying"),
            }
        }
        let retry = async {
            if dirty {
                tokio::time::sleep(STORE_RETRY).await
            } else {
                std::future::pending().await
            }
        };
        let event = tokio::select! {
            e = fib.recv() => e,
            _ = stop.wait_for(|s| *s) => return,
            _ = retry => continue,
        };
        let Some(event) = event else {
            return;
        };
        let FibEvent::Changes(changes) = event else {
            continue;
        };
        let before = learned.len();
        for c in changes {
            if c.next_hops.is_empty() {
                dirty |= learned.remove(&c.prefix);
            } else if s.acceptable(&c.prefix) {
                dirty |= learned.insert(c.prefix);
            } else {
                warn!(%peer, network = %c.prefix, "refusing a network the router behind the peer announced: it overlaps our own side, or the tunnel itself");
            }
        }
        if dirty {
            info!(%peer, before, now = learned.len(), "networks learned through the tunnel changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_side_and_the_default_route_are_never_taken() {
        let s = Session {
            router: "192.168.50.20".parse().unwrap(),
            asn: 64600,
            local: "169.254.100.1".parse().unwrap(),
            local_asn: 64512,
            router_id: "10.0.0.1".parse().unwrap(),
            announce: vec!["10.244.0.0/16".parse().unwrap()],
            refuse: vec![
                "10.244.0.0/16".parse().unwrap(),
                "169.254.100.1/32".parse().unwrap(),
                "10.0.0.150/32".parse().unwrap(),
            ],
        };
        let ok = |n: &str| s.acceptable(&n.parse().unwrap());
        assert!(ok("192.168.60.0/24"));
        assert!(ok("10.245.0.0/16"));
        assert!(!ok("0.0.0.0/0"), "the default route");
        assert!(!ok("10.244.3.0/24"), "inside the pools");
        assert!(!ok("10.0.0.0/8"), "holds the pools");
        assert!(!ok("169.254.0.0/16"), "holds our session address");
        assert!(!ok("10.0.0.128/25"), "holds the peer's IKE address");
    }
}
