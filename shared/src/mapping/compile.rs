//! TOML text → [`Mapping`]: parse (with file positions) then check what serde cannot.

use std::collections::HashMap;

use serde_json::Value;
use toml::Spanned;

use super::code::is_valid_code;
use super::coerce::Shaping;
use super::error::{LoadIssue, Locator, MappingError};
use super::raw::{RawDelete, RawMapping, RawRoute, RawValue};
use super::source::{FieldPath, Template};
use super::{Condition, DeletePolicy, Mapping, Route, Source, Target, ValueRule};

const DEFAULT_CODE: &str = "{{id}}";
const DEFAULT_SEPARATOR: &str = ", ";

pub(super) fn compile(text: &str, origin: &str) -> Result<Mapping, MappingError> {
    let loc = Locator { origin, text };
    let raw = parse(text, &loc)?;
    let mut issues = Vec::new();

    let default_code = match &raw.settings.code {
        Some(t) => template_or_issue(t, "settings.code", &loc, &mut issues),
        None => Template::parse(DEFAULT_CODE).ok(),
    };
    let separator = raw
        .settings
        .separator
        .clone()
        .unwrap_or_else(|| DEFAULT_SEPARATOR.to_string());

    if raw.route.is_empty() {
        issues.push(loc.issue(
            None,
            "route",
            "no [[route]]: every asset would be skipped".into(),
        ));
    }
    let mut routes = Vec::new();
    let mut delete_seen: HashMap<String, (DeletePolicy, String)> = HashMap::new();
    for (i, route) in raw.route.iter().enumerate() {
        let key = format!("route[{i}]");
        if let Some(r) = compile_route(
            route,
            &key,
            default_code.as_ref(),
            &separator,
            &loc,
            &mut issues,
        ) {
            if let (Some(policy), Some(span)) = (&r.on_delete, route.get_ref().on_delete.as_ref()) {
                match delete_seen.get(&r.family) {
                    Some((first, first_key)) if first != policy => issues.push(loc.issue(
                        Some(span.span()),
                        &format!("{key}.on_delete"),
                        format!(
                            "conflicts with {first_key}.on_delete for family \"{}\": one delete policy per family",
                            r.family
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        delete_seen.insert(r.family.clone(), (policy.clone(), key.clone()));
                    }
                }
            }
            routes.push(r);
        }
    }
    if !issues.is_empty() {
        issues.sort_by_key(|i| (i.line, i.column));
        return Err(MappingError::Invalid(issues));
    }
    Ok(Mapping {
        origin: origin.to_string(),
        create_missing_options: raw.settings.create_missing_options,
        routes,
    })
}

fn parse(text: &str, loc: &Locator<'_>) -> Result<RawMapping, MappingError> {
    let fail = |span, key: &str, message: String| {
        MappingError::Invalid(vec![loc.issue(span, key, message)])
    };
    let de = toml::Deserializer::parse(text).map_err(|e| fail(e.span(), "", clean(e.message())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let message = clean(e.inner().message());
        fail(e.inner().span(), &key_path(e.path(), &message), message)
    })
}

/// `route[1].values.alt_text` from serde's path, without `Spanned`'s internal keys, and without
/// the offending key itself for unknown fields (the message names it).
fn key_path(path: &serde_path_to_error::Path, message: &str) -> String {
    use serde_path_to_error::Segment;
    let mut segments: Vec<&Segment> = path
        .iter()
        .filter(|s| !matches!(s, Segment::Map { key } if key.starts_with("$__serde_spanned")))
        .filter(|s| !matches!(s, Segment::Unknown))
        .collect();
    if message.starts_with("unknown field") && matches!(segments.last(), Some(Segment::Map { .. }))
    {
        segments.pop();
    }
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// toml's messages may end with a newline or use backticks; keep one plain line.
fn clean(message: &str) -> String {
    message.trim().replace('`', "\"")
}

fn template_or_issue(
    t: &Spanned<String>,
    key: &str,
    loc: &Locator<'_>,
    issues: &mut Vec<LoadIssue>,
) -> Option<Template> {
    match Template::parse(t.get_ref()) {
        Ok(tpl) if tpl.is_constant() => {
            issues.push(loc.issue(
                Some(t.span()),
                key,
                "asset code template has no {{field}}: every asset would get the same code".into(),
            ));
            None
        }
        Ok(tpl) => Some(tpl),
        Err(e) => {
            issues.push(loc.issue(Some(t.span()), key, e));
            None
        }
    }
}

fn compile_route(
    spanned: &Spanned<RawRoute>,
    key: &str,
    default_code: Option<&Template>,
    separator: &str,
    loc: &Locator<'_>,
    issues: &mut Vec<LoadIssue>,
) -> Option<Route> {
    let raw = spanned.get_ref();
    let before = issues.len();
    let family = raw.family.get_ref().trim().to_string();
    if family.is_empty() {
        issues.push(loc.issue(
            Some(raw.family.span()),
            &format!("{key}.family"),
            "empty family".into(),
        ));
    } else if !is_valid_code(&family) {
        issues.push(loc.issue(
            Some(raw.family.span()),
            &format!("{key}.family"),
            format!("\"{family}\" is not an Akeneo family code ([A-Za-z0-9_], at most 255)"),
        ));
    }
    let mut conditions = |list: &[Spanned<super::raw::RawCondition>], name: &str| {
        list.iter()
            .enumerate()
            .filter_map(|(j, c)| match Condition::compile(c.get_ref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    issues.push(loc.issue(Some(c.span()), &format!("{key}.{name}[{j}]"), e));
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    let when = conditions(&raw.when, "when");
    let require = conditions(&raw.require, "require");
    let code = match &raw.code {
        Some(t) => template_or_issue(t, &format!("{key}.code"), loc, issues),
        None => default_code.cloned(),
    };
    let mut values = Vec::new();
    for (attr, v) in &raw.values {
        let vkey = format!("{key}.values.{attr}");
        match compile_value(attr, v.get_ref(), separator) {
            Ok(rule) => values.push(ValueRule { key: vkey, ..rule }),
            Err(e) => issues.push(loc.issue(Some(v.span()), &vkey, e)),
        }
    }
    let on_delete = raw.on_delete.as_ref().and_then(|d| match d.get_ref() {
        RawDelete::Delete => Some(DeletePolicy::Delete),
        RawDelete::Ignore => Some(DeletePolicy::Ignore),
        RawDelete::Clear(attrs) => {
            let bad: Vec<&String> = attrs.iter().filter(|a| !is_valid_code(a)).collect();
            if attrs.is_empty() || !bad.is_empty() {
                issues.push(loc.issue(
                    Some(d.span()),
                    &format!("{key}.on_delete.clear"),
                    if attrs.is_empty() {
                        "empty list: name the attributes to clear".into()
                    } else {
                        format!("not attribute codes: {bad:?}")
                    },
                ));
                None
            } else {
                Some(DeletePolicy::Clear(attrs.clone()))
            }
        }
    });
    if issues.len() > before {
        return None;
    }
    Some(Route {
        key: key.to_string(),
        family,
        when,
        require,
        code: code?,
        values,
        on_delete,
    })
}

fn compile_value(attr: &str, raw: &RawValue, separator: &str) -> Result<ValueRule, String> {
    if !is_valid_code(attr) {
        return Err(format!(
            "\"{attr}\" is not an Akeneo attribute code ([A-Za-z0-9_])"
        ));
    }
    let given: Vec<&str> = [
        raw.field.as_ref().map(|_| "field"),
        raw.value.as_ref().map(|_| "value"),
        raw.template.as_ref().map(|_| "template"),
        raw.locales.as_ref().map(|_| "locales"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        return Err(if given.is_empty() {
            "no source: give one of `field`, `value`, `template`, `locales`".into()
        } else {
            format!(
                "conflicting value sources {}: give exactly one",
                given.join(", ")
            )
        });
    }
    let mut targets = Vec::new();
    if let Some(locales) = &raw.locales {
        if raw.locale.is_some() {
            return Err("`locale` and `locales` both given: use one".into());
        }
        if locales.is_empty() {
            return Err("`locales` is empty".into());
        }
        for (locale, src) in locales {
            if locale.trim().is_empty() {
                return Err("empty locale code in `locales`".into());
            }
            // A fan-out entry is a template when it has placeholders, else a field path.
            let source = if src.contains("{{") {
                Source::Template(
                    Template::parse(src).map_err(|e| format!("locales.{locale}: {e}"))?,
                )
            } else {
                Source::Field(FieldPath::parse(src).map_err(|e| format!("locales.{locale}: {e}"))?)
            };
            targets.push(Target {
                locale: Some(locale.clone()),
                channel: raw.channel.clone(),
                source,
            });
        }
    } else {
        let source = if let Some(f) = &raw.field {
            Source::Field(FieldPath::parse(f)?)
        } else if let Some(t) = &raw.template {
            Source::Template(Template::parse(t)?)
        } else {
            let v = raw.value.as_ref().map_or(Value::Null, super::raw::plain);
            check_fixed(&v)?;
            if raw.null_if_missing {
                return Err("`null_if_missing` has no effect on a fixed `value`".into());
            }
            Source::Fixed(v)
        };
        targets.push(Target {
            locale: raw.locale.clone(),
            channel: raw.channel.clone(),
            source,
        });
    }
    for (what, v) in [("locale", &raw.locale), ("channel", &raw.channel)] {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(format!("empty `{what}`"));
        }
    }
    if raw.split.as_deref() == Some("") {
        return Err("empty `split` separator".into());
    }
    Ok(ValueRule {
        key: String::new(),
        attribute: attr.to_string(),
        targets,
        shaping: Shaping {
            separator: raw
                .separator
                .clone()
                .unwrap_or_else(|| separator.to_string()),
            split: raw.split.clone(),
            map: raw
                .map
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        },
        null_if_missing: raw.null_if_missing,
    })
}

/// Fixed values are scalars or lists of scalars (TOML has no null; tables mean nothing here).
fn check_fixed(v: &Value) -> Result<(), String> {
    let scalar = |v: &Value| v.is_string() || v.is_number() || v.is_boolean();
    match v {
        Value::Array(items) if items.iter().all(scalar) => Ok(()),
        v if scalar(v) => Ok(()),
        _ => Err("a fixed `value` must be a string, number, boolean or a list of those".into()),
    }
}
