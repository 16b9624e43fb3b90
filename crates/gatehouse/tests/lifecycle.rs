//! End to end: config checking, graceful drain, live reload under load, listener reconciliation.

mod common;

use common::*;
use http::StatusCode;
use std::time::Duration;

#[test]
fn check_reports_every_error_with_position_and_exits_2() {
    let dir = gatehouse_test_support::process::temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listeners]]\nname = \"a\"\nlisten = \"nowhere\"\n\n[[routes]]\ncluster = \"missing\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:3:10: listeners[0].listen"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:6:11: routes[0].cluster: no cluster named \"missing\""),
        "{stderr}"
    );

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "check", "demo"] {
        assert!(help.contains(sub), "{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let up = TestUpstream::start("up").await;
    let mut gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let c = h1();
    let in_flight = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "/slow/1000", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are no longer accepted...
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open while draining"
    );
    // ...but the request in flight completes.
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
    assert!(gw.stderr().contains("drained"), "{}", gw.stderr());
}

fn routed_config(cluster_upstream: &TestUpstream, extra: &str) -> String {
    config(&format!("{extra}\n{}", to_cluster(&[cluster_upstream])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let gw = Gatehouse::start(bin(), &routed_config(&blue, ""), &[]).await;
    let addr = gw.addr("main");

    let load = SteadyLoad::start(addr, 4);

    let invalid = [
        "[[listeners]\nbroken",
        "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"gone\"\n",
    ];
    let mut expect = "blue";
    for round in 0..10 {
        let next = if round % 3 == 2 {
            invalid[round % 2].to_owned()
        } else {
            expect = if expect == "blue" { "green" } else { "blue" };
            routed_config(if expect == "blue" { &blue } else { &green }, "")
        };
        // Alternate the two reload triggers: the file watcher and SIGHUP.
        gw.write_config(&next);
        if round % 2 == 1 {
            gw.signal("HUP");
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let seen = get(&h1(), addr, "/", &[]).await.upstream();
        assert_eq!(seen, expect, "after reload round {round}");
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "requests failed during reloads");
    assert!(ok > 100, "the load actually ran");
    let log = gw.stderr();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(
        log.contains("gatehouse.toml:1:"),
        "the refusal names the line: {log}"
    );
    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(
        metrics.contains("gatehouse_config_reloads_total{result=\"rejected\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_binds_and_closes_listeners_without_dropping_connections() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(bin(), &routed_config(&up, ""), &[]).await;
    let admin = gw.admin.unwrap();
    let c = h1();
    // A keep-alive connection opened before the reload.
    assert_eq!(
        get(&c, gw.addr("main"), "/", &[]).await.status,
        StatusCode::OK
    );

    gw.write_config(&routed_config(
        &up,
        "[[listeners]]\nname = \"second\"\nlisten = \"127.0.0.1:0\"\n",
    ));
    let second = wait_for_listener(admin, "second", true)
        .await
        .expect("second listener bound");
    assert_eq!(get(&h1(), second, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&c, gw.addr("main"), "/", &[]).await.status,
        StatusCode::OK
    );

    gw.write_config(&routed_config(&up, ""));
    wait_for_listener(admin, "second", false).await;
    assert!(
        tokio::net::TcpStream::connect(second).await.is_err(),
        "removed listener still accepts"
    );
    assert_eq!(
        get(&c, gw.addr("main"), "/", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_listener_keeps_its_port() {
    let up = TestUpstream::start("up").await;
    // A fixed port is what makes a rename interesting (port 0 would just bind a new one).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let with_listener = |name: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n{}",
            to_cluster(&[&up])
        )
    };
    let gw = Gatehouse::start(bin(), &with_listener("before"), &[]).await;
    let addr = gw.addr("before");
    assert_eq!(get(&h1(), addr, "/", &[]).await.status, StatusCode::OK);
    gw.write_config(&with_listener("after"));
    let renamed = wait_for_listener(gw.admin.unwrap(), "after", true)
        .await
        .unwrap();
    assert_eq!(renamed, addr);
    wait_for_listener(gw.admin.unwrap(), "before", false).await;
    assert_eq!(get(&h1(), addr, "/", &[]).await.status, StatusCode::OK);
    assert!(!gw.stderr().contains("refused"), "{}", gw.stderr());
}

/// Polls the admin /config until listener `name` is (or is no longer) bound.
async fn wait_for_listener(
    admin: std::net::SocketAddr,
    name: &str,
    present: bool,
) -> Option<std::net::SocketAddr> {
    for _ in 0..50 {
        let config = get(&h1(), admin, "/config", &[]).await.json();
        let found = config["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .map(|l| l["bound"].as_str().unwrap().parse().unwrap());
        if found.is_some() == present {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("listener {name} present={present} never happened");
}
