//! What the services reconciler asks of a datapath: hold one frontend's backends and
//! Maglev table (whole: a connection sees the old table or the new, never a mix), drop
//! a frontend, and say which it holds. The eBPF datapath ([`super::datapath`])
//! implements it, installing a frontend reached from outside the node (node port,
//! external IP) twice: for this node's sockets and for packets from outside;
//! [`Fake`] is an in-memory one for the reconciler's unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use strait_services::model::Protocol;

/// What the datapath keys a frontend by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

/// One frontend's whole state in the datapath.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The usable backends; `table` indexes them.
    pub backends: Vec<(IpAddr, u16)>,
    /// The Maglev table (empty: no backend, connections are refused).
    pub table: Vec<u32>,
    /// ClientIP session affinity's timeout.
    pub affinity_secs: Option<u32>,
    /// Also reached by packets from outside the node (a node port, an external
    /// IP), which the packet-level translation serves.
    pub from_outside: bool,
    /// The backends (of `backends`) on this node: packets from outside are not
    /// SNATed to reach them.
    pub local: BTreeSet<(IpAddr, u16)>,
}

pub trait ServiceDataplane: Send + Sync {
    /// Replaces `key`'s entry whole; on an error the previous entry stays in force.
    fn install(&self, key: &FrontendKey, entry: &Entry) -> Result<(), String>;
    fn remove(&self, key: &FrontendKey) -> Result<(), String>;
    /// The frontends it holds (a restarted agent diffs against them).
    fn installed(&self) -> Result<Vec<FrontendKey>, String>;
    /// Its counters by reason (`translated`, `refused_no_backend`, …), totals since
    /// the maps were made.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Connections each backend of each frontend was given, however it was
    /// reached (this node's sockets and packets from outside together).
    fn backend_connections(&self) -> BTreeMap<(FrontendKey, IpAddr, u16), u64> {
        BTreeMap::new()
    }
    /// Its translations as they happen (`netctl monitor`), when it reports them.
    fn translations(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<super::datapath::Translation>> {
        None
    }
}

/// An in-memory datapath that can be told to refuse.
#[derive(Default)]
pub struct Fake {
    pub entries: Mutex<BTreeMap<FrontendKey, Entry>>,
    /// While set, `install` fails with this.
    pub refuse: Mutex<Option<String>>,
}

impl ServiceDataplane for Fake {
    fn install(&self, key: &FrontendKey, entry: &Entry) -> Result<(), String> {
        if let Some(why) = self.refuse.lock().expect("fake").clone() {
            return Err(why);
        }
        self.entries
            .lock()
            .expect("fake")
            .insert(*key, entry.clone());
        Ok(())
    }

    fn remove(&self, key: &FrontendKey) -> Result<(), String> {
        self.entries.lock().expect("fake").remove(key);
        Ok(())
    }

    fn installed(&self) -> Result<Vec<FrontendKey>, String> {
        Ok(self.entries.lock().expect("fake").keys().copied().collect())
    }
}

/// The eBPF datapath as the reconciler's: a frontend in scope `Local` for the
/// socket balancer and, when it is reached from outside, in scope `Outside` for
/// the packet-level translation as well (the local scope first: what the node's
/// own sockets see never waits on the other).
impl ServiceDataplane for super::datapath::ServicesDatapath {
    fn install(&self, key: &FrontendKey, entry: &Entry) -> Result<(), String> {
        let backends: Vec<super::datapath::Backend> = entry
            .backends
            .iter()
            .map(|&(addr, port)| super::datapath::Backend {
                addr,
                port,
                local: entry.local.contains(&(addr, port)),
            })
            .collect();
        let affinity = entry
            .affinity_secs
            .map(|s| std::time::Duration::from_secs(u64::from(s)));
        let local = to_frontend(key, Scope::Local);
        super::datapath::ServicesDatapath::install(self, &local, &backends, &entry.table, affinity)
            .map_err(|e| e.to_string())?;
        let outside = to_frontend(key, Scope::Outside);
        if entry.from_outside {
            super::datapath::ServicesDatapath::install(
                self,
                &outside,
                &backends,
                &entry.table,
                affinity,
            )
            .map_err(|e| e.to_string())
        } else {
            super::datapath::ServicesDatapath::remove(self, &outside)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    fn remove(&self, key: &FrontendKey) -> Result<(), String> {
        for scope in [Scope::Outside, Scope::Local] {
            super::datapath::ServicesDatapath::remove(self, &to_frontend(key, scope))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn installed(&self) -> Result<Vec<FrontendKey>, String> {
        let frontends = self.frontends().map_err(|e| e.to_string())?;
        let keys: BTreeSet<FrontendKey> = frontends
            .into_iter()
            .map(|(f, _)| FrontendKey {
                addr: f.addr,
                port: f.port,
                protocol: match f.proto {
                    super::datapath::Protocol::Tcp => Protocol::TCP,
                    super::datapath::Protocol::Udp => Protocol::UDP,
                },
            })
            .collect();
        Ok(keys.into_iter().collect())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.stats()
            .map(|s| {
                s.into_iter()
                    .map(|(r, n)| (r.name().to_string(), n))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn translations(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<super::datapath::Translation>> {
        Some(super::datapath::ServicesDatapath::translations(self))
    }

    fn backend_connections(&self) -> BTreeMap<(FrontendKey, IpAddr, u16), u64> {
        let mut out = BTreeMap::new();
        for (f, b, n) in
            super::datapath::ServicesDatapath::backend_connections(self).unwrap_or_default()
        {
            let key = FrontendKey {
                addr: f.addr,
                port: f.port,
                protocol: match f.proto {
                    super::datapath::Protocol::Tcp => Protocol::TCP,
                    super::datapath::Protocol::Udp => Protocol::UDP,
                },
            };
            *out.entry((key, b.addr, b.port)).or_default() += n;
        }
        out
    }
}

use super::datapath::Scope;

fn to_frontend(key: &FrontendKey, scope: Scope) -> super::datapath::Frontend {
    super::datapath::Frontend {
        addr: key.addr,
        port: key.port,
        proto: match key.protocol {
            Protocol::TCP => super::datapath::Protocol::Tcp,
            Protocol::UDP => super::datapath::Protocol::Udp,
        },
        scope,
    }
}
