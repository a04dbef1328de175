//! The agent's state is root's alone: the state dir (0700) and every file the agent
//! keeps there (0600) — the embedded store holds container IDs, addresses and netns
//! paths, and the DEL queue the same. Modes are set when the agent creates them and
//! tightened at every start when they are looser (an older agent, a restored backup,
//! a hand-made directory), with a log line saying so.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of the state dir and the directories in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the agent keeps.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) if needed and makes it [`DIR_MODE`]. Returns the
/// mode it had when that was looser.
pub fn dir(dir: &Path) -> io::Result<Option<u32>> {
    if !dir.exists() {
        // Made private from the start (the parents too, when missing), so nothing is
        // reported for a directory the agent creates.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    restrict(dir, DIR_MODE)
}

/// Makes an existing `file` [`FILE_MODE`] (nothing when there is no such file). Returns
/// the mode it had when that was looser.
pub fn file(file: &Path) -> io::Result<Option<u32>> {
    match std::fs::metadata(file) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(_) => restrict(file, FILE_MODE),
    }
}

/// Clears every permission bit outside `mode` (never adds one).
fn restrict(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    let had = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if had & !mode == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(had & mode))?;
    Ok(Some(had))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn loose_modes_are_tightened_and_reported_tight_ones_left_alone() {
        let tmp = tempfile::tempdir().expect("dir");
        let state = tmp.path().join("state");
        assert_eq!(
            dir(&state).expect("create"),
            None,
            "new: made tight, nothing to report"
        );
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(dir(&state).expect("tighten"), Some(0o755));
        assert_eq!(mode(&state), 0o700);
        assert_eq!(dir(&state).expect("again"), None);

        let store = state.join("store.redb");
        assert_eq!(
            file(&store).expect("missing"),
            None,
            "no file, nothing to do"
        );
        std::fs::write(&store, b"x").expect("write");
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(file(&store).expect("tighten"), Some(0o644));
        assert_eq!(mode(&store), 0o600);
        // Tighter than asked stays as it is.
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(file(&store).expect("tight"), None);
        assert_eq!(mode(&store), 0o400);
    }
}
