//! Whether the runtimes on this host will call strait: a network config naming the
//! `strait` plugin in the directory they read, valid, first in their order (containerd's
//! CRI and kubelet take the first file by name), pointing at this agent's socket, and
//! the plugin binary where they look for plugins.

use std::path::{Path, PathBuf};

use serde_json::Value;
use strait_api::doctor::Check;

pub fn check(conf_dir: &Path, bin_dirs: &[PathBuf], agent_socket: &Path) -> Check {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(conf_dir) {
        Ok(dir) => dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
            })
            .collect(),
        Err(e) => {
            return Check::warn(
                "cni-config",
                format!("cannot read {}: {e}", conf_dir.display()),
                "install strait's network config there (the package's sample: \
                 /usr/share/strait/10-strait.conflist), or point the agent's \
                 --cni-conf-dir (or netctl doctor's) at the directory your runtime reads",
            );
        }
    };
    // libcni's order: by file name.
    files.sort();
    let mut first_other: Option<String> = None;
    for file in &files {
        let name = file_name(file);
        let text = match std::fs::read(file) {
            Ok(t) => t,
            Err(e) => {
                return Check::fail(
                    "cni-config",
                    format!("{name}: {e}"),
                    "make the file readable by root, or remove it",
                );
            }
        };
        let conf: Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                // Any broken file is worth failing on: libcni skips or refuses it,
                // and it may be the one meant for strait.
                return Check::fail(
                    "cni-config",
                    format!("{name} is not valid JSON: {e}"),
                    format!("fix or remove {}", file.display()),
                );
            }
        };
        let plugins = plugins_of(&conf);
        let Some(strait) = plugins
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("strait"))
        else {
            first_other.get_or_insert(name);
            continue;
        };
        if let Err(e) = validate(&conf, &plugins, strait, agent_socket) {
            return Check::fail(
                "cni-config",
                format!("{name}: {e}"),
                format!("fix {} (docs/cni.md lists its keys)", file.display()),
            );
        }
        let Some(binary) = bin_dirs
            .iter()
            .map(|d| d.join("strait"))
            .find(|p| p.is_file())
        else {
            return Check::fail(
                "cni-config",
                format!(
                    "{name} names the strait plugin, and no `strait` binary is in {}",
                    join(bin_dirs)
                ),
                "install the plugin (the strait package puts it in /opt/cni/bin and \
                 /usr/lib/cni; the DaemonSet's init container copies it)",
            );
        };
        if let Some(other) = first_other {
            return Check::warn(
                "cni-config",
                format!(
                    "{other} sorts before {name}: runtimes that take the first config \
                     (containerd's CRI, kubelet) use {other}"
                ),
                format!(
                    "rename strait's config to sort first (e.g. 10-strait.conflist) or \
                     remove {other}"
                ),
            );
        }
        return Check::ok(
            "cni-config",
            format!("{name} (plugin {})", binary.display()),
        );
    }
    Check::warn(
        "cni-config",
        format!(
            "no network config in {} names the strait plugin",
            conf_dir.display()
        ),
        "install one (the package's sample: /usr/share/strait/10-strait.conflist), or point \
         the agent's --cni-conf-dir (or netctl doctor's) at the directory your runtime reads",
    )
}

/// A conflist's plugins, or a single config as a list of one.
fn plugins_of(conf: &Value) -> Vec<&Value> {
    match conf.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![conf],
    }
}

/// The strait entry as the plugin will see it, checked by the plugin's own decoder:
/// libcni hands each plugin of a list its own object with the list's `cniVersion` and
/// `name` put in. Then its socket (the plugin's default when absent) against the one
/// this agent serves.
fn validate(conf: &Value, plugins: &[&Value], strait: &Value, socket: &Path) -> Result<(), String> {
    if plugins
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str).is_none())
    {
        return Err("a plugin of the chain has no type".into());
    }
    let mut entry = strait.clone();
    if let Some(object) = entry.as_object_mut() {
        for key in ["cniVersion", "name"] {
            if let Some(v) = conf.get(key) {
                object.insert(key.to_string(), v.clone());
            }
        }
    }
    let bytes = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    let netconf = strait_cni::config::decode(&bytes)
        .and_then(|raw| raw.validate())
        .map_err(|e| e.to_string())?;
    if netconf.socket != socket {
        return Err(format!(
            "strait's socket is {}, and this agent serves {}",
            netconf.socket.display(),
            socket.display()
        ));
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::doctor::Verdict;

    struct Host {
        conf: tempfile::TempDir,
        bin: tempfile::TempDir,
    }

    impl Host {
        fn new(files: &[(&str, &str)], plugin: bool) -> Self {
            let conf = tempfile::tempdir().unwrap();
            let bin = tempfile::tempdir().unwrap();
            for (name, text) in files {
                std::fs::write(conf.path().join(name), text).unwrap();
            }
            if plugin {
                std::fs::write(bin.path().join("strait"), "").unwrap();
            }
            Self { conf, bin }
        }
        fn check(&self) -> Check {
            check(
                self.conf.path(),
                &[self.bin.path().to_path_buf()],
                Path::new("/run/strait/strait.sock"),
            )
        }
    }

    const GOOD: &str =
        r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"strait","mtu":1450}]}"#;

    #[test]
    fn a_valid_first_config_with_its_plugin_is_ok() {
        let c = Host::new(&[("10-strait.conflist", GOOD)], true).check();
        assert_eq!(c.verdict, Verdict::Ok, "{c:?}");
        assert!(c.detail.contains("10-strait.conflist"));
    }

    #[test]
    fn what_keeps_runtimes_from_calling_strait() {
        let c = Host::new(&[("10-strait.conflist", GOOD)], false).check();
        assert_eq!(c.verdict, Verdict::Fail, "no plugin binary: {c:?}");
        let c = Host::new(&[("10-strait.conflist", "{\"cniVersion\":")], true).check();
        assert_eq!(c.verdict, Verdict::Fail, "broken JSON: {c:?}");
        let bad = GOOD.replace("1.0.0", "9.9.9");
        let c = Host::new(&[("10-strait.conflist", &bad)], true).check();
        assert!(c.detail.contains("9.9.9"), "{c:?}");
        let other = GOOD.replace(
            "strait\",\"mtu\":1450",
            "strait\",\"socket\":\"/tmp/other.sock\"",
        );
        let c = Host::new(&[("10-strait.conflist", &other)], true).check();
        assert!(c.detail.contains("/tmp/other.sock"), "{c:?}");
        let bridge = r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#;
        let c = Host::new(
            &[("05-bridge.conf", bridge), ("10-strait.conflist", GOOD)],
            true,
        )
        .check();
        assert_eq!(c.verdict, Verdict::Warn, "another config first: {c:?}");
        assert!(c.detail.contains("05-bridge.conf"));
        let c = Host::new(&[("05-bridge.conf", bridge)], true).check();
        assert_eq!(c.verdict, Verdict::Warn, "none for strait: {c:?}");
    }

    /// The entry is judged as the plugin judges it, not by a second set of rules.
    #[test]
    fn the_entry_is_what_the_plugin_accepts() {
        let with = |from: &str, to: &str| {
            let conf = GOOD.replace(from, to);
            Host::new(&[("10-strait.conflist", &conf)], true).check()
        };
        // The plugin takes any MTU from IPv4's 68.
        let c = with("1450", "576");
        assert_eq!(c.verdict, Verdict::Ok, "{c:?}");
        let c = with("1450", "100");
        assert_eq!(c.verdict, Verdict::Ok, "{c:?}");
        let c = with("1450", "40");
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("mtu 40"), "{c:?}");
        let c = with("1450", "\"big\"");
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        let c = with("\"mtu\":1450", "\"socket\":\"run/strait.sock\"");
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("absolute"), "{c:?}");
        let c = with("podnet", "-podnet");
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        // No socket key: the plugin dials its default, which must be this agent's.
        let conf = Host::new(&[("10-strait.conflist", GOOD)], true);
        let c = check(
            conf.conf.path(),
            &[conf.bin.path().to_path_buf()],
            Path::new("/run/other/strait.sock"),
        );
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(
            c.detail.contains(strait_api::DEFAULT_SOCKET) && c.detail.contains("/run/other"),
            "{c:?}"
        );
    }
}
