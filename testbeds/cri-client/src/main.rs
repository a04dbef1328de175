//! `strait-cri`: a small CRI client, the crictl stand-in of strait's runtime tests.
//!
//! Debian ships no crictl, so the containerd test drives containerd's CRI plugin with
//! this binary: containerd (go-cni/libcni) then execs the CNI plugins exactly as under
//! a kubelet. It speaks CRI v1 over containerd's unix socket and prints JSON (or the
//! pod sandbox id for `runp`) on stdout, so a test can parse what it gets.
//!
//! Subcommands: `version`, `status`, `pods`, `runp`, `inspectp`, `stopp`, `rmp`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest,
    StopPodSandboxRequest, VersionRequest,
};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Parser)]
#[command(about = "Minimal CRI v1 client for strait's runtime tests")]
struct Cli {
    /// containerd's gRPC socket.
    #[arg(long, short = 'S')]
    socket: PathBuf,
    /// Deadline for each CRI call (RunPodSandbox runs the whole CNI chain).
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runtime name and versions.
    Version,
    /// Runtime conditions (RuntimeReady, NetworkReady) and, verbose, the CNI config.
    Status,
    /// All pod sandboxes: id, name, namespace, state.
    Pods,
    /// RunPodSandbox; prints the new sandbox id.
    Runp {
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Pod UID (default: `uid-<name>`).
        #[arg(long)]
        uid: Option<String>,
        /// Pod log directory (containerd creates it).
        #[arg(long, default_value = "")]
        log_dir: String,
        /// Pod labels, `key=value`.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// PodSandboxStatus: `status` as CRI returns it, `info` with its JSON values parsed.
    Inspectp { id: String },
    /// StopPodSandbox (containerd's first CNI DEL).
    Stopp { id: String },
    /// RemovePodSandbox (containerd's second CNI DEL, without a netns).
    Rmp { id: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let deadline = Duration::from_secs(cli.timeout_secs);
    let out = tokio::time::timeout(deadline, run(&cli))
        .await
        .with_context(|| format!("no answer from containerd within {deadline:?}"))??;
    println!("{out}");
    Ok(())
}

/// A channel over the unix socket; the URI is a placeholder tonic requires.
async fn connect(socket: PathBuf) -> Result<Channel> {
    let ch = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .context("connect to containerd")?;
    Ok(ch)
}

async fn run(cli: &Cli) -> Result<String> {
    let mut c = RuntimeServiceClient::new(connect(cli.socket.clone()).await?);
    let out = match &cli.cmd {
        Cmd::Version => {
            let r = c
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await?;
            serde_json::to_string_pretty(&r.into_inner())?
        }
        Cmd::Status => {
            let r = c
                .status(StatusRequest { verbose: true })
                .await?
                .into_inner();
            let v = json!({ "status": r.status, "info": parse_info(&r.info) });
            serde_json::to_string_pretty(&v)?
        }
        Cmd::Pods => {
            let r = c
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await?
                .into_inner();
            let pods: Vec<Value> = r
                .items
                .iter()
                .map(|p| {
                    let m = p.metadata.clone().unwrap_or_default();
                    json!({ "id": p.id, "name": m.name, "namespace": m.namespace,
                            "state": p.state().as_str_name() })
                })
                .collect();
            serde_json::to_string_pretty(&pods)?
        }
        Cmd::Runp {
            name,
            namespace,
            uid,
            log_dir,
            labels,
        } => {
            let mut label_map = BTreeMap::new();
            for l in labels {
                let Some((k, v)) = l.split_once('=') else {
                    bail!("label {l:?} is not key=value");
                };
                label_map.insert(k.to_string(), v.to_string());
            }
            let config = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.clone(),
                    uid: uid.clone().unwrap_or_else(|| format!("uid-{name}")),
                    namespace: namespace.clone(),
                    attempt: 0,
                }),
                hostname: name.clone(),
                log_directory: log_dir.clone(),
                labels: label_map.into_iter().collect(),
                linux: Some(LinuxPodSandboxConfig::default()),
                ..Default::default()
            };
            c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id
        }
        Cmd::Inspectp { id } => {
            let r = c
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: true,
                })
                .await?
                .into_inner();
            let v = json!({ "status": r.status, "info": parse_info(&r.info) });
            serde_json::to_string_pretty(&v)?
        }
        Cmd::Stopp { id } => {
            c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            "stopped".into()
        }
        Cmd::Rmp { id } => {
            c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            "removed".into()
        }
    };
    Ok(out)
}

/// CRI's verbose `info` maps names to JSON *strings*; parse them so a caller can index
/// into e.g. `info.info.runtimeSpec.linux.namespaces` directly.
fn parse_info<S: std::hash::BuildHasher>(
    info: &std::collections::HashMap<String, String, S>,
) -> Value {
    let map: serde_json::Map<String, Value> = info
        .iter()
        .map(|(k, v)| {
            let parsed = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
            (k.clone(), parsed)
        })
        .collect();
    Value::Object(map)
}
