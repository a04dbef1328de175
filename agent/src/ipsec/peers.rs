//! External IPsec peers (`ipsec/peers/<name>` in the store): the owner of those keys.
//! `netctl ipsec peer` writes them through the API; a peer is validated here before
//! it is written ([`ExternalPeer::validate`]), so a bad one is refused and nothing
//! changes. The gateway engine follows them with [`follow`].
//!
//! A record that does not decode or validate (written to the store by hand, or by a
//! newer agent) is logged and skipped wherever it is read, never used and never fatal.
//!
//! A pre-shared key is never logged: [`ExternalPeer`]'s `Debug` hides it, decoding
//! errors never quote it, and the log lines here name the peer and its method only.
//! [`psk`] gives the key itself, from the record or from its `secret_file`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use strait_api::gateway::{
    ExternalPeer, MIN_PSK_LEN, PeerAuth, peer_from_json, validate_all, validate_peer_name,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::{KeyValue, PREFIX, Store, StoreError, Txn, TxnOp};

/// A key file longer than this is not a pre-shared key (a certificate, a log).
const MAX_PSK_FILE_LEN: u64 = 4096;

/// The prefix of every external IPsec peer's key.
pub fn peers_prefix() -> String {
    format!("{PREFIX}ipsec/peers/")
}

/// The store key of peer `name`.
pub fn peer_key(name: &str) -> String {
    format!("{}{name}", peers_prefix())
}

/// The external peers as the gateway engine gets them: by name, keys included.
pub type Peers = BTreeMap<String, ExternalPeer>;

/// Why a change to the external IPsec peers was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IpsecPeerError {
    /// The request itself is wrong; nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("no external IPsec peer named {0:?}")]
    NotFound(String),
    /// The stored record is not one this agent can use (it is skipped everywhere).
    #[error(
        "external IPsec peer {name}: the stored record is unusable ({why}); put it again or delete it"
    )]
    Unusable { name: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads and writes `ipsec/peers/`.
#[derive(Clone)]
pub struct IpsecPeers {
    store: Arc<dyn Store>,
}

impl IpsecPeers {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Every usable peer, keys included (the API redacts them); unusable records are
    /// logged and left out.
    pub async fn list(&self) -> Result<Peers, IpsecPeerError> {
        let range = self.store.range(&peers_prefix()).await?;
        Ok(range.kvs.iter().filter_map(usable).collect())
    }

    /// One peer, key included.
    pub async fn get(&self, name: &str) -> Result<ExternalPeer, IpsecPeerError> {
        validate_peer_name(name).map_err(IpsecPeerError::Invalid)?;
        let Some(kv) = self.store.get(&peer_key(name)).await? else {
            return Err(IpsecPeerError::NotFound(name.to_string()));
        };
        decode(&kv.key, &kv.value).map_err(|why| IpsecPeerError::Unusable {
            name: name.to_string(),
            why,
        })
    }

    /// Creates the peer or replaces it whole; a peer that fails validation is
    /// refused and nothing is written.
    pub async fn put(&self, peer: &ExternalPeer) -> Result<(), IpsecPeerError> {
        self.apply(std::slice::from_ref(peer)).await
    }

    /// Creates or replaces every peer of `peers` in one transaction: all validated
    /// first (no name twice), so one bad peer leaves the store as it was.
    pub async fn apply(&self, peers: &[ExternalPeer]) -> Result<(), IpsecPeerError> {
        validate_all(peers).map_err(IpsecPeerError::Invalid)?;
        let ops = peers
            .iter()
            .map(|p| {
                let value = serde_json::to_vec(p)
                    .map_err(|e| IpsecPeerError::Invalid(format!("encoding peer: {e}")))?;
                Ok(TxnOp::Put {
                    key: peer_key(&p.name),
                    value,
                    lease: None,
                })
            })
            .collect::<Result<Vec<_>, IpsecPeerError>>()?;
        self.store.txn(Txn::new().and_then(ops)).await?;
        for p in peers {
            info!(
                peer = %p.name,
                site = %p.site,
                address = ?p.address,
                auth = method(&p.auth),
                "external IPsec peer set"
            );
        }
        Ok(())
    }

    /// Removes one peer; [`IpsecPeerError::NotFound`] when there is none.
    pub async fn delete(&self, name: &str) -> Result<(), IpsecPeerError> {
        validate_peer_name(name).map_err(IpsecPeerError::Invalid)?;
        if !self.store.delete(&peer_key(name)).await? {
            return Err(IpsecPeerError::NotFound(name.to_string()));
        }
        // What its gateways learned over BGP goes with it (the gateway deletes its own
        // record too when it stops carrying the peer; this also covers a dead one).
        super::gateway::learned::forget_peer(&*self.store, name).await?;
        info!(peer = %name, "external IPsec peer removed");
        Ok(())
    }
}

/// `psk`, `psk-file` or `cert`: what the log says of a peer's authentication.
fn method(auth: &PeerAuth) -> &'static str {
    match auth {
        PeerAuth::Psk {
            secret: Some(_), ..
        } => "psk",
        PeerAuth::Psk { .. } => "psk-file",
        PeerAuth::Cert { .. } => "cert",
    }
}

/// The peer a stored record holds, if this agent can use it: it decodes, validates,
/// and its name is the one in its key. The error never quotes a key.
pub fn decode(key: &str, value: &[u8]) -> Result<ExternalPeer, String> {
    let peer = peer_from_json(value)?;
    peer.validate()?;
    let named = key.strip_prefix(&peers_prefix()).unwrap_or(key);
    if peer.name != named {
        return Err(format!(
            "the record names itself {:?}, its key {named:?}",
            peer.name
        ));
    }
    Ok(peer)
}

/// One stored record as (name, peer), or `None` (logged) when it is unusable.
fn usable(kv: &KeyValue) -> Option<(String, ExternalPeer)> {
    match decode(&kv.key, &kv.value) {
        Ok(p) => Some((p.name.clone(), p)),
        Err(why) => {
            warn!(key = %kv.key, error = %why, "skipping an unusable external IPsec peer record");
            None
        }
    }
}

/// Keeps `peers` equal to the usable records under `ipsec/peers/` until `stop` (`None`
/// until the first read); see [`crate::store::follow`].
pub async fn follow(
    store: Arc<dyn Store>,
    peers: watch::Sender<Option<Peers>>,
    stop: watch::Receiver<bool>,
) {
    let usable = |kv: &KeyValue| usable(kv).map(|(_, p)| p);
    crate::store::follow::follow(store, peers_prefix(), usable, peers, stop).await
}

/// The pre-shared key of a `psk` peer: the record's `secret`, or the contents of its
/// `secret_file` (see [`read_secret_file`]). The error is in plain words and never
/// holds the key.
pub fn psk(peer: &ExternalPeer) -> Result<Vec<u8>, String> {
    match &peer.auth {
        PeerAuth::Psk {
            secret: Some(s), ..
        } => Ok(s.as_bytes().to_vec()),
        PeerAuth::Psk {
            secret_file: Some(path),
            ..
        } => read_secret_file(path).map_err(|e| format!("peer {}: {e}", peer.name)),
        PeerAuth::Psk { .. } => Err(format!(
            "peer {}: psk needs a secret or a secret_file",
            peer.name
        )),
        PeerAuth::Cert { .. } => Err(format!(
            "peer {} authenticates by certificate, not by pre-shared key",
            peer.name
        )),
    }
}

/// A pre-shared key kept in a file on the gateway: an absolute path to a regular
/// file that only its owner may read (mode 0600 or stricter) and that root (or the
/// agent's own user) owns; one trailing newline is dropped; empty or shorter than
/// [`MIN_PSK_LEN`] is refused. A file others could read is refused, not tightened:
/// the key may have been copied.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("secret_file {shown}: give an absolute path"));
    }
    // Non-blocking: a FIFO put there must not hang the caller until someone writes.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("secret_file {shown}: {e}"))?;
    // The checks are on the file opened, not on the path: nothing can swap it between.
    let meta = file
        .metadata()
        .map_err(|e| format!("secret_file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("secret_file {shown}: not a regular file"));
    }
    check_owner_and_mode(meta.uid(), meta.mode(), agent_uid())
        .map_err(|e| format!("secret_file {shown}: {e}"))?;
    let mut key = Vec::new();
    file.take(MAX_PSK_FILE_LEN + 1)
        .read_to_end(&mut key)
        .map_err(|e| format!("secret_file {shown}: {e}"))?;
    if key.len() as u64 > MAX_PSK_FILE_LEN {
        return Err(format!(
            "secret_file {shown}: longer than {MAX_PSK_FILE_LEN} bytes, not a pre-shared key"
        ));
    }
    if key.ends_with(b"\r\n") {
        key.truncate(key.len() - 2);
    } else if key.ends_with(b"\n") {
        key.truncate(key.len() - 1);
    }
    if key.is_empty() {
        return Err(format!("secret_file {shown}: empty"));
    }
    if key.len() < MIN_PSK_LEN {
        return Err(format!(
            "secret_file {shown}: the pre-shared key has {} bytes; give at least {MIN_PSK_LEN}",
            key.len()
        ));
    }
    Ok(key)
}

/// The agent's effective uid: the owner of `/proc/self`.
fn agent_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// A key file must be its owner's alone, and the owner root or the agent's user.
fn check_owner_and_mode(owner: u32, mode: u32, agent: u32) -> Result<(), String> {
    let mode = mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o} lets others than its owner read the pre-shared key; \
             it may have been copied: make a new key, and `chmod 600` the file"
        ));
    }
    if owner != 0 && owner != agent {
        return Err(format!(
            "owned by uid {owner}, not by root: whoever owns it can change the key \
             (`chown root` the file)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use strait_api::gateway::Initiate;

    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use std::time::Duration;

    const KEY: &str = "correct horse battery staple";

    fn peer(name: &str) -> ExternalPeer {
        ExternalPeer {
            name: name.into(),
            site: "dc".into(),
            address: Some("198.51.100.7".parse().unwrap()),
            initiate: Initiate::Both,
            auth: PeerAuth::Psk {
                secret: Some(KEY.into()),
                secret_file: None,
            },
            local_id: None,
            remote_id: Some("fqdn:gw.onprem.example".into()),
            local_networks: vec![],
            remote_networks: vec!["192.168.50.0/24".parse().unwrap()],
            bgp: None,
        }
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_peer_is_written_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let peers = IpsecPeers::new(store(&dir).await);
        peers.put(&peer("onprem")).await.unwrap();
        assert_eq!(peers.get("onprem").await.unwrap(), peer("onprem"));
        let all = peers.list().await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["onprem"]);
        peers.delete("onprem").await.unwrap();
        assert!(matches!(
            peers.get("onprem").await,
            Err(IpsecPeerError::NotFound(_))
        ));
        assert!(matches!(
            peers.delete("onprem").await,
            Err(IpsecPeerError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_bad_peer_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let peers = IpsecPeers::new(store.clone());
        peers.put(&peer("onprem")).await.unwrap();
        let before = store.revision().await.unwrap();
        let mut bad = peer("onprem");
        bad.remote_networks.clear();
        let e = peers.put(&bad).await.unwrap_err();
        assert!(
            matches!(&e, IpsecPeerError::Invalid(m) if m.contains("nothing would go")),
            "{e}"
        );
        // A list with one bad peer: none of it is written.
        let mut short = peer("b");
        short.auth = PeerAuth::Psk {
            secret: Some("short".into()),
            secret_file: None,
        };
        let e = peers.apply(&[peer("a"), short]).await.unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        let e = peers.apply(&[peer("a"), peer("a")]).await.unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert_eq!(store.revision().await.unwrap(), before, "nothing written");
        assert_eq!(peers.get("onprem").await.unwrap(), peer("onprem"));
        assert!(matches!(
            peers.delete("Bad Name").await,
            Err(IpsecPeerError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn an_unusable_record_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let peers = IpsecPeers::new(store.clone());
        peers.put(&peer("good")).await.unwrap();
        // Written by hand: too short a key, and a record under another name's key.
        let mut weak = peer("weak");
        weak.auth = PeerAuth::Psk {
            secret: Some("short".into()),
            secret_file: None,
        };
        let raw = serde_json::to_vec(&weak).unwrap();
        store.put(&peer_key("weak"), raw, None).await.unwrap();
        let other = serde_json::to_vec(&peer("other")).unwrap();
        store.put(&peer_key("alias"), other, None).await.unwrap();
        store
            .put(&peer_key("junk"), b"{not json".to_vec(), None)
            .await
            .unwrap();
        let all = peers.list().await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["good"]);
        let e = peers.get("weak").await.unwrap_err();
        assert!(e.to_string().contains("unusable"), "{e}");
        let e = peers.get("alias").await.unwrap_err();
        assert!(e.to_string().contains("names itself"), "{e}");
    }

    #[tokio::test]
    async fn follow_gives_the_list_then_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let peers = IpsecPeers::new(store.clone());
        peers.put(&peer("a")).await.unwrap();
        let (tx, mut rx) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(store.clone(), tx, stop));
        let names = |p: &Option<Peers>| {
            p.as_ref()
                .map(|p| p.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let wait = async |rx: &mut watch::Receiver<Option<Peers>>, want: &[&str]| {
            tokio::time::timeout(
                Duration::from_secs(5),
                rx.wait_for(|p| p.is_some() && names(p) == want),
            )
            .await
            .unwrap_or_else(|_| panic!("followed to {want:?}"))
            .unwrap();
        };
        wait(&mut rx, &["a"]).await;
        peers.put(&peer("b")).await.unwrap();
        wait(&mut rx, &["a", "b"]).await;
        // A good record spoiled by hand leaves the set; the follower goes on.
        store
            .put(&peer_key("a"), b"{\"name\":\"a\"}".to_vec(), None)
            .await
            .unwrap();
        wait(&mut rx, &["b"]).await;
        peers.delete("b").await.unwrap();
        wait(&mut rx, &[]).await;
        let mut changed = peer("c");
        peers.put(&changed).await.unwrap();
        wait(&mut rx, &["c"]).await;
        changed.remote_networks = vec!["10.9.0.0/16".parse().unwrap()];
        peers.put(&changed).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|p| p.as_ref().and_then(|p| p.get("c")) == Some(&changed)),
        )
        .await
        .expect("a replaced peer is followed")
        .unwrap();
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    fn key_file(dir: &tempfile::TempDir, contents: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.path().join("peer.psk");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn file_peer(path: &Path) -> ExternalPeer {
        let mut p = peer("onprem");
        p.auth = PeerAuth::Psk {
            secret: None,
            secret_file: Some(path.into()),
        };
        p
    }

    #[test]
    fn the_key_comes_from_the_record_or_from_a_private_file() {
        assert_eq!(psk(&peer("onprem")).unwrap(), KEY.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(&dir, format!("{KEY}\n").as_bytes(), 0o600);
        assert_eq!(psk(&file_peer(&path)).unwrap(), KEY.as_bytes());
        let path = key_file(&dir, format!("{KEY}\r\n").as_bytes(), 0o400);
        assert_eq!(psk(&file_peer(&path)).unwrap(), KEY.as_bytes());
        // Only one newline is the file's ending; a second is part of the key.
        let path = key_file(&dir, format!("{KEY}\n\n").as_bytes(), 0o600);
        assert_eq!(
            psk(&file_peer(&path)).unwrap(),
            format!("{KEY}\n").as_bytes()
        );
    }

    #[test]
    fn a_key_file_others_could_read_or_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let path = key_file(&dir, KEY.as_bytes(), mode);
            let e = psk(&file_peer(&path)).unwrap_err();
            assert!(
                e.contains("lets others than its owner read") && e.contains("chmod 600"),
                "{mode:o}: {e}"
            );
            assert!(!e.contains(KEY), "{e}");
        }
        // Owners: root and the agent's own user only.
        assert!(check_owner_and_mode(0, 0o100600, 0).is_ok());
        assert!(check_owner_and_mode(1000, 0o100600, 1000).is_ok());
        let e = check_owner_and_mode(1000, 0o100600, 0).unwrap_err();
        assert!(e.contains("owned by uid 1000, not by root"), "{e}");
        // The same through a real file, where this test may change its owner.
        if agent_uid() == 0 {
            let path = key_file(&dir, KEY.as_bytes(), 0o600);
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let e = psk(&file_peer(&path)).unwrap_err();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn an_empty_short_missing_or_odd_key_file_is_refused_in_plain_words() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 3] = [
            (b"", "empty"),
            (b"\n", "empty"),
            (b"short\n", "has 5 bytes; give at least 16"),
        ];
        for (contents, want) in cases {
            let path = key_file(&dir, contents, 0o600);
            let e = psk(&file_peer(&path)).unwrap_err();
            assert!(e.contains(want), "{e} (want {want:?})");
            assert!(e.starts_with("peer onprem: secret_file /"), "{e}");
        }
        let big = vec![b'k'; MAX_PSK_FILE_LEN as usize + 1];
        let path = key_file(&dir, &big, 0o600);
        assert!(psk(&file_peer(&path)).unwrap_err().contains("longer than"));
        let e = psk(&file_peer(&dir.path().join("absent.psk"))).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        let e = read_secret_file(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_secret_file(Path::new("peer.psk")).unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
        let mut cert = peer("cloud");
        cert.auth = PeerAuth::Cert {
            cert_file: "/c".into(),
            key_file: "/k".into(),
            ca_file: "/a".into(),
        };
        assert!(psk(&cert).unwrap_err().contains("by certificate"));
    }
}
