//! `/clusters`: what the balancer sees right now, per cluster and endpoint: whether each endpoint
//! is in rotation and why not (failing health checks, ejected, breaker open), its load, and the
//! cluster's breaker and retry budget.

use crate::AdminState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use gatehouse_resilience::breaker::State as BreakerState;
use serde_json::{Value, json};

pub async fn list(State(state): State<AdminState>) -> impl IntoResponse {
    let snapshot = state.gateway.snapshot();
    let now = state.gateway.clock().now_nanos();
    let clusters: Vec<Value> = snapshot
        .clusters
        .iter()
        .map(|cluster| {
            let endpoints: Vec<Value> = cluster
                .endpoints
                .iter()
                .map(|e| {
                    let until = e.health.ejected_until();
                    let ejected_ms = (until > now).then(|| (until - now) / 1_000_000);
                    let breaker = e.breaker.as_ref().map(|b| breaker_state(b.state()));
                    json!({
                        "address": e.id.addr.to_string(),
                        "in_rotation": e.in_rotation(now),
                        "health_checks_pass": e.health.is_passing(),
                        "ejected_for_ms": ejected_ms,
                        "breaker": breaker,
                        "in_flight": e.stats.in_flight(),
                    })
                })
                .collect();
            json!({
                "name": cluster.name.as_str(),
                "breaker": cluster.resilience.breaker.as_ref().map(|b| breaker_state(b.state())),
                "retry_budget_available": cluster.resilience.budget.available(now),
                "endpoints": endpoints,
            })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(
            &json!({ "generation": snapshot.generation, "clusters": clusters }),
        )
        .unwrap_or_default(),
    )
}

fn breaker_state(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}
