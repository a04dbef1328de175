//! Who wrote a stored object: `netctl` (the default, and every object written before
//! origins existed) or the agent's Kubernetes integration, which mirrors the API
//! server's objects and owns them: `kubectl` changes those, `netctl` does not.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Netctl,
    Kubernetes,
}

impl Origin {
    pub fn is_netctl(&self) -> bool {
        *self == Origin::Netctl
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Netctl => "netctl",
            Origin::Kubernetes => "kubernetes",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_reads_as_netctl_and_names_round_trip() {
        #[derive(Deserialize)]
        struct V {
            #[serde(default)]
            origin: Origin,
        }
        let v: V = serde_json::from_str("{}").unwrap();
        assert_eq!(v.origin, Origin::Netctl);
        let v: V = serde_json::from_str(r#"{"origin":"kubernetes"}"#).unwrap();
        assert_eq!(v.origin, Origin::Kubernetes);
        assert!(serde_json::from_str::<V>(r#"{"origin":"etcdctl"}"#).is_err());
        assert_eq!(Origin::Kubernetes.to_string(), "kubernetes");
    }
}
