//! End to end with a real browser: headless Chromium loads the demo's real-time page through
//! `gatehouse demo`. The page opens a WebSocket and an EventSource through the gateway and
//! shows the echoes and events it got, each event with the time from the upstream sending it
//! to the page receiving it (the event's id is the upstream's send time).

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

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
    let demo = Demo::start().await;
    let listen = demo.listen;
    assert!(
        demo.banner
            .contains(&format!("open http://{listen}/realtime")),
        "the banner names the bound address: {}",
        demo.banner
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
