//! `netctl kubernetes`: what the agent's Kubernetes integration watches on this
//! node (each kind: listed, objects, lists, errors), whether this agent is the one
//! writing the cluster's objects, and the API server's objects strait refused.

use anyhow::Result;
use strait_api::kube::KubeStatusView;
use strait_api::{Client, paths};

use crate::table::Table;
use crate::{Output, emit};

pub fn run(client: &Client, out: Output) -> Result<()> {
    let view: KubeStatusView = client.get(paths::KUBERNETES)?;
    emit(out, &view, || render(&view))
}

pub fn render(view: &KubeStatusView) -> String {
    if !view.enabled {
        return "this agent follows no Kubernetes API server (start it with --kubeconfig \
                or --kubernetes-in-cluster)\n"
            .to_string();
    }
    let mut s = format!(
        "writes the cluster's objects: {}\n\n",
        if view.leader {
            "yes (leader/kubernetes)"
        } else {
            "no (another agent does)"
        }
    );
    let mut t = Table::new(["KIND", "LISTED", "OBJECTS", "LISTS", "ERRORS", "LAST ERROR"]);
    for k in &view.kinds {
        t.row([
            k.kind.as_str(),
            if k.synced { "yes" } else { "no" },
            &k.objects.to_string(),
            &k.lists.to_string(),
            &k.errors.to_string(),
            k.last_error.as_deref().unwrap_or("-"),
        ]);
    }
    s.push_str(&t.render());
    if view.refused.is_empty() {
        s.push_str("\nno object refused\n");
    } else {
        s.push_str("\nrefused (not applied; the last good version, if any, stays):\n");
        let mut t = Table::new(["KIND", "OBJECT", "REASON"]);
        for r in &view.refused {
            t.row([r.kind.as_str(), r.object.as_str(), r.reason.as_str()]);
        }
        s.push_str(&t.render());
    }
    s
}

#[cfg(test)]
mod tests {
    use strait_api::kube::{KindView, Refusal};

    use super::*;

    #[test]
    fn kinds_and_refusals_each_get_a_row() {
        let view = KubeStatusView {
            enabled: true,
            leader: true,
            kinds: vec![KindView {
                kind: "NetworkPolicy".into(),
                synced: true,
                objects: 3,
                lists: 2,
                errors: 1,
                last_error: Some("connection refused".into()),
            }],
            refused: vec![Refusal {
                kind: "NetworkPolicy".into(),
                object: "prod/web".into(),
                reason: "spec.policyTypes[0]: unsupported value".into(),
            }],
        };
        let out = render(&view);
        assert!(out.contains("yes (leader/kubernetes)"), "{out}");
        assert!(
            out.contains("NetworkPolicy  yes     3        2      1       connection refused"),
            "{out}"
        );
        assert!(
            out.contains("NetworkPolicy  prod/web  spec.policyTypes[0]"),
            "{out}"
        );
        assert!(render(&KubeStatusView::default()).contains("--kubeconfig"));
    }
}
