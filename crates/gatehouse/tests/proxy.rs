//! End to end: routing, proxy header semantics, HTTP/1.1 and h2c on both sides, streaming.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_method_and_header() {
    let api = TestUpstream::start("api").await;
    let wild = TestUpstream::start("wild").await;
    let canary = TestUpstream::start("canary").await;
    let posts = TestUpstream::start("posts").await;
    let fallback = TestUpstream::start("fallback").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            r#"
[[routes]]
hosts = ["api.example.com"]
headers = {{ "x-canary" = "1" }}
cluster = "canary"
[[routes]]
hosts = ["api.example.com"]
path_prefix = "/v1/"
cluster = "api"
[[routes]]
hosts = ["*.example.com"]
cluster = "wild"
[[routes]]
path = "/submit"
methods = ["POST"]
cluster = "posts"
[[routes]]
path_prefix = "/"
cluster = "fallback"
[[clusters]]
name = "api"
endpoints = {}
[[clusters]]
name = "wild"
endpoints = {}
[[clusters]]
name = "canary"
endpoints = {}
[[clusters]]
name = "posts"
endpoints = {}
[[clusters]]
name = "fallback"
endpoints = {}
"#,
            endpoints(&[&api]),
            endpoints(&[&wild]),
            endpoints(&[&canary]),
            endpoints(&[&posts]),
            endpoints(&[&fallback])
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    let host = |h: &'static str| [("host", h)];
    assert_eq!(
        get(&c, addr, "/v1/users", &host("api.example.com"))
            .await
            .upstream(),
        "api"
    );
    assert_eq!(
        get(&c, addr, "/v1/users", &host("API.Example.com:8080"))
            .await
            .upstream(),
        "api"
    );
    assert_eq!(
        get(
            &c,
            addr,
            "/v1/x",
            &[("host", "api.example.com"), ("x-canary", "1")]
        )
        .await
        .upstream(),
        "canary"
    );
    // Exact host without a matching path falls through to the wildcard.
    assert_eq!(
        get(&c, addr, "/other", &host("api.example.com"))
            .await
            .upstream(),
        "wild"
    );
    assert_eq!(
        get(&c, addr, "/", &host("shop.example.com"))
            .await
            .upstream(),
        "wild"
    );
    assert_eq!(
        get(&c, addr, "/", &host("example.com")).await.upstream(),
        "fallback"
    );
    let post = send(
        &c,
        Method::POST,
        addr,
        "/submit",
        &[],
        Bytes::from_static(b"x"),
    )
    .await;
    assert_eq!(post.upstream(), "posts");
    assert_eq!(get(&c, addr, "/submit", &[]).await.upstream(), "fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_requests_get_404() {
    let up = TestUpstream::start("only").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            "[[routes]]\npath_prefix = \"/app\"\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
            endpoints(&[&up])
        )),
        &[],
    )
    .await;
    let answer = get(&h1(), gw.addr("main"), "/elsewhere", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.text().contains("no route"), "{}", answer.text());
    assert_eq!(answer.headers["x-gatehouse-error"], "no_route");
    assert_eq!(
        answer.headers["x-request-id"].len(),
        32,
        "an answer without a route has an id"
    );
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_are_rewritten() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            r#"
[[routes]]
path_prefix = "/rewrite"
host_rewrite = "internal.svc"
cluster = "c"
[[routes]]
path_prefix = "/plain"
forward_headers = []
cluster = "c"
[[routes]]
path_prefix = "/only-for"
forward_headers = ["x-forwarded-for"]
cluster = "c"
[[routes]]
cluster = "c"
[[clusters]]
name = "c"
endpoints = {}
"#,
            endpoints(&[&up])
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    let answer = get(
        &c,
        addr,
        "/echo?q=1",
        &[
            ("host", "shop.test"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "client-id-1"),
            ("x-custom", "kept"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.json();
    let h = &seen["headers"];
    assert_eq!(seen["query"], "q=1");
    assert_eq!(h["host"], "shop.test", "Host is preserved");
    assert!(
        h.get("x-hop").is_none(),
        "headers named by Connection are removed: {h}"
    );
    assert!(h.get("keep-alive").is_none());
    assert!(h.get("proxy-authorization").is_none());
    assert_eq!(h["te"], "trailers", "TE: trailers survives for gRPC");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test");
    assert_eq!(h["via"], "1.1 gatehouse");
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(answer.headers["x-request-id"], "client-id-1");
    assert!(
        answer.headers["via"]
            .to_str()
            .unwrap()
            .contains("gatehouse")
    );

    // Without a request id one is generated and passed both ways.
    let answer = get(&c, addr, "/", &[]).await;
    let generated = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    assert_eq!(answer.json()["headers"]["x-request-id"], generated.as_str());

    let answer = get(&c, addr, "/rewrite", &[("host", "shop.test")]).await;
    assert_eq!(answer.json()["headers"]["host"], "internal.svc");
    assert_eq!(answer.json()["headers"]["x-forwarded-host"], "shop.test");

    // A Connection field that names Host (or this hop's own fields) cannot take them away.
    let answer = get(
        &c,
        addr,
        "/",
        &[
            ("host", "shop.test"),
            ("connection", "host, x-forwarded-for, via"),
        ],
    )
    .await;
    let h = &answer.json()["headers"];
    assert_eq!(h["host"], "shop.test", "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["via"], "1.1 gatehouse");

    // A route that adds none of this hop's fields passes the client's as they came, and adds
    // neither Via nor the request id to the response; one that adds some adds only those.
    let client_fields = [
        ("host", "shop.test"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "client-id-2"),
    ];
    let answer = get(&c, addr, "/plain", &client_fields).await;
    let h = &answer.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9", "{h}");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-request-id"], "client-id-2");
    assert!(
        h.get("x-forwarded-host").is_none() && h.get("via").is_none(),
        "{h}"
    );
    assert!(
        answer.headers.get("x-request-id").is_none() && answer.headers.get("via").is_none(),
        "{:?}",
        answer.headers
    );
    let answer = get(&c, addr, "/plain", &[]).await;
    let h = &answer.json()["headers"];
    assert!(
        h.get("x-forwarded-for").is_none() && h.get("x-request-id").is_none(),
        "{h}"
    );
    assert!(answer.headers.get("x-request-id").is_none());
    let answer = get(&c, addr, "/only-for", &client_fields).await;
    let h = &answer.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert!(h.get("via").is_none(), "{h}");
    assert!(answer.headers.get("via").is_none() && answer.headers.get("x-request-id").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_and_h2_upstreams() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            r#"
[[routes]]
path_prefix = "/h2up"
cluster = "h2"
[[routes]]
cluster = "h1"
[[clusters]]
name = "h1"
endpoints = {e}
[[clusters]]
name = "h2"
protocol = "h2"
endpoints = {e}
"#,
            e = endpoints(&[&up])
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    // h2c client -> HTTP/1.1 upstream.
    let answer = get(&h2(), addr, "/x", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["version"], "HTTP/1.1");
    assert_eq!(answer.json()["headers"]["via"], "2 gatehouse");
    assert_eq!(answer.json()["headers"]["host"], addr.to_string());
    // HTTP/1.1 client -> h2 upstream, many concurrent requests on the one multiplexed connection.
    let c = h1();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            get(&c, addr, &format!("/h2up/{i}"), &[("host", "svc.test")]).await
        }));
    }
    for t in tasks {
        let answer = t.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["version"], "HTTP/2.0");
        assert_eq!(answer.json()["headers"].get("host"), None);
    }
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    let h2_connects = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_upstream_connections_total{cluster=\"h2\""))
        .expect("h2 connect metric");
    assert!(
        h2_connects.ends_with(" 1"),
        "one multiplexed connection: {h2_connects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_to_upstreams_are_reused() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let c = h1();
    // The upstream's long bodies: a 64 KiB pattern, repeated.
    let expected: Vec<u8> = (0..300_000usize)
        .map(|i| (i % 65_536 % 251) as u8)
        .collect();
    for i in 0..50 {
        // Every fifth answer is long enough to be spliced socket to socket: its connection
        // must come back clean for the next request.
        let path = if i % 5 == 0 { "/bytes/300000" } else { "/" };
        let answer = get(&c, gw.addr("main"), path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        if i % 5 == 0 {
            assert!(
                answer.body == expected,
                "request {i}: the long body arrived intact"
            );
        }
    }
    let metrics = get(&c, gw.admin.unwrap(), "/metrics", &[]).await.text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_upstream_connections_total{cluster=\"c\""))
        .expect("metric");
    let opened: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        opened <= 3,
        "50 sequential requests should reuse connections, opened {opened}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_histograms_count_requests_by_route_and_endpoint() {
    let fast = TestUpstream::start("fast").await;
    let slow = TestUpstream::start("slow").await;
    let gw = gateway_to(&[&fast, &slow]).await;
    let c = h1();
    // Round robin: three requests each; the slow one answers each after 200 ms.
    for _ in 0..3 {
        for path in ["/", "/slow/200"] {
            assert_eq!(
                get(&c, gw.addr("main"), path, &[]).await.status,
                StatusCode::OK
            );
        }
    }
    let metrics = get(&c, gw.admin.unwrap(), "/metrics", &[]).await.text();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("gatehouse_http_request_duration_seconds_count{route="),
        6.0
    );
    let mut slow_endpoint_sum = 0.0;
    for up in [&fast, &slow] {
        let series = format!("{{cluster=\"c\",endpoint=\"{}\"}}", up.addr);
        let count = value(&format!(
            "gatehouse_upstream_response_duration_seconds_count{series}"
        ));
        let sum = value(&format!(
            "gatehouse_upstream_response_duration_seconds_sum{series}"
        ));
        assert!(count > 0.0, "{series}: {metrics}");
        if sum >= 0.6 {
            slow_endpoint_sum += sum;
        }
    }
    // Whichever endpoint got the three slow requests shows their 600 ms or more.
    assert!(slow_endpoint_sum >= 0.6, "{metrics}");
}
