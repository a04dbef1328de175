//! Consistency check and leak GC, after `calicoctl ipam check` and
//! `release --from-report`.
//!
//! The check reads blocks and handles in one range read, so it sees one revision and
//! never half of an allocation. Findings:
//! - a handle whose attachment is gone for longer than the grace period (leaked);
//! - a block allocation naming a handle that does not exist (orphan);
//! - a handle naming an address its block does not give it (missing allocation);
//! - an address named by two handles (duplicate);
//! - a block no configured pool covers (its pool removed or shrunk), with its use.
//!
//! Release acts only on leaked handles and orphans, and re-verifies each against the
//! store first; what changed since the report is skipped, so nothing valid is freed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use strait_api::{IpamIssue, IpamReport, ReleaseResponse};
use tracing::{info, warn};

use super::block::Block;
use super::handle::Handle;
use super::pool::{Pool, pool_covering};
use super::release::ReleaseOutcome;
use super::{Ipam, IpamError, decode_block, decode_handle, keys, unix_now};

/// Whether a handle's attachment still exists: `Err(reason)` when it is gone. The
/// caller knows endpoints, interfaces and namespaces; IPAM does not.
pub type Alive<'a> = &'a (dyn Fn(&Handle) -> Result<(), String> + Sync);

/// The findings over one consistent snapshot of blocks and handles, pure.
/// `block_of` names the block an address should live in; `pools` are the configured
/// ones, enabled and disabled.
pub fn find_issues(
    blocks: &BTreeMap<IpNet, Block>,
    handles: &BTreeMap<String, Handle>,
    now: u64,
    grace: Duration,
    alive: Alive<'_>,
    block_of: impl Fn(IpAddr) -> Option<IpNet>,
    pools: &[Pool],
) -> Vec<IpamIssue> {
    let mut issues = Vec::new();

    for h in handles.values() {
        let age_secs = now.saturating_sub(h.created);
        if age_secs < grace.as_secs() {
            continue;
        }
        if let Err(reason) = alive(h) {
            issues.push(IpamIssue::LeakedHandle {
                handle: h.handle.clone(),
                ips: h.ips.clone(),
                reason,
                age_secs,
            });
        }
    }

    for b in blocks.values() {
        for (&ordinal, holder) in &b.allocations {
            if !handles.contains_key(holder)
                && let Some(ip) = b.ip(ordinal)
            {
                issues.push(IpamIssue::OrphanAllocation {
                    block: b.cidr,
                    ip,
                    handle: holder.clone(),
                });
            }
        }
    }

    let mut holders: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for h in handles.values() {
        for &ip in &h.ips {
            holders.entry(ip).or_default().insert(&h.handle);
            let block = block_of(ip)
                .and_then(|c| blocks.get(&c))
                .or_else(|| blocks.values().find(|b| b.cidr.contains(&ip)));
            if block.and_then(|b| b.holder(ip)) != Some(h.handle.as_str()) {
                issues.push(IpamIssue::MissingAllocation {
                    handle: h.handle.clone(),
                    ip,
                });
            }
        }
    }
    for (ip, hs) in holders {
        if hs.len() > 1 {
            issues.push(IpamIssue::DuplicateIp {
                ip,
                handles: hs.into_iter().map(str::to_string).collect(),
            });
        }
    }
    for b in blocks.values() {
        if pool_covering(pools, &b.cidr).is_none() {
            issues.push(IpamIssue::BlockOutsidePools {
                block: b.cidr,
                affinity: b.affinity.clone(),
                used: b.used(),
            });
        }
    }
    issues
}

/// Whether `release_from_report` can act on `issue`: the others need an operator.
fn releasable(issue: &IpamIssue) -> bool {
    matches!(
        issue,
        IpamIssue::LeakedHandle { .. } | IpamIssue::OrphanAllocation { .. }
    )
}

impl Ipam {
    /// Checks blocks and handles of every node against each other and against `alive`.
    /// `alive` sees every handle, other nodes' too; it should answer `Ok` for what it
    /// cannot judge. A record that does not parse fails the whole check: a report
    /// over data IPAM cannot read must not drive a release.
    pub async fn check(&self, grace: Duration, alive: Alive<'_>) -> Result<IpamReport, IpamError> {
        let resp = self.store.range(&keys::ipam_prefix()).await?;
        let (blocks_prefix, handles_prefix) = (keys::blocks_prefix(), keys::handles_prefix());
        let mut blocks = BTreeMap::new();
        let mut handles = BTreeMap::new();
        for kv in &resp.kvs {
            if kv.key.starts_with(&blocks_prefix) {
                let b = decode_block(kv)?;
                blocks.insert(b.cidr, b);
            } else if kv.key.starts_with(&handles_prefix) {
                let h = decode_handle(kv)?;
                handles.insert(h.handle.clone(), h);
            }
        }
        let issues = find_issues(
            &blocks,
            &handles,
            unix_now(),
            grace,
            alive,
            |ip| self.block_cidr_of(ip),
            &self.pools,
        );
        Ok(IpamReport {
            revision: resp.revision,
            grace_secs: grace.as_secs(),
            issues,
        })
    }

    /// Releases the leaked handles and orphan allocations of `report`, each only if it
    /// still is what the report saw: a handle created or changed after the report's
    /// revision, or holding other addresses, is skipped; an orphan is freed only while
    /// its block still names the handle and the handle does not exist. Other findings
    /// are listed as skipped (they need an operator); `EndpointWithoutHandle` is the
    /// caller's and left out. `released` holds handle ids and freed orphan addresses;
    /// `skipped` holds "<item>: <why>". A failure on one item is recorded as skipped
    /// and the rest go on.
    pub async fn release_from_report(
        &self,
        report: &IpamReport,
    ) -> Result<ReleaseResponse, IpamError> {
        let mut resp = ReleaseResponse::default();
        for issue in &report.issues {
            match issue {
                IpamIssue::LeakedHandle { handle, ips, .. } => {
                    let want: BTreeSet<IpAddr> = ips.iter().copied().collect();
                    let verify = |kv: &crate::store::KeyValue, h: &Handle| {
                        if kv.create_revision > report.revision {
                            return Err("recreated since the report".to_string());
                        }
                        if kv.mod_revision > report.revision {
                            return Err("changed since the report".to_string());
                        }
                        if h.ips.iter().copied().collect::<BTreeSet<_>>() != want {
                            return Err("holds other addresses than the report says".into());
                        }
                        Ok(())
                    };
                    let outcome = match super::handle::validate_handle(handle) {
                        Ok(()) => self.release_if(handle, &verify).await,
                        Err(e) => Err(e),
                    };
                    record(&mut resp, handle, outcome, "already released");
                }
                IpamIssue::OrphanAllocation { block, ip, handle } => {
                    let outcome = self.release_orphan(*block, *ip, handle).await;
                    record(&mut resp, &ip.to_string(), outcome, "already free");
                }
                IpamIssue::MissingAllocation { handle, ip } => resp.skipped.push(format!(
                    "{handle}: {ip} missing from its block; fix by hand"
                )),
                IpamIssue::DuplicateIp { ip, handles } => resp
                    .skipped
                    .push(format!("{ip}: held by {}; fix by hand", handles.join(", "))),
                IpamIssue::BlockOutsidePools { block, used, .. } => resp.skipped.push(format!(
                    "{block}: outside every configured pool with {used} address(es) in use; \
                     give its pool back with --disabled-pool to drain it (its node deletes \
                     the block at start once it is empty and its pool is gone)"
                )),
                IpamIssue::EndpointWithoutHandle { .. } => {}
            }
        }
        if !resp.released.is_empty() {
            info!(released = ?resp.released, "IPAM: released from report");
        }
        Ok(resp)
    }

    /// Check, then release what the check found unless `dry_run`. Returns the report.
    pub async fn gc(
        &self,
        grace: Duration,
        alive: Alive<'_>,
        dry_run: bool,
    ) -> Result<IpamReport, IpamError> {
        let report = self.check(grace, alive).await?;
        if !dry_run && report.issues.iter().any(releasable) {
            // Only what it can release: the rest would be warned about every round.
            let ours = IpamReport {
                issues: report
                    .issues
                    .iter()
                    .filter(|i| releasable(i))
                    .cloned()
                    .collect(),
                ..report.clone()
            };
            let resp = self.release_from_report(&ours).await?;
            for s in &resp.skipped {
                warn!(item = %s, "IPAM GC skipped");
            }
        }
        Ok(report)
    }
}

fn record(
    resp: &mut ReleaseResponse,
    item: &str,
    outcome: Result<ReleaseOutcome, IpamError>,
    missing: &str,
) {
    match outcome {
        Ok(ReleaseOutcome::Released(_)) => resp.released.push(item.to_string()),
        Ok(ReleaseOutcome::Missing) => resp.skipped.push(format!("{item}: {missing}")),
        Ok(ReleaseOutcome::Refused(why)) => resp.skipped.push(format!("{item}: {why}")),
        Err(e) => resp.skipped.push(format!("{item}: error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn handle(id: &str, ips: &[&str], created: u64) -> Handle {
        Handle {
            handle: id.into(),
            network: "net".into(),
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: String::new(),
            node: "n1".into(),
            ips: ips.iter().map(|s| ip(s)).collect(),
            created,
        }
    }

    fn pools(cidr: &str) -> Vec<Pool> {
        vec![Pool {
            cidr: net(cidr),
            block_prefix: 26,
            disabled: false,
        }]
    }

    fn block_of(i: IpAddr) -> Option<IpNet> {
        IpNet::new(i, 26).ok().map(|n| n.trunc())
    }

    #[test]
    fn finds_each_kind() {
        let mut b = Block::new(net("10.0.0.0/26"), Some("n1".into()), 0);
        b.assign(1, "ok");
        b.assign(2, "leaked");
        b.assign(3, "ghost");
        b.assign(4, "dup1");
        let blocks = BTreeMap::from([(b.cidr, b)]);
        let handles: BTreeMap<String, Handle> = [
            handle("ok", &["10.0.0.1"], 0),
            handle("leaked", &["10.0.0.2"], 0),
            handle("young", &["10.0.0.9"], 990),
            handle("dup1", &["10.0.0.4"], 0),
            handle("dup2", &["10.0.0.4"], 0),
        ]
        .into_iter()
        .map(|h| (h.handle.clone(), h))
        .collect();
        let alive = |h: &Handle| {
            if h.handle == "leaked" || h.handle == "young" {
                Err("no endpoint".to_string())
            } else {
                Ok(())
            }
        };
        let issues = find_issues(
            &blocks,
            &handles,
            1000,
            Duration::from_secs(60),
            &alive,
            block_of,
            &pools("10.0.0.0/24"),
        );
        assert_eq!(
            issues,
            vec![
                IpamIssue::LeakedHandle {
                    handle: "leaked".into(),
                    ips: vec![ip("10.0.0.2")],
                    reason: "no endpoint".into(),
                    age_secs: 1000
                },
                IpamIssue::OrphanAllocation {
                    block: net("10.0.0.0/26"),
                    ip: ip("10.0.0.3"),
                    handle: "ghost".into()
                },
                IpamIssue::MissingAllocation {
                    handle: "dup2".into(),
                    ip: ip("10.0.0.4")
                },
                IpamIssue::MissingAllocation {
                    handle: "young".into(),
                    ip: ip("10.0.0.9")
                },
                IpamIssue::DuplicateIp {
                    ip: ip("10.0.0.4"),
                    handles: vec!["dup1".into(), "dup2".into()]
                },
            ]
        );
    }

    #[test]
    fn clean_state_has_no_issues() {
        let mut b = Block::new(net("fd00::/122"), Some("n1".into()), 0);
        b.assign(7, "a");
        let blocks = BTreeMap::from([(b.cidr, b)]);
        let handles = BTreeMap::from([("a".to_string(), handle("a", &["fd00::7"], 0))]);
        let issues = find_issues(
            &blocks,
            &handles,
            10,
            Duration::ZERO,
            &|_| Ok(()),
            |i| IpNet::new(i, 122).ok().map(|n| n.trunc()),
            &pools("fd00::/120"),
        );
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn blocks_outside_every_pool_are_reported_with_their_use() {
        let mut gone = Block::new(net("10.1.0.0/26"), Some("n1".into()), 0);
        gone.assign(1, "a");
        let empty = Block::new(net("10.1.0.64/26"), Some("n2".into()), 0);
        let kept = Block::new(net("10.0.0.0/26"), Some("n1".into()), 0);
        let mut drained = Block::new(net("10.2.0.0/26"), Some("n1".into()), 0);
        drained.assign(1, "b");
        let blocks: BTreeMap<IpNet, Block> = [gone, empty, kept, drained]
            .into_iter()
            .map(|b| (b.cidr, b))
            .collect();
        let handles: BTreeMap<String, Handle> =
            [handle("a", &["10.1.0.1"], 0), handle("b", &["10.2.0.1"], 0)]
                .into_iter()
                .map(|h| (h.handle.clone(), h))
                .collect();
        let mut configured = pools("10.0.0.0/24");
        configured.push(Pool {
            cidr: net("10.2.0.0/16"),
            block_prefix: 26,
            disabled: true,
        });
        let issues = find_issues(
            &blocks,
            &handles,
            10,
            Duration::ZERO,
            &|_| Ok(()),
            block_of,
            &configured,
        );
        assert_eq!(
            issues,
            vec![
                IpamIssue::BlockOutsidePools {
                    block: net("10.1.0.0/26"),
                    affinity: Some("n1".into()),
                    used: 1
                },
                IpamIssue::BlockOutsidePools {
                    block: net("10.1.0.64/26"),
                    affinity: Some("n2".into()),
                    used: 0
                },
            ],
            "a disabled pool's block is inside a pool"
        );
        assert!(!issues.iter().any(releasable));
    }
}
