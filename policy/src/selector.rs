//! Kubernetes label selectors (`metav1.LabelSelector`): `matchLabels` and
//! `matchExpressions`, all of which must hold. An empty selector selects everything;
//! a selector that is absent where Kubernetes allows absence is the caller's
//! business (it means different things in different fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of an endpoint or a namespace.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Non-empty for `In` and `NotIn`, empty for `Exists` and `DoesNotExist`
    /// (validation's job, not this type's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // As in Kubernetes: a missing key satisfies NotIn.
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl std::fmt::Display for LabelSelector {
    /// The `kubectl` form: `app=web,tier in (a,b),!legacy`; `{}` selects everything.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_everything() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::everything().matches(&labels(&[])));
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let s = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![req("tier", Operator::In, &["a", "b"])],
        };
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }

    #[test]
    fn operators_follow_kubernetes() {
        let l = labels(&[("k", "v")]);
        let none = labels(&[]);
        assert!(req("k", Operator::In, &["v"]).matches(&l));
        assert!(!req("k", Operator::In, &["v"]).matches(&none));
        assert!(!req("k", Operator::NotIn, &["v"]).matches(&l));
        assert!(req("k", Operator::NotIn, &["v"]).matches(&none));
        assert!(req("k", Operator::Exists, &[]).matches(&l));
        assert!(!req("k", Operator::Exists, &[]).matches(&none));
        assert!(req("k", Operator::DoesNotExist, &[]).matches(&none));
        assert!(!req("k", Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn displays_as_kubectl_does() {
        let s = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                req("tier", Operator::NotIn, &["a", "b"]),
                req("legacy", Operator::DoesNotExist, &[]),
            ],
        };
        assert_eq!(s.to_string(), "app=web,tier notin (a,b),!legacy");
        assert_eq!(LabelSelector::everything().to_string(), "{}");
    }
}
