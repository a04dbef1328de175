//! strait's Kubernetes deployment (`deploy/kubernetes/`, `deploy/image/`) against the
//! real things it meets:
//!
//! * the manifests validate with kubeconform against JSON schemas written from a real
//!   kube-apiserver's OpenAPI document (strict: an unknown field fails), and the API
//!   server itself takes them with `kubectl apply --validate=strict` (server-side
//!   field validation) and stores the DaemonSet; a copy with an unknown field is
//!   refused by both;
//! * the image built by `scripts/build-image.sh` (debug binaries, a private Podman
//!   storage) runs `straitd --version` and every tool the agent execs, and its
//!   `install-cni.sh` entry copies the plugin and the ConfigMap's conflist into mounted
//!   directories; the image is removed at the end;
//! * `straitd` run the way the DaemonSet runs it: the command, args and env of the
//!   stored DaemonSet (resolved as the kubelet would: the Node's name, the ConfigMap's
//!   keys), the ConfigMap's `straitd.toml`, the service-account token, `ca.crt` and
//!   namespace at `/var/run/secrets/kubernetes.io/serviceaccount` (bind-mounted in a
//!   private mount namespace: the host is untouched), `--kubernetes-in-cluster` in a
//!   host of a test bed: it follows the API server (its Node put right, a
//!   NetworkPolicy applied with kubectl in `netctl policy list`) and serves the
//!   probes' paths on the metrics port.
//!
//! Root, etcd, the kube binaries (`scripts/kube-build.sh`), kubeconform
//! (`scripts/kubeconform-build.sh`, found through `$STRAIT_KUBECONFORM` or its cache
//! dir), Podman and busybox-static are needed; a missing one is a visible skip, and a
//! failure under `STRAIT_REQUIRE_PRIVILEGED=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strait_api::{Client, Readiness, paths};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric, KubeBed};
use strait_testbeds::etcd::Etcd;
use strait_testbeds::kube::{KubeApi, KubeOpts};
use strait_testbeds::runtimes::Podman;
use strait_testbeds::wait_until;

/// How long the in-cluster agent may take to react to the API server.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// The kubeconform version `scripts/kubeconform-build.sh` builds by default; its cache
/// dir is where [`kubeconform`] looks without `$STRAIT_KUBECONFORM`.
const KUBECONFORM_VERSION: &str = "v0.8.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace dir")
        .to_path_buf()
}

fn manifests_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The manifests a user applies, in the order they apply them.
fn manifests() -> Vec<PathBuf> {
    ["rbac.yaml", "configmap.yaml", "daemonset.yaml"]
        .iter()
        .map(|f| manifests_dir().join(f))
        .collect()
}

fn skip_or_fail(test: &str, why: &str) -> bool {
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {why}, and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP: {test}: {why}");
    false
}

fn kube_guards(test: &str) -> bool {
    strait_testbeds::require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && strait_testbeds::kube::require_kube(test)
}

/// kubeconform: `$STRAIT_KUBECONFORM` (scripts/test.sh sets it to what the build
/// script printed), else the build script's cache.
fn kubeconform() -> Option<PathBuf> {
    let path = match std::env::var_os("STRAIT_KUBECONFORM") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("STRAIT_KUBE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/strait/kube"))
            .join(format!("kubeconform-{KUBECONFORM_VERSION}"))
            .join("kubeconform"),
    };
    path.is_file().then_some(path)
}

fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------
// Schemas from the API server's OpenAPI document, as kubeconform reads them.

/// (apiVersion, kind) of every document in the YAML files.
fn kinds_in(files: &[PathBuf]) -> BTreeSet<(String, String)> {
    let mut kinds = BTreeSet::new();
    for f in files {
        let yaml = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            assert!(
                !api.is_empty() && !kind.is_empty(),
                "{}: a document without apiVersion or kind",
                f.display()
            );
            kinds.insert((api, kind));
        }
    }
    kinds
}

/// kubeconform's file name for a kind: `{{ .ResourceKind }}{{ .KindSuffix }}.json`,
/// e.g. `daemonset-apps-v1.json`, `configmap-v1.json`, `clusterrole-rbac-v1.json`.
fn schema_file_name(api_version: &str, kind: &str) -> String {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (Some(g), v),
        None => (None, api_version),
    };
    let suffix = match group {
        Some(g) => format!(
            "-{}-{}",
            g.split('.').next().unwrap_or(g).to_lowercase(),
            version.to_lowercase()
        ),
        None => format!("-{}", version.to_lowercase()),
    };
    format!("{}{suffix}.json", kind.to_lowercase())
}

/// Every `#/definitions/X` the schema refers to, transitively.
fn referenced(defs: &serde_json::Map<String, Value>, root: &str) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref")
                    && let Some(name) = r.strip_prefix("#/definitions/")
                {
                    out.push(name.to_string());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(d) = defs.get(&name) {
            refs(d, &mut todo);
        }
    }
    seen
}

/// What `openapi2jsonschema --strict` does to an OpenAPI v2 definition: objects with
/// declared properties accept no others (that is what makes an unknown field fail).
fn strict(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            m.values_mut().for_each(strict);
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

/// Writes a standalone strict schema per kind in `kinds` into `dir`, from the API
/// server's `/openapi/v2`. Panics if the API server does not know a kind.
fn write_schemas(openapi: &Value, kinds: &BTreeSet<(String, String)>, dir: &Path) {
    let mut defs = openapi["definitions"]
        .as_object()
        .expect("/openapi/v2 has definitions")
        .clone();
    // OpenAPI v2 says `type: string` with a format for these two; both take numbers.
    defs.insert(
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString".into(),
        json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
    );
    defs.insert(
        "io.k8s.apimachinery.pkg.api.resource.Quantity".into(),
        json!({"anyOf": [{"type": "string"}, {"type": "number"}]}),
    );
    for (api_version, kind) in kinds {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version.as_str()),
        };
        let name = defs
            .iter()
            .find(|(_, d)| {
                d["x-kubernetes-group-version-kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|gvk| {
                        gvk["group"] == group && gvk["version"] == version && gvk["kind"] == *kind
                    })
            })
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| panic!("the API server's OpenAPI has no {api_version} {kind}"));
        let mut closure = serde_json::Map::new();
        for n in referenced(&defs, &name) {
            if let Some(d) = defs.get(&n) {
                closure.insert(n, d.clone());
            }
        }
        let mut schema = json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "$ref": format!("#/definitions/{name}"),
            "definitions": closure,
        });
        strict(&mut schema);
        let path = dir.join(schema_file_name(api_version, kind));
        std::fs::write(&path, schema.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// kubeconform -strict on `files` with the schemas in `dir` only (never GitHub).
fn run_kubeconform(bin: &Path, schemas: &Path, files: &[PathBuf]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("-strict")
        .arg("-summary")
        .args(["-output", "text"])
        .arg("-schema-location")
        .arg(format!(
            "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            schemas.display()
        ))
        .args(files);
    run(cmd)
}

/// daemonset.yaml with a field the DaemonSet's pod spec does not have.
fn misspelled_daemonset(dir: &Path) -> PathBuf {
    let good = std::fs::read_to_string(manifests_dir().join("daemonset.yaml")).expect("read");
    let line = "      hostNetwork: true\n";
    assert!(good.contains(line), "daemonset.yaml sets hostNetwork");
    let bad = good.replacen(
        line,
        "      hostNetwork: true\n      hostNetwrok: true\n",
        1,
    );
    let path = dir.join("daemonset-misspelled.yaml");
    std::fs::write(&path, bad).expect("write the bad copy");
    path
}

#[test]
fn kube_manifests_validate() {
    let test = "kube_manifests_validate";
    if !kube_guards(test) {
        return;
    }
    let Some(kubeconform) = kubeconform() else {
        skip_or_fail(
            test,
            "kubeconform not built (run scripts/kubeconform-build.sh, or set \
             STRAIT_KUBECONFORM to the path it prints)",
        );
        return;
    };
    let etcd = Etcd::start();
    // As kubeadm and every distribution run it: without the flag the API server
    // refuses any privileged container (the agent is one: daemonset.yaml says why).
    let kube = KubeApi::start_with(
        etcd.endpoints(),
        KubeOpts {
            extra: vec!["--allow-privileged=true".into()],
            ..Default::default()
        },
    );
    let dir = tempfile::Builder::new()
        .prefix("strait-kube-deploy-")
        .tempdir()
        .expect("temp dir");

    // 1. kubeconform, with the schemas of the API server the tests run.
    let openapi = kube.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    let openapi: Value = serde_json::from_str(&openapi).expect("/openapi/v2 is JSON");
    let files = manifests();
    let bad = misspelled_daemonset(dir.path());
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(&schemas).expect("schemas dir");
    let kinds = kinds_in(&files);
    write_schemas(&openapi, &kinds, &schemas);
    for want in ["DaemonSet", "ConfigMap", "ServiceAccount", "ClusterRole"] {
        assert!(
            kinds.iter().any(|(_, k)| k == want),
            "the manifests have a {want}: {kinds:?}"
        );
    }
    let out = run_kubeconform(&kubeconform, &schemas, &files);
    assert!(out.status.success(), "kubeconform: {}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    println!("{test}: kubeconform: {}", summary.trim());
    assert!(
        summary.contains(&format!("Valid: {}", kinds_count(&files))),
        "every document validated (none skipped): {summary}"
    );
    let out = run_kubeconform(&kubeconform, &schemas, std::slice::from_ref(&bad));
    let said = text(&out);
    assert!(
        !out.status.success(),
        "kubeconform refuses an unknown field: {said}"
    );
    assert!(
        said.contains("hostNetwrok"),
        "kubeconform names the field: {said}"
    );

    // 2. The API server, with server-side strict field validation.
    let mut args = vec!["apply", "--validate=strict"];
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    for p in &paths {
        args.extend(["-f", p.as_str()]);
    }
    let applied = kube.kubectl_ok(&args);
    println!("{test}: {}", applied.trim().replace('\n', "; "));
    let ds: Value = serde_json::from_str(&kube.kubectl_ok(&[
        "get",
        "daemonset",
        "strait",
        "-n",
        "kube-system",
        "-o",
        "json",
    ]))
    .expect("DaemonSet JSON");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["serviceAccountName"], "strait");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["initContainers"][0]["command"][0],
        "/usr/bin/install-cni.sh"
    );
    assert_eq!(pod["containers"][0]["args"][2], "--kubernetes-in-cluster");
    // Applying the same files again changes nothing: what was written is what is
    // stored (no field dropped or defaulted over).
    let again = kube.kubectl_ok(&args);
    assert!(
        again.lines().all(|l| l.ends_with("unchanged")),
        "a second apply changes nothing: {again}"
    );
    let bad_path = bad.display().to_string();
    let out = kube.kubectl(&["apply", "--validate=strict", "-f", &bad_path]);
    let said = text(&out);
    assert!(
        !out.status.success(),
        "the API server refuses an unknown field: {said}"
    );
    assert!(
        said.contains("unknown field") && said.contains("hostNetwrok"),
        "the refusal names the field: {said}"
    );
}

/// Documents in the files (what kubeconform counts as valid when all are).
fn kinds_count(files: &[PathBuf]) -> usize {
    let mut n = 0;
    for f in files {
        let yaml = std::fs::read_to_string(f).expect("read");
        for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            if !v.is_null() {
                n += 1;
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------
// The image.

/// The ConfigMap's data, parsed from configmap.yaml.
fn configmap_data() -> BTreeMap<String, String> {
    let path = manifests_dir().join("configmap.yaml");
    let yaml = std::fs::read_to_string(&path).expect("read configmap.yaml");
    let v: Value = serde_yaml_ng::from_str(&yaml).expect("configmap.yaml is one YAML document");
    assert_eq!(v["kind"], "ConfigMap");
    serde_json::from_value(v["data"].clone()).expect("data is a string map")
}

#[test]
fn kube_image_runs_and_installs_cni() {
    let test = "kube_image_runs_and_installs_cni";
    if !strait_testbeds::require_root(test)
        || !strait_testbeds::runtimes::require_tools(test, &["podman", "runc", "/bin/busybox"])
    {
        return;
    }
    let prefix = strait_testbeds::unique_prefix();
    // Its own storage: the image never reaches the machine's Podman, and goes with the
    // temp dir whatever happens.
    let podman = Podman::new(&prefix);
    let tag = format!("localhost/strait-test-{prefix}:latest");
    let bin_dir = strait_testbeds::bins::bin("straitd")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let mut build = Command::new(repo().join("scripts/build-image.sh"));
    build
        .args(["--profile", "debug", "--tag", &tag, "--bin-dir"])
        .arg(&bin_dir)
        .env("CONTAINERS_CONF", &podman.conf)
        .env("CONTAINERS_STORAGE_CONF", &podman.storage_conf);
    let started = Instant::now();
    let out = run(build);
    assert!(out.status.success(), "build-image.sh: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag);
    let size = podman.ok(&["image", "inspect", "--format", "{{.Size}}", &tag]);
    println!(
        "{test}: built {tag} in {:.1?}, {} MB",
        started.elapsed(),
        size.trim().parse::<u64>().unwrap_or(0) / 1_000_000
    );

    // The agent and every tool it execs start: their libraries are all there.
    let run_in = |entry: &str, args: &[&str]| -> String {
        let mut all = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            entry,
            &tag,
        ];
        all.extend_from_slice(args);
        podman.ok(&all)
    };
    let version = podman.ok(&["run", "--rm", "--network", "none", &tag, "--version"]);
    assert!(
        version.starts_with("straitd "),
        "the image's entry point is straitd: {version}"
    );
    assert!(run_in("/usr/bin/netctl", &["--version"]).starts_with("netctl "));
    assert!(run_in("/usr/sbin/tc", &["-V"]).contains("iproute2"));
    assert!(run_in("/usr/bin/mount", &["--version"]).contains("util-linux"));
    assert!(run_in("/usr/bin/umount", &["--version"]).contains("util-linux"));
    for save in [
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "iptables-nft-save",
        "ip6tables-nft-save",
    ] {
        let v = run_in(&format!("/usr/sbin/{save}"), &["--version"]);
        assert!(v.contains("v1."), "{save} --version: {v}");
    }

    // The init container's entry, with the DaemonSet's mount points and as little
    // privilege as the manifest gives it.
    let host = podman.dir().join("node");
    let (bin, net, etc) = (
        host.join("opt-cni-bin"),
        host.join("etc-cni-net.d"),
        host.join("etc-strait"),
    );
    for d in [&bin, &net, &etc] {
        std::fs::create_dir_all(d).expect("node dir");
    }
    let data = configmap_data();
    for (k, v) in &data {
        std::fs::write(etc.join(k), v).expect("write ConfigMap key");
    }
    let vol = |from: &Path, to: &str| format!("{}:{to}", from.display());
    let (vbin, vnet, vetc) = (
        vol(&bin, "/host/opt/cni/bin"),
        vol(&net, "/host/etc/cni/net.d"),
        vol(&etc, "/etc/strait:ro"),
    );
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &vbin,
        "-v",
        &vnet,
        "-v",
        &vetc,
        "--entrypoint",
        "/usr/bin/install-cni.sh",
        &tag,
    ]);
    assert!(out.status.success(), "install-cni.sh: {}", text(&out));
    let conflist =
        std::fs::read_to_string(net.join("10-strait.conflist")).expect("conflist installed");
    assert_eq!(
        conflist, data["10-strait.conflist"],
        "the ConfigMap's conflist, as it is"
    );
    let parsed: Value = serde_json::from_str(&conflist).expect("the conflist is JSON");
    assert_eq!(parsed["plugins"][0]["type"], "strait");
    let mut names: Vec<String> = std::fs::read_dir(&bin)
        .expect("read bin dir")
        .chain(std::fs::read_dir(&net).expect("read net dir"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["10-strait.conflist", "strait"],
        "nothing but the two files (no temp file left)"
    );
    // The installed plugin is strait's and runs on this host, as the runtime execs it.
    let plugin = bin.join("strait");
    let out = run({
        let mut c = Command::new(&plugin);
        c.env("CNI_COMMAND", "VERSION");
        c
    });
    assert!(
        out.status.success(),
        "the installed plugin runs: {}",
        text(&out)
    );
    let versions: Value = serde_json::from_slice(&out.stdout).expect("VERSION answers JSON");
    assert!(
        versions["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v == "1.0.0")),
        "{versions}"
    );
    // Again, over the installed files: an upgrade's init container.
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "-v",
        &vbin,
        "-v",
        &vnet,
        "-v",
        &vetc,
        "--entrypoint",
        "/usr/bin/install-cni.sh",
        &tag,
    ]);
    assert!(
        out.status.success(),
        "install-cni.sh over installed files: {}",
        text(&out)
    );
    // No conflist in the ConfigMap mount: the init container fails and says why.
    std::fs::remove_file(etc.join("10-strait.conflist")).expect("remove");
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &vbin,
        "-v",
        &vnet,
        "-v",
        &vetc,
        "--entrypoint",
        "/usr/bin/install-cni.sh",
        &tag,
    ]);
    assert!(
        !out.status.success(),
        "no conflist, no install: {}",
        text(&out)
    );
    assert!(text(&out).contains("no conflist"), "{}", text(&out));

    podman.ok(&["rmi", "-f", &tag]);
    let left = podman.ok(&["images", "--format", "{{.Repository}}"]);
    assert!(!left.contains("strait-test-"), "the image is gone: {left}");
}

// ---------------------------------------------------------------------------------
// straitd in-cluster, as the DaemonSet runs it.

/// The secrets mount point kube-rs (like client-go) reads in a pod.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A `straitd` started as the DaemonSet's container would be; killed by PID on drop,
/// its log printed if the test is failing.
struct PodAgent {
    child: Option<Child>,
    log: PathBuf,
}

impl PodAgent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            strait_testbeds::process::kill_now(c);
        }
        if std::thread::panicking() {
            eprintln!(
                "----- in-cluster straitd log ({}) -----\n{}\n----- end of log -----",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// The container's env as the kubelet gives it: values, the Node's name for
/// `spec.nodeName`, and the ConfigMap's keys (an optional missing key leaves the
/// variable out).
fn resolve_env(container: &Value, node: &str, configmap: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        if let Some(v) = e["value"].as_str() {
            env.push((name, v.to_string()));
            continue;
        }
        let from = &e["valueFrom"];
        if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            assert_eq!(
                path, "spec.nodeName",
                "{name}: the only field the test resolves"
            );
            env.push((name, node.to_string()));
        } else if let Some(key) = from["configMapKeyRef"]["key"].as_str() {
            assert_eq!(
                from["configMapKeyRef"]["name"],
                configmap["metadata"]["name"]
            );
            match configmap["data"][key].as_str() {
                Some(v) => env.push((name, v.to_string())),
                None => assert_eq!(
                    from["configMapKeyRef"]["optional"], true,
                    "{name}: ConfigMap key {key} missing and not optional"
                ),
            }
        } else {
            panic!("{name}: a valueFrom the test does not resolve: {from}");
        }
    }
    env
}

/// `$(VAR)` in the container's command and args, as the kubelet expands them.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter().fold(arg.to_string(), |a, (k, v)| {
        a.replace(&format!("$({k})"), v)
    })
}

#[test]
fn kube_agent_in_cluster() {
    let test = "kube_agent_in_cluster";
    if !kube_guards(test)
        || !strait_testbeds::runtimes::require_tools(test, &["unshare", "mount", "curl"])
    {
        return;
    }
    let data = configmap_data();
    let toml = &data["straitd.toml"];
    // The bed's cluster settings are the ConfigMap's, so its file is used as it is.
    assert!(toml.contains("pools = [\"10.244.0.0/16\"]") && toml.contains("fabric = \"vxlan\""));
    let mut opts = ClusterOpts::new(1, Fabric::Vxlan);
    opts.pools = vec!["10.244.0.0/16".into()];
    opts.agent_extra = vec!["--service-pool".into(), "10.96.0.0/12".into()];
    opts.kubernetes = Some(KubeBed::default());
    let mut cluster = Cluster::start(opts);
    let kube = cluster.kube();

    // The ConfigMap as a user applies it (the bed applied rbac.yaml), then the API
    // server's address in it (what a cluster without kube-proxy sets). The DaemonSet
    // is read from its file: the bed's API server runs without --allow-privileged
    // (kube_manifests_validate applies it to one that has it).
    let cm_file = manifests_dir().join("configmap.yaml").display().to_string();
    kube.kubectl_ok(&["apply", "--validate=strict", "-f", &cm_file]);
    let api_host = cluster.underlay().etcd_ip().to_string();
    let patch = json!({"data": {
        "api-server-host": api_host,
        "api-server-port": strait_testbeds::kube::NETNS_PORT.to_string(),
    }})
    .to_string();
    kube.kubectl_ok(&[
        "patch",
        "configmap",
        "strait-config",
        "-n",
        "kube-system",
        "--type=merge",
        "-p",
        &patch,
    ]);
    let get = |what: &[&str]| -> Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-n", "kube-system", "-o", "json"]);
        serde_json::from_str(&kube.kubectl_ok(&args)).expect("kubectl JSON")
    };
    let ds: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(manifests_dir().join("daemonset.yaml")).expect("read"),
    )
    .expect("daemonset.yaml is one YAML document");
    let configmap = get(&["configmap", "strait-config"]);
    let pod = &ds["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "straitd"))
        .expect("a straitd container")
        .clone();
    let service_account = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");

    // The pod's files: the ConfigMap where the DaemonSet mounts it, and the service
    // account's token, CA and namespace.
    let dir = tempfile::Builder::new()
        .prefix("strait-pod-")
        .tempdir()
        .expect("temp dir");
    let config_mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "config"))
        .and_then(|m| m["mountPath"].as_str())
        .expect("the config volume's mount")
        .to_string();
    let etc = dir.path().join("etc-strait");
    std::fs::create_dir_all(&etc).expect("etc dir");
    for (k, v) in configmap["data"].as_object().expect("data") {
        std::fs::write(etc.join(k), v.as_str().expect("string")).expect("write key");
    }
    let secrets = dir.path().join("serviceaccount");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    let token = kube.kubectl_ok(&[
        "create",
        "token",
        service_account,
        "-n",
        "kube-system",
        "--duration",
        "2h",
    ]);
    std::fs::write(secrets.join("token"), token.trim()).expect("token");
    std::fs::copy(kube.ca_cert(), secrets.join("ca.crt")).expect("ca.crt");
    std::fs::write(secrets.join("namespace"), "kube-system").expect("namespace");

    // The Node as a broken network would leave it: the new agent must put it right.
    cluster.stop_agent(0);
    let kube = cluster.kube();
    kube.kubectl_ok(&["annotate", "node", "h1", "strait.io/underlay-ipv4-"]);
    let unavailable = json!({"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "True",
        "reason": "SomeoneElse", "message": "set by the test",
    }]}})
    .to_string();
    kube.kubectl_ok(&[
        "patch",
        "node",
        "h1",
        "--subresource=status",
        "--type=strategic",
        "-p",
        &unavailable,
    ]);

    // The command line: the DaemonSet's, expanded; the binary and the config path
    // mapped to this machine's; then what differs per host in a test bed (flags win
    // over the file): its etcd, underlay, and the bed agent's socket and dirs.
    let host = cluster.host(0);
    let env = resolve_env(&container, &host.name, &configmap);
    let mut argv: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|a| expand(a.as_str().expect("string arg"), &env))
        .collect();
    assert_eq!(argv[0], "/usr/bin/straitd");
    argv[0] = strait_testbeds::bins::bin("straitd").display().to_string();
    for a in argv.iter_mut() {
        if let Some(rest) = a.strip_prefix(&format!("{config_mount}/")) {
            *a = etc.join(rest).display().to_string();
        }
    }
    assert!(
        argv.iter().any(|a| a == "--kubernetes-in-cluster"),
        "{argv:?}"
    );
    assert!(
        argv.iter().any(|a| a == "h1"),
        "the Node's name was expanded: {argv:?}"
    );
    let agent = &host.agent;
    argv.extend([
        "--etcd-endpoints".into(),
        cluster.etcd().client_url(),
        "--underlay-iface".into(),
        "eth0".into(),
        "--socket".into(),
        agent.socket.display().to_string(),
        "--state-dir".into(),
        agent.state_dir.display().to_string(),
        "--bpf-dir".into(),
        agent.bpf_dir().display().to_string(),
        "--service-cgroup".into(),
        agent.service_cgroup().display().to_string(),
    ]);
    let env_names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        env_names.contains(&"KUBERNETES_SERVICE_HOST")
            && env_names.contains(&"KUBERNETES_SERVICE_PORT"),
        "the API server's address comes from the ConfigMap: {env:?}"
    );

    // In the host's namespace, in a mount namespace of its own where a tmpfs over /var
    // holds the secrets' mount point (the host has no /var/run/secrets; /var/run is a
    // link to /run there).
    const POD_SHELL: &str = "set -e; mount -t tmpfs -o size=1m,mode=0755 strait-test-pod /var; \
        mkdir -p \"$SA\"; mount --bind \"$1\" \"$SA\"; mount -o remount,bind,ro \"$SA\"; \
        shift; exec \"$@\"";
    let log = cluster.dir().join("h1-in-cluster.log");
    let logf = File::create(&log).expect("log file");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.ns.name()])
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            POD_SHELL,
            "sh",
        ])
        .arg(&secrets)
        .args(&argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("SA", SA_DIR)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("dup"))
        .stderr(logf);
    // ip, unshare and sh each exec the next: the PID is straitd's.
    let mut pod = PodAgent {
        child: Some(cmd.spawn().expect("spawn the in-cluster straitd")),
        log,
    };
    println!("{test}: straitd {}", argv[1..].join(" "));

    let client = Client::new(&agent.socket).with_timeout(Duration::from_secs(10));
    let took = wait_until("the in-cluster agent ready", WAIT, POLL, || {
        if let Some(c) = pod.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("straitd exited with {status}:\n{}", pod.log());
        }
        match client.get::<Readiness>(paths::READYZ) {
            Ok(r) if r.ready => Ok(()),
            Ok(r) => Err(format!("not ready: {:?}", r.reasons)),
            Err(e) => Err(e.to_string()),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", pod.log()));
    println!("{test}: ready in {took:.1?}");
    let log = pod.log();
    assert!(
        !log.contains("kubeconfig"),
        "in-cluster, not a kubeconfig: {}",
        log.lines()
            .filter(|l| l.contains("kubeconfig"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // It follows its Node.
    let took = wait_until(
        "h1's Node put right by the in-cluster agent",
        WAIT,
        POLL,
        || {
            let node: Value =
                serde_json::from_str(&kube.kubectl_ok(&["get", "node", "h1", "-o", "json"]))
                    .map_err(|e| e.to_string())?;
            let cond = node["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "NetworkUnavailable"))
                .cloned()
                .unwrap_or(Value::Null);
            let ann = &node["metadata"]["annotations"]["strait.io/underlay-ipv4"];
            if cond["status"] == "False" && *ann == host.underlay_v4.to_string() {
                Ok(())
            } else {
                Err(format!(
                    "NetworkUnavailable {cond}, strait.io/underlay-ipv4 {ann}"
                ))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", pod.log()));
    println!("{test}: Node h1 put right in {took:.1?}");

    // A NetworkPolicy applied with kubectl reaches its store.
    kube.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  \
         namespace: shop\nspec:\n  podSelector:\n    matchLabels:\n      app: web\n  \
         policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {}\n",
    );
    let took = wait_until(
        "the NetworkPolicy in netctl policy list",
        WAIT,
        POLL,
        || {
            let (ok, out) = host.netctl(&["-o", "json", "policy", "list"]);
            if !ok {
                return Err(out);
            }
            let list: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
            let found = list.as_array().into_iter().flatten().any(|o| {
                o["key"].as_str().is_some_and(|k| k.ends_with("shop/web"))
                    && o["origin"] == "kubernetes"
            });
            if found { Ok(()) } else { Err(out) }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", pod.log()));
    println!("{test}: NetworkPolicy shop/web in the store in {took:.1?}");

    // The probes' paths, on the metrics address the ConfigMap gives.
    let metrics_addr = toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("metrics_addr = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("straitd.toml sets metrics_addr");
    let port = metrics_addr.rsplit(':').next().expect("a port");
    let port_in_ds = container["ports"][0]["containerPort"].to_string();
    assert_eq!(port, port_in_ds, "the probes' port is the metrics port");
    let mut missing = Vec::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .expect("httpGet path");
        let url = format!("http://127.0.0.1:{port}{path}");
        let out = host.exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            &url,
        ]);
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        println!("{test}: {probe} GET {url}: {code}");
        if code != "200" {
            missing.push(format!("{probe} {path}: HTTP {code}"));
        }
    }
    let out = host.exec(&[
        "curl",
        "-s",
        "--max-time",
        "10",
        &format!("http://127.0.0.1:{port}/metrics"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("# TYPE strait_"),
        "metrics on {metrics_addr}"
    );
    assert!(
        missing.is_empty(),
        "the DaemonSet's probes must answer 200: {missing:?}"
    );
    drop(pod);
}
