//! An in-memory [`Dataplane`] and [`PolicyHost`] for the control plane's tests: it
//! holds what was installed, counts every call, and can be told to fail.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::IpNet;
use strait_policy::tables::EndpointTables;

use super::dataplane::{Dataplane, DataplaneError, Installed};
use super::host::PolicyHost;

/// One call, as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Attach(String, u32),
    Install(u32, u32),
    Remove(u32),
}

#[derive(Default)]
pub struct FakeDataplane {
    pub state: Mutex<FakeState>,
}

#[derive(Default)]
pub struct FakeState {
    pub entries: BTreeMap<u32, Installed>,
    pub ipcache: BTreeMap<IpNet, u32>,
    pub calls: Vec<Call>,
    pub attached: BTreeMap<u32, String>,
    /// The next install fails with a full map.
    pub fail_install: bool,
}

impl FakeDataplane {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fake that already holds `entries` (what a previous agent left).
    pub fn holding(entries: BTreeMap<u32, Installed>) -> Self {
        let fake = Self::default();
        fake.lock().entries = entries;
        fake
    }

    pub fn installs(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Install(..)))
            .count()
    }
}

impl Dataplane for FakeDataplane {
    fn attach(&self, ifname: &str, ifindex: u32) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::Attach(ifname.into(), ifindex));
        s.attached.insert(ifindex, ifname.into());
        Ok(())
    }

    fn is_attached(&self, ifname: &str) -> Result<bool, DataplaneError> {
        Ok(self.lock().attached.values().any(|n| n == ifname))
    }

    fn install(
        &self,
        ifindex: u32,
        identity: u32,
        tables: &EndpointTables,
    ) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        if std::mem::take(&mut s.fail_install) {
            return Err(DataplaneError::Map {
                map: "policy",
                reason: "full".into(),
            });
        }
        s.calls.push(Call::Install(ifindex, identity));
        let generation = s.entries.get(&ifindex).map_or(1, |i| i.generation + 1);
        s.entries.insert(
            ifindex,
            Installed {
                identity,
                generation,
                // As the kernel's maps give them back.
                tables: super::datapath::canonical(tables),
            },
        );
        Ok(())
    }

    fn remove(&self, ifindex: u32) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::Remove(ifindex));
        s.entries.remove(&ifindex);
        Ok(())
    }

    fn installed(&self) -> Result<Vec<u32>, DataplaneError> {
        Ok(self.lock().entries.keys().copied().collect())
    }

    fn read_back(&self, ifindex: u32) -> Result<Option<Installed>, DataplaneError> {
        Ok(self.lock().entries.get(&ifindex).cloned())
    }

    fn sync_ipcache(&self, wanted: &BTreeMap<IpNet, u32>) -> Result<(), DataplaneError> {
        self.lock().ipcache = wanted.clone();
        Ok(())
    }

    fn read_ipcache(&self) -> Result<BTreeMap<IpNet, u32>, DataplaneError> {
        Ok(self.lock().ipcache.clone())
    }
}

/// The host's links and addresses, set by the test.
#[derive(Default)]
pub struct FakeHost {
    pub links: Mutex<BTreeMap<String, u32>>,
    pub addrs: Mutex<Vec<IpAddr>>,
}

impl FakeHost {
    pub fn set_link(&self, name: &str, ifindex: u32) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.into(), ifindex);
    }

    pub fn drop_link(&self, name: &str) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[async_trait]
impl PolicyHost for FakeHost {
    async fn endpoint_ifindexes(&self) -> Result<BTreeMap<String, u32>, String> {
        Ok(self.links.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn addresses(&self) -> Result<Vec<IpAddr>, String> {
        Ok(self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}
