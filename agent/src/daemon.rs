//! Wiring: opens the store, builds the owners (IPAM, netlink, attacher), serves the API,
//! runs start-up work and the periodic loops, and stops on SIGTERM/SIGINT.
//!
//! Start-up order matters. The socket is bound first so the CNI plugin gets "try again
//! later" (code 11) instead of "agent down" while the agent adopts what it finds;
//! readiness flips only after stale links are swept and queued releases are applied.
//! Shutdown flushes nothing: interfaces, routes and records stay, and the next agent
//! adopts them, so containers keep their connectivity across a restart. The node lease
//! is not revoked either: other hosts keep their routes to this one until it expires.
//!
//! With `--etcd-endpoints` the store is etcd. An etcd that is down at start is waited
//! for like a locked embedded store (ADD answers "try again later" meanwhile); one that
//! goes away later only makes store-bound calls fail with "try again later" and STATUS
//! report it. Nothing is torn down on store errors, and every part recovers by itself
//! when etcd is back (the client reconnects; the registry re-registers if its lease
//! expired).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use strait_api::bgp::{BgpRole, NodeBgp};
use strait_api::{FabricMode, FastPathMode, NodeRecord};

use crate::api::{self, AgentFacts, AppState, Owners};
use crate::attach::{Attacher, AttacherConfig};
use crate::config::AgentConfig;
use crate::fabric::bgp::external::ExternalPeers;
use crate::fabric::bgp::{BgpFabric, BgpFabricConfig};
use crate::fabric::{Fabric, FabricConfig, vxlan_mtu};
use crate::fastpath::FastPath;
use crate::ipam::Ipam;
use crate::ipam::reclaim::{ReclaimConfig, Reclaimer};
use crate::ipam::tunnel::{TunnelAddrs, ensure_tunnel_addresses};
use crate::metrics::Metrics;
use crate::netlink::{Netlink, format_mac};
use crate::node::{FabricInfo, Keepalive, Registry, RegistryConfig, Underlay};
use crate::policy::datapath::PolicyDatapath;
use crate::policy::host::OnHost;
use crate::policy::{PolicyAgent, PolicyConfig};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::{EtcdOptions, EtcdStore};

mod lock;
mod notify;

/// How often the agent sweeps stale links and runs its leak GC.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    make_state_private(&cfg)?;
    // Before anything is bound or swept: a second agent stops here (docs: one per host).
    let _locks = lock::acquire(&cfg.state_dir)?;

    for w in cfg.warnings() {
        warn!("{w}");
    }

    // ----- serve first: CNI calls get "try again later" while we start -----
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState::new(
        AgentFacts {
            fabric_mode: cfg.fabric,
            node: cfg.node_name.clone(),
            store_description: cfg.store_description(),
            state_dir: cfg.state_dir.clone(),
            pools: cfg.pools.clone(),
        },
        metrics.clone(),
    ));
    state.set_phase("opening the store");
    let listener = api::bind(&cfg.socket)?;
    info!(socket = %cfg.socket.display(), node = %cfg.node_name, "serving the local API");
    // Beside the socket, and left there when we stop: a DEL made while no agent runs
    // finds the queue we drain whatever stateDir the network config names.
    if let Err(e) = strait_api::queue::write_locator(&cfg.socket, &cfg.state_dir) {
        warn!(error = %e, "writing the DEL queue's locator beside the socket");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(api::serve(listener, state.clone(), async move {
        let _ = api_stop.wait_for(|s| *s).await;
    }));
    if let Some(addr) = cfg.metrics_addr {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics address {addr}"))?;
        let router = api::metrics_router(state.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(tcp, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        info!(%addr, "serving metrics");
    }

    let started = tokio::select! {
        r = start(&cfg, &state, stop_rx.clone()) => match r {
            Ok(running) => Some(running),
            Err(e) => {
                // Nobody will serve the socket: a plugin that found the file would take
                // the agent for alive (and not queue its DEL) until a new one binds.
                let _ = stop_tx.send(true);
                let _ = std::fs::remove_file(&cfg.socket);
                return Err(e);
            }
        },
        _ = wait_for_signal() => None,
    };
    if let Some(running) = started {
        // Other agents' `netctl doctor --all-nodes` reach this one through the store.
        let doctor = state.doctor().cloned().map(|d| {
            tokio::spawn(crate::doctor::exchange::answer(
                d,
                state.clone(),
                stop_rx.clone(),
            ))
        });
        let housekeeping = tokio::spawn(housekeeping(
            running.attacher.clone(),
            metrics.clone(),
            cfg.state_dir.clone(),
            stop_rx.clone(),
        ));
        wait_for_signal().await;
        housekeeping.abort();
        if let Some(t) = doctor {
            t.abort();
        }
        running.reclaimer.abort();
        running.fabric.abort();
        if let Some(t) = running.fast_path {
            t.abort();
        }
        // The programs and pinned maps stay: the next agent adopts them.
        if let Some(t) = running.docker {
            t.abort();
        }
        for t in running.policy {
            t.abort();
        }
        // The SAs end with the engine; the steering stays, so until the next agent
        // has new SAs, traffic to encrypted peers is dropped, never sent in clear.
        for t in running.ipsec {
            t.abort();
        }
        // The socket balancer stays attached with its maps: connects to services go on
        // being translated until the next agent adopts them.
        running.services.abort();
        for t in running.kube {
            t.abort();
        }
        if let Some(bgp) = running.bgp {
            // The speaker itself is stopped below, for a restart (no Cease).
            bgp.abort();
        }
        // Stops refreshing; the lease is left to expire, never revoked.
        drop(running.keepalive);
    }

    info!("stopping; interfaces, routes and records stay in place for the next agent");
    notify::stopping();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), api_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "API server"),
        Ok(Err(e)) => warn!(error = %e, "API task"),
        Err(_) => warn!("API server did not stop within 10 s"),
    }
    // The socket file goes with the agent; a CNI DEL now queues on disk.
    let _ = std::fs::remove_file(&cfg.socket);
    // dockerd finds no plugin until the next agent binds it again (and retries).
    if let Some(d) = &cfg.docker {
        let _ = std::fs::remove_file(&d.socket);
        if let Some(spec) = &d.spec_file {
            let _ = std::fs::remove_file(spec);
        }
    }
    // Shutdown never withdraws this node's routes: the sessions close without a
    // NOTIFICATION and BFD ends with AdminDown, so peers keep the routes for the
    // graceful-restart time (RFC 4724) until the next agent is back. Once stopped,
    // dropping the speaker with the state sends nothing.
    if let Some(bgp) = state.owners().and_then(|o| o.bgp.as_ref()) {
        bgp.shutdown_for_restart().await;
    }
    drop(state);
    Ok(())
}

/// What runs once the agent has started.
struct Running {
    attacher: Arc<Attacher>,
    /// The node lease's keep-alive loop.
    keepalive: Keepalive,
    reclaimer: tokio::task::JoinHandle<()>,
    /// The fabric's reconcile loop; it stops with the stop signal and flushes nothing.
    fabric: tokio::task::JoinHandle<()>,
    /// The BGP fabric's loops (`--fabric bgp`).
    bgp: Option<tokio::task::JoinHandle<()>>,
    /// The fast path's watch on the host (DNAT rules, shaped veths).
    fast_path: Option<tokio::task::JoinHandle<()>>,
    /// Policy's reconcile loop, its conntrack GC and its event forwarder.
    policy: Vec<tokio::task::JoinHandle<()>>,
    /// The Docker plugin's server (`--docker-plugin`); it stops with the stop signal.
    docker: Option<tokio::task::JoinHandle<()>>,
    /// IPsec's mode follower and engine.
    ipsec: Vec<tokio::task::JoinHandle<()>>,
    /// Services' reconcile loop; the socket balancer's programs and maps stay.
    services: tokio::task::JoinHandle<()>,
    /// The Kubernetes integration's watches and loops (`--kubeconfig`).
    kube: Vec<tokio::task::JoinHandle<()>>,
}

/// The state dir and the pending-release queue 0700, the embedded store 0600: created
/// so, or tightened (and logged) when an earlier agent or an operator left them looser.
fn make_state_private(cfg: &AgentConfig) -> anyhow::Result<()> {
    for dir in [cfg.state_dir.clone(), cfg.pending_release_dir()] {
        let had = crate::private::dir(&dir)
            .with_context(|| format!("making the state dir {} private", dir.display()))?;
        if let Some(mode) = had {
            warn!(dir = %dir.display(), from = format!("{mode:o}"), to = "700", "tightened the mode of a state directory");
        }
    }
    let store = cfg.store_path();
    let had = crate::private::file(&store)
        .with_context(|| format!("making the store {} private", store.display()))?;
    if let Some(mode) = had {
        warn!(file = %store.display(), from = format!("{mode:o}"), to = "600", "tightened the mode of the store");
    }
    Ok(())
}

/// Everything between "socket bound" and "ready": open the store (waiting for it if
/// it is held, e.g. by an agent still shutting down, or while etcd is unreachable),
/// build the owners, register the node, adopt what the previous agent left, apply
/// queued DELs.
async fn start(
    cfg: &AgentConfig,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    let store: Arc<dyn Store> = open_store(cfg, state).await;
    let kube_client = match &cfg.kube {
        Some(source) => Some(source.client().await?),
        None => None,
    };
    state.set_phase("starting IPAM");
    let mut ipam = Ipam::new(store.clone(), cfg.node_name.clone(), cfg.ipam_config())
        .await
        .context("starting IPAM")?;
    if cfg.ipam_mode == crate::config::IpamMode::Kubernetes
        && let Some(client) = &kube_client
    {
        let ranges = node_pod_cidrs(client, &cfg.node_name, state).await;
        info!(ranges = ?ranges, "IPAM: this node's addresses come from its podCIDRs");
        ipam = ipam.confined_to(ranges).context("--ipam kubernetes")?;
    }
    let ipam = Arc::new(ipam);
    let host = Netlink::connect()
        .context("opening netlink")?
        .with_proc_sys(&cfg.proc_sys_dir);

    state.set_phase("registering the node");
    // Made on the first start; a key file others could read stops the agent here.
    let node_key =
        crate::ipsec::NodeKey::load_or_create(&cfg.state_dir).context("this node's IPsec key")?;
    let underlay = detect_underlay(cfg, &host).await?;
    state.set_doctor(Arc::new(crate::doctor::Doctor::new(
        host.clone(),
        underlay.clone(),
        cfg.socket.clone(),
        cfg.site.clone(),
        cfg.cni.clone(),
    )));
    let bgp = node_bgp(cfg, &underlay)?;
    let tunnel = if cfg.fabric == FabricMode::Vxlan {
        state.set_phase("allocating tunnel addresses");
        tunnel_addresses(&ipam, state).await
    } else {
        TunnelAddrs::default()
    };
    let registry = Registry::new(
        store.clone(),
        RegistryConfig {
            lease_ttl: Duration::from_secs(cfg.node_lease_ttl_secs),
        },
        node_record(cfg, &underlay, bgp.clone(), &node_key),
    );
    // Until registered, this only updates the record.
    let _ = registry
        .set_fabric_info(FabricInfo {
            vtep_mac: vtep_mac(cfg),
            tunnel_v4: tunnel.v4,
            tunnel_v6: tunnel.v6,
        })
        .await;
    let keepalive = registry.spawn();
    let kube_lease = registry.subscribe_lease();
    let reclaimer = tokio::spawn(
        Reclaimer::new(
            ipam.clone(),
            registry.subscribe_lease(),
            ReclaimConfig::with_grace(Duration::from_secs(cfg.block_reclaim_grace_secs)),
        )
        .run(stop.clone()),
    );

    let mtu = container_mtu(cfg, &host, &underlay).await;
    let ipsec_datapath = crate::ipsec::datapath::DatapathSettings {
        choice: cfg.ipsec.datapath,
        port: strait_esp::encap::NAT_T_PORT,
        underlay_mtu: underlay_mtu(&host, &underlay).await,
        queues: 0,
        outer_ipv6: underlay.v4.is_none(),
    };
    // What new containers' MTU is reduced by while IPsec encrypts; the engine sets it.
    let mtu_less = Arc::new(std::sync::atomic::AtomicU32::new(0));

    // Node ports answer on the node's underlay addresses.
    let node_addresses: Vec<std::net::IpAddr> = underlay
        .v4
        .map(std::net::IpAddr::V4)
        .into_iter()
        .chain(underlay.v6.map(std::net::IpAddr::V6))
        .collect();
    let services_net = services_net(&host, &underlay).await;
    let mut fabric_cfg = FabricConfig::new(&cfg.node_name, cfg.fabric, underlay);
    fabric_cfg.vni = cfg.vxlan_vni;
    fabric_cfg.port = cfg.vxlan_port;
    let bgp_underlay = fabric_cfg.underlay.clone();
    state.set_phase("loading the network policy datapath");
    let policy_datapath = load_policy_datapath(&cfg.bpf_dir)?;
    let fast_path = load_fast_path(cfg.fast_path, &cfg.bpf_dir);
    let fabric =
        Fabric::new(store.clone(), host.clone(), fabric_cfg).with_fast_path(fast_path.clone());
    let fabric_handle = fabric.handle();
    let fabric_device = fabric_handle.device();
    let fabric = tokio::spawn(fabric.run(stop.clone()));
    let (ipsec_handle, ipsec) = start_ipsec(
        cfg,
        &store,
        &host,
        &fabric_handle,
        &node_key,
        ipsec_datapath,
        mtu,
        mtu_less.clone(),
        stop.clone(),
    )?;
    let bgp = bgp.map(|own| {
        let mut bgp_cfg = BgpFabricConfig::new(&cfg.node_name, own, bgp_underlay);
        bgp_cfg.bfd = cfg.bgp.bfd;
        bgp_cfg.node_mesh = cfg.bgp.node_mesh;
        bgp_cfg.pools = cfg.pools.clone();
        bgp_cfg.graceful_restart = (cfg.bgp.graceful_restart_secs > 0)
            .then(|| Duration::from_secs(cfg.bgp.graceful_restart_secs));
        let bgp = BgpFabric::new(store.clone(), host.clone(), bgp_cfg);
        (bgp.handle(), tokio::spawn(bgp.run(stop.clone())))
    });
    let attacher = Attacher::new(
        AttacherConfig {
            node: cfg.node_name.clone(),
            mtu,
            mtu_less: mtu_less.clone(),
            gc_grace: Duration::from_secs(cfg.gc_grace_secs),
            owner: until_ok(state, "reading the store's id", || {
                crate::attach::owner::owner_mark_of(store.as_ref(), &cfg.node_name)
            })
            .await,
            state_dir: Some(cfg.state_dir.clone()),
        },
        store.clone(),
        ipam,
        host.clone(),
    );
    let policy = PolicyAgent::new(
        PolicyConfig::new(&cfg.node_name, cfg.policy_mode),
        store.clone(),
        policy_datapath.clone(),
        Arc::new(OnHost(host.clone())),
    );
    // ADD puts an endpoint's policy in place before it answers; DEL removes it.
    attacher.set_enforcement(Arc::new(policy.clone()));
    attacher.subscribe(Arc::new(policy.clone()));
    // From here DEL goes to the attacher; ADD still gets "try again later" until ready.
    let (bgp_handle, bgp) = bgp.unzip();
    state.set_owners(Owners {
        attacher: attacher.clone(),
        registry,
        fabric: fabric_handle,
        bgp: bgp_handle,
        peers: ExternalPeers::new(store.clone()),
        ipsec: crate::ipsec::IpsecSettingsStore::new(store.clone()),
        ipsec_peers: crate::ipsec::IpsecPeers::new(store.clone()),
    });

    state.set_ipsec(ipsec_handle);
    state.set_phase("adopting existing endpoints");
    host.enable_forwarding()
        .await
        .context("enabling IP forwarding")?;
    if let Err(e) = attacher.sweep_stale_links().await {
        warn!(error = %e, "sweeping stale links at start");
    }
    if let Err(e) = attacher.release_records_without_interface().await {
        warn!(error = %e, "releasing records whose interface is gone");
    }
    let applied = attacher.apply_pending_releases(&cfg.state_dir).await;
    if applied > 0 {
        info!(applied, "applied DELs queued while the agent was down");
    }
    // Adopts what the previous agent left in the kernel (installing before it
    // removes anything), then follows the store.
    state.set_phase("reconciling network policy");
    let policy_tasks = start_policy(&policy, &policy_datapath, stop.clone());
    policy.ready().await;
    state.set_policy(policy);
    state.set_policy_counters(policy_datapath.clone());
    state.set_phase("attaching the fast path");
    let fast_path_task = start_fast_path(
        cfg.fast_path,
        fast_path,
        &attacher,
        &host,
        state,
        stop.clone(),
    )
    .await;
    state.set_phase("starting services");
    let services = start_services(
        cfg,
        &store,
        node_addresses,
        services_net,
        fabric_device,
        state,
        stop.clone(),
    );
    // Tells the Kubernetes integration when the Node's network may be called up.
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let kube = match kube_client {
        Some(client) => {
            state.set_phase("following the Kubernetes API server");
            let deps = crate::kube::KubeDeps {
                node: cfg.node_name.clone(),
                store: store.clone(),
                lease: kube_lease,
                attacher: attacher.clone(),
                ready: ready_rx.clone(),
                service_pools: cfg.service_pools.clone(),
            };
            start_kube(client, deps, state, stop.clone()).await
        }
        None => Vec::new(),
    };
    // The plugin's socket is bound before /readyz says ready: whoever waits for
    // readiness (systemd, a test, a script starting dockerd next) may use it at once.
    let docker = match &cfg.docker {
        Some(d) => Some(start_docker(d, &attacher, &store, state, stop.clone()).await?),
        None => None,
    };
    attacher.set_ready();
    ready_tx.send_replace(true);
    state.set_phase("ready");
    info!(mtu, "ready");
    notify::ready("ready");
    Ok(Running {
        fast_path: fast_path_task,
        policy: policy_tasks,
        attacher,
        keepalive,
        reclaimer,
        fabric,
        bgp,
        docker,
        ipsec,
        services,
        kube,
    })
}

/// Where the packet-level service translation attaches: the underlay interface, its
/// ifindex, and the node's addresses that flows to backends elsewhere are SNATed
/// to.
struct ServicesNet {
    iface: String,
    ifindex: u32,
    v4: Option<std::net::Ipv4Addr>,
    v6: Option<std::net::Ipv6Addr>,
}

/// The underlay interface for [`ServicesNet`]; `None` (said once) when the node
/// has no named one: node ports then answer only the node's own sockets.
async fn services_net(host: &Netlink, underlay: &Underlay) -> Option<ServicesNet> {
    let Some(iface) = &underlay.iface else {
        warn!(
            "services: no underlay interface known: node ports and external IPs are not served to other hosts"
        );
        return None;
    };
    match host.link_by_name(iface).await {
        Ok(Some(link)) => Some(ServicesNet {
            iface: iface.clone(),
            ifindex: link.index,
            v4: underlay.v4,
            v6: underlay.v6,
        }),
        other => {
            warn!(iface = %iface, result = ?other.map(|_| ()), "services: the underlay interface is not there: node ports and external IPs are not served to other hosts");
            None
        }
    }
}

/// Loads the socket balancer (pinned under `--bpf-dir`, adopting what a previous
/// agent installed), attaches it to `--service-cgroup` and its packet-level half to
/// the underlay interface, and starts the loop that holds it to the store's
/// services. Without it the agent still serves everything else, and `netctl service
/// list` says why no frontend is installed.
fn start_services(
    cfg: &AgentConfig,
    store: &Arc<dyn crate::store::Store>,
    node_addresses: Vec<std::net::IpAddr>,
    net: Option<ServicesNet>,
    fabric_device: tokio::sync::watch::Receiver<Option<crate::fabric::DeviceRef>>,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use crate::services::datapath::ServicesDatapath;
    let agent = crate::services::ServicesAgent::new(store.clone(), cfg.service_pools.clone());
    state.set_services(agent.clone());
    let dp: Result<Arc<dyn crate::services::dataplane::ServiceDataplane>, String> = match &cfg
        .service_cgroup
    {
        None => Err("the socket balancer is off (--service-cgroup none)".into()),
        Some(dir) => (|| {
            let cgroup = match dir {
                Some(d) => d.clone(),
                None => crate::services::cgroup2_root()?,
            };
            let dp = ServicesDatapath::load(&cfg.bpf_dir).map_err(|e| e.to_string())?;
            dp.attach(&cgroup).map_err(|e| e.to_string())?;
            info!(cgroup = %cgroup.display(), "services: socket balancer attached");
            if let Some(n) = &net {
                // Without it, the socket balancer still serves this node.
                match dp.attach_net(&n.iface, n.ifindex, n.v4, n.v6) {
                    Ok(()) => {
                        info!(iface = %n.iface, "services: packet-level translation attached")
                    }
                    Err(e) => {
                        warn!(error = %e, "services: node ports and external IPs are not served to other hosts")
                    }
                }
            }
            let dp = Arc::new(dp);
            if net.is_some() {
                tokio::spawn(follow_fabric_device(
                    dp.clone(),
                    fabric_device,
                    stop.clone(),
                ));
            }
            Ok(dp as Arc<dyn crate::services::dataplane::ServiceDataplane>)
        })(),
    };
    if let Err(e) = &dp {
        warn!(error = %e, "services: no socket balancer; services are planned but not served");
    }
    tokio::spawn(agent.run(
        store.clone(),
        cfg.node_name.clone(),
        node_addresses,
        dp,
        stop,
    ))
}

/// Keeps the services' reply translation on the fabric device (vxlan) as the fabric
/// makes and remakes it: a local backend's reply to a client on another node that
/// came in by this node's node port goes back through the tunnel.
async fn follow_fabric_device(
    dp: Arc<crate::services::datapath::ServicesDatapath>,
    mut device: tokio::sync::watch::Receiver<Option<crate::fabric::DeviceRef>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = device.borrow_and_update().clone();
        if let Some(d) = now {
            match dp.attach_reply_net(&d.name, d.ifindex) {
                Ok(()) => info!(device = %d.name, "services: reply translation attached"),
                Err(e) => {
                    warn!(error = %e, "services: replies to other nodes' clients of node ports through the fabric device are not translated")
                }
            }
        }
        tokio::select! {
            changed = device.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How long start-up waits for the first list of this node's pods, so that ADDs right
/// after start get their pods' labels; past it the agent starts anyway (the labels
/// follow once the list arrives) and says so.
const KUBE_FIRST_LIST: Duration = Duration::from_secs(10);

/// Starts the Kubernetes integration (its client was made at start: a kubeconfig
/// that does not read stops the agent there). An API server that does not answer
/// stops nothing: networking goes on without it, and the watches retry.
async fn start_kube(
    client: kube::Client,
    deps: crate::kube::KubeDeps,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let store = deps.store.clone();
    let kube = crate::kube::start(client, deps, stop);
    state.set_kube(crate::api::KubeView {
        status: kube.status.clone(),
        store,
    });
    let mut pods = kube.pods.clone();
    match tokio::time::timeout(KUBE_FIRST_LIST, pods.wait_for(|v| v.is_some())).await {
        Ok(_) => info!("Kubernetes: this node's pods are listed"),
        Err(_) => warn!(
            "Kubernetes: no list of this node's pods after {KUBE_FIRST_LIST:?}; starting \
             anyway (see netctl kubernetes): endpoints get their pods' labels once it comes"
        ),
    }
    kube.tasks
}

/// The Node's podCIDRs, waiting (and saying so in `/readyz`) until the API server
/// answers and the Node has them: without them `--ipam kubernetes` has no address to
/// give.
async fn node_pod_cidrs(client: &kube::Client, node: &str, state: &AppState) -> Vec<ipnet::IpNet> {
    let mut logged = false;
    loop {
        match crate::kube::node::pod_cidrs(client, node).await {
            Ok(ranges) => return ranges,
            Err(e) => {
                if !logged {
                    warn!(error = %e, "IPAM: waiting for this node's podCIDRs");
                    logged = true;
                }
                state.set_phase(format!("waiting for the Node's podCIDRs: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Binds the Docker plugin's socket and serves it; the port proxies of running
/// containers come back first.
async fn start_docker(
    cfg: &crate::docker::DockerConfig,
    attacher: &Arc<Attacher>,
    store: &Arc<dyn crate::store::Store>,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let plugin = crate::docker::DockerPlugin::new(cfg, attacher.clone(), store.clone());
    plugin.restore().await;
    let listener = crate::docker::server::bind(&cfg.socket, cfg.spec_file.as_deref())
        .with_context(|| format!("binding the Docker plugin socket {}", cfg.socket.display()))?;
    info!(socket = %cfg.socket.display(), "serving the Docker network and IPAM driver");
    state.set_docker(plugin.clone());
    let mut stop = stop;
    Ok(tokio::spawn(async move {
        let served = crate::docker::server::serve(listener, plugin, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        if let Err(e) = served {
            warn!(error = %e, "Docker plugin server");
        }
    }))
}

/// Loads network policy's programs and maps (pinned under `--bpf-dir`, adopting
/// what a previous agent pinned there). Without them the agent does not start: it
/// would attach containers no policy can reach.
fn load_policy_datapath(bpf_dir: &std::path::Path) -> anyhow::Result<Arc<PolicyDatapath>> {
    let datapath = PolicyDatapath::load(bpf_dir).map_err(|e| {
        anyhow::anyhow!(
            "network policy's eBPF datapath does not load ({e}); straitd enforces policy \
             on every container and does not start without it: it needs a kernel with \
             tcx (6.6 or later), root (CAP_BPF, CAP_NET_ADMIN) and --bpf-dir {} on a \
             bpf filesystem (mount -t bpf bpf /sys/fs/bpf)",
            bpf_dir.display()
        )
    })?;
    info!(dir = %bpf_dir.display(), "network policy datapath loaded");
    Ok(Arc::new(datapath))
}

/// Starts policy's reconcile loop, the conntrack GC (every
/// [`crate::policy::datapath::GC_INTERVAL`]) and the forwarding of the datapath's
/// flow events to `netctl monitor`'s subscribers.
fn start_policy(
    policy: &PolicyAgent,
    datapath: &Arc<PolicyDatapath>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let reconcile = policy.spawn(stop);
    let gc = {
        let datapath = datapath.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::policy::datapath::GC_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let dp = datapath.clone();
                match tokio::task::spawn_blocking(move || dp.conntrack_gc()).await {
                    Ok(Ok(n)) if n > 0 => tracing::debug!(expired = n, "conntrack GC"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "conntrack GC"),
                    Err(e) => warn!(error = %e, "conntrack GC task"),
                }
            }
        })
    };
    let events = {
        let mut raw = datapath.subscribe();
        let policy = policy.clone();
        tokio::spawn(async move {
            loop {
                match raw.recv().await {
                    Ok(event) => policy.publish(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(lost = n, "policy flow events: the forwarder fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };
    vec![reconcile, gc, events]
}

/// Loads the fast path's programs unless `--fast-path off`, sharing policy's maps
/// under `bpf_dir` (it runs an endpoint's ingress check before it delivers to it).
/// A kernel that refuses them leaves the agent on the kernel's forwarding, with a
/// warning.
fn load_fast_path(mode: FastPathMode, bpf_dir: &std::path::Path) -> Option<FastPath> {
    if mode == FastPathMode::Off {
        return None;
    }
    match FastPath::load_with_bpf_dir(mode, bpf_dir) {
        Ok(fp) => Some(fp),
        Err(e) => {
            warn!(error = %e, "the fast path is unavailable; using the kernel's forwarding");
            None
        }
    }
}

/// Attaches the fast path to the existing endpoints and switches it on as the mode
/// says; with `off`, removes what a previous agent attached. Returns the watch that
/// attaches new veths once settled and keeps `auto` off while the host DNATs.
async fn start_fast_path(
    mode: FastPathMode,
    fast_path: Option<FastPath>,
    attacher: &Arc<Attacher>,
    host: &Netlink,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Some(fp) = fast_path else {
        if mode == FastPathMode::Off {
            let mut devices = vec![crate::fabric::VXLAN_DEVICE.to_string()];
            if let Ok(eps) = attacher.endpoints().await {
                devices.extend(eps.into_iter().map(|e| e.host_ifname));
            }
            crate::fastpath::remove_leftovers(devices.iter().map(String::as_str));
        }
        return None;
    };
    // Subscribed before adopting: an endpoint attached meanwhile is queued by the
    // event, and one adopted twice is replaced in place.
    attacher.subscribe(Arc::new(fp.clone()));
    let shaped = tokio::task::spawn_blocking(crate::fastpath::qdisc::devices_with_ingress_qdisc)
        .await
        .unwrap_or_default();
    // One dump of strait's links rather than a lookup per endpoint.
    match (attacher.endpoints().await, host.strait_links().await) {
        (Ok(endpoints), Ok(links)) => {
            let links: HashMap<String, u32> =
                links.into_iter().map(|l| (l.name, l.index)).collect();
            let n = fp.adopt(&endpoints, &links, &shaped);
            info!(endpoints = n, "fast path attached");
        }
        (Err(e), _) => warn!(error = %e, "fast path: listing endpoints"),
        (_, Err(e)) => warn!(error = %e, "fast path: listing links"),
    }
    state.set_fast_path(fp.clone());
    Some(crate::fastpath::watch::spawn(fp, mode, stop))
}

/// Open the store — etcd with `--etcd-endpoints`, else the embedded file — retrying
/// while it cannot be opened (etcd unreachable, another process holds the file's lock,
/// the disk is not there yet): the agent keeps answering meanwhile.
async fn open_store(cfg: &AgentConfig, state: &AppState) -> Arc<dyn Store> {
    let what = cfg.store_description();
    let store = until_ok(state, &format!("waiting for the store {what}"), || async {
        if cfg.uses_etcd() {
            EtcdStore::connect(&cfg.etcd_endpoints, EtcdOptions::default())
                .await
                .map(|s| s as Arc<dyn Store>)
        } else {
            EmbeddedStore::open(&cfg.store_path())
                .await
                .map(|s| s as Arc<dyn Store>)
        }
    })
    .await;
    info!(store = %what, "store open");
    if !cfg.uses_etcd() {
        // A store created just now has the process's umask; the state dir around it is
        // already 0700.
        if let Err(e) = crate::private::file(&cfg.store_path()) {
            warn!(error = %e, "making the store file 0600");
        }
    }
    store
}

/// Runs `attempt` until it succeeds, backing off from 100 ms to 5 s between tries. Each
/// failure is logged and shown as the start-up phase (`doing: error`): the agent keeps
/// answering meanwhile.
async fn until_ok<T, E, F, Fut>(state: &AppState, doing: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => {
                warn!(error = %e, "{doing}; retrying");
                state.set_phase(format!("{doing}: {e}"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The underlay addresses for the node record. A fabric cannot work without them, so
/// their absence stops the agent then; with no fabric they are informational.
async fn detect_underlay(cfg: &AgentConfig, host: &Netlink) -> anyhow::Result<Underlay> {
    match crate::node::underlay::detect(host, cfg.underlay_iface.as_deref(), &cfg.underlay_addrs)
        .await
    {
        Ok(u) => {
            info!(iface = ?u.iface, v4 = ?u.v4, v6 = ?u.v6, "underlay");
            Ok(u)
        }
        Err(e) if cfg.fabric == FabricMode::None => {
            warn!(error = %e, "no underlay address for the node record");
            Ok(Underlay::default())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("--fabric {}", cfg.fabric))),
    }
}

/// This node's tunnel addresses, waiting (with backoff) while the store is away.
async fn tunnel_addresses(ipam: &Ipam, state: &AppState) -> TunnelAddrs {
    until_ok(state, "allocating tunnel addresses", || {
        ensure_tunnel_addresses(ipam)
    })
    .await
}

/// The MAC of this node's VXLAN device, when it has one.
fn vtep_mac(cfg: &AgentConfig) -> Option<[u8; 6]> {
    (cfg.fabric == FabricMode::Vxlan).then(|| crate::fabric::vtep_mac(&cfg.node_name))
}

/// The containers' MTU: `--mtu`, else the underlay interface's (the default route's
/// when none is known), less the encapsulation when the fabric is VXLAN — so that
/// a full-size container packet still fits the underlay once encapsulated.
async fn container_mtu(cfg: &AgentConfig, host: &Netlink, underlay: &Underlay) -> u32 {
    if let Some(m) = cfg.mtu {
        return m;
    }
    let base = underlay_mtu(host, underlay).await;
    match cfg.fabric {
        // Encapsulated from the IPv4 address when there is one (as the fabric does).
        FabricMode::Vxlan => vxlan_mtu(base, underlay.v4.is_none()),
        FabricMode::HostGw | FabricMode::Bgp | FabricMode::None => base,
    }
}

/// The underlay interface's MTU (the default route's when no interface is known,
/// else 1500).
pub(crate) async fn underlay_mtu(host: &Netlink, underlay: &Underlay) -> u32 {
    let iface_mtu = match &underlay.iface {
        Some(name) => host.link_by_name(name).await.ok().flatten().map(|l| l.mtu),
        None => None,
    };
    match iface_mtu {
        Some(m) => m,
        None => crate::netlink::default_route_mtu(host)
            .await
            .unwrap_or(None)
            .unwrap_or(1500),
    }
}

/// This node's BGP attributes with `--fabric bgp` (docs/bgp.md): the router ID is
/// `--bgp-router-id` or the underlay IPv4 address, and a route reflector's cluster ID
/// defaults to it. An IPv6-only node without `--bgp-router-id` cannot start: BGP
/// identifiers are IPv4 (RFC 4271 §4.2).
fn node_bgp(cfg: &AgentConfig, underlay: &Underlay) -> anyhow::Result<Option<NodeBgp>> {
    if cfg.fabric != FabricMode::Bgp {
        return Ok(None);
    }
    let Some(router_id) = crate::fabric::bgp::router_id(cfg.bgp.router_id, underlay) else {
        anyhow::bail!(
            "--fabric bgp: this node has no IPv4 underlay address to use as BGP router ID; \
             give --bgp-router-id"
        );
    };
    let cluster_id = match cfg.bgp.role {
        BgpRole::Rr => Some(cfg.bgp.cluster_id.unwrap_or(router_id)),
        BgpRole::Client => None,
    };
    Ok(Some(NodeBgp {
        asn: cfg.bgp.asn,
        role: cfg.bgp.role,
        cluster_id,
        router_id,
        port: cfg.bgp.port,
    }))
}

/// The record this agent registers, before the fabric adds its part.
fn node_record(
    cfg: &AgentConfig,
    underlay: &Underlay,
    bgp: Option<NodeBgp>,
    key: &crate::ipsec::NodeKey,
) -> NodeRecord {
    let vxlan = cfg.fabric == FabricMode::Vxlan;
    NodeRecord {
        name: cfg.node_name.clone(),
        underlay_v4: underlay.v4,
        underlay_v6: underlay.v6,
        fabric: cfg.fabric,
        vtep_mac: vtep_mac(cfg).map(|m| format_mac(&m)),
        vxlan_vni: vxlan.then_some(cfg.vxlan_vni),
        vxlan_port: vxlan.then_some(cfg.vxlan_port),
        tunnel_v4: None,
        tunnel_v6: None,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        bgp,
        site: cfg.site.clone(),
        ipsec: Some(strait_api::ipsec::NodeIpsec {
            gateway: cfg.ipsec.gateway,
            ..strait_api::ipsec::NodeIpsec::from_public_key(&key.public_key())
        }),
    }
}

/// Starts IPsec: the follower of the cluster's mode and the engine, which follows it
/// and the fabric's view of the cluster.
#[allow(clippy::too_many_arguments)]
fn start_ipsec(
    cfg: &AgentConfig,
    store: &Arc<dyn Store>,
    host: &Netlink,
    fabric: &crate::fabric::FabricHandle,
    node_key: &crate::ipsec::NodeKey,
    datapath: crate::ipsec::datapath::DatapathSettings,
    mtu: u32,
    mtu_less: Arc<std::sync::atomic::AtomicU32>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(crate::ipsec::IpsecHandle, Vec<tokio::task::JoinHandle<()>>)> {
    let encrypted_mtu = mtu.saturating_sub(datapath.overhead());
    let engine_cfg = crate::ipsec::EngineConfig {
        node: cfg.node_name.clone(),
        site: cfg.site.clone(),
        datapath,
        child_lifetime: cfg.ipsec.child_lifetime,
        ike_lifetime: cfg.ipsec.ike_lifetime,
        child_bytes: cfg.ipsec.child_bytes,
        dpd_interval: cfg.ipsec.dpd,
        reauth_interval: cfg.ipsec.reauth,
        esn: cfg.ipsec.esn,
        key_log: cfg.ipsec.key_log.clone(),
        encrypted_mtu,
        pools: cfg.pools.clone(),
    };
    if let Some(log) = &engine_cfg.key_log {
        warn!(file = %log.display(), "writing every IPsec SA's keys to a file (tests only)");
    }
    let (engine, handle) = crate::ipsec::Engine::new(engine_cfg, host.clone(), node_key, mtu_less)
        .map_err(anyhow::Error::msg)?;
    let (mode_tx, mode_rx) = tokio::sync::watch::channel(None);
    let follower = tokio::spawn(crate::ipsec::settings::follow(
        store.clone(),
        mode_tx,
        stop.clone(),
    ));
    let (peers_tx, peers_rx) = tokio::sync::watch::channel(None);
    let peers = tokio::spawn(crate::ipsec::peers::follow(
        store.clone(),
        peers_tx,
        stop.clone(),
    ));
    let (learned_tx, learned_rx) = tokio::sync::watch::channel(None);
    let learned = tokio::spawn(crate::ipsec::gateway::learned::follow(
        store.clone(),
        learned_tx,
        stop.clone(),
    ));
    let gateway = crate::ipsec::engine::GatewayInputs {
        peers: peers_rx,
        learned: learned_rx,
        store: store.clone(),
    };
    let engine = tokio::spawn(engine.run(mode_rx, fabric.follow_view(), gateway, stop));
    Ok((handle, vec![follower, peers, learned, engine]))
}

/// Periodic work: queued DELs (a plugin may have queued one while we restarted), stale
/// links, and the leak GC.
async fn housekeeping(
    attacher: Arc<Attacher>,
    metrics: Arc<Metrics>,
    state_dir: std::path::PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        attacher.apply_pending_releases(&state_dir).await;
        if let Err(e) = attacher.sweep_stale_links().await {
            warn!(error = %e, "sweeping stale links");
        }
        match attacher.gc_leaks().await {
            Ok(n) => {
                metrics.gc_released.inc_by(n as u64);
            }
            Err(e) => warn!(error = %e, "IPAM leak GC"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the agent can only be killed; run until then.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
