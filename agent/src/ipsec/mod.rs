//! IPsec between sites: which node pairs encrypt, and this node's identity for IKE.
//!
//! - [`settings`]: the cluster-wide mode (`ipsec/settings`, `netctl ipsec mode`).
//! - [`node_key`]: this node's Ed25519 key pair, made on first start in the state dir;
//!   its public half goes into the node record, where peers look it up.
//! - [`pairs`]: from the mode and the node records, the peers this node encrypts with.
//! - [`peers`]: the external IPsec peers of the site gateways (`ipsec/peers/<name>`,
//!   `netctl ipsec peer`), followed for the gateway engine; their pre-shared keys.
//! - [`follow`]: a store prefix followed into a `watch` channel (external peers, the
//!   routes gateways learned).
//! - [`steering`]: the rule and routes that send their traffic into the ESP datapath.
//! - [`datapath`]: kernel XFRM or strait's userspace ESP, by probe or `--ipsec-datapath`.
//! - [`gateway`]: the site gateway: which gateway carries each external peer, each
//!   node's routes for it, and one IKE speaker per carried peer.
//! - [`child_sa`]: a negotiated Child SA into the datapath, and the held-back outbound
//!   SAs of rekeys the peer asked for (node and external peers alike).
//! - [`view`]: a peer's SAs as `netctl ipsec peers` shows them.
//! - [`engine`]: the task that drives the IKE speakers and the datapath from all of that.
//!
//! The IKEv2 speaker is the `strait-ike` crate and the ESP datapaths are `strait-esp`;
//! this module is where the agent ties them to the node registry.

pub mod child_sa;
pub mod datapath;
pub mod engine;
pub mod gateway;
pub mod node_key;
pub mod pairs;
pub mod peers;
pub mod settings;
pub mod steering;
pub mod view;

pub use engine::{Engine, EngineConfig, IpsecHandle};
pub use node_key::{NodeKey, NodeKeyError};
pub use pairs::{EncryptedPeer, PlannedPeer, encrypted_peers, plan};
pub use peers::{IpsecPeerError, IpsecPeers};
pub use settings::{IpsecSettingsStore, settings_key};
