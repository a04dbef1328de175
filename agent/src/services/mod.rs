//! Services: virtual IPs for groups of endpoints, balanced in strait's own eBPF
//! (docs/services.md).
//!
//! - [`pool`]: where cluster IPs and node ports come from;
//! - [`store`]: the service and EndpointSlice objects, and the claims that keep each
//!   cluster IP and node port to one service;
//! - [`reconcile`]: from services, slices and endpoints to the frontends this node
//!   serves and their Maglev tables, held in a [`dataplane::ServiceDataplane`];
//! - [`hostports`]: the endpoints' host ports (CNI `portMappings`) as frontends;
//! - [`datapath`]: the socket-level balancer in eBPF that holds them;
//! - [`health`]: the active checks that hold failing backends out of the tables.

pub mod datapath;
pub mod dataplane;
pub mod health;
pub mod hostports;
pub mod pool;
pub mod reconcile;
pub mod store;
pub mod trace;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_api::policy_wire::TranslationEvent;
use strait_api::services::ServiceView;
use strait_services::frontends::EndpointView;
use strait_services::model::{EndpointSlice, Protocol, Service};
use tokio::sync::watch;
use tracing::warn;

use crate::store::{KeyValue, Store};
use dataplane::ServiceDataplane;
use hostports::HostPortEndpoint;
use reconcile::{Inputs, Plan, Reconciler};
use store::ServiceStore;

/// Changes arriving within this of each other are planned once.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A frontend the datapath refused is tried again this often.
const RETRY: Duration = Duration::from_secs(5);

/// Services on this node: the objects (apply, list, get, delete) and the loop that
/// holds the datapath to them. Cheap to clone.
#[derive(Clone)]
pub struct ServicesAgent {
    store: ServiceStore,
    shared: Arc<Mutex<Shown>>,
}

/// Per planned frontend: installed as planned, and the datapath's refusal if any.
type States = BTreeMap<dataplane::FrontendKey, (bool, Option<String>)>;

/// What `netctl service list` shows: the inputs and plan last applied, with the
/// reconciler's view of what the datapath holds.
#[derive(Default)]
struct Shown {
    views: Vec<ServiceView>,
    dataplane: Option<Arc<dyn ServiceDataplane>>,
    /// The last plan and what it was made from, with each frontend's state in the
    /// datapath: what a trace reads.
    last: Option<(Inputs, Plan, States)>,
    node: String,
}

impl ServicesAgent {
    pub fn new(store: Arc<dyn Store>, pools: Vec<ipnet::IpNet>) -> Self {
        Self {
            store: ServiceStore::new(store, pools),
            shared: Arc::default(),
        }
    }

    pub fn objects(&self) -> &ServiceStore {
        &self.store
    }

    /// Every service as this node serves it (as of the last reconciliation), with
    /// each backend's connection count read from the datapath now.
    pub fn views(&self) -> Vec<ServiceView> {
        let (mut views, dp, keys) = {
            let shown = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            // A view names its frontend as the plan's frontend prints itself.
            let keys: BTreeMap<String, dataplane::FrontendKey> = shown
                .last
                .iter()
                .flat_map(|(_, plan, _)| plan.frontends.iter())
                .map(|(k, p)| (p.resolved.frontend.to_string(), *k))
                .collect();
            (shown.views.clone(), shown.dataplane.clone(), keys)
        };
        let Some(dp) = dp else {
            return views;
        };
        let counts = dp.backend_connections();
        for f in views.iter_mut().flat_map(|v| v.frontends.iter_mut()) {
            let Some(key) = keys.get(&f.frontend) else {
                continue;
            };
            for b in &mut f.backends {
                b.connections = counts.get(&(*key, b.address, b.port)).copied().unwrap_or(0);
            }
        }
        views
    }

    /// The datapath's translations as they happen (`netctl monitor`); `None`
    /// without a datapath.
    pub fn translations(&self) -> Option<tokio::sync::broadcast::Receiver<datapath::Translation>> {
        let dp = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dataplane
            .clone();
        dp?.translations()
    }

    /// A translation as `netctl monitor` shows it: the service and port it went
    /// to by this node's plan, the client's process name.
    pub fn name_translation(&self, t: &datapath::Translation) -> TranslationEvent {
        let key = dataplane::FrontendKey {
            addr: t.frontend.ip(),
            port: t.frontend.port(),
            protocol: match t.proto {
                datapath::Protocol::Tcp => Protocol::TCP,
                datapath::Protocol::Udp => Protocol::UDP,
            },
        };
        let (node, named) = {
            let shown = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            let named = shown
                .last
                .as_ref()
                .and_then(|(_, plan, _)| plan.frontends.get(&key))
                .map(|p| (p.resolved.service.clone(), p.resolved.port_name.clone()));
            (shown.node.clone(), named)
        };
        let (service, port_name) = match named {
            Some((s, p)) => (Some(s), (!p.is_empty()).then_some(p)),
            None => (None, None),
        };
        TranslationEvent {
            time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            node,
            via: match t.kind {
                datapath::TranslationKind::Connect => "socket",
                datapath::TranslationKind::Sendmsg => "sendmsg",
                datapath::TranslationKind::Nat => "nat",
                datapath::TranslationKind::NatSnat => "nat-snat",
            }
            .into(),
            protocol: match t.proto {
                datapath::Protocol::Tcp => "tcp",
                datapath::Protocol::Udp => "udp",
            }
            .into(),
            client: t.client,
            pid: t.pid,
            netns_cookie: t.netns_cookie,
            cgroup_id: t.cgroup_id,
            // Best effort: a short-lived client may be gone already.
            command: (t.pid != 0)
                .then(|| std::fs::read_to_string(format!("/proc/{}/comm", t.pid)).ok())
                .flatten()
                .map(|c| c.trim_end().to_string()),
            frontend: t.frontend,
            backend: t.backend,
            service,
            port_name,
        }
    }

    /// Where a connect to `to` (`ADDR:PORT[/udp]`) from this node goes, and why.
    pub fn trace(&self, to: &str) -> Result<strait_api::services::ServiceTrace, String> {
        let key = trace::parse_to(to)?;
        let shown = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let Some((inputs, plan, states)) = &shown.last else {
            return Err("services are not planned yet on this node; try again".into());
        };
        let (installed, error) = states.get(&key).cloned().unwrap_or((false, None));
        trace::trace(&key, inputs, plan, &shown.node, installed, error)
    }

    /// The datapath's counters by reason (empty without one).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let dp = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dataplane
            .clone();
        dp.map(|d| d.counters()).unwrap_or_default()
    }

    /// Follows the store and holds `dp` to it until `stop`. `node_addresses` are the
    /// addresses node ports answer on. Without a datapath the plan is still made and
    /// shown, every frontend reporting `unavailable`.
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        node: String,
        node_addresses: Vec<IpAddr>,
        dp: Result<Arc<dyn ServiceDataplane>, String>,
        stop: watch::Receiver<bool>,
    ) {
        let (svc_tx, mut svc_rx) = watch::channel(None);
        let (slice_tx, mut slice_rx) = watch::channel(None);
        let (ep_tx, mut ep_rx) = watch::channel(None);
        let followers = [
            tokio::spawn(crate::store::follow::follow(
                store.clone(),
                store::services_prefix(),
                |kv: &KeyValue| usable_service(kv),
                svc_tx,
                stop.clone(),
            )),
            tokio::spawn(crate::store::follow::follow(
                store.clone(),
                store::slices_prefix(),
                |kv: &KeyValue| usable_slice(kv),
                slice_tx,
                stop.clone(),
            )),
            tokio::spawn(crate::store::follow::follow(
                store.clone(),
                crate::policy::endpoints::all_endpoints_prefix(),
                |kv: &KeyValue| endpoint_view(kv),
                ep_tx,
                stop.clone(),
            )),
        ];
        let mut reconciler = dp.as_ref().ok().map(|dp| Reconciler::new(dp.clone()));
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dataplane = dp.as_ref().ok().cloned();
        let unavailable = dp.err();
        let mut stop = stop;
        let mut retry = tokio::time::interval(RETRY);
        // Whether the datapath refused a frontend of the last plan: only then does
        // the retry tick plan again (nothing else changes between events).
        let mut refusals = false;
        let mut checker = health::Checker::new();
        let mut verdicts = checker.subscribe();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = verdicts.changed() => if r.is_err() { break },
                r = svc_rx.changed() => if r.is_err() { break },
                r = slice_rx.changed() => if r.is_err() { break },
                r = ep_rx.changed() => if r.is_err() { break },
                _ = retry.tick() => if !refusals { continue },
            }
            tokio::time::sleep(DEBOUNCE).await;
            let (Some(services), Some(slices), Some(endpoints)) = (
                svc_rx.borrow_and_update().clone(),
                slice_rx.borrow_and_update().clone(),
                ep_rx.borrow_and_update().clone(),
            ) else {
                continue;
            };
            let inputs = Inputs {
                services: services
                    .into_values()
                    .map(|s: Service| (s.id(), s))
                    .collect(),
                slices: slices
                    .into_values()
                    .map(|s: EndpointSlice| (s.id(), s))
                    .collect(),
                host_ports: endpoints
                    .values()
                    .filter_map(|(_, hp)| hp.clone())
                    .collect(),
                endpoints: endpoints.into_values().map(|(ep, _)| ep).collect(),
                down: checker.down(),
            };
            let plan = reconcile::plan(&inputs, &node, &node_addresses);
            checker.set(health_targets(&inputs, &plan));
            let (views, states) = match reconciler.as_mut() {
                Some(r) => {
                    r.apply(&plan);
                    let states: BTreeMap<_, _> = plan
                        .frontends
                        .iter()
                        .map(|(k, p)| (*k, r.state(k, &p.entry)))
                        .collect();
                    refusals = states.values().any(|(installed, _)| !installed);
                    (r.views(&inputs, &plan), states)
                }
                None => {
                    let why = format!(
                        "no services datapath: {}",
                        unavailable.as_deref().unwrap_or("not loaded")
                    );
                    let states = plan
                        .frontends
                        .keys()
                        .map(|k| (*k, (false, Some(why.clone()))))
                        .collect();
                    (
                        unavailable_views(&inputs, &plan, unavailable.as_deref()),
                        states,
                    )
                }
            };
            let mut shown = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            shown.views = views;
            shown.node = node.clone();
            shown.last = Some((inputs, plan, states));
        }
        for f in followers {
            f.abort();
        }
    }
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host): where the socket balancer attaches by
/// default, so that every process of the host and its containers is served.
pub fn cgroup2_root() -> Result<std::path::PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("reading /proc/self/mounts: {e}"))?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .and_then(|f| f.get(1).map(std::path::PathBuf::from))
        .ok_or_else(|| {
            "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup); give              --service-cgroup DIR or none"
                .to_string()
        })
}

/// Every candidate backend of a frontend whose service asks for a health check
/// (candidates, not only the usable ones: a backend held down must be checked to come
/// back).
fn health_targets(inputs: &Inputs, plan: &Plan) -> BTreeMap<health::CheckKey, health::Target> {
    let mut targets = BTreeMap::new();
    // A frontend of the service's first TCP port is where each address is checked.
    for p in plan.frontends.values() {
        let first_tcp = inputs
            .services
            .get(&p.resolved.service)
            .and_then(|s| s.ports.iter().find(|port| port.protocol == Protocol::TCP));
        if first_tcp.map(|port| &port.name) != Some(&p.resolved.port_name)
            || p.resolved.frontend.protocol != Protocol::TCP
        {
            continue;
        }
        let Some(check) = inputs
            .services
            .get(&p.resolved.service)
            .and_then(|s| s.health_check.clone())
        else {
            continue;
        };
        for b in &p.resolved.backends {
            targets.insert(
                (p.resolved.service.clone(), b.addr),
                health::Target {
                    addr: std::net::SocketAddr::new(b.addr, b.port),
                    check: check.clone(),
                },
            );
        }
    }
    targets
}

/// The views when there is no datapath: planned, nothing installed, and why.
fn unavailable_views(inputs: &Inputs, plan: &Plan, why: Option<&str>) -> Vec<ServiceView> {
    let r = Reconciler::new(Arc::new(dataplane::Fake::default()));
    let mut views = r.views(inputs, plan);
    for f in views.iter_mut().flat_map(|v| v.frontends.iter_mut()) {
        f.installed = false;
        f.error.get_or_insert_with(|| {
            format!("no services datapath: {}", why.unwrap_or("not loaded"))
        });
    }
    views
}

fn usable_service(kv: &KeyValue) -> Option<Service> {
    match store::decode_service(&kv.key, &kv.value) {
        Ok(v) => Some(v.service),
        Err(e) => {
            warn!(error = %e, "skipping a service");
            None
        }
    }
}

fn usable_slice(kv: &KeyValue) -> Option<EndpointSlice> {
    match store::decode_slice(&kv.key, &kv.value) {
        Ok(v) => Some(v.slice),
        Err(e) => {
            warn!(error = %e, "skipping an EndpointSlice");
            None
        }
    }
}

/// An endpoint record as services see it, with its host ports if it has any.
/// Endpoints are ready while they exist (the runtime made them for a running
/// container); the health checks add the rest.
fn endpoint_view(kv: &KeyValue) -> Option<(EndpointView, Option<HostPortEndpoint>)> {
    let r = crate::attach::records::schema::decode(&kv.key, &kv.value).ok()?;
    let host_ports = (!r.port_mappings.is_empty()).then(|| HostPortEndpoint {
        id: format!("{}/{}", r.node, r.id),
        node: r.node.clone(),
        addresses: r.ips.iter().map(|n| n.addr()).collect(),
        mappings: r.port_mappings.clone(),
    });
    let f = crate::policy::endpoints::decode(&kv.key, &kv.value).ok()?;
    let view = EndpointView {
        id: format!("{}/{}", f.node, f.id),
        namespace: f.namespace,
        labels: f.labels,
        addresses: f.ips.iter().map(|n| n.addr()).collect(),
        named_ports: f
            .named_ports
            .iter()
            .filter_map(|p| {
                let protocol = match p.protocol {
                    strait_policy::ir::Protocol::TCP => Protocol::TCP,
                    strait_policy::ir::Protocol::UDP => Protocol::UDP,
                    _ => return None,
                };
                Some((p.name.clone(), protocol, p.port))
            })
            .collect(),
        node: f.node,
        ready: true,
    };
    Some((view, host_ports))
}
