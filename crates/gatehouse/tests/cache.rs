//! The shared HTTP cache end to end: the real binary in front of a test upstream that counts
//! requests and answers with the caching headers each request asks for
//! (`x-respond-header: Cache-Control: max-age=60`), and 304 when its validators match.

mod common;

use bytes::Bytes;
use common::*;
use gatehouse_test_support::{Gatehouse, TestUpstream};
use http::{Method, StatusCode};
use std::time::Duration;

const TOKEN: &str = "cache-test-token-0123456789";

/// One cached route "r" over `upstream`, with `cache` settings appended to the file.
async fn cached(upstream: &TestUpstream, top: &str, route: &str) -> Gatehouse {
    let config = format!(
        r#"
{top}
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listeners]]
name = "main"
listen = "127.0.0.1:0"

[[routes]]
name = "r"
cluster = "c"
[routes.cache]
{route}

[[clusters]]
name = "c"
endpoints = ["{}"]
"#,
        upstream.addr
    );
    Gatehouse::start(bin(), &config, &[]).await
}

fn status_of(answer: &Answer) -> String {
    answer
        .headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

fn served(answer: &Answer) -> String {
    answer
        .headers
        .get("x-served")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

async fn metrics(gw: &Gatehouse) -> String {
    get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_are_served_from_the_cache() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let cc = [("x-respond-header", "Cache-Control: max-age=60")];

    let first = get(&c, addr, "/fresh", &cc).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        status_of(&first),
        "gatehouse; fwd=miss; fwd-status=200; stored"
    );
    let second = get(&c, addr, "/fresh", &cc).await;
    assert_eq!(status_of(&second), "gatehouse; hit");
    assert_eq!(second.body, first.body);
    assert_eq!(served(&second), "1");
    assert!(second.headers.contains_key("age"));
    // HTTP/2 clients share the entry (the host comes from :authority).
    let over_h2 = get(&h2(), addr, "/fresh", &cc).await;
    assert_eq!(status_of(&over_h2), "gatehouse; hit");
    assert_eq!(over_h2.body, first.body);
    // HEAD is answered from the stored GET.
    let head = send(&c, Method::HEAD, addr, "/fresh", &cc, Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(status_of(&head), "gatehouse; hit");
    // The query is part of the key.
    let other = get(&c, addr, "/fresh?v=2", &cc).await;
    assert!(status_of(&other).contains("fwd=miss"));
    assert_eq!(up.requests(), 2);

    let text = metrics(&gw).await;
    assert!(
        text.contains(r#"gatehouse_cache_requests_total{route="r",result="hit"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gatehouse_cache_requests_total{route="r",result="miss"} 2"#),
        "{text}"
    );
    assert!(text.contains("gatehouse_cache_objects 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_a_304_refreshes_them() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    // no-cache: stored, but validated before every use.
    let headers = [
        ("x-respond-header", "Cache-Control: no-cache"),
        ("x-respond-header", "ETag: \"v1\""),
    ];
    let first = get(&c, addr, "/reval", &headers).await;
    assert_eq!(
        status_of(&first),
        "gatehouse; fwd=miss; fwd-status=200; stored"
    );
    let second = get(&c, addr, "/reval", &headers).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(status_of(&second), "gatehouse; fwd=stale; fwd-status=304");
    // The stored body, with the 304's fields merged in.
    assert_eq!(second.body, first.body);
    assert_eq!(served(&second), "2");
    assert_eq!(up.requests(), 2);
    assert!(
        metrics(&gw)
            .await
            .contains(r#"gatehouse_cache_requests_total{route="r",result="revalidated"} 1"#)
    );

    // A client's own conditional request on a fresh entry is answered by the cache.
    let fresh = [
        ("x-respond-header", "Cache-Control: max-age=60"),
        ("x-respond-header", "ETag: \"v7\""),
    ];
    get(&c, addr, "/cond", &fresh).await;
    let conditional = get(
        &c,
        addr,
        "/cond",
        &[fresh[0], fresh[1], ("if-none-match", "\"v7\"")],
    )
    .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    assert_eq!(status_of(&conditional), "gatehouse; hit");
    assert!(conditional.body.is_empty());
    let other = get(
        &c,
        addr,
        "/cond",
        &[fresh[0], fresh[1], ("if-none-match", "\"v6\"")],
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(up.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_header_value() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let ask = |tenant: &'static str| {
        [
            ("x-respond-header", "Cache-Control: max-age=60"),
            ("x-respond-header", "Vary: X-Tenant"),
            ("x-tenant", tenant),
        ]
    };
    let a = get(&c, addr, "/vary", &ask("a")).await;
    let b = get(&c, addr, "/vary", &ask("b")).await;
    assert!(status_of(&b).contains("fwd=vary-miss"), "{}", status_of(&b));
    let a2 = get(&c, addr, "/vary", &ask("a")).await;
    let b2 = get(&c, addr, "/vary", &ask("b")).await;
    assert_eq!(status_of(&a2), "gatehouse; hit");
    assert_eq!(status_of(&b2), "gatehouse; hit");
    assert_eq!(a2.body, a.body);
    assert_eq!(b2.body, b.body);
    assert_ne!(a.body, b.body);
    assert_eq!(up.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_stored_is_not() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let cases: [&[(&str, &str)]; 4] = [
        &[("x-respond-header", "Cache-Control: no-store, max-age=60")],
        &[("x-respond-header", "Cache-Control: private, max-age=60")],
        &[
            ("x-respond-header", "Cache-Control: max-age=60"),
            ("x-respond-header", "Set-Cookie: session=1"),
        ],
        &[
            ("x-respond-header", "Cache-Control: max-age=60"),
            ("authorization", "Bearer someone"),
        ],
    ];
    for (i, headers) in cases.iter().enumerate() {
        let path = format!("/never/{i}");
        for _ in 0..2 {
            let answer = get(&c, addr, &path, headers).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(
                status_of(&answer),
                "gatehouse; fwd=miss; fwd-status=200",
                "case {i}"
            );
        }
    }
    // A request that says no-store is not stored either.
    let no_store = [
        ("x-respond-header", "Cache-Control: max-age=60"),
        ("cache-control", "no-store"),
    ];
    get(&c, addr, "/asked", &no_store).await;
    get(&c, addr, "/asked", &no_store).await;
    assert_eq!(up.requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_upstream_request() {
    let up = TestUpstream::start("u").await;
    up.set_delay(Duration::from_millis(300));
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                get(
                    &c,
                    addr,
                    "/popular",
                    &[("x-respond-header", "Cache-Control: max-age=60")],
                )
                .await
            })
        })
        .collect();
    let mut bodies = std::collections::HashSet::new();
    let mut coalesced = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        coalesced += usize::from(status_of(&answer) == "gatehouse; hit; detail=coalesced");
        bodies.insert(answer.body);
    }
    assert_eq!(up.requests(), 1);
    assert_eq!(bodies.len(), 1);
    assert!(coalesced > 50, "{coalesced} of 100 waited for the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_url_and_its_location() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let cc = [("x-respond-header", "Cache-Control: max-age=60")];
    get(&c, addr, "/doc", &cc).await;
    get(&c, addr, "/other", &cc).await;
    assert_eq!(
        status_of(&get(&c, addr, "/doc", &cc).await),
        "gatehouse; hit"
    );

    let post = send(
        &c,
        Method::POST,
        addr,
        "/doc",
        &[("x-respond-header", "Location: /other")],
        Bytes::from_static(b"new"),
    )
    .await;
    assert_eq!(status_of(&post), "gatehouse; fwd=method");
    assert!(status_of(&get(&c, addr, "/doc", &cc).await).contains("fwd=miss"));
    assert!(status_of(&get(&c, addr, "/other", &cc).await).contains("fwd=miss"));
    // Any unsafe method: DELETE too.
    get(&c, addr, "/gone", &cc).await;
    let deleted = send(&c, Method::DELETE, addr, "/gone", &[], Bytes::new()).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert!(status_of(&get(&c, addr, "/gone", &cc).await).contains("fwd=miss"));
    assert_eq!(up.requests(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let cc = [(
        "x-respond-header",
        "Cache-Control: max-age=1, stale-while-revalidate=60",
    )];
    get(&c, addr, "/swr", &cc).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.set_delay(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let stale = get(&c, addr, "/swr", &cc).await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "waited for the origin"
    );
    assert_eq!(
        status_of(&stale),
        "gatehouse; hit; detail=stale-while-revalidate"
    );
    assert_eq!(served(&stale), "1");
    assert!(
        eventually(Duration::from_secs(3), async || {
            let answer = get(&c, addr, "/swr", &cc).await;
            status_of(&answer) == "gatehouse; hit" && served(&answer) == "2"
        })
        .await,
        "the background revalidation did not refresh the entry"
    );
    assert_eq!(up.requests(), 2);
    assert!(
        metrics(&gw)
            .await
            .contains(r#"gatehouse_cache_requests_total{route="r",result="stale"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stale_copy_when_the_origin_is_gone() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let c = h1();
    let cc = [(
        "x-respond-header",
        "Cache-Control: max-age=1, stale-if-error=60",
    )];
    let first = get(&c, addr, "/sie", &cc).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.stop();
    let stale = get(&c, addr, "/sie", &cc).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, first.body);
    assert_eq!(
        status_of(&stale),
        "gatehouse; fwd=stale; detail=stale-if-error"
    );
    // Without stale-if-error the failure shows.
    let plain = get(
        &c,
        addr,
        "/other",
        &[("x-respond-header", "Cache-Control: max-age=60")],
    )
    .await;
    assert_eq!(plain.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stays_within_its_size_and_large_bodies_pass_through() {
    let up = TestUpstream::start("u").await;
    let gw = cached(
        &up,
        "[cache]\nmax_size = \"256KiB\"",
        "max_object_size = \"64KiB\"",
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();
    let cc = [("x-respond-header", "Cache-Control: max-age=600")];
    // 64 objects of 16 KiB: four times the store.
    for i in 0..64 {
        let answer = get(&c, addr, &format!("/bytes/16384?i={i}"), &cc).await;
        assert_eq!(answer.body.len(), 16384);
    }
    let stats = get(&h1(), gw.admin.unwrap(), "/cache", &[]).await.json();
    assert!(stats["bytes"].as_u64().unwrap() <= 256 * 1024, "{stats}");
    let urls = stats["urls"].as_u64().unwrap();
    assert!((1..16).contains(&urls), "{stats}");
    // A second pass finds at most what fits.
    let before = up.requests();
    for i in 0..64 {
        get(&c, addr, &format!("/bytes/16384?i={i}"), &cc).await;
    }
    assert!(
        up.requests() - before >= 64 - 16,
        "{}",
        up.requests() - before
    );

    // Long enough that it would be spliced socket to socket were the store not reading it:
    // the store sees every byte, and the hit is whole.
    let expected: Vec<u8> = (0..40_000usize).map(|i| (i % 251) as u8).collect();
    let first = get(&c, addr, "/bytes/40000?long", &cc).await;
    let hit = get(&c, addr, "/bytes/40000?long", &cc).await;
    assert_eq!(status_of(&hit), "gatehouse; hit");
    assert!(first.body == expected && hit.body == expected);

    // Larger than max_object_size: streamed through whole, never stored.
    for _ in 0..2 {
        let big = get(&c, addr, "/bytes/200000", &cc).await;
        assert_eq!(big.body.len(), 200_000);
        assert!(status_of(&big).contains("fwd=miss"));
    }
    let text = metrics(&gw).await;
    assert!(text.contains("gatehouse_cache_evictions "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_purges_with_the_token() {
    let up = TestUpstream::start("u").await;
    let gw = cached(&up, "", "").await;
    let addr = gw.addr("main");
    let admin = gw.admin.unwrap();
    let c = h1();
    let cc = [("x-respond-header", "Cache-Control: max-age=60")];
    for path in ["/p/1", "/p/2", "/q"] {
        get(&c, addr, path, &cc).await;
    }
    let body = Bytes::from_static(br#"{"path":"/p/*"}"#);
    let refused = send(&c, Method::POST, admin, "/cache/purge", &[], body.clone()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_of(&get(&c, addr, "/p/1", &cc).await),
        "gatehouse; hit"
    );

    let auth = format!("Bearer {TOKEN}");
    let bad = send(
        &c,
        Method::POST,
        admin,
        "/cache/purge",
        &[("authorization", &auth)],
        Bytes::from_static(br#"{"path":"p"}"#),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("path"), "{}", bad.text());

    let purged = send(
        &c,
        Method::POST,
        admin,
        "/cache/purge",
        &[("authorization", &auth)],
        body,
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.json()["purged"], 2);
    assert!(status_of(&get(&c, addr, "/p/1", &cc).await).contains("fwd=miss"));
    assert_eq!(status_of(&get(&c, addr, "/q", &cc).await), "gatehouse; hit");
}
