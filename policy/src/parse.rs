//! The policy documents users send (`netctl policy apply -f FILE`): text in, the
//! normalized policies ([`crate::ir`]) and namespace labels out, or one error that
//! names the document and the field.
//!
//! The text is YAML or JSON: YAML documents separated by `---` (empty ones skipped),
//! JSON objects one after another, a JSON (or YAML) list of objects, or a `kind: List`
//! with `items`, as `kubectl apply` takes them. Every object is checked the way the
//! Kubernetes API server checks it with strict field validation (unknown and
//! duplicate fields refused); if any document is invalid, the whole call fails, so the
//! caller applies nothing of it.
//!
//! Numbering: documents are counted from 1 in the order they appear, each object of a
//! top-level list counting as one; the items of a `kind: List` are fields of their
//! document (`items[2].spec…`).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::documents::walk::{Invalid, Node};
use crate::documents::{cluster_policy, namespace, network_policy};
use crate::ir;
use crate::selector;

/// One object of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The object as given, as JSON: what `netctl policy get` shows back.
    pub source: Value,
    pub document: Document,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A Kubernetes NetworkPolicy or a strait ClusterPolicy, normalized.
    Policy(ir::Policy),
    /// A `v1` Namespace: the labels `namespaceSelector`s see.
    Namespace(NamespaceDoc),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDoc {
    pub name: String,
    pub labels: selector::Labels,
}

/// Why the input was refused: the first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct ParseError {
    /// 1-based, in the order the documents appear.
    pub document: usize,
    /// The offending field as found in the file, `spec.ingress[0].ports[1].endPort`;
    /// empty when the document as a whole is wrong (not YAML, not an object).
    pub field: String,
    pub message: String,
    /// `NetworkPolicy default/web`, `ClusterPolicy deny-egress`, `Namespace prod`:
    /// which object, once its kind and name are known.
    pub object: Option<String>,
}

fn render(e: &ParseError) -> String {
    let mut s = format!("document {}", e.document);
    if let Some(object) = &e.object {
        s.push_str(&format!(" ({object})"));
    }
    if !e.field.is_empty() {
        s.push_str(&format!(": {}", e.field));
    }
    s.push_str(&format!(": {}", e.message));
    s
}

/// Every object in `text`, or the first error.
pub fn parse_documents(text: &str) -> Result<Vec<Parsed>, ParseError> {
    each_object(text, Kind::List, kind_of, one)
}

/// Every object of `text` through `one`, with the kind `kind_of` finds in it and its
/// document's number (the items of a `kind: List`, which `kind_of` calls `list`,
/// each with their List's number); the first error. What every reader of Kubernetes
/// documents shares: policy's, and services'.
pub fn each_object<K: Copy + PartialEq, T>(
    text: &str,
    list: K,
    kind_of: impl Fn(&Node<'_>) -> Result<K, Invalid>,
    mut one: impl FnMut(&Node<'_>, K, usize) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    let mut parsed = Vec::new();
    for (number, value) in objects(text)? {
        let fail = |object: Option<String>, e: Invalid| ParseError {
            document: number,
            field: e.field,
            message: e.message,
            object,
        };
        let root = Node::root(&value);
        let kind = kind_of(&root).map_err(|e| fail(None, e))?;
        if kind == list {
            let obj = root.obj().map_err(|e| fail(None, e))?;
            obj.only(&["apiVersion", "kind", "metadata", "items"])
                .map_err(|e| fail(None, e))?;
            let Some(items) = obj.get("items") else {
                continue;
            };
            for item in items.list().map_err(|e| fail(None, e))? {
                let item_kind = kind_of(&item).map_err(|e| fail(None, e))?;
                parsed.push(one(&item, item_kind, number)?);
            }
        } else {
            parsed.push(one(&root, kind, number)?);
        }
    }
    Ok(parsed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NetworkPolicy,
    ClusterPolicy,
    Namespace,
    List,
}

/// What `kind` and `apiVersion` this object claims, checked against what strait reads.
fn kind_of(node: &Node<'_>) -> Result<Kind, Invalid> {
    let obj = node.obj()?;
    let kind = obj.required("kind")?.str()?;
    let api_version = obj.required("apiVersion")?;
    let (found, want) = match kind {
        network_policy::KIND => (Kind::NetworkPolicy, network_policy::API_VERSION),
        cluster_policy::KIND => (Kind::ClusterPolicy, cluster_policy::API_VERSION),
        namespace::KIND => (Kind::Namespace, "v1"),
        "List" => (Kind::List, "v1"),
        other => {
            return Err(Invalid::new(
                &obj.child_path("kind"),
                format!(
                    "unsupported kind {other:?}: strait reads NetworkPolicy \
                     (networking.k8s.io/v1), ClusterPolicy (strait.io/v1), Namespace (v1) \
                     and List (v1)"
                ),
            ));
        }
    };
    let given = api_version.str()?;
    if given != want {
        return Err(Invalid::new(
            &api_version.path,
            format!("{kind} is in apiVersion {want:?}, not {given:?}"),
        ));
    }
    Ok(found)
}

/// One object of a known kind; a List's item.
fn one(node: &Node<'_>, kind: Kind, number: usize) -> Result<Parsed, ParseError> {
    let document = match kind {
        Kind::NetworkPolicy => network_policy::parse(node),
        Kind::ClusterPolicy => cluster_policy::parse(node),
        Kind::Namespace => namespace::parse(node),
        Kind::List => Err((
            None,
            Invalid::new(&node.path, "a List may not hold another List"),
        )),
    };
    let document = document.map_err(|(object, e)| ParseError {
        document: number,
        field: e.field,
        message: e.message,
        object,
    })?;
    Ok(Parsed {
        source: node.value.clone(),
        document,
    })
}

/// The top-level objects with their document numbers; empty documents skipped.
pub fn objects(text: &str) -> Result<Vec<(usize, Value)>, ParseError> {
    let duplicate = RefCell::new(None);
    let (found, error) = decode(text, &duplicate);
    let mut objects = Vec::new();
    let mut next = 1;
    for value in found {
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    if !item.is_object() {
                        return Err(not_an_object(next));
                    }
                    objects.push((next, item));
                    next += 1;
                }
            }
            Value::Object(_) => {
                objects.push((next, value));
                next += 1;
            }
            _ => return Err(not_an_object(next)),
        }
    }
    match error {
        Some(e) => Err(syntax_error(next, &duplicate, e)),
        None => Ok(objects),
    }
}

/// The values of the text, up to the first decoding error if there is one.
fn decode(text: &str, duplicate: &RefCell<Option<String>>) -> (Vec<Value>, Option<String>) {
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return yaml_stream(text, duplicate);
    }
    let (found, error) = json_stream(trimmed, duplicate);
    match error {
        // A duplicate field is one in any syntax.
        Some(_) if duplicate.borrow().is_some() => (found, error),
        // Flow-style YAML, or JSON objects between `---` lines, read as YAML; when that
        // fails too, the JSON error is the one meant.
        Some(_) => match yaml_stream(text, duplicate) {
            (all, None) => (all, None),
            _ => {
                duplicate.take();
                (found, error)
            }
        },
        None => (found, None),
    }
}

/// A JSON stream: objects one after another, as `kubectl apply` reads JSON.
fn json_stream(text: &str, duplicate: &RefCell<Option<String>>) -> (Vec<Value>, Option<String>) {
    let mut stream = serde_json::Deserializer::from_str(text);
    let mut found = Vec::new();
    while stream.end().is_err() {
        let seed = Strict {
            path: String::new(),
            duplicate,
        };
        match seed.deserialize(&mut stream) {
            Ok(value) => found.push(value),
            Err(e) => return (found, Some(e.to_string())),
        }
    }
    (found, None)
}

/// A YAML stream: documents separated by `---`.
fn yaml_stream(text: &str, duplicate: &RefCell<Option<String>>) -> (Vec<Value>, Option<String>) {
    let mut found = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let seed = Strict {
            path: String::new(),
            duplicate,
        };
        match seed.deserialize(document) {
            Ok(value) => found.push(value),
            // The stream stops at its first error (and would repeat it for ever).
            Err(e) => return (found, Some(e.to_string())),
        }
    }
    (found, None)
}

fn not_an_object(document: usize) -> ParseError {
    ParseError {
        document,
        field: String::new(),
        message: "must be an object with apiVersion and kind (a YAML mapping or a JSON object)"
            .into(),
        object: None,
    }
}

/// A decoding error: a duplicate field (found by [`Strict`]) or the decoder's own.
fn syntax_error(
    document: usize,
    duplicate: &RefCell<Option<String>>,
    message: String,
) -> ParseError {
    if let Some(path) = duplicate.borrow_mut().take() {
        // In a top-level list, `[3].spec.x` is field `spec.x` of the fourth object.
        if let Some(rest) = path.strip_prefix('[')
            && let Some((index, field)) = rest.split_once(']')
            && let Ok(index) = index.parse::<usize>()
        {
            return ParseError {
                document: document + index,
                field: field.trim_start_matches('.').to_string(),
                message: "duplicate field".into(),
                object: None,
            };
        }
        return ParseError {
            document,
            field: path,
            message: "duplicate field".into(),
            object: None,
        };
    }
    ParseError {
        document,
        field: String::new(),
        message: format!("not valid YAML or JSON: {message}"),
        object: None,
    }
}

/// Decodes any YAML or JSON value into a [`Value`], refusing what the API server's
/// strict decoding refuses and `serde_json::Value` would silently accept: a field
/// given twice (the last would win). Its path goes to `duplicate`, since a decoder
/// error carries only text.
struct Strict<'p> {
    path: String,
    duplicate: &'p RefCell<Option<String>>,
}

impl Strict<'_> {
    fn child(&self, path: String) -> Self {
        Strict {
            path,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{}: {v} is not a finite number", self.path)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let child = self.child(format!("{}[{}]", self.path, items.len()));
            match seq.next_element_seed(child)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if members.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate field"));
            }
            let value = map.next_value_seed(self.child(path))?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// A mapping key. YAML allows any scalar; like the YAML-to-JSON conversion kubectl
/// does, numbers and booleans become their text (`80: x` is the key `"80"`).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean as a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests;
