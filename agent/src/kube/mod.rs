//! Kubernetes integration: strait as the network of Kubernetes nodes.
//!
//! With `--kubeconfig FILE` or `--kubernetes-in-cluster` the agent watches the API
//! server and mirrors what policy needs into strait's own store objects, so that
//! `kubectl apply` is all a user does, and `netctl` shows those objects (origin
//! `kubernetes`) beside the ones it wrote itself:
//!
//! - [`cluster`]: Namespaces and NetworkPolicies become `namespaces/<name>` and
//!   `policy/k8s/<ns>/<name>`. One agent at a time writes them: the holder of
//!   `leader/kubernetes` (every agent watches, so a new leader starts from a full
//!   view). An object strait cannot express is refused on its own, reported under
//!   `kubernetes/refused/…` and as an Event on the object, and changes nothing else.
//! - [`services`]: Services and EndpointSlices become the service store's objects,
//!   written by the same leader (with the cluster IPs and node ports the API server
//!   gave them: `--service-pool` must hold the cluster's service range).
//! - [`pods`]: every agent follows the pods of its own node and gives each endpoint
//!   whose CNI ADD named a pod (`K8S_POD_NAMESPACE`/`K8S_POD_NAME`) that pod's labels,
//!   at ADD and whenever they change.
//! - [`node`]: this node's `Node`: `NetworkUnavailable` set `False` once the agent
//!   is ready, and annotations with its underlay and tunnel addresses.
//! - [`mirror`]: one watched kind, as a full list plus changes; a broken watch
//!   resumes from its resource version, or lists again, and the mirror replaces its
//!   contents only once the new list is complete: nothing is lost or doubled.
//! - [`translate`]: API objects into strait's documents, with the same parser
//!   `netctl policy apply` uses.

pub mod cluster;
pub mod mirror;
pub mod node;
pub mod pods;
pub mod services;
pub mod status;
pub mod translate;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::attach::Attacher;
use crate::store::{LeaseId, Store};

pub use status::KubeStatus;

/// Where the API server's address and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSource {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token).
    InCluster,
}

impl KubeSource {
    /// From the `kubeconfig` and `kubernetes_in_cluster` keys; both is an error.
    pub fn from_keys(
        kubeconfig: Option<PathBuf>,
        in_cluster: bool,
    ) -> Result<Option<Self>, String> {
        match (kubeconfig, in_cluster) {
            (Some(_), true) => Err(
                "--kubeconfig and --kubernetes-in-cluster both name an API server; give one"
                    .to_string(),
            ),
            (Some(path), false) => Ok(Some(KubeSource::Kubeconfig(path))),
            (None, true) => Ok(Some(KubeSource::InCluster)),
            (None, false) => Ok(None),
        }
    }

    /// A client for the API server (no request is made yet).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = match self {
            KubeSource::Kubeconfig(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            KubeSource::InCluster => kube::Config::incluster()
                .context("in-cluster credentials (is the agent running in a pod?)")?,
        };
        kube::Client::try_from(config).context("building the Kubernetes API client")
    }
}

/// What the integration needs of the rest of the agent.
pub struct KubeDeps {
    pub node: String,
    pub store: Arc<dyn Store>,
    /// The node registry's lease: the leader key lives with it.
    pub lease: watch::Receiver<Option<LeaseId>>,
    pub attacher: Arc<Attacher>,
    /// True once the agent is ready: the Node's network condition waits for it.
    pub ready: watch::Receiver<bool>,
    /// `--service-pool`: where the API server's Services' cluster IPs must lie.
    pub service_pools: Vec<ipnet::IpNet>,
}

/// The running integration: its tasks, and what `netctl kubernetes` shows.
pub struct Kube {
    pub status: Arc<KubeStatus>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// This node's pods (start-up waits for the first list).
    pub pods: mirror::View<k8s_openapi::api::core::v1::Pod>,
}

/// The watches of one start: each kind's view, its task pushed onto `tasks`.
struct Watches<'a> {
    client: &'a kube::Client,
    status: &'a Arc<KubeStatus>,
    stop: &'a watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watches<'_> {
    /// Follows every object of kind `K` in the cluster, or those `fields` selects
    /// (`spec.nodeName=n1`).
    fn follow<K>(&mut self, fields: Option<String>) -> mirror::View<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let mut config = kube::runtime::watcher::Config::default();
        if let Some(f) = &fields {
            config = config.fields(f);
        }
        let api = kube::Api::all(self.client.clone());
        mirror::follow(
            api,
            config,
            self.status.clone(),
            self.stop.clone(),
            &mut self.tasks,
        )
    }
}

/// Starts the watches and the loops that follow them, until `stop`.
pub fn start(client: kube::Client, deps: KubeDeps, stop: watch::Receiver<bool>) -> Kube {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    let status = Arc::new(KubeStatus::default());
    let mut w = Watches {
        client: &client,
        status: &status,
        stop: &stop,
        tasks: Vec::new(),
    };
    let namespaces = w.follow::<Namespace>(None);
    let nodes = w.follow::<Node>(Some(format!("metadata.name={}", deps.node)));
    let policies = w.follow::<NetworkPolicy>(None);
    let services = w.follow::<Service>(None);
    let slices = w.follow::<EndpointSlice>(None);
    let pods = w.follow::<Pod>(Some(format!("spec.nodeName={}", deps.node)));
    let mut tasks = w.tasks;

    let node = node::NodeSync::new(client.clone(), deps.store.clone(), deps.node.clone());
    tasks.push(tokio::spawn(node.run(
        nodes,
        deps.ready.clone(),
        stop.clone(),
    )));

    let sync = cluster::ClusterSync::new(
        deps.store.clone(),
        crate::services::store::ServiceStore::new(deps.store.clone(), deps.service_pools.clone()),
        deps.node.clone(),
        deps.lease.clone(),
        client.clone(),
        status.clone(),
    );
    let views = cluster::Views {
        namespaces,
        policies,
        services,
        slices,
    };
    tasks.push(tokio::spawn(sync.run(views, stop.clone())));

    let labels = pods::PodLabels::new(deps.attacher.clone());
    deps.attacher
        .set_pod_source(Arc::new(labels.source(pods.clone())));
    deps.attacher.subscribe(Arc::new(labels.clone()));
    tasks.push(tokio::spawn(labels.run(pods.clone(), stop)));

    Kube {
        status,
        tasks,
        pods,
    }
}
