//! Configuration errors that point at the offending text.

use std::fmt;
use std::ops::Range;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other origin) the text came from.
    pub origin: String,
    /// 1-based line and column of the offending value, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the field, e.g. `clusters[0].endpoints[1].address`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// An error located at a byte range of `source`.
    pub fn at(
        origin: &str,
        source: &str,
        span: Range<usize>,
        field: &str,
        message: String,
    ) -> Self {
        Self {
            origin: origin.to_owned(),
            position: Some(line_col(source, span.start)),
            field: field.to_owned(),
            message,
        }
    }

    pub fn without_position(origin: &str, field: &str, message: String) -> Self {
        Self {
            origin: origin.to_owned(),
            position: None,
            field: field.to_owned(),
            message,
        }
    }

    /// Converts a TOML syntax or type error.
    pub fn from_toml(origin: &str, source: &str, err: &toml::de::Error) -> Self {
        // toml's message can span several lines with a source excerpt; the first line is the gist.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        Self {
            origin: origin.to_owned(),
            position: err.span().map(|span| line_col(source, span.start)),
            field: String::new(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in one config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based (line, column) of a byte offset; columns count characters, not bytes.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 11), (2, 6));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn display_names_file_position_and_field() {
        let e = ConfigError::at("gw.toml", "x\ny = 1", 2..3, "y", "bad".into());
        assert_eq!(e.to_string(), "gw.toml:2:1: y: bad");
    }
}
