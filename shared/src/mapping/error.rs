//! Load errors: every problem in a mapping file is reported as `file:line:column: key: message`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem found while loading a mapping file, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadIssue {
    /// The file name (or any label the caller gave), e.g. `mapping.toml`.
    pub origin: String,
    /// 1-based line and column; `None` when the parser gave no position.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key of the offending entry, e.g. `route[1].values.alt_text`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for LoadIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid mapping; all static problems found are listed, in file order.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<LoadIssue>),
}

impl MappingError {
    /// The located issues (empty for I/O errors).
    pub fn issues(&self) -> &[LoadIssue] {
        match self {
            MappingError::Io { .. } => &[],
            MappingError::Invalid(issues) => issues,
        }
    }
}

fn join_lines(issues: &[LoadIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns byte offsets into 1-based line/column for messages.
pub(super) struct Locator<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn issue(&self, span: Option<Range<usize>>, key: &str, message: String) -> LoadIssue {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = self.line_col(span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        LoadIssue {
            origin: self.origin.to_string(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // Spans are byte offsets; snap back to a char boundary before slicing.
        let mut at = offset;
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.text[..at];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}
