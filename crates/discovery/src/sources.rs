//! One task per discovery cluster, feeding its endpoint set to the gateway.
//!
//! [`Sources::reconcile`] runs after every config apply: a cluster whose source is unchanged
//! keeps its task; a new or changed source gets a new task; a removed one is stopped. Tasks push
//! endpoint sets through an [`EndpointSink`] (the gateway), only when the set changed:
//! - registry: on every registry change (a watch, so within milliseconds);
//! - DNS: on each resolution, re-resolved as the answer's TTL says within `min_ttl..=max_ttl`.
//!   A failed or empty resolution keeps the last good set and retries after `min_ttl`.

use crate::dns::{DnsResolver, refresh_after};
use crate::registry::Registry;
use gatehouse_config::{Config, Discovery, DnsDiscovery, EndpointConfig};
use gatehouse_observe::{DiscoveryLabels, Metrics, label};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where discovered endpoint sets go (the gateway, in the binary).
pub trait EndpointSink: Send + Sync + 'static {
    fn set_endpoints(
        &self,
        cluster: &str,
        source: &Discovery,
        endpoints: Vec<EndpointConfig>,
    ) -> impl Future<Output = ()> + Send;
}

/// The running discovery tasks, by cluster.
pub struct Sources<S: EndpointSink> {
    sink: Arc<S>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<String, (Discovery, CancellationToken)>>,
}

impl<S: EndpointSink> Sources<S> {
    pub fn new(sink: Arc<S>, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Self {
            sink,
            registry,
            metrics,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts and stops tasks so that each cluster with `discovery` in `config` has one.
    pub fn reconcile(&self, config: &Config) {
        let wanted: HashMap<&str, &Discovery> = config
            .clusters
            .iter()
            .filter_map(|c| c.discovery.as_ref().map(|d| (c.name.as_str(), d)))
            .collect();
        let mut running = self.running.lock();
        running.retain(|cluster, (source, stop)| {
            let keep = wanted.get(cluster.as_str()) == Some(&&*source);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (cluster, source) in wanted {
            if running.contains_key(cluster) {
                continue;
            }
            let stop = CancellationToken::new();
            running.insert(cluster.to_owned(), (source.clone(), stop.clone()));
            let task = Task {
                cluster: cluster.to_owned(),
                source: source.clone(),
                sink: Arc::clone(&self.sink),
                stop,
            };
            match source {
                Discovery::Registry { service } => {
                    tokio::spawn(task.follow_registry(Arc::clone(&self.registry), service.clone()));
                }
                Discovery::Dns(dns) => {
                    tokio::spawn(task.follow_dns(dns.clone(), Arc::clone(&self.metrics)));
                }
            }
        }
    }

    /// Stops every task (shutdown).
    pub fn stop(&self) {
        for (_, (_, stop)) in self.running.lock().drain() {
            stop.cancel();
        }
    }
}

/// One cluster's discovery task.
struct Task<S> {
    cluster: String,
    source: Discovery,
    sink: Arc<S>,
    stop: CancellationToken,
}

impl<S: EndpointSink> Task<S> {
    async fn follow_registry(self, registry: Arc<Registry>, service: String) {
        let mut changes = registry.subscribe();
        let mut last = None;
        loop {
            // Mark the version seen *before* reading, so a change in between wakes us again.
            changes.borrow_and_update();
            let endpoints = registry.endpoints(&service);
            if last.as_ref() != Some(&endpoints) {
                last = Some(endpoints.clone());
                self.push(endpoints).await;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn follow_dns(self, dns: DnsDiscovery, metrics: Arc<Metrics>) {
        let count = |result: &'static str| {
            metrics
                .dns_discovery
                .get_or_create(&DiscoveryLabels {
                    cluster: label(&self.cluster),
                    result,
                })
                .inc();
        };
        let mut resolver = None;
        let mut last: Option<Vec<EndpointConfig>> = None;
        loop {
            if resolver.is_none() {
                match DnsResolver::new(dns.nameserver) {
                    Ok(r) => resolver = Some(r),
                    Err(err) => {
                        tracing::error!(cluster = %self.cluster, error = %err, "DNS discovery")
                    }
                }
            }
            let wait = match &resolver {
                None => dns.max_ttl.min(Duration::from_secs(30)),
                Some(resolver) => {
                    let resolved = tokio::select! {
                        _ = self.stop.cancelled() => return,
                        resolved = resolver.resolve(&dns) => resolved,
                    };
                    match resolved {
                        Ok(answer) => {
                            count("ok");
                            if last.as_ref() != Some(&answer.endpoints) {
                                tracing::info!(
                                    cluster = %self.cluster,
                                    name = %dns.name,
                                    endpoints = answer.endpoints.len(),
                                    "DNS discovery: endpoint set changed"
                                );
                                last = Some(answer.endpoints.clone());
                                self.push(answer.endpoints).await;
                            }
                            refresh_after(answer.ttl, dns.min_ttl, dns.max_ttl)
                        }
                        Err(err) => {
                            count("error");
                            tracing::warn!(
                                cluster = %self.cluster,
                                error = %err,
                                kept = last.as_ref().map_or(0, Vec::len),
                                "DNS discovery failed; keeping the last good endpoints"
                            );
                            dns.min_ttl
                        }
                    }
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn push(&self, endpoints: Vec<EndpointConfig>) {
        self.sink
            .set_endpoints(&self.cluster, &self.source, endpoints)
            .await;
    }
}
