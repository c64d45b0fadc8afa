//! Conditions used by `when` (routing) and `require` (product filter).

use regex::Regex;
use serde_json::Value;

use super::raw::{RawCondition, plain};
use super::source::{FieldPath, scalar_text};

#[derive(Debug, Clone)]
pub(super) struct Condition {
    path: FieldPath,
    op: Op,
    negate: bool,
    /// Human form for skip reasons, built once at load.
    description: String,
}

#[derive(Debug, Clone)]
enum Op {
    Equals(Value),
    In(Vec<Value>),
    Exists(bool),
    /// Substring of a string field, or element of a list field.
    Contains(Value),
    Regex(Regex),
}

impl Condition {
    pub fn compile(raw: &RawCondition) -> Result<Self, String> {
        let path = FieldPath::parse(&raw.field)?;
        let mut ops = Vec::new();
        if let Some(v) = raw.equals.as_ref().map(plain) {
            let text = format!("equals {v}");
            ops.push((Op::Equals(v), text));
        }
        if let Some(vs) = &raw.one_of {
            let vs: Vec<Value> = vs.iter().map(plain).collect();
            let shown = serde_json::to_string(&vs).unwrap_or_default();
            ops.push((Op::In(vs), format!("in {shown}")));
        }
        if let Some(e) = raw.exists {
            let text = if e { "exists" } else { "does not exist" };
            ops.push((Op::Exists(e), text.to_string()));
        }
        if let Some(v) = raw.contains.as_ref().map(plain) {
            if v.is_object() || v.is_array() {
                return Err("`contains` takes a string, number or boolean".into());
            }
            let text = format!("contains {v}");
            ops.push((Op::Contains(v), text));
        }
        if let Some(re) = &raw.regex {
            let compiled = Regex::new(re)
                .map_err(|e| format!("invalid regex \"{re}\": {}", regex_reason(&e)))?;
            ops.push((Op::Regex(compiled), format!("matches /{re}/")));
        }
        if ops.len() != 1 {
            return Err(format!(
                "a condition needs exactly one of `equals`, `in`, `exists`, `contains`, `regex` (found {})",
                ops.len()
            ));
        }
        let (op, text) = ops.pop().expect("checked above");
        let description = format!(
            "`{}` {}{}",
            path.as_str(),
            if raw.not { "NOT " } else { "" },
            text
        );
        Ok(Condition {
            path,
            op,
            negate: raw.not,
            description,
        })
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn holds(&self, root: &Value) -> bool {
        let v = self.path.lookup(root);
        let result = match &self.op {
            Op::Exists(want) => v.is_some() == *want,
            Op::Equals(x) => v.is_some_and(|v| loose_eq(v, x)),
            Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| loose_eq(v, x))),
            Op::Contains(needle) => match v {
                Some(Value::Array(items)) => items.iter().any(|e| loose_eq(e, needle)),
                Some(Value::String(s)) => scalar_text(needle).is_some_and(|n| s.contains(&*n)),
                _ => false,
            },
            Op::Regex(re) => match v {
                Some(Value::Array(items)) => items
                    .iter()
                    .any(|e| scalar_text(e).is_some_and(|s| re.is_match(&s))),
                Some(v) => scalar_text(v).is_some_and(|s| re.is_match(&s)),
                None => false,
            },
        };
        result != self.negate
    }
}

/// The regex crate's syntax errors are multi-line drawings; keep the last line (the reason) so
/// that a load issue stays one line.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    last.trim().trim_start_matches("error: ").to_string()
}

/// Equality as a mapping author means it: same JSON, same number, or the same text for a
/// string/number mix (`equals = "5"` matches `5`, since DAM metadata types are often loose).
fn loose_eq(field: &Value, wanted: &Value) -> bool {
    match (field, wanted) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            scalar_text(field) == scalar_text(wanted)
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(toml_text: &str) -> Condition {
        let raw: RawCondition = toml::from_str(toml_text).unwrap();
        Condition::compile(&raw).unwrap()
    }

    #[test]
    fn equals_matches_strings_numbers_and_loose_mixes() {
        let doc = json!({"type": "image", "bytes": 5, "flag": true});
        assert!(
            cond(
                r#"field = "type"
equals = "image""#
            )
            .holds(&doc)
        );
        assert!(
            !cond(
                r#"field = "type"
equals = "video""#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "bytes"
equals = 5"#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "bytes"
equals = "5""#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "flag"
equals = true"#
            )
            .holds(&doc)
        );
        assert!(
            !cond(
                r#"field = "missing"
equals = "image""#
            )
            .holds(&doc)
        );
    }

    #[test]
    fn in_exists_contains_regex_and_not() {
        let doc = json!({"type": "raw", "tags": ["packshot", "red"], "name": "shoe_front.jpg", "sku": null});
        assert!(
            cond(
                r#"field = "type"
in = ["image", "raw"]"#
            )
            .holds(&doc)
        );
        assert!(
            !cond(
                r#"field = "type"
in = ["image", "video"]"#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "tags"
exists = true"#
            )
            .holds(&doc)
        );
        assert!(
            !cond(
                r#"field = "sku"
exists = true"#
            )
            .holds(&doc),
            "null is absent"
        );
        assert!(
            cond(
                r#"field = "sku"
exists = false"#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "tags"
contains = "red""#
            )
            .holds(&doc)
        );
        assert!(
            !cond(
                r#"field = "tags"
contains = "re""#
            )
            .holds(&doc),
            "list contains is by element"
        );
        assert!(
            cond(
                r#"field = "name"
contains = "front""#
            )
            .holds(&doc),
            "string contains is by substring"
        );
        assert!(
            cond(
                r#"field = "name"
regex = '^shoe_\w+\.jpg$'"#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "tags"
regex = "^pack""#
            )
            .holds(&doc),
            "regex on a list matches any element"
        );
        assert!(
            !cond(
                r#"field = "name"
regex = "^boot""#
            )
            .holds(&doc)
        );
        assert!(
            cond(
                r#"field = "name"
regex = "^boot"
not = true"#
            )
            .holds(&doc)
        );
    }

    #[test]
    fn a_condition_needs_exactly_one_operator_and_a_valid_regex() {
        let raw: RawCondition = toml::from_str("field = \"a\"").unwrap();
        assert!(
            Condition::compile(&raw)
                .unwrap_err()
                .contains("exactly one")
        );
        let raw: RawCondition = toml::from_str("field = \"a\"\nequals = 1\nexists = true").unwrap();
        assert!(Condition::compile(&raw).unwrap_err().contains("found 2"));
        let raw: RawCondition = toml::from_str("field = \"a\"\nregex = \"(\"").unwrap();
        assert!(
            Condition::compile(&raw)
                .unwrap_err()
                .contains("invalid regex")
        );
    }
}
