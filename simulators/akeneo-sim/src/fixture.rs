//! PIM structure the simulator serves: locales, channels, API clients, asset families,
//! their attributes and options.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

const BUNDLED: &str = include_str!("../fixtures/default.json");

/// Why a fixture could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("fixture is not valid JSON for the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid fixture: {0}")]
    Invalid(String),
}

/// The structure of the simulated PIM.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fixture {
    /// Activated locales.
    pub locales: Vec<String>,
    /// Existing channels.
    pub channels: Vec<String>,
    /// API connections (client id/secret plus their API user).
    pub clients: Vec<ClientDef>,
    /// Asset families.
    pub families: Vec<FamilyDef>,
}

/// One API connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClientDef {
    pub client_id: String,
    pub secret: String,
    pub username: String,
    pub password: String,
    /// Grants this client may use; `None` means both `password` and `refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
}

impl ClientDef {
    pub(crate) fn allows_grant(&self, grant: &str) -> bool {
        match &self.grant_types {
            Some(list) => list.iter().any(|g| g == grant),
            None => grant == "password" || grant == "refresh_token",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FamilyDef {
    pub code: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub attribute_as_main_media: Option<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeDef>,
}

impl FamilyDef {
    pub(crate) fn attribute(&self, code: &str) -> Option<&AttributeDef> {
        self.attributes.iter().find(|a| a.code == code)
    }
}

/// Asset attribute types (note: `single_option`, not `option`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    Text,
    Number,
    Boolean,
    Date,
    SingleOption,
    MultipleOptions,
    MediaLink,
    MediaFile,
}

impl AttributeType {
    pub(crate) fn has_options(self) -> bool {
        matches!(
            self,
            AttributeType::SingleOption | AttributeType::MultipleOptions
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AttributeDef {
    pub code: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "type")]
    pub kind: AttributeType,
    #[serde(default)]
    pub value_per_locale: bool,
    #[serde(default)]
    pub value_per_channel: bool,
    #[serde(default)]
    pub is_required_for_completeness: bool,
    #[serde(default)]
    pub is_read_only: bool,
    // text
    #[serde(default)]
    pub max_characters: Option<u32>,
    #[serde(default)]
    pub is_textarea: Option<bool>,
    #[serde(default)]
    pub is_rich_text_editor: Option<bool>,
    /// `email` | `url` | `regexp` | `none` (or null).
    #[serde(default)]
    pub validation_rule: Option<String>,
    #[serde(default)]
    pub validation_regexp: Option<String>,
    // number
    #[serde(default)]
    pub decimals_allowed: Option<bool>,
    #[serde(default)]
    pub min_value: Option<String>,
    #[serde(default)]
    pub max_value: Option<String>,
    // media
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub allowed_extensions: Option<Vec<String>>,
    #[serde(default)]
    pub max_file_size: Option<String>,
    /// Initial options of `single_option` / `multiple_options` attributes.
    #[serde(default)]
    pub options: Vec<OptionDef>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OptionDef {
    pub code: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Fixture {
    /// The fixture shipped with the crate (`fixtures/default.json`).
    pub fn bundled() -> Fixture {
        Fixture::from_json(BUNDLED).expect("bundled fixture is valid")
    }

    pub fn from_path(p: &Path) -> Result<Fixture, FixtureError> {
        let text = std::fs::read_to_string(p).map_err(|source| FixtureError::Io {
            path: p.display().to_string(),
            source,
        })?;
        Fixture::from_json(&text)
    }

    pub fn from_json(s: &str) -> Result<Fixture, FixtureError> {
        let fixture: Fixture = serde_json::from_str(s)?;
        fixture.check()?;
        Ok(fixture)
    }

    pub fn family(&self, code: &str) -> Option<&FamilyDef> {
        self.families.iter().find(|f| f.code == code)
    }

    fn check(&self) -> Result<(), FixtureError> {
        let bad = |m: String| Err(FixtureError::Invalid(m));
        if self.clients.is_empty() {
            return bad("at least one client is needed".into());
        }
        let mut families = BTreeSet::new();
        for fam in &self.families {
            if !crate::validate::is_valid_code(&fam.code) {
                return bad(format!("family code {:?} is not a valid code", fam.code));
            }
            if !families.insert(fam.code.as_str()) {
                return bad(format!("family {:?} is defined twice", fam.code));
            }
            let mut attrs = BTreeSet::new();
            for attr in &fam.attributes {
                if !attrs.insert(attr.code.as_str()) {
                    return bad(format!(
                        "attribute {:?} defined twice in {:?}",
                        attr.code, fam.code
                    ));
                }
                if !attr.options.is_empty() && !attr.kind.has_options() {
                    return bad(format!("attribute {:?} cannot have options", attr.code));
                }
                if attr.validation_rule.as_deref() == Some("regexp") {
                    let Some(re) = &attr.validation_regexp else {
                        return bad(format!("attribute {:?} needs validation_regexp", attr.code));
                    };
                    if let Err(e) = regex::Regex::new(re) {
                        return bad(format!("attribute {:?}: bad regexp: {e}", attr.code));
                    }
                }
            }
            if let Some(main) = &fam.attribute_as_main_media {
                let ok = fam.attribute(main).is_some_and(|a| {
                    matches!(a.kind, AttributeType::MediaLink | AttributeType::MediaFile)
                });
                if !ok {
                    return bad(format!(
                        "attribute_as_main_media {main:?} of {:?} must be a media attribute",
                        fam.code
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Renders an attribute as the API does (type-specific fields only for their type).
pub(crate) fn attribute_json(a: &AttributeDef) -> serde_json::Value {
    use serde_json::json;
    let mut v = json!({
        "code": a.code,
        "labels": a.labels,
        "type": a.kind,
        "value_per_locale": a.value_per_locale,
        "value_per_channel": a.value_per_channel,
        "is_required_for_completeness": a.is_required_for_completeness,
        "is_read_only": a.is_read_only,
    });
    let m = v.as_object_mut().expect("object");
    match a.kind {
        AttributeType::Text => {
            m.insert("max_characters".into(), json!(a.max_characters));
            m.insert("is_textarea".into(), json!(a.is_textarea.unwrap_or(false)));
            m.insert("is_rich_text_editor".into(), json!(a.is_rich_text_editor));
            m.insert("validation_rule".into(), json!(a.validation_rule));
            m.insert("validation_regexp".into(), json!(a.validation_regexp));
        }
        AttributeType::Number => {
            m.insert(
                "decimals_allowed".into(),
                json!(a.decimals_allowed.unwrap_or(false)),
            );
            m.insert("min_value".into(), json!(a.min_value));
            m.insert("max_value".into(), json!(a.max_value));
        }
        AttributeType::MediaLink => {
            m.insert("media_type".into(), json!(a.media_type));
            m.insert("prefix".into(), json!(a.prefix));
            m.insert("suffix".into(), json!(a.suffix));
        }
        AttributeType::MediaFile => {
            m.insert("media_type".into(), json!(a.media_type));
            m.insert(
                "allowed_extensions".into(),
                json!(a.allowed_extensions.clone().unwrap_or_default()),
            );
            m.insert("max_file_size".into(), json!(a.max_file_size));
        }
        _ => {}
    }
    v
}
