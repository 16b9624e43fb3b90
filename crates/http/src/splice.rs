//! Zero-copy response bodies: an HTTP/1.1 upstream's body handed, socket and all, to the
//! client's HTTP/1.1 connection, which moves it with splice(2) (see
//! [`gatehouse_net::splice`]) instead of reading it into buffers and writing it out again.
//!
//! Both ends must be cleartext TCP and the body delimited by Content-Length, so the bytes on the
//! upstream's wire are exactly the bytes for the client's. The two sides meet through a
//! [`SpliceOffer`] in the response's extensions:
//!
//! 1. The upstream client ([`crate::h1_client`]) attaches an offer to a response whose body is
//!    long enough to be worth it ([`WORTH_SPLICING`]).
//! 2. The client's connection ([`crate::h1_server`]) takes the offer out of the extensions and
//!    [`wants`](SpliceOffer::want) it when its own socket is cleartext TCP and it writes the
//!    body with the Content-Length offered.
//! 3. When the body has handed out what it had buffered and would read its socket next, it
//!    lends its connection through the offer and yields an empty data frame.
//! 4. The writer ([`crate::wire::write_message`]) sees the empty frame, takes the [`Lent`]
//!    connection, flushes what it holds (the head, the first bytes) and forwards the rest of
//!    the body socket to socket. The connection goes back through the offer (or the reason it
//!    broke), and the body's next poll ends it: a clean end returns the connection to its pool.
//!
//! A layer that reads or changes a response body (compression, the cache, idempotency
//! recording) must remove the offer, or the body would pass it by: see [`strip`].

use crate::h1_client::H1Connection;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Bodies shorter than this are copied: below it, the pipe's system calls cost more than the
/// copies they save.
pub const WORTH_SPLICING: u64 = 16 * 1024;

/// The upstream's side of a hand-off, in a response's extensions (see the module docs).
#[derive(Clone)]
pub struct SpliceOffer {
    slot: Arc<Mutex<Slot>>,
    /// The body's length as the upstream declared it: a writer wants the offer only for a
    /// body of exactly this length, so a layer that changed the body and forgot to
    /// [`strip`] the offer is still never bypassed by raw upstream bytes of another length.
    length: u64,
    /// The longest the upstream may stay silent during the transfer: the route's read timeout.
    idle: Duration,
}

#[derive(Default)]
struct Slot {
    wanted: bool,
    /// The body's connection and the body bytes still to come, while the writer has it.
    lent: Option<(H1Connection, u64)>,
    /// Back from the writer.
    returned: Option<Returned>,
}

/// How a lent connection comes back.
pub(crate) enum Returned {
    /// The whole body went to the client.
    Sent(H1Connection),
    /// Nothing moved (splice was not possible): the body continues by copying.
    Untouched(H1Connection),
    /// The transfer broke, for this reason; the connection is gone.
    Broken(String),
}

/// Removes a response's offer: for layers that must see the body's bytes.
pub fn strip(extensions: &mut http::Extensions) {
    extensions.remove::<SpliceOffer>();
}

impl SpliceOffer {
    /// A new offer for a body of `length` bytes, and the handle the body keeps.
    pub(crate) fn new(length: u64) -> (SpliceOffer, BodySide) {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let offer = SpliceOffer {
            slot: Arc::clone(&slot),
            length,
            idle: gatehouse_config::Route::DEFAULT_READ_TIMEOUT,
        };
        (offer, BodySide { slot })
    }

    /// Sets how long the upstream may stay silent during the transfer.
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// The writer will take the connection when the body offers it, if the body it writes
    /// has the length offered; returns whether it will.
    pub fn want(&self, writing: u64) -> bool {
        let wanted = writing == self.length;
        self.slot.lock().wanted = wanted;
        wanted
    }

    /// The connection the body lent, if it just did.
    pub fn take_lent(&self) -> Option<Lent> {
        let (connection, len) = self.slot.lock().lent.take()?;
        Some(Lent {
            slot: Arc::clone(&self.slot),
            connection: Some(connection),
            len,
            idle: self.idle,
        })
    }
}

/// An upstream connection in the writer's hands, with `len` body bytes to move. Dropped
/// without [`forward`](Lent::forward) finishing, it tells the body the transfer broke.
pub struct Lent {
    slot: Arc<Mutex<Slot>>,
    connection: Option<H1Connection>,
    len: u64,
    idle: Duration,
}

impl Lent {
    /// Moves the rest of the body to `to`, whose reader may take nothing for `stall_timeout`.
    /// An upstream failure is reported by the body's next poll (as any broken body is); a
    /// client failure is returned.
    pub async fn forward(mut self, to: &TcpStream, stall_timeout: Duration) -> std::io::Result<()> {
        use gatehouse_net::splice::ForwardError;
        // Borrowed while the bytes move, so a transfer dropped midway still reports (`Drop`).
        let moved = match self.connection.as_ref().and_then(H1Connection::tcp_read) {
            Some(from) => {
                let stalls = gatehouse_net::splice::Stalls {
                    source: self.idle,
                    destination: stall_timeout,
                };
                gatehouse_net::splice::forward_exact(from, to, self.len, stalls).await
            }
            None => Err(ForwardError::NotStarted(
                std::io::ErrorKind::Unsupported.into(),
            )),
        };
        let Some(connection) = self.connection.take() else {
            return Ok(()); // not reached: only `Drop` takes it otherwise
        };
        match moved {
            Ok(()) => {
                self.give_back(Returned::Sent(connection));
                Ok(())
            }
            Err(ForwardError::NotStarted(e)) => {
                tracing::debug!("response body copied instead of spliced: {e}");
                self.give_back(Returned::Untouched(connection));
                Ok(())
            }
            Err(ForwardError::Source(e)) => {
                self.give_back(Returned::Broken(e.to_string()));
                Ok(())
            }
            Err(ForwardError::Destination(e)) => {
                let reason = format!("the client stopped taking the body: {e}");
                self.give_back(Returned::Broken(reason));
                Err(e)
            }
        }
    }

    fn give_back(&mut self, result: Returned) {
        self.slot.lock().returned = Some(result);
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.connection.take().is_some() {
            self.give_back(Returned::Broken("the transfer was abandoned".into()));
        }
    }
}

/// The body's side of a hand-off.
pub(crate) struct BodySide {
    slot: Arc<Mutex<Slot>>,
}

impl BodySide {
    /// Lends the body's connection, with `len` bytes to come, if the writer wants it: takes it
    /// out of `connection` and returns true; leaves it there otherwise. One lock either way.
    pub(crate) fn lend(&self, connection: &mut Option<H1Connection>, len: u64) -> bool {
        let mut slot = self.slot.lock();
        if !slot.wanted {
            return false;
        }
        let Some(connection) = connection.take() else {
            return false;
        };
        slot.wanted = false;
        slot.lent = Some((connection, len));
        true
    }

    /// What came back from the writer: `None` while it still has the connection.
    pub(crate) fn take_returned(&self) -> Option<Returned> {
        self.slot.lock().returned.take()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::h1_client::{self, ConnectionHome, RequestFraming, UpstreamHead};
    use crate::headers::ProxyFields;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Keeps the connections that come home, for the test to look at and reuse.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<H1Connection>>);
    impl ConnectionHome for Kept {
        fn put_idle(&self, connection: H1Connection) {
            self.0.lock().unwrap().push(connection);
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + i / 509) as u8).collect()
    }

    /// An upstream that answers each request on one connection with the next of `answers`
    /// (raw bytes), then closes the connection or, with `stay_open`, waits.
    async fn upstream(answers: Vec<Vec<u8>>, stay_open: bool) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut seen = Vec::new();
                while !seen.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if socket.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    seen.push(byte[0]);
                }
                socket.write_all(&answer).await.unwrap();
            }
            if stay_open {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        addr
    }

    fn answer(body: &[u8], declared: usize) -> Vec<u8> {
        let mut bytes =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n").into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    async fn get(
        connection: H1Connection,
        home: &Arc<Kept>,
    ) -> http::Response<crate::body::ProxyBody> {
        let mut connection = connection;
        let parts = http::Request::get("/big")
            .header("host", "x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let fields = ProxyFields::default();
        connection.encode_head(
            UpstreamHead {
                parts: &parts,
                fields: &fields,
            },
            RequestFraming::None,
        );
        h1_client::exchange(
            connection,
            None,
            RequestFraming::None,
            &http::Method::GET,
            false,
            Arc::clone(home),
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap()
    }

    async fn connect(addr: std::net::SocketAddr) -> H1Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        H1Connection::new(
            crate::stream_io::split_tcp(stream),
            std::time::Instant::now(),
        )
    }

    /// A client's connection: the gateway's writing half and the client's socket.
    async fn client() -> (crate::stream_io::ConnWrite, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (crate::stream_io::split_tcp(accepted).1, client)
    }

    /// How a body went when polled as the writer polls it.
    struct Drained {
        /// Bytes the body handed out itself, before and after a hand-off.
        before: Vec<u8>,
        after: Vec<u8>,
        lent: bool,
        ended: Result<(), String>,
    }

    /// Polls `body` as the writer does: bytes it hands out are collected, and a lent
    /// connection is forwarded to `to`.
    async fn drain(
        mut body: crate::body::ProxyBody,
        offer: &SpliceOffer,
        to: &TcpStream,
    ) -> Drained {
        let mut drained = Drained {
            before: Vec::new(),
            after: Vec::new(),
            lent: false,
            ended: Ok(()),
        };
        while let Some(frame) = body.frame().await {
            let data: Bytes = match frame {
                Ok(frame) => frame.into_data().unwrap(),
                Err(e) => {
                    drained.ended = Err(e.to_string());
                    break;
                }
            };
            if data.is_empty() {
                let connection = offer
                    .take_lent()
                    .expect("an empty frame means a lent connection");
                connection
                    .forward(to, Duration::from_secs(5))
                    .await
                    .unwrap();
                drained.lent = true;
            } else if drained.lent {
                drained.after.extend_from_slice(&data);
            } else {
                drained.before.extend_from_slice(&data);
            }
        }
        drained
    }

    #[tokio::test]
    async fn a_long_body_moves_by_splice_and_its_connection_is_reused() {
        let body = pattern(300_000);
        let addr = upstream(vec![answer(&body, body.len()), answer(b"next", 4)], true).await;
        let home = Arc::new(Kept::default());
        let (mut parts, response_body) = get(connect(addr).await, &home).await.into_parts();
        let offer = parts
            .extensions
            .remove::<SpliceOffer>()
            .expect("a long body is offered");
        assert!(offer.want(body.len() as u64));
        let (write, mut client) = client().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let drained = drain(response_body, &offer, write.tcp().unwrap()).await;
        drop(write); // the client's end of stream
        assert!(drained.lent && drained.ended.is_ok(), "{:?}", drained.ended);
        assert!(
            drained.after.is_empty(),
            "the body hands out nothing after the hand-off"
        );
        // The head was read a page at a time: at most that much body came with it.
        let handed_out = drained.before;
        assert!(
            handed_out.len() <= 4096,
            "{} bytes copied",
            handed_out.len()
        );
        // The client's socket got the rest; together they are the body.
        let spliced = reader.await.unwrap();
        let mut whole = handed_out.clone();
        whole.extend_from_slice(&spliced);
        assert!(whole == body, "the body arrived intact");
        // The connection went home with nothing left over, and carries the next exchange.
        let connection = home
            .0
            .lock()
            .unwrap()
            .pop()
            .expect("the connection came home");
        let next = get(connection, &home).await;
        assert!(
            next.extensions().get::<SpliceOffer>().is_none(),
            "a short body is copied"
        );
        assert_eq!(next.into_body().collect().await.unwrap().to_bytes(), "next");
    }

    #[tokio::test]
    async fn an_offer_nobody_wants_leaves_the_body_to_be_read() {
        let body = pattern(100_000);
        let addr = upstream(vec![answer(&body, body.len())], true).await;
        let home = Arc::new(Kept::default());
        let (mut parts, response_body) = get(connect(addr).await, &home).await.into_parts();
        let offer = parts.extensions.remove::<SpliceOffer>().unwrap();
        // A writer whose body has another length (a layer changed it) does not take it.
        assert!(!offer.want(body.len() as u64 - 1));
        let (_write, client) = client().await;
        let drained = drain(response_body, &offer, &client).await;
        assert!(!drained.lent && drained.ended.is_ok());
        assert!(drained.before == body);
        assert_eq!(home.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn when_no_pipe_can_be_made_the_body_is_copied_instead() {
        let body = pattern(100_000);
        let addr = upstream(vec![answer(&body, body.len())], true).await;
        let home = Arc::new(Kept::default());
        let (mut parts, response_body) = get(connect(addr).await, &home).await.into_parts();
        let offer = parts.extensions.remove::<SpliceOffer>().unwrap();
        assert!(offer.want(body.len() as u64));
        let (write, mut client) = client().await;
        gatehouse_net::splice::refuse_next_pipe();
        let drained = drain(response_body, &offer, write.tcp().unwrap()).await;
        assert!(drained.lent && drained.ended.is_ok(), "{:?}", drained.ended);
        let mut handed_out = drained.before;
        handed_out.extend_from_slice(&drained.after);
        assert!(handed_out == body, "every byte came through the body");
        assert_eq!(
            home.0.lock().unwrap().len(),
            1,
            "and the connection went home"
        );
        drop(write);
        let mut nothing = Vec::new();
        client.read_to_end(&mut nothing).await.unwrap();
        assert!(
            nothing.is_empty(),
            "nothing went to the client's socket directly"
        );
    }

    #[tokio::test]
    async fn an_upstream_that_breaks_off_fails_the_body_and_its_connection_closes() {
        // Declares 200,000 bytes, sends 50,000 and closes.
        let addr = upstream(vec![answer(&pattern(50_000), 200_000)], false).await;
        let home = Arc::new(Kept::default());
        let (mut parts, response_body) = get(connect(addr).await, &home).await.into_parts();
        let offer = parts.extensions.remove::<SpliceOffer>().unwrap();
        assert!(offer.want(200_000));
        let (write, _client) = client().await;
        let drained = drain(response_body, &offer, write.tcp().unwrap()).await;
        assert!(drained.lent && drained.after.is_empty());
        let reason = drained.ended.unwrap_err();
        assert!(reason.contains("bytes still to come"), "{reason}");
        assert!(
            home.0.lock().unwrap().is_empty(),
            "a broken connection is not reused"
        );
    }
}
