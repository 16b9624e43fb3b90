//! One HTTP/2 connection, served by one task.
//!
//! The connection future owns everything: the socket, the HPACK state, every stream's handler
//! future (boxed once, polled in place, never spawned) and its response body. Each turn of
//! `Connection::poll`:
//!
//! 1. reads and handles frames (opening streams, feeding request bodies, settings, windows),
//! 2. takes the signals streams left since the last turn (woken handler futures and bodies,
//!    request bodies that consumed data and owe the client flow-control credit),
//! 3. polls the woken streams, whose response HEADERS and DATA frames go into one output
//!    buffer, within the client's flow-control windows and maximum frame size,
//! 4. writes the output buffer: one write for everything the turn produced.
//!
//! Memory is bounded: the client can send at most our windows ahead of what the request bodies
//! consumed, each response has at most one body chunk waiting for window, and nothing is read
//! or produced while the output buffer holds more than `OUT_HIGH`, 64 KiB (a client that does
//! not read cannot make us queue PING answers forever). The frames out are written by
//! `output`.
//!
//! Errors follow RFC 9113 §5.4: a connection error writes GOAWAY with the code and closes; a
//! stream error writes RST_STREAM and forgets the stream (its handler future and bodies are
//! dropped, which cancels the upstream request). Abuse limits: streams reset by the client (or
//! by us, for its errors) and control frames needing answers are counted per time window;
//! past the limit the connection gets GOAWAY(ENHANCE_YOUR_CALM) (CVE-2023-44487 and friends).

use super::flow::{RecvWindow, SendWindow};
use super::frame::{self, Frame, FrameError, Reason, Settings, setting};
use super::hpack::{Decoder, Encoder};
use super::output::{BodyOut, OUT_HIGH, Sent, Writer, send_body, write_head};
use super::stream::{RecvState, RequestBody, RequestHead, Signals, StreamWaker, TrailersHead};
use super::{H2Settings, IntMap, PREFACE};
use crate::body::ProxyBody;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Read buffer growth step.
const READ_CHUNK: usize = 32 * 1024;
/// Turns per poll before the task yields to others.
const MAX_TURNS: usize = 32;
/// Frames handled per turn before the streams get their turn.
const FRAMES_PER_TURN: usize = 256;
/// Recently closed streams remembered, to tell late frames (ignored) from protocol errors.
const CLOSED_MEMORY: usize = 128;
/// Our SETTINGS_HEADER_TABLE_SIZE: the protocol default, so it is not sent.
const HEADER_TABLE_SIZE: usize = 4096;
/// Our SETTINGS_MAX_FRAME_SIZE: the default. Larger frames would save little (uploads are
/// bounded by windows, not frame headers) and cost larger read buffers.
const MAX_FRAME_SIZE: u32 = frame::DEFAULT_MAX_FRAME_SIZE;
/// How long closing waits for the last bytes to leave and for the client to go.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one HTTP/2 connection until it closes. `prefix` holds bytes already read from `io`
/// (all or part of the client preface, maybe more). Each request goes to `handler`, whose
/// future is polled inside this one; when `draining` is cancelled the client gets GOAWAY, open
/// streams finish, and the connection closes.
pub async fn serve<IO, H, F>(
    io: IO,
    prefix: BytesMut,
    settings: H2Settings,
    draining: CancellationToken,
    handler: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut conn = Connection::new(io, prefix, settings, handler);
    let mut drain = std::pin::pin!(draining.cancelled());
    std::future::poll_fn(|cx| {
        if !conn.draining && drain.as_mut().poll(cx).is_ready() {
            conn.start_drain();
        }
        conn.poll(cx)
    })
    .await;
    conn.close().await;
}

/// How a stream we no longer track ended, for frames that arrive after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Both sides ended it: more frames are a connection error (STREAM_CLOSED).
    Finished,
    /// We reset it: frames already in flight are ignored.
    ResetByUs,
    /// The client reset it.
    ResetByPeer,
}

/// A count of events per time window.
struct Budget {
    count: u32,
    since: Instant,
}

impl Budget {
    fn new() -> Self {
        Self {
            count: 0,
            since: Instant::now(),
        }
    }

    /// Counts one event; true when more than `limit` happened within `window`.
    fn exceeded(&mut self, limit: u32, window: Duration) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) > window {
            self.since = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > limit
    }
}

enum Phase<F> {
    /// The handler is working on the response.
    Handler(Pin<Box<F>>),
    /// The head is sent; the body streams.
    Body(BodyOut),
    /// The response is complete.
    Done,
}

struct Stream<F> {
    phase: Phase<F>,
    waker: Arc<StreamWaker>,
    task_waker: Waker,
    /// In the ready list (once is enough).
    scheduled: bool,
    /// Feeds the request body; None when there is none or it was dropped.
    recv: Option<Arc<Mutex<RecvState>>>,
    /// END_STREAM received (or the stream was reset).
    remote_closed: bool,
    recv_window: RecvWindow,
    content_length: Option<u64>,
    received: u64,
    send_window: SendWindow,
    is_head: bool,
    /// In `conn_blocked`, waiting for connection window.
    waiting_for_connection: bool,
    /// An extended CONNECT tunnel (WebSocket): its client may be silent for as long as the
    /// tunnel's own idle timeout allows, so the stall check does not wait on its DATA.
    tunnel: bool,
    /// DATA went out or came in on this stream since the last stall check.
    moved: bool,
    /// At the last stall check, the client held this stream up.
    held_at_check: bool,
}

/// A header block waiting for its CONTINUATION frames.
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

struct Connection<IO, H, F> {
    io: IO,
    handler: H,
    settings: H2Settings,
    read_buf: BytesMut,
    read_closed: bool,
    preface_done: bool,
    /// The client's first frame (its SETTINGS) arrived.
    settings_seen: bool,
    w: Writer,
    decoder: Decoder,
    streams: IntMap<u32, Stream<F>>,
    signals: Arc<Signals>,
    /// Streams to poll this turn; `woken` and `released` receive the signals.
    ready: Vec<u32>,
    woken: Vec<u32>,
    released: Vec<u32>,
    recv_window: RecvWindow,
    peer_initial_window: u32,
    /// The highest stream id the client opened.
    last_stream: u32,
    continuation: Option<PartialBlock>,
    closed: VecDeque<(u32, Closed)>,
    /// We sent GOAWAY(NO_ERROR): new streams are refused, the connection ends with the last.
    goaway_sent: bool,
    draining: bool,
    peer_goaway: bool,
    /// A final GOAWAY is written: the connection ends once it is flushed.
    closing: bool,
    idle: Pin<Box<Sleep>>,
    last_activity: Instant,
    /// Fires every `stall_timeout` to see whether the client holds anything up (see
    /// `poll_stall`).
    stall_check: Pin<Box<Sleep>>,
    /// At the last check, output waited for the socket.
    socket_waited: bool,
    /// Bytes went out since the last check.
    wrote_since_check: bool,
    /// Reading was held back (too much output waiting) since the last check.
    read_held_since_check: bool,
    resets: Budget,
    control: Budget,
    max_block: usize,
}

impl<IO, H, F> Connection<IO, H, F>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    fn new(io: IO, prefix: BytesMut, settings: H2Settings, handler: H) -> Self {
        let mut out = Vec::with_capacity(16 * 1024);
        frame::encode_settings(
            &mut out,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    settings.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, settings.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
                (setting::ENABLE_CONNECT_PROTOCOL, 1),
            ],
        );
        if settings.connection_window > frame::DEFAULT_WINDOW {
            frame::encode_window_update(
                &mut out,
                0,
                settings.connection_window - frame::DEFAULT_WINDOW,
            );
        }
        let now = Instant::now();
        let mut read_buf = prefix;
        read_buf.reserve(READ_CHUNK);
        Self {
            io,
            handler,
            settings,
            read_buf,
            read_closed: false,
            preface_done: false,
            settings_seen: false,
            w: Writer {
                out,
                written: 0,
                encoder: Encoder::new(),
                send_window: SendWindow::new(frame::DEFAULT_WINDOW),
                peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
                conn_blocked: Vec::new(),
                requeue: Vec::new(),
            },
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            streams: IntMap::default(),
            signals: Arc::new(Signals::default()),
            ready: Vec::new(),
            woken: Vec::new(),
            released: Vec::new(),
            recv_window: RecvWindow::new(settings.connection_window.max(frame::DEFAULT_WINDOW)),
            peer_initial_window: frame::DEFAULT_WINDOW,
            last_stream: 0,
            continuation: None,
            closed: VecDeque::with_capacity(CLOSED_MEMORY),
            goaway_sent: false,
            draining: false,
            peer_goaway: false,
            closing: false,
            idle: Box::pin(tokio::time::sleep_until(now + settings.idle_timeout)),
            last_activity: now,
            stall_check: Box::pin(tokio::time::sleep_until(now + settings.stall_timeout)),
            socket_waited: false,
            wrote_since_check: false,
            read_held_since_check: false,
            resets: Budget::new(),
            control: Budget::new(),
            max_block: (settings.max_header_list_size as usize)
                .saturating_mul(2)
                .max(16 * 1024),
        }
    }

    /// One or more turns; Ready when the connection is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.signals.register(cx.waker());
        let mut turns = 0;
        loop {
            turns += 1;
            if turns > MAX_TURNS {
                // A stream that keeps waking itself (a handler out of tokio's cooperative
                // budget does) must not keep this task from yielding.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut progress = false;
            if !self.closing {
                self.poll_idle(cx);
            }
            if !self.closing {
                match self.poll_read(cx) {
                    Ok(read) => progress |= read,
                    Err(reason) => self.fail(reason),
                }
            }
            if !self.closing {
                match self.run_streams() {
                    Ok(ran) => progress |= ran,
                    Err(reason) => self.fail(reason),
                }
                self.check_graceful_end();
            }
            let (wrote, flushed) = self.poll_write(cx);
            progress |= wrote;
            // Closing: what is still unwritten goes out in `close`, within its grace period
            // (a client that does not read must not hold the connection open).
            if self.closing || matches!(flushed, Poll::Ready(Err(_))) {
                return Poll::Ready(());
            }
            if self.read_closed && !self.closing {
                // The client is gone (or half-closed): nothing it asked for can be delivered
                // reliably any more.
                return Poll::Ready(());
            }
            if !progress {
                // Checked only before waiting: a connection that keeps moving is not stalled,
                // and its turns pay nothing for the check.
                if !self.closing && self.poll_stall(cx) {
                    continue;
                }
                return Poll::Pending;
            }
        }
    }

    /// Idle timeout: no open stream and no frame for `idle_timeout`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) {
        while self.idle.as_mut().poll(cx).is_ready() {
            let idle_since = self.last_activity;
            // A header block left unfinished counts as idle: that is a slow-loris.
            if self.streams.is_empty() && idle_since.elapsed() >= self.settings.idle_timeout {
                tracing::debug!("h2: idle connection closed");
                self.goaway(Reason::NO_ERROR);
                self.closing = true;
                return;
            }
            let next = if self.streams.is_empty() {
                idle_since + self.settings.idle_timeout
            } else {
                Instant::now() + self.settings.idle_timeout
            };
            self.idle.as_mut().reset(next);
        }
    }

    /// Stall timeout, checked every `stall_timeout`: what the client held up at two checks in a
    /// row without moving between them is cut, so that it cannot hold an upstream connection.
    /// - The socket: output it does not take. The connection gets GOAWAY and closes.
    /// - A stream's response: DATA its windows keep back. The stream is reset (CANCEL).
    /// - A stream's request body, awaited with windows open and none of it sent: the body
    ///   fails with [`crate::limits::ClientStalled`] (the handler answers 408). A WebSocket
    ///   tunnel's silent client is left to the tunnel's idle timeout.
    ///
    /// Progress is counted per stream (DATA sent or received on it), so PINGs or another
    /// stream's traffic do not hide a stream the client starves.
    ///
    /// Returns whether it cut anything (there is output to write).
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stall_check.as_mut().poll(cx).is_pending() {
            return false;
        }
        let after = self.settings.stall_timeout;
        let next = Instant::now() + after;
        self.stall_check.as_mut().reset(next);
        let _ = self.stall_check.as_mut().poll(cx); // registers the waker
        let socket_waits = self.w.pending() > 0;
        let wrote = std::mem::take(&mut self.wrote_since_check);
        if socket_waits && self.socket_waited && !wrote {
            tracing::debug!(?after, "h2: the client took no output; connection closed");
            self.goaway(Reason::CANCEL);
            self.closing = true;
            return true;
        }
        self.socket_waited = socket_waits;
        // Bodies cannot be judged while we ourselves left the client's bytes unread.
        let judge_bodies = !std::mem::take(&mut self.read_held_since_check);
        let connection_window_open = self.recv_window.available() > 0;
        let mut stalled = Vec::new();
        for (id, stream) in &mut self.streams {
            let output_held = matches!(&stream.phase, Phase::Body(out) if !out.pending.is_empty())
                && (stream.send_window.available() == 0 || stream.waiting_for_connection);
            let body_held = judge_bodies
                && !stream.tunnel
                && connection_window_open
                && stream.recv_window.available() > 0
                && stream
                    .recv
                    .as_ref()
                    .is_some_and(|recv| recv.lock().awaits_data());
            let held = output_held || body_held;
            if held && stream.held_at_check && !stream.moved {
                stalled.push((*id, output_held));
            }
            stream.held_at_check = held;
            stream.moved = false;
        }
        let cut = !stalled.is_empty();
        for (id, output_held) in stalled {
            tracing::debug!(
                stream = id,
                ?after,
                output_held,
                "h2: the client stalled a stream"
            );
            if output_held {
                let _ = self.send_reset(id, Reason::CANCEL);
            } else if let Some(recv) = self.streams.get(&id).and_then(|s| s.recv.as_ref()) {
                recv.lock().stall(after);
            }
        }
        cut
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, Reason> {
        let mut progress = false;
        let mut frames = 0;
        loop {
            if self.read_closed || self.closing {
                return Ok(progress);
            }
            if self.w.pending() >= OUT_HIGH {
                self.read_held_since_check = true;
                return Ok(progress);
            }
            if !self.preface_done {
                let n = self.read_buf.len().min(PREFACE.len());
                if self.read_buf[..n] != PREFACE[..n] {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                if n == PREFACE.len() {
                    self.read_buf.advance(n);
                    self.preface_done = true;
                }
            }
            if self.preface_done {
                match frame::decode(&mut self.read_buf, MAX_FRAME_SIZE) {
                    Ok(Some(frame)) => {
                        self.on_frame(frame)?;
                        progress = true;
                        frames += 1;
                        if frames >= FRAMES_PER_TURN {
                            return Ok(true);
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(FrameError::Connection(reason)) => return Err(reason),
                    Err(FrameError::Stream { stream, reason }) => {
                        if !self.settings_seen {
                            return Err(Reason::PROTOCOL_ERROR);
                        }
                        self.stream_error(stream, reason)?;
                        progress = true;
                        continue;
                    }
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 2 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
                Poll::Pending => return Ok(progress),
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.read_closed = true;
                    return Ok(true);
                }
                Poll::Ready(Ok(_)) => {
                    self.last_activity = Instant::now();
                    progress = true;
                }
            }
        }
    }

    /// Writes the output buffer. Returns whether anything was written, and Ready once all is.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> (bool, Poll<io::Result<()>>) {
        let mut wrote = false;
        while self.w.written < self.w.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.w.out[self.w.written..]) {
                Poll::Ready(Ok(0)) => {
                    return (wrote, Poll::Ready(Err(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    self.w.written += n;
                    wrote = true;
                    self.wrote_since_check = true;
                }
                Poll::Ready(Err(e)) => return (wrote, Poll::Ready(Err(e))),
                Poll::Pending => return (wrote, Poll::Pending),
            }
        }
        if !self.w.out.is_empty() {
            self.w.out.clear();
            self.w.written = 0;
            // A burst (a large body) can grow the buffer; do not keep that much per connection.
            if self.w.out.capacity() > 4 * OUT_HIGH {
                self.w.out.shrink_to(OUT_HIGH);
            }
        }
        // A no-op on TCP; TLS streams need it to push out their records.
        (wrote, Pin::new(&mut self.io).poll_flush(cx))
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Reason> {
        if !self.settings_seen {
            if !matches!(frame, Frame::Settings(_)) {
                return Err(Reason::PROTOCOL_ERROR);
            }
            self.settings_seen = true;
        }
        if let Some(partial) = &self.continuation {
            match &frame {
                Frame::Continuation { stream, .. } if *stream == partial.stream => {}
                _ => return Err(Reason::PROTOCOL_ERROR),
            }
        }
        match frame {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len),
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
            } => {
                if stream.is_multiple_of(2) {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                if end_headers {
                    self.on_header_block(stream, &block, end_stream)
                } else {
                    if block.is_empty() && self.control_exceeded() {
                        return Err(Reason::ENHANCE_YOUR_CALM);
                    }
                    self.continuation = Some(PartialBlock {
                        stream,
                        end_stream,
                        block: BytesMut::from(&block[..]),
                    });
                    Ok(())
                }
            }
            Frame::Continuation {
                block, end_headers, ..
            } => {
                let Some(mut partial) = self.continuation.take() else {
                    return Err(Reason::PROTOCOL_ERROR);
                };
                if partial.block.len() + block.len() > self.max_block {
                    // The block cannot be decoded, so the compression state is lost.
                    return Err(Reason::ENHANCE_YOUR_CALM);
                }
                if block.is_empty() && !end_headers && self.control_exceeded() {
                    return Err(Reason::ENHANCE_YOUR_CALM);
                }
                partial.block.extend_from_slice(&block);
                if end_headers {
                    let whole = partial.block.freeze();
                    self.on_header_block(partial.stream, &whole, partial.end_stream)
                } else {
                    self.continuation = Some(partial);
                    Ok(())
                }
            }
            Frame::Priority { .. } | Frame::SettingsAck | Frame::Unknown { .. } => Ok(()),
            Frame::RstStream { stream, reason } => self.on_reset(stream, reason),
            Frame::Settings(settings) => self.on_settings(settings),
            Frame::PushPromise { .. } => Err(Reason::PROTOCOL_ERROR),
            Frame::Ping { ack, payload } => {
                if !ack {
                    if self.control_exceeded() {
                        return Err(Reason::ENHANCE_YOUR_CALM);
                    }
                    frame::encode_ping_ack(&mut self.w.out, payload);
                }
                Ok(())
            }
            Frame::GoAway { reason, .. } => {
                if reason != Reason::NO_ERROR {
                    tracing::debug!(%reason, "h2: client sent GOAWAY");
                }
                self.peer_goaway = true;
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
        }
    }

    fn control_exceeded(&mut self) -> bool {
        self.control
            .exceeded(self.settings.max_control_frames, self.settings.abuse_window)
    }

    fn on_settings(&mut self, settings: Settings) -> Result<(), Reason> {
        if self.control_exceeded() {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        if let Some(size) = settings.header_table_size {
            self.w.encoder.set_peer_table_size(size);
        }
        if let Some(size) = settings.max_frame_size {
            self.w.peer_max_frame = size;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.peer_initial_window);
            self.peer_initial_window = window;
            for (id, stream) in self.streams.iter_mut() {
                stream
                    .send_window
                    .adjust(delta)
                    .map_err(|_| Reason::FLOW_CONTROL_ERROR)?;
                if delta > 0 && matches!(stream.phase, Phase::Body(_)) && !stream.scheduled {
                    stream.scheduled = true;
                    self.ready.push(*id);
                }
            }
        }
        frame::encode_settings_ack(&mut self.w.out);
        Ok(())
    }

    fn on_window_update(&mut self, id: u32, increment: u32) -> Result<(), Reason> {
        if id == 0 {
            self.w
                .send_window
                .increase(increment)
                .map_err(|_| Reason::FLOW_CONTROL_ERROR)?;
            let blocked = std::mem::take(&mut self.w.conn_blocked);
            for id in blocked {
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.waiting_for_connection = false;
                }
                self.schedule(id);
            }
            return Ok(());
        }
        match self.streams.get_mut(&id) {
            Some(stream) => {
                if stream.send_window.increase(increment).is_err() {
                    return self.stream_error(id, Reason::FLOW_CONTROL_ERROR);
                }
                if matches!(stream.phase, Phase::Body(_)) {
                    self.schedule(id);
                }
                Ok(())
            }
            None if id > self.last_stream => Err(Reason::PROTOCOL_ERROR),
            None => Ok(()), // a closed stream: updates may still be in flight
        }
    }

    fn on_reset(&mut self, id: u32, reason: Reason) -> Result<(), Reason> {
        if id > self.last_stream {
            return Err(Reason::PROTOCOL_ERROR); // an idle stream
        }
        if self.streams.contains_key(&id) {
            tracing::trace!(stream = id, %reason, "h2: client reset a stream");
            self.remove_stream(id, Closed::ResetByPeer, "stream reset by the client");
            if self
                .resets
                .exceeded(self.settings.max_resets, self.settings.abuse_window)
            {
                return Err(Reason::ENHANCE_YOUR_CALM);
            }
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        id: u32,
        data: Bytes,
        end_stream: bool,
        flow_len: u32,
    ) -> Result<(), Reason> {
        // Every DATA frame counts against the connection window, whatever its stream's state.
        self.recv_window
            .receive(flow_len)
            .map_err(|_| Reason::FLOW_CONTROL_ERROR)?;
        if flow_len == 0 && !end_stream && self.control_exceeded() {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            self.release_connection(flow_len);
            if id > self.last_stream {
                return Err(Reason::PROTOCOL_ERROR); // an idle stream
            }
            return match self.closed_state(id) {
                Some(Closed::ResetByUs) => Ok(()),
                Some(Closed::ResetByPeer) => self.send_reset(id, Reason::STREAM_CLOSED),
                Some(Closed::Finished) | None => Err(Reason::STREAM_CLOSED),
            };
        };
        if stream.remote_closed {
            self.release_connection(flow_len);
            return self.stream_error(id, Reason::STREAM_CLOSED);
        }
        if stream.recv_window.receive(flow_len).is_err() {
            self.release_connection(flow_len);
            return self.stream_error(id, Reason::FLOW_CONTROL_ERROR);
        }
        stream.received += data.len() as u64;
        stream.moved = true;
        let length_broken = match stream.content_length {
            Some(declared) => {
                stream.received > declared || (end_stream && stream.received != declared)
            }
            None => false,
        };
        if length_broken {
            self.release_connection(flow_len);
            return self.stream_error(id, Reason::PROTOCOL_ERROR);
        }
        // Padding is never consumed by anyone: credit it at once. Data for a body that was
        // dropped is discarded and credited to the connection only, so the client's stream
        // stalls instead of uploading into the void (the response ends it with RST_STREAM).
        let padding = flow_len - data.len() as u32;
        let delivered = match &stream.recv {
            Some(state) => state.lock().push_data(data),
            None => false,
        };
        let discard = if delivered { padding } else { flow_len };
        if delivered
            && padding > 0
            && let Some(increment) = stream.recv_window.release(padding)
            && !end_stream
        {
            frame::encode_window_update(&mut self.w.out, id, increment);
        }
        let mut finished = false;
        if end_stream {
            stream.remote_closed = true;
            if let Some(state) = &stream.recv {
                state.lock().end();
            }
            finished = matches!(stream.phase, Phase::Done);
        }
        self.release_connection(discard);
        if finished {
            self.remove_stream(id, Closed::Finished, "stream closed");
        }
        Ok(())
    }

    fn on_header_block(&mut self, id: u32, block: &Bytes, end_stream: bool) -> Result<(), Reason> {
        let max_list = self.settings.max_header_list_size as usize;
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers.
            let mut trailers = TrailersHead::default();
            let decoded = self
                .decoder
                .decode(block, max_list, |f| trailers.push(f))
                .map_err(|_| Reason::COMPRESSION_ERROR)?;
            if stream.remote_closed {
                return self.stream_error(id, Reason::STREAM_CLOSED);
            }
            let length_ok = stream
                .content_length
                .is_none_or(|declared| declared == stream.received);
            let trailers = match trailers.finish() {
                Ok(t) if end_stream && !decoded.over_limit && length_ok => t,
                _ => return self.stream_error(id, Reason::PROTOCOL_ERROR),
            };
            stream.remote_closed = true;
            if let Some(state) = &stream.recv {
                state.lock().push_trailers(trailers);
            }
            if matches!(stream.phase, Phase::Done) {
                self.remove_stream(id, Closed::Finished, "stream closed");
            }
            return Ok(());
        }
        if id <= self.last_stream {
            // Not open: decode anyway (the compression state must follow every block).
            self.decoder
                .decode(block, max_list, |_| {})
                .map_err(|_| Reason::COMPRESSION_ERROR)?;
            return match self.closed_state(id) {
                Some(Closed::ResetByUs) => Ok(()),
                Some(Closed::ResetByPeer) => self.send_reset(id, Reason::STREAM_CLOSED),
                Some(Closed::Finished) => Err(Reason::STREAM_CLOSED),
                None => Err(Reason::PROTOCOL_ERROR), // stream ids must increase
            };
        }
        self.last_stream = id;
        let mut head = RequestHead::new();
        let decoded = self
            .decoder
            .decode(block, max_list, |f| head.push(f))
            .map_err(|_| Reason::COMPRESSION_ERROR)?;
        if self.goaway_sent || self.streams.len() >= self.settings.max_concurrent_streams as usize {
            return self.stream_error(id, Reason::REFUSED_STREAM);
        }
        if decoded.over_limit {
            tracing::debug!(
                stream = id,
                size = decoded.list_size,
                "h2: request head too large"
            );
            self.respond_locally(id, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, end_stream);
            return Ok(());
        }
        let checked = match head.finish(end_stream) {
            Ok(checked) => checked,
            Err(reason) => {
                tracing::debug!(stream = id, reason, "h2: malformed request");
                return self.stream_error(id, Reason::PROTOCOL_ERROR);
            }
        };
        let is_head = checked.parts.method == Method::HEAD;
        let (body, recv) = if end_stream {
            (crate::body::empty(), None)
        } else {
            let state = Arc::new(Mutex::new(RecvState::default()));
            let body = RequestBody::new(
                id,
                Arc::clone(&state),
                Arc::clone(&self.signals),
                checked.content_length,
            );
            (body.boxed(), Some(state))
        };
        let content_length = checked.content_length;
        let tunnel = checked
            .parts
            .extensions
            .get::<crate::upgrade::ExtendedConnect>()
            .is_some();
        let future = Box::pin((self.handler)(Request::from_parts(checked.parts, body)));
        self.open_stream(id, Phase::Handler(future), recv, end_stream, is_head);
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.content_length = content_length;
            stream.tunnel = tunnel;
        }
        Ok(())
    }

    fn open_stream(
        &mut self,
        id: u32,
        phase: Phase<F>,
        recv: Option<Arc<Mutex<RecvState>>>,
        end_stream: bool,
        is_head: bool,
    ) {
        let waker = StreamWaker::new(id, Arc::clone(&self.signals));
        let task_waker = Waker::from(Arc::clone(&waker));
        self.streams.insert(
            id,
            Stream {
                phase,
                waker,
                task_waker,
                scheduled: true,
                recv,
                remote_closed: end_stream,
                recv_window: RecvWindow::new(self.settings.stream_window),
                content_length: None,
                received: 0,
                send_window: SendWindow::new(self.peer_initial_window),
                is_head,
                waiting_for_connection: false,
                tunnel: false,
                moved: false,
                held_at_check: false,
            },
        );
        self.ready.push(id);
    }

    /// Answers a request ourselves (431) without involving the handler.
    fn respond_locally(&mut self, id: u32, status: StatusCode, end_stream: bool) {
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let (parts, body) = crate::body::text_response(status, text).into_parts();
        let exact = body.size_hint().exact();
        write_head(&mut self.w, id, &parts, false, exact, false);
        let out = BodyOut {
            body,
            pending: Bytes::new(),
            end_after: false,
        };
        self.open_stream(id, Phase::Body(out), None, end_stream, false);
    }

    fn schedule(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.scheduled
        {
            stream.scheduled = true;
            self.ready.push(id);
        }
    }

    /// Takes the streams' signals and polls the ready streams. Returns whether it did anything.
    fn run_streams(&mut self) -> Result<bool, Reason> {
        let signalled = self.signals.take(&mut self.woken, &mut self.released);
        let mut released = std::mem::take(&mut self.released);
        for id in released.drain(..) {
            self.on_released(id);
        }
        self.released = released;
        let mut woken = std::mem::take(&mut self.woken);
        for id in woken.drain(..) {
            self.schedule(id);
        }
        self.woken = woken;
        let requeued = std::mem::take(&mut self.w.requeue);
        for id in requeued {
            self.schedule(id);
        }
        if self.ready.is_empty() {
            return Ok(signalled);
        }
        let mut ready = std::mem::take(&mut self.ready);
        let mut polled = false;
        for (i, &id) in ready.iter().enumerate() {
            if self.w.pending() >= OUT_HIGH {
                // The socket is behind: the rest waits until the output drains (reporting
                // progress here would spin while a client does not read).
                self.ready.extend_from_slice(&ready[i..]);
                break;
            }
            self.poll_stream(id)?;
            polled = true;
        }
        ready.clear();
        if self.ready.is_empty() {
            self.ready = ready;
        }
        Ok(polled || signalled)
    }

    /// A request body consumed (or dropped) data: give the credit back.
    fn on_released(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return; // already credited when the stream was removed
        };
        let Some(state) = &stream.recv else { return };
        let (consumed, dropped) = state.lock().take_consumed();
        if !stream.remote_closed
            && let Some(increment) = stream.recv_window.release(consumed)
        {
            frame::encode_window_update(&mut self.w.out, id, increment);
        }
        if dropped {
            stream.recv = None;
        }
        self.release_connection(consumed);
    }

    fn release_connection(&mut self, len: u32) {
        if len > 0
            && let Some(increment) = self.recv_window.release(len)
        {
            frame::encode_window_update(&mut self.w.out, 0, increment);
        }
    }

    /// Polls one stream: its handler, then its response body, as far as windows allow.
    fn poll_stream(&mut self, id: u32) -> Result<(), Reason> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        stream.scheduled = false;
        stream.waker.clear();
        let mut cx = Context::from_waker(&stream.task_waker);
        loop {
            match &mut stream.phase {
                Phase::Handler(future) => {
                    let Poll::Ready(response) = future.as_mut().poll(&mut cx) else {
                        return Ok(());
                    };
                    let (parts, body) = response.into_parts();
                    if parts.status.is_informational() {
                        // A final response cannot be 1xx; nothing sensible can be sent.
                        return self.stream_error(id, Reason::INTERNAL_ERROR);
                    }
                    let no_body = stream.is_head
                        || parts.status == StatusCode::NO_CONTENT
                        || parts.status == StatusCode::NOT_MODIFIED;
                    let exact = body.size_hint().exact();
                    let empty = no_body || body.is_end_stream() || exact == Some(0);
                    write_head(&mut self.w, id, &parts, empty, exact, no_body);
                    stream.phase = if empty {
                        Phase::Done
                    } else {
                        Phase::Body(BodyOut {
                            body,
                            pending: Bytes::new(),
                            end_after: false,
                        })
                    };
                }
                Phase::Body(out) => {
                    let window_before = stream.send_window.available();
                    let sent = send_body(&mut self.w, id, &mut stream.send_window, out, &mut cx);
                    stream.moved |= stream.send_window.available() != window_before;
                    match sent {
                        Sent::Pending => return Ok(()),
                        Sent::WaitConnection => {
                            if !stream.waiting_for_connection {
                                stream.waiting_for_connection = true;
                                self.w.conn_blocked.push(id);
                            }
                            return Ok(());
                        }
                        Sent::Done => stream.phase = Phase::Done,
                        Sent::Failed => {
                            tracing::debug!(stream = id, "h2: response body failed");
                            return self.stream_error(id, Reason::INTERNAL_ERROR);
                        }
                    }
                }
                Phase::Done => break,
            }
        }
        // The response is complete.
        if stream.remote_closed {
            self.remove_stream(id, Closed::Finished, "stream closed");
        } else if rest_is_in_flight(stream) {
            // The rest of the request fits the window the client already has, so it is on
            // its way: let it arrive (the stream ends with its END_STREAM) rather than reset.
            // Some clients (curl before 8) drop a response whose request was reset.
        } else {
            // RFC 9113 §8.1: the response does not need the rest of the request.
            self.send_reset(id, Reason::NO_ERROR)?;
        }
        Ok(())
    }

    /// Writes RST_STREAM and forgets the stream; no budget (our own decision).
    fn send_reset(&mut self, id: u32, reason: Reason) -> Result<(), Reason> {
        frame::encode_rst_stream(&mut self.w.out, id, reason);
        self.remove_stream(id, Closed::ResetByUs, "stream reset");
        Ok(())
    }

    /// A stream error caused by the client: RST_STREAM, counted against the reset budget.
    fn stream_error(&mut self, id: u32, reason: Reason) -> Result<(), Reason> {
        if id > self.last_stream && !self.streams.contains_key(&id) {
            return Err(Reason::PROTOCOL_ERROR); // RST_STREAM may not name an idle stream
        }
        self.send_reset(id, reason)?;
        if self
            .resets
            .exceeded(self.settings.max_resets, self.settings.abuse_window)
        {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        Ok(())
    }

    fn remove_stream(&mut self, id: u32, how: Closed, reason: &'static str) {
        let credit = match self.streams.remove(&id) {
            Some(stream) => stream
                .recv
                .as_ref()
                .map_or(0, |state| state.lock().close(reason)),
            None => 0,
        };
        self.release_connection(credit);
        if self.closed.len() >= CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back((id, how));
        if self.streams.is_empty() {
            self.last_activity = Instant::now();
        }
    }

    fn closed_state(&self, id: u32) -> Option<Closed> {
        self.closed
            .iter()
            .rev()
            .find(|(closed, _)| *closed == id)
            .map(|(_, how)| *how)
    }

    fn goaway(&mut self, reason: Reason) {
        frame::encode_goaway(&mut self.w.out, self.last_stream, reason, b"");
        self.goaway_sent = true;
    }

    /// A connection error: GOAWAY, every stream dropped, close once written.
    fn fail(&mut self, reason: Reason) {
        tracing::debug!(%reason, "h2: connection error");
        self.goaway(reason);
        self.closing = true;
        self.drop_streams("connection error");
    }

    fn drop_streams(&mut self, reason: &'static str) {
        for (_, stream) in self.streams.drain() {
            if let Some(state) = &stream.recv {
                state.lock().close(reason);
            }
        }
    }

    /// Graceful drain: GOAWAY with the last stream we will serve; open streams finish.
    fn start_drain(&mut self) {
        self.draining = true;
        if !self.closing && !self.goaway_sent {
            self.goaway(Reason::NO_ERROR);
        }
    }

    fn check_graceful_end(&mut self) {
        if (self.goaway_sent || self.peer_goaway)
            && self.streams.is_empty()
            && self.continuation.is_none()
        {
            if !self.goaway_sent {
                self.goaway(Reason::NO_ERROR);
            }
            self.closing = true;
        }
    }

    /// After the last turn: write what is left, close our side, and read what the client
    /// still sends for a moment, so that a reset does not destroy the GOAWAY in flight.
    async fn close(mut self) {
        self.drop_streams("connection closed");
        let pending = self.w.out.split_off(self.w.written.min(self.w.out.len()));
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if self.io.write_all(&pending).await.is_ok() {
                let _ = self.io.shutdown().await;
            }
            if self.read_closed {
                return;
            }
            let mut discard = [0u8; 4096];
            let mut total = 0usize;
            while total < (1 << 20) {
                match self.io.read(&mut discard).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }
}

impl<IO, H, F> Drop for Connection<IO, H, F> {
    fn drop(&mut self) {
        // Bodies held elsewhere (an upstream HTTP/2 client's task) must not wait forever.
        for (_, stream) in self.streams.drain() {
            if let Some(state) = &stream.recv {
                state.lock().close("connection closed");
            }
        }
    }
}

/// After a complete response: whether the rest of the request body is already on its way,
/// that is, its declared length fits the window the client has without more credit.
fn rest_is_in_flight<F>(stream: &Stream<F>) -> bool {
    stream.content_length.is_some_and(|declared| {
        declared.saturating_sub(stream.received) <= u64::from(stream.recv_window.available())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::hpack::Name;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
    use tokio::sync::mpsc;

    /// The client end of an in-memory connection, speaking raw frames.
    struct Client {
        read: ReadHalf<DuplexStream>,
        write: WriteHalf<DuplexStream>,
        buf: BytesMut,
        decoder: Decoder,
    }

    /// Literal header fields without indexing (the client side of HPACK, kept trivial).
    fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0);
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    fn get(path: &str) -> Vec<u8> {
        block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", path),
        ])
    }

    fn post(path: &str) -> Vec<u8> {
        block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", path),
        ])
    }

    fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::put_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    impl Client {
        async fn send(&mut self, bytes: &[u8]) {
            self.write.write_all(bytes).await.unwrap();
        }

        /// The next frame from the server, or None once it closed.
        async fn next(&mut self) -> Option<(Frame, Option<u16>)> {
            loop {
                match frame::decode(&mut self.buf, frame::MAX_MAX_FRAME_SIZE) {
                    Ok(Some(f)) => {
                        let mut status = None;
                        if let Frame::Headers { block, .. } = &f {
                            self.decoder
                                .decode(block, usize::MAX, |field| {
                                    if field.name == Name::Status {
                                        status = std::str::from_utf8(&field.value)
                                            .ok()
                                            .and_then(|s| s.parse().ok());
                                    }
                                })
                                .unwrap();
                        }
                        return Some((f, status));
                    }
                    Ok(None) => {}
                    Err(e) => panic!("server sent a bad frame: {e:?}"),
                }
                match self.read.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        }

        async fn goaway(&mut self) -> Reason {
            loop {
                match self.next().await {
                    Some((Frame::GoAway { reason, .. }, _)) => return reason,
                    Some(_) => {}
                    None => panic!("closed without GOAWAY"),
                }
            }
        }

        async fn status(&mut self, id: u32) -> u16 {
            loop {
                match self.next().await {
                    Some((Frame::Headers { stream, .. }, Some(status))) if stream == id => {
                        return status;
                    }
                    Some((Frame::RstStream { stream, reason }, _)) if stream == id => {
                        panic!("stream {id} reset: {reason}")
                    }
                    Some(_) => {}
                    None => panic!("closed before a response on {id}"),
                }
            }
        }
    }

    type Bodies = mpsc::UnboundedSender<ProxyBody>;

    /// Starts a server on an in-memory pipe. The handler answers 200 "ok"; for `/give` it
    /// first hands the request body to the test; for `/hold` it hands it over and never
    /// answers; `/big` gets a body of `BIG` bytes.
    fn start(settings: H2Settings) -> (Client, mpsc::UnboundedReceiver<ProxyBody>) {
        let (client, server) = tokio::io::duplex(8 * 1024);
        let (bodies, held) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let bodies: Bodies = bodies;
            serve(
                server,
                BytesMut::new(),
                settings,
                CancellationToken::new(),
                move |request: Request<ProxyBody>| {
                    let bodies = bodies.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        if parts.uri.path() == "/give" || parts.uri.path() == "/hold" {
                            let _ = bodies.send(body);
                        }
                        if parts.uri.path() == "/hold" {
                            std::future::pending::<()>().await;
                        }
                        if parts.uri.path() == "/big" {
                            return Response::new(crate::body::full(vec![b'x'; BIG]));
                        }
                        Response::new(crate::body::full("ok"))
                    }
                },
            )
            .await;
        });
        let (read, write) = tokio::io::split(client);
        let client = Client {
            read,
            write,
            buf: BytesMut::new(),
            decoder: Decoder::new(4096),
        };
        (client, held)
    }

    const BIG: usize = 1 << 20;

    /// Opens stream `id` with a POST to `/hold` (its body still to come) and returns the
    /// request body the handler handed over.
    async fn hold_upload(
        c: &mut Client,
        held: &mut mpsc::UnboundedReceiver<ProxyBody>,
        id: u32,
    ) -> ProxyBody {
        c.send(&raw(
            frame::kind::HEADERS,
            frame::flag::END_HEADERS,
            id,
            &post("/hold"),
        ))
        .await;
        held.recv().await.unwrap()
    }

    async fn handshake(client: &mut Client) {
        let mut hello = PREFACE.to_vec();
        hello.extend(raw(frame::kind::SETTINGS, 0, 0, &[]));
        client.send(&hello).await;
    }

    #[tokio::test(start_paused = true)]
    async fn frames_on_closed_streams() {
        let (mut c, _held) = start(H2Settings::default());
        handshake(&mut c).await;
        let end = frame::flag::END_HEADERS | frame::flag::END_STREAM;
        c.send(&raw(frame::kind::HEADERS, end, 1, &get("/"))).await;
        assert_eq!(c.status(1).await, 200);
        // Wait for END_STREAM on stream 1, then send DATA on the closed stream.
        loop {
            if let Some((
                Frame::Data {
                    end_stream: true, ..
                },
                _,
            )) = c.next().await
            {
                break;
            }
        }
        c.send(&raw(frame::kind::DATA, 0, 1, b"late")).await;
        assert_eq!(c.goaway().await, Reason::STREAM_CLOSED);
    }

    #[tokio::test(start_paused = true)]
    async fn trailing_headers_on_a_half_closed_stream_reset_it() {
        let (mut c, mut held) = start(H2Settings::default());
        handshake(&mut c).await;
        // A POST whose body is still open when the response is complete.
        let end = frame::flag::END_HEADERS | frame::flag::END_STREAM;
        c.send(&raw(
            frame::kind::HEADERS,
            frame::flag::END_HEADERS,
            1,
            &post("/give"),
        ))
        .await;
        let _body = held.recv().await.unwrap();
        assert_eq!(c.status(1).await, 200);
        // The response is complete while the request is not: RST_STREAM(NO_ERROR).
        loop {
            match c.next().await {
                Some((Frame::RstStream { stream: 1, reason }, _)) => {
                    assert_eq!(reason, Reason::NO_ERROR);
                    break;
                }
                Some(_) => {}
                None => panic!("closed"),
            }
        }
        // Frames already in flight for the stream we reset are ignored...
        c.send(&raw(frame::kind::DATA, 0, 1, b"in flight")).await;
        c.send(&raw(frame::kind::HEADERS, end, 1, &block(&[("x", "1")])))
            .await;
        // ...and the connection goes on.
        c.send(&raw(frame::kind::HEADERS, end, 3, &get("/"))).await;
        assert_eq!(c.status(3).await, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_rest_in_flight_is_awaited_not_reset() {
        let (mut c, mut held) = start(H2Settings::default());
        handshake(&mut c).await;
        let mut head = post("/give");
        head.extend(block(&[("content-length", "10")]));
        c.send(&raw(
            frame::kind::HEADERS,
            frame::flag::END_HEADERS,
            1,
            &head,
        ))
        .await;
        let _body = held.recv().await.unwrap();
        assert_eq!(c.status(1).await, 200);
        loop {
            match c.next().await {
                Some((
                    Frame::Data {
                        end_stream: true, ..
                    },
                    _,
                )) => break,
                Some((Frame::RstStream { .. }, _)) => panic!("reset while the rest was in flight"),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
        // The rest arrives and ends the stream; a frame after that is a connection error.
        c.send(&raw(
            frame::kind::DATA,
            frame::flag::END_STREAM,
            1,
            b"0123456789",
        ))
        .await;
        c.send(&raw(frame::kind::DATA, 0, 1, b"more")).await;
        assert_eq!(c.goaway().await, Reason::STREAM_CLOSED);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_get_goaway() {
        let (mut c, _held) = start(H2Settings {
            idle_timeout: Duration::from_secs(5),
            ..H2Settings::default()
        });
        handshake(&mut c).await;
        let started = Instant::now();
        assert_eq!(c.goaway().await, Reason::NO_ERROR);
        assert!(started.elapsed() >= Duration::from_secs(5));
        while c.next().await.is_some() {}
    }

    const STALL: Duration = Duration::from_secs(5);
    /// HEADERS flags for a request without a body.
    const END_REQUEST: u8 = frame::flag::END_HEADERS | frame::flag::END_STREAM;

    fn stall_settings() -> H2Settings {
        H2Settings {
            stall_timeout: STALL,
            ..H2Settings::default()
        }
    }

    /// The next RST_STREAM on `id`, skipping other frames (None: the connection closed).
    async fn reset_of(c: &mut Client, id: u32) -> Option<Reason> {
        loop {
            match c.next().await? {
                (Frame::RstStream { stream, reason }, _) if stream == id => return Some(reason),
                (Frame::GoAway { reason, .. }, _) => panic!("GOAWAY {reason:?}"),
                _ => {}
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_window_stays_shut_is_reset() {
        let (mut c, _held) = start(stall_settings());
        let mut hello = PREFACE.to_vec();
        let mut no_window = Vec::new();
        no_window.extend_from_slice(&setting::INITIAL_WINDOW_SIZE.to_be_bytes());
        no_window.extend_from_slice(&0u32.to_be_bytes());
        hello.extend(raw(frame::kind::SETTINGS, 0, 0, &no_window));
        hello.extend(raw(frame::kind::HEADERS, END_REQUEST, 1, &get("/big")));
        c.send(&hello).await;
        let started = Instant::now();
        assert_eq!(c.status(1).await, 200);
        // PINGs keep the connection busy (their ACKs go out); they do not move the starved
        // stream.
        let (_, spare) = tokio::io::split(tokio::io::duplex(1).0);
        let mut write = std::mem::replace(&mut c.write, spare);
        let pinger = tokio::spawn(async move {
            for i in 0..10u64 {
                tokio::time::sleep(STALL / 2).await;
                let ping = raw(frame::kind::PING, 0, 0, &i.to_be_bytes());
                if write.write_all(&ping).await.is_err() {
                    return;
                }
            }
        });
        let reset = tokio::time::timeout(3 * STALL, reset_of(&mut c, 1)).await;
        pinger.abort();
        assert_eq!(reset.expect("not reset"), Some(Reason::CANCEL));
        // Held up at two checks in a row with nothing moved between them.
        let took = started.elapsed();
        assert!(took >= STALL && took <= 2 * STALL, "reset after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed() {
        let (mut c, _held) = start(stall_settings());
        handshake(&mut c).await;
        c.send(&raw(frame::kind::HEADERS, END_REQUEST, 1, &get("/big")))
            .await;
        // Reads nothing: the pipe fills, and the server's output waits.
        tokio::time::sleep(3 * STALL).await;
        // Closed by now: what was buffered drains, then the pipe ends (it would otherwise
        // wait for window updates that never come).
        let drained = tokio::time::timeout(STALL / 2, async { while c.next().await.is_some() {} });
        assert!(drained.await.is_ok(), "the connection is still open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_reading_slowly_is_not_closed() {
        let (mut c, _held) = start(stall_settings());
        handshake(&mut c).await;
        c.send(&raw(frame::kind::HEADERS, END_REQUEST, 1, &get("/big")))
            .await;
        // A DATA frame (more than the pipe holds, so read from the socket) every half period,
        // and window for more: slow, but moving.
        let mut received = 0;
        while received < BIG {
            match c.next().await {
                Some((Frame::Data { data, .. }, _)) => {
                    tokio::time::sleep(STALL / 2).await;
                    received += data.len();
                    let mut credit = Vec::new();
                    frame::encode_window_update(&mut credit, 0, data.len() as u32);
                    frame::encode_window_update(&mut credit, 1, data.len() as u32);
                    c.send(&credit).await;
                }
                Some((Frame::GoAway { reason, .. }, _)) => {
                    panic!("GOAWAY {reason:?} after {received} bytes")
                }
                None => panic!("closed after {received} bytes"),
                Some(_) => {}
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stalls_its_upload_is_closed() {
        let (mut c, mut held) = start(stall_settings());
        handshake(&mut c).await;
        let mut body = hold_upload(&mut c, &mut held, 1).await;
        c.send(&raw(frame::kind::DATA, 0, 1, b"some")).await;
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "some");
        let started = Instant::now();
        // The handler waits for the rest, which never comes.
        let failed = tokio::time::timeout(3 * STALL, body.frame()).await;
        let Ok(Some(Err(error))) = failed else {
            panic!("the body did not fail: {failed:?}");
        };
        assert!(
            error
                .downcast_ref::<crate::limits::ClientStalled>()
                .is_some(),
            "{error}"
        );
        let took = started.elapsed();
        assert!(took >= STALL && took <= 2 * STALL, "failed after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_the_client_has_no_window_for_is_not_its_stall() {
        let (mut c, mut held) = start(stall_settings());
        handshake(&mut c).await;
        // Two uploads nobody reads use up the 2 MiB connection window (1 MiB each).
        let chunk = vec![7u8; 16 * 1024];
        let mut unread = Vec::new();
        for id in [1u32, 3] {
            unread.push(hold_upload(&mut c, &mut held, id).await);
            for _ in 0..64 {
                c.send(&raw(frame::kind::DATA, 0, id, &chunk)).await;
            }
        }
        // A third upload is awaited, but the client cannot send any of it.
        let mut third = hold_upload(&mut c, &mut held, 5).await;
        let waited = tokio::time::timeout(4 * STALL, third.frame()).await;
        assert!(waited.is_err(), "the third body ended: {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_client_is_left_to_the_tunnel() {
        let (mut c, mut held) = start(stall_settings());
        handshake(&mut c).await;
        let connect = block(&[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/hold"),
        ]);
        c.send(&raw(
            frame::kind::HEADERS,
            frame::flag::END_HEADERS,
            1,
            &connect,
        ))
        .await;
        let mut body = held.recv().await.unwrap();
        // A WebSocket may be quiet for long: the stall timeout does not apply to its DATA.
        let waited = tokio::time::timeout(4 * STALL, body.frame()).await;
        assert!(waited.is_err(), "the tunnel's body ended: {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_not_read_from() {
        let (mut c, _held) = start(H2Settings {
            max_control_frames: u32::MAX,
            ..H2Settings::default()
        });
        handshake(&mut c).await;
        // 20,000 PINGs would need 340 KB of answers; the server stops reading once 64 KiB
        // wait for a client that reads nothing.
        let mut pings = Vec::new();
        for i in 0..20_000u64 {
            pings.extend(raw(frame::kind::PING, 0, 0, &i.to_be_bytes()));
        }
        let sent = tokio::time::timeout(Duration::from_secs(10), c.send(&pings)).await;
        assert!(
            sent.is_err(),
            "the server kept reading while its answers piled up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ping_floods_get_enhance_your_calm() {
        let (mut c, _held) = start(H2Settings {
            max_control_frames: 100,
            ..H2Settings::default()
        });
        handshake(&mut c).await;
        let mut pings = Vec::new();
        for i in 0..200u64 {
            pings.extend(raw(frame::kind::PING, 0, 0, &i.to_be_bytes()));
        }
        c.send(&pings).await;
        assert_eq!(c.goaway().await, Reason::ENHANCE_YOUR_CALM);
    }

    #[tokio::test(start_paused = true)]
    async fn flow_credit_follows_consumption() {
        let (mut c, mut held) = start(H2Settings::default());
        handshake(&mut c).await;
        let mut body = hold_upload(&mut c, &mut held, 1).await;
        // 640 KiB: more than half the stream window, less than half the connection window.
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..40 {
            c.send(&raw(frame::kind::DATA, 0, 1, &chunk)).await;
        }
        // No credit comes back while nothing is read.
        let mut updates = Vec::new();
        while let Ok(Some((f, _))) =
            tokio::time::timeout(Duration::from_millis(100), c.next()).await
        {
            if let Frame::WindowUpdate { stream, increment } = f {
                updates.push((stream, increment));
            }
        }
        // The connection-level update sent on connect is the only one.
        assert_eq!(updates, [(0, (2 << 20) - 65_535)]);
        // Reading the body gives the credit back.
        let mut read = 0;
        while read < 40 * chunk.len() {
            let frame = body.frame().await.unwrap().unwrap();
            read += frame.data_ref().map_or(0, |d| d.len());
        }
        let mut updates = Vec::new();
        while let Ok(Some((f, _))) =
            tokio::time::timeout(Duration::from_millis(100), c.next()).await
        {
            if let Frame::WindowUpdate { stream, increment } = f {
                updates.push((stream, increment));
            }
        }
        // One stream update for everything consumed (at least half the window had been);
        // none for the connection, which is below half of its 2 MiB.
        assert_eq!(updates, [(1, 40 * 16 * 1024)]);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_the_stream_window_is_a_flow_control_error() {
        let (mut c, mut held) = start(H2Settings {
            stream_window: 32 * 1024,
            ..H2Settings::default()
        });
        handshake(&mut c).await;
        let _body = hold_upload(&mut c, &mut held, 1).await;
        let chunk = vec![1u8; 16 * 1024];
        for _ in 0..3 {
            c.send(&raw(frame::kind::DATA, 0, 1, &chunk)).await;
        }
        loop {
            match c.next().await {
                Some((Frame::RstStream { stream: 1, reason }, _)) => {
                    assert_eq!(reason, Reason::FLOW_CONTROL_ERROR);
                    break;
                }
                Some(_) => {}
                None => panic!("closed"),
            }
        }
    }
}
