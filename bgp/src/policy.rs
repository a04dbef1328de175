//! Per-peer route filters (docs/bgp.md "Import policy"): prefix lists for both
//! directions, and the fabric's protected address space external peers may not
//! announce into. Pure data and pure decisions; the speaker applies them
//! ([`crate::speaker::PeerSpec::import`] before the RIB sees an UPDATE,
//! [`crate::speaker::PeerSpec::export`] through the RIB's export hook).
//!
//! Why protected prefixes: a peer announcing a prefix inside one of a fabric's blocks
//! (a /29 of another node's block, say) wins by longest match and takes that traffic
//! away. Inside the protected prefixes (the pools) a peer that protects may announce
//! only what the fabric expects from outside ([`Protected::expected`]: another node's
//! block, the host route of an address another node borrowed, as a ToR relays them);
//! anything else there is refused, counted and listed, unless the peer's allow list
//! covers it. A shorter prefix that covers a protected one (a default route, an
//! aggregate) is not refused: longest match keeps the fabric's routes first.
//! Refused routes are kept with their attributes, so a prefix that becomes expected
//! later (a block allocated after its route arrived) is taken then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use crate::rib::{Attrs, PeerConfig, Policy, RouteUpdate};

/// One line of a prefix list, as in FRR's `ip prefix-list`: `prefix`, or with `ge`/`le`
/// any prefix inside it whose length is in that range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixRule {
    pub permit: bool,
    pub prefix: IpNet,
    /// Shortest length matched; the rule's own length when `None` (and `le` is set).
    pub ge: Option<u8>,
    /// Longest length matched; the family's maximum when `None` (and `ge` is set).
    pub le: Option<u8>,
}

impl PrefixRule {
    /// Whether `p` is matched: inside the rule's prefix, its length in range (exactly
    /// the rule's length without `ge` and `le`).
    pub fn matches(&self, p: &IpNet) -> bool {
        if p.addr().is_ipv4() != self.prefix.addr().is_ipv4() || !self.prefix.contains(p) {
            return false;
        }
        let len = p.prefix_len();
        if self.ge.is_none() && self.le.is_none() {
            return len == self.prefix.prefix_len();
        }
        let lo = self.ge.unwrap_or(self.prefix.prefix_len());
        let hi = self.le.unwrap_or(self.prefix.max_prefix_len());
        (lo..=hi).contains(&len)
    }
}

/// A prefix list: the first rule that matches decides; none matching denies. An empty
/// list permits everything (no filter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PrefixFilter {
    pub rules: Vec<PrefixRule>,
}

impl PrefixFilter {
    pub fn new(rules: Vec<PrefixRule>) -> Self {
        Self { rules }
    }

    pub fn permits(&self, p: &IpNet) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        self.rules
            .iter()
            .find(|r| r.matches(p))
            .is_some_and(|r| r.permit)
    }
}

/// Why a route a peer announced was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Equal to or inside this protected prefix, not expected from outside and not on
    /// the peer's allow list.
    Protected(IpNet),
    /// Denied by the peer's import prefix list.
    Filtered,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Protected(p) => write!(
                f,
                "inside {p}, which the cluster owns, and not a block of another node"
            ),
            Refusal::Filtered => f.write_str("denied by the import filter"),
        }
    }
}

/// The fabric's address space as external peers may touch it: speaker-wide, changed
/// without restarting sessions ([`crate::speaker::Speaker::set_protected`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Nothing equal to or inside these (the pools) comes from a protecting peer…
    pub prefixes: Vec<IpNet>,
    /// …but exactly these prefixes (other nodes' blocks and borrowed addresses).
    pub expected: HashSet<IpNet>,
}

impl Protected {
    /// The protected prefix `p` is in, when `p` is not expected.
    fn refuses(&self, p: &IpNet) -> Option<IpNet> {
        let owner = self.prefixes.iter().find(|q| q.contains(p))?;
        (!self.expected.contains(p)).then_some(*owner)
    }
}

/// What one peer's announcements must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImportPolicy {
    /// Refuse what [`Protected`] refuses (external peers; not the fabric's own nodes).
    pub protect: bool,
    /// Exceptions to the protection: announcements inside these are not refused for it.
    pub allow: Vec<IpNet>,
    pub filter: PrefixFilter,
}

impl ImportPolicy {
    /// Whether the policy refuses nothing (the speaker skips it then).
    pub fn is_empty(&self) -> bool {
        !self.protect && self.filter.rules.is_empty()
    }

    /// Takes or refuses one announced prefix.
    pub fn check(&self, protected: &Protected, p: &IpNet) -> Result<(), Refusal> {
        if self.protect
            && let Some(owner) = protected.refuses(p)
            && !self.allow.iter().any(|a| a.contains(p))
        {
            return Err(Refusal::Protected(owner));
        }
        if !self.filter.permits(p) {
            return Err(Refusal::Filtered);
        }
        Ok(())
    }
}

/// The routes one peer announced and its [`ImportPolicy`] refused, by prefix, with
/// their attributes: what `refused` counts and lists. A withdrawal takes a prefix off;
/// the session going down clears it (the next session announces again).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefusedRoutes {
    routes: BTreeMap<IpNet, (Refusal, Arc<Attrs>)>,
}

impl RefusedRoutes {
    /// Applies `policy` to one UPDATE. Returns the UPDATE the RIB is to see when the
    /// policy changed it (`None`: take it as it is): a refused announcement becomes a
    /// withdrawal, so a route taken earlier and refused now leaves the RIB. Records
    /// what was refused and forgets what was withdrawn or taken.
    ///
    /// `loop_asn`: an eBGP peer's routes whose AS_PATH holds our AS are left as they
    /// are, for the RIB to drop as loops (RFC 4271 §9.1.2) without counting them here:
    /// a ToR sends a rack's blocks to every host of that rack, and those are no hijack.
    pub fn filter(
        &mut self,
        policy: &ImportPolicy,
        protected: &Protected,
        update: &RouteUpdate,
        loop_asn: Option<u32>,
    ) -> Option<RouteUpdate> {
        for p in &update.withdrawn {
            self.routes.remove(&p.trunc());
        }
        if policy.is_empty() {
            return None;
        }
        let mut out = RouteUpdate {
            announced: Vec::with_capacity(update.announced.len()),
            withdrawn: update.withdrawn.clone(),
        };
        let mut changed = false;
        for (prefixes, attrs) in &update.announced {
            if loop_asn.is_some_and(|asn| attrs.as_path.contains(asn)) {
                out.announced.push((prefixes.clone(), Arc::clone(attrs)));
                continue;
            }
            let mut taken = Vec::with_capacity(prefixes.len());
            for p in prefixes {
                let p = p.trunc();
                match policy.check(protected, &p) {
                    Ok(()) => {
                        self.routes.remove(&p);
                        taken.push(p);
                    }
                    Err(why) => {
                        changed = true;
                        self.routes.insert(p, (why, Arc::clone(attrs)));
                        out.withdrawn.push(p);
                    }
                }
            }
            if !taken.is_empty() {
                out.announced.push((taken, Arc::clone(attrs)));
            }
        }
        changed.then_some(out)
    }

    /// After [`Protected`] changed: the refused routes `policy` takes now leave the
    /// list and come back as announcements for the RIB.
    pub fn release(&mut self, policy: &ImportPolicy, protected: &Protected) -> RouteUpdate {
        let now_ok: Vec<IpNet> = self
            .routes
            .keys()
            .filter(|p| policy.check(protected, p).is_ok())
            .copied()
            .collect();
        let mut out = RouteUpdate::default();
        for p in now_ok {
            if let Some((_, attrs)) = self.routes.remove(&p) {
                out.announced.push((vec![p], attrs));
            }
        }
        out
    }

    /// Records a route taken earlier that `why` refuses now (its withdrawal from the
    /// RIB is the caller's).
    pub fn refuse(&mut self, prefix: IpNet, why: Refusal, attrs: Arc<Attrs>) {
        self.routes.insert(prefix, (why, attrs));
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn clear(&mut self) {
        self.routes.clear();
    }

    /// By prefix.
    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &Refusal)> {
        self.routes.iter().map(|(p, (why, _))| (p, why))
    }
}

/// The export prefix lists of the configured peers, shared between the speaker's owner
/// (which sets them as peers come and go) and the RIB's export hook.
pub(crate) type ExportFilters = Arc<Mutex<HashMap<IpAddr, PrefixFilter>>>;

/// The RIB's policy: the caller's hooks, then each peer's export prefix list.
pub(crate) struct WithExportFilters {
    pub inner: Box<dyn Policy>,
    pub filters: ExportFilters,
}

impl Policy for WithExportFilters {
    fn import(&self, peer: &PeerConfig, prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        self.inner.import(peer, prefix, attrs)
    }

    fn export(&self, peer: &PeerConfig, prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        let permitted = self
            .filters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer.address)
            .is_none_or(|f| f.permits(prefix));
        if permitted {
            self.inner.export(peer, prefix, attrs)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn rule(permit: bool, p: &str, ge: Option<u8>, le: Option<u8>) -> PrefixRule {
        PrefixRule {
            permit,
            prefix: net(p),
            ge,
            le,
        }
    }

    #[test]
    fn a_rule_matches_its_prefix_or_the_lengths_it_names() {
        let exact = rule(true, "10.0.0.0/8", None, None);
        assert!(exact.matches(&net("10.0.0.0/8")));
        assert!(!exact.matches(&net("10.1.0.0/16")));
        let le24 = rule(true, "10.0.0.0/8", None, Some(24));
        assert!(le24.matches(&net("10.0.0.0/8")));
        assert!(le24.matches(&net("10.1.2.0/24")));
        assert!(!le24.matches(&net("10.1.2.0/25")));
        assert!(!le24.matches(&net("11.0.0.0/8")));
        let ge16 = rule(true, "10.0.0.0/8", Some(16), None);
        assert!(!ge16.matches(&net("10.0.0.0/8")));
        assert!(ge16.matches(&net("10.1.2.3/32")));
        assert!(!ge16.matches(&net("fd00::/16")), "other family");
    }

    #[test]
    fn the_first_matching_rule_decides_and_no_match_denies() {
        let f = PrefixFilter::new(vec![
            rule(false, "203.0.113.0/24", None, Some(32)),
            rule(true, "203.0.0.0/16", None, Some(24)),
        ]);
        assert!(!f.permits(&net("203.0.113.0/24")));
        assert!(!f.permits(&net("203.0.113.8/29")));
        assert!(f.permits(&net("203.0.112.0/24")));
        assert!(!f.permits(&net("198.51.100.0/24")), "no rule: denied");
        assert!(PrefixFilter::default().permits(&net("0.0.0.0/0")));
    }

    fn protected(expected: &[&str]) -> Protected {
        Protected {
            prefixes: vec![net("10.244.0.0/16"), net("fd00:244::/48")],
            expected: expected.iter().map(|p| net(p)).collect(),
        }
    }

    fn protecting() -> ImportPolicy {
        ImportPolicy {
            protect: true,
            ..ImportPolicy::default()
        }
    }

    #[test]
    fn inside_the_pools_only_other_nodes_prefixes_pass_unless_allowed() {
        let prot = protected(&["10.244.2.0/26", "10.244.1.7/32"]);
        let mut policy = protecting();
        let pool = net("10.244.0.0/16");
        // Another node's block and a borrowed address, as a ToR relays them: taken.
        assert_eq!(policy.check(&prot, &net("10.244.2.0/26")), Ok(()));
        assert_eq!(policy.check(&prot, &net("10.244.1.7/32")), Ok(()));
        // A /29 of that block, a pool's unallocated part, the whole pool: refused.
        for p in ["10.244.2.0/29", "10.244.9.0/26", "10.244.0.0/16"] {
            assert_eq!(
                policy.check(&prot, &net(p)),
                Err(Refusal::Protected(pool)),
                "{p}"
            );
        }
        assert!(policy.check(&prot, &net("fd00:244:0:1::/64")).is_err());
        // Outside, or covering (a default route, an aggregate): taken.
        for p in ["192.0.2.0/24", "0.0.0.0/0", "10.0.0.0/8"] {
            assert_eq!(policy.check(&prot, &net(p)), Ok(()), "{p}");
        }
        policy.allow = vec![net("10.244.200.0/24")];
        assert_eq!(policy.check(&prot, &net("10.244.200.0/26")), Ok(()));
        assert!(policy.check(&prot, &net("10.244.201.0/26")).is_err());
        // A node's peer does not protect.
        assert_eq!(
            ImportPolicy::default().check(&prot, &net("10.244.2.0/29")),
            Ok(())
        );
    }

    fn update(announced: &[&str], withdrawn: &[&str]) -> RouteUpdate {
        let attrs = Arc::new(Attrs::new(crate::codec::NextHop::V4(
            std::net::Ipv4Addr::new(192, 0, 2, 1),
        )));
        RouteUpdate {
            announced: vec![(announced.iter().map(|p| net(p)).collect(), attrs)],
            withdrawn: withdrawn.iter().map(|p| net(p)).collect(),
        }
    }

    #[test]
    fn refused_announcements_become_withdrawals_and_are_listed_until_withdrawn() {
        let prot = protected(&[]);
        let policy = protecting();
        let mut refused = RefusedRoutes::default();
        let out = refused
            .filter(
                &policy,
                &prot,
                &update(&["10.244.2.0/29", "192.0.2.0/24"], &[]),
                None,
            )
            .expect("changed");
        assert_eq!(out.announced.len(), 1);
        assert_eq!(out.announced[0].0, [net("192.0.2.0/24")]);
        assert_eq!(out.withdrawn, [net("10.244.2.0/29")]);
        let listed: Vec<_> = refused.iter().map(|(p, w)| (*p, *w)).collect();
        assert_eq!(
            listed,
            [(
                net("10.244.2.0/29"),
                Refusal::Protected(net("10.244.0.0/16"))
            )]
        );
        // Nothing refused: the UPDATE goes as it is.
        let plain = update(&["198.51.100.0/24"], &[]);
        assert!(refused.filter(&policy, &prot, &plain, None).is_none());
        assert_eq!(refused.len(), 1);
        // Withdrawn by the peer: no longer listed.
        let gone = update(&[], &["10.244.2.0/29"]);
        assert!(refused.filter(&policy, &prot, &gone, None).is_none());
        assert!(refused.is_empty());
        // No policy: nothing changes, nothing is counted.
        let hijack = update(&["10.244.2.0/29"], &[]);
        let none = ImportPolicy::default();
        assert!(refused.filter(&none, &prot, &hijack, None).is_none());
        assert!(refused.is_empty());
    }

    #[test]
    fn a_refused_route_that_becomes_expected_is_released_with_its_attributes() {
        let policy = protecting();
        let mut refused = RefusedRoutes::default();
        let block = update(&["10.244.3.0/26"], &[]);
        refused.filter(&policy, &protected(&[]), &block, None);
        assert_eq!(refused.len(), 1);
        let out = refused.release(&policy, &protected(&["10.244.3.0/26"]));
        assert!(refused.is_empty());
        assert_eq!(out.announced.len(), 1);
        assert_eq!(out.announced[0].0, [net("10.244.3.0/26")]);
        assert!(Arc::ptr_eq(&out.announced[0].1, &block.announced[0].1));
        // Still refused: stays listed, nothing announced.
        refused.filter(&policy, &protected(&[]), &block, None);
        assert!(
            refused
                .release(&policy, &protected(&[]))
                .announced
                .is_empty()
        );
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn an_ebgp_loop_is_left_to_the_rib_and_not_counted() {
        let prot = protected(&[]);
        let policy = protecting();
        let mut looped = update(&["10.244.1.0/26"], &[]);
        let attrs = Arc::make_mut(&mut looped.announced[0].1);
        attrs.as_path = crate::codec::AsPath {
            segments: vec![crate::codec::AsSegment {
                kind: crate::codec::SegmentKind::Sequence,
                asns: vec![65000, 65001],
            }],
        };
        let mut refused = RefusedRoutes::default();
        assert!(
            refused
                .filter(&policy, &prot, &looped, Some(65001))
                .is_none()
        );
        assert!(refused.is_empty(), "a loop is no hijack");
        // Not our AS in the path (or an iBGP peer): the policy applies.
        assert!(
            refused
                .filter(&policy, &prot, &looped, Some(64512))
                .is_some()
        );
        assert_eq!(refused.len(), 1);
        refused.clear();
        assert!(refused.filter(&policy, &prot, &looped, None).is_some());
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn the_import_filter_applies_after_the_protection() {
        let policy = ImportPolicy {
            protect: true,
            allow: vec![net("10.244.0.0/16")],
            filter: PrefixFilter::new(vec![rule(true, "192.0.2.0/24", None, None)]),
        };
        let prot = protected(&[]);
        assert_eq!(policy.check(&prot, &net("192.0.2.0/24")), Ok(()));
        assert_eq!(
            policy.check(&prot, &net("10.244.1.0/26")),
            Err(Refusal::Filtered),
            "allowed past the protection, still filtered"
        );
        assert!(!policy.is_empty());
        assert!(ImportPolicy::default().is_empty());
    }
}
