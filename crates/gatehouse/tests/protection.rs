//! Protection end to end, against the real binary: listener and route ACLs, trusted proxies and
//! the real client address, rate limits, connections per client address, security headers (HSTS
//! over a real TLS connection).
//! Several clients are played from distinct loopback addresses (127.0.0.1, 127.0.0.2, ...).

mod common;

use common::*;
use gatehouse_test_support::{Gatehouse, TestUpstream};
use http::StatusCode;
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One cluster "c" over `up`, and `routes` (TOML `[[routes]]` tables using it), after the
/// listener settings `listener` (fields and sub-tables of the "main" listener).
fn gateway_config(listener: &str, routes: &str, up: &TestUpstream) -> String {
    config(&format!(
        "{listener}\n{routes}\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
        endpoints(&[up])
    ))
}

async fn metrics(gw: &Gatehouse) -> String {
    get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text()
}

/// Waits until the gateway serves config generation `generation` (the first is 1).
async fn reloaded(gw: &Gatehouse, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = format!("gatehouse_config_generation {generation}\n");
    while !metrics(gw).await.contains(&wanted) {
        assert!(
            Instant::now() < deadline,
            "generation {generation} never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_acl_closes_denied_connections_at_once() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            "[listeners.acl]\nallow = [\"127.0.0.2/32\"]",
            "[[routes]]\ncluster = \"c\"",
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");

    // The kernel completes the handshake; gatehouse closes the connection without reading.
    let mut denied = Connection::open(ip("127.0.0.1"), addr)
        .await
        .expect("TCP connect");
    let refused = denied.get("/", &[]).await;
    assert!(
        refused.is_err(),
        "a denied client got an answer: {:?}",
        refused.map(|a| a.status)
    );
    assert!(denied.closed_within(Duration::from_secs(2)).await);

    let allowed = get_from("127.0.0.2", addr, "/", &[]).await.unwrap();
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        up.requests(),
        1,
        "the denied request never reached the upstream"
    );
    let text = metrics(&gw).await;
    assert!(
        text.contains(
            "gatehouse_requests_rejected_total{listener=\"main\",reason=\"acl_denied\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_acl_answers_403_naming_the_client_address() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            "",
            r#"[[routes]]
name = "private"
path_prefix = "/private"
cluster = "c"
[routes.acl]
allow = ["127.0.0.2", "::1"]
[[routes]]
name = "public"
cluster = "c""#,
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");

    let denied = get_from("127.0.0.1", addr, "/private/x", &[])
        .await
        .unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(
        denied
            .text()
            .contains("client address 127.0.0.1 is not allowed on this route"),
        "{}",
        denied.text()
    );
    assert_eq!(header(&denied, "x-gatehouse-error"), "access_denied");
    assert_eq!(up.requests(), 0);

    // The same client on a route without an ACL, and an allowed client on the private one.
    let public = get_from("127.0.0.1", addr, "/elsewhere", &[])
        .await
        .unwrap();
    assert_eq!(public.status, StatusCode::OK);
    let allowed = get_from("127.0.0.2", addr, "/private/x", &[])
        .await
        .unwrap();
    assert_eq!(allowed.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_for_is_the_address_acls_and_rate_limits_see() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            "trusted_proxies = [\"127.0.0.1\"]",
            r#"[[routes]]
name = "partners"
path_prefix = "/partners"
cluster = "c"
[routes.acl]
allow = ["198.51.100.0/24"]
[[routes]]
name = "limited"
path_prefix = "/limited"
cluster = "c"
[routes.rate_limit]
rate = "1/min"
burst = 1
[[routes]]
name = "rest"
cluster = "c""#,
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let from_proxy = |xff: &'static str| async move {
        get_from("127.0.0.1", addr, "/partners", &[("x-forwarded-for", xff)])
            .await
            .unwrap()
    };

    // Via the trusted proxy: the client it names is let in, and the upstream sees the chain
    // with the proxy appended (not rewritten).
    let ok = from_proxy("198.51.100.7").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(
        ok.json()["headers"]["x-forwarded-for"],
        "198.51.100.7, 127.0.0.1"
    );
    // What the client wrote left of the proxy's entry is not believed either way.
    assert_eq!(
        from_proxy("203.0.113.9, 198.51.100.7").await.status,
        StatusCode::OK
    );
    let spoofed = from_proxy("198.51.100.7, 203.0.113.9").await;
    assert_eq!(spoofed.status, StatusCode::FORBIDDEN);
    assert!(spoofed.text().contains("203.0.113.9"), "{}", spoofed.text());
    // Garbage in the chain: the peer is the client.
    let garbage = from_proxy("not-an-address").await;
    assert!(garbage.text().contains("127.0.0.1"), "{}", garbage.text());

    // An untrusted peer's header is ignored: the ACL sees the peer.
    let untrusted = get_from(
        "127.0.0.2",
        addr,
        "/partners",
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await
    .unwrap();
    assert_eq!(untrusted.status, StatusCode::FORBIDDEN);
    assert!(
        untrusted.text().contains("127.0.0.2"),
        "{}",
        untrusted.text()
    );

    // The rate limit counts per real client: two clients behind one proxy have a quota each.
    let limited = |xff: &'static str| async move {
        get_from("127.0.0.1", addr, "/limited", &[("x-forwarded-for", xff)])
            .await
            .unwrap()
            .status
    };
    assert_eq!(limited("198.51.100.1").await, StatusCode::OK);
    assert_eq!(limited("198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited("198.51.100.2").await, StatusCode::OK);
    // An untrusted peer claiming to be the first client is counted as itself.
    let claim = get_from(
        "127.0.0.3",
        addr,
        "/limited",
        &[("x-forwarded-for", "198.51.100.1")],
    )
    .await
    .unwrap();
    assert_eq!(claim.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answers_429_with_retry_after_and_recovers() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            "",
            "[[routes]]\nname = \"api\"\ncluster = \"c\"\n[routes.rate_limit]\nrate = \"1/s\"\nburst = 2",
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();

    let first = get(&c, addr, "/", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(header(&first, "ratelimit-policy"), "\"default\";q=1;w=1");
    assert_eq!(header(&first, "ratelimit"), "\"default\";r=1;t=1");
    let second = get(&c, addr, "/", &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(header(&second, "ratelimit"), "\"default\";r=0;t=2");

    let refused = get(&c, addr, "/", &[]).await;
    let refused_at = Instant::now();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "ratelimit"), "\"default\";r=0;t=1");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"default\";q=1;w=1");
    assert_eq!(header(&refused, "x-gatehouse-error"), "rate_limited");
    assert!(
        refused.text().contains("rate limit exceeded"),
        "{}",
        refused.text()
    );
    // A refusal is still the route's answer: it carries the security headers too.
    assert_eq!(header(&refused, "x-content-type-options"), "nosniff");
    assert_eq!(
        up.requests(),
        2,
        "the refused request never reached the upstream"
    );

    // After Retry-After, the next request is admitted.
    tokio::time::sleep_until((refused_at + Duration::from_millis(1050)).into()).await;
    let again = get(&c, addr, "/", &[]).await;
    assert_eq!(again.status, StatusCode::OK);
    let text = metrics(&gw).await;
    assert!(
        text.contains("gatehouse_rate_limited_total{route=\"api\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_counts_survive_a_reload_unless_the_limit_changes() {
    let up = TestUpstream::start("up").await;
    let routes = |rate: &str, extra: &str| {
        format!(
            "[[routes]]\nname = \"api\"\ncluster = \"c\"\n[routes.rate_limit]\nrate = \"{rate}\"\nburst = 1\n{extra}"
        )
    };
    let gw = Gatehouse::start(bin(), &gateway_config("", &routes("1/min", ""), &up), &[]).await;
    let addr = gw.addr("main");
    let c = h1();
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Same limit (only the headers flag changed): the spent quota stays spent.
    gw.write_config(&gateway_config(
        "",
        &routes("1/min", "headers = false"),
        &up,
    ));
    reloaded(&gw, 2).await;
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A new limit starts afresh.
    gw.write_config(&gateway_config("", &routes("2/min", ""), &up));
    reloaded(&gw, 3).await;
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_capped_while_others_keep_working() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            "max_connections_per_ip = 2",
            "[[routes]]\ncluster = \"c\"",
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let local = ip("127.0.0.1");

    let mut first = Connection::open(local, addr).await.unwrap();
    let mut second = Connection::open(local, addr).await.unwrap();
    assert_eq!(first.get("/", &[]).await.unwrap().status, StatusCode::OK);
    assert_eq!(second.get("/", &[]).await.unwrap().status, StatusCode::OK);

    // A third connection from the same address is closed at once...
    let mut third = Connection::open(local, addr).await.unwrap();
    assert!(third.get("/", &[]).await.is_err());
    assert!(third.closed_within(Duration::from_secs(2)).await);
    // ...while another address connects, and the open connections keep serving.
    let other = get_from("127.0.0.2", addr, "/", &[]).await.unwrap();
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(first.get("/", &[]).await.unwrap().status, StatusCode::OK);

    // Closing one frees its slot.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(3);
    let reopened = loop {
        if let Ok(answer) = get_from("127.0.0.1", addr, "/", &[]).await {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reopened.status, StatusCode::OK);
    let text = metrics(&gw).await;
    assert!(
        text.contains(
            "gatehouse_requests_rejected_total{listener=\"main\",reason=\"per_ip_limit\"}"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_by_default_overridden_removed_and_no_hsts_over_http() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            "",
            r#"[[routes]]
name = "custom"
path_prefix = "/custom"
cluster = "c"
[routes.security_headers]
x_frame_options = "SAMEORIGIN"
referrer_policy = ""
[[routes]]
name = "override"
path_prefix = "/override"
cluster = "c"
[routes.security_headers]
override = true
[[routes]]
name = "off"
path_prefix = "/off"
cluster = "c"
[routes.security_headers]
enabled = false
[[routes]]
name = "default"
cluster = "c""#,
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();

    for client in [h1(), h2()] {
        let plain = get(&client, addr, "/", &[]).await;
        assert_eq!(header(&plain, "x-content-type-options"), "nosniff");
        assert_eq!(header(&plain, "x-frame-options"), "DENY");
        assert_eq!(
            header(&plain, "referrer-policy"),
            "strict-origin-when-cross-origin"
        );
        // HSTS only on HTTPS: a browser ignores it over HTTP anyway.
        assert!(!plain.headers.contains_key("strict-transport-security"));
    }

    let custom = get(&c, addr, "/custom", &[]).await;
    assert_eq!(header(&custom, "x-frame-options"), "SAMEORIGIN");
    assert!(!custom.headers.contains_key("referrer-policy"));
    assert_eq!(header(&custom, "x-content-type-options"), "nosniff");

    // The upstream's own value wins, unless the route overrides it.
    let framed = [("x-respond-header", "X-Frame-Options: SAMEORIGIN")];
    let kept = get(&c, addr, "/", &framed).await;
    assert_eq!(header(&kept, "x-frame-options"), "SAMEORIGIN");
    let replaced = get(&c, addr, "/override", &framed).await;
    assert_eq!(header(&replaced, "x-frame-options"), "DENY");
    assert_eq!(
        replaced.headers.get_all("x-frame-options").iter().count(),
        1
    );

    let off = get(&c, addr, "/off", &[]).await;
    for name in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(
            !off.headers.contains_key(name),
            "{name} on a route without headers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_sent_on_https_responses_and_can_be_changed_or_removed() {
    use gatehouse_test_support::process::temp_dir;
    use gatehouse_test_support::tls::{HttpsSession, TestCa};

    let dir = temp_dir("gh-protect-hsts");
    let ca = TestCa::new(&dir);
    let cert = ca.server("site", &["localhost"]);
    let up = TestUpstream::start("up").await;
    let listener = format!(
        "[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]",
        cert.cert.display(),
        cert.key.display()
    );
    let gw = Gatehouse::start(
        bin(),
        &gateway_config(
            &listener,
            r#"[[routes]]
name = "short"
path_prefix = "/short"
cluster = "c"
[routes.security_headers]
strict_transport_security = "max-age=300"
[[routes]]
name = "none"
path_prefix = "/none"
cluster = "c"
[routes.security_headers]
strict_transport_security = ""
[[routes]]
name = "default"
cluster = "c""#,
            &up,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");

    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let config = ca.client_config(&[alpn], None);
        // A fresh connection per request: an HTTP/1.1 session is not waited on between them.
        let get = async |path: &str| {
            let mut session = HttpsSession::open(addr, "localhost", config.clone())
                .await
                .unwrap();
            session.get(path, &[]).await.unwrap()
        };
        let answer = get("/").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.headers["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
        let short = get("/short").await;
        assert_eq!(short.headers["strict-transport-security"], "max-age=300");
        let none = get("/none").await;
        assert!(!none.headers.contains_key("strict-transport-security"));
        assert_eq!(none.headers["x-frame-options"], "DENY");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_hashing_uses_the_client_a_trusted_proxy_names() {
    let ups = [
        TestUpstream::start("u1").await,
        TestUpstream::start("u2").await,
        TestUpstream::start("u3").await,
    ];
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            "trusted_proxies = [\"127.0.0.1\"]\n[[routes]]\ncluster = \"h\"\n[[clusters]]\nname = \"h\"\nbalance = \"ring_hash\"\nhash_on = \"client_ip\"\nendpoints = {}\n",
            endpoints(&[&ups[0], &ups[1], &ups[2]])
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    let upstream_for = async |client: &str| {
        get(&c, addr, "/", &[("x-forwarded-for", client)])
            .await
            .upstream()
    };
    // One client behind the proxy always lands on one upstream...
    let first = upstream_for("203.0.113.7").await;
    for _ in 0..10 {
        assert_eq!(upstream_for("203.0.113.7").await, first);
    }
    // ...while the proxy's many clients spread: every request comes from the same TCP peer,
    // so a hash of the peer would send them all to one upstream.
    let mut seen = std::collections::HashSet::new();
    for i in 1..=60 {
        seen.insert(upstream_for(&format!("198.51.100.{i}")).await);
    }
    assert!(seen.len() >= 2, "all clients hashed alike: {seen:?}");
}
