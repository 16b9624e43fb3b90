//! Resilience end to end: real upstreams that die, refuse, reset and fail on purpose, behind the
//! real binary. Health checks, outlier ejection, safe retries under a budget, deadlines.

mod common;

use bytes::Bytes;
use common::*;
use gatehouse_test_support::{Gatehouse, TestUpstream};
use http::{Method, StatusCode};
use std::time::{Duration, Instant};

/// A cluster "c" over `endpoints` (TOML list) with extra cluster settings appended.
fn cluster(endpoints: &str, settings: &str) -> String {
    config(&format!(
        "[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = {endpoints}\n{settings}\n"
    ))
}

/// An address nothing listens on.
fn closed_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_dead_endpoints_out_and_bring_them_back() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let b_addr = b.addr;
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &endpoints(&[&a, &b]),
            r#"[clusters.health_check]
path = "/status/200"
interval = "100ms"
jitter = "10ms"
timeout = "200ms"
rise = 1
fall = 1
[clusters.retry]
attempts = 1
[clusters.outlier]
enabled = false"#,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();

    b.stop();
    // Once a check has failed, every request goes to a, with no retry needed.
    assert!(
        eventually(Duration::from_secs(3), async || {
            let mut answers = Vec::new();
            for _ in 0..10 {
                answers.push(get(&c, addr, "/", &[]).await);
            }
            answers
                .iter()
                .all(|x| x.status == StatusCode::OK && x.upstream() == "a")
        })
        .await,
        "b stayed in rotation"
    );
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(
        metrics.contains(&format!(
            "gatehouse_endpoint_healthy{{cluster=\"c\",endpoint=\"{b_addr}\"}} 0"
        )),
        "{metrics}"
    );

    a.stop();
    assert!(
        eventually(Duration::from_secs(3), async || {
            get(&c, addr, "/", &[]).await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "no 503 with every endpoint down"
    );
    let answer = get(&c, addr, "/", &[]).await;
    assert!(
        answer.text().contains("no healthy endpoint"),
        "{}",
        answer.text()
    );

    // b comes back on its old address: the checks put it back in rotation.
    let listener = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let _b_again = TestUpstream::serve("b-again", listener);
    assert!(
        eventually(Duration::from_secs(3), async || {
            let x = get(&c, addr, "/", &[]).await;
            x.status == StatusCode::OK && x.upstream() == "b-again"
        })
        .await,
        "b did not come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_upstreams_under_load_loses_no_get() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let doomed = TestUpstream::start("doomed").await;
    // Default settings: two tries, the retry budget, outlier detection.
    let gw = gateway_to(&[&a, &b, &doomed]).await;
    let addr = gw.addr("main");

    let load = SteadyLoad::start(addr, 4);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = doomed.requests();
    doomed.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, failed) = load.finish().await;
    assert!(before > 10, "the doomed upstream took traffic first");
    assert_eq!(failed, 0, "GETs were lost");
    assert!(ok > 200, "the load actually ran");
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(
        metrics.contains("gatehouse_retries_total{cluster=\"c\""),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gatehouse_outlier_ejections_total{{cluster=\"c\",endpoint=\"{}\",reason=\"consecutive_gateway_failure\"}} 1",
            doomed.addr
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &cluster(&endpoints(&[&up]), "[clusters.outlier]\nenabled = false"),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    let post = |headers: &'static [(&'static str, &'static str)]| {
        send(
            &c,
            Method::POST,
            addr,
            "/reset",
            headers,
            Bytes::from_static(b"order"),
        )
    };

    assert_eq!(post(&[]).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.requests(), 1, "a POST without a key is never sent twice");

    assert_eq!(
        post(&[("idempotency-key", "order-17")]).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(up.requests(), 3, "a keyed POST is retried (body replayed)");

    assert_eq!(
        get(&c, addr, "/reset", &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(up.requests(), 5, "a GET is retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_load_when_every_endpoint_fails() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &endpoints(&[&a, &b]),
            r#"[clusters.retry]
attempts = 5
budget_percent = 20
budget_min_per_second = 0
backoff_base = "1ms"
backoff_max = "2ms"
[clusters.outlier]
enabled = false"#,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    const REQUESTS: u64 = 300;
    for _ in 0..REQUESTS {
        let answer = get(&c, addr, "/status/503", &[]).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let upstream = a.requests() + b.requests();
    // Without a budget 5 tries each would make 1500.
    assert!(upstream > REQUESTS, "some retries ran: {upstream}");
    assert!(
        upstream <= REQUESTS + REQUESTS / 5 + 1,
        "retries exceeded 20% of requests: {upstream}"
    );
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(
        metrics.contains("gatehouse_retries_refused_total{cluster=\"c\",reason=\"budget\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_returns_it() {
    let good = TestUpstream::start("good").await;
    let bad = closed_addr();
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &format!("[\"{}\", \"{bad}\"]", good.addr),
            r#"[clusters.retry]
attempts = 1
[clusters.outlier]
consecutive_gateway_failures = 3
base_ejection = "1s"
max_ejection_percent = 50"#,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    let mut failures = 0;
    for _ in 0..30 {
        if get(&c, addr, "/", &[]).await.status != StatusCode::OK {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "ejected after exactly 3 consecutive failures");
    let view = get(&c, gw.admin.unwrap(), "/clusters", &[]).await.json();
    let bad_view = view["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == bad.to_string())
        .cloned()
        .unwrap();
    assert_eq!(bad_view["in_rotation"], false, "{view}");
    assert!(bad_view["ejected_for_ms"].as_u64().unwrap() > 0, "{view}");

    // The endpoint comes alive; once its ejection is over it takes traffic again.
    let listener = tokio::net::TcpListener::bind(bad).await.unwrap();
    let revived = TestUpstream::serve("revived", listener);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(get(&c, addr, "/", &[]).await.upstream());
        }
        v
    };
    assert!(seen.iter().any(|u| u == "revived"), "{seen:?}");
    assert!(revived.requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_shrink_hop_by_hop_and_expired_ones_never_reach_upstream() {
    let up = TestUpstream::start("up").await;
    let inner = gateway_to(&[&up]).await;
    let outer = Gatehouse::start(
        bin(),
        &cluster(&format!("[\"{}\"]", inner.addr("main")), ""),
        &[],
    )
    .await;
    let c = h1();

    let answer = get(
        &c,
        outer.addr("main"),
        "/",
        &[("x-gatehouse-timeout", "5s")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen: u64 = answer.json()["headers"]["x-gatehouse-timeout"]
        .as_str()
        .expect("the budget reached the upstream")
        .parse()
        .unwrap();
    assert!(
        (1..=4998).contains(&seen),
        "two hops each pass on less than they got: {seen}"
    );

    // Spent before it arrives: 504 at once, the upstream never sees it.
    let before = up.requests();
    let gone = get(&c, outer.addr("main"), "/", &[("x-gatehouse-timeout", "0")]).await;
    assert_eq!(gone.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(up.requests(), before);

    // A budget shorter than the upstream's answer: 504 after the budget, not the route timeout.
    let started = Instant::now();
    let slow = get(
        &c,
        outer.addr("main"),
        "/slow/3000",
        &[("x-gatehouse-timeout", "300ms")],
    )
    .await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_answers_fast_half_opens_and_closes() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &endpoints(&[&up]),
            r#"[clusters.breaker]
consecutive_failures = 3
open = "1s"
half_open_successes = 1
[clusters.outlier]
enabled = false"#,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    for _ in 0..3 {
        assert_eq!(
            get(&c, addr, "/status/500", &[]).await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // Open: answered at once, without the upstream.
    let before = up.requests();
    let open = get(&c, addr, "/", &[]).await;
    assert_eq!(open.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(open.headers["x-gatehouse-error"], "circuit_open");
    assert_eq!(open.headers["retry-after"], "1");
    assert_eq!(
        up.requests(),
        before,
        "an open breaker sends nothing upstream"
    );
    let view = get(&c, gw.admin.unwrap(), "/clusters", &[]).await.json();
    assert_eq!(view["clusters"][0]["breaker"], "open", "{view}");

    // After the open time one probe goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    }
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    for state in ["open", "half_open", "closed"] {
        assert!(
            metrics.contains(&format!(
                "gatehouse_breaker_transitions_total{{cluster=\"c\",endpoint=\"*\",state=\"{state}\"}} 1"
            )),
            "{state}: {metrics}"
        );
    }
    assert!(gw.stderr().contains("circuit breaker open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_runs_a_post_once() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let c = h1();
    let pay = async |key: &str, body: &'static [u8], path: &str| {
        let headers = [("idempotency-key", key)];
        send(
            &c,
            Method::POST,
            addr,
            path,
            &headers,
            Bytes::from_static(body),
        )
        .await
    };

    let first = pay("order-1", b"pay 5", "/charge").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.headers.get("idempotent-replayed").is_none());
    for _ in 0..4 {
        let again = pay("order-1", b"pay 5", "/charge").await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body, first.body, "the stored answer, byte for byte");
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    assert_eq!(
        up.requests(),
        1,
        "five identical POSTs reached the upstream once"
    );

    // The same key for another payload is refused.
    let other = pay("order-1", b"pay 500", "/charge").await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(up.requests(), 1);

    // A repeat while the first is still running: 409.
    let slow = tokio::spawn({
        let c = h1();
        async move {
            send(
                &c,
                Method::POST,
                addr,
                "/slow/600",
                &[("idempotency-key", "order-2")],
                Bytes::from_static(b"x"),
            )
            .await
            .status
        }
    });
    // Once the upstream has it, the first is certainly still running (it takes 600 ms).
    let running = eventually(Duration::from_secs(5), async || up.requests() == 2).await;
    assert!(running, "the slow request never reached the upstream");
    assert_eq!(
        pay("order-2", b"x", "/slow/600").await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(
        pay("order-2", b"x", "/slow/600").await.headers["idempotent-replayed"],
        "true"
    );

    // A failed attempt (no upstream answer) releases the key: the client's retry runs.
    up.stop();
    assert_eq!(
        pay("order-3", b"y", "/charge").await.status,
        StatusCode::BAD_GATEWAY
    );
    let listener = tokio::net::TcpListener::bind(up.addr).await.unwrap();
    let back = TestUpstream::serve("back", listener);
    assert_eq!(pay("order-3", b"y", "/charge").await.status, StatusCode::OK);
    assert_eq!(back.requests(), 1);

    // An answer long enough to be spliced socket to socket were the recording not reading
    // it: recorded whole, replayed whole.
    let long = pay("order-long", b"x", "/bytes/40000").await;
    let replayed = pay("order-long", b"x", "/bytes/40000").await;
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!(long.body.len(), 40_000);
    assert_eq!(replayed.body, long.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_and_cleared_through_the_admin_api() {
    const TOKEN: &str = "fault-token-0123456789";
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &format!(
            r#"[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[[listeners]]
name = "main"
listen = "127.0.0.1:0"
[[routes]]
name = "r"
cluster = "c"
[[clusters]]
name = "c"
endpoints = {}
"#,
            endpoints(&[&up])
        ),
        &[],
    )
    .await;
    let (addr, admin) = (gw.addr("main"), gw.admin.unwrap());
    let c = h1();
    let auth = format!("Bearer {TOKEN}");
    let admin_send = async |method: Method, path: &str, body: &'static str, auth: &str| {
        send(
            &c,
            method,
            admin,
            path,
            &[("authorization", auth)],
            Bytes::from_static(body.as_bytes()),
        )
        .await
    };

    // Writes need the token; unknown targets and bad bodies are refused clearly.
    let refused = admin_send(
        Method::PUT,
        "/faults/route/r",
        r#"{"abort_percent":100}"#,
        "Bearer wrong",
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let unknown = admin_send(Method::PUT, "/faults/route/nope", "{}", &auth).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = admin_send(
        Method::PUT,
        "/faults/route/r",
        r#"{"abort_percent":"all"}"#,
        &auth,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("abort_percent"), "{}", bad.text());

    // Abort every request on the route.
    let set = admin_send(
        Method::PUT,
        "/faults/route/r",
        r#"{"abort_status":418,"abort_percent":100}"#,
        &auth,
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    let aborted = get(&c, addr, "/", &[]).await;
    assert_eq!(aborted.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(aborted.headers["x-gatehouse-error"], "fault_injected");
    assert_eq!(up.requests(), 0);
    let listed = get(&c, admin, "/faults", &[]).await.json();
    assert_eq!(listed["faults"][0]["abort_status"], 418);

    // Latency on the cluster instead.
    assert_eq!(
        admin_send(Method::DELETE, "/faults/route/r", "", &auth)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    admin_send(
        Method::PUT,
        "/faults/cluster/c",
        r#"{"delay":"300ms","delay_percent":100}"#,
        &auth,
    )
    .await;
    let started = Instant::now();
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Cleared: back to normal.
    admin_send(Method::DELETE, "/faults/cluster/c", "", &auth).await;
    let started = Instant::now();
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(
        get(&c, admin, "/faults", &[]).await.json()["faults"],
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_cuts_a_slow_tail_for_safe_requests_only() {
    let fast = TestUpstream::start("fast").await;
    let slow = TestUpstream::start("slow").await;
    slow.set_delay(Duration::from_millis(800));
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            r#"[[routes]]
name = "r"
cluster = "c"
[routes.hedge]
max_delay = "50ms"
[[clusters]]
name = "c"
endpoints = {}
"#,
            endpoints(&[&fast, &slow])
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    for _ in 0..6 {
        let started = Instant::now();
        let answer = get(&c, addr, "/", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.upstream(), "fast");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a GET waited for the slow endpoint: {:?}",
            started.elapsed()
        );
    }
    assert!(
        slow.requests() > 0,
        "round robin did send firsts to the slow endpoint"
    );
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(
        metrics.contains("gatehouse_hedged_requests_total{cluster=\"c\""),
        "{metrics}"
    );

    // A POST is never sent twice: it waits for whichever endpoint it went to.
    let mut slow_posts = 0;
    for _ in 0..2 {
        let started = Instant::now();
        let answer = send(&c, Method::POST, addr, "/", &[], Bytes::from_static(b"x")).await;
        if answer.upstream() == "slow" {
            slow_posts += 1;
            assert!(started.elapsed() >= Duration::from_millis(800));
        }
    }
    assert_eq!(
        slow_posts, 1,
        "round robin sends one of two POSTs to the slow endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_try_timeout_follows_the_clusters_latency() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &endpoints(&[&up]),
            r#"[clusters.adaptive_timeout]
quantile = 99
factor = 3
floor = "10ms"
min = "100ms"
max = "5s"
[clusters.outlier]
enabled = false"#,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    // Learn: fast answers (one try in four is sampled; 5 samples are needed).
    for _ in 0..100 {
        assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    }
    // The learned timeout is recomputed every 100 ms.
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A try far slower than usual is cut at the learned timeout (about 100 ms), not at the
    // route's 60 s: two tries, then 504.
    let started = Instant::now();
    let slow = get(&c, addr, "/slow/3000", &[]).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.headers["x-gatehouse-error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // The first try waited 100 ms; that wait raised the estimate, so the retry waited longer.
    assert!(
        slow.text().contains("sent no response within"),
        "{}",
        slow.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_far_slower_than_its_peers_is_ejected() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let slow = TestUpstream::start("slow").await;
    slow.set_delay(Duration::from_millis(60));
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &endpoints(&[&a, &b, &slow]),
            "[clusters.outlier]\nlatency_factor = 3\nmax_ejection_percent = 34",
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    // Enough samples on every endpoint (25 of its ~210 tries: one in four is sampled), from 8
    // clients at once.
    let mut load = Vec::new();
    for _ in 0..8 {
        load.push(tokio::spawn(async move {
            let c = h1();
            for _ in 0..80 {
                assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
            }
        }));
    }
    for t in load {
        t.await.unwrap();
    }
    // The periodic pass (every second) compares p99s and ejects the slow one.
    let c = h1();
    assert!(
        eventually(Duration::from_secs(4), async || {
            get(&h1(), gw.admin.unwrap(), "/metrics", &[])
                .await
                .text()
                .contains("reason=\"latency\"} 1")
        })
        .await,
        "the slow endpoint was not ejected"
    );
    let before = slow.requests();
    for _ in 0..20 {
        get(&c, addr, "/", &[]).await;
    }
    assert_eq!(
        slow.requests(),
        before,
        "an ejected endpoint gets no traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_endpoint_takes_traffic_slowly_at_first() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let b_addr = b.addr;
    let gw = Gatehouse::start(
        bin(),
        &cluster(
            &endpoints(&[&a, &b]),
            r#"[clusters.health_check]
path = "/status/200"
interval = "50ms"
jitter = "5ms"
rise = 1
fall = 1
slow_start = "3s""#,
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    b.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let b = TestUpstream::serve("b", listener);
    // Back in rotation, but at about 10-25% of its round-robin share during the first moments.
    assert!(
        eventually(Duration::from_secs(2), async || b.requests() > 0 || {
            get(&c, addr, "/", &[]).await;
            false
        })
        .await
    );
    let share = |answers: &[String]| {
        answers.iter().filter(|u| *u == "b").count() as f64 / answers.len() as f64
    };
    let mut early = Vec::new();
    for _ in 0..200 {
        early.push(get(&c, addr, "/", &[]).await.upstream());
    }
    assert!(
        share(&early) < 0.35,
        "b took {:.0}% at once",
        share(&early) * 100.0
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut later = Vec::new();
    for _ in 0..200 {
        later.push(get(&c, addr, "/", &[]).await.upstream());
    }
    assert!(
        share(&later) > 0.4,
        "b took {:.0}% after the ramp",
        share(&later) * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_can_come_from_the_config_file_and_reloads_change_them() {
    let up = TestUpstream::start("up").await;
    let with_fault = |fault: &str| {
        config(&format!(
            "[[routes]]\nname = \"r\"\ncluster = \"c\"\n{fault}\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
            endpoints(&[&up])
        ))
    };
    let gw = Gatehouse::start(
        bin(),
        &with_fault("[routes.fault]\nabort_status = 418\nabort_percent = 100"),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::IM_A_TEAPOT
    );
    let listed = get(&c, gw.admin.unwrap(), "/faults", &[]).await.json();
    assert_eq!(listed["faults"][0]["abort_status"], 418, "{listed}");
    assert_eq!(up.requests(), 0);

    // A reload without the fault clears it.
    gw.write_config(&with_fault(""));
    gw.signal("HUP");
    let cleared = eventually(Duration::from_secs(5), async || {
        get(&c, addr, "/", &[]).await.status == StatusCode::OK
    })
    .await;
    assert!(cleared, "the fault outlived its removal from the config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_answer_without_a_body_is_replayed_too() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let c = h1();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            send(
                &c,
                Method::POST,
                gw.addr("main"),
                "/status/204",
                &[("idempotency-key", "empty-1")],
                Bytes::new(),
            )
            .await,
        );
    }
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    assert!(answers[0].headers.get("idempotent-replayed").is_none());
    assert_eq!(answers[2].headers["idempotent-replayed"], "true");
    assert_eq!(up.requests(), 1, "the repeats were answered from the store");
}
