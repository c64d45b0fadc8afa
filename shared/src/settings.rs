//! One definition per group of settings, two ways to fill it: a table of the `serve` config file
//! (TOML, through serde) or environment variables (the Lambda functions), where key `max_in_flight`
//! of group `AKENEO_` is the variable `AKENEO_MAX_IN_FLIGHT`. Both fronts deserialise the same
//! struct and pass the same validation, so they accept and refuse the same values, and an error
//! names the setting the way the user wrote it (`AKENEO_BATCH_MAX_ITEMS` or
//! `[pim] batch_max_items`). The reference is `docs/settings.md`.

use std::fmt;

use secrecy::SecretString;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};

/// Where a group of settings was read from: names keys in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Environment variables `PREFIX` + upper-case key.
    Env(&'static str),
    /// A `[section]` of the config file.
    File(&'static str),
}

impl Origin {
    /// The user's spelling of `key`.
    pub fn name(self, key: &str) -> String {
        match self {
            Origin::Env(prefix) => format!("{prefix}{}", key.to_ascii_uppercase()),
            Origin::File(section) => format!("[{section}] {key}"),
        }
    }
}

/// A missing or malformed setting, named as the user wrote it, with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{name} is not set: {hint}")]
    Missing { name: String, hint: String },
    #[error("{name} has an invalid value {value:?}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
    /// Several problems, reported together so one run shows them all.
    #[error("{} settings need fixing:{}", .0.len(), .0.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    Several(Vec<SettingError>),
}

/// Collects every problem of a group of settings instead of stopping at the first.
#[derive(Debug, Default)]
pub struct Problems(Vec<SettingError>);

impl Problems {
    /// The value, or `None` with its error kept.
    pub fn take<T>(&mut self, result: Result<T, SettingError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    pub fn push(&mut self, error: SettingError) {
        match error {
            SettingError::Several(all) => self.0.extend(all),
            one => self.0.push(one),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was wrong, else one error listing every problem.
    pub fn finish(self) -> Result<(), SettingError> {
        let mut all = self.0;
        match all.len() {
            0 => Ok(()),
            1 => Err(all.remove(0)),
            _ => Err(SettingError::Several(all)),
        }
    }
}

impl SettingError {
    /// `key` (a field name) is required; `hint` says where its value comes from.
    pub fn missing(key: &str, hint: impl Into<String>) -> Self {
        SettingError::Missing {
            name: key.to_owned(),
            hint: hint.into(),
        }
    }

    /// `key` holds `value`, which is refused for `reason`. Never pass a secret as `value`.
    pub fn invalid(key: &str, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        SettingError::Invalid {
            name: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Renames the key this error names to its spelling at `origin`.
    pub fn at(self, origin: Origin) -> Self {
        match self {
            SettingError::Missing { name, hint } => SettingError::Missing {
                name: origin.name(&name),
                hint,
            },
            SettingError::Invalid {
                name,
                value,
                reason,
            } => SettingError::Invalid {
                name: origin.name(&name),
                value,
                reason,
            },
            SettingError::Several(all) => {
                SettingError::Several(all.into_iter().map(|e| e.at(origin)).collect())
            }
            other => other,
        }
    }

    /// The name this error is about (`None` for a free-form one).
    pub fn name(&self) -> Option<&str> {
        match self {
            SettingError::Missing { name, .. } | SettingError::Invalid { name, .. } => Some(name),
            SettingError::Other(_) | SettingError::Several(_) => None,
        }
    }
}

impl de::Error for SettingError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SettingError::Other(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        SettingError::missing(field, "it is required")
    }
}

/// Reads the flat struct `T` from the variables `prefix` + upper-case field name; blank values
/// count as unset (a template parameter left empty). Numbers and booleans are parsed from the
/// text, lists are comma- or whitespace-separated. Errors name the variables.
pub fn from_lookup<T: DeserializeOwned>(
    prefix: &'static str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<T, SettingError> {
    let origin = Origin::Env(prefix);
    T::deserialize(Variables { origin, get }).map_err(|e| e.at(origin))
}

/// A variable without a config-file twin (AWS resource names the template sets), required.
pub fn required(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    hint: &str,
) -> Result<String, SettingError> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SettingError::missing(name, hint))
}

/// A required text field of a settings struct: trimmed, and missing when unset or blank.
pub fn required_text<'a>(
    key: &str,
    value: &'a Option<String>,
    hint: &str,
) -> Result<&'a str, SettingError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SettingError::missing(key, hint))
}

/// Whether any variable of `T`'s fields is set under `prefix`.
pub fn any_set<T: DeserializeOwned>(
    prefix: &'static str,
    get: &dyn Fn(&str) -> Option<String>,
) -> bool {
    let mut found = false;
    let probe = Probe(&mut found, prefix, get);
    // The probe only records the field names serde asks for; its result is irrelevant.
    let _ = T::deserialize(probe);
    found
}

fn lookup(origin: Origin, get: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(&origin.name(key))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

struct Variables<'a> {
    origin: Origin,
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl<'de> Deserializer<'de> for Variables<'_> {
    type Error = SettingError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(SettingError::Other(
            "settings read from variables must be a struct".into(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let present: Vec<(&'static str, String)> = fields
            .iter()
            .filter_map(|f| lookup(self.origin, self.get, f).map(|v| (*f, v)))
            .collect();
        visitor.visit_map(Fields {
            present: present.into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct Fields {
    present: std::vec::IntoIter<(&'static str, String)>,
    value: Option<(&'static str, String)>,
}

impl<'de> de::MapAccess<'de> for Fields {
    type Error = SettingError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.present.next() {
            None => Ok(None),
            Some((key, raw)) => {
                self.value = Some((key, raw));
                seed.deserialize(key.into_deserializer()).map(Some)
            }
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (key, raw) = self
            .value
            .take()
            .ok_or_else(|| SettingError::Other("value before key".into()))?;
        seed.deserialize(Text { key, raw: &raw })
            .map_err(|e| match e {
                // The text is not echoed: it may be a secret that failed to parse.
                SettingError::Other(reason) => SettingError::Invalid {
                    name: key.to_owned(),
                    value: shown(&raw),
                    reason,
                },
                other => other,
            })
    }
}

/// Values longer than a short word are cut in errors: they may be secrets.
fn shown(raw: &str) -> String {
    if raw.chars().count() <= 24 {
        raw.to_owned()
    } else {
        format!("{}…", raw.chars().take(8).collect::<String>())
    }
}

/// One variable's text, parsed as the field's type asks.
struct Text<'a> {
    key: &'static str,
    raw: &'a str,
}

impl Text<'_> {
    fn parse<T: std::str::FromStr>(&self) -> Result<T, SettingError>
    where
        T::Err: fmt::Display,
    {
        self.raw
            .parse()
            .map_err(|e: T::Err| SettingError::invalid(self.key, shown(self.raw), e.to_string()))
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            visitor.$visit(self.parse()?)
        })*
    };
}

impl<'de> Deserializer<'de> for Text<'_> {
    type Error = SettingError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str(self.raw)
    }

    parsed! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64,
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64,
        deserialize_f32 => visit_f32, deserialize_f64 => visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let key = self.key;
        let items = self
            .raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(move |raw| Text { key, raw });
        visitor.visit_seq(de::value::SeqDeserializer::new(items))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self.raw.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, SettingError> for Text<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Records whether a field's variable is set; answers nothing else.
struct Probe<'a, 'g>(
    &'a mut bool,
    &'static str,
    &'g dyn Fn(&str) -> Option<String>,
);

impl<'de> Deserializer<'de> for Probe<'_, '_> {
    type Error = SettingError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(SettingError::Other("probe".into()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        let origin = Origin::Env(self.1);
        *self.0 = fields.iter().any(|f| lookup(origin, self.2, f).is_some());
        Err(SettingError::Other("probe".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A secret setting: inline text, or in the config file `{ env = "VARIABLE" }` to read it from
/// the environment when the file is loaded (so the file itself holds no credential). An unset
/// variable is an error only where the secret is used ([`Secret::require`]): a command that
/// does not talk to the PIM needs no PIM password.
#[derive(Clone)]
pub struct Secret {
    value: SecretString,
    /// The variable it was read from, to name it when it was unset.
    env: Option<String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret {
            value: SecretString::from(value),
            env: None,
        }
    }
}

impl Secret {
    /// The text; empty when it was read from an unset variable.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.value.expose_secret()
    }

    /// The secret of `key`, or an error naming what is missing: the key, or the variable the
    /// file said to read it from.
    pub fn require(
        secret: &Option<Secret>,
        key: &str,
        hint: &str,
    ) -> Result<SecretString, SettingError> {
        match secret {
            Some(s) if !s.expose().trim().is_empty() => Ok(s.value.clone()),
            Some(Secret { env: Some(env), .. }) => Err(SettingError::missing(
                key,
                format!(
                    "it reads the environment variable {env}, which is not set; export it or \
                     write the value inline"
                ),
            )),
            _ => Err(SettingError::missing(key, hint)),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Inline(String),
            Env { env: String },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Inline(s) => Secret::from(s.as_str()),
            Raw::Env { env } => Secret {
                value: SecretString::from(std::env::var(&env).unwrap_or_default().trim()),
                env: Some(env),
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Example {
        name: String,
        count: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
        on: Option<bool>,
    }

    /// A lookup over `pairs`, as tests of every settings reader pass instead of the environment.
    pub(crate) fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn variables_fill_the_same_struct_as_the_file() {
        let get = vars(&[
            ("EX_NAME", " a "),
            ("EX_COUNT", "7"),
            ("EX_TAGS", "x, y z"),
            ("EX_ON", "true"),
            ("OTHER", "ignored"),
        ]);
        let from_env: Example = from_lookup("EX_", &get).unwrap();
        let from_file: Example =
            toml::from_str("name = 'a'\ncount = 7\ntags = ['x', 'y', 'z']\non = true").unwrap();
        assert_eq!(from_env, from_file);
    }

    #[test]
    fn errors_name_the_variable_and_blank_counts_as_unset() {
        let e = from_lookup::<Example>("EX_", &vars(&[("EX_NAME", "  ")])).unwrap_err();
        assert_eq!(e.name(), Some("EX_NAME"));
        assert!(matches!(e, SettingError::Missing { .. }), "{e}");
        let e = from_lookup::<Example>("EX_", &vars(&[("EX_NAME", "a"), ("EX_COUNT", "7x")]))
            .unwrap_err();
        assert_eq!(e.name(), Some("EX_COUNT"));
        assert!(e.to_string().contains("\"7x\""), "{e}");
    }

    #[test]
    fn several_problems_are_reported_together_each_named_at_its_origin() {
        let mut problems = Problems::default();
        assert_eq!(problems.take(Ok::<_, SettingError>(1)), Some(1));
        problems.take(Err::<(), _>(SettingError::missing("client_id", "copy it")));
        problems.push(SettingError::invalid(
            "timeout_ms",
            0,
            "must be greater than zero",
        ));
        let e = problems.finish().unwrap_err().at(Origin::Env("AKENEO_"));
        let text = e.to_string();
        assert!(text.starts_with("2 settings need fixing:"), "{text}");
        assert!(
            text.contains("\n  AKENEO_CLIENT_ID is not set: copy it"),
            "{text}"
        );
        assert!(
            text.contains("\n  AKENEO_TIMEOUT_MS has an invalid value"),
            "{text}"
        );
        assert!(Problems::default().finish().is_ok());
    }

    #[test]
    fn the_probe_tells_whether_any_variable_is_set() {
        assert!(any_set::<Example>("EX_", &vars(&[("EX_COUNT", "1")])));
        assert!(!any_set::<Example>("EX_", &vars(&[("EXCOUNT", "1")])));
    }

    #[test]
    fn secrets_read_from_the_environment_say_which_variable_is_missing_when_used() {
        let unset: HashMap<String, Secret> =
            toml::from_str("s = { env = \"DAM_SYNC_TEST_SURELY_UNSET\" }").unwrap();
        let e = Secret::require(&Some(unset["s"].clone()), "password", "hint").unwrap_err();
        assert_eq!(e.name(), Some("password"));
        assert!(e.to_string().contains("DAM_SYNC_TEST_SURELY_UNSET"), "{e}");
        let e = Secret::require(&None, "password", "use the API password").unwrap_err();
        assert!(e.to_string().contains("use the API password"), "{e}");
        let ok: HashMap<String, Secret> = toml::from_str("s = 'inline'").unwrap();
        assert_eq!(ok["s"].expose(), "inline");
        assert_eq!(format!("{:?}", ok["s"]), "Secret([REDACTED])");
    }
}
