//! Wiring: opens the store, builds the owners (IPAM, netlink, attacher), serves the API,
//! runs start-up work and the periodic loops, and stops on SIGTERM/SIGINT.
//!
//! Start-up order matters. The socket is bound first so the CNI plugin gets "try again
//! later" (code 11) instead of "agent down" while the agent adopts what it finds;
//! readiness flips only after stale links are swept and queued releases are applied.
//! Shutdown flushes nothing: interfaces, routes and records stay, and the next agent
//! adopts them, so containers keep their connectivity across a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::attach::{Attacher, AttacherConfig};
use crate::config::AgentConfig;
use crate::ipam::{Ipam, IpamConfig};
use crate::metrics::Metrics;
use crate::netlink::Netlink;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;

/// How often the agent sweeps stale links and runs its leak GC.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state dir {}", cfg.state_dir.display()))?;
    std::fs::create_dir_all(cfg.pending_release_dir()).with_context(|| {
        format!(
            "creating pending-release dir {}",
            cfg.pending_release_dir().display()
        )
    })?;

    // ----- serve first: CNI calls get "try again later" while we start -----
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState {
        attacher: tokio::sync::OnceCell::new(),
        phase: std::sync::Mutex::new("opening the store".into()),
        metrics: metrics.clone(),
        started: Instant::now(),
        node: cfg.node_name.clone(),
        store_description: format!("embedded:{}", cfg.store_path().display()),
        state_dir: cfg.state_dir.clone(),
        pools: cfg.pools.clone(),
    });
    let listener = api::bind(&cfg.socket)?;
    info!(socket = %cfg.socket.display(), node = %cfg.node_name, "serving the local API");
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
        r = start(&cfg, &state) => Some(r?),
        _ = wait_for_signal() => None,
    };
    if let Some(attacher) = started {
        let housekeeping = tokio::spawn(housekeeping(
            attacher,
            metrics.clone(),
            cfg.pending_release_dir(),
            stop_rx.clone(),
        ));
        wait_for_signal().await;
        housekeeping.abort();
    }

    info!("stopping; interfaces, routes and records stay in place for the next agent");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), api_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "API server"),
        Ok(Err(e)) => warn!(error = %e, "API task"),
        Err(_) => warn!("API server did not stop within 10 s"),
    }
    // The socket file goes with the agent; a CNI DEL now queues on disk.
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}

/// Everything between "socket bound" and "ready": open the store (waiting for it if
/// it is held, e.g. by an agent still shutting down), build the owners, adopt what the
/// previous agent left, apply queued DELs.
async fn start(cfg: &AgentConfig, state: &AppState) -> anyhow::Result<Arc<Attacher>> {
    let store: Arc<dyn Store> = open_store(cfg, state).await;
    state.set_phase("starting IPAM");
    let ipam = Arc::new(
        Ipam::new(
            store.clone(),
            cfg.node_name.clone(),
            IpamConfig {
                pools: cfg.pools.clone(),
                block_prefix_v4: cfg.block_prefix_v4,
                block_prefix_v6: cfg.block_prefix_v6,
                max_blocks_per_node: cfg.max_blocks_per_node,
                strict_affinity: cfg.strict_affinity,
            },
        )
        .await
        .context("starting IPAM")?,
    );
    let host = Netlink::connect().context("opening netlink")?;
    let mtu = match cfg.mtu {
        Some(m) => m,
        None => crate::netlink::default_route_mtu(&host)
            .await
            .unwrap_or(None)
            .unwrap_or(1500),
    };
    let attacher = Attacher::new(
        AttacherConfig {
            node: cfg.node_name.clone(),
            mtu,
            gc_grace: Duration::from_secs(cfg.gc_grace_secs),
        },
        store,
        ipam,
        host,
    );
    // From here DEL goes to the attacher; ADD still gets "try again later" until ready.
    let _ = state.attacher.set(attacher.clone());

    state.set_phase("adopting existing endpoints");
    crate::netlink::enable_forwarding()
        .await
        .context("enabling IP forwarding")?;
    if let Err(e) = attacher.sweep_stale_links().await {
        warn!(error = %e, "sweeping stale links at start");
    }
    let applied = attacher
        .apply_pending_releases(&cfg.pending_release_dir())
        .await;
    if applied > 0 {
        info!(applied, "applied DELs queued while the agent was down");
    }
    attacher.set_ready();
    state.set_phase("ready");
    info!(mtu, "ready");
    Ok(attacher)
}

/// Open the embedded store, retrying while it cannot be opened (another process holds
/// its lock, the disk is not there yet): the agent keeps answering meanwhile.
async fn open_store(cfg: &AgentConfig, state: &AppState) -> Arc<dyn Store> {
    let path = cfg.store_path();
    let mut delay = Duration::from_millis(100);
    loop {
        match EmbeddedStore::open(&path).await {
            Ok(s) => return s,
            Err(e) => {
                warn!(store = %path.display(), error = %e, "cannot open the store; retrying");
                state.set_phase(format!("waiting for the store {}: {e}", path.display()));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Periodic work: queued DELs (a plugin may have queued one while we restarted), stale
/// links, and the leak GC.
async fn housekeeping(
    attacher: Arc<Attacher>,
    metrics: Arc<Metrics>,
    pending_dir: std::path::PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        attacher.apply_pending_releases(&pending_dir).await;
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
