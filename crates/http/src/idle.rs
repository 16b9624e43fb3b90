//! Silence timeouts for long-lived bodies (server-sent events, long polls, tunnels) and slow
//! clients, on [`gatehouse_net::IdleWatch`]: nothing is paid until a body has to wait.

pub use gatehouse_net::IdleWatch;

/// The error a body ends with when its upstream sent nothing for the route's read timeout.
pub fn upstream_silent(watch: &IdleWatch) -> crate::body::BoxError {
    Box::new(crate::body::BodyError::upstream(format!(
        "the upstream sent nothing for the route's read_timeout ({:?})",
        watch.timeout()
    )))
}
