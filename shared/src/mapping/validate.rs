//! Checks a mapping against the PIM's structure before any asset is mapped, so that a wrong
//! attribute or locale shows up once, at start-up, instead of failing every asset.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use crate::akeneo::{AssetAttribute, AttributeType, FamilyStructure};

use super::coerce::{self, Input, Options};
use super::{DeletePolicy, Mapping, Source, ValueRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something will be created or is worth knowing; mapping works.
    Info,
    /// Probably a mistake but harmless.
    Warning,
    /// Assets of this family would fail or be written wrongly: fix before syncing.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    pub severity: Severity,
    pub family: String,
    pub attribute: Option<String>,
    /// Where in the mapping, e.g. `route[0].values.alt_text`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.severity, self.key, self.message)
    }
}

/// Where family structures come from: a map (`&HashMap`, `&BTreeMap`) or a closure.
pub trait Structures<'s> {
    fn family(&self, code: &str) -> Option<&'s FamilyStructure>;
}

impl<'s, S: BuildHasher> Structures<'s> for &'s HashMap<String, FamilyStructure, S> {
    fn family(&self, code: &str) -> Option<&'s FamilyStructure> {
        self.get(code)
    }
}

impl<'s> Structures<'s> for &'s BTreeMap<String, FamilyStructure> {
    fn family(&self, code: &str) -> Option<&'s FamilyStructure> {
        self.get(code)
    }
}

impl<'s, F: Fn(&str) -> Option<&'s FamilyStructure>> Structures<'s> for F {
    fn family(&self, code: &str) -> Option<&'s FamilyStructure> {
        self(code)
    }
}

impl Mapping {
    /// Every problem of this mapping against the PIM structure, errors first.
    pub fn validate_against<'s>(&self, structures: impl Structures<'s>) -> Vec<ValidationIssue> {
        let mut out = Vec::new();
        for route in &self.routes {
            let family = route.family.as_str();
            let issue =
                |severity, attribute: Option<&str>, key: &str, message: String| ValidationIssue {
                    severity,
                    family: family.to_string(),
                    attribute: attribute.map(str::to_string),
                    key: key.to_string(),
                    message,
                };
            let Some(structure) = structures.family(family) else {
                out.push(issue(
                    Severity::Error,
                    None,
                    &format!("{}.family", route.key),
                    format!("asset family `{family}` does not exist in the PIM"),
                ));
                continue;
            };
            for rule in &route.values {
                let Some(attr) = structure.attribute(&rule.attribute) else {
                    out.push(issue(
                        Severity::Error,
                        Some(&rule.attribute),
                        &rule.key,
                        format!(
                            "attribute `{}` does not exist in family `{family}`",
                            rule.attribute
                        ),
                    ));
                    continue;
                };
                for (severity, message) in self.check_rule(rule, attr, structure) {
                    out.push(issue(severity, Some(&rule.attribute), &rule.key, message));
                }
            }
            if let Some(DeletePolicy::Clear(attrs)) = &route.on_delete {
                for a in attrs.iter().filter(|a| structure.attribute(a).is_none()) {
                    out.push(issue(
                        Severity::Error,
                        Some(a),
                        &format!("{}.on_delete", route.key),
                        format!("attribute `{a}` to clear does not exist in family `{family}`"),
                    ));
                }
            }
        }
        // Stable: errors first, then file order.
        out.sort_by_key(|i| std::cmp::Reverse(i.severity));
        out
    }

    fn check_rule(
        &self,
        rule: &ValueRule,
        attr: &AssetAttribute,
        structure: &FamilyStructure,
    ) -> Vec<(Severity, String)> {
        let mut out = Vec::new();
        let (code, family) = (&attr.code, &structure.family.code);
        if matches!(
            attr.kind,
            AttributeType::AutoTagging | AttributeType::Unknown
        ) {
            out.push((
                Severity::Error,
                format!(
                    "attribute `{code}` of family `{family}` has a type that cannot be written"
                ),
            ));
            return out;
        }
        for t in &rule.targets {
            for (what, given, per) in [
                ("locale", &t.locale, attr.value_per_locale),
                ("channel", &t.channel, attr.value_per_channel),
            ] {
                match (given, per) {
                    (Some(v), false) => out.push((
                        Severity::Error,
                        format!(
                            "attribute `{code}` of family `{family}` is not per {what}, but {what} `{v}` is given"
                        ),
                    )),
                    (None, true) => out.push((
                        Severity::Error,
                        format!(
                            "attribute `{code}` of family `{family}` is per {what}: give a {what}{}",
                            if what == "locale" { " (`locale` or `locales`)" } else { " (`channel`)" }
                        ),
                    )),
                    _ => {}
                }
            }
        }
        if rule.shaping.split.is_some() && attr.kind != AttributeType::MultipleOptions {
            out.push((
                Severity::Warning,
                format!("`split` has no effect: attribute `{code}` is not multiple_options"),
            ));
        }
        // Fixed values and option map targets are known now: coerce them as an asset would.
        let mut missing = Vec::new();
        for t in &rule.targets {
            if let Source::Fixed(v) = &t.source {
                let mut options = Options {
                    structure,
                    create_missing: true,
                    missing: &mut missing,
                };
                if let Err(e) = coerce::coerce(Input::Json(v), attr, &rule.shaping, &mut options) {
                    out.push((
                        Severity::Error,
                        format!(
                            "fixed value {v} does not fit attribute `{code}` ({:?}): {e}",
                            attr.kind
                        ),
                    ));
                }
            }
        }
        if attr.kind.has_options()
            && let Some(map) = &rule.shaping.map
        {
            // Map targets are the author's option codes, used as they are.
            for target in map.values() {
                if !structure.has_option(code, target) {
                    missing.push((code.clone(), target.clone()));
                }
            }
        }
        missing.sort();
        missing.dedup();
        for (_, option) in missing {
            out.push(if self.create_missing_options {
                (
                    Severity::Info,
                    format!("option `{option}` of attribute `{code}` will be created in family `{family}`"),
                )
            } else {
                (
                    Severity::Error,
                    format!(
                        "option `{option}` does not exist for attribute `{code}` of family `{family}` (create_missing_options = false)"
                    ),
                )
            });
        }
        out
    }
}
