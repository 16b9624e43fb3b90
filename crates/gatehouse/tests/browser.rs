//! End to end with a real browser: headless Chromium loads the demo's real-time page through
//! `gatehouse demo`. The page opens a WebSocket and an EventSource through the gateway and
//! shows the echoes and events it got, each event with the time from the upstream sending it
//! to the page receiving it (the event's id is the upstream's send time).

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Three loopback ports free a moment ago (the demo takes fixed addresses).
fn free_ports() -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {candidate}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return candidate;
        }
    }
    panic!("this test needs a headless browser: apt-get install chromium (.ci/run does)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_websocket_echoes_and_events_arrive_promptly() {
    let browser = chromium();
    let ports = free_ports();
    let listen = format!("127.0.0.1:{}", ports[0]);
    let mut demo = Command::new(bin())
        .args([
            "demo",
            "--listen",
            &listen,
            "--admin",
            &format!("127.0.0.1:{}", ports[1]),
            "--https",
            &format!("127.0.0.1:{}", ports[2]),
            // Port 0: a free one, so the test never collides with a demo already running.
            "--dns",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start gatehouse demo");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("/realtime") {
                return line;
            }
        }
        panic!("the demo ended before printing its banner");
    })
    .await
    .expect("the demo starts");
    assert!(banner.contains(&listen), "{banner}");
    // The gateway accepts once the banner is out; give the listener a moment anyway.
    assert!(
        eventually(Duration::from_secs(5), async || {
            tokio::net::TcpStream::connect(&listen).await.is_ok()
        })
        .await
    );

    let profile = gatehouse_test_support::temp_dir("gatehouse-chromium");
    let page = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                // Nothing but the page on the network: no updates or sync to wait for.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // The page is printed once it has loaded; hold_ms keeps it loading (real time,
                // not the virtual time a budget would use) until its run is over.
                "--dump-dom",
                &format!("http://{listen}/realtime?count=5&interval_ms=200&hold_ms=4000"),
            ])
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser finishes")
    .expect("run the browser");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&page.stdout);
    for i in 0..3 {
        assert!(dom.contains(&format!("echo: hello {i}")), "{dom}");
    }
    let status = dom
        .lines()
        .find(|l| l.contains("id=\"status\""))
        .unwrap_or_else(|| panic!("no status line in {dom}"));
    assert!(
        status.contains("done: 3 echoes, 5 events"),
        "the page did not get everything: {status}"
    );
    let slowest: f64 = status
        .split("slowest event ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no delay in {status}"));
    assert!(
        slowest < 50.0,
        "an event took {slowest} ms from the upstream to the page: {dom}"
    );
}
