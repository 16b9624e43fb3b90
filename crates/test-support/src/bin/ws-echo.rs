//! The test upstream as a process, for runs outside the test suite (bench/autobahn): a
//! WebSocket echo on any path (see `gatehouse_test_support::upstream`).
//!
//! usage: ws-echo        (prints `ws-echo listening on ADDR` once bound; runs until killed)

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let upstream = gatehouse_test_support::TestUpstream::start("ws-echo").await;
    println!("ws-echo listening on {}", upstream.addr);
    std::future::pending::<()>().await;
}
