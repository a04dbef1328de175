//! The hook through which ADD puts policy in place before it answers (the rule:
//! an endpoint is never reachable without its policy). attach does not know the
//! policy control plane: it calls this trait, which the control plane implements
//! and the daemon hands the attacher ([`super::Attacher::set_enforcement`]).
//!
//! DEL needs no hook: the `Detached` event ([`super::events`]) tells the control
//! plane to remove the endpoint's entries.

use async_trait::async_trait;
use strait_api::Endpoint;

#[async_trait]
pub trait Enforcement: Send + Sync {
    /// Before the record is written: the endpoint's identity, to be written in it.
    async fn identity(&self, ep: &Endpoint) -> Result<u32, String>;

    /// Once the veth exists: enforcement live on it and the endpoint's tables
    /// installed. An error fails the ADD, which is undone.
    async fn enforce(
        &self,
        record_key: &str,
        ep: &Endpoint,
        host_ifindex: u32,
    ) -> Result<(), String>;
}
