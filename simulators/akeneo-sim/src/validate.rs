//! Asset write validation, in two phases as the Akeneo connector does: a JSON-schema phase
//! ("The asset has an invalid format.") and, only when the shape is right, a business-rule
//! phase ("The asset has data that does not comply with the business rules.").

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::fixture::{AttributeDef, AttributeType, FamilyDef, Fixture, OptionDef};

pub(crate) const INVALID_FORMAT: &str = "The asset has an invalid format.";
pub(crate) const BUSINESS_RULES: &str =
    "The asset has data that does not comply with the business rules.";

/// A rejected asset: the item-level message plus `{property, message}` errors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ItemError {
    pub message: &'static str,
    pub errors: Vec<(String, String)>,
}

impl ItemError {
    pub(crate) fn errors_json(&self) -> Value {
        Value::Array(
            self.errors
                .iter()
                .map(|(p, m)| serde_json::json!({"property": p, "message": m}))
                .collect(),
        )
    }
}

/// One value to write: `data == Null` erases the (attribute, locale, channel) slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValueWrite {
    pub attribute: String,
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidAsset {
    pub code: String,
    pub values: Vec<ValueWrite>,
}

/// What validation needs to know beyond the fixture.
pub(crate) struct Ctx<'a> {
    pub fixture: &'a Fixture,
    pub family: &'a FamilyDef,
    /// Current options per (family, attribute).
    pub options: &'a BTreeMap<(String, String), Vec<OptionDef>>,
    /// Uploaded media files: code -> original filename.
    pub media_files: &'a dyn Fn(&str) -> Option<String>,
    /// Compiled `validation_regexp` per (family, attribute).
    pub regexes: &'a HashMap<(String, String), regex::Regex>,
}

/// Asset and family codes: `^[a-zA-Z0-9_]+$`.
pub(crate) fn is_valid_code(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Type names as the JSON-schema library prints them.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn found(v: &Value, expected: &str) -> String {
    format!("{} value found, but {expected} is required", type_name(v))
}

/// Validates one asset object. `url_code` is the code from the URL on single-asset routes
/// (used when the body has no `code`).
pub(crate) fn validate_asset(
    item: &Map<String, Value>,
    url_code: Option<&str>,
    ctx: &Ctx<'_>,
) -> Result<ValidAsset, ItemError> {
    let mut schema = Vec::new();
    let code = match (item.get("code"), url_code) {
        (Some(Value::String(s)), _) => Some(s.clone()),
        (Some(other), _) => {
            schema.push(("code".to_string(), found(other, "a string")));
            None
        }
        (None, Some(u)) => Some(u.to_string()),
        (None, None) => {
            schema.push((
                "code".to_string(),
                "The property code is required".to_string(),
            ));
            None
        }
    };
    for key in item.keys() {
        if !matches!(key.as_str(), "code" | "values" | "_links") {
            schema.push((
                String::new(),
                format!(
                    "The property {key} is not defined and the definition does not allow additional properties"
                ),
            ));
        }
    }
    let empty = Map::new();
    let values = match item.get("values") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => {
            schema.push(("values".to_string(), found(other, "an object")));
            &empty
        }
    };
    for (attr_code, list) in values {
        let attr = ctx.family.attribute(attr_code);
        let Value::Array(list) = list else {
            schema.push((format!("values.{attr_code}"), found(list, "an array")));
            continue;
        };
        for (i, v) in list.iter().enumerate() {
            let path = format!("values.{attr_code}[{i}]");
            let Value::Object(obj) = v else {
                schema.push((path, found(v, "an object")));
                continue;
            };
            for required in ["locale", "channel", "data"] {
                if !obj.contains_key(required) {
                    schema.push((
                        format!("{path}.{required}"),
                        format!("The property {required} is required"),
                    ));
                }
            }
            for key in obj.keys() {
                if !matches!(key.as_str(), "locale" | "channel" | "data") {
                    schema.push((
                        path.clone(),
                        format!(
                            "The property {key} is not defined and the definition does not allow additional properties"
                        ),
                    ));
                }
            }
            for scope in ["locale", "channel"] {
                if let Some(x) = obj.get(scope)
                    && !(x.is_null() || x.is_string())
                {
                    schema.push((format!("{path}.{scope}"), found(x, "a string or a null")));
                }
            }
            if let (Some(attr), Some(data)) = (attr, obj.get("data")) {
                data_schema(attr, data, &format!("{path}.data"), &mut schema);
            }
        }
    }
    if !schema.is_empty() {
        return Err(ItemError {
            message: INVALID_FORMAT,
            errors: schema,
        });
    }
    let code = code.expect("schema phase guarantees a string code");

    let mut rules = Vec::new();
    if code.is_empty() {
        rules.push((
            "code".to_string(),
            "This value should not be blank.".to_string(),
        ));
    } else if code.chars().count() > 255 {
        rules.push((
            "code".to_string(),
            "This value is too long. It should have 255 characters or less.".to_string(),
        ));
    } else if !is_valid_code(&code) {
        rules.push((
            "code".to_string(),
            "This field may only contain letters, numbers and underscores.".to_string(),
        ));
    }
    let mut writes = Vec::new();
    for (attr_code, list) in values {
        let prop = format!("values.{attr_code}");
        let Some(attr) = ctx.family.attribute(attr_code) else {
            rules.push((
                prop,
                format!(
                    "The attribute \"{attr_code}\" does not exist for the asset family \"{}\".",
                    ctx.family.code
                ),
            ));
            continue;
        };
        for v in list.as_array().into_iter().flatten() {
            let locale = v["locale"].as_str().map(str::to_string);
            let channel = v["channel"].as_str().map(str::to_string);
            let before = rules.len();
            check_scopes(
                attr,
                locale.as_deref(),
                channel.as_deref(),
                ctx.fixture,
                &prop,
                &mut rules,
            );
            let data = v["data"].clone();
            if !data.is_null() {
                check_data(attr, &data, ctx, &prop, &mut rules);
            }
            if rules.len() == before {
                writes.push(ValueWrite {
                    attribute: attr_code.clone(),
                    locale,
                    channel,
                    data,
                });
            }
        }
    }
    if !rules.is_empty() {
        return Err(ItemError {
            message: BUSINESS_RULES,
            errors: rules,
        });
    }
    Ok(ValidAsset {
        code,
        values: writes,
    })
}

fn data_schema(attr: &AttributeDef, data: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if data.is_null() {
        return;
    }
    match attr.kind {
        AttributeType::Boolean => {
            if !data.is_boolean() {
                out.push((path.to_string(), found(data, "a boolean or a null")));
            }
        }
        AttributeType::MultipleOptions => match data {
            Value::Array(items) => {
                for (j, it) in items.iter().enumerate() {
                    if !it.is_string() {
                        out.push((format!("{path}[{j}]"), found(it, "a string")));
                    }
                }
            }
            _ => out.push((path.to_string(), found(data, "an array or a null"))),
        },
        // Number data travels as a string ("1"), like text, dates, option codes and media keys.
        _ => {
            if !data.is_string() {
                out.push((path.to_string(), found(data, "a string or a null")));
            }
        }
    }
}

fn check_scopes(
    attr: &AttributeDef,
    locale: Option<&str>,
    channel: Option<&str>,
    fixture: &Fixture,
    prop: &str,
    out: &mut Vec<(String, String)>,
) {
    let code = &attr.code;
    match (attr.value_per_locale, locale) {
        (true, None) => out.push((
            prop.to_string(),
            format!("The attribute \"{code}\" has a value per locale: a locale is required."),
        )),
        (true, Some(l)) if !fixture.locales.iter().any(|x| x == l) => {
            out.push((prop.to_string(), format!("The locale \"{l}\" is not activated.")))
        }
        (false, Some(_)) => out.push((
            prop.to_string(),
            format!(
                "The attribute \"{code}\" does not have a value per locale: the locale must be null."
            ),
        )),
        _ => {}
    }
    match (attr.value_per_channel, channel) {
        (true, None) => out.push((
            prop.to_string(),
            format!("The attribute \"{code}\" has a value per channel: a channel is required."),
        )),
        (true, Some(c)) if !fixture.channels.iter().any(|x| x == c) => {
            out.push((prop.to_string(), format!("The channel \"{c}\" does not exist.")))
        }
        (false, Some(_)) => out.push((
            prop.to_string(),
            format!(
                "The attribute \"{code}\" does not have a value per channel: the channel must be null."
            ),
        )),
        _ => {}
    }
}

fn check_data(
    attr: &AttributeDef,
    data: &Value,
    ctx: &Ctx<'_>,
    prop: &str,
    out: &mut Vec<(String, String)>,
) {
    let code = &attr.code;
    let mut err = |m: String| out.push((prop.to_string(), m));
    match attr.kind {
        AttributeType::Text => {
            let s = data.as_str().unwrap_or_default();
            if let Some(max) = attr.max_characters
                && s.chars().count() > max as usize
            {
                err(format!(
                    "This value is too long. It should have {max} characters or less."
                ));
            }
            match attr.validation_rule.as_deref() {
                Some("regexp") => {
                    let re = ctx.regexes.get(&(ctx.family.code.clone(), code.clone()));
                    if re.is_some_and(|re| !re.is_match(s)) {
                        err(format!(
                            "The value \"{s}\" does not match the regular expression \"{}\" of the attribute \"{code}\".",
                            attr.validation_regexp.as_deref().unwrap_or_default()
                        ));
                    }
                }
                Some("email") if !is_email(s) => {
                    err(format!("The value \"{s}\" is not a valid email address."))
                }
                Some("url") if !is_url(s) => err(format!("The value \"{s}\" is not a valid URL.")),
                _ => {}
            }
        }
        AttributeType::Number => {
            let s = data.as_str().unwrap_or_default();
            let (int, frac) = s
                .strip_prefix('-')
                .unwrap_or(s)
                .split_once('.')
                .unwrap_or((s.strip_prefix('-').unwrap_or(s), ""));
            let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
            let numeric = digits(int) && (frac.is_empty() || digits(frac)) && !s.ends_with('.');
            if !numeric {
                err(format!(
                    "The value \"{s}\" of attribute \"{code}\" is not a number."
                ));
            } else if !frac.is_empty() && !attr.decimals_allowed.unwrap_or(false) {
                err(format!(
                    "The value \"{s}\" of attribute \"{code}\" should be an integer: decimals are not allowed."
                ));
            } else if let Ok(n) = s.parse::<f64>() {
                let bound = |b: &Option<String>| b.as_deref().and_then(|x| x.parse::<f64>().ok());
                if let Some(min) = bound(&attr.min_value)
                    && n < min
                {
                    err(format!(
                        "The value \"{s}\" of attribute \"{code}\" should be greater than or equal to {min}."
                    ));
                }
                if let Some(max) = bound(&attr.max_value)
                    && n > max
                {
                    err(format!(
                        "The value \"{s}\" of attribute \"{code}\" should be less than or equal to {max}."
                    ));
                }
            }
        }
        AttributeType::Boolean => {}
        AttributeType::Date => {
            let s = data.as_str().unwrap_or_default();
            if crate::time::parse_iso8601(s).is_none() {
                err(format!(
                    "The date \"{s}\" of attribute \"{code}\" is not a valid ISO 8601 date."
                ));
            }
        }
        AttributeType::SingleOption | AttributeType::MultipleOptions => {
            let opts = ctx.options.get(&(ctx.family.code.clone(), code.clone()));
            let exists = |o: &str| opts.is_some_and(|l| l.iter().any(|x| x.code == o));
            let wanted: Vec<&str> = match data {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            for o in wanted {
                if !exists(o) {
                    err(format!(
                        "The option \"{o}\" does not exist for the attribute \"{code}\"."
                    ));
                }
            }
        }
        AttributeType::MediaLink => {
            let s = data.as_str().unwrap_or_default();
            // Akeneo skips the URL checks for youtube/vimeo links (they are ids, not URLs).
            let checked = !matches!(attr.media_type.as_deref(), Some("youtube" | "vimeo"));
            let full = format!("{}{s}", attr.prefix.as_deref().unwrap_or_default());
            if checked && let Some(m) = media_link_error(&full) {
                err(format!("{m} (attribute \"{code}\")"));
            }
        }
        AttributeType::MediaFile => {
            let s = data.as_str().unwrap_or_default();
            match (ctx.media_files)(s) {
                None => err(format!("The media file \"{s}\" does not exist.")),
                Some(filename) => {
                    let allowed = attr.allowed_extensions.as_deref().unwrap_or_default();
                    let ext = filename
                        .rsplit_once('.')
                        .map(|(_, e)| e.to_ascii_lowercase());
                    if !allowed.is_empty()
                        && !ext
                            .as_deref()
                            .is_some_and(|e| allowed.iter().any(|a| a.eq_ignore_ascii_case(e)))
                    {
                        err(format!(
                            "The file extension \"{}\" is not allowed for the attribute \"{code}\"; allowed: {}.",
                            ext.unwrap_or_default(),
                            allowed.join(", ")
                        ));
                    }
                }
            }
        }
    }
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn is_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://"))
        && extract_host(s).is_some_and(|h| !h.is_empty())
        && !s.contains(char::is_whitespace)
}

/// Host part of `scheme://[user@]host[:port][/...]`, lower-cased, brackets removed for IPv6.
fn extract_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    Some(host.to_ascii_lowercase())
}

/// Akeneo's media link rule (SSRF protection): a value containing `://` must use http(s)
/// and must not point to internal hosts; relative values are accepted.
pub(crate) fn media_link_error(full: &str) -> Option<String> {
    let (scheme, _) = full.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Some(format!(
            "The protocol \"{scheme}\" is not allowed for a media link; allowed protocols: http, https."
        ));
    }
    let host = extract_host(full).unwrap_or_default();
    let denied_name = host.is_empty()
        || host == "localhost"
        || host.ends_with(".localhost")
        || ["elasticsearch", "memcached", "object-storage", "mysql"].contains(&host.as_str());
    let denied_ip = if let Ok(ip) = host.parse::<Ipv4Addr>() {
        private_v4(ip)
    } else if let Ok(ip) = host.parse::<Ipv6Addr>() {
        let seg = ip.segments();
        ip.is_loopback()
            || ip.is_unspecified()
            || (seg[0] & 0xfe00) == 0xfc00
            || (seg[0] & 0xffc0) == 0xfe80
            || ip.to_ipv4_mapped().is_some_and(private_v4)
    } else {
        false
    };
    (denied_name || denied_ip)
        .then(|| format!("The host \"{host}\" is not allowed for a media link."))
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_link_hosts() {
        assert!(media_link_error("https://res.example.com/a.jpg").is_none());
        assert!(media_link_error("a.jpg").is_none());
        for bad in [
            "ftp://res.example.com/a",
            "http://localhost/a",
            "http://127.0.0.2:8080/a",
            "http://user@10.1.2.3/a",
            "http://172.20.0.1/a",
            "http://192.168.1.1/a",
            "http://169.254.169.254/latest",
            "http://[::1]/a",
            "http://[fd00::1]/a",
            "http://ELASTICSEARCH:9200/",
            "https://mysql/",
            "http://object-storage/x",
            "http://memcached/x",
        ] {
            assert!(media_link_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn codes() {
        assert!(is_valid_code("abc_DEF_09"));
        assert!(!is_valid_code("a-b"));
        assert!(!is_valid_code(""));
        assert!(!is_valid_code("é"));
    }
}
