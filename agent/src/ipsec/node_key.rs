//! This node's IPsec identity: an Ed25519 key pair (RFC 8032) made on the agent's
//! first start and kept in the state dir (`ipsec/node-ed25519.p8`, PKCS#8, mode 0600,
//! directory 0700). Its public half goes into the node record; other nodes check this
//! node's IKE_AUTH signatures (RFC 7427) against it. The private key is never logged,
//! never sent, never put in the store, and its type prints as `NodeKey(<redacted>)`.
//!
//! A key file anyone but its owner could read is refused, not tightened: the key may
//! have been copied, and a copied key lets another host pass as this node. The error
//! says how to make a new one (remove the file; peers take the new public key from the
//! record and re-authenticate).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use strait_api::ipsec::ED25519_PUBLIC_KEY_LEN;
use zeroize::Zeroizing;

use crate::private;

/// The key file, relative to the state dir.
pub const KEY_FILE: &str = "ipsec/node-ed25519.p8";

/// Why the node key could not be loaded or made. Nothing was changed on disk.
#[derive(Debug, thiserror::Error)]
pub enum NodeKeyError {
    #[error(
        "{path}: mode {mode:04o} lets others than its owner read this node's private IPsec key; \
         it may have been copied. Remove the file to make a new key (peers re-authenticate \
         with the new public key from the node record)"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error(
        "{path}: owned by uid {owner}, not by the agent's uid {agent}; remove it to make a new key"
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
    #[error("{path}: not an Ed25519 PKCS#8 key ({why}); remove it to make a new key")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making a key: the system's random source failed")]
    Random,
}

/// This node's Ed25519 key pair.
pub struct NodeKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    /// The key in `state_dir`, made and written first if there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, NodeKeyError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| NodeKeyError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            private::dir(dir).map_err(io)?;
        }
        match std::fs::metadata(&path) {
            Ok(meta) => Self::load(&path, &meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(io(e)),
        }
    }

    fn load(path: &Path, meta: &std::fs::Metadata) -> Result<Self, NodeKeyError> {
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(NodeKeyError::LoosePermissions {
                path: path.into(),
                mode,
            });
        }
        // The owner of /proc/self is this process's effective uid.
        let agent = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        if meta.uid() != agent {
            return Err(NodeKeyError::WrongOwner {
                path: path.into(),
                owner: meta.uid(),
                agent,
            });
        }
        let pkcs8 = Zeroizing::new(std::fs::read(path).map_err(|source| NodeKeyError::Io {
            path: path.into(),
            source,
        })?);
        Self::from_pkcs8(pkcs8).map_err(|why| NodeKeyError::Corrupt {
            path: path.into(),
            why,
        })
    }

    /// Makes a key and writes it whole or not at all: to a temporary file created
    /// 0600 (never readable by others, not even for a moment), synced, then renamed.
    fn create(path: &Path) -> Result<Self, NodeKeyError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| NodeKeyError::Random)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let tmp = path.with_extension("p8.tmp");
        let io = |source| NodeKeyError::Io {
            path: tmp.clone(),
            source,
        };
        // A temporary file left by a crash mid-write holds no key anyone uses.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(private::FILE_MODE)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&pkcs8).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        tracing::info!(path = %path.display(), "made this node's IPsec key");
        Self::from_pkcs8(pkcs8).map_err(|why| NodeKeyError::Corrupt {
            path: path.into(),
            why,
        })
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|e| e.to_string())?;
        Ok(NodeKey { pkcs8, pair })
    }

    /// The public key, as the node record carries it.
    pub fn public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes")
    }

    /// The key pair, for IKE_AUTH's signatures.
    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// The PKCS#8 document, for a signer that wants its own copy of the key.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use ring::signature::{ED25519, UnparsedPublicKey};

    use super::*;

    #[test]
    fn made_once_then_loaded_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let made = NodeKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let loaded = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(made.public_key(), loaded.public_key());
        // The loaded key signs what the published public key verifies.
        let sig = loaded.pair().sign(b"signed octets");
        UnparsedPublicKey::new(&ED25519, made.public_key())
            .verify(b"signed octets", sig.as_ref())
            .unwrap();
    }

    #[test]
    fn debug_never_shows_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(format!("{key:?}"), "NodeKey(<redacted>)");
    }

    #[test]
    fn a_key_others_can_read_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let made = NodeKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            NodeKeyError::LoosePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("Remove the file"), "{err}");
        // Nothing changed: the same key, the same mode.
        assert_eq!(std::fs::read(&path).unwrap(), made.pkcs8());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn a_corrupt_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        NodeKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"not a key").unwrap();
        let err = NodeKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, NodeKeyError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn two_nodes_get_different_keys() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ka = NodeKey::load_or_create(a.path()).unwrap();
        let kb = NodeKey::load_or_create(b.path()).unwrap();
        assert_ne!(ka.public_key(), kb.public_key());
    }
}
