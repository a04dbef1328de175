//! A one-host test bed: a namespace playing the host, a `straitd` in it, and helpers to
//! make container namespaces and drive the `strait` CNI binary against that agent.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use strait_api::{Endpoint, IpamView, paths};

use crate::agent::{Agent, AgentOpts};
use crate::cni::{CniCall, CniOutcome};
use crate::netns::Netns;

/// One host with its agent. Dropping it kills the agent and deletes every namespace.
pub struct Host {
    pub prefix: String,
    // Drop order: the agent is killed (and its namespace lock removed) before its
    // namespace goes.
    pub agent: Agent,
    pub ns: Netns,
    /// Network name used in CNI configs.
    pub network: String,
    pub cni_version: String,
    containers: Vec<Netns>,
    next: u32,
    // Last: removed after the agent is gone.
    _dir: tempfile::TempDir,
}

impl Host {
    /// A host with an agent on `pools`, ready.
    pub fn new(pools: &[&str]) -> Self {
        Self::with_opts(|_| {}, pools)
    }

    /// Like [`Host::new`], letting the caller adjust the agent's options.
    pub fn with_opts(adjust: impl FnOnce(&mut AgentOpts), pools: &[&str]) -> Self {
        crate::netns::reap_leftovers();
        let prefix = crate::unique_prefix();
        let ns = Netns::new(format!("{prefix}h"));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("temp dir");
        let mut opts = AgentOpts::new("node1", pools);
        adjust(&mut opts);
        let agent = Agent::start(&ns, dir.path(), opts);
        Self {
            prefix,
            ns,
            agent,
            network: "stnet".into(),
            cni_version: "1.1.0".into(),
            containers: vec![],
            next: 0,
            _dir: dir,
        }
    }

    /// A new container namespace, deleted with the host.
    pub fn container_ns(&mut self) -> PathBuf {
        let ns = Netns::new(format!("{}c{}", self.prefix, self.next));
        self.next += 1;
        let path = ns.path();
        self.containers.push(ns);
        path
    }

    /// The container namespace at `path`, for running commands in it.
    pub fn container(&self, path: &Path) -> &Netns {
        self.containers
            .iter()
            .find(|n| n.path() == path)
            .unwrap_or_else(|| panic!("no container netns {}", path.display()))
    }

    /// Remove a container namespace now (the "netns vanished" cases).
    pub fn delete_container_ns(&mut self, path: &Path) {
        self.containers.retain(|n| n.path() != path);
    }

    /// The plugin config for this host's agent.
    pub fn config(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.network,
            "type": "strait",
            "socket": self.agent.socket,
            "stateDir": self.agent.state_dir,
        })
    }

    pub fn call(&self, command: &str, container_id: &str, netns: &Path) -> CniCall {
        CniCall::new(command, self.config()).container(container_id, netns)
    }

    /// ADD and return the result (panics on failure).
    pub fn add(&self, container_id: &str, netns: &Path) -> Value {
        self.call("ADD", container_id, netns).run().expect_ok()
    }

    pub fn del(&self, container_id: &str, netns: &Path) -> CniOutcome {
        self.call("DEL", container_id, netns).run()
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.agent
            .client()
            .get(paths::ENDPOINTS)
            .expect("GET endpoints")
    }

    pub fn ipam(&self) -> IpamView {
        self.agent.client().get(paths::IPAM).expect("GET ipam")
    }

    /// Addresses allocated across all pools.
    pub fn used_addresses(&self) -> u128 {
        self.ipam().pools.iter().map(|p| p.used).sum()
    }

    /// `strait*` links in the host namespace.
    pub fn strait_links(&self) -> Vec<String> {
        self.ns
            .links()
            .into_iter()
            .filter(|l| l.starts_with("strait"))
            .collect()
    }

    /// Wait (up to 60 s) until no `strait*` link is left: DEL deletes veths in the
    /// background after answering, and the kernel deletes them one RCU grace period
    /// at a time (15–30 ms each here), so hundreds take seconds.
    pub fn wait_no_strait_links(&self) -> Vec<String> {
        self.wait_strait_links(0)
    }

    /// Wait (up to 60 s) until at most `n` `strait*` links are left; return them.
    pub fn wait_strait_links(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let links = self.strait_links();
            if links.len() <= n || std::time::Instant::now() > deadline {
                return links;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The first address of the given family in a CNI result's `ips`.
pub fn result_ip(result: &Value, v6: bool) -> Option<String> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let addr = ip["address"].as_str()?;
        let a = addr.split('/').next()?;
        (a.contains(':') == v6).then(|| a.to_string())
    })
}
