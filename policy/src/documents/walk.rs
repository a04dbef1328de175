//! Reading a decoded document field by field, each value with its path as the user
//! finds it in the file (`spec.ingress[0].ports[1].endPort`), so every refusal names
//! its field. Strict as the API server's strict field validation: an object's members
//! other than the known ones are refused. A member set to `null` counts as absent, as
//! in Kubernetes' JSON decoding.

use serde_json::{Map, Value};

/// A refused field: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Invalid>;

/// A value and its path.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub path: String,
    pub value: &'a Value,
}

impl<'a> Node<'a> {
    pub fn root(value: &'a Value) -> Self {
        Node {
            path: String::new(),
            value,
        }
    }

    pub fn obj(&self) -> Result<Obj<'a>> {
        match self.value {
            Value::Object(map) => Ok(Obj {
                path: self.path.to_string(),
                map,
            }),
            other => Err(self.wrong_type("an object", other)),
        }
    }

    /// The items, each with its path `field[i]`.
    pub fn list(&self) -> Result<Vec<Node<'a>>> {
        match self.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, value)| Node {
                    path: format!("{}[{i}]", self.path),
                    value,
                })
                .collect()),
            other => Err(self.wrong_type("a list", other)),
        }
    }

    pub fn str(&self) -> Result<&'a str> {
        match self.value {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type("a string", other)),
        }
    }

    pub fn bool(&self) -> Result<bool> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            other => Err(self.wrong_type("true or false", other)),
        }
    }

    /// A whole number (`80`, not `80.5` or `"80"`).
    pub fn integer(&self) -> Result<i64> {
        match self.value {
            Value::Number(n) => n
                .as_i64()
                // Past i64: out of any range the callers check.
                .or_else(|| n.as_u64().map(|_| i64::MAX))
                .ok_or_else(|| self.invalid(format!("must be a whole number, not {n}"))),
            other => Err(self.wrong_type("a number", other)),
        }
    }

    pub fn number(&self) -> Result<f64> {
        match self.value {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| self.invalid(format!("{n} is not a number"))),
            other => Err(self.wrong_type("a number", other)),
        }
    }

    /// A map of strings to strings (labels, annotations, `matchLabels`).
    pub fn string_map(&self) -> Result<Vec<(&'a str, &'a str)>> {
        let obj = self.obj()?;
        obj.map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.as_str(), s.as_str())),
                other => Err(Invalid::new(
                    &obj.child_path(k),
                    format!("{}{}", type_message("a string", other), quote_hint(other)),
                )),
            })
            .collect()
    }

    pub fn invalid(&self, message: impl Into<String>) -> Invalid {
        Invalid::new(&self.path, message)
    }

    fn wrong_type(&self, want: &str, got: &Value) -> Invalid {
        self.invalid(type_message(want, got))
    }
}

fn type_message(want: &str, got: &Value) -> String {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("must be {want}, not {got}")
}

/// YAML reads `version: 1.0` or `enabled: true` as a number or a boolean; a label
/// value wants quotes.
fn quote_hint(got: &Value) -> String {
    match got {
        Value::Bool(_) | Value::Number(_) => format!(" (quote it: \"{got}\")"),
        _ => String::new(),
    }
}

/// An object's members, by name.
#[derive(Debug, Clone)]
pub struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Refuses members not in `known`, naming the first and the known ones.
    pub fn only(&self, known: &[&str]) -> Result<()> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) => Err(Invalid::new(
                &self.child_path(unknown),
                format!("unknown field (known fields here: {})", known.join(", ")),
            )),
        }
    }

    /// The member, unless absent or `null`.
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Node {
                path: self.child_path(key),
                value,
            }),
        }
    }

    pub fn required(&self, key: &str) -> Result<Node<'a>> {
        self.get(key)
            .ok_or_else(|| Invalid::new(&self.child_path(key), "required value"))
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}
