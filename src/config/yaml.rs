//! Reads YAML into `serde_yaml_ng::Value` while keeping what a plain
//! `Value` parse would refuse outright: duplicate mapping keys become
//! problems in the list, not one fatal error, and `${NAME}` is replaced in
//! every string scalar (never in the raw text, so a variable's value can
//! never change the document's structure).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::{Mapping, Number, Value};

use super::ConfigProblem;

/// A YAML node with mappings kept as ordered entry lists.
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

/// Parses `text`, substituting `${NAME}` through `lookup`. Structural YAML
/// errors are fatal (nothing else can be checked); duplicate keys and
/// missing variables are collected into `problems`.
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Result<Value, ConfigProblem> {
    let node: Node = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        ConfigProblem::new("", format!("not valid YAML{at}: {msg}"), "a YAML mapping")
    })?;
    Ok(convert(node, "", lookup, problems))
}

fn convert(
    node: Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Value {
    match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Number(n) => Value::Number(n),
        Node::String(s) => Value::String(substitute(&s, path, lookup, problems)),
        Node::Seq(items) => Value::Sequence(
            items
                .into_iter()
                .enumerate()
                .map(|(i, n)| convert(n, &format!("{path}[{i}]"), lookup, problems))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = Mapping::new();
            for (key, value) in entries {
                let key = convert(key, path, &|_| None, &mut Vec::new());
                let name = match &key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                let child = super::join(path, &name);
                if map.contains_key(&key) {
                    problems.push(ConfigProblem::new(
                        &child,
                        "defined more than once",
                        "each key once per mapping",
                    ));
                    continue;
                }
                let value = convert(value, &child, lookup, problems);
                map.insert(key, value);
            }
            Value::Mapping(map)
        }
    }
}

/// Replaces every `${NAME}` in `s`; `$${` is a literal `${`.
fn substitute(
    s: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> String {
    if !s.contains("${") {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push(ConfigProblem::new(
                path,
                "unterminated ${ in value",
                "${NAME} with a closing brace",
            ));
            return out;
        };
        let name = &after[..end];
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            problems.push(ConfigProblem::new(
                path,
                format!("invalid environment variable name {name:?}"),
                "letters, digits and _",
            ));
        } else if let Some(value) = lookup(name) {
            out.push_str(&value);
        } else {
            problems.push(ConfigProblem::new(
                path,
                format!("environment variable {name} is not set"),
                format!("export {name} before starting authgate"),
            ));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "idp: {evil}".to_owned())
    }

    #[test]
    fn variables_are_replaced_inside_strings_without_changing_structure() {
        let mut problems = Vec::new();
        let v = parse(
            "a: \"https://${HOST}/x\"\nb: $${HOST}\n",
            &env,
            &mut problems,
        )
        .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v["a"].as_str(), Some("https://idp: {evil}/x"));
        assert_eq!(v["b"].as_str(), Some("${HOST}"));
    }

    #[test]
    fn duplicate_keys_and_missing_variables_are_all_reported() {
        let mut problems = Vec::new();
        parse(
            "issuers:\n  corp: {a: 1}\n  corp: {a: 2}\nx: ${NOPE}\n",
            &env,
            &mut problems,
        )
        .unwrap();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "issuers.corp: defined more than once (each key once per mapping)",
                "x: environment variable NOPE is not set (export NOPE before starting authgate)"
            ]
        );
    }
}
