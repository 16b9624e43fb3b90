//! Connects service discovery to the gateway: discovered endpoint sets go to
//! `Gateway::set_discovered_endpoints`, and the registry's read API asks the gateway whether an
//! instance is in rotation.

use gatehouse_config::{Config, Discovery, EndpointConfig};
use gatehouse_discovery::{EndpointSink, HealthLookup, Registry, ServiceDirectory, Sources};
use gatehouse_http::Gateway;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The registry, the per-cluster discovery tasks and the read API, for one gateway.
pub struct DiscoveryRuntime {
    registry: Arc<Registry>,
    pub directory: ServiceDirectory,
    sources: Sources<GatewaySink>,
    stop: CancellationToken,
}

impl DiscoveryRuntime {
    /// Starts the registry's expiry sweep. Call [`DiscoveryRuntime::apply`] with each config
    /// the gateway applies.
    pub fn start(gateway: &Arc<Gateway>) -> Self {
        let registry = Registry::new(Arc::clone(gateway.metrics()), gateway.clock());
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&registry).run_expiry(stop.clone()));
        Self {
            directory: ServiceDirectory::new(
                Arc::clone(&registry),
                Arc::new(GatewayHealth(Arc::clone(gateway))),
            ),
            sources: Sources::new(
                Arc::new(GatewaySink(Arc::clone(gateway))),
                Arc::clone(&registry),
                Arc::clone(gateway.metrics()),
            ),
            registry,
            stop,
        }
    }

    /// Takes the static instances and regions of `config` and starts or stops the clusters'
    /// discovery tasks to match it.
    pub fn apply(&self, config: &Config) {
        self.registry.apply_config(config);
        self.sources.reconcile(config);
    }

    pub fn stop(&self) {
        self.sources.stop();
        self.stop.cancel();
    }
}

struct GatewaySink(Arc<Gateway>);

impl EndpointSink for GatewaySink {
    async fn set_endpoints(
        &self,
        cluster: &str,
        source: &Discovery,
        endpoints: Vec<EndpointConfig>,
    ) {
        self.0
            .set_discovered_endpoints(cluster, source, endpoints)
            .await;
    }
}

struct GatewayHealth(Arc<Gateway>);

impl HealthLookup for GatewayHealth {
    fn in_rotation(&self, service: &str, addr: SocketAddr) -> Option<bool> {
        let source = Discovery::Registry {
            service: service.to_owned(),
        };
        self.0.discovered_endpoint_in_rotation(&source, addr)
    }
}
