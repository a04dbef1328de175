//! An in-memory kernel for unit tests of what is built on [`HostNet`].
//!
//! It keeps the host's endpoint links and the "existing" network namespaces in maps,
//! and follows the real kernel's rules that the agent relies on: a host link name is
//! unique, a container interface name is unique within its namespace, deleting what
//! is gone succeeds, and a namespace path that does not exist cannot hold an
//! interface. Tests can make the next creation fail after the link exists (the real
//! code then deletes it again, so nothing is left), and stop creations and listings
//! half-way at a [`Gate`] to interleave operations exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore};

use super::{HostNet, NetnsState};
use crate::endpoint::{
    CheckError, EndpointError, Problem, Side, VethCreated, VethSpec, default_container_mac,
    host_mac,
};
use crate::netlink::format_mac;

/// The path the fake treats as the agent's own network namespace.
pub const HOST_NETNS: &str = "/proc/1/ns/net";

/// One host end and what sits behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub index: u32,
    /// `None` for a link that is not an endpoint's (made with [`FakeHost::add_stray_link`]).
    pub netns: Option<PathBuf>,
    pub container_ifname: String,
    pub ips: Vec<IpAddr>,
    pub mtu: u32,
    pub container_mac: [u8; 6],
}

#[derive(Default)]
struct Kernel {
    links: BTreeMap<String, FakeLink>,
    namespaces: BTreeSet<PathBuf>,
    next_index: u32,
    fail_creates: usize,
    forwarding_off: bool,
    created: usize,
    deleted: usize,
}

/// Where a test can stop the fake half-way: while closed, each operation that reaches
/// it announces itself and waits until it is opened.
#[derive(Clone, Default)]
pub struct Gate {
    closed: Arc<Mutex<Option<Arc<Semaphore>>>>,
    reached: Arc<Notify>,
}

impl Gate {
    /// From now on operations stop here.
    pub fn close(&self) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets every waiting operation go on, and stops holding.
    pub fn open(&self) {
        if let Some(gate) = self.closed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// A future that is ready once an operation reached the closed gate. Create it
    /// before starting the operation.
    pub fn reached(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let reached = self.reached.clone();
        async move { reached.notified().await }
    }

    async fn pass(&self) {
        let gate = self
            .closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(gate) = gate {
            self.reached.notify_waiters();
            // Never closed; an error would only mean "go on".
            let _ = gate.acquire().await.map(|p| p.forget());
        }
    }
}

/// The fake kernel. Clones share one state, as clones of a netlink handle share one
/// kernel.
#[derive(Clone, Default)]
pub struct FakeHost {
    kernel: Arc<Mutex<Kernel>>,
    /// Creations stop here once the link exists, before they answer.
    pub create_gate: Gate,
    /// Listings of the endpoint links stop here before they read the links.
    pub list_gate: Gate,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    fn kernel(&self) -> MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A container namespace now exists at `path`.
    pub fn add_netns(&self, path: impl Into<PathBuf>) {
        self.kernel().namespaces.insert(path.into());
    }

    /// The namespace at `path` is gone (the container exited); interfaces in it go
    /// with it, and their host ends with them, as veth pairs do.
    pub fn remove_netns(&self, path: &Path) {
        let mut k = self.kernel();
        k.namespaces.remove(path);
        k.links.retain(|_, l| l.netns.as_deref() != Some(path));
    }

    /// A host link nobody recorded (a leftover of a crash mid-ADD).
    pub fn add_stray_link(&self, name: &str) -> u32 {
        let mut k = self.kernel();
        k.next_index += 1;
        let index = k.next_index + 100;
        k.links.insert(
            name.to_string(),
            FakeLink {
                index,
                netns: None,
                container_ifname: String::new(),
                ips: Vec::new(),
                mtu: 1500,
                container_mac: [2, 0, 0, 0, 0, 1],
            },
        );
        index
    }

    pub fn link(&self, name: &str) -> Option<FakeLink> {
        self.kernel().links.get(name).cloned()
    }

    pub fn link_names(&self) -> Vec<String> {
        self.kernel().links.keys().cloned().collect()
    }

    /// The next `n` creations fail after the link was made (as a failing address or
    /// route would), and undo it.
    pub fn fail_next_creates(&self, n: usize) {
        self.kernel().fail_creates = n;
    }

    /// Turns the forwarding sysctls off (or on again).
    pub fn set_forwarding_off(&self, off: bool) {
        self.kernel().forwarding_off = off;
    }

    /// How many endpoints were created and links deleted so far.
    pub fn counts(&self) -> (usize, usize) {
        let k = self.kernel();
        (k.created, k.deleted)
    }

    fn insert(&self, spec: &VethSpec) -> Result<u32, EndpointError> {
        let mut k = self.kernel();
        if let Some(l) = k.links.get(&spec.host_ifname) {
            return Err(EndpointError::HostLinkExists {
                ifname: spec.host_ifname.clone(),
                index: l.index,
            });
        }
        if spec.netns == Path::new(HOST_NETNS) {
            return Err(EndpointError::HostNamespace {
                path: spec.netns.clone(),
            });
        }
        if !k.namespaces.contains(&spec.netns) {
            return Err(EndpointError::Netns(crate::netns::NetnsError::Open {
                path: spec.netns.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }));
        }
        let taken = k.links.values().any(|l| {
            l.netns.as_deref() == Some(spec.netns.as_path())
                && l.container_ifname == spec.container_ifname
        });
        if taken {
            return Err(EndpointError::ContainerLinkExists {
                ifname: spec.container_ifname.clone(),
                netns: spec.netns.clone(),
            });
        }
        k.next_index += 1;
        let index = k.next_index + 100;
        k.links.insert(
            spec.host_ifname.clone(),
            FakeLink {
                index,
                netns: Some(spec.netns.clone()),
                container_ifname: spec.container_ifname.clone(),
                ips: spec.ips.clone(),
                mtu: spec.mtu,
                container_mac: spec
                    .container_mac
                    .unwrap_or_else(|| default_container_mac(&spec.host_ifname)),
            },
        );
        Ok(index)
    }
}

impl HostNet for FakeHost {
    async fn create_endpoint(&self, spec: &VethSpec) -> Result<VethCreated, EndpointError> {
        let index = self.insert(spec)?;
        self.create_gate.pass().await;
        let fail = {
            let mut k = self.kernel();
            let fail = k.fail_creates > 0;
            if fail {
                k.fail_creates -= 1;
                // The real setup deletes the host end on any failure after creating it.
                k.links.remove(&spec.host_ifname);
            } else {
                k.created += 1;
            }
            fail
        };
        if fail {
            return Err(EndpointError::InvalidSpec {
                reason: "injected failure".into(),
            });
        }
        let link = self
            .link(&spec.host_ifname)
            .ok_or_else(|| EndpointError::InvalidSpec {
                reason: "the link vanished while being created".into(),
            })?;
        Ok(VethCreated {
            host_ifname: spec.host_ifname.clone(),
            host_ifindex: index,
            host_mac: format_mac(&host_mac(&spec.host_ifname)),
            container_ifindex: 2,
            container_mac: format_mac(&link.container_mac),
        })
    }

    async fn check_endpoint(&self, spec: &VethSpec) -> Result<(), CheckError> {
        let mut problems = Vec::new();
        match self.link(&spec.host_ifname) {
            None => problems.push(Problem::LinkMissing {
                side: Side::Host,
                ifname: spec.host_ifname.clone(),
            }),
            Some(l) => {
                if l.netns.as_deref() != Some(spec.netns.as_path())
                    || l.container_ifname != spec.container_ifname
                {
                    problems.push(Problem::LinkMissing {
                        side: Side::Container,
                        ifname: spec.container_ifname.clone(),
                    });
                }
                for ip in &spec.ips {
                    if !l.ips.contains(ip) {
                        problems.push(Problem::AddressMissing {
                            ip: *ip,
                            prefix_len: if ip.is_ipv4() { 32 } else { 128 },
                            ifname: spec.container_ifname.clone(),
                        });
                    }
                }
                if spec.mtu != 0 && l.mtu != spec.mtu {
                    problems.push(Problem::MtuMismatch {
                        side: Side::Host,
                        ifname: spec.host_ifname.clone(),
                        expected: spec.mtu,
                        actual: l.mtu,
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CheckError::Mismatch {
                host_ifname: spec.host_ifname.clone(),
                problems,
            })
        }
    }

    async fn delete_link(&self, name: &str) -> Result<(), EndpointError> {
        let mut k = self.kernel();
        if k.links.remove(name).is_some() {
            k.deleted += 1;
        }
        Ok(())
    }

    async fn delete_links(&self, names: &[String]) -> Result<(), EndpointError> {
        for name in names {
            self.delete_link(name).await?;
        }
        Ok(())
    }

    async fn endpoint_links(&self) -> Result<Vec<(String, u32)>, EndpointError> {
        self.list_gate.pass().await;
        Ok(self
            .kernel()
            .links
            .iter()
            .filter(|(name, _)| crate::endpoint::is_host_ifname(name))
            .map(|(name, l)| (name.clone(), l.index))
            .collect())
    }

    fn netns_state(&self, path: &Path) -> NetnsState {
        if path == Path::new(HOST_NETNS) {
            NetnsState::Host
        } else if self.kernel().namespaces.contains(path) {
            NetnsState::Usable
        } else {
            NetnsState::Missing
        }
    }

    fn forwarding_problems(&self) -> Vec<String> {
        if self.kernel().forwarding_off {
            vec!["IPv4 forwarding is off".into()]
        } else {
            Vec::new()
        }
    }
}
