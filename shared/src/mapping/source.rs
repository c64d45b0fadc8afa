//! Compiled field paths and string templates: parsed once at load, walked per asset without
//! allocating (except the rendered string itself).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// A dot path into the DAM JSON, e.g. `context.custom.alt` or `tags.0`.
#[derive(Debug, Clone)]
pub(super) struct FieldPath {
    raw: Box<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(Box<str>),
    /// An all-digit segment: an index into an array, or a key of an object (`{"0": ..}`).
    Index(usize, Box<str>),
}

impl FieldPath {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("empty field path".into());
        }
        let segments = raw
            .split('.')
            .map(|seg| {
                if seg.is_empty() {
                    return Err(format!("field path \"{raw}\" has an empty segment"));
                }
                Ok(match seg.parse::<usize>() {
                    Ok(i) if seg.bytes().all(|b| b.is_ascii_digit()) => {
                        Segment::Index(i, seg.into())
                    }
                    _ => Segment::Key(seg.into()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FieldPath {
            raw: raw.into(),
            segments: segments.into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `id` falls back to the DAM id given by the caller when the JSON has no `id` field
    /// (Cloudinary names it `asset_id`), so the default code template works for every DAM.
    pub fn is_id(&self) -> bool {
        &*self.raw == "id"
    }

    /// The value at this path; `None` when absent or JSON `null` (both mean "no value").
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut cur = root;
        for seg in self.segments.iter() {
            cur = match (seg, cur) {
                (Segment::Key(k), Value::Object(m)) => m.get(&**k)?,
                (Segment::Index(i, _), Value::Array(a)) => a.get(*i)?,
                (Segment::Index(_, k), Value::Object(m)) => m.get(&**k)?,
                _ => return None,
            };
        }
        (!cur.is_null()).then_some(cur)
    }
}

/// A scalar as text: strings borrowed, numbers and booleans formatted; `None` for lists/objects.
pub(super) fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// `"{{public_id}}.{{format}}"`: literal text with `{{ path }}` placeholders.
#[derive(Debug, Clone)]
pub(super) struct Template {
    parts: Box<[Part]>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(Box<str>),
    Field(FieldPath),
}

/// Why a template could not be rendered for one asset.
pub(super) enum RenderError {
    /// A referenced field is absent: the template yields no value at all.
    Missing,
    /// A referenced field holds a list or an object.
    NotScalar(String),
}

impl Template {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].into()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("template \"{raw}\": \"{{{{\" is never closed"))?;
            let path = FieldPath::parse(&after[..close])
                .map_err(|e| format!("template \"{raw}\": {e}"))?;
            parts.push(Part::Field(path));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("template \"{raw}\": \"}}}}\" without \"{{{{\""));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.into()));
        }
        if parts.is_empty() {
            return Err("empty template".into());
        }
        Ok(Template {
            parts: parts.into(),
        })
    }

    /// Whether the template has no placeholder (a constant).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub fn render(&self, root: &Value, dam_id: &str) -> Result<String, RenderError> {
        let mut out = String::with_capacity(64);
        for part in self.parts.iter() {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(path) => match path.lookup(root) {
                    None if path.is_id() => out.push_str(dam_id),
                    None => return Err(RenderError::Missing),
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                    Some(_) => return Err(RenderError::NotScalar(path.as_str().to_string())),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let doc = json!({"context": {"custom": {"alt": "A"}}, "tags": ["x", "y"], "m": {"0": "zero"}, "n": null});
        let p = |s: &str| FieldPath::parse(s).unwrap();
        assert_eq!(p("context.custom.alt").lookup(&doc), Some(&json!("A")));
        assert_eq!(p("tags.1").lookup(&doc), Some(&json!("y")));
        assert_eq!(p("tags.2").lookup(&doc), None);
        assert_eq!(p("m.0").lookup(&doc), Some(&json!("zero")));
        assert_eq!(p("n").lookup(&doc), None, "null counts as missing");
        assert_eq!(p("tags.x").lookup(&doc), None);
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse(" ").is_err());
    }

    #[test]
    fn templates_render_scalars_and_fail_on_missing_fields() {
        let doc = json!({"public_id": "shoes/red", "format": "jpg", "version": 3, "tags": ["a"]});
        let t = Template::parse("{{public_id}}.{{ format }}?v={{version}}").unwrap();
        assert_eq!(t.render(&doc, "d1").ok().unwrap(), "shoes/red.jpg?v=3");
        let missing = Template::parse("{{public_id}}-{{nope}}").unwrap();
        assert!(matches!(
            missing.render(&doc, "d1"),
            Err(RenderError::Missing)
        ));
        let list = Template::parse("{{tags}}").unwrap();
        assert!(matches!(list.render(&doc, "d1"), Err(RenderError::NotScalar(p)) if p == "tags"));
        let id = Template::parse("{{id}}").unwrap();
        assert_eq!(
            id.render(&doc, "d1").ok().unwrap(),
            "d1",
            "id falls back to the DAM id"
        );
        assert_eq!(id.render(&json!({"id": 7}), "d1").ok().unwrap(), "7");
        assert!(Template::parse("{{public_id").is_err());
        assert!(Template::parse("a}}").is_err());
        assert!(Template::parse("static").unwrap().is_constant());
    }
}
