//! Endpoint identity.
//!
//! An endpoint is identified by the cluster it belongs to and its socket address. State that must
//! survive a reload (in-flight counts, latency estimates, later health and outlier state) is keyed
//! by this identity, so a reload that keeps an endpoint keeps its history.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Stable identity of one upstream endpoint within one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId {
    pub cluster: Arc<str>,
    pub addr: SocketAddr,
}

impl EndpointId {
    pub fn new(cluster: impl Into<Arc<str>>, addr: SocketAddr) -> Self {
        Self {
            cluster: cluster.into(),
            addr,
        }
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_cluster_and_address() {
        let id = EndpointId::new("web", "127.0.0.1:80".parse().unwrap());
        assert_eq!(id.to_string(), "web/127.0.0.1:80");
    }
}
