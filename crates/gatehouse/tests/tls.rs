//! The TLS edge end to end, with a real TLS client (rustls) against the real binary: SNI
//! picks the certificate, ALPN picks the protocol, mutual TLS refuses and identifies clients,
//! upstream TLS verifies upstreams, certificates rotate on disk under open connections, and
//! bad certificates stop startup with the file named.

mod common;

use common::*;
use gatehouse_test_support::process::temp_dir;
use gatehouse_test_support::tls::{
    HttpsSession, TestCa, https_get, leaf_der, upstream_server_config,
};
use gatehouse_test_support::{Gatehouse, TestUpstream};
use http::StatusCode;
use std::time::Duration;

/// A config with one TLS listener "main" (`tls` is the `[listeners.tls]` body) routing to `upstream`.
fn tls_config(tls: &str, upstream: &TestUpstream, route_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "main"
listen = "127.0.0.1:0"
[listeners.tls]
{tls}

[[routes]]
cluster = "c"
{route_extra}

[[clusters]]
name = "c"
endpoints = ["{}"]
"#,
        upstream.addr
    )
}

fn toml_path(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_and_alpn_the_protocol() {
    let dir = temp_dir("gh-tls-sni");
    let ca = TestCa::new(&dir);
    let fallback = ca.server("default", &["default.test"]);
    let api = ca.server("api", &["api.example.test"]);
    let wild = ca.server("wild", &["*.apps.test"]);
    let upstream = TestUpstream::start("up").await;
    let certs = [&fallback, &api, &wild]
        .iter()
        .map(|c| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                toml_path(&c.cert),
                toml_path(&c.key)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let gw = Gatehouse::start(
        bin(),
        &tls_config(&format!("certificates = [{certs}]"), &upstream, ""),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let both = ca.client_config(&[b"h2", b"http/1.1"], None);

    let answer = https_get(addr, "api.example.test", both.clone(), "/")
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.server_cert,
        leaf_der(&api.issued.chain_pem),
        "exact name"
    );
    assert_eq!(
        answer.alpn.as_deref(),
        Some(&b"h2"[..]),
        "h2 offered, h2 chosen"
    );

    let answer = https_get(addr, "shop.apps.test", both.clone(), "/")
        .await
        .unwrap();
    assert_eq!(
        answer.server_cert,
        leaf_der(&wild.issued.chain_pem),
        "wildcard"
    );

    // An unknown name gets the default certificate, which the client then rightly refuses.
    let unknown = https_get(addr, "other.test", both, "/").await;
    assert!(
        unknown.is_err(),
        "a certificate for default.test must not verify as other.test"
    );

    let h1_only = ca.client_config(&[b"http/1.1"], None);
    let answer = https_get(addr, "api.example.test", h1_only, "/")
        .await
        .unwrap();
    assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(answer.status, StatusCode::OK);
    let echoed = serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https", "{echoed}");
    let no_alpn = ca.client_config(&[], None);
    let answer = https_get(addr, "api.example.test", no_alpn, "/")
        .await
        .unwrap();
    assert_eq!(answer.alpn, None);
    assert_eq!(answer.status, StatusCode::OK, "no ALPN means HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_tls_versions() {
    let dir = temp_dir("gh-tls-resume");
    let ca = TestCa::new(&dir);
    let server = ca.server("server", &["localhost"]);
    let upstream = TestUpstream::start("up").await;
    let tls = format!(
        "certificates = [{{ cert = \"{}\", key = \"{}\" }}]",
        toml_path(&server.cert),
        toml_path(&server.key)
    );
    let gw = Gatehouse::start(bin(), &tls_config(&tls, &upstream, ""), &[]).await;
    let addr = gw.addr("main");
    for version in [
        &tokio_rustls::rustls::version::TLS13,
        &tokio_rustls::rustls::version::TLS12,
    ] {
        // One client config keeps its session cache across connections, as a browser does.
        let client = ca.client_config_versions(&[b"h2"], &[version]);
        let mut first = HttpsSession::open(addr, "localhost", client.clone())
            .await
            .unwrap();
        assert!(!first.resumed);
        // TLS 1.3 tickets arrive after the handshake: one exchange makes sure they did.
        first.get("/", &[]).await.unwrap();
        let second = HttpsSession::open(addr, "localhost", client).await.unwrap();
        assert!(
            second.resumed,
            "{version:?}: the second handshake resumes the first session"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_and_names_those_with_one() {
    let dir = temp_dir("gh-tls-mtls");
    let ca = TestCa::new(&dir);
    let server = ca.server("server", &["localhost"]);
    let alice = ca.client("alice", "alice");
    let stranger_ca = TestCa::new(&temp_dir("gh-tls-mtls-other"));
    let mallory = stranger_ca.client("mallory", "mallory");
    let upstream = TestUpstream::start("up").await;
    let tls = format!(
        "certificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = \"required\"\nclient_ca = \"{}\"",
        toml_path(&server.cert),
        toml_path(&server.key),
        toml_path(&ca.ca_path())
    );
    let gw = Gatehouse::start(
        bin(),
        &tls_config(&tls, &upstream, "client_cert_header = \"x-client-subject\""),
        &[],
    )
    .await;
    let addr = gw.addr("main");

    let anonymous = async {
        let mut session =
            HttpsSession::open(addr, "localhost", ca.client_config(&[b"http/1.1"], None))
                .await
                .map_err(|e| e.to_string())?;
        session.get("/", &[]).await
    };
    assert!(anonymous.await.is_err(), "no certificate, no answer");
    let foreign = async {
        let mut session = HttpsSession::open(
            addr,
            "localhost",
            ca.client_config(&[b"http/1.1"], Some(&mallory)),
        )
        .await
        .map_err(|e| e.to_string())?;
        session.get("/", &[]).await
    };
    assert!(
        foreign.await.is_err(),
        "a certificate from another CA is refused"
    );
    assert_eq!(upstream.requests(), 0);

    let mut session =
        HttpsSession::open(addr, "localhost", ca.client_config(&[b"h2"], Some(&alice)))
            .await
            .unwrap();
    let answer = session
        .get("/", &[("x-client-subject", "CN=admin")])
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let echoed = serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap();
    assert_eq!(
        echoed["headers"]["x-client-subject"], "CN=alice",
        "the verified identity, not the client's claim: {echoed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_require_a_client_certificate_on_an_optional_listener() {
    let dir = temp_dir("gh-tls-optional");
    let ca = TestCa::new(&dir);
    let server = ca.server("server", &["localhost"]);
    let bob = ca.client("bob", "bob");
    let upstream = TestUpstream::start("up").await;
    let tls = format!(
        "certificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = \"optional\"\nclient_ca = \"{}\"",
        toml_path(&server.cert),
        toml_path(&server.key),
        toml_path(&ca.ca_path())
    );
    let gw = Gatehouse::start(
        bin(),
        &tls_config(&tls, &upstream, "require_client_cert = true"),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let anonymous = https_get(addr, "localhost", ca.client_config(&[b"h2"], None), "/")
        .await
        .unwrap();
    assert_eq!(
        anonymous.status,
        StatusCode::FORBIDDEN,
        "connects, but the route refuses"
    );
    assert!(
        anonymous.text().contains("client certificate"),
        "{}",
        anonymous.text()
    );
    let known = https_get(
        addr,
        "localhost",
        ca.client_config(&[b"h2"], Some(&bob)),
        "/",
    )
    .await
    .unwrap();
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_upstream() {
    let dir = temp_dir("gh-tls-upstream");
    let ca = TestCa::new(&dir);
    let other_ca = TestCa::new(&temp_dir("gh-tls-upstream-other"));
    let upstream_cert = ca.server("upstream", &["api.internal"]);
    let upstream =
        TestUpstream::start_tls("secure-up", upstream_server_config(&upstream_cert)).await;
    let cluster = |ca_path: &std::path::Path, protocol: &str| {
        config(&format!(
            "[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nprotocol = \"{protocol}\"\nendpoints = [\"{}\"]\n[clusters.tls]\nca = \"{}\"\nserver_name = \"api.internal\"\n",
            upstream.addr,
            toml_path(ca_path)
        ))
    };
    for protocol in ["http1", "h2"] {
        let trusted = Gatehouse::start(bin(), &cluster(&ca.ca_path(), protocol), &[]).await;
        let answer = get(&h1(), trusted.addr("main"), "/", &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{protocol}: {}",
            answer.text()
        );
        assert_eq!(answer.upstream(), "secure-up");
    }
    // Health checks go over TLS too: with fall = 1 one failed probe would take it out.
    let checked = format!(
        "{}[clusters.health_check]\npath = \"/status/200\"\ninterval = \"50ms\"\njitter = \"10ms\"\nfall = 1\n",
        cluster(&ca.ca_path(), "http1")
    );
    let gw = Gatehouse::start(bin(), &checked, &[]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let answer = get(&h1(), gw.addr("main"), "/", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gatehouse_health_checks_total") && l.contains("result=\"pass\"")
        ),
        "{metrics}"
    );
    drop(gw); // its probes must not count below
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = upstream.requests();
    let untrusting = Gatehouse::start(bin(), &cluster(&other_ca.ca_path(), "http1"), &[]).await;
    let answer = get(&h1(), untrusting.addr("main"), "/", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer.text().contains("TLS handshake with upstream"),
        "{}",
        answer.text()
    );
    assert_eq!(
        upstream.requests(),
        before,
        "nothing reached the untrusted upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_apply_to_new_connections_and_spare_open_ones() {
    let dir = temp_dir("gh-tls-rotate");
    let ca = TestCa::new(&dir);
    let first = ca.server("first", &["localhost"]);
    let upstream = TestUpstream::start("up").await;
    let tls = format!(
        "certificates = [{{ cert = \"{}\", key = \"{}\" }}]",
        toml_path(&first.cert),
        toml_path(&first.key)
    );
    let gw = Gatehouse::start(bin(), &tls_config(&tls, &upstream, ""), &[]).await;
    let addr = gw.addr("main");
    let client = ca.client_config(&[b"http/1.1"], None);
    let mut open = HttpsSession::open(addr, "localhost", client.clone())
        .await
        .unwrap();
    assert_eq!(open.get("/", &[]).await.unwrap().status, StatusCode::OK);
    assert_eq!(open.server_cert, leaf_der(&first.issued.chain_pem));

    // Replace both files the way deployment tools do: write aside, rename into place.
    let second = ca.server("second", &["localhost"]);
    std::fs::rename(&second.key, &first.key).unwrap();
    std::fs::rename(&second.cert, &first.cert).unwrap();
    let rotated = eventually(Duration::from_secs(10), async || {
        // A fresh client each time: a resumed session would show the old certificate.
        let fresh = ca.client_config(&[b"http/1.1"], None);
        let answer = https_get(addr, "localhost", fresh, "/").await.unwrap();
        answer.server_cert == leaf_der(&second.issued.chain_pem)
    })
    .await;
    assert!(
        rotated,
        "new handshakes get the new certificate; stderr:\n{}",
        gw.stderr()
    );
    let again = open
        .get("/", &[])
        .await
        .expect("the connection made before rotation still works");
    assert_eq!(again.status, StatusCode::OK);

    // A broken replacement is refused and the current certificate keeps serving.
    std::fs::write(&first.cert, "garbage").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = ca.client_config(&[b"http/1.1"], None);
    let answer = https_get(addr, "localhost", fresh, "/").await.unwrap();
    assert_eq!(answer.server_cert, leaf_der(&second.issued.chain_pem));
    assert!(
        gw.stderr().contains("certificate change refused"),
        "{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_stop_startup_and_check_naming_the_file() {
    let dir = temp_dir("gh-tls-bad");
    let ca = TestCa::new(&dir);
    let good = ca.server("good", &["localhost"]);
    let other = ca.server("other", &["localhost"]);
    let upstream = TestUpstream::start("up").await;
    let cases = [
        (dir.join("missing.pem"), good.key.clone(), "missing.pem"),
        (good.cert.clone(), other.key.clone(), "other.key"),
    ];
    for (cert, key, named) in cases {
        let text = tls_config(
            &format!(
                "certificates = [{{ cert = \"{}\", key = \"{}\" }}]",
                toml_path(&cert),
                toml_path(&key)
            ),
            &upstream,
            "",
        );
        let path = dir.join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let run = tokio::process::Command::new(bin())
            .args(["run", "-c"])
            .arg(&path)
            .output();
        let run = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap()
            .unwrap();
        assert!(!run.status.success());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(named), "run must name {named}: {stderr}");
        let check = std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(stderr.contains(named), "check must name {named}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_listener_can_send_everyone_to_https() {
    let upstream = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            "https_redirect_port = 8443\n{}",
            to_cluster(&[&upstream])
        )),
        &[],
    )
    .await;
    let answer = send(
        &h1(),
        http::Method::POST,
        gw.addr("main"),
        "/pay?x=1",
        &[("host", "shop.example:8080")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        answer.headers["location"],
        "https://shop.example:8443/pay?x=1"
    );
    assert_eq!(upstream.requests(), 0);
}
