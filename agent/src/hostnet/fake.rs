//! An in-memory kernel for unit tests of what is built on [`HostNet`].
//!
//! Over 600 lines because it fakes every operation of [`HostNet`], the endpoints' and
//! the fabric's, against one kernel state; split, the halves would share that state.
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

use super::{Answer, GatewayChange, HostNet, NetnsState};
use crate::endpoint::{
    CheckError, EndpointError, HostEnd, Problem, Side, VethCreated, VethSpec,
    default_container_mac, host_mac, verdict,
};
use crate::netlink::{
    Address, FdbEntry, GatewayRoute, Link, Neighbour, NetlinkError, Route, Vxlan, VxlanSpec,
    format_mac,
};

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
    /// The alias: the owner mark of [`VethSpec::owner`].
    pub alias: Option<String>,
}

/// A link that is not an endpoint's: the underlay, the VXLAN device.
#[derive(Debug, Clone)]
struct Device {
    link: Link,
    /// VNI, port, local address and learning, for a VXLAN device.
    vxlan: Option<(u32, u16, IpAddr, bool)>,
}

impl Kernel {
    /// A new link other than an endpoint's, down, MTU 1500, with a MAC of its own (the
    /// kernel's would be random; the agent sets the one it wants).
    fn new_device(&mut self, name: &str, vxlan: Option<(u32, u16, IpAddr, bool)>) -> u32 {
        self.next_index += 1;
        let index = self.next_index;
        let link = Link {
            index,
            name: name.to_string(),
            mac: Some([0x0a, 0xbb, 0, 0, 0, index as u8]),
            mtu: 1500,
            up: false,
            link: None,
            kind: vxlan.map(|_| "vxlan".to_string()),
            alias: None,
        };
        self.devices.insert(index, Device { link, vxlan });
        index
    }
}

#[derive(Default)]
struct Kernel {
    /// Endpoint host ends, by name.
    links: BTreeMap<String, FakeLink>,
    /// Other links, by index.
    devices: BTreeMap<u32, Device>,
    addresses: BTreeSet<(u32, IpAddr, u8)>,
    /// The main table.
    routes: Vec<Route>,
    fdb: BTreeMap<u32, Vec<FdbEntry>>,
    neighbours: BTreeMap<u32, Vec<Neighbour>>,
    /// Multipath gateway routes, by destination.
    gateway_routes: BTreeMap<ipnet::IpNet, GatewayRoute>,
    /// Gateway route changes still to refuse (EHOSTUNREACH, as for an unreachable
    /// next hop).
    refuse_gateway_changes: usize,
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

    /// A host link nobody recorded (a leftover of a crash mid-ADD), with no owner mark.
    pub fn add_stray_link(&self, name: &str) -> u32 {
        self.add_marked_stray_link(name, None)
    }

    /// A host link nobody recorded whose alias is `alias` (an owner mark: another
    /// agent's, or this one's left by a crash).
    pub fn add_marked_stray_link(&self, name: &str, alias: Option<&str>) -> u32 {
        let mut k = self.kernel();
        k.next_index += 1;
        let index = k.next_index;
        k.links.insert(
            name.to_string(),
            FakeLink {
                index,
                netns: None,
                container_ifname: String::new(),
                ips: Vec::new(),
                mtu: 1500,
                container_mac: [2, 0, 0, 0, 0, 1],
                alias: alias.map(str::to_string),
            },
        );
        index
    }

    /// A plain link (an underlay interface), up, with `addresses`; returns its index.
    pub fn add_device(&self, name: &str, mtu: u32, addresses: &[(IpAddr, u8)]) -> u32 {
        let mut k = self.kernel();
        let index = k.new_device(name, None);
        if let Some(d) = k.devices.get_mut(&index) {
            (d.link.mtu, d.link.up) = (mtu, true);
        }
        for (ip, len) in addresses {
            k.addresses.insert((index, *ip, *len));
        }
        index
    }

    /// Routes of the main table, as `ip route` would list them.
    pub fn routes(&self) -> Vec<Route> {
        self.kernel().routes.clone()
    }

    /// Adds a route as another program would.
    pub fn add_route(&self, route: Route) {
        self.kernel().routes.push(route);
    }

    /// The gateway routes, as `ip route` would list them.
    pub fn gateway_route_table(&self) -> Vec<GatewayRoute> {
        self.kernel().gateway_routes.values().cloned().collect()
    }

    /// Someone else changes the table: `route` is added, or replaces its destination's.
    pub fn put_gateway_route(&self, route: GatewayRoute) {
        self.kernel()
            .gateway_routes
            .insert(route.destination, route);
    }

    /// Someone else deletes the gateway route to `destination`.
    pub fn remove_gateway_route(&self, destination: ipnet::IpNet) {
        self.kernel().gateway_routes.remove(&destination);
    }

    /// The next `n` gateway route changes are refused.
    pub fn refuse_gateway_changes(&self, n: usize) {
        self.kernel().refuse_gateway_changes = n;
    }

    pub fn fdb_of(&self, index: u32) -> Vec<FdbEntry> {
        self.kernel().fdb.get(&index).cloned().unwrap_or_default()
    }

    pub fn neighbours_of(&self, index: u32) -> Vec<Neighbour> {
        self.kernel()
            .neighbours
            .get(&index)
            .cloned()
            .unwrap_or_default()
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

    fn all_links(&self) -> Vec<Link> {
        let k = self.kernel();
        let mut out: Vec<Link> = k.devices.values().map(|d| d.link.clone()).collect();
        out.extend(k.links.iter().map(|(name, l)| Link {
            index: l.index,
            name: name.clone(),
            mac: Some(host_mac(name)),
            mtu: l.mtu,
            up: true,
            link: Some(2),
            kind: Some("veth".into()),
            alias: l.alias.clone(),
        }));
        out
    }

    /// Runs `f` on device `index`, or answers ENODEV as the kernel does.
    fn on_device<T>(
        &self,
        op: &'static str,
        index: u32,
        f: impl FnOnce(&mut Device) -> T,
    ) -> Answer<T> {
        match self.kernel().devices.get_mut(&index) {
            Some(d) => Ok(f(d)),
            None => Err(refused(op, index, libc::ENODEV)),
        }
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
        let index = k.next_index;
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
                alias: spec.owner.clone(),
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
        verdict(spec, problems)
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

    async fn endpoint_links(&self) -> Result<Vec<HostEnd>, EndpointError> {
        self.list_gate.pass().await;
        Ok(self
            .kernel()
            .links
            .iter()
            .filter(|(name, _)| crate::endpoint::is_host_ifname(name))
            .map(|(name, l)| HostEnd::new(name.clone(), l.index, l.alias.as_deref()))
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

    async fn link_by_name(&self, name: &str) -> Answer<Option<Link>> {
        Ok(self.all_links().into_iter().find(|l| l.name == name))
    }

    async fn link_by_index(&self, index: u32) -> Answer<Option<Link>> {
        Ok(self.all_links().into_iter().find(|l| l.index == index))
    }

    async fn links(&self) -> Answer<Vec<Link>> {
        Ok(self.all_links())
    }

    async fn delete_link_index(&self, index: u32) -> Answer<()> {
        let mut k = self.kernel();
        if k.devices.remove(&index).is_none() {
            return Err(refused("delete link", index, libc::ENODEV));
        }
        // Everything through the link goes with it.
        k.addresses.retain(|(i, _, _)| *i != index);
        k.routes.retain(|r| r.oif != Some(index));
        k.fdb.remove(&index);
        k.neighbours.remove(&index);
        k.deleted += 1;
        Ok(())
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Answer<()> {
        self.on_device("set mtu", index, |d| d.link.mtu = mtu)
    }

    async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Answer<()> {
        self.on_device("set mac", index, |d| d.link.mac = Some(mac))
    }

    async fn set_up(&self, index: u32) -> Answer<()> {
        self.on_device("set up", index, |d| d.link.up = true)
    }

    async fn vxlan_by_name(&self, name: &str) -> Answer<Option<Vxlan>> {
        let k = self.kernel();
        Ok(k.devices
            .values()
            .find(|d| d.link.name == name)
            .map(|d| Vxlan {
                link: d.link.clone(),
                vni: d.vxlan.map(|v| v.0),
                port: d.vxlan.map(|v| v.1),
                local: d.vxlan.map(|v| v.2),
                learning: d.vxlan.is_some_and(|v| v.3),
            }))
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Answer<()> {
        let mut k = self.kernel();
        let taken = k.devices.values().any(|d| d.link.name == spec.name)
            || k.links.contains_key(&spec.name);
        if taken {
            return Err(refused("create vxlan", &spec.name, libc::EEXIST));
        }
        k.new_device(&spec.name, Some((spec.vni, spec.port, spec.local, false)));
        Ok(())
    }

    async fn disable_ipv6_addrgen(&self, index: u32) -> Answer<()> {
        self.on_device("set addrgenmode", index, |_| ())
    }

    async fn addresses(&self, index: u32) -> Answer<Vec<Address>> {
        Ok(self
            .kernel()
            .addresses
            .iter()
            .filter(|(i, _, _)| *i == index)
            .map(|&(index, ip, prefix_len)| Address {
                index,
                ip,
                prefix_len,
            })
            .collect())
    }

    async fn all_addresses(&self) -> Answer<Vec<Address>> {
        Ok(self
            .kernel()
            .addresses
            .iter()
            .map(|&(index, ip, prefix_len)| Address {
                index,
                ip,
                prefix_len,
            })
            .collect())
    }

    async fn add_address(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Answer<()> {
        if !self.kernel().addresses.insert((index, ip, prefix_len)) {
            return Err(refused("add address", ip, libc::EEXIST));
        }
        Ok(())
    }

    async fn del_address(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Answer<()> {
        if !self.kernel().addresses.remove(&(index, ip, prefix_len)) {
            return Err(refused("delete address", ip, libc::EADDRNOTAVAIL));
        }
        Ok(())
    }

    async fn main_routes(&self) -> Answer<Vec<Route>> {
        Ok(self.kernel().routes.clone())
    }

    async fn routes_of(&self, protocol: u8) -> Answer<Vec<Route>> {
        Ok(self
            .kernel()
            .routes
            .iter()
            .filter(|r| r.protocol == protocol)
            .cloned()
            .collect())
    }

    async fn replace_route(&self, route: &Route) -> Answer<()> {
        let mut k = self.kernel();
        // A route's identity in a table: its destination and metric.
        k.routes
            .retain(|r| !(r.destination == route.destination && r.metric == route.metric));
        k.routes.push(route.clone());
        Ok(())
    }

    async fn del_route(&self, route: &Route) -> Answer<()> {
        let mut k = self.kernel();
        let Some(at) = k
            .routes
            .iter()
            .position(|r| r.destination == route.destination && r.metric == route.metric)
        else {
            return Err(refused("delete route", route.destination, libc::ESRCH));
        };
        k.routes.remove(at);
        Ok(())
    }

    async fn fdb(&self, index: u32) -> Answer<Vec<FdbEntry>> {
        Ok(self.fdb_of(index))
    }

    async fn replace_fdb(&self, index: u32, entry: &FdbEntry) -> Answer<()> {
        let mut k = self.kernel();
        if !k.devices.contains_key(&index) {
            return Err(refused("replace fdb", index, libc::ENODEV));
        }
        let table = k.fdb.entry(index).or_default();
        table.retain(|e| e.mac != entry.mac);
        table.push(*entry);
        Ok(())
    }

    async fn del_fdb(&self, index: u32, entry: &FdbEntry) -> Answer<()> {
        let mut k = self.kernel();
        let table = k.fdb.entry(index).or_default();
        let before = table.len();
        table.retain(|e| e != entry);
        if table.len() == before {
            return Err(refused("delete fdb", entry, libc::ENOENT));
        }
        Ok(())
    }

    async fn neighbours(&self, index: u32) -> Answer<Vec<Neighbour>> {
        Ok(self.neighbours_of(index))
    }

    async fn set_permanent_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Answer<()> {
        let mut k = self.kernel();
        if !k.devices.contains_key(&index) {
            return Err(refused("set neighbour", ip, libc::ENODEV));
        }
        let table = k.neighbours.entry(index).or_default();
        table.retain(|n| n.ip != ip);
        table.push(Neighbour {
            index,
            ip,
            mac: Some(mac),
            permanent: true,
        });
        Ok(())
    }

    async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Answer<()> {
        let mut k = self.kernel();
        let table = k.neighbours.entry(index).or_default();
        let before = table.len();
        table.retain(|n| n.ip != ip);
        if table.len() == before {
            return Err(refused("delete neighbour", ip, libc::ENOENT));
        }
        Ok(())
    }

    async fn gateway_routes(&self, protocol: u8) -> Answer<Vec<GatewayRoute>> {
        Ok(self
            .kernel()
            .gateway_routes
            .values()
            .filter(|r| r.protocol == protocol)
            .cloned()
            .collect())
    }

    async fn change_gateway_routes(&self, changes: Vec<GatewayChange>) -> Answer<Vec<Answer<()>>> {
        let mut k = self.kernel();
        Ok(changes
            .into_iter()
            .map(|change| {
                if k.refuse_gateway_changes > 0 {
                    k.refuse_gateway_changes -= 1;
                    let r = match &change {
                        GatewayChange::Replace(r) | GatewayChange::Delete(r) => r.destination,
                    };
                    return Err(refused("change route", r, libc::EHOSTUNREACH));
                }
                match change {
                    GatewayChange::Replace(r) => {
                        k.gateway_routes.insert(r.destination, r);
                        Ok(())
                    }
                    GatewayChange::Delete(r) => match k.gateway_routes.get(&r.destination) {
                        Some(installed) if *installed == r => {
                            k.gateway_routes.remove(&r.destination);
                            Ok(())
                        }
                        _ => Err(refused("delete route", r.destination, libc::ESRCH)),
                    },
                }
            })
            .collect())
    }
}

/// The kernel's refusal of `op` on `object`.
fn refused(op: &'static str, object: impl std::fmt::Display, errno: i32) -> NetlinkError {
    NetlinkError::Kernel {
        op,
        object: object.to_string(),
        errno,
    }
}
