//! `/registry`: the embedded service registry.
//!
//! - `GET /registry/services`: every service with its instances and their health;
//! - `GET /registry/services/SERVICE`: one service (404 when it has no instances);
//! - `PUT /registry/services/SERVICE/instances/ID` with a JSON body
//!   (`{"address": "10.0.0.5", "port": 8080, "weight": 1, "tags": [], "region": "eu",
//!   "ttl": "30s"}`): registers or replaces an instance (201 created, 200 replaced);
//! - `POST /registry/services/SERVICE/instances/ID/heartbeat`: renews its lease;
//! - `DELETE /registry/services/SERVICE/instances/ID`: deregisters it (204).
//!
//! Writes need the admin token. A bad body gets 400 with `{"error", "field"}`; an unknown
//! instance 404; an instance from the config file 409 (change it there).

use crate::AdminState;
use crate::faults::json_response;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_discovery::{Registered, RegistryError, registration};
use serde_json::json;

pub async fn list(State(state): State<AdminState>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(state.directory.view()).unwrap_or_default(),
    )
}

pub async fn service(State(state): State<AdminState>, Path(service): Path<String>) -> Response {
    match state.directory.service(&service) {
        Some(entry) => json_response(
            StatusCode::OK,
            &serde_json::to_value(entry).unwrap_or_default(),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("service {service:?} has no instances"),
            None,
        ),
    }
}

pub async fn register(
    State(state): State<AdminState>,
    Path((service, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let registry = state.directory.registry();
    let parsed = registration::parse(&service, &id, &body, &registry.regions());
    let registration = match parsed {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string(), Some(&e.field)),
    };
    tracing::info!(service, id, address = %registration.address, port = registration.port, "registry: instance registered");
    let status = match registry.register(registration) {
        Ok(Registered::Created) => StatusCode::CREATED,
        Ok(Registered::Updated) => StatusCode::OK,
        Err(e) => return registry_error(&e),
    };
    let instance = registry.instance(&service, &id);
    json_response(status, &json!({ "service": service, "instance": instance }))
}

pub async fn heartbeat(
    State(state): State<AdminState>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    match state.directory.registry().heartbeat(&service, &id) {
        Ok(ttl) => json_response(StatusCode::OK, &json!({ "ttl_ms": ttl.as_millis() as u64 })),
        Err(e) => registry_error(&e),
    }
}

pub async fn deregister(
    State(state): State<AdminState>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    match state.directory.registry().deregister(&service, &id) {
        Ok(_) => {
            tracing::info!(service, id, "registry: instance deregistered");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => registry_error(&e),
    }
}

fn registry_error(e: &RegistryError) -> Response {
    let status = match e {
        RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
        RegistryError::FromConfig { .. } => StatusCode::CONFLICT,
    };
    error(status, &e.to_string(), None)
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    json_response(status, &json!({ "error": message, "field": field }))
}
