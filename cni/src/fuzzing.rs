//! The bodies of the plugin's fuzz targets (`fuzz/fuzz_targets/cni_*.rs`), here so the
//! same code also runs as a deterministic smoke test under `cargo test`
//! (`tests/fuzz_smoke.rs`). Not part of the plugin's API.
//!
//! Each body pushes untrusted bytes through the public parsing functions that
//! [`crate::run`] uses, in the order it uses them, and stops where `run` would talk to
//! the agent or write the pending-release queue: a fuzzed config names the socket and
//! the state dir, and a fuzzer must not connect to or write wherever that points.
//!
//! The one property checked besides "no panic": a failure is a [`CniError`] with one
//! of the codes that blame the input (1, 4, 6 or 7), and it renders to the error JSON
//! the runtime would read. Anything else would tell the runtime the wrong story.

use std::collections::BTreeMap;

use serde_json::Value;
use strait_api::{AddResponse, InterfaceInfo, IpInfo, RouteInfo, code};

use crate::config;
use crate::env::{CniArgs, RawEnv, Verb};
use crate::error::CniError;
use crate::result::CniResult;
use crate::version::{CniVersion, SUPPORTED, VersionInfo};

const VERBS: [Verb; 6] = Verb::ALL;

/// Where the bodies pretend the container's namespace is, for CHECK's address match.
const NETNS: &str = "/var/run/netns/fuzz";

/// `cni_env_and_args`: the CNI_* environment and `CNI_ARGS`.
///
/// The input is `KEY=VALUE` lines, the layout of the ENV section of the captures in
/// `tests/fixtures`, so they seed the corpus as they are. Bytes are decoded lossily,
/// as [`RawEnv::from_process`] does; values may hold anything but a newline (NULs
/// included, which a real environment cannot carry). A repeated key: the last wins.
pub fn env_and_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars: BTreeMap<&str, &str> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .collect();
    let env = RawEnv::from_lookup(|name| vars.get(name).map(|v| (*v).to_string()));

    checked(env.verb());
    for verb in VERBS {
        checked(env.validate(verb));
    }
    for verb in [Verb::Add, Verb::Del, Verb::Check] {
        checked(env.attachment(verb));
    }
    // ADD parses CNI_ARGS only after the env validated; the parser must not depend on
    // that, so it gets every value.
    checked(CniArgs::parse(env.args.as_deref().unwrap_or_default()));
}

/// `cni_netconf`: stdin, as each verb reads it.
pub fn netconf(stdin: &[u8]) {
    // VERSION: only `cniVersion`, echoed back.
    if let Some(input) = checked(config::version_probe(stdin)) {
        let _ = serde_json::to_vec(&VersionInfo::for_input(input.as_deref()));
    }

    // Every other verb: decode, then validate; errors are answered in the config's
    // version when it has one we speak.
    let Some(raw) = checked(config::decode(stdin)) else {
        return;
    };
    let reply_version = raw.version().unwrap_or(CniVersion::LATEST);
    let conf = match raw.validate() {
        Ok(conf) => conf,
        Err(e) => {
            input_error(&e, reply_version);
            return;
        }
    };
    let version = conf.cni_version;

    // ADD: runtimeConfig and `args` merged with CNI_ARGS (none, and a podman-like set
    // that collides with them), then prevResult chained before our result.
    for args in [CniArgs::default(), podman_args()] {
        let _ = checked_in(conf.add_options(&args), version);
    }
    if let Some(prev) = &conf.prev_result {
        chain_and_render(prev, version);
    }

    // GC: the attachment list. The verb gates it on 1.1.0; the parser gets every
    // version so the fuzzer need not find that string first.
    let _ = checked_in(conf.gc_attachments(), version);
}

/// `cni_prev_result`: a `prevResult` alone, as ADD and CHECK read it.
///
/// The bytes are decoded into a JSON value first, as [`config::decode`] decodes the
/// whole of stdin (same recursion limit); input that is not JSON never reaches the
/// prevResult decoder and is `cni_netconf`'s business.
pub fn prev_result(data: &[u8]) {
    let Ok(prev) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    chain_and_render(&prev, CniVersion::LATEST);
}

/// What ADD and CHECK do with a prevResult: decode it, match our addresses (CHECK),
/// chain our result after it and print the merged result in every version (ADD).
fn chain_and_render(prev: &Value, version: CniVersion) {
    let Some(prev) = checked_in(CniResult::from_prev(prev), version) else {
        return;
    };
    let _ = prev.addresses_on("eth0", NETNS);
    for v in SUPPORTED {
        // A serialisation error would reach the runtime as code 5, not a panic.
        let _ = serde_json::to_vec(&prev.render(v));
    }
    let Ok(ours) = CniResult::from_agent(&agent_answer(), "eth0", NETNS) else {
        return;
    };
    let merged = prev.chain(ours);
    let _ = merged.addresses_on("eth0", NETNS);
    for v in SUPPORTED {
        let _ = serde_json::to_vec(&merged.render(v));
    }
}

/// CNI_ARGS as podman sends them with `--ip` and `--mac-address`.
fn podman_args() -> CniArgs {
    CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=fuzz;IP=10.1.2.3,fd00::3;MAC=02:42:0a:01:02:03")
        .unwrap_or_default()
}

/// A typical answer of the agent to ADD: what strait's own part of a chained result is
/// built from.
fn agent_answer() -> AddResponse {
    let parse = |s: &str| s.parse().ok();
    AddResponse {
        interfaces: vec![
            InterfaceInfo {
                name: "strait0fuzz".into(),
                mac: "ee:ee:ee:ee:ee:ee".into(),
                sandbox: None,
                mtu: None,
            },
            InterfaceInfo {
                name: "eth0".into(),
                mac: "02:42:0a:01:02:03".into(),
                sandbox: Some(NETNS.into()),
                mtu: Some(1450),
            },
        ],
        ips: parse("10.1.2.3/32")
            .map(|address| IpInfo {
                address,
                gateway: "169.254.1.1".parse().ok(),
                interface: 1,
            })
            .into_iter()
            .collect(),
        routes: parse("0.0.0.0/0")
            .map(|dst| RouteInfo {
                dst,
                gw: "169.254.1.1".parse().ok(),
            })
            .into_iter()
            .collect(),
        mtu: 1450,
    }
}

/// The value of `r`, or `None` after checking its error is an input error.
fn checked<T>(r: Result<T, CniError>) -> Option<T> {
    checked_in(r, CniVersion::LATEST)
}

fn checked_in<T>(r: Result<T, CniError>, version: CniVersion) -> Option<T> {
    r.map_err(|e| input_error(&e, version)).ok()
}

/// A parser's failure must blame the input with the spec's codes and render into the
/// error JSON: a panic here is a finding, like a panic in the parser.
fn input_error(e: &CniError, version: CniVersion) {
    let c = e.code();
    assert!(
        matches!(
            c,
            code::INCOMPATIBLE_VERSION
                | code::INVALID_ENV
                | code::DECODE_FAILURE
                | code::INVALID_CONFIG
        ),
        "a parse failure got code {c}: {e}"
    );
    let reply = e.reply(version.as_str());
    assert!(
        serde_json::to_vec(&reply).is_ok(),
        "the error JSON did not serialise: {e}"
    );
}
