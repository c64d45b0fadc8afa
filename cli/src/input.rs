//! Reads a file of Akeneo assets: a JSON array or NDJSON (one asset per line).
//!
//! The whole file is parsed before anything is sent, so a typo on line 9,000 does not leave
//! the PIM half-updated; the error names the line.

use shared::akeneo::Asset;

/// A parse failure with its 1-based line (and column when known).
#[derive(Debug, PartialEq, Eq)]
pub struct InputError {
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}, column {}: {}", self.line, c, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

pub fn parse_assets(text: &str) -> Result<Vec<Asset>, InputError> {
    let trimmed = text.trim_start_matches('\u{feff}');
    let assets = if trimmed.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Asset>>(trimmed).map_err(|e| InputError {
            line: e.line(),
            column: Some(e.column()),
            message: explain(&e),
        })?
    } else {
        let mut assets = Vec::new();
        for (n, line) in trimmed.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let asset = serde_json::from_str::<Asset>(line).map_err(|e| InputError {
                line: n + 1,
                column: Some(e.column()),
                message: explain(&e),
            })?;
            assets.push(asset);
        }
        assets
    };
    if assets.is_empty() {
        return Err(InputError {
            line: 1,
            column: None,
            message: "the file holds no asset; expected a JSON array or one JSON asset per line"
                .into(),
        });
    }
    Ok(assets)
}

fn explain(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is printed separately.
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_string();
    format!("{text} (each asset is {{\"code\": \"...\", \"values\": {{...}}}})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_json_array() {
        let a = parse_assets(r#"[{"code":"a","values":{}},{"code":"b","values":{"t":[{"locale":null,"channel":null,"data":"x"}]}}]"#)
            .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].values["t"][0].data, "x");
    }

    #[test]
    fn reads_ndjson_and_skips_blank_lines() {
        let a = parse_assets("{\"code\":\"a\"}\n\n{\"code\":\"b\",\"values\":{}}\n").unwrap();
        assert_eq!(
            a.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn names_the_bad_ndjson_line() {
        let err = parse_assets("{\"code\":\"a\"}\n{\"code\":\"b\"}\n{\"code\": 42}\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("expected a string"), "{err}");
        let err = parse_assets("{\"code\":\"a\"}\n{\"code\":\"b\",\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn names_the_bad_array_line() {
        let text = "[\n  {\"code\": \"a\"},\n  {\"code\": \"b\", \"valeus\": {}}\n]";
        let err = parse_assets(text).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unknown field `valeus`"), "{err}");
    }

    #[test]
    fn refuses_an_empty_file() {
        assert!(parse_assets("").is_err());
        assert!(parse_assets("[]").is_err());
    }
}
