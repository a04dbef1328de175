//! CNI STATUS and `/readyz`: can this agent serve ADDs, and is its data plane whole?

use strait_api::{Readiness, code};

use super::Attacher;
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    /// 50 when the agent cannot serve ADDs (still starting, store unreachable, pools
    /// exhausted), 51 when it serves but the data plane is degraded.
    pub async fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        let mut code = 0;
        if self.is_starting() {
            reasons.push("agent is starting".to_string());
            code = code::NOT_AVAILABLE;
        }
        match self.store.revision().await {
            Ok(_) => {
                if !self.ipam.has_free_address().await {
                    reasons.push("every address pool is exhausted".into());
                    code = code::NOT_AVAILABLE;
                }
            }
            Err(e) => {
                reasons.push(format!("store unreachable: {e}"));
                code = code::NOT_AVAILABLE;
            }
        }
        if code == 0 {
            for problem in self.host.forwarding_problems() {
                reasons.push(problem);
                code = code::LIMITED_CONNECTIVITY;
            }
        }
        Readiness {
            ready: code == 0,
            code,
            reasons,
        }
    }
}
