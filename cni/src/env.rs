//! The CNI_* environment: which verb was asked for, which variables that verb needs
//! (spec §2 "CNI operations"), validation of the container ID and interface name, and
//! the `CNI_ARGS` key=value list.
//!
//! Reading the process environment is kept to [`RawEnv::from_process`] so everything
//! else is tested with plain maps.

use std::net::IpAddr;

use crate::error::CniError;
use crate::requested::{parse_mac, parse_static_ip};
pub use crate::verb::Verb;

// The verb as the environment carries it. `Verb` itself is in `crate::verb`, so that
// `crate::error` can name it without importing this module, which reports its own
// failures as `CniError`.
impl Verb {
    /// Commands are upper case in the spec and every runtime sends them so; anything
    /// else is refused (code 4) rather than guessed at.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Verb::from_command(s).ok_or_else(|| CniError::UnknownCommand(s.to_string()))
    }

    /// The variables the spec lists as required for this verb, besides CNI_COMMAND.
    /// DEL tolerates an empty CNI_NETNS: containerd's second DEL (RemovePodSandbox) and
    /// `ctr run --cni` send none once the namespace is gone.
    fn required(self) -> &'static [&'static str] {
        match self {
            Verb::Add | Verb::Check => &[CONTAINER_ID, NETNS, IFNAME],
            Verb::Del => &[CONTAINER_ID, IFNAME],
            Verb::Gc => &[PATH],
            Verb::Status | Verb::Version => &[],
        }
    }
}

const COMMAND: &str = "CNI_COMMAND";
const CONTAINER_ID: &str = "CNI_CONTAINERID";
const NETNS: &str = "CNI_NETNS";
const IFNAME: &str = "CNI_IFNAME";
const ARGS: &str = "CNI_ARGS";
const PATH: &str = "CNI_PATH";
pub(crate) const TIMEOUT_MS: &str = "STRAIT_CNI_TIMEOUT_MS";

/// The CNI_* variables as the runtime set them. Empty values count as unset: runtimes
/// export every variable and leave the unused ones empty (podman's VERSION probe has
/// `CNI_CONTAINERID=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
    /// `STRAIT_CNI_TIMEOUT_MS`: one bound for every call to the agent instead of the
    /// per-verb defaults. For tests of a hung agent; runtimes do not set it.
    pub timeout_ms: Option<String>,
}

impl RawEnv {
    /// Collect the variables through `get` (a map in tests, the process env in main).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name| get(name).filter(|v| !v.is_empty());
        Self {
            command: var(COMMAND),
            container_id: var(CONTAINER_ID),
            netns: var(NETNS),
            ifname: var(IFNAME),
            args: var(ARGS),
            path: var(PATH),
            timeout_ms: var(TIMEOUT_MS),
        }
    }

    pub fn from_process() -> Self {
        // Non-UTF-8 values are kept lossily; the validators below then reject them
        // where the spec restricts the alphabet.
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// The verb, or code 4 when CNI_COMMAND is missing or unknown.
    pub fn verb(&self) -> Result<Verb, CniError> {
        match &self.command {
            Some(c) => Verb::parse(c),
            None => Err(CniError::MissingEnv(vec![COMMAND])),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            COMMAND => self.command.as_deref(),
            CONTAINER_ID => self.container_id.as_deref(),
            NETNS => self.netns.as_deref(),
            IFNAME => self.ifname.as_deref(),
            ARGS => self.args.as_deref(),
            PATH => self.path.as_deref(),
            _ => None,
        }
    }

    /// Check that every variable `verb` requires is present (naming all missing ones at
    /// once) and that the container ID and interface name are well formed.
    pub fn validate(&self, verb: Verb) -> Result<(), CniError> {
        let missing: Vec<&'static str> = verb
            .required()
            .iter()
            .copied()
            .filter(|name| self.get(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::MissingEnv(missing));
        }
        if let Some(id) = &self.container_id {
            validate_container_id(id)?;
        }
        if let Some(ifname) = &self.ifname {
            validate_ifname(ifname)?;
        }
        Ok(())
    }

    /// The attachment of an ADD, DEL or CHECK, after [`RawEnv::validate`].
    pub fn attachment(&self, verb: Verb) -> Result<AttachmentEnv, CniError> {
        self.validate(verb)?;
        let required =
            |v: &Option<String>, name| v.clone().ok_or_else(|| CniError::MissingEnv(vec![name]));
        Ok(AttachmentEnv {
            container_id: required(&self.container_id, CONTAINER_ID)?,
            ifname: required(&self.ifname, IFNAME)?,
            netns: self.netns.clone(),
        })
    }
}

/// The (containerID, ifname, netns) an attachment verb acts on, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentEnv {
    pub container_id: String,
    pub ifname: String,
    /// None only for DEL (containerd's second DEL, `ctr` after the task exited).
    pub netns: Option<String>,
}

/// Spec §2: "Must start with an alphanumeric character, optionally followed by any
/// combination of one or more alphanumeric characters, underscore, dot or hyphen."
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let invalid = |reason: &str| CniError::InvalidEnv {
        var: CONTAINER_ID,
        reason: format!("{id:?} {reason}"),
    };
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(invalid("is empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(invalid("must start with a letter or digit"));
        }
        Some(_) => {}
    }
    if chars.any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(invalid(
            "may only contain letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// The kernel's rules for a link name (IFNAMSIZ is 16 with the NUL): checked here so a
/// bad name fails with code 4 before the agent allocates anything.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let invalid = |reason: &str| CniError::InvalidEnv {
        var: IFNAME,
        reason: format!("{name:?} {reason}"),
    };
    if name.is_empty() {
        return Err(invalid("is empty"));
    }
    if name.len() > 15 {
        return Err(invalid("is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("is not a valid interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(invalid("must not contain '/', ':' or whitespace"));
    }
    Ok(())
}

/// What strait takes from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=` (podman's `--ip`); a comma-separated list is accepted, as host-local does.
    pub ips: Vec<IpAddr>,
    /// `MAC=` (podman's `--mac-address`), normalised to lower-case colon form.
    pub mac: Option<String>,
    /// `K8S_POD_NAMESPACE` (containerd, CRI-O): the endpoint's namespace, checked as
    /// Kubernetes checks a namespace's name.
    pub namespace: Option<String>,
    /// `K8S_POD_NAME` (containerd, CRI-O, Podman): shown by `netctl`, never a label.
    pub pod: Option<String>,
}

impl CniArgs {
    /// Parse `K=V;K=V`. Unknown keys are an error unless `IgnoreUnknown` is true, the
    /// convention every runtime follows by sending `IgnoreUnknown=1`.
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let invalid = |reason: String| CniError::InvalidEnv { var: ARGS, reason };
        let mut pairs = Vec::new();
        // Tolerate empty segments (a trailing ';'): they carry nothing.
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(format!("{pair:?} is not KEY=VALUE")));
            };
            pairs.push((key.trim(), value.trim()));
        }

        let mut ignore_unknown = false;
        for (key, value) in &pairs {
            if *key == "IgnoreUnknown" {
                ignore_unknown = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(invalid(format!("IgnoreUnknown={value:?} is not a boolean"))),
                };
            }
        }

        let mut out = CniArgs::default();
        let mut unknown = Vec::new();
        for (key, value) in pairs {
            match key {
                "IgnoreUnknown" => {}
                "IP" => {
                    for spec in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let ip = parse_static_ip(spec)
                            .ok_or_else(|| invalid(format!("IP={spec:?} is not an address")))?;
                        if !out.ips.contains(&ip) {
                            out.ips.push(ip);
                        }
                    }
                }
                "MAC" => {
                    let mac = parse_mac(value)
                        .ok_or_else(|| invalid(format!("MAC={value:?} is not a MAC address")))?;
                    out.mac = Some(mac);
                }
                "K8S_POD_NAMESPACE" if !value.is_empty() => {
                    strait_api::labels::validate_namespace(value)
                        .map_err(|e| invalid(format!("K8S_POD_NAMESPACE: {e}")))?;
                    out.namespace = Some(value.to_string());
                }
                "K8S_POD_NAME" if !value.is_empty() => out.pod = Some(value.to_string()),
                // The rest (pod UID, infra container ID) are the runtime's business; they
                // are not pod labels either, so strait takes nothing from them.
                k if k.starts_with("K8S_") => {}
                k => unknown.push(k),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(invalid(format!(
                "unknown keys {} (set IgnoreUnknown=1 to ignore them)",
                unknown.join(", ")
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> RawEnv {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RawEnv::from_lookup(|k| map.get(k).cloned())
    }

    fn code(r: Result<impl std::fmt::Debug, CniError>) -> u32 {
        r.expect_err("expected an error").code()
    }

    #[test]
    fn verbs_parse_and_unknown_is_code_4() {
        assert_eq!(Verb::parse("ADD").unwrap(), Verb::Add);
        assert_eq!(Verb::parse("GC").unwrap(), Verb::Gc);
        assert_eq!(code(Verb::parse("add")), 4);
        assert_eq!(code(Verb::parse("FROB")), 4);
        let e = env(&[]).verb().unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_COMMAND"));
    }

    #[test]
    fn add_names_every_missing_variable() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")])
            .validate(Verb::Add)
            .unwrap_err();
        assert_eq!(e.code(), 4);
        let msg = e.to_string();
        assert!(
            msg.contains("CNI_NETNS") && msg.contains("CNI_IFNAME"),
            "{msg}"
        );
        assert!(!msg.contains("CNI_CONTAINERID"), "{msg}");
    }

    #[test]
    fn empty_values_count_as_missing() {
        let e = env(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
        ])
        .validate(Verb::Add)
        .unwrap_err();
        assert!(e.to_string().contains("CNI_NETNS"), "{e}");
    }

    #[test]
    fn del_tolerates_empty_netns() {
        let a = env(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
        ])
        .attachment(Verb::Del)
        .unwrap();
        assert_eq!(a.netns, None);
        assert_eq!(a.container_id, "c1");
    }

    #[test]
    fn status_version_need_nothing_gc_needs_path() {
        env(&[]).validate(Verb::Status).unwrap();
        env(&[]).validate(Verb::Version).unwrap();
        let e = env(&[]).validate(Verb::Gc).unwrap_err();
        assert!(e.to_string().contains("CNI_PATH"), "{e}");
        env(&[("CNI_PATH", "/opt/cni/bin")])
            .validate(Verb::Gc)
            .unwrap();
    }

    #[test]
    fn container_ids() {
        for ok in ["c1", "default-ractr1", "a.b_c-d", "0", &"f".repeat(64)] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["", "-c", "_c", ".c", "c/d", "c d", "c;d", "cé"] {
            assert_eq!(code(validate_container_id(bad)), 4, "{bad:?}");
        }
    }

    #[test]
    fn ifnames() {
        for ok in ["eth0", "eth1", "net.5", "a", "123456789012345"] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "1234567890123456",
        ] {
            assert_eq!(code(validate_ifname(bad)), 4, "{bad:?}");
        }
        let e = env(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0:1"),
        ])
        .validate(Verb::Add)
        .unwrap_err();
        assert!(e.to_string().contains("CNI_IFNAME"), "{e}");
    }

    #[test]
    fn cni_args_podman_static_ip_and_mac() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAME=ra-spy2;MAC=02:42:0A:d5:0a:63;IP=10.213.10.99",
        )
        .unwrap();
        assert_eq!(a.ips, vec!["10.213.10.99".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.mac.as_deref(), Some("02:42:0a:d5:0a:63"));
        assert_eq!(a.pod.as_deref(), Some("ra-spy2"));
        assert_eq!(a.namespace, None);
    }

    #[test]
    fn cni_args_ip_with_prefix_and_lists() {
        let a = CniArgs::parse("IP=10.1.2.3/24,fd00::5/64, 10.1.2.3").unwrap();
        assert_eq!(
            a.ips,
            vec![
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fd00::5".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(code(CniArgs::parse("IP=10.1.2")), 4);
        assert_eq!(code(CniArgs::parse("MAC=zz:42:0a:d5:0a:63")), 4);
    }

    #[test]
    fn cni_args_unknown_keys_need_ignore_unknown() {
        let e = CniArgs::parse("FOO=1;K8S_POD_NAME=p").unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("FOO"), "{e}");
        // Order does not matter: containerd puts IgnoreUnknown anywhere in the list.
        let a = CniArgs::parse("FOO=1;K8S_POD_NAME=p;IgnoreUnknown=true").unwrap();
        assert_eq!(a.pod.as_deref(), Some("p"));
        assert_eq!(code(CniArgs::parse("FOO=1;IgnoreUnknown=0")), 4);
        assert_eq!(code(CniArgs::parse("IgnoreUnknown=maybe")), 4);
    }

    #[test]
    fn cni_args_syntax() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse(";;").unwrap(), CniArgs::default());
        assert_eq!(code(CniArgs::parse("K8S_POD_NAME")), 4);
        // Values may contain '=' (only the first one splits).
        let a = CniArgs::parse("K8S_POD_NAME=a=b").unwrap();
        assert_eq!(a.pod.as_deref(), Some("a=b"));
    }

    /// containerd and CRI-O send the pod's namespace and name: they become the
    /// endpoint's namespace and pod, not labels (a pod's labels are not in CNI_ARGS).
    #[test]
    fn containerd_cri_args_give_namespace_and_pod() {
        let a = CniArgs::parse(
            "K8S_POD_UID=uid-ra-pod1;IgnoreUnknown=1;K8S_POD_NAMESPACE=ra-ns;K8S_POD_NAME=ra-pod1;\
             K8S_POD_INFRA_CONTAINER_ID=aff24f7f",
        )
        .unwrap();
        assert_eq!(a.namespace.as_deref(), Some("ra-ns"));
        assert_eq!(a.pod.as_deref(), Some("ra-pod1"));
        assert!(a.ips.is_empty() && a.mac.is_none());
        // The other K8S_* keys are known (no IgnoreUnknown needed) and carry nothing.
        assert_eq!(
            CniArgs::parse("K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=i").unwrap(),
            CniArgs::default()
        );
        // A namespace Kubernetes would not accept is refused, naming the key.
        let e = CniArgs::parse("K8S_POD_NAMESPACE=Bad_NS").unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("K8S_POD_NAMESPACE"), "{e}");
    }
}
