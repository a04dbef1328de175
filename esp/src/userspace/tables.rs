//! The userspace datapath's lookup tables: peers, the routes to them (longest prefix
//! first), and inbound SAs by SPI. A table is immutable once published; a change
//! builds a new one and publishes it (RCU-like), so workers read without locking per
//! packet: each keeps an `Arc` of the table it last saw and re-reads only when the
//! generation counter moved.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;
use socket2::SockAddr;

use crate::datapath::PeerConfig;
use crate::sa::{InboundSa, OutboundSa};

/// One peer as the workers see it.
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    pub config: PeerConfig,
    pub to: SockAddr,
    /// The SA new packets use.
    pub outbound: Option<Arc<OutboundSa>>,
    /// Older outbound SAs, kept for status until removed.
    pub retired: Vec<Arc<OutboundSa>>,
}

#[derive(Debug)]
pub struct Inbound {
    pub peer: String,
    pub sa: Arc<InboundSa>,
    pub prefixes: Arc<[IpNet]>,
}

#[derive(Debug, Default, Clone)]
pub struct Tables {
    pub peers: BTreeMap<String, Arc<Peer>>,
    /// Every (prefix, peer), longest prefix first.
    pub routes: Vec<(IpNet, Arc<Peer>)>,
    pub inbound: HashMap<u32, Arc<Inbound>>,
}

impl Tables {
    /// The peer whose prefixes hold `dst` (longest match).
    pub fn route(&self, dst: IpAddr) -> Option<&Arc<Peer>> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&dst))
            .map(|(_, p)| p)
    }

    /// Rebuild the derived parts (routes, the inbound SAs' prefixes) after the peers
    /// changed.
    fn reindex(&mut self) {
        self.routes = self
            .peers
            .values()
            .flat_map(|p| p.config.prefixes.iter().map(move |n| (*n, p.clone())))
            .collect();
        self.routes
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        for entry in self.inbound.values_mut() {
            if let Some(p) = self.peers.get(&entry.peer) {
                *entry = Arc::new(Inbound {
                    peer: entry.peer.clone(),
                    sa: entry.sa.clone(),
                    prefixes: p.config.prefixes.clone().into(),
                });
            }
        }
    }
}

/// The published table and its generation.
#[derive(Debug, Default)]
pub struct Published {
    current: RwLock<Arc<Tables>>,
    generation: AtomicU64,
    /// Serialises writers, so two edits never race to publish.
    edit: Mutex<()>,
}

impl Published {
    /// Apply `f` to a copy of the table and publish the result (unless `f` fails).
    pub fn edit<T, E>(&self, f: impl FnOnce(&mut Tables) -> Result<T, E>) -> Result<T, E> {
        let _writer = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (*self.load()).clone();
        let r = f(&mut next)?;
        next.reindex();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(r)
    }

    pub fn load(&self) -> Arc<Tables> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A worker's view: re-read only when the generation moved.
pub struct View {
    generation: u64,
    pub tables: Arc<Tables>,
}

impl View {
    pub fn new(p: &Published) -> Self {
        Self {
            generation: p.generation.load(Ordering::Acquire),
            tables: p.load(),
        }
    }

    pub fn refresh(&mut self, p: &Published) {
        let g = p.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.tables = p.load();
        }
    }
}
