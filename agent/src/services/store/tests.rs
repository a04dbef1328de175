use std::sync::Arc;

use strait_services::parse_documents;

use super::*;
use crate::store::embedded::EmbeddedStore;

async fn store() -> (tempfile::TempDir, Arc<dyn Store>, ServiceStore) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
        .await
        .unwrap();
    let ss = ServiceStore::new(store.clone(), pool::default_pools());
    (dir, store, ss)
}

fn svc(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80}}]\n{extra}"
    )
}

async fn apply(ss: &ServiceStore, text: &str) -> Result<Applied, ServiceStoreError> {
    ss.apply(&parse_documents(text).unwrap()).await
}

fn ips(a: &Applied, i: usize) -> Vec<IpAddr> {
    a.objects[i].1.as_ref().unwrap().cluster_ips.clone()
}

#[tokio::test]
async fn cluster_ips_and_node_ports_are_allocated_once_and_kept() {
    let (_d, _s, ss) = store().await;
    let text = format!(
        "{}---\n{}",
        svc("web", "  ipFamilyPolicy: PreferDualStack\n"),
        svc("api", "  type: NodePort\n")
    );
    let a = apply(&ss, &text).await.unwrap();
    let web = ips(&a, 0);
    assert_eq!(web.len(), 2, "{web:?}");
    assert!(web[0].is_ipv4() && web[1].is_ipv6());
    let api = a.objects[1].1.clone().unwrap();
    assert_eq!(api.cluster_ips.len(), 1);
    assert_ne!(api.cluster_ips[0], web[0], "one address, one service");
    let node_port = api.ports[0].node_port.expect("allocated");
    // Applied again, as written: the same addresses and port.
    let again = apply(&ss, &text).await.unwrap();
    assert_eq!(ips(&again, 0), web);
    assert_eq!(
        again.objects[1].1.as_ref().unwrap().ports[0].node_port,
        Some(node_port)
    );
    // Stored with them.
    let got = ss.get("services/shop/api").await.unwrap().unwrap();
    let stored: Service = serde_json::from_value(got.normalized).unwrap();
    assert_eq!(stored.cluster_ips, api.cluster_ips);
}

#[tokio::test]
async fn a_given_address_must_be_in_the_pool_free_and_immutable() {
    let (_d, store, ss) = store().await;
    apply(&ss, &svc("web", "  clusterIP: 10.96.0.10\n"))
        .await
        .unwrap();
    let before = store.revision().await.unwrap();
    let cases = [
        (
            svc("api", "  clusterIP: 10.95.0.10\n"),
            "outside the service pool",
        ),
        (
            svc("api", "  clusterIP: 10.96.0.10\n"),
            "already Service shop/web's",
        ),
        (svc("web", "  clusterIP: 10.96.0.11\n"), "cannot change"),
        (
            svc("api", "  clusterIP: 10.96.0.0\n"),
            "network or broadcast",
        ),
    ];
    for (text, why) in cases {
        let e = apply(&ss, &text).await.unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    // One refused document of two: nothing of the apply is written.
    let two = format!(
        "{}---\n{}",
        svc("new", ""),
        svc("api", "  clusterIP: 10.95.0.10\n")
    );
    assert!(apply(&ss, &two).await.is_err());
    assert_eq!(store.revision().await.unwrap(), before, "nothing written");
    assert!(ss.get("services/shop/new").await.unwrap().is_none());
}

#[tokio::test]
async fn a_node_port_is_one_services_and_deleting_frees_everything() {
    let (_d, store, ss) = store().await;
    let a = apply(
        &ss,
        &svc("web", "  type: NodePort\n  clusterIP: 10.96.0.10\n"),
    )
    .await
    .unwrap();
    let np = a.objects[0].1.as_ref().unwrap().ports[0].node_port.unwrap();
    let e = apply(
        &ss,
        &svc(
            "api",
            &format!("  type: NodePort\n  ports: [{{port: 81, nodePort: {np}}}]\n"),
        )
        .replace("  ports: [{name: http, port: 80}]\n", ""),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("already Service shop/web's"), "{e}");
    // UDP on the same number is another port.
    apply(
        &ss,
        &svc(
            "dns",
            &format!("  type: NodePort\n  ports: [{{port: 53, protocol: UDP, nodePort: {np}}}]\n"),
        )
        .replace("  ports: [{name: http, port: 80}]\n", ""),
    )
    .await
    .unwrap();
    let (existed, _) = ss.delete("services/shop/web").await.unwrap();
    assert!(existed);
    assert!(!ss.delete("services/shop/web").await.unwrap().0);
    let claims: Vec<String> = store
        .range(&format!("{PREFIX}service-ips/"))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(claims.len(), 1, "dns keeps its own: {claims:?}");
    // The address and port are free again.
    apply(
        &ss,
        &svc("api", "  type: NodePort\n  clusterIP: 10.96.0.10\n"),
    )
    .await
    .unwrap();
    assert!(matches!(
        ss.delete("policy/k8s/a/b").await,
        Err(ServiceStoreError::BadKey(_))
    ));
}

#[tokio::test]
async fn a_service_dropping_a_family_releases_its_address() {
    let (_d, store, ss) = store().await;
    let a = apply(&ss, &svc("web", "  ipFamilyPolicy: RequireDualStack\n"))
        .await
        .unwrap();
    let v6 = ips(&a, 0)[1];
    apply(&ss, &svc("web", "  ipFamilyPolicy: SingleStack\n"))
        .await
        .unwrap();
    let claim = store.get(&ip_claim(&v6)).await.unwrap();
    assert!(claim.is_none(), "the IPv6 address is released");
}

#[tokio::test]
async fn slices_are_stored_beside_services_and_one_object_twice_is_refused() {
    let (_d, _s, ss) = store().await;
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [198.51.100.7]}]\nports: [{name: http, port: 8080}]\n";
    apply(&ss, &format!("{}---\n{slice}", svc("web", "")))
        .await
        .unwrap();
    let keys: Vec<String> = ss
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["services/shop/web", "endpointslices/shop/web-1"]);
    let e = apply(&ss, &format!("{}---\n{}", svc("a", ""), svc("a", "")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}

#[tokio::test]
async fn two_agents_applying_at_once_never_share_an_address() {
    let (_d, store, _) = store().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let ss = ServiceStore::new(store.clone(), vec!["10.96.0.0/28".parse().unwrap()]);
        tasks.push(tokio::spawn(async move {
            ss.apply(&parse_documents(&svc(&format!("s{i}"), "")).unwrap())
                .await
        }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert!(got.insert(ips(&a, 0)[0]), "{got:?}");
    }
    assert_eq!(got.len(), 8);
}
