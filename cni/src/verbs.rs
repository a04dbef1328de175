//! The six CNI verbs: each validates what it needs, sends at most one request to the
//! agent (DEL may repeat it once, see [`del`]) and says what to print.
//!
//! Nothing here touches netlink or IPAM: the agent owns both. The plugin's only state
//! of its own is the pending-release queue DEL writes while the agent is down.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use serde::de::IgnoredAny;
use strait_api::{
    AddRequest, AddResponse, CheckRequest, Client, ClientError, DelRequest, GcRequest, GcResponse,
    Readiness, StatusRequest, paths,
};

use crate::config::{self, NetConf};
use crate::env::{CniArgs, RawEnv, Verb};
use crate::error::CniError;
use crate::result::CniResult;
use crate::version::{CniVersion, VersionInfo};
use strait_api::queue;

/// How long each verb waits for the agent, connect to answer (docs/cni.md "Timeouts").
/// ADD leaves room for a burst's queue and a store retry; DEL is quick on the agent
/// (the veth goes in the background), and on timeout it queues the release instead;
/// a STATUS probe should answer quickly, runtimes poll it.
pub fn timeout(verb: Verb) -> Duration {
    Duration::from_secs(match verb {
        Verb::Add => 60,
        Verb::Check => 30,
        Verb::Del => 30,
        Verb::Gc => 120,
        Verb::Status | Verb::Version => 10,
    })
}

/// The agent's client for `verb`: [`timeout`], unless `STRAIT_CNI_TIMEOUT_MS` (for
/// tests of a hung agent) says otherwise.
fn client(env: &RawEnv, conf: &NetConf, verb: Verb) -> Result<Client, CniError> {
    let timeout = match env.timeout_ms.as_deref() {
        None => timeout(verb),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                return Err(CniError::InvalidEnv {
                    var: crate::env::TIMEOUT_MS,
                    reason: format!("{ms:?} is not a positive number of milliseconds"),
                });
            }
        },
    };
    Ok(Client::new(&conf.socket).with_timeout(timeout))
}

/// What the process prints on stdout, and whether it exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub success: bool,
}

/// Run one invocation: `env` as the runtime set it, `stdin` as it sent it.
///
/// Failures become the spec's error JSON here, in the version the config declared
/// (the newest when the config was never read or names a version we lack).
/// What `strait --version` prints: the plugin's version and the CNI versions it speaks.
pub fn about() -> String {
    let versions: Vec<&str> = crate::version::SUPPORTED
        .iter()
        .map(|v| v.as_str())
        .collect();
    format!(
        "strait CNI plugin {}\nCNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        versions.join(", ")
    )
}

pub fn run(env: &RawEnv, stdin: &[u8]) -> Outcome {
    let mut reply_version = CniVersion::LATEST;
    match dispatch(env, stdin, &mut reply_version) {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(err) => failure(&err, reply_version, env.command.as_deref()),
    }
}

/// The outcome of a failure: the error JSON on stdout, one log line on stderr.
pub fn failure(err: &CniError, version: CniVersion, command: Option<&str>) -> Outcome {
    let reply = err.reply(version.as_str());
    log(format_args!(
        "{} failed (code {}): {}",
        command.unwrap_or("command"),
        reply.code,
        reply.msg
    ));
    // Serialising a struct of strings and a number cannot fail; the fallback keeps the
    // promise of printing JSON even so.
    let mut stdout = serde_json::to_vec(&reply).unwrap_or_else(|_| {
        format!(r#"{{"code":{},"msg":"strait failed"}}"#, reply.code).into_bytes()
    });
    stdout.push(b'\n');
    Outcome {
        stdout,
        success: false,
    }
}

fn dispatch(
    env: &RawEnv,
    stdin: &[u8],
    reply_version: &mut CniVersion,
) -> Result<Vec<u8>, CniError> {
    let verb = env.verb()?;
    if let Err(e) = env.validate(verb) {
        // Still answer in the config's version when stdin has a usable one.
        if let Some(v) = config::decode(stdin).ok().and_then(|raw| raw.version()) {
            *reply_version = v;
        }
        return Err(e);
    }
    if verb == Verb::Version {
        let input = config::version_probe(stdin)?;
        return to_json(&VersionInfo::for_input(input.as_deref()));
    }

    let raw = config::decode(stdin)?;
    if let Some(v) = raw.version() {
        *reply_version = v;
    }
    let conf = raw.validate()?;
    match verb {
        Verb::Add => add(env, &conf),
        Verb::Del => del(env, &conf).map(|()| Vec::new()),
        Verb::Check => check(env, &conf).map(|()| Vec::new()),
        Verb::Status => status(env, &conf).map(|()| Vec::new()),
        Verb::Gc => gc(env, &conf).map(|()| Vec::new()),
        // Answered above, before any config is needed.
        Verb::Version => Ok(Vec::new()),
    }
}

fn add(env: &RawEnv, conf: &NetConf) -> Result<Vec<u8>, CniError> {
    let attachment = env.attachment(Verb::Add)?;
    let netns = attachment.netns.unwrap_or_default();
    let cni_args = CniArgs::parse(env.args.as_deref().unwrap_or_default())?;
    let options = conf.add_options(&cni_args)?;
    let port_mappings = config::host_ports(&options.port_mappings)?;
    // Decode prevResult before the agent allocates anything, so a bad one fails with
    // nothing to undo.
    let prev = conf
        .prev_result
        .as_ref()
        .map(CniResult::from_prev)
        .transpose()?;

    let req = AddRequest {
        network: conf.name.clone(),
        container_id: attachment.container_id,
        ifname: attachment.ifname,
        netns,
        ips: options.ips,
        mac: options.mac,
        mtu: conf.mtu,
        namespace: options.namespace,
        pod: options.pod,
        labels: options.labels,
        named_ports: options.named_ports,
        host_ports: false,
        port_mappings,
    };
    let resp: AddResponse = client(env, conf, Verb::Add)?
        .post(paths::CNI_ADD, &req)
        .map_err(|source| CniError::Agent {
            verb: Verb::Add,
            source,
        })?;
    // Past this point the agent has set the attachment up; on an error here the runtime
    // sends DEL, which the spec requires after a failed ADD.
    let ours =
        CniResult::from_agent(&resp, &req.ifname, &req.netns).map_err(|m| CniError::Agent {
            verb: Verb::Add,
            source: ClientError::BadResponse(m),
        })?;
    let result = match prev {
        Some(prev) => prev.chain(ours),
        None => ours,
    };
    to_json(&result.render(conf.cni_version))
}

/// DEL always succeeds when the attachment is already gone (the agent says so) and
/// also when no agent serves it (not running, not answering within [`timeout`], or
/// gone mid-answer): the request is queued on disk, in the queue the agent drains
/// ([`crate::queue`]), for the agent to apply when it starts (and every minute while
/// it runs). When no agent would ever drain a queue, DEL fails with code 11.
///
/// After queueing, DEL asks the agent once more, unless it timed out (a hung agent
/// would only hang again). The agent listens before it drains the queue, so if it is
/// still unreachable now, its drain is still to come and will see the file. If it
/// answers, the queued copy is withdrawn: left behind, it would be applied at the next
/// agent start, possibly after the runtime reused this container ID and interface name
/// for a new attachment.
fn del(env: &RawEnv, conf: &NetConf) -> Result<(), CniError> {
    let attachment = env.attachment(Verb::Del)?;
    let req = DelRequest {
        network: conf.name.clone(),
        container_id: attachment.container_id,
        ifname: attachment.ifname,
        netns: attachment.netns,
    };
    let client = client(env, conf, Verb::Del)?;
    let agent_err = |source| CniError::Agent {
        verb: Verb::Del,
        source,
    };
    let first = match client.post::<_, IgnoredAny>(paths::CNI_DEL, &req) {
        Ok(_) => return Ok(()),
        Err(e) if e.is_unavailable() => e,
        Err(e) => return Err(agent_err(e)),
    };

    let state_dir = crate::queue::state_dir_for(&conf.socket, &conf.state_dir)?;
    let queued = queue::enqueue(&state_dir, &req).map_err(|source| CniError::Queue {
        path: queue::dir(&state_dir).join(queue::file_name(&req)),
        source,
    })?;
    let queued_msg = |why: &dyn std::fmt::Display| {
        log(format_args!(
            "{why}; DEL of {}/{} queued at {}",
            req.container_id,
            req.ifname,
            queued.display()
        ))
    };
    if matches!(first, ClientError::TimedOut { .. }) {
        queued_msg(&first);
        return Ok(());
    }
    let retry = client.post::<_, IgnoredAny>(paths::CNI_DEL, &req);
    if let Err(e) = &retry
        && e.is_unavailable()
    {
        queued_msg(&format_args!(
            "agent not reachable at {}",
            conf.socket.display()
        ));
        return Ok(());
    }
    if let Err(e) = queue::remove(&queued) {
        log(format_args!(
            "the agent took the DEL, but removing the queued copy {} failed: {e}",
            queued.display()
        ));
    }
    retry.map(|_| ()).map_err(agent_err)
}

fn check(env: &RawEnv, conf: &NetConf) -> Result<(), CniError> {
    require_version(conf, CniVersion::V0_4_0, Verb::Check)?;
    let attachment = env.attachment(Verb::Check)?;
    let netns = attachment.netns.unwrap_or_default();
    // The spec has the runtime send the ADD result; without one the agent still checks
    // the attachment against its own record.
    let expected_ips = match &conf.prev_result {
        Some(prev) => CniResult::from_prev(prev)?.addresses_on(&attachment.ifname, &netns),
        None => Vec::new(),
    };
    let req = CheckRequest {
        network: conf.name.clone(),
        container_id: attachment.container_id,
        ifname: attachment.ifname,
        netns,
        expected_ips,
    };
    client(env, conf, Verb::Check)?
        .post::<_, IgnoredAny>(paths::CNI_CHECK, &req)
        .map(|_| ())
        .map_err(|source| CniError::Agent {
            verb: Verb::Check,
            source,
        })
}

fn status(env: &RawEnv, conf: &NetConf) -> Result<(), CniError> {
    require_version(conf, CniVersion::V1_1_0, Verb::Status)?;
    let readiness: Readiness = client(env, conf, Verb::Status)?
        .post(
            paths::CNI_STATUS,
            &StatusRequest {
                network: conf.name.clone(),
            },
        )
        .map_err(|source| CniError::Agent {
            verb: Verb::Status,
            source,
        })?;
    if readiness.ready {
        Ok(())
    } else {
        Err(CniError::NotReady(readiness))
    }
}

/// GC succeeds when the agent went through the list, even if it could not release
/// everything: the spec has plugins carry on past failures, and the leftovers are
/// logged here and found again by the next GC.
fn gc(env: &RawEnv, conf: &NetConf) -> Result<(), CniError> {
    require_version(conf, CniVersion::V1_1_0, Verb::Gc)?;
    let req = GcRequest {
        network: conf.name.clone(),
        valid_attachments: conf.gc_attachments()?,
    };
    let resp: GcResponse = client(env, conf, Verb::Gc)?
        .post(paths::CNI_GC, &req)
        .map_err(|source| CniError::Agent {
            verb: Verb::Gc,
            source,
        })?;
    for err in &resp.errors {
        log(format_args!("GC of network {}: {err}", conf.name));
    }
    if !resp.released.is_empty() {
        log(format_args!(
            "GC of network {} released {} stale attachments",
            conf.name,
            resp.released.len()
        ));
    }
    Ok(())
}

fn require_version(conf: &NetConf, min: CniVersion, verb: Verb) -> Result<(), CniError> {
    if conf.cni_version < min {
        return Err(CniError::IncompatibleVersion {
            version: conf.cni_version.to_string(),
            reason: format!("{} needs cniVersion {min} or later", verb.as_str()),
        });
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, CniError> {
    let mut out =
        serde_json::to_vec(value).map_err(|e| CniError::WriteOutput(std::io::Error::other(e)))?;
    out.push(b'\n');
    Ok(out)
}

/// One line on stderr. Runtimes keep stderr for logs; stdout is the protocol. A
/// failure to log is not worth failing the call over.
pub fn log(msg: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "strait: {msg}");
}
