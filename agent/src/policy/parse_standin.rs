//! Stand-in for `strait_policy::parse_documents` until the parser's branch is merged:
//! reads JSON `Namespace` documents only and refuses everything else. Deleted at the
//! merge.

use strait_policy::ir::Policy;
use strait_policy::selector::Labels;

#[derive(Debug, Clone)]
pub struct NamespaceDoc {
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone)]
pub enum Document {
    /// Never made by the stand-in (it reads no policy documents).
    #[allow(dead_code)]
    Policy(Policy),
    Namespace(NamespaceDoc),
}

#[derive(Debug, Clone)]
pub struct Parsed {
    pub source: serde_json::Value,
    pub document: Document,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

pub fn parse_documents(text: &str) -> Result<Vec<Parsed>, ParseError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))?;
    let docs = match v {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    docs.into_iter()
        .enumerate()
        .map(|(i, d)| {
            if d["kind"] != "Namespace" {
                return Err(ParseError(format!("document {i}: kind: not supported")));
            }
            let name = d["metadata"]["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| ParseError(format!("document {i}: metadata.name: missing")))?
                .to_string();
            let labels: Labels =
                serde_json::from_value(d["metadata"]["labels"].clone()).unwrap_or_default();
            Ok(Parsed {
                source: d,
                document: Document::Namespace(NamespaceDoc { name, labels }),
            })
        })
        .collect()
}
