//! Everything that can make a CNI call fail, and the one place where a failure becomes
//! a CNI error code and the error JSON the runtime reads from stdout (spec §5 "Error").
//!
//! Verbs return [`CniError`] with `?`; only [`CniError::code`] knows the numbers, so a
//! code never drifts between call sites.

use std::io;
use std::path::PathBuf;

use serde::Serialize;
use strait_api::{ClientError, Readiness, code};

use crate::verb::Verb;

/// A failed CNI invocation.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// Required environment variables are unset or empty. The spec wants their names in
    /// the message.
    #[error("missing required environment variables: {}", .0.join(", "))]
    MissingEnv(Vec<&'static str>),

    /// An environment variable is set but unusable.
    #[error("invalid {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },

    #[error("unknown CNI_COMMAND {0:?} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)")]
    UnknownCommand(String),

    #[error("reading the network configuration from stdin: {0}")]
    ReadStdin(#[source] io::Error),

    /// Input that is not JSON (or not the JSON shape at all, like an array).
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// JSON that decodes but is not a valid network configuration.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),

    #[error("incompatible CNI version {version:?}: {reason}")]
    IncompatibleVersion { version: String, reason: String },

    /// Talking to the agent failed, or the agent refused. `verb` decides what "agent
    /// down" means (STATUS: not available; everything else: try again later).
    #[error("{}", agent_message(.source))]
    Agent {
        verb: Verb,
        #[source]
        source: ClientError,
    },

    /// STATUS: the agent answered but is not ready.
    #[error("strait is not ready: {}", readiness_reasons(.0))]
    NotReady(Readiness),

    /// DEL with the agent down found no queue an agent drains: queueing there would
    /// report a release that nobody applies.
    #[error(
        "the strait agent is not available and no agent would apply a queued release: \
         {0}; try again when the agent runs"
    )]
    NoQueue(String),

    /// DEL with the agent down could not queue the release on disk.
    #[error("queueing the release at {path}: {source}")]
    Queue {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("writing the result to stdout: {0}")]
    WriteOutput(#[source] io::Error),
}

fn agent_message(err: &ClientError) -> String {
    match err {
        ClientError::Unreachable { path, .. } => format!(
            "the strait agent is not running (no listener on {}); try again later",
            path.display()
        ),
        ClientError::TimedOut { path, after } => format!(
            "the strait agent at {} did not answer within {}s (hung or overloaded); \
             try again later",
            path.display(),
            after.as_secs_f64()
        ),
        ClientError::Closed { path, .. } => format!(
            "the strait agent at {} closed the connection before answering (it stopped \
             or restarted); try again later",
            path.display()
        ),
        ClientError::PermissionDenied { path, access } => format!(
            "permission denied on the strait agent's socket {} ({access}): the plugin \
             must run as a user that may connect to it (root, by default)",
            path.display()
        ),
        ClientError::Api(api) => api.message.clone(),
        other => other.to_string(),
    }
}

fn readiness_reasons(r: &Readiness) -> String {
    if r.reasons.is_empty() {
        "no reason given".to_string()
    } else {
        r.reasons.join("; ")
    }
}

impl CniError {
    /// The CNI error code of this failure. The only place codes are chosen.
    pub fn code(&self) -> u32 {
        match self {
            CniError::MissingEnv(_) | CniError::InvalidEnv { .. } | CniError::UnknownCommand(_) => {
                code::INVALID_ENV
            }
            CniError::ReadStdin(_) | CniError::Queue { .. } | CniError::WriteOutput(_) => {
                code::IO_FAILURE
            }
            CniError::Decode { .. } => code::DECODE_FAILURE,
            CniError::InvalidConfig(_) => code::INVALID_CONFIG,
            CniError::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            // An agent that starts (or comes back) later makes a retried DEL work.
            CniError::NoQueue(_) => code::TRY_AGAIN_LATER,
            CniError::Agent { verb, source } => match source {
                // A STATUS probe is asking exactly "can you serve ADD?": no agent, no.
                e if e.is_unavailable() && *verb == Verb::Status => code::NOT_AVAILABLE,
                // The agent restarts, starts later than the runtime, hangs for a while
                // or went away mid-answer: retrying is right.
                ClientError::Unreachable { .. }
                | ClientError::TimedOut { .. }
                | ClientError::Closed { .. } => code::TRY_AGAIN_LATER,
                // Retrying changes nothing: someone must fix the socket's access.
                ClientError::PermissionDenied { .. } => code::IO_FAILURE,
                // The agent already speaks CNI codes (11 while starting, 101 exhausted…).
                ClientError::Api(api) => api.code,
                ClientError::Io { .. } => code::IO_FAILURE,
                ClientError::BadResponse(_) => code::INTERNAL,
            },
            CniError::NotReady(r) => match r.code {
                code::NOT_AVAILABLE | code::LIMITED_CONNECTIVITY => r.code,
                // A not-ready answer without a STATUS code still means "cannot serve ADD".
                _ => code::NOT_AVAILABLE,
            },
        }
    }

    /// Longer context for the error's `details`: the agent's own details, or the
    /// underlying cause.
    fn details(&self) -> String {
        match self {
            CniError::Agent {
                source: ClientError::Api(api),
                ..
            } => api.details.clone(),
            CniError::Agent {
                source: ClientError::Unreachable { source, .. },
                ..
            } => source.to_string(),
            CniError::Agent {
                source: ClientError::Closed { detail, .. },
                ..
            } => detail.clone(),
            CniError::NotReady(r) => r.reasons.join("\n"),
            _ => String::new(),
        }
    }

    /// The error object printed on stdout. `cni_version` is the version in use (the
    /// config's, or the newest when the config never got that far).
    pub fn reply(&self, cni_version: &str) -> ErrorReply {
        ErrorReply {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        }
    }
}

/// The spec's error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use strait_api::ApiError;

    use super::*;

    fn unreachable() -> ClientError {
        ClientError::Unreachable {
            path: Path::new("/run/strait/strait.sock").to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
    }

    #[test]
    fn env_errors_are_code_4_and_name_the_variables() {
        let e = CniError::MissingEnv(vec!["CNI_NETNS", "CNI_IFNAME"]);
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_NETNS, CNI_IFNAME"), "{e}");
        assert_eq!(CniError::UnknownCommand("FOO".into()).code(), 4);
    }

    #[test]
    fn unreachable_agent_is_11_except_for_status() {
        let add = CniError::Agent {
            verb: Verb::Add,
            source: unreachable(),
        };
        assert_eq!(add.code(), 11);
        assert!(add.to_string().contains("not running"), "{add}");
        let status = CniError::Agent {
            verb: Verb::Status,
            source: unreachable(),
        };
        assert_eq!(status.code(), 50);
    }

    #[test]
    fn a_hung_or_vanished_agent_is_11_and_a_refused_socket_says_permission_denied() {
        let path = Path::new("/run/strait/strait.sock").to_path_buf();
        let hung = || ClientError::TimedOut {
            path: path.clone(),
            after: std::time::Duration::from_secs(60),
        };
        let gone = || ClientError::Closed {
            path: path.clone(),
            detail: "no header terminator after 0 bytes".into(),
        };
        for (source, status) in [(hung(), false), (gone(), false), (hung(), true)] {
            let verb = if status { Verb::Status } else { Verb::Add };
            let e = CniError::Agent { verb, source };
            assert_eq!(e.code(), if status { 50 } else { 11 }, "{e}");
            assert!(e.to_string().contains("try again later"), "{e}");
        }
        let e = CniError::Agent {
            verb: Verb::Add,
            source: ClientError::PermissionDenied {
                path: path.clone(),
                access: "socket mode 0600, owner uid 0 gid 0; caller uid 65534".into(),
            },
        };
        assert_eq!(e.code(), 5);
        let msg = e.to_string();
        assert!(
            msg.contains("permission denied")
                && msg.contains("/run/strait/strait.sock")
                && msg.contains("0600")
                && !msg.contains("not running"),
            "{msg}"
        );
    }

    #[test]
    fn agent_codes_pass_through() {
        let e = CniError::Agent {
            verb: Verb::Add,
            source: ClientError::Api(
                ApiError::new(11, "agent is starting").with_details("replaying store"),
            ),
        };
        let reply = e.reply("1.0.0");
        assert_eq!(
            serde_json::to_value(reply).unwrap(),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "code": 11,
                "msg": "agent is starting",
                "details": "replaying store"
            })
        );
    }

    #[test]
    fn not_ready_uses_the_status_code() {
        let r = |code| Readiness {
            ready: false,
            code,
            reasons: vec!["vxlan device missing".into()],
        };
        assert_eq!(CniError::NotReady(r(51)).code(), 51);
        assert_eq!(CniError::NotReady(r(50)).code(), 50);
        assert_eq!(CniError::NotReady(r(0)).code(), 50);
    }
}
