//! Service discovery end to end: the real binary, clusters fed by the registry (through the
//! admin API) and by a real DNS server on a loopback UDP port.

mod common;

use bytes::Bytes;
use common::*;
use gatehouse_test_support::{SrvRecord, TestDns};
use http::{Method, StatusCode};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const TOKEN: &str = "registry-token-0123456789";

/// Which upstreams answer `requests` GETs through the gateway.
async fn answering(client: &HttpClient, addr: SocketAddr, requests: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..requests {
        let answer = get(client, addr, "/", &[]).await;
        if answer.status == StatusCode::OK {
            seen.insert(answer.upstream());
        }
    }
    seen
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

struct Admin {
    client: HttpClient,
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    async fn send(&self, method: Method, path: &str, body: String) -> Answer {
        send(
            &self.client,
            method,
            self.addr,
            path,
            &[
                ("authorization", self.auth.as_str()),
                ("content-type", "application/json"),
            ],
            Bytes::from(body),
        )
        .await
    }

    async fn register(&self, id: &str, up: &TestUpstream, ttl: &str) -> Answer {
        self.send(
            Method::PUT,
            &format!("/registry/services/web/instances/{id}"),
            format!(
                r#"{{"address": "{}", "port": {}, "ttl": "{ttl}", "tags": ["e2e"]}}"#,
                up.addr.ip(),
                up.addr.port()
            ),
        )
        .await
    }

    async fn heartbeat(&self, id: &str) -> StatusCode {
        self.send(
            Method::POST,
            &format!("/registry/services/web/instances/{id}/heartbeat"),
            String::new(),
        )
        .await
        .status
    }
}

/// The binary routing everything to cluster "web" fed by registry service "web", with `extra`
/// config appended; its admin API has [`TOKEN`] when `token`, else no token.
async fn registry_gateway(token: bool, extra: &str) -> (Gatehouse, Admin) {
    let admin = if token {
        format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"")
    } else {
        "[admin]\nlisten = \"127.0.0.1:0\"".to_owned()
    };
    let gw = Gatehouse::start(bin(), &format!("{}{extra}", registry_config(&admin)), &[]).await;
    let admin = Admin {
        client: h1(),
        addr: gw.admin.expect("admin address"),
        auth: if token {
            format!("Bearer {TOKEN}")
        } else {
            String::new()
        },
    };
    (gw, admin)
}

fn registry_config(admin: &str) -> String {
    format!(
        r#"
{admin}
[[listeners]]
name = "main"
listen = "127.0.0.1:0"
[[routes]]
cluster = "web"
[[clusters]]
name = "web"
discovery = {{ registry = "web" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_cluster_follows_registrations_heartbeats_and_deregistrations() {
    let ups = [
        TestUpstream::start("u1").await,
        TestUpstream::start("u2").await,
        TestUpstream::start("u3").await,
    ];
    let (gw, admin) = registry_gateway(true, "").await;
    let addr = gw.addr("main");
    let c = h1();

    // No instances yet: the cluster has no endpoints.
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Three registrations; every upstream answers within a second.
    for (i, up) in ups.iter().enumerate() {
        let answer = admin.register(&format!("u{}", i + 1), up, "2s").await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    }
    assert!(
        eventually(Duration::from_secs(1), async || answering(&c, addr, 9)
            .await
            == names(&["u1", "u2", "u3"]))
        .await,
        "all three registered upstreams answer"
    );

    // u1 and u2 keep beating; u3 stops and must leave rotation within its 2 s TTL.
    let stop_at = std::time::Instant::now();
    let beating = {
        let admin = Admin {
            client: h1(),
            addr: admin.addr,
            auth: admin.auth.clone(),
        };
        tokio::spawn(async move {
            for _ in 0..40 {
                assert_eq!(admin.heartbeat("u1").await, StatusCode::OK);
                assert_eq!(admin.heartbeat("u2").await, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(4), async || answering(&c, addr, 6)
            .await
            == names(&["u1", "u2"]))
        .await,
        "u3 leaves rotation once its lease runs out"
    );
    let gone_after = stop_at.elapsed();
    assert!(
        gone_after <= Duration::from_millis(2600),
        "u3 left {gone_after:?} after its last heartbeat; its TTL is 2 s"
    );
    // The heartbeats kept u1 and u2 well past their own 2 s TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(answering(&c, addr, 6).await, names(&["u1", "u2"]));
    assert_eq!(admin.heartbeat("u3").await, StatusCode::NOT_FOUND);

    // The listing shows the two live instances; the metrics count the expiry.
    let listing = admin
        .send(Method::GET, "/registry/services", String::new())
        .await
        .json();
    let instances = &listing["services"][0]["instances"];
    assert_eq!(listing["services"][0]["name"], "web");
    assert_eq!(instances.as_array().map(Vec::len), Some(2), "{listing}");
    assert_eq!(instances[0]["id"], "u1");
    assert_eq!(instances[0]["port"], ups[0].addr.port());
    assert_eq!(instances[0]["tags"][0], "e2e");
    assert_eq!(instances[0]["in_rotation"], true);
    assert_eq!(instances[0]["healthy"], true);
    let metrics = admin
        .send(Method::GET, "/metrics", String::new())
        .await
        .text();
    assert!(
        metrics.contains(r#"gatehouse_registry_expirations_total{service="web"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"gatehouse_registry_instances{service="web"} 2"#));

    // Deregistration takes u2 out at once.
    let deleted = admin
        .send(
            Method::DELETE,
            "/registry/services/web/instances/u2",
            String::new(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(
        eventually(Duration::from_secs(1), async || answering(&c, addr, 4)
            .await
            == names(&["u1"]))
        .await
    );
    beating.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_get_400s_naming_the_field_and_writes_need_the_token() {
    let (_gw, admin) = registry_gateway(true, "").await;
    for (body, field) in [
        (r#"{"port": 80}"#, "address"),
        (r#"{"address": "web.internal", "port": 80}"#, "address"),
        (r#"{"address": "127.0.0.1", "port": 0}"#, "port"),
        (
            r#"{"address": "127.0.0.1", "port": 80, "weight": 0}"#,
            "weight",
        ),
        (
            r#"{"address": "127.0.0.1", "port": 80, "ttl": "soon"}"#,
            "ttl",
        ),
        (
            r#"{"address": "127.0.0.1", "port": 80, "region": "mars"}"#,
            "region",
        ),
        (
            r#"{"address": "127.0.0.1", "port": 80, "colour": "red"}"#,
            "colour",
        ),
        ("not json", "body"),
    ] {
        let answer = admin
            .send(
                Method::PUT,
                "/registry/services/web/instances/a",
                body.into(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let json = answer.json();
        assert_eq!(json["field"], field, "{body}: {json}");
        assert!(
            json["error"].as_str().unwrap_or("").starts_with(field),
            "{json}"
        );
    }
    let bad_service = admin
        .send(
            Method::PUT,
            "/registry/services/Web_1/instances/a",
            r#"{"address": "127.0.0.1", "port": 80}"#.into(),
        )
        .await;
    assert_eq!(bad_service.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_service.json()["field"], "service");
    let unknown = admin
        .send(
            Method::DELETE,
            "/registry/services/web/instances/nope",
            String::new(),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Without the token: 401, and nothing was registered.
    let anonymous = Admin {
        client: h1(),
        addr: admin.addr,
        auth: "Bearer wrong-token-0123456789".into(),
    };
    let refused = anonymous
        .send(
            Method::PUT,
            "/registry/services/web/instances/a",
            r#"{"address": "127.0.0.1", "port": 80}"#.into(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.heartbeat("a").await, StatusCode::UNAUTHORIZED);
    let listing = admin
        .send(Method::GET, "/registry/services", String::new())
        .await
        .json();
    assert_eq!(listing["services"].as_array().map(Vec::len), Some(0));

    // An admin API without a token refuses every write with 403.
    let (_open, tokenless) = registry_gateway(false, "").await;
    let forbidden = tokenless
        .send(
            Method::PUT,
            "/registry/services/web/instances/a",
            r#"{"address": "127.0.0.1", "port": 80}"#.into(),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_registry_instances_come_from_the_config() {
    let ups = [
        TestUpstream::start("s1").await,
        TestUpstream::start("s2").await,
    ];
    let (gw, admin) = registry_gateway(
        true,
        &format!(
            r#"
[regions]
eu = ["10.1.0.0/16"]
[[registry.instances]]
service = "web"
id = "s1"
address = "127.0.0.1"
port = {}
region = "eu"
[[registry.instances]]
service = "web"
address = "127.0.0.1"
port = {}
"#,
            ups[0].addr.port(),
            ups[1].addr.port()
        ),
    )
    .await;
    let c = h1();
    assert!(
        eventually(Duration::from_secs(2), async || answering(
            &c,
            gw.addr("main"),
            6
        )
        .await
            == names(&["s1", "s2"]))
        .await
    );
    let listing = admin
        .send(Method::GET, "/registry/services/web", String::new())
        .await
        .json();
    let instances = listing["instances"].as_array().cloned().unwrap_or_default();
    let s1 = instances
        .iter()
        .find(|i| i["id"] == "s1")
        .expect("s1 listed");
    assert_eq!(s1["region"], "eu");
    assert_eq!(s1["origin"], "config");
    assert_eq!(s1["expires_in_ms"], serde_json::Value::Null);
    let port = ups[1].addr.port();
    assert!(
        instances
            .iter()
            .any(|i| i["id"] == format!("127.0.0.1:{port}")),
        "an instance without an id is named by its address: {listing}"
    );
    // The API cannot remove what the config file says.
    let conflict = admin
        .send(
            Method::DELETE,
            "/registry/services/web/instances/s1",
            String::new(),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    // A registration may name a region the config defines.
    let in_region = admin
        .send(
            Method::PUT,
            "/registry/services/web/instances/x",
            r#"{"address": "127.0.0.1", "port": 1, "region": "eu"}"#.into(),
        )
        .await;
    assert_eq!(
        in_region.status,
        StatusCode::CREATED,
        "{}",
        in_region.text()
    );
}

fn dns_config(dns: &TestDns, discovery: &str) -> String {
    config(&format!(
        r#"
[[routes]]
cluster = "web"
[[clusters]]
name = "web"
discovery = {{ {discovery}, min_ttl = "1s", max_ttl = "2s", nameserver = "{}" }}
"#,
        dns.addr
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_srv_cluster_follows_the_answers_and_keeps_the_last_good_set() {
    let ups = [
        TestUpstream::start("d1").await,
        TestUpstream::start("d2").await,
        TestUpstream::start("d3").await,
    ];
    let dns = TestDns::start().await;
    for (i, _) in ups.iter().enumerate() {
        dns.set_addresses(
            &format!("d{}.test.", i + 1),
            &["127.0.0.1".parse().unwrap()],
        );
    }
    let srv = |i: usize| SrvRecord {
        priority: 10,
        weight: 1,
        port: ups[i].addr.port(),
        target: format!("d{}.test.", i + 1),
    };
    dns.set_srv("_web._tcp.test.", &[srv(0), srv(1)]);
    let gw = Gatehouse::start(
        bin(),
        &dns_config(&dns, r#"dns = "_web._tcp.test.", type = "SRV""#),
        &[],
    )
    .await;
    let (addr, c) = (gw.addr("main"), h1());
    assert!(
        eventually(Duration::from_secs(3), async || answering(&c, addr, 6)
            .await
            == names(&["d1", "d2"]))
        .await,
        "the SRV answer's targets answer"
    );

    // The answer changes: within its TTL (1 s) plus a query, the cluster follows.
    dns.set_srv("_web._tcp.test.", &[srv(1), srv(2)]);
    assert!(
        eventually(Duration::from_secs(3), async || answering(&c, addr, 6)
            .await
            == names(&["d2", "d3"]))
        .await,
        "the cluster follows the new answer"
    );

    // DNS stops answering: the last good set keeps serving through several refresh periods.
    let before = dns.queries();
    dns.set_silent(true);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(answering(&c, addr, 4).await, names(&["d2", "d3"]));
    }
    assert!(dns.queries() > before, "the gateway kept asking");
    let admin = gw.admin.unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || get(
            &c,
            admin,
            "/metrics",
            &[]
        )
        .await
        .text()
        .contains(
            r#"gatehouse_dns_discovery_resolutions_total{cluster="web",result="error"}"#
        ))
        .await,
        "failed resolutions are counted; log:\n{}",
        gw.stderr()
    );

    // DNS is back with a new answer: the cluster follows again.
    dns.set_srv("_web._tcp.test.", &[srv(0)]);
    dns.set_silent(false);
    assert!(
        eventually(Duration::from_secs(5), async || answering(&c, addr, 4)
            .await
            == names(&["d1"]))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_a_record_cluster_uses_each_address_with_the_configured_port() {
    // Two upstreams on one port at two loopback addresses, as A records describe them.
    let first = TestUpstream::start("a1").await;
    let port = first.addr.port();
    let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await else {
        // Another process holds the same port on 127.0.0.2: nothing to test here this time.
        eprintln!("127.0.0.2:{port} is taken; skipping");
        return;
    };
    let _second = TestUpstream::serve("a2", listener);
    let dns = TestDns::start().await;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    dns.set_addresses("web.test.", &[ip("127.0.0.1")]);
    let gw = Gatehouse::start(
        bin(),
        &dns_config(
            &dns,
            &format!(r#"dns = "web.test.", type = "A", port = {port}"#),
        ),
        &[],
    )
    .await;
    let (addr, c) = (gw.addr("main"), h1());
    assert!(
        eventually(Duration::from_secs(3), async || answering(&c, addr, 4)
            .await
            == names(&["a1"]))
        .await
    );
    dns.set_addresses("web.test.", &[ip("127.0.0.1"), ip("127.0.0.2")]);
    assert!(
        eventually(Duration::from_secs(3), async || answering(&c, addr, 6)
            .await
            == names(&["a1", "a2"]))
        .await
    );
}
