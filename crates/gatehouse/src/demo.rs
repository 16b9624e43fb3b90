//! `gatehouse demo`: the gateway, three built-in upstreams, the admin API and DNS, with nothing
//! to install. The upstreams are also instances of service `demo` in the service registry; the
//! `/registry` route reaches them through it and the service zone `svc.gatehouse.` answers for
//! them. The config is ordinary gatehouse TOML built with the upstreams' ephemeral ports, so
//! everything the demo does a user can do with `gatehouse run`.

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;

const UPSTREAMS: usize = 3;

/// Runs the demo until ctrl-c or SIGTERM.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    https: SocketAddr,
    dns: SocketAddr,
) -> anyhow::Result<()> {
    let mut upstreams = Vec::new();
    for i in 1..=UPSTREAMS {
        let name = format!("demo-upstream-{i}");
        upstreams.push(start_upstream(name).await?);
    }
    let realtime = crate::demo_realtime::start().await?;
    let certs = demo_certificates(https)?;
    let config_text = demo_config(listen, admin, https, dns, &certs, &upstreams, realtime);
    let started = async {
        let config = gatehouse_config::parse(&config_text, "<demo config>")
            .map_err(|e| anyhow::anyhow!("the built-in demo config is invalid (a bug): {e}"))?;
        crate::serve::start(config).await.with_context(|| {
            format!(
                "is something else using {listen}, {https}, {admin} or {dns}? try --listen/--https/--admin/--dns"
            )
        })
    };
    let served = match started.await {
        Ok(running) => {
            // The banner names the bound addresses (any port given as 0 is resolved), and comes
            // only once everything listens: the curl lines work as soon as it is printed.
            print_banner(&Bound::of(&running, listen, admin, https, dns), &certs);
            crate::serve::serve_started(running, None).await
        }
        Err(err) => Err(err),
    };
    // The demo's CA and keys are throwaway: leave nothing behind.
    let _ = std::fs::remove_dir_all(&certs);
    served
}

/// Where the demo's parts listen once started.
struct Bound {
    listen: SocketAddr,
    admin: SocketAddr,
    https: SocketAddr,
    dns: SocketAddr,
}

impl Bound {
    /// The addresses `running` bound, falling back to the requested ones.
    fn of(
        running: &crate::serve::Running,
        listen: SocketAddr,
        admin: SocketAddr,
        https: SocketAddr,
        dns: SocketAddr,
    ) -> Bound {
        let listeners = running.gateway.bound_addresses();
        let listener = |name: &str, asked: SocketAddr| {
            listeners
                .iter()
                .find(|(n, _)| n == name)
                .map_or(asked, |(_, addr)| *addr)
        };
        Bound {
            listen: listener("demo", listen),
            https: listener("demo-https", https),
            admin: running.admin.unwrap_or(admin),
            dns: running
                .dns
                .as_ref()
                .and_then(|d| d.address())
                .unwrap_or(dns),
        }
    }
}

/// A development CA and a certificate for the HTTPS listener, in a fresh temporary directory
/// (the demo's CA is thrown away with it; `gatehouse cert dev` makes one to keep).
fn demo_certificates(https: SocketAddr) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gatehouse-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = gatehouse_tls::dev::DevCa::generate()?;
    let ip = https.ip().to_string();
    let leaf = ca.issue(&["localhost", &ip], gatehouse_tls::dev::Validity::default())?;
    for (name, contents) in [
        ("ca.pem", &ca.cert_pem),
        ("cert.pem", &leaf.chain_pem),
        ("key.pem", &leaf.key_pem),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    https: SocketAddr,
    dns: SocketAddr,
    certs: &std::path::Path,
    upstreams: &[SocketAddr],
    realtime: SocketAddr,
) -> String {
    let endpoints: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    let instances: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "\n[[registry.instances]]\nservice = \"demo\"\nid = \"demo-upstream-{}\"\naddress = \"{}\"\nport = {}\n",
                i + 1,
                a.ip(),
                a.port()
            )
        })
        .collect();
    let weighted: Vec<String> = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "{{ address = \"{a}\", weight = {} }}",
                if i == 0 { 3 } else { 1 }
            )
        })
        .collect();
    format!(
        r#"
[server]
drain_timeout = "5s"

[admin]
listen = "{admin}"

[[listeners]]
name = "demo"
listen = "{listen}"

# DNS for the registry's services: demo.svc.gatehouse (A), _demo._tcp.svc.gatehouse (SRV).
[dns]
listen = "{dns}"
[dns.services]
zone = "svc.gatehouse."
ttl = "5s"

[[listeners]]
name = "demo-https"
listen = "{https}"
[listeners.tls]
certificates = [{{ cert = "{certs}/cert.pem", key = "{certs}/key.pem" }}]

# Long-lived traffic: WebSocket and server-sent events (silent for up to an hour), a page
# that uses both (compressed), and a cacheable answer.
[[routes]]
name = "websocket"
path = "/ws"
cluster = "realtime"
read_timeout = "1h"

[[routes]]
name = "events"
path = "/events"
cluster = "realtime"
read_timeout = "1h"

[[routes]]
name = "realtime-page"
path = "/realtime"
cluster = "realtime"
[routes.compression]

[[routes]]
name = "cached"
path = "/cached"
cluster = "realtime"
[routes.cache]

[[routes]]
name = "hold"
path = "/hold"
cluster = "realtime"

[[routes]]
name = "sticky"
path_prefix = "/sticky"
cluster = "sticky"

[[routes]]
name = "weighted"
path_prefix = "/weighted"
cluster = "weighted"

[[routes]]
name = "registry"
path_prefix = "/registry"
cluster = "registry"

[[routes]]
name = "default"
cluster = "demo"

[[clusters]]
name = "demo"
balance = "round_robin"
endpoints = [{endpoints}]

[[clusters]]
name = "sticky"
balance = "ring_hash"
hash_on = "header:x-user"
endpoints = [{endpoints}]

[[clusters]]
name = "weighted"
balance = "weighted_round_robin"
endpoints = [{weighted}]

# least_request suits long-lived connections: it counts open ones, not requests made.
[[clusters]]
name = "realtime"
balance = "least_request"
endpoints = ["{realtime}"]

# Endpoints from the service registry: the instances of service "demo" below, plus any
# registered through the admin API.
[[clusters]]
name = "registry"
discovery = {{ registry = "demo" }}
{instances}"#,
        endpoints = endpoints.join(", "),
        weighted = weighted.join(", "),
        certs = certs.display(),
    )
}

fn print_banner(bound: &Bound, certs: &std::path::Path) {
    let Bound {
        listen,
        admin,
        https,
        dns,
    } = bound;
    let certs = certs.display();
    let https_port = https.port();
    let (dns_ip, dns_port) = (dns.ip(), dns.port());
    println!(
        r#"gatehouse demo: gateway on http://{listen} and https://{https}, admin on http://{admin}, DNS on {dns}, 3 demo upstreams

Try:
  curl -s http://{listen}/                          # round robin: run it a few times
  curl -s -H 'x-user: alice' http://{listen}/sticky  # ring hash: alice always lands on the same upstream
  for i in $(seq 10); do curl -s http://{listen}/weighted; done | sort | uniq -c   # weights 3:1:1
  curl -s --http2-prior-knowledge http://{listen}/  # HTTP/2 over cleartext
  curl -si --cacert {certs}/ca.pem https://localhost:{https_port}/   # HTTPS, h2 by ALPN
  curl -si http://{listen}/ | grep -i -e via -e x-request-id
  open http://{listen}/realtime in a browser          # a WebSocket and server-sent events through the gateway
  curl -sN http://{listen}/events                   # server-sent events, one a second (ctrl-c to stop)
  curl -s --compressed -I http://{listen}/realtime | grep -i content-encoding   # compressed
  curl -si http://{listen}/cached | grep -i -e answer -e cache-status   # twice: the 2nd is a cache hit
  curl -s http://{admin}/metrics | grep -e gatehouse_http_requests -e gatehouse_tunnels_open
  curl -s http://{admin}/config
  curl -s http://{admin}/registry/services          # the service registry: service "demo"
  curl -s http://{listen}/registry                  # a cluster fed by the registry
  dig @{dns_ip} -p {dns_port} +norec demo.svc.gatehouse              # the service zone: healthy instances of "demo"
  dig @{dns_ip} -p {dns_port} +norec _demo._tcp.svc.gatehouse SRV    # ports, weights, targets with their addresses
  dig @{dns_ip} -p {dns_port} +norec +subnet=10.1.0.0/24 demo.svc.gatehouse   # EDNS Client Subnet: scope in the answer
Stop with ctrl-c.
"#
    );
}

/// A tiny upstream that says who it is and what it received.
async fn start_upstream(name: String) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a demo upstream on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let name: &'static str = Box::leak(name.into_boxed_str());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(name, &req))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &'static str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let body = format!(
        "{name} answered {} {} (client {forwarded_for})\n",
        req.method(),
        req.uri().path()
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static(name));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid() {
        let upstreams: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], 9000 + p)))
            .collect();
        let text = demo_config(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:9901".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            "127.0.0.1:8053".parse().unwrap(),
            std::path::Path::new("/tmp/certs"),
            &upstreams,
            "127.0.0.1:9100".parse().unwrap(),
        );
        let config = gatehouse_config::parse(&text, "demo").unwrap();
        assert!(config.listeners[1].tls.is_some());
        assert_eq!(config.routes.len(), 9);
        assert!(config.routes[2].compression.is_some());
        assert_eq!(config.clusters[2].endpoints[0].weight, 3);
        let demo: Vec<_> = config
            .registry
            .instances
            .iter()
            .filter(|i| i.service == "demo")
            .map(|i| (i.id.as_str(), i.port))
            .collect();
        assert_eq!(
            demo,
            [
                ("demo-upstream-1", 9001),
                ("demo-upstream-2", 9002),
                ("demo-upstream-3", 9003)
            ]
        );
        assert!(config.clusters[4].discovery.is_some());
        let dns = config.dns.unwrap();
        assert_eq!(dns.listen.port(), 8053);
        assert_eq!(dns.services.unwrap().zone, "svc.gatehouse.");
    }
}
