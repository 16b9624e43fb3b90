//! Registrations from the admin API: a JSON body checked field by field, so a bad request gets
//! a 400 that names the field and says what would be accepted.
//!
//! Body: `{"address": "10.0.0.5", "port": 8080, "weight": 2, "tags": ["v2"], "region": "eu",
//! "ttl": "30s"}`; only `address` and `port` are required. The name rules are the config's
//! ([`gatehouse_config::validate::discovery`]), so an instance the API accepts could also be
//! written in the config file.

use crate::state::Registration;
use gatehouse_config::validate::discovery as rules;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::time::Duration;

/// Lease length when the body names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Shortest and longest lease: shorter would need heartbeats faster than the expiry sweep,
/// longer keeps a dead instance in rotation for too long.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(3600);

const FIELDS: [&str; 6] = ["address", "port", "weight", "tags", "region", "ttl"];

/// A registration the API refused, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks a registration of instance `id` of `service` with JSON `body`. `regions` are the
/// region names the config defines (an instance's region must be one of them).
pub fn parse(
    service: &str,
    id: &str,
    body: &[u8],
    regions: &[String],
) -> Result<Registration, FieldError> {
    rules::service_name(service).map_err(|m| field_error("service", m))?;
    rules::instance_id(id).map_err(|m| field_error("id", m))?;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        field_error(
            "body",
            format!("not JSON ({e}); send {{\"address\": \"IP\", \"port\": N}}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(field_error(
            "body",
            "expected a JSON object such as {\"address\": \"10.0.0.5\", \"port\": 8080}",
        ));
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field_error(
            unknown,
            format!("unknown field; the fields are {}", FIELDS.join(", ")),
        ));
    }
    let address = match object.get("address") {
        None => return Err(field_error("address", "required: the instance's IP address")),
        Some(Value::String(text)) => text.parse::<IpAddr>().map_err(|_| {
            field_error(
                "address",
                format!("{text:?} is not an IP address (host names are not resolved; the port goes in \"port\")"),
            )
        })?,
        Some(_) => return Err(field_error("address", "must be a string such as \"10.0.0.5\"")),
    };
    let port = match object.get("port") {
        None => {
            return Err(field_error(
                "port",
                "required: the port the instance serves on",
            ));
        }
        Some(v) => rules::port(integer(v, "port")?).map_err(|m| field_error("port", m))?,
    };
    let weight = match object.get("weight") {
        None => 1,
        Some(v) => rules::weight(integer(v, "weight")?).map_err(|m| field_error("weight", m))?,
    };
    let tags = tags(&object)?;
    let region = match object.get("region") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if regions.contains(r) => Some(r.clone()),
        Some(Value::String(r)) => {
            return Err(field_error(
                "region",
                if regions.is_empty() {
                    format!("unknown region {r:?}: the config defines no [regions]")
                } else {
                    format!(
                        "unknown region {r:?}; the config defines {}",
                        regions.join(", ")
                    )
                },
            ));
        }
        Some(_) => return Err(field_error("region", "must be a string")),
    };
    let ttl = match object.get("ttl") {
        None => DEFAULT_TTL,
        Some(Value::String(text)) => {
            gatehouse_config::units::parse_duration(text).map_err(|m| field_error("ttl", m))?
        }
        Some(v @ Value::Number(_)) => Duration::from_secs(
            u64::try_from(integer(v, "ttl")?)
                .map_err(|_| field_error("ttl", "cannot be negative"))?,
        ),
        Some(_) => {
            return Err(field_error(
                "ttl",
                "must be a duration such as \"30s\" or a number of seconds",
            ));
        }
    };
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(field_error(
            "ttl",
            format!(
                "{} ms is outside {} s to {} s",
                ttl.as_millis(),
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs()
            ),
        ));
    }
    Ok(Registration {
        service: service.to_owned(),
        id: id.to_owned(),
        address,
        port,
        weight,
        tags,
        region,
        ttl,
    })
}

fn integer(value: &Value, field: &str) -> Result<i64, FieldError> {
    value
        .as_i64()
        .ok_or_else(|| field_error(field, "must be a whole number"))
}

fn tags(object: &Map<String, Value>) -> Result<Vec<String>, FieldError> {
    let list = match object.get("tags") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(field_error("tags", "must be a list of strings")),
    };
    rules::tag_count(list.len()).map_err(|m| field_error("tags", m))?;
    list.iter()
        .enumerate()
        .map(|(i, tag)| {
            let field = format!("tags[{i}]");
            let tag = tag
                .as_str()
                .ok_or_else(|| field_error(&field, "must be a string"))?;
            rules::tag(tag).map_err(|m| field_error(&field, m))?;
            Ok(tag.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(body: &str) -> Result<Registration, FieldError> {
        parse("payments", "pay-1", body.as_bytes(), &["eu".to_owned()])
    }

    fn field_of(body: &str) -> String {
        try_parse(body).unwrap_err().field
    }

    #[test]
    fn a_full_registration() {
        let r = try_parse(
            r#"{"address": "10.0.0.5", "port": 8080, "weight": 3, "tags": ["v2"], "region": "eu", "ttl": "10s"}"#,
        )
        .unwrap();
        assert_eq!(r.address, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!((r.port, r.weight), (8080, 3));
        assert_eq!(r.tags, ["v2"]);
        assert_eq!(r.region.as_deref(), Some("eu"));
        assert_eq!(r.ttl, Duration::from_secs(10));
        let minimal = try_parse(r#"{"address": "::1", "port": 1, "ttl": 5}"#).unwrap();
        assert_eq!((minimal.weight, minimal.ttl), (1, Duration::from_secs(5)));
        assert_eq!(
            try_parse(r#"{"address": "::1", "port": 1}"#).unwrap().ttl,
            DEFAULT_TTL
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of("[]"), "body");
        assert_eq!(field_of(r#"{"port": 80}"#), "address");
        assert_eq!(
            field_of(r#"{"address": "db.internal", "port": 80}"#),
            "address"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1:80", "port": 80}"#),
            "address"
        );
        assert_eq!(field_of(r#"{"address": "10.0.0.1"}"#), "port");
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 70000}"#),
            "port"
        );
        assert_eq!(field_of(r#"{"address": "10.0.0.1", "port": "80"}"#), "port");
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "weight": 0}"#),
            "weight"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "tags": "a"}"#),
            "tags"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "tags": ["a b"]}"#),
            "tags[0]"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "region": "mars"}"#),
            "region"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "ttl": "0s"}"#),
            "ttl"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "ttl": "2h"}"#),
            "ttl"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "ttl": -1}"#),
            "ttl"
        );
        assert_eq!(
            field_of(r#"{"address": "10.0.0.1", "port": 80, "colour": 1}"#),
            "colour"
        );
        let bad_service = parse("Pay", "x", b"{}", &[]).unwrap_err();
        assert_eq!(bad_service.field, "service");
        assert_eq!(parse("pay", "a/b", b"{}", &[]).unwrap_err().field, "id");
    }
}
