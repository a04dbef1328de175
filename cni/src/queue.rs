//! Where DEL leaves a release the agent did not take, so that an agent applies it.
//!
//! The queue is the one the agent serving the configured socket drains: the agent
//! names its state dir in the locator beside its socket (`strait_api::queue`), which it
//! leaves there when it stops. Without a locator (a host rebooted since, `/run` being
//! a tmpfs) the config's `stateDir` is used if an agent has made its queue there. With
//! neither, no agent would ever apply the release, and DEL fails rather than report a
//! success nobody will make true.

use std::io;
use std::path::{Path, PathBuf};

use strait_api::queue;

use crate::error::CniError;

/// The state dir whose queue an agent drains, for an agent at `socket` and a config
/// whose `stateDir` is `configured`.
pub fn state_dir_for(socket: &Path, configured: &Path) -> Result<PathBuf, CniError> {
    let locator = queue::locator_path(socket);
    let locator_said = match queue::read_locator(socket) {
        Ok(Some(l)) => return Ok(l.state_dir),
        Ok(None) => "does not exist".to_string(),
        Err(e) => {
            crate::verbs::log(format_args!("ignoring the DEL queue's locator: {e}"));
            format!("is unreadable ({e})")
        }
    };
    let configured_queue = queue::dir(configured);
    match std::fs::metadata(&configured_queue) {
        Ok(m) if m.is_dir() => Ok(configured.to_path_buf()),
        Ok(_) => Err(no_queue(
            &locator,
            &locator_said,
            &configured_queue,
            "is not a directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(no_queue(
            &locator,
            &locator_said,
            &configured_queue,
            "does not exist",
        )),
        Err(e) => Err(no_queue(
            &locator,
            &locator_said,
            &configured_queue,
            &e.to_string(),
        )),
    }
}

fn no_queue(locator: &Path, locator_said: &str, queue: &Path, queue_said: &str) -> CniError {
    CniError::NoQueue(format!(
        "the agent's locator {} {locator_said}, and the configured stateDir's queue {} \
         {queue_said}: no agent has run with that state dir",
        locator.display(),
        queue.display()
    ))
}
