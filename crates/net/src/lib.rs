//! gatehouse-net: socket plumbing that knows nothing about HTTP.
//!
//! - [`bind_listener`]: a TCP listener with the options a proxy wants (SO_REUSEADDR so restarts
//!   do not wait out TIME_WAIT, a deep accept backlog, non-blocking for tokio).
//! - [`raise_open_file_limit`]: the open-file soft limit up to the hard limit.
//! - [`tune_stream`]: per-connection options (TCP_NODELAY: a proxy forwards small writes and
//!   must not let Nagle hold them back behind delayed ACKs).
//! - [`cidr`]: [`CidrTable`], longest-prefix match over IPv4 and IPv6 prefixes (IPv4-mapped
//!   IPv6 addresses count as IPv4); [`acl`]: [`AccessList`], allow/deny lists built on it.
//! - [`splice`]: [`splice::forward_exact`], a known number of bytes from one socket to another
//!   through a pipe, without copying them into the process (Linux).
//! - [`idle`]: [`IdleWatch`], a timeout on a transfer's silence that costs nothing until the
//!   transfer has to wait.
//!
//! Later: PROXY protocol, TCP_INFO, congestion control and fastopen.

pub mod acl;
pub mod cidr;
pub mod idle;
pub mod splice;

pub use acl::{Access, AccessList};
pub use cidr::CidrTable;
pub use idle::IdleWatch;
pub use ipnet::IpNet;

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// Accept backlog: the kernel caps it at net.core.somaxconn anyway.
const BACKLOG: i32 = 4096;

/// Binds a non-blocking TCP listener for use inside a tokio runtime.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // An IPv6 listener serves only IPv6; dual-stack is spelled as two listeners.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Applies per-connection options to an accepted or connected stream.
pub fn tune_stream(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Every connection is a file descriptor, and distributions still default the soft limit to
/// 1024: raises it to the hard limit (as nginx's `worker_rlimit_nofile` does), so a listener's
/// `max_connections` is the limit that applies rather than EMFILE.
pub fn raise_open_file_limit() -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_an_ephemeral_port_and_accepts() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        tune_stream(&client).unwrap();
        tune_stream(&server).unwrap();
        assert!(server.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_busy_port_is_an_error() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_listener(first.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
