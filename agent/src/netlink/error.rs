//! The one error type of the netlink layer, and the idempotency rule.

use std::io;
use std::path::PathBuf;

use crate::netns::NetnsError;

/// A netlink operation that failed: what was attempted (`op`), on which object (an
/// interface name, a prefix, "10.0.0.5 dev strait1a2b3c4d", …) and, when the kernel
/// refused, its errno.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel answered the request with an error.
    #[error("{op} {object}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel {
        op: &'static str,
        object: String,
        /// Positive errno, e.g. `libc::EEXIST`.
        errno: i32,
    },
    /// No usable answer: the connection is gone, the reply was not understood, or a
    /// dump was interrupted by concurrent changes too often.
    #[error("{op} {object}: {detail}")]
    Protocol {
        op: &'static str,
        object: String,
        detail: String,
    },
    /// The reply lacked something the kernel always sends (e.g. a link without a name).
    #[error("{op} {object}: reply lacks {what}")]
    Incomplete {
        op: &'static str,
        object: String,
        what: &'static str,
    },
    #[error("open a netlink socket in {netns}: {source}")]
    Connect {
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write sysctl {path} in {netns}: {source}")]
    Sysctl {
        path: String,
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl NetlinkError {
    /// The kernel's errno, if the kernel is who refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The object did not exist: ENODEV (links), ENOENT (addresses, neighbours, most
    /// deletes), ESRCH (routes), EADDRNOTAVAIL (deleting an address that is not there).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    /// The object already existed (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

/// The idempotency rule for removals: removing what is already gone succeeds. Every
/// "delete" that is meant to be idempotent goes through here rather than matching
/// errnos at the call site.
pub fn ignore_not_found(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// The idempotency rule for creations that are not replaces: creating what already
/// exists succeeds. Only for objects whose identity fully defines them (an address, a
/// link-scoped host route); use a replace where the content may differ.
pub fn ignore_exists(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match result {
        Err(e) if e.is_exists() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(errno: i32) -> NetlinkError {
        NetlinkError::Kernel {
            op: "delete link",
            object: "strait00000000".into(),
            errno,
        }
    }

    #[test]
    fn classifies_errnos() {
        assert!(kernel(libc::ENODEV).is_not_found());
        assert!(kernel(libc::ESRCH).is_not_found());
        assert!(!kernel(libc::EEXIST).is_not_found());
        assert!(kernel(libc::EEXIST).is_exists());
        assert!(ignore_not_found(Err(kernel(libc::ENOENT))).is_ok());
        assert!(ignore_not_found(Err(kernel(libc::EPERM))).is_err());
        assert!(ignore_exists(Err(kernel(libc::EEXIST))).is_ok());
        assert!(ignore_exists(Err(kernel(libc::ENODEV))).is_err());
    }

    #[test]
    fn message_names_op_object_and_errno() {
        let msg = kernel(libc::EEXIST).to_string();
        assert!(
            msg.starts_with("delete link strait00000000: File exists"),
            "{msg}"
        );
    }
}
