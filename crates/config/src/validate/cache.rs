//! Validation of the HTTP cache settings: the shared store (`[cache]`) and each route's use of
//! it (`[routes.cache]`). Defaults and their reasons are in docs/cache.md.

use super::Validator;
use crate::model::{CacheSettings, RouteCache};
use crate::raw::{RawCache, RawRouteCache};
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn cache(&mut self, raw: Option<&Spanned<RawCache>>) -> CacheSettings {
        let defaults = CacheSettings::default();
        let Some(raw) = raw else { return defaults };
        CacheSettings {
            max_size: self.size_or(
                raw.get_ref().max_size.as_ref(),
                "cache.max_size",
                defaults.max_size,
            ),
        }
    }

    /// A route's cache; None when absent or `enabled = false`. `store` is the validated
    /// `[cache]`, which a single object must fit in.
    pub(super) fn route_cache(
        &mut self,
        raw: Option<&Spanned<RawRouteCache>>,
        field: &str,
        store: &CacheSettings,
    ) -> Option<RouteCache> {
        let raw = raw?.get_ref();
        let defaults = RouteCache::default();
        let field = format!("{field}.cache.max_object_size");
        let max_object_size = self.size_or(
            raw.max_object_size.as_ref(),
            &field,
            defaults.max_object_size,
        );
        if let Some(v) = &raw.max_object_size
            && max_object_size > store.max_size
        {
            self.error(
                v,
                &field,
                format!(
                    "max_object_size ({max_object_size} bytes) is larger than the whole cache ([cache] max_size = {} bytes); lower it or raise [cache] max_size",
                    store.max_size
                ),
            );
        }
        if !raw.enabled.unwrap_or(true) {
            return None;
        }
        Some(RouteCache {
            // An object larger than the store could never be kept.
            max_object_size: max_object_size.min(store.max_size),
        })
    }
}
