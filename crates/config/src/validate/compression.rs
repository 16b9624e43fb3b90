//! Validation of `[routes.compression]`. Defaults and their reasons are in docs/config.md.

use super::Validator;
use crate::model::{Compression, ContentCoding};
use crate::raw::RawCompression;
use toml::Spanned;

/// Below this a compressed body saves too little to be worth the CPU and the extra headers.
const DEFAULT_MIN_SIZE: u64 = 512;

/// Text-like types that compress well. Images, video, archives and fonts are compressed
/// already.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
];

impl Validator<'_> {
    pub(super) fn compression(
        &mut self,
        spanned: &Spanned<RawCompression>,
        field: &str,
    ) -> Option<Compression> {
        let raw = spanned.get_ref();
        if raw.enabled == Some(false) {
            return None;
        }
        let algorithms = match &raw.algorithms {
            None => vec![
                ContentCoding::Zstd,
                ContentCoding::Brotli,
                ContentCoding::Gzip,
            ],
            Some(list) => {
                let mut algorithms = Vec::new();
                for name in list {
                    let coding = match name.get_ref().to_ascii_lowercase().as_str() {
                        "zstd" => ContentCoding::Zstd,
                        "br" | "brotli" => ContentCoding::Brotli,
                        "gzip" => ContentCoding::Gzip,
                        other => {
                            self.error(
                                name,
                                &format!("{field}.algorithms"),
                                format!(
                                    "unknown algorithm {other:?}; use \"zstd\", \"br\" or \"gzip\""
                                ),
                            );
                            continue;
                        }
                    };
                    if !algorithms.contains(&coding) {
                        algorithms.push(coding);
                    }
                }
                if algorithms.is_empty() && !list.is_empty() {
                    return None; // each bad name was reported
                }
                if list.is_empty() {
                    self.error(
                        spanned,
                        &format!("{field}.algorithms"),
                        "is empty; list at least one, or set enabled = false",
                    );
                    return None;
                }
                algorithms
            }
        };
        let min_size = match &raw.min_size {
            None => DEFAULT_MIN_SIZE,
            Some(v) => self.size_or(Some(v), &format!("{field}.min_size"), DEFAULT_MIN_SIZE),
        };
        let content_types = match &raw.content_types {
            None => DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            Some(list) => list
                .iter()
                .filter_map(|t| {
                    let text = t.get_ref().trim().to_ascii_lowercase();
                    let valid = text.split_once('/').is_some_and(|(ty, sub)| {
                        !ty.is_empty()
                            && !sub.is_empty()
                            && text.bytes().all(|b| b.is_ascii_graphic() && b != b';')
                    });
                    if !valid {
                        self.error(
                            t,
                            &format!("{field}.content_types"),
                            format!(
                                "{text:?} is not a media type like \"text/html\" or \"text/*\""
                            ),
                        );
                    }
                    valid.then_some(text)
                })
                .collect(),
        };
        Some(Compression {
            algorithms,
            min_size,
            content_types,
        })
    }
}
