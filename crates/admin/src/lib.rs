//! gatehouse-admin: the operator's window into a running gatehouse.
//!
//! Endpoints:
//! - `/healthz`: 200 "ok" while the process serves (load balancers in front of gatehouse probe it);
//! - `/metrics`: Prometheus text exposition of every gatehouse metric;
//! - `/config`: the effective configuration snapshot as JSON, with its generation number;
//! - `/clusters` (module `clusters`): every endpoint's live state: health, ejection, breaker, load;
//! - `/faults` (module `faults`): runtime fault injection per route and cluster (writes need the token);
//! - `/cache` (module `cache`): the HTTP cache's size, and purges (writes need the token).
//! - `/registry` (module `registry`): the service registry: list, register, heartbeat, deregister
//!   (writes need the token).
//!
//! Security by default: the admin API listens on loopback unless a token is configured (config
//! validation enforces that); with a token, every request off loopback and every write needs
//! `Authorization: Bearer TOKEN`.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod cache;
mod clusters;
mod faults;
mod registry;
use gatehouse_discovery::ServiceDirectory;
use gatehouse_http::Gateway;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AdminState {
    gateway: Arc<Gateway>,
    directory: ServiceDirectory,
    token: Option<Arc<str>>,
    on_loopback: bool,
}

/// Serves the admin API on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    directory: ServiceDirectory,
    token: Option<String>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let on_loopback = listener.local_addr()?.ip().is_loopback();
    let state = AdminState {
        gateway,
        directory,
        token: token.map(Arc::from),
        on_loopback,
    };
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Binds the admin listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    gatehouse_net::bind_listener(addr)
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/clusters", get(clusters::list))
        .route("/faults", get(faults::list))
        .route("/cache", get(cache::stats))
        .route("/cache/purge", axum::routing::post(cache::purge))
        .route(
            "/faults/{target}/{name}",
            axum::routing::put(faults::put).delete(faults::delete),
        )
        .route("/registry/services", get(registry::list))
        .route("/registry/services/{service}", get(registry::service))
        .route(
            "/registry/services/{service}/instances/{id}",
            axum::routing::put(registry::register).delete(registry::deregister),
        )
        .route(
            "/registry/services/{service}/instances/{id}/heartbeat",
            axum::routing::post(registry::heartbeat),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // The cache's totals are read when asked for, not kept up to date per request.
    let cache = state.gateway.cache().stats();
    let metrics = state.gateway.metrics();
    metrics
        .cache_bytes
        .set(i64::try_from(cache.bytes).unwrap_or(i64::MAX));
    metrics
        .cache_objects
        .set(i64::try_from(cache.urls).unwrap_or(i64::MAX));
    metrics
        .cache_evictions
        .set(i64::try_from(cache.evictions).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.gateway.metrics().encode(),
    )
}

async fn config(State(state): State<AdminState>) -> impl IntoResponse {
    let snapshot = state.gateway.snapshot();
    let body = serde_json::json!({
        "generation": snapshot.generation,
        "config": &*snapshot.config,
        "listeners": state
            .gateway
            .bound_addresses()
            .into_iter()
            .map(|(name, addr)| serde_json::json!({ "name": name, "bound": addr.to_string() }))
            .collect::<Vec<_>>(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
}

/// Reads are open on loopback; writes, and anything off loopback, need the bearer token.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    if is_read && state.on_loopback {
        return next.run(request).await;
    }
    match &state.token {
        Some(token) if bearer_matches(request.headers(), token) => next.run(request).await,
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "401 Unauthorized: send Authorization: Bearer <admin.token>\n",
        )
            .into_response(),
        None => (
            StatusCode::FORBIDDEN,
            "403 Forbidden: set admin.token in the config to enable admin writes\n",
        )
            .into_response(),
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_compare_exactly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-token-123456".parse().unwrap(),
        );
        assert!(bearer_matches(&h, "s3cret-token-123456"));
        assert!(!bearer_matches(&h, "s3cret-token-12345"));
        assert!(!bearer_matches(&HeaderMap::new(), "x"));
    }
}
