//! gatehouse-config: from TOML text to a validated, immutable [`Config`].
//!
//! - [`raw`]: the TOML schema exactly as users write it, every checked value wrapped in
//!   `Spanned` so errors can point at its line and column.
//! - [`model`]: the validated model the data path is built from (addresses parsed, durations
//!   typed, names resolved). It serializes to JSON for the admin `/config` page.
//! - [`validate`]: raw -> model. It collects *every* error it finds rather than stopping at the
//!   first, each with `file:line:col`, the field path and a hint at the fix.
//! - [`units`]: durations ("250ms", "30s") and byte sizes ("64KiB", "1GiB").
//! - [`error`]: [`ConfigError`] / [`ConfigErrors`].
//!
//! This crate reads the file and nothing else: no sockets, no DNS.

pub mod error;
pub mod model;
pub mod raw;
pub mod units;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use std::path::Path;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors::single(ConfigError::without_position(
            &origin,
            "",
            format!("cannot read the config file: {err}"),
        ))
    })?;
    parse(&source, &origin)
}

/// Parses and validates config text; `origin` names it in error messages (usually the file path).
pub fn parse(source: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig = toml::from_str(source)
        .map_err(|err| ConfigErrors::single(ConfigError::from_toml(origin, source, &err)))?;
    validate::validate(&raw, source, origin)
}
