//! Every store key IPAM reads or writes, in one place. All sit under
//! `/strait/v1/ipam/`, so one range read sees blocks and handles at one revision
//! (readers of that range pick their own sub-prefix: `blocks/`, `handles/`, `served/`).

use ipnet::IpNet;

use crate::store::PREFIX;

/// Prefix of every IPAM key.
pub fn ipam_prefix() -> String {
    format!("{PREFIX}ipam/")
}

/// Prefix of the block keys.
pub fn blocks_prefix() -> String {
    format!("{PREFIX}ipam/blocks/")
}

/// Prefix of the handle keys.
pub fn handles_prefix() -> String {
    format!("{PREFIX}ipam/handles/")
}

/// `ipam/served/<node>`: the pools `node` last started with (see `served`).
pub fn served(node: &str) -> String {
    format!("{PREFIX}ipam/served/{node}")
}

/// `ipam/blocks/10.0.0.0-26`: the cidr with `/` as `-`, so the key has no extra level.
pub fn block(cidr: &IpNet) -> String {
    format!(
        "{}{}-{}",
        blocks_prefix(),
        cidr.network(),
        cidr.prefix_len()
    )
}

/// `ipam/handles/<handle>`.
pub fn handle(handle: &str) -> String {
    format!("{}{handle}", handles_prefix())
}

/// The cidr a block key names, if `key` is a well-formed block key.
pub fn block_cidr(key: &str) -> Option<IpNet> {
    let rest = key.strip_prefix(&blocks_prefix())?;
    let (addr, len) = rest.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

/// The handle id a handle key names.
pub fn handle_id(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX)?.strip_prefix("ipam/handles/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_round_trip() {
        for c in ["10.0.0.64/26", "fd00:1::40/122"] {
            let cidr: IpNet = c.parse().unwrap();
            let k = block(&cidr);
            assert!(!k[blocks_prefix().len()..].contains('/'), "{k}");
            assert_eq!(block_cidr(&k), Some(cidr));
        }
        assert_eq!(
            block(&"10.0.0.64/26".parse().unwrap()),
            "/strait/v1/ipam/blocks/10.0.0.64-26"
        );
        assert_eq!(block_cidr("/strait/v1/ipam/blocks/garbage"), None);
    }

    #[test]
    fn handle_keys_round_trip() {
        let k = handle("net.c1.eth0");
        assert_eq!(k, "/strait/v1/ipam/handles/net.c1.eth0");
        assert_eq!(handle_id(&k), Some("net.c1.eth0"));
    }
}
