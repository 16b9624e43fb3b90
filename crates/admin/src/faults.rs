//! `/faults`: fault injection at runtime.
//!
//! - `GET /faults`: every fault set, as JSON;
//! - `PUT /faults/route/NAME` or `/faults/cluster/NAME` with a JSON object: sets that fault;
//! - `DELETE` on the same path: clears it.
//!
//! Body fields (all optional): `delay` ("100ms"), `delay_jitter`, `delay_percent` (0-100),
//! `abort_status` (200-599), `abort_percent` (0-100), `blackhole_percent` (0-100). Writes need
//! the admin token. A bad body gets 400 naming the field; an unknown route or cluster, 404.

use crate::AdminState;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_http::faults::{Fault, Target};
use gatehouse_resilience::{BasisPoints, FaultConfig};
use serde_json::{Map, Value, json};
use std::time::Duration;

pub async fn list(State(state): State<AdminState>) -> Response {
    let faults: Vec<Value> = state
        .gateway
        .faults()
        .active()
        .into_iter()
        .map(|(target, name, fault)| describe(target, &name, &fault))
        .collect();
    json_response(StatusCode::OK, &json!({ "faults": faults }))
}

pub async fn put(
    State(state): State<AdminState>,
    Path((target, name)): Path<(String, String)>,
    body: String,
) -> Response {
    let target = match known_target(&state, &target, &name) {
        Ok(target) => target,
        Err(message) => return (StatusCode::NOT_FOUND, message).into_response(),
    };
    let fault = match parse_fault(&body) {
        Ok(fault) => fault,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request: {message}\n"),
            )
                .into_response();
        }
    };
    tracing::warn!(?target, name, ?fault, "fault injection set");
    let described = describe(target, &name, &fault);
    state.gateway.faults().set(target, &name, Some(fault));
    json_response(StatusCode::OK, &described)
}

pub async fn delete(
    State(state): State<AdminState>,
    Path((target, name)): Path<(String, String)>,
) -> Response {
    let target = match known_target(&state, &target, &name) {
        Ok(target) => target,
        Err(message) => return (StatusCode::NOT_FOUND, message).into_response(),
    };
    tracing::info!(?target, name, "fault injection cleared");
    state.gateway.faults().set(target, &name, None);
    StatusCode::NO_CONTENT.into_response()
}

/// The target named in the path, if it exists in the running config; else a 404 message.
fn known_target(state: &AdminState, target: &str, name: &str) -> Result<Target, String> {
    let snapshot = state.gateway.snapshot();
    let (target, exists) = match target {
        "route" => (
            Target::Route,
            snapshot.config.routes.iter().any(|r| r.name == name),
        ),
        "cluster" => (Target::Cluster, snapshot.config.cluster(name).is_some()),
        other => {
            return Err(format!(
                "404 Not Found: {other:?} is not a fault target; use /faults/route/NAME or /faults/cluster/NAME\n"
            ));
        }
    };
    if exists {
        Ok(target)
    } else {
        Err(format!(
            "404 Not Found: no {} named {name:?} in the running config\n",
            format!("{target:?}").to_lowercase()
        ))
    }
}

/// Parses a fault body, naming the first bad field.
fn parse_fault(body: &str) -> Result<Fault, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the body must be a JSON object".into());
    };
    const KNOWN: [&str; 6] = [
        "delay",
        "delay_jitter",
        "delay_percent",
        "abort_status",
        "abort_percent",
        "blackhole_percent",
    ];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}; known: {}",
            KNOWN.join(", ")
        ));
    }
    let abort_status = match fields.get("abort_status") {
        None => 503,
        Some(v) => {
            v.as_u64()
                .filter(|s| (200..=599).contains(s))
                .ok_or("abort_status: must be an HTTP status from 200 to 599")? as u16
        }
    };
    Ok(Fault {
        config: FaultConfig {
            delay: duration(&fields, "delay")?,
            delay_jitter: duration(&fields, "delay_jitter")?,
            delay_percent: percent(&fields, "delay_percent")?,
            abort_status,
            abort_percent: percent(&fields, "abort_percent")?,
        },
        blackhole_percent: percent(&fields, "blackhole_percent")?,
    })
}

fn duration(fields: &Map<String, Value>, name: &str) -> Result<Duration, String> {
    match fields.get(name) {
        None => Ok(Duration::ZERO),
        Some(Value::String(text)) => {
            gatehouse_config::units::parse_duration(text).map_err(|e| format!("{name}: {e}"))
        }
        Some(_) => Err(format!(
            "{name}: must be a duration string such as \"100ms\""
        )),
    }
}

fn percent(fields: &Map<String, Value>, name: &str) -> Result<BasisPoints, String> {
    match fields.get(name) {
        None => Ok(BasisPoints::NONE),
        Some(v) => v
            .as_f64()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(BasisPoints::from_percent)
            .ok_or_else(|| format!("{name}: must be a number from 0 to 100")),
    }
}

fn describe(target: Target, name: &str, fault: &Fault) -> Value {
    let percent = |bp: BasisPoints| f64::from(bp.get()) / 100.0;
    json!({
        "target": target,
        "name": name,
        "delay_ms": fault.config.delay.as_millis() as u64,
        "delay_jitter_ms": fault.config.delay_jitter.as_millis() as u64,
        "delay_percent": percent(fault.config.delay_percent),
        "abort_status": fault.config.abort_status,
        "abort_percent": percent(fault.config.abort_percent),
        "blackhole_percent": percent(fault.blackhole_percent),
    })
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(body).unwrap_or_default(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_fault;

    #[test]
    fn fault_bodies_are_checked_field_by_field() {
        let fault = parse_fault(
            r#"{"delay":"100ms","delay_percent":50,"abort_status":418,"abort_percent":12.5}"#,
        )
        .unwrap();
        assert_eq!(fault.config.delay.as_millis(), 100);
        assert_eq!(fault.config.delay_percent.get(), 5000);
        assert_eq!(fault.config.abort_status, 418);
        assert_eq!(fault.config.abort_percent.get(), 1250);
        for (body, field) in [
            (r#"{"delay":100}"#, "delay"),
            (r#"{"delay_percent":101}"#, "delay_percent"),
            (r#"{"abort_status":99}"#, "abort_status"),
            (r#"{"surprise":1}"#, "surprise"),
            ("[1]", "object"),
            ("nope", "JSON"),
        ] {
            let error = parse_fault(body).unwrap_err();
            assert!(error.contains(field), "{body}: {error}");
        }
    }
}
