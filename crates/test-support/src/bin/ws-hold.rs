//! Opens many WebSocket connections and holds them open, for memory measurements
//! (bench/ws-memory): each connection sends one message and waits for its echo, then stays idle.
//!
//! usage: ws-hold ADDR COUNT
//!
//! Prints `open COUNT` once every connection has had its echo, then waits until stdin closes.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: ws-hold ADDR COUNT");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let count: usize = args[2].parse().expect("COUNT");
    let mut open = Vec::with_capacity(count);
    // A few hundred handshakes at a time: enough to be quick, few enough not to overflow the
    // proxy's accept backlog.
    for batch in (0..count).collect::<Vec<_>>().chunks(200) {
        let handshakes = batch.iter().map(|_| {
            let addr = addr.clone();
            async move {
                let stream = tokio::net::TcpStream::connect(&addr)
                    .await
                    .expect("connect");
                let (mut ws, _) =
                    tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
                        .await
                        .expect("WebSocket handshake");
                ws.send(Message::text("hello")).await.expect("send");
                let echo = ws.next().await.expect("open").expect("echo");
                assert_eq!(echo, Message::text("hello"));
                ws
            }
        });
        open.extend(futures_util::future::join_all(handshakes).await);
    }
    println!("open {}", open.len());
    let _ = tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    })
    .await;
    drop(open);
}
