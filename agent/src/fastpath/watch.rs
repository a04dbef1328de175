//! The fast path's watch on the host: every second it attaches the veths that have
//! settled (off the ADD path, see [`super::SETTLE`]); with `--fast-path auto` it keeps
//! the fast path off while the host rewrites destinations ([`super::nat`]).

use std::time::Duration;

use strait_api::FastPathMode;
use tracing::warn;

use super::{FastPath, SETTLE, nat, qdisc};

/// How often the watch attaches settled veths.
const TICK: Duration = Duration::from_secs(1);
/// Every how many ticks `auto` looks for destination NAT on the host (a rule
/// kube-proxy or portmap adds is seen within 5 s).
const DNAT_CHECK_TICKS: u32 = 5;

/// Runs the watch until `stop`; the first tick switches the fast path on (or, in
/// `auto`, on or off after the first DNAT check).
pub fn spawn(
    fp: FastPath,
    mode: FastPathMode,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = 0u32;
        loop {
            // The NAT check runs before settled veths are attached, so a DNAT that
            // portmap added in the same CNI chain is seen before the new veth's
            // replies could bypass it.
            let settled = fp.has_settled(SETTLE);
            let check_nat =
                mode == FastPathMode::Auto && (settled || tick.is_multiple_of(DNAT_CHECK_TICKS));
            let first = tick == 0;
            if check_nat || settled || first {
                let watched = fp.clone();
                // iptables-save, nft and tc are processes: off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || {
                    if check_nat || first {
                        let found = check_nat.then(nat::destination_nat).flatten();
                        if let Err(e) = watched.set_enabled(found.is_none(), found) {
                            warn!(error = %e, "fast path");
                        }
                    }
                    if settled {
                        let shaped = qdisc::devices_with_ingress_qdisc();
                        watched.attach_settled(SETTLE, &shaped);
                    }
                })
                .await;
            }
            tick = tick.wrapping_add(1);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}
