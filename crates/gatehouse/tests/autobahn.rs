//! Conformance: the Autobahn WebSocket test suite's cases (run by PyPI `kosoku` through
//! bench/autobahn) end through gatehouse exactly as they do straight against the echo server.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_autobahn_case_ends_as_it_does_without_the_proxy() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_kosoku = std::process::Command::new(&python)
        .args(["-c", "import kosoku"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_kosoku,
        "this test needs the kosoku package: pip install kosoku (.ci/run does)"
    );
    let echo = TestUpstream::start("echo").await;
    let rest = format!(
        "[[routes]]\ncluster = \"c\"\nread_timeout = \"10m\"\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
        endpoints(&[&echo])
    );
    let gw = Gatehouse::start(bin(), &config(&rest), &[]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/autobahn");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .args(["--direct", &format!("ws://{}", echo.addr)])
        .args(["--through", &format!("ws://{}", gw.addr("main"))])
        // Meant for an instrumented gatehouse (scripts/build-pgo); the Python test client
        // aborts at exit when it sees it.
        .env_remove("LLVM_PROFILE_FILE")
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("the suite finishes")
        .expect("run bench/autobahn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {text}", out.status);
    assert!(
        text.contains("every case ends as it does directly"),
        "{text}"
    );
    // The whole suite ran (517 cases in kosoku 0.1), not a handful.
    let cases: usize = text
        .split("cases: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(cases >= 500, "{text}");
}
