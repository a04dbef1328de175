//! The pending-release queue: where DEL leaves its request when the agent is down, so
//! the addresses are released when the agent starts instead of leaking.
//!
//! One JSON file per attachment (a [`DelRequest`]) in
//! `<stateDir>/pending-release/`. Repeated DELs of one attachment overwrite one file.
//! Files appear whole or not at all: the request is written to a dot-file ending in
//! `.tmp`, synced, then renamed to its `.json` name, and the directory is synced so the
//! entry survives a crash. The plugin writes with [`enqueue`]; the agent reads with
//! [`pending`], which only ever looks at `*.json` names, and removes what it applied.
//!
//! The plugin finds the queue without the network config repeating the agent's
//! `--state-dir`: the agent writes the *locator*, `<socket>.state`, beside its socket at
//! start ([`write_locator`]), naming its state dir, and leaves it when it stops, so a
//! DEL made while it is down still finds the queue the next agent will drain
//! ([`read_locator`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::DelRequest;

/// The locator beside an agent's socket: `<socket>.state`.
pub fn locator_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

/// What the locator says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// The agent's state dir: its queue is [`dir`] of it.
    pub state_dir: PathBuf,
}

/// Writes the locator beside `socket`, whole or not at all (temp file, rename).
pub fn write_locator(socket: &Path, state_dir: &Path) -> io::Result<PathBuf> {
    let path = locator_path(socket);
    let tmp = {
        let mut t = path.as_os_str().to_owned();
        t.push(format!(".{}.tmp", std::process::id()));
        PathBuf::from(t)
    };
    let body = serde_json::to_vec(&Locator {
        state_dir: state_dir.to_path_buf(),
    })
    .map_err(io::Error::other)?;
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// The state dir the agent serving `socket` drains, when it left a locator there.
/// No file is `Ok(None)`; a file that does not parse is an error naming it.
pub fn read_locator(socket: &Path) -> io::Result<Option<Locator>> {
    let path = locator_path(socket);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The queue directory under a state dir.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::PENDING_RELEASE_DIR)
}

/// The file name of a queued DEL: readable parts, then a hash of the exact
/// (network, containerID, ifname) triple so names stay distinct after unsafe
/// characters are replaced or long parts are shortened.
pub fn file_name(req: &DelRequest) -> String {
    let mut readable = format!(
        "{}_{}_{}",
        sanitize(&req.network),
        sanitize(&req.container_id),
        sanitize(&req.ifname)
    );
    // Stay well under NAME_MAX (255) with room for the hash, the suffix and the temp
    // file's decorations. Everything is ASCII after sanitising, so this is a char
    // boundary.
    readable.truncate(180);
    let hash = fnv1a64(&[&req.network, &req.container_id, &req.ifname]);
    format!("{readable}.{hash:016x}.json")
}

/// Keep `[A-Za-z0-9_.-]`, replace anything else with `-`. A leading '.' is replaced
/// too, so no name is hidden or is "." / "..".
fn sanitize(part: &str) -> String {
    part.chars()
        .enumerate()
        .map(|(i, c)| match c {
            '.' if i == 0 => '-',
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => c,
            _ => '-',
        })
        .collect()
}

/// FNV-1a, 64 bit, over the parts with a 0 byte between them (no part contains one:
/// they come from environment variables and JSON strings we validated). Chosen because
/// it is stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        let separator: &[u8] = if i > 0 { &[0] } else { &[] };
        for b in separator.iter().copied().chain(part.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Queue `req` under `state_dir`, atomically. Returns the file's path.
pub fn enqueue(state_dir: &Path, req: &DelRequest) -> io::Result<PathBuf> {
    let dir = dir(state_dir);
    fs::create_dir_all(&dir)?;
    let name = file_name(req);
    let path = dir.join(&name);
    // Per-process temp name: two DELs of the same attachment racing each write their
    // own temp file, and the last rename wins with a whole file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let body = serde_json::to_vec(req).map_err(io::Error::other)?;

    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    };
    write().inspect_err(|_| {
        // Best effort: a stray temp file is harmless, but don't leave one needlessly.
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// Remove a queued DEL that has since been delivered to the agent. Already gone is
/// fine: the agent may have drained it first.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One queued DEL, as [`pending`] read it.
#[derive(Debug)]
pub struct Queued {
    pub path: PathBuf,
    pub request: DelRequest,
    /// When it was queued (the file's modification time, seconds since the epoch);
    /// `None` when the file system cannot say.
    pub queued_at: Option<u64>,
}

impl Queued {
    /// The request was applied (or is moot): it leaves the queue.
    pub fn done(&self) {
        let _ = remove(&self.path);
    }
}

/// A queued file that is not a DEL request; [`pending`] renamed it to `.bad` so it is
/// kept for an operator and not read again.
#[derive(Debug)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
}

/// What the queue under `state_dir` holds now.
#[derive(Debug, Default)]
pub struct Pending {
    pub requests: Vec<Queued>,
    pub unreadable: Vec<Unreadable>,
}

/// Reads every queued DEL under `state_dir`. No queue directory is an empty queue.
pub fn pending(state_dir: &Path) -> io::Result<Pending> {
    let entries = match fs::read_dir(dir(state_dir)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pending::default()),
        Err(e) => return Err(e),
    };
    let mut out = Pending::default();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let read = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<DelRequest>(&b).map_err(|e| e.to_string()));
        match read {
            Ok(request) => {
                let queued_at = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                out.requests.push(Queued {
                    path,
                    request,
                    queued_at,
                });
            }
            Err(error) => {
                let _ = fs::rename(&path, path.with_extension("bad"));
                out.unreadable.push(Unreadable { path, error });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(network: &str, cid: &str, ifname: &str) -> DelRequest {
        DelRequest {
            network: network.into(),
            container_id: cid.into(),
            ifname: ifname.into(),
            netns: None,
        }
    }

    #[test]
    fn names_are_readable_and_safe() {
        let n = file_name(&req("podnet", "b00eb8ba7f21", "eth0"));
        assert!(n.starts_with("podnet_b00eb8ba7f21_eth0."), "{n}");
        assert!(n.ends_with(".json"), "{n}");
        let odd = file_name(&req("n", "c1", "e/../x y%é"));
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
            "{odd}"
        );
        assert!(!odd.contains('/'));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let a = file_name(&req("n", "c1", "eth0"));
        assert_eq!(a, file_name(&req("n", "c1", "eth0")));
        // Same after sanitising, different attachments: the hash keeps them apart.
        assert_ne!(
            file_name(&req("n", "c1", "eth%0")),
            file_name(&req("n", "c1", "eth-0"))
        );
        // Underscores are separators in the readable part; the hash disambiguates.
        assert_ne!(
            file_name(&req("n_c", "1", "eth0")),
            file_name(&req("n", "c_1", "eth0"))
        );
        // The same pair on another network is another file.
        assert_ne!(a, file_name(&req("m", "c1", "eth0")));
    }

    #[test]
    fn long_names_fit_name_max() {
        let n = file_name(&req(&"n".repeat(200), &"c".repeat(200), "eth0"));
        assert!(n.len() < 220, "{}", n.len());
        assert!(n.ends_with(".json"));
    }

    #[test]
    fn hash_is_pinned() {
        // The agent never recomputes names, but a changed hash would orphan files
        // queued by an older plugin version on upgrade: pin it.
        assert_eq!(fnv1a64(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&["a"]), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn enqueue_writes_the_request_atomically() {
        let state = tempfile::tempdir().unwrap();
        let mut r = req("n", "c1", "eth0");
        r.netns = Some("/run/netns/x".into());
        let path = enqueue(state.path(), &r).unwrap();
        assert_eq!(path.parent().unwrap(), dir(state.path()));
        let back: DelRequest = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, r);
        // Overwrites in place, no temp files left behind.
        r.netns = None;
        assert_eq!(enqueue(state.path(), &r).unwrap(), path);
        let names: Vec<_> = fs::read_dir(dir(state.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let back: DelRequest = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.netns, None);
        remove(&path).unwrap();
        remove(&path).unwrap();
    }
    #[test]
    fn the_locator_names_the_state_dir_beside_the_socket() {
        let run = tempfile::tempdir().unwrap();
        let socket = run.path().join("strait.sock");
        assert_eq!(read_locator(&socket).unwrap(), None, "no agent yet");
        let path = write_locator(&socket, Path::new("/srv/strait-state")).unwrap();
        assert_eq!(path, run.path().join("strait.sock.state"));
        assert_eq!(
            read_locator(&socket).unwrap(),
            Some(Locator {
                state_dir: "/srv/strait-state".into()
            })
        );
        fs::write(&path, b"{").unwrap();
        let e = read_locator(&socket).unwrap_err();
        assert!(e.to_string().contains("strait.sock.state"), "{e}");
    }

    #[test]
    fn pending_reads_what_enqueue_wrote_and_sets_bad_files_aside() {
        let state = tempfile::tempdir().unwrap();
        assert!(
            pending(state.path()).unwrap().requests.is_empty(),
            "no dir, no queue"
        );
        let r = req("n", "c1", "eth0");
        enqueue(state.path(), &r).unwrap();
        fs::write(dir(state.path()).join("junk.json"), b"{not json").unwrap();
        fs::write(dir(state.path()).join(".x.tmp"), b"half").unwrap();
        let q = pending(state.path()).unwrap();
        assert_eq!(q.requests.len(), 1, "{q:?}");
        assert_eq!(q.requests[0].request, r);
        assert!(q.requests[0].queued_at.is_some());
        assert_eq!(q.unreadable.len(), 1, "{q:?}");
        assert!(
            dir(state.path()).join("junk.bad").exists(),
            "kept for an operator"
        );
        q.requests[0].done();
        let again = pending(state.path()).unwrap();
        assert!(
            again.requests.is_empty() && again.unreadable.is_empty(),
            "{again:?}"
        );
    }
}
