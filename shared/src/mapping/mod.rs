//! Declarative DAM → Akeneo mapping, read from a TOML file (reference: docs/mapping.md,
//! example: examples/production/mapping.toml).
//!
//! A [`Mapping`] routes a DAM asset (its JSON) to an asset family, filters it, builds its
//! Akeneo code and values with per-type coercion, and reports what the consumer still has to do
//! (media uploads, options to create). Everything that can be parsed (paths, templates, regexes)
//! is compiled at load so that mapping one asset is a walk over prepared rules.

mod code;
mod coerce;
mod compile;
mod condition;
mod error;
mod raw;
mod source;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::akeneo::{Asset, AssetValue, FamilyStructure};

pub use code::{MAX_CODE_LEN, asset_code, option_code};
pub use error::{LoadIssue, MappingError};
pub use validate::{Severity, Structures, ValidationIssue};

use coerce::{Coerced, Input, Options, Shaping};
use condition::Condition;
use source::{FieldPath, RenderError, Template};

/// A loaded, statically checked mapping file.
#[derive(Debug, Clone)]
pub struct Mapping {
    origin: String,
    create_missing_options: bool,
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    /// `route[i]`, for messages.
    key: String,
    family: String,
    when: Vec<Condition>,
    require: Vec<Condition>,
    code: Template,
    values: Vec<ValueRule>,
    on_delete: Option<DeletePolicy>,
}

#[derive(Debug, Clone)]
struct ValueRule {
    /// `route[i].values.attr`, for messages.
    key: String,
    attribute: String,
    targets: Vec<Target>,
    shaping: Shaping,
    null_if_missing: bool,
}

/// One (locale, channel) slot of an attribute and where its data comes from.
#[derive(Debug, Clone)]
struct Target {
    locale: Option<String>,
    channel: Option<String>,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Field(FieldPath),
    Fixed(Value),
    Template(Template),
}

/// What to do in the PIM when the DAM deletes an asset of a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// Delete the Akeneo asset.
    Delete,
    /// Keep the Akeneo asset untouched.
    Ignore,
    /// Keep the asset but erase these attributes (see [`Mapping::clear_values`]).
    Clear(Vec<String>),
}

/// The result of mapping one DAM asset.
#[derive(Debug, Clone, PartialEq)]
pub enum MapOutcome {
    Mapped(MappedAsset),
    /// Not for the PIM (no route, or the product filter refused it): not a failure.
    Skipped {
        reason: SkipReason,
    },
    /// A DAM value cannot be written (permanent until the DAM data or the mapping changes);
    /// the reason names the attribute.
    Invalid {
        family: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No `[[route]]` matched.
    NoRoute,
    /// The route's `require` filter refused the asset.
    Filtered { family: String, condition: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoRoute => f.write_str("no route matches"),
            SkipReason::Filtered { family, condition } => {
                write!(f, "family {family}: required {condition} does not hold")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MappedAsset {
    pub family: String,
    pub code: String,
    /// Values to PATCH; media_file values are not in here yet (see `uploads`).
    pub asset: Asset,
    pub uploads: Vec<PendingUpload>,
    /// (attribute, option code) pairs used but absent from the PIM; only with
    /// `create_missing_options = true` (otherwise such assets are `Invalid`).
    pub missing_options: Vec<(String, String)>,
    /// sha256 hex of the canonical JSON of (family, values, uploads): equal hashes mean the PIM
    /// already has this content.
    pub content_hash: String,
}

/// A media_file value to upload: the consumer downloads `source_url`, uploads it to Akeneo and
/// writes the returned file code (see [`MappedAsset::complete_upload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpload {
    pub attribute: String,
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub source_url: String,
}

impl MappedAsset {
    /// Records the file code Akeneo returned for `upload` as the attribute's value.
    pub fn complete_upload(&mut self, upload: &PendingUpload, file_code: String) {
        self.asset
            .values
            .entry(upload.attribute.clone())
            .or_default()
            .push(AssetValue {
                locale: upload.locale.clone(),
                channel: upload.channel.clone(),
                data: Value::String(file_code),
            });
    }
}

/// Outcome counters for a batch, so that skips are reported apart from failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapStats {
    pub mapped: u64,
    pub skipped: u64,
    pub invalid: u64,
}

impl MapStats {
    pub fn record(&mut self, outcome: &MapOutcome) {
        match outcome {
            MapOutcome::Mapped(_) => self.mapped += 1,
            MapOutcome::Skipped { .. } => self.skipped += 1,
            MapOutcome::Invalid { .. } => self.invalid += 1,
        }
    }
}

impl Mapping {
    /// Parses and statically checks a mapping; `origin` names the text in messages
    /// (`origin:line:column: key: message`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Mapping, MappingError> {
        compile::compile(text, origin)
    }

    /// `mapping.toml` next to the running binary (how the Lambda zips ship it), the default
    /// when `MAPPING_PATH` is unset.
    pub fn default_path() -> std::path::PathBuf {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("mapping.toml")))
            .unwrap_or_else(|| std::path::PathBuf::from("mapping.toml"))
    }

    /// The mapping file a function reads: `MAPPING_PATH` through `get`, else `default`.
    pub fn path_from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        default: std::path::PathBuf,
    ) -> std::path::PathBuf {
        get("MAPPING_PATH")
            .filter(|p| !p.trim().is_empty())
            .map_or(default, std::path::PathBuf::from)
    }

    pub fn from_path(path: &Path) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Where the mapping was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The families assets can be routed to, in route order without repeats (e.g. to preload
    /// their structures).
    pub fn families(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.routes {
            if !out.contains(&r.family.as_str()) {
                out.push(&r.family);
            }
        }
        out
    }

    /// The policy for DAM deletions of assets in `family`: the first route's `on_delete`,
    /// `Delete` for a routed family that sets none (the PIM mirrors the DAM), `Ignore` for a
    /// family this mapping never writes (not ours to delete).
    pub fn delete_policy(&self, family: &str) -> DeletePolicy {
        let mut routed = false;
        for r in self.routes.iter().filter(|r| r.family == family) {
            routed = true;
            if let Some(p) = &r.on_delete {
                return p.clone();
            }
        }
        if routed {
            DeletePolicy::Delete
        } else {
            DeletePolicy::Ignore
        }
    }

    /// The erasing values (`data: null`) for a `Clear` policy: every (locale, channel) slot that
    /// the family's routes write for each cleared attribute, or the unscoped slot for an
    /// attribute they do not map. `None` unless the family's policy is `Clear`.
    pub fn clear_values(&self, family: &str, code: &str) -> Option<Asset> {
        let DeletePolicy::Clear(attrs) = self.delete_policy(family) else {
            return None;
        };
        let mut values: BTreeMap<String, Vec<AssetValue>> = BTreeMap::new();
        for attr in attrs {
            let mut slots: Vec<AssetValue> = Vec::new();
            let targets = self
                .routes
                .iter()
                .filter(|r| r.family == family)
                .flat_map(|r| r.values.iter().filter(|v| v.attribute == attr))
                .flat_map(|v| v.targets.iter());
            for t in targets {
                if !slots
                    .iter()
                    .any(|s| s.locale == t.locale && s.channel == t.channel)
                {
                    slots.push(AssetValue {
                        locale: t.locale.clone(),
                        channel: t.channel.clone(),
                        data: Value::Null,
                    });
                }
            }
            if slots.is_empty() {
                slots.push(AssetValue {
                    locale: None,
                    channel: None,
                    data: Value::Null,
                });
            }
            values.insert(attr, slots);
        }
        Some(Asset {
            code: code.to_string(),
            values,
        })
    }

    /// Maps one DAM asset. `dam_id` stands in for a missing `id` field; `structures` gives the
    /// PIM structure of a family (attribute types, locales, options).
    pub fn map_asset<'s>(
        &self,
        dam_id: &str,
        fields: &Value,
        structures: impl Fn(&str) -> Option<&'s FamilyStructure>,
    ) -> MapOutcome {
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.when.iter().all(|c| c.holds(fields)))
        else {
            return MapOutcome::Skipped {
                reason: SkipReason::NoRoute,
            };
        };
        if let Some(failed) = route.require.iter().find(|c| !c.holds(fields)) {
            return MapOutcome::Skipped {
                reason: SkipReason::Filtered {
                    family: route.family.clone(),
                    condition: failed.description().to_string(),
                },
            };
        }
        match self.build(route, dam_id, fields, structures) {
            Ok(mapped) => MapOutcome::Mapped(mapped),
            Err(reason) => MapOutcome::Invalid {
                family: route.family.clone(),
                reason,
            },
        }
    }

    fn build<'s>(
        &self,
        route: &Route,
        dam_id: &str,
        fields: &Value,
        structures: impl Fn(&str) -> Option<&'s FamilyStructure>,
    ) -> Result<MappedAsset, String> {
        let family = route.family.as_str();
        let structure = structures(family)
            .ok_or_else(|| format!("asset family `{family}` is not known to the PIM"))?;
        let raw_code = match route.code.render(fields, dam_id) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return Err("asset code template gives an empty code".into()),
            Err(RenderError::Missing) => {
                return Err("asset code template refers to a missing field".into());
            }
            Err(RenderError::NotScalar(p)) => {
                return Err(format!("asset code template: field `{p}` is not a scalar"));
            }
        };
        let code = asset_code(&raw_code);

        let mut values: BTreeMap<String, Vec<AssetValue>> = BTreeMap::new();
        let mut uploads = Vec::new();
        let mut missing_options = Vec::new();
        for rule in &route.values {
            let attr = structure.attribute(&rule.attribute).ok_or_else(|| {
                format!(
                    "attribute `{}` does not exist in family `{family}`",
                    rule.attribute
                )
            })?;
            for target in &rule.targets {
                let rendered: String;
                let input = match &target.source {
                    Source::Field(p) => match p.lookup(fields) {
                        Some(v) => Some(Input::Json(v)),
                        None if p.is_id() => Some(Input::Text(dam_id)),
                        None => None,
                    },
                    Source::Fixed(v) => Some(Input::Json(v)),
                    Source::Template(t) => match t.render(fields, dam_id) {
                        Ok(s) => {
                            rendered = s;
                            Some(Input::Text(&rendered))
                        }
                        Err(RenderError::Missing) => None,
                        Err(RenderError::NotScalar(p)) => {
                            return Err(format!(
                                "attribute `{}`{}: template field `{p}` is not a scalar",
                                rule.attribute,
                                slot(target)
                            ));
                        }
                    },
                };
                let data = match input {
                    None if rule.null_if_missing => Value::Null,
                    None => continue,
                    Some(input) => {
                        let mut options = Options {
                            structure,
                            create_missing: self.create_missing_options,
                            missing: &mut missing_options,
                        };
                        match coerce::coerce(input, attr, &rule.shaping, &mut options) {
                            Ok(Coerced::Data(d)) => d,
                            Ok(Coerced::Upload(url)) => {
                                uploads.push(PendingUpload {
                                    attribute: rule.attribute.clone(),
                                    locale: target.locale.clone(),
                                    channel: target.channel.clone(),
                                    source_url: url,
                                });
                                continue;
                            }
                            Err(e) => {
                                return Err(format!(
                                    "attribute `{}`{}{}: {e}",
                                    rule.attribute,
                                    slot(target),
                                    source_label(&target.source)
                                ));
                            }
                        }
                    }
                };
                values
                    .entry(rule.attribute.clone())
                    .or_default()
                    .push(AssetValue {
                        locale: target.locale.clone(),
                        channel: target.channel.clone(),
                        data,
                    });
            }
        }
        let content_hash = content_hash(family, &values, &uploads);
        Ok(MappedAsset {
            family: family.to_string(),
            code: code.clone(),
            asset: Asset { code, values },
            uploads,
            missing_options,
            content_hash,
        })
    }
}

fn slot(t: &Target) -> String {
    match (&t.locale, &t.channel) {
        (None, None) => String::new(),
        (Some(l), None) => format!(" (locale {l})"),
        (None, Some(c)) => format!(" (channel {c})"),
        (Some(l), Some(c)) => format!(" (locale {l}, channel {c})"),
    }
}

fn source_label(s: &Source) -> String {
    match s {
        Source::Field(p) => format!(" from `{}`", p.as_str()),
        Source::Fixed(_) => " (fixed value)".to_string(),
        Source::Template(_) => " (template)".to_string(),
    }
}

/// sha256 over the JSON of (family, values, uploads). `values` is a BTreeMap and each value list
/// follows the mapping's rule order, data never holds objects: the JSON is canonical without a
/// canonicalisation pass, and the DAM's key order cannot change it.
fn content_hash(
    family: &str,
    values: &BTreeMap<String, Vec<AssetValue>>,
    uploads: &[PendingUpload],
) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        family: &'a str,
        values: &'a BTreeMap<String, Vec<AssetValue>>,
        uploads: &'a [PendingUpload],
    }
    // Serialised into one buffer, then hashed in one call: feeding the hasher serde's many
    // small writes directly costs more than the copy.
    let mut buf = Vec::with_capacity(1024);
    serde_json::to_writer(
        &mut buf,
        &Canonical {
            family,
            values,
            uploads,
        },
    )
    .expect("serialising plain data into memory cannot fail");
    code::hex(&Sha256::digest(&buf))
}
