//! The mapping file as written (TOML shapes). Unknown keys are errors so that typos surface at
//! load time instead of silently mapping nothing. Positions are kept (`Spanned`) where a later
//! static check needs to point back into the file.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    #[serde(default)]
    pub settings: RawSettings,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    #[serde(default)]
    pub create_missing_options: bool,
    /// Default asset code template for routes that give none.
    pub code: Option<Spanned<String>>,
    /// Default separator when a list is written to a text attribute.
    pub separator: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub family: Spanned<String>,
    #[serde(default)]
    pub when: Vec<Spanned<RawCondition>>,
    #[serde(default)]
    pub require: Vec<Spanned<RawCondition>>,
    pub code: Option<Spanned<String>>,
    #[serde(default)]
    pub values: BTreeMap<String, Spanned<RawValue>>,
    pub on_delete: Option<Spanned<RawDelete>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCondition {
    pub field: String,
    pub equals: Option<serde_json::Value>,
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    pub exists: Option<bool>,
    pub contains: Option<serde_json::Value>,
    pub regex: Option<String>,
    #[serde(default)]
    pub not: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValue {
    pub field: Option<String>,
    pub value: Option<serde_json::Value>,
    pub template: Option<String>,
    pub locales: Option<BTreeMap<String, String>>,
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub separator: Option<String>,
    pub split: Option<String>,
    pub map: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub null_if_missing: bool,
}

/// `on_delete = "delete" | "ignore" | { clear = [..] }`, parsed by hand so that a wrong word
/// gets a message listing the accepted forms (an untagged enum would only say "no variant").
#[derive(Debug)]
pub(super) enum RawDelete {
    Delete,
    Ignore,
    Clear(Vec<String>),
}

impl<'de> Deserialize<'de> for RawDelete {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = r#""delete", "ignore" or { clear = ["attribute", ...] }"#;
        impl<'de> Visitor<'de> for V {
            type Value = RawDelete;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDelete, E> {
                match s {
                    "delete" => Ok(RawDelete::Delete),
                    "ignore" => Ok(RawDelete::Ignore),
                    other => Err(E::custom(format!(
                        "unknown on_delete \"{other}\", expected {EXPECTED}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDelete, A::Error> {
                let mut clear: Option<Vec<String>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "clear" {
                        return Err(de::Error::custom(format!(
                            "unknown on_delete key \"{key}\", expected {EXPECTED}"
                        )));
                    }
                    clear = Some(map.next_value()?);
                }
                clear
                    .map(RawDelete::Clear)
                    .ok_or_else(|| de::Error::custom(format!("expected {EXPECTED}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// TOML dates (`value = 2026-11-02`) reach `serde_json::Value` as toml's private wrapper object;
/// turn them back into their text so that they work like quoted dates.
pub(super) fn plain(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) if m.len() == 1 => match m.get("$__toml_private_datetime") {
            Some(Value::String(s)) => Value::String(s.clone()),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(plain).collect()),
        _ => v.clone(),
    }
}
