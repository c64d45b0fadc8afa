//! DAM values → Akeneo `data`, per attribute type (docs/akeneo-api.md §3.4).

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use super::code::option_code;
use super::source::scalar_text;
use crate::akeneo::{AssetAttribute, AttributeType, FamilyStructure};

/// What a source produced for one asset: a JSON value from the DAM or a fixed value, or the
/// text of a rendered template.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    Json(&'a Value),
    Text(&'a str),
}

pub(super) enum Coerced {
    Data(Value),
    /// A media_file value: the consumer uploads this URL and writes the returned file key.
    Upload(String),
}

/// How a value rule shapes its input, resolved at load time.
#[derive(Debug, Clone)]
pub(super) struct Shaping {
    /// Joins a list written to a text attribute.
    pub separator: String,
    /// Splits a delimited string into several options (multiple_options only).
    pub split: Option<String>,
    /// DAM value → written value (an option code, a fixed text...), looked up before any
    /// normalisation.
    pub map: Option<HashMap<String, String>>,
}

impl Shaping {
    fn apply<'a>(&'a self, s: &'a str) -> &'a str {
        match &self.map {
            Some(m) => m.get(s).map_or(s, String::as_str),
            None => s,
        }
    }
}

/// Option lookups for one asset; missing options are either collected (to be created by the
/// consumer) or refused.
pub(super) struct Options<'a> {
    pub structure: &'a FamilyStructure,
    pub create_missing: bool,
    pub missing: &'a mut Vec<(String, String)>,
}

pub(super) fn coerce(
    input: Input<'_>,
    attr: &AssetAttribute,
    shaping: &Shaping,
    options: &mut Options<'_>,
) -> Result<Coerced, String> {
    let data = match attr.kind {
        AttributeType::Text => {
            let text = to_text(input, shaping)?;
            if let Some(max) = attr.max_characters {
                let n = text.chars().count();
                if n as u64 > max {
                    return Err(format!(
                        "text of {n} characters is longer than max_characters {max}"
                    ));
                }
            }
            Value::String(text)
        }
        AttributeType::Number => {
            if let Input::Json(v @ Value::Bool(_)) = input {
                return Err(format!("expected a number, got {}", kind_name(v)));
            }
            let s = single_text(input, shaping, "a number")?;
            Value::String(number(&s, attr.decimals_allowed == Some(true))?)
        }
        AttributeType::Boolean => Value::Bool(boolean(input, shaping)?),
        AttributeType::Date => {
            let s = single_text(input, shaping, "a date")?;
            Value::String(iso_date(&s).ok_or_else(|| {
                format!("\"{s}\" is not a date (expected RFC 3339 or YYYY-MM-DD)")
            })?)
        }
        AttributeType::SingleOption => {
            let s = scalar(input, "one option")?;
            Value::String(option(&attr.code, &s, shaping, options)?)
        }
        AttributeType::MultipleOptions => {
            let mut codes: Vec<Value> = Vec::new();
            let mut push = |s: &str| -> Result<(), String> {
                let code = option(&attr.code, s, shaping, options)?;
                if !codes.iter().any(|c| c.as_str() == Some(code.as_str())) {
                    codes.push(Value::String(code));
                }
                Ok(())
            };
            match input {
                Input::Json(Value::Array(items)) => {
                    for item in items {
                        let s = scalar_text(item).ok_or(
                            "a list of options may only hold strings, numbers or booleans",
                        )?;
                        push(&s)?;
                    }
                }
                _ => {
                    let s = scalar(input, "options")?;
                    match &shaping.split {
                        Some(sep) => {
                            for part in s.split(sep.as_str()).filter(|p| !p.trim().is_empty()) {
                                push(part.trim())?;
                            }
                        }
                        None => push(&s)?,
                    }
                }
            }
            Value::Array(codes)
        }
        AttributeType::MediaLink => {
            let s = single_text(input, shaping, "a link")?;
            Value::String(strip_affixes(&s, attr).to_string())
        }
        AttributeType::MediaFile => {
            let s = single_text(input, shaping, "a file URL")?;
            if s.trim().is_empty() {
                return Err("empty file URL".into());
            }
            return Ok(Coerced::Upload(s.into_owned()));
        }
        AttributeType::Record => {
            let s = single_text(input, shaping, "a record code")?;
            Value::String(s.into_owned())
        }
        AttributeType::AutoTagging | AttributeType::Unknown => {
            return Err(format!(
                "attributes of type {:?} cannot be written",
                attr.kind
            ));
        }
    };
    Ok(Coerced::Data(data))
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A single scalar as text, before the value map.
fn scalar<'a>(input: Input<'a>, expected: &str) -> Result<Cow<'a, str>, String> {
    match input {
        Input::Text(s) => Ok(Cow::Borrowed(s)),
        Input::Json(v) => {
            scalar_text(v).ok_or_else(|| format!("expected {expected}, got {}", kind_name(v)))
        }
    }
}

/// A single scalar as text, after the value map.
fn single_text<'a>(
    input: Input<'a>,
    shaping: &'a Shaping,
    expected: &str,
) -> Result<Cow<'a, str>, String> {
    Ok(match scalar(input, expected)? {
        Cow::Borrowed(s) => Cow::Borrowed(shaping.apply(s)),
        Cow::Owned(s) => Cow::Owned(shaping.apply(&s).to_string()),
    })
}

fn to_text(input: Input<'_>, shaping: &Shaping) -> Result<String, String> {
    match input {
        Input::Json(Value::Array(items)) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                let s = scalar_text(item)
                    .ok_or_else(|| format!("list element {i} is {}, not text", kind_name(item)))?;
                if i > 0 {
                    out.push_str(&shaping.separator);
                }
                out.push_str(shaping.apply(&s));
            }
            Ok(out)
        }
        _ => Ok(single_text(input, shaping, "text")?.into_owned()),
    }
}

/// Akeneo numbers are decimal strings without exponent (`"12"`, `"-3.5"`).
fn number(s: &str, decimals_allowed: bool) -> Result<String, String> {
    let t = s.trim();
    let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
    let negative = t.starts_with('-');
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !(frac.is_empty() || digits(frac)) || unsigned.ends_with('.') {
        return Err(format!("\"{s}\" is not a number"));
    }
    let sign = if negative { "-" } else { "" };
    if frac.is_empty() || (!decimals_allowed && frac.bytes().all(|b| b == b'0')) {
        Ok(format!("{sign}{int}"))
    } else if decimals_allowed {
        Ok(format!("{sign}{int}.{frac}"))
    } else {
        Err(format!(
            "\"{s}\" is not an integer (decimals are not allowed)"
        ))
    }
}

fn boolean(input: Input<'_>, shaping: &Shaping) -> Result<bool, String> {
    if let Input::Json(Value::Bool(b)) = input {
        return Ok(*b);
    }
    let s = single_text(input, shaping, "a boolean")?;
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!(
            "\"{s}\" is not a boolean (expected true/false, yes/no, 1/0)"
        )),
    }
}

/// RFC 3339 date-time or `YYYY-MM-DD` → `YYYY-MM-DDTHH:MM:SS±HH:MM` (fractions dropped, `Z`
/// written `+00:00`, a bare date taken as midnight UTC), so equal instants written the same way
/// hash the same.
pub(super) fn iso_date(s: &str) -> Option<String> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>, max: u32| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok().filter(|&n| n <= max)
    };
    let (y, m, d) = (num(0..4, 9999)?, num(5..7, 12)?, num(8..10, 31)?);
    if m == 0 || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    if b.len() == 10 {
        return Some(format!("{y:04}-{m:02}-{d:02}T00:00:00+00:00"));
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(11..13, 23)?, num(14..16, 59)?, num(17..19, 60)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => "+00:00".to_string(),
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return None;
            }
            let oh: u32 = rest[1..3].parse().ok().filter(|&h| h <= 23)?;
            let om: u32 = rest[4..6].parse().ok().filter(|&m| m <= 59)?;
            format!("{}{oh:02}:{om:02}", ob[0] as char)
        }
    };
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{offset}"
    ))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A DAM value → an option code of `attr`: the value map first, else the normalised value;
/// the PIM's spelling wins when the option exists under another case.
fn option(
    attr: &str,
    raw: &str,
    shaping: &Shaping,
    options: &mut Options<'_>,
) -> Result<String, String> {
    // A mapped value is the author's code (checked at load), used as is.
    let code = match shaping.map.as_ref().and_then(|m| m.get(raw)) {
        Some(mapped) => mapped.clone(),
        None => option_code(raw),
    };
    if code.is_empty() || code.bytes().all(|b| b == b'_') {
        return Err(format!("\"{raw}\" gives no usable option code"));
    }
    if let Some(existing) = options
        .structure
        .options
        .get(attr)
        .and_then(|os| os.iter().find(|o| o.code.eq_ignore_ascii_case(&code)))
    {
        return Ok(existing.code.clone());
    }
    if !options.create_missing {
        return Err(format!(
            "option \"{code}\" does not exist (create_missing_options = false)"
        ));
    }
    if !options.missing.iter().any(|(a, c)| a == attr && *c == code) {
        options.missing.push((attr.to_string(), code.clone()));
    }
    Ok(code)
}

/// media_link data is the part between the attribute's prefix and suffix; a value that does
/// not carry them (already the middle part, e.g. `{{public_id}}.jpg`) is kept.
fn strip_affixes<'a>(s: &'a str, attr: &AssetAttribute) -> &'a str {
    let mut out = s;
    if let Some(p) = attr.prefix.as_deref().filter(|p| !p.is_empty()) {
        out = out.strip_prefix(p).unwrap_or(out);
    }
    if let Some(x) = attr.suffix.as_deref().filter(|x| !x.is_empty()) {
        out = out.strip_suffix(x).unwrap_or(out);
    }
    out
}
