//! [`HostNet`] on the real kernel: rtnetlink in the agent's namespace and, for the
//! container's end, in the container's (entered on a fresh thread by
//! [`crate::netns`]).

use std::path::Path;

use super::{HostNet, NetnsState};
use crate::endpoint::{self, CheckError, EndpointError, VethCreated, VethSpec};
use crate::netlink::Netlink;
use crate::netns;

impl HostNet for Netlink {
    async fn create_endpoint(&self, spec: &VethSpec) -> Result<VethCreated, EndpointError> {
        endpoint::setup(self, spec).await
    }

    async fn check_endpoint(&self, spec: &VethSpec) -> Result<(), CheckError> {
        endpoint::check(self, spec).await
    }

    async fn delete_link(&self, name: &str) -> Result<(), EndpointError> {
        endpoint::delete_link(self, name).await
    }

    async fn delete_links(&self, names: &[String]) -> Result<(), EndpointError> {
        endpoint::delete_links(self, names).await
    }

    async fn endpoint_links(&self) -> Result<Vec<(String, u32)>, EndpointError> {
        endpoint::list_owned_links(self).await
    }

    fn netns_state(&self, path: &Path) -> NetnsState {
        if !path.exists() {
            return NetnsState::Missing;
        }
        match netns::is_same_as_current(path) {
            Ok(true) => NetnsState::Host,
            Ok(false) => NetnsState::Usable,
            Err(e) => NetnsState::Unusable(e.to_string()),
        }
    }

    fn forwarding_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (file, what) in [
            ("/proc/sys/net/ipv4/ip_forward", "IPv4 forwarding is off"),
            (
                "/proc/sys/net/ipv6/conf/all/forwarding",
                "IPv6 forwarding is off",
            ),
        ] {
            match std::fs::read_to_string(file) {
                Ok(v) if v.trim() == "1" => {}
                Ok(_) => problems.push(what.to_string()),
                // No IPv6 in this kernel or namespace: nothing to forward.
                Err(_) => {}
            }
        }
        problems
    }
}
