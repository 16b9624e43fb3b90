//! The sockets: UDP workers and a TCP listener, answering from a [`SharedZones`].
//!
//! UDP is the hot path, so it runs on plain threads, not on an async runtime: each worker owns
//! one SO_REUSEPORT socket (the kernel spreads clients over them), blocks in `recvmmsg` for up
//! to [`BATCH`] queries, answers them into preallocated buffers and sends them with one
//! `sendmmsg`: two system calls per batch rather than two per query. TCP (fallback after TC,
//! large answers) runs on a small current-thread tokio runtime of its own: RFC 1035 4.2.2
//! length-prefixed messages, several per connection, idle connections closed.

use crate::authority::{SharedZones, Transport};
use crate::respond::Responder;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Queries taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// Largest query read over UDP (a query is a question and an OPT record: far smaller).
const UDP_BUF: usize = 4096;
/// How often a blocked UDP worker wakes to check for shutdown.
const STOP_POLL: Duration = Duration::from_millis(200);
/// A TCP connection with no complete query for this long is closed (RFC 7766 6.2.3).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Concurrent TCP connections; more are closed at once.
const MAX_TCP: usize = 512;

/// A running server; [`Server::stop`] (or drop) ends it.
pub struct Server {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tcp_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Binds UDP and TCP on `listen` (port 0: one OS-chosen port for both) and starts
    /// `workers` UDP threads and the TCP thread.
    pub fn start(zones: SharedZones, listen: SocketAddr, workers: usize) -> io::Result<Server> {
        let workers = workers.max(1);
        // With port 0 the UDP port the OS picks may be taken for TCP: try a few.
        let mut attempt = 0;
        let (first, tcp) = loop {
            let udp = udp_socket(listen)?;
            let addr = local(&udp)?;
            match tcp_socket(addr) {
                Ok(tcp) => break (udp, tcp),
                Err(e) if listen.port() == 0 && attempt < 8 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "TCP port taken; picking another");
                }
                Err(e) => return Err(e),
            }
        };
        let udp_addr = local(&first)?;
        let tcp_addr = tcp.local_addr()?.as_socket().unwrap_or(udp_addr);
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(udp_socket(udp_addr)?);
        }
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_read_timeout(Some(STOP_POLL))?;
            let (zones, stop) = (Arc::clone(&zones), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || udp_worker(&socket, &zones, &stop))?,
            );
        }
        let (tcp_stop, stopped) = tokio::sync::oneshot::channel();
        tcp.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        threads.push(
            std::thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        match tokio::net::TcpListener::from_std(tcp.into()) {
                            Ok(listener) => {
                                tokio::select! {
                                    _ = tcp_accept(listener, zones) => {}
                                    _ = stopped => {}
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "DNS TCP listener failed"),
                        }
                    });
                })?,
        );
        Ok(Server {
            udp_addr,
            tcp_addr,
            stop,
            threads,
            tcp_stop: Some(tcp_stop),
        })
    }

    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.tcp_stop.take() {
            let _ = tx.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn local(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("socket has no IP address"))
}

fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts queue in the kernel rather than being dropped while a batch is answered.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket)
}

/// Buffers and headers for one `recvmmsg`/`sendmmsg` batch, allocated once per worker.
struct Batch {
    bufs: Vec<[u8; UDP_BUF]>,
    out: Vec<[u8; UDP_BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    out_iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    out_msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zeroed_storage =
            unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        let zeroed_msg = unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut b = Box::new(Batch {
            bufs: vec![[0; UDP_BUF]; BATCH],
            out: vec![[0; UDP_BUF]; BATCH],
            addrs: vec![zeroed_storage; BATCH],
            iov: vec![iov; BATCH],
            out_iov: vec![iov; BATCH],
            msgs: vec![zeroed_msg; BATCH],
            out_msgs: vec![zeroed_msg; BATCH],
        });
        // The vectors never grow, so these pointers stay valid for the batch's life.
        for i in 0..BATCH {
            b.iov[i] = libc::iovec {
                iov_base: b.bufs[i].as_mut_ptr().cast(),
                iov_len: UDP_BUF,
            };
            b.out_iov[i].iov_base = b.out[i].as_mut_ptr().cast();
        }
        b
    }

    /// Re-arms the receive headers (the kernel overwrites name lengths and flags).
    fn arm(&mut self) {
        for i in 0..BATCH {
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }
}

fn udp_worker(socket: &Socket, zones: &SharedZones, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut batch = Batch::new();
    let mut responder = Responder::new();
    while !stop.load(Ordering::Relaxed) {
        batch.arm();
        // SAFETY: msgs points at BATCH armed headers whose buffers live in `batch`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                batch.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {}
                _ => {
                    tracing::warn!(error = %e, "DNS UDP receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            continue;
        }
        // One snapshot of the zones per batch.
        let set = zones.load();
        let mut sends = 0;
        for i in 0..n as usize {
            let len = batch.msgs[i].msg_len as usize;
            let peer = sockaddr_to_std(&batch.addrs[i]);
            let Some(peer) = peer else { continue };
            let Some(resp) = responder.respond(&set, &batch.bufs[i][..len], peer, Transport::Udp)
            else {
                continue;
            };
            if resp.len() > UDP_BUF {
                continue;
            }
            batch.out[sends][..resp.len()].copy_from_slice(resp);
            batch.out_iov[sends].iov_len = resp.len();
            let h = &mut batch.out_msgs[sends].msg_hdr;
            h.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = batch.msgs[i].msg_hdr.msg_namelen;
            h.msg_iov = &mut batch.out_iov[sends];
            h.msg_iovlen = 1;
            sends += 1;
        }
        let mut sent = 0;
        while sent < sends {
            // SAFETY: out_msgs[sent..sends] are armed with live buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    batch.out_msgs[sent..].as_mut_ptr(),
                    (sends - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                // A reply that cannot be sent (the peer vanished, buffers full) is skipped,
                // as a lost datagram would be.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}

fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

async fn tcp_accept(listener: tokio::net::TcpListener, zones: SharedZones) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let zones = Arc::clone(&zones);
        tokio::spawn(async move {
            let _ = tcp_connection(stream, peer, &zones).await;
            drop(permit);
        });
    }
}

async fn tcp_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    zones: &SharedZones,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut responder = Responder::new();
    let mut msg = vec![0u8; u16::MAX as usize];
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let len = u16::from_be_bytes(len) as usize;
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg[..len])).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let set = zones.load();
        let Some(resp) = responder.respond(&set, &msg[..len], peer, Transport::Tcp) else {
            // Nothing to say to a packet without a header: end the connection.
            return Ok(());
        };
        out.clear();
        out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
        out.extend_from_slice(resp);
        stream.write_all(&out).await?;
    }
}
