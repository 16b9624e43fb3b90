//! `/cache`: the shared HTTP cache.
//!
//! - `GET /cache`: what the store holds (bytes, URLs, evictions, its size);
//! - `POST /cache/purge` with a JSON object: removes what it selects, and answers how many
//!   URLs went. Fields (all optional; none: everything): `route` (a route name), `host`
//!   (compared without case, port included as clients send it), `path` (path and query,
//!   exactly; a trailing `*` selects every path it prefixes). Writes need the admin token; a
//!   bad body gets 400 naming the field.

use crate::AdminState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_cache::PurgeFilter;
use serde_json::{Value, json};

pub async fn stats(State(state): State<AdminState>) -> Response {
    let stats = state.gateway.cache().stats();
    json_response(
        StatusCode::OK,
        &json!({
            "bytes": stats.bytes,
            "urls": stats.urls,
            "evictions": stats.evictions,
            "max_size": stats.max_size,
        }),
    )
}

pub async fn purge(State(state): State<AdminState>, body: String) -> Response {
    let filter = match parse_filter(&body) {
        Ok(filter) => filter,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request: {message}\n"),
            )
                .into_response();
        }
    };
    let purged = state.gateway.cache().purge(&filter);
    tracing::info!(?filter, purged, "cache purged");
    json_response(StatusCode::OK, &json!({ "purged": purged }))
}

/// Parses a purge body, naming the first bad field. An empty body purges everything.
fn parse_filter(body: &str) -> Result<PurgeFilter, String> {
    if body.trim().is_empty() {
        return Ok(PurgeFilter::default());
    }
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the body must be a JSON object".into());
    };
    const KNOWN: [&str; 3] = ["route", "host", "path"];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}; known: {}",
            KNOWN.join(", ")
        ));
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name}: must be a non-empty string")),
        }
    };
    let target = text("path")?;
    if let Some(path) = &target
        && !path.starts_with('/')
    {
        return Err(format!("path: {path:?} must start with '/'"));
    }
    Ok(PurgeFilter {
        route: text("route")?,
        host: text("host")?,
        target,
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(body).unwrap_or_default(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_filter;

    #[test]
    fn purge_bodies_are_checked_field_by_field() {
        let all = parse_filter("").unwrap();
        assert!(all.route.is_none() && all.host.is_none() && all.target.is_none());
        let some = parse_filter(r#"{"host":"a.test","path":"/x/*"}"#).unwrap();
        assert_eq!(some.host.as_deref(), Some("a.test"));
        assert_eq!(some.target.as_deref(), Some("/x/*"));
        for (body, field) in [
            (r#"{"path":"x"}"#, "path"),
            (r#"{"host":3}"#, "host"),
            (r#"{"route":""}"#, "route"),
            (r#"{"url":"/"}"#, "url"),
            ("[1]", "object"),
            ("nope", "JSON"),
        ] {
            let error = parse_filter(body).unwrap_err();
            assert!(error.contains(field), "{body}: {error}");
        }
    }
}
