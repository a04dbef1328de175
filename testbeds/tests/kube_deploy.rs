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
//!   probes' paths on the metrics port;
//! * the DaemonSet's pod in Podman, unprivileged as the manifest says: its init
//!   containers (the bpffs mounted with Bidirectional propagation onto a stand-in for
//!   the node's /sys/fs/bpf, the plugin installed), then the agent in a test node's
//!   namespace with the manifest's capabilities (and no other), no_new_privs, the
//!   default seccomp filter and the manifest's mounts; a CNI ADD through the installed
//!   plugin, the pod pinged, DEL, the agent stopped, nothing of the pod left; the bgp
//!   fabric's port 179 bound.
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
use strait_testbeds::kube::{KubeApi, KubeOpts, network_unavailable};
use strait_testbeds::repo_root;
use strait_testbeds::runtimes::Podman;
use strait_testbeds::wait_until;

/// How long the in-cluster agent may take to react to the API server.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// The kubeconform version `scripts/kubeconform-build.sh` builds by default; its cache
/// dir is where [`kubeconform`] looks without `$STRAIT_KUBECONFORM`.
const KUBECONFORM_VERSION: &str = "v0.8.0";

fn manifests_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
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

/// The HTTP status `curl` gets for `url` where `exec` runs it (a node's namespace):
/// what a kubelet's `httpGet` probe would see; `000` when nothing answers.
fn http_status(exec: impl Fn(&[&str]) -> Output, url: &str) -> String {
    let out = exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        url,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
    // refuses any privileged container (the init container mount-bpffs is one: it mounts
    // the bpffs with Bidirectional propagation; daemonset.yaml says why).
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
    let init = |name: &str| {
        pod["initContainers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("an init container {name}: {pod}"))
    };
    assert_eq!(init("install-cni")["command"][0], "/usr/bin/install-cni.sh");
    // The one privileged container is the short one that mounts the bpffs.
    assert_eq!(init("mount-bpffs")["securityContext"]["privileged"], true);
    let agent = &pod["containers"][0];
    assert_eq!(agent["args"][2], "--kubernetes-in-cluster");
    assert_eq!(agent["securityContext"]["privileged"], false);
    assert_eq!(
        agent["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
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

/// scripts/build-image.sh with the debug binaries into `podman`'s private storage; the
/// image's tag.
fn build_image(test: &str, podman: &Podman, prefix: &str) -> String {
    let tag = format!("localhost/strait-test-{prefix}:latest");
    let bin_dir = strait_testbeds::bins::bin("straitd")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let mut build = Command::new(repo_root().join("scripts/build-image.sh"));
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
    tag
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
    let tag = build_image(test, &podman, &prefix);

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
    // The init container as the DaemonSet runs it, with `extra` podman flags.
    let install_cni = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-v", &vbin, "-v", &vnet, "-v", &vetc]);
        args.extend_from_slice(&["--entrypoint", "/usr/bin/install-cni.sh", &tag]);
        podman.run(&args)
    };
    let out = install_cni(&["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]);
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
    let out = install_cni(&["--cap-drop", "ALL"]);
    assert!(
        out.status.success(),
        "install-cni.sh over installed files: {}",
        text(&out)
    );
    // No conflist in the ConfigMap mount: the init container fails and says why.
    std::fs::remove_file(etc.join("10-strait.conflist")).expect("remove");
    let out = install_cni(&[]);
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
    kube.mark_network_unavailable("h1");

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
        // The ConfigMap's /host/proc/sys is the pod's mount of the host's
        // /proc/sys/net; outside a container the agent's own /proc/sys is that.
        // (kube_agent_unprivileged_in_podman runs it with the mount.)
        "--proc-sys-dir".into(),
        "/proc/sys".into(),
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
            let cond = network_unavailable(&node);
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
        let code = http_status(|argv| host.exec(argv), &url);
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

// ---------------------------------------------------------------------------------
// The DaemonSet's pod in Podman: the init containers, then the agent unprivileged.

/// The capabilities the DaemonSet may name, by their bit in `/proc/<pid>/status`.
fn capability_bit(name: &str) -> u32 {
    match name {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "FOWNER" => 3,
        "KILL" => 5,
        "SETGID" => 6,
        "SETUID" => 7,
        "NET_BIND_SERVICE" => 10,
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "IPC_LOCK" => 14,
        "SYS_MODULE" => 16,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other}: add its bit to the test"),
    }
}

/// A field of `/proc/<pid>/status`.
fn status_field(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// The `podman run` options that give a container of the DaemonSet what its spec
/// gives it: its security context (privileged, capabilities, no_new_privs, seccomp)
/// and its volume mounts, each volume's source replaced by the test's stand-in for it
/// (`host`: a hostPath's path to the test's, `config`: the ConfigMap's directory).
fn podman_opts(
    container: &Value,
    volumes: &Value,
    host: &BTreeMap<&str, PathBuf>,
    config: &Path,
) -> Vec<String> {
    let name = container["name"].as_str().expect("container name");
    let sc = &container["securityContext"];
    let mut opts = Vec::new();
    if sc["privileged"] == true {
        opts.push("--privileged".to_string());
    } else {
        let caps = &sc["capabilities"];
        assert_eq!(
            caps["drop"],
            json!(["ALL"]),
            "{name}: drops every capability"
        );
        opts.extend(["--cap-drop".to_string(), "all".to_string()]);
        for cap in caps["add"].as_array().into_iter().flatten() {
            opts.extend(["--cap-add".to_string(), cap.as_str().expect("cap").into()]);
        }
    }
    if sc["allowPrivilegeEscalation"] == false {
        opts.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    match sc["seccompProfile"]["type"].as_str() {
        // Podman's default filter is containers-common's, the one CRI-O applies for
        // RuntimeDefault (containerd's is the same list, from the same origin).
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => opts.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        Some(other) => panic!("{name}: seccompProfile {other} not handled by the test"),
    }
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let vol_name = m["name"].as_str().expect("volumeMount name");
        let vol = volumes
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == vol_name))
            .unwrap_or_else(|| panic!("{name}: no volume {vol_name}"));
        let source = if vol.get("configMap").is_some() {
            config.to_path_buf()
        } else {
            let path = vol["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("volume {vol_name}: neither configMap nor hostPath"));
            host.get(path)
                .unwrap_or_else(|| panic!("hostPath {path}: the test has no stand-in for it"))
                .clone()
        };
        let mut flags = Vec::new();
        if m["readOnly"] == true {
            flags.push("ro");
        }
        match m["mountPropagation"].as_str() {
            None | Some("None") => {}
            Some("HostToContainer") => flags.push("rslave"),
            Some("Bidirectional") => flags.push("rshared"),
            Some(other) => panic!("{name}: mountPropagation {other}"),
        }
        let target = m["mountPath"].as_str().expect("mountPath");
        let mut v = format!("{}:{target}", source.display());
        if !flags.is_empty() {
            v = format!("{v}:{}", flags.join(","));
        }
        opts.extend(["-v".into(), v]);
    }
    opts
}

/// What the test starts and mounts, undone on drop (also on panic), in the reverse
/// order: the containers it named (only those), then the bpffs it mounted, then the
/// cgroup it made.
struct PodGuard<'a> {
    podman: &'a Podman,
    containers: Vec<String>,
    bpffs: Option<PathBuf>,
    cgroup: Option<PathBuf>,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        for name in self.containers.drain(..).rev() {
            if std::thread::panicking() {
                let out = self.podman.run(&["logs", &name]);
                eprintln!(
                    "----- podman logs {name} -----\n{}{}\n----- end -----",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let _ = self
                .podman
                .run(&["rm", "-f", "-t", "10", "--ignore", &name]);
        }
        if let Some(dir) = self.bpffs.take() {
            // Every mount on it (the init container's bpffs, the test's bind): lazily,
            // deepest first.
            for _ in 0..4 {
                if !Command::new("umount")
                    .arg("-l")
                    .arg(&dir)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
                {
                    break;
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        if let Some(dir) = self.cgroup.take() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[test]
fn kube_agent_unprivileged_in_podman() {
    let test = "kube_agent_unprivileged_in_podman";
    if !strait_testbeds::require_root(test)
        || !strait_testbeds::runtimes::require_tools(
            test,
            &["podman", "runc", "/bin/busybox", "ping", "curl", "mount"],
        )
    {
        return;
    }
    strait_testbeds::netns::reap_leftovers();
    let prefix = strait_testbeds::unique_prefix();
    let podman = Podman::new(&prefix);
    let tag = build_image(test, &podman, &prefix);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-pod-"))
        .tempdir()
        .expect("temp dir");
    let d = dir.path();

    // The node: a namespace with an underlay interface and a default route, which the
    // vxlan fabric of the ConfigMap takes its address from.
    let node = strait_testbeds::netns::Netns::new(format!("{prefix}h"));
    // (A veth whose peer stays in the namespace: this kernel may have no dummy.)
    for cmd in [
        "ip link add eth0 type veth peer name uplink",
        "ip address add 192.0.2.10/24 dev eth0",
        "ip link set uplink up",
        "ip link set eth0 up",
        "ip route add default via 192.0.2.1 dev eth0",
    ] {
        node.exec_ok(&cmd.split(' ').collect::<Vec<_>>());
    }

    // The node's directories the DaemonSet mounts, as the test's own.
    let (state, run_dir, bin, net, etc, bpffs) = (
        d.join("var-lib-strait"),
        d.join("run-strait"),
        d.join("opt-cni-bin"),
        d.join("etc-cni-net.d"),
        d.join("etc-strait"),
        d.join("sys-fs-bpf"),
    );
    for p in [&state, &run_dir, &bin, &net, &etc, &bpffs] {
        std::fs::create_dir_all(p).expect("node dir");
    }
    // The host's cgroup v2 root, as the agent's socket balancer sees it: a cgroup of
    // this test's, so it serves no process but the test's.
    let cgroup = strait_testbeds::agent::test_cgroup2().join(node.name());
    std::fs::create_dir_all(&cgroup).expect("cgroup");
    let mut guard = PodGuard {
        podman: &podman,
        containers: vec![],
        bpffs: None,
        cgroup: Some(cgroup.clone()),
    };
    // The node's /sys/fs/bpf: a shared mount point, as on a systemd host, so that
    // what the init container mounts there with Bidirectional propagation reaches it.
    let b = bpffs.display().to_string();
    for args in [
        ["--bind", b.as_str(), b.as_str()].as_slice(),
        &["--make-private", &b],
        &["--make-shared", &b],
    ] {
        let mut c = Command::new("mount");
        c.args(args);
        let out = run(c);
        assert!(out.status.success(), "mount {args:?}: {}", text(&out));
        guard.bpffs = Some(bpffs.clone());
    }

    // The ConfigMap's files, with this test's store: the embedded one (no etcd
    // endpoints); everything else as a user applies it.
    let data = configmap_data();
    for (k, v) in &data {
        let v = if k == "straitd.toml" {
            let toml: String = v
                .lines()
                .filter(|l| !l.starts_with("etcd_endpoints"))
                .map(|l| format!("{l}\n"))
                .collect();
            assert!(toml.contains("proc_sys_dir = \"/host/proc/sys\""), "{toml}");
            toml
        } else {
            v.clone()
        };
        std::fs::write(etc.join(k), v).expect("write ConfigMap key");
    }

    let ds: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(manifests_dir().join("daemonset.yaml")).expect("read"),
    )
    .expect("daemonset.yaml is one YAML document");
    let cm: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(manifests_dir().join("configmap.yaml")).expect("read"),
    )
    .expect("configmap.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let volumes = &pod["volumes"];
    // (This machine may have no /lib/modules: an empty one stands in.)
    let modules = match Path::new("/lib/modules").is_dir() {
        true => PathBuf::from("/lib/modules"),
        false => {
            let m = d.join("lib-modules");
            std::fs::create_dir_all(&m).expect("modules dir");
            m
        }
    };
    // Each hostPath and what stands in for it here. /proc/sys/net is the real one:
    // what it shows and changes is the opener's namespace, the test node's.
    let host: BTreeMap<&str, PathBuf> = [
        ("/var/lib/strait", state.clone()),
        ("/run/strait", run_dir.clone()),
        ("/opt/cni/bin", bin.clone()),
        ("/etc/cni/net.d", net.clone()),
        ("/sys/fs/bpf", bpffs.clone()),
        ("/sys/fs/cgroup", cgroup.clone()),
        ("/run/netns", PathBuf::from("/run/netns")),
        ("/proc/sys/net", PathBuf::from("/proc/sys/net")),
        ("/dev/net/tun", PathBuf::from("/dev/net/tun")),
        ("/lib/modules", modules),
    ]
    .into_iter()
    .collect();
    let network = format!("ns:{}", node.path().display());
    let entry = |c: &Value| -> Vec<String> {
        let cmd: Vec<&str> = c["command"]
            .as_array()
            .expect("command")
            .iter()
            .map(|a| a.as_str().expect("string"))
            .collect();
        vec![
            "--entrypoint".into(),
            serde_json::to_string(&cmd).expect("JSON"),
        ]
    };

    // 1. The init containers, in order, as the kubelet runs them.
    for init in pod["initContainers"].as_array().expect("initContainers") {
        let name = format!("{prefix}-{}", init["name"].as_str().expect("name"));
        guard.containers.push(name.clone());
        let mut args: Vec<String> = vec![
            "run".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            network.clone(),
        ];
        args.extend(podman_opts(init, volumes, &host, &etc));
        args.extend(entry(init));
        args.push(tag.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = podman.run(&args);
        assert!(
            out.status.success(),
            "init container {name}: {}",
            text(&out)
        );
        println!(
            "{test}: init container {name}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        let _ = podman.run(&["rm", &name]);
        guard.containers.retain(|c| c != &name);
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        mounts.lines().any(
            |l| l.split_whitespace().nth(1) == Some(&*bpffs.to_string_lossy())
                && l.split_whitespace().nth(2) == Some("bpf")
        ),
        "mount-bpffs left a bpffs on the node's /sys/fs/bpf ({})",
        bpffs.display()
    );
    let plugin = bin.join("strait");
    assert!(plugin.is_file(), "install-cni installed the plugin");

    // 2. The agent: the DaemonSet's container, command, args and env, unprivileged.
    let container = pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "straitd"))
        .expect("a straitd container");
    assert_eq!(container["securityContext"]["privileged"], false);
    let caps: Vec<String> = container["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("cap").to_string())
        .collect();
    let env = resolve_env(container, "node1", &cm);
    // Its args but --kubernetes-in-cluster: no API server here (kube_agent_in_cluster
    // has one); what this test is about is what the kernel lets the agent do.
    let agent_args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| expand(a.as_str().expect("string"), &env))
        .filter(|a| a != "--kubernetes-in-cluster")
        .collect();
    // `podman run -d` of the agent's container as the kubelet would make it, with
    // `extra` args; the stand-ins for the host paths in `host`.
    let start_agent = |name: &str, host: &BTreeMap<&str, PathBuf>, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.into(),
            "--network".into(),
            network.clone(),
        ];
        for (k, v) in &env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        args.extend(podman_opts(container, volumes, host, &etc));
        args.extend(entry(container));
        args.push(tag.clone());
        args.extend(agent_args.iter().cloned());
        args.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = podman.run(&argv);
        assert!(out.status.success(), "podman run the agent: {}", text(&out));
        println!("{test}: podman {}", args.join(" "));
    };
    let logs_of = |name: &str| {
        let out = podman.run(&["logs", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let socket = run_dir.join("strait.sock");
    let client = Client::new(&socket).with_timeout(Duration::from_secs(10));
    let wait_ready = |name: &str| {
        wait_until("the agent in its container ready", WAIT, POLL, || {
            let running = podman.ok(&["inspect", "--format", "{{.State.Running}}", name]);
            if running.trim() != "true" {
                panic!("the agent's container stopped:\n{}", logs_of(name));
            }
            match client.get::<Readiness>(paths::READYZ) {
                Ok(r) if r.ready => Ok(()),
                Ok(r) => Err(format!("not ready: {:?}", r.reasons)),
                Err(e) => Err(e.to_string()),
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", logs_of(name)))
    };
    let agent_name = format!("{prefix}-straitd");
    guard.containers.push(agent_name.clone());
    start_agent(&agent_name, &host, &[]);
    let logs = || logs_of(&agent_name);
    let took = wait_ready(&agent_name);
    println!("{test}: ready in {took:.1?}");
    // Everything that needs the kernel's leave came up: eBPF (policy, fast path, the
    // socket balancer on the cgroup), tc, the VXLAN device.
    let log = logs();
    for want in [
        "network policy datapath loaded",
        "fast path attached",
        "socket balancer attached",
        "packet-level translation attached",
        "creating the VXLAN device",
    ] {
        assert!(log.contains(want), "the agent's log says {want:?}:\n{log}");
    }
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors in the agent's log: {errors:#?}");

    // It runs with the DaemonSet's capabilities and nothing more, no_new_privs, a
    // seccomp filter, and a read-only /proc/sys of its own.
    let pid = podman
        .ok(&["inspect", "--format", "{{.State.Pid}}", &agent_name])
        .trim()
        .to_string();
    let want: u64 = caps.iter().map(|c| 1u64 << capability_bit(c)).sum();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let have = u64::from_str_radix(&status_field(&pid, set), 16).expect("hex");
        assert_eq!(have, want, "{set} {have:#x} is the DaemonSet's {caps:?}");
    }
    let nnp = container["securityContext"]["allowPrivilegeEscalation"] == false;
    assert_eq!(
        status_field(&pid, "NoNewPrivs"),
        if nnp { "1" } else { "0" }
    );
    assert_eq!(
        status_field(&pid, "Seccomp"),
        "2",
        "a seccomp filter applies"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let proc_sys_ro = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/proc/sys") && f.get(5).is_some_and(|o| o.split(',').any(|o| o == "ro"))
    });
    assert!(
        proc_sys_ro,
        "the container's /proc/sys is read-only:\n{mountinfo}"
    );
    println!(
        "{test}: capabilities {caps:?} (CapEff {want:#x}), no_new_privs {nnp}, seccomp filter, /proc/sys read-only"
    );
    // It turned forwarding on in the node's namespace, through the mount.
    assert_eq!(
        node.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .trim(),
        "1",
        "forwarding on in the node"
    );
    // And doctor reads it there.
    let report: Value = client.get(paths::DOCTOR).expect("GET /v1/doctor");
    let forwarding = report["nodes"][0]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "ip-forwarding"))
        .unwrap_or_else(|| panic!("doctor's ip-forwarding check: {report}"));
    assert_eq!(forwarding["verdict"], "ok", "{forwarding}");
    // And the node's CNI directories, through the DaemonSet's read-only mounts: the
    // conflist install-cni wrote names the socket this agent serves, and the plugin
    // is there.
    let cni = report["nodes"][0]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "cni-config"))
        .unwrap_or_else(|| panic!("doctor's cni-config check: {report}"));
    assert_eq!(cni["verdict"], "ok", "{cni}");
    assert!(
        cni["detail"]
            .as_str()
            .is_some_and(|d| d.contains("10-strait.conflist") && d.contains("/host/opt/cni/bin")),
        "{cni}"
    );
    // The probes' path, on the ConfigMap's metrics address.
    assert_eq!(
        http_status(|argv| node.exec(argv), "http://127.0.0.1:9464/readyz"),
        "200",
        "readinessProbe"
    );

    // 3. A pod: its namespace pinned after the agent started (/run/netns reaches the
    // agent through HostToContainer), ADD through the installed plugin with the
    // ConfigMap's conflist pointed at this node's socket and state dir.
    let pod_ns = strait_testbeds::netns::Netns::new(format!("{prefix}p"));
    let conflist: Value = serde_json::from_str(&data["10-strait.conflist"]).expect("conflist");
    let mut conf = conflist["plugins"][0].clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    assert_eq!(conf["socket"], "/run/strait/strait.sock");
    assert_eq!(conf["stateDir"], "/var/lib/strait");
    conf["socket"] = json!(socket);
    conf["stateDir"] = json!(state);
    let id = format!("{prefix}-pod");
    let add = strait_testbeds::cni::CniCall::of_plugin(&plugin, "ADD", conf.clone())
        .container(&id, &pod_ns.path())
        .ifname("eth0")
        .run();
    let result = add.expect_ok();
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("an address")
        .to_string();
    println!("{test}: ADD in {:.1?}: {ip}", add.took);
    // The result's interface without a sandbox is the host's end.
    let host_veth = result["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i.get("sandbox").is_none()))
        .and_then(|i| i["name"].as_str())
        .unwrap_or_else(|| panic!("the host-side veth in the result: {result}"))
        .to_string();
    assert!(node.links().contains(&host_veth), "{host_veth} on the node");
    assert_eq!(
        node.exec_ok(&[
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{host_veth}/proxy_arp")
        ])
        .trim(),
        "1",
        "proxy_arp on {host_veth}, written through /host/proc/sys"
    );
    assert!(node.ping(&ip), "the node reaches the pod at {ip}");

    // 4. DEL, the agent stopped as the kubelet stops it, and nothing of the pod left.
    let del = strait_testbeds::cni::CniCall::of_plugin(&plugin, "DEL", conf)
        .container(&id, &pod_ns.path())
        .ifname("eth0")
        .run();
    assert!(del.ok(), "DEL: {} {}", del.stdout, del.stderr);
    let out = podman.run(&["stop", "-t", "30", &agent_name]);
    assert!(out.status.success(), "podman stop: {}", text(&out));
    let exit = podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", &agent_name]);
    assert_eq!(
        exit.trim(),
        "0",
        "the agent exits 0 on SIGTERM:\n{}",
        logs()
    );
    let links = node.links();
    assert!(
        !links.contains(&host_veth),
        "the pod's veth {host_veth} is gone: {links:?}"
    );
    let addrs = pod_ns.exec_ok(&["ip", "-o", "address", "show"]);
    assert!(
        !addrs.contains(&ip),
        "the pod's address {ip} is gone: {addrs}"
    );
    assert_eq!(pod_ns.links(), ["lo"], "only lo is left in the pod");
    let routes = node.exec_ok(&["ip", "route", "show"]);
    assert!(
        !routes.contains(&ip),
        "no route to {ip} on the node: {routes}"
    );

    // 5. The bgp fabric, the ConfigMap's other choice with a port below 1024: the
    // same container (a fresh store: the cluster's fabric is the first agent's) with
    // `--fabric bgp` listens on 179 in the node's namespace.
    let bgp_state = d.join("var-lib-strait-bgp");
    std::fs::create_dir_all(&bgp_state).expect("state dir");
    let mut bgp_host = host.clone();
    bgp_host.insert("/var/lib/strait", bgp_state);
    let bgp_name = format!("{prefix}-straitd-bgp");
    guard.containers.push(bgp_name.clone());
    start_agent(&bgp_name, &bgp_host, &["--fabric", "bgp"]);
    let took = wait_ready(&bgp_name);
    let listening = node.exec_ok(&["ss", "-Hltn", "sport = :179"]);
    assert!(
        listening.contains("LISTEN"),
        "the BGP speaker listens on 179: {listening:?}\n{}",
        logs_of(&bgp_name)
    );
    println!("{test}: --fabric bgp ready in {took:.1?}, listening on 179");
    let out = podman.run(&["stop", "-t", "30", &bgp_name]);
    assert!(out.status.success(), "podman stop: {}", text(&out));

    drop(pod_ns);
    drop(guard);
    podman.ok(&["rmi", "-f", &tag]);
}
