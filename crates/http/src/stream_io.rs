//! The two halves of a client or upstream connection, cleartext or TLS, as one type each, so
//! the HTTP/1 server and client are written once. A match per read or write costs nothing
//! measurable; cleartext keeps tokio's lock-free owned halves, TLS uses `tokio::io::split`
//! (a TLS session is one state machine, so its halves share it behind a lock).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// The reading half of a connection.
pub enum ConnRead {
    Tcp(OwnedReadHalf),
    ServerTls(ReadHalf<ServerTls>),
    ClientTls(ReadHalf<ClientTls>),
}

/// The writing half of a connection.
pub enum ConnWrite {
    Tcp(OwnedWriteHalf),
    ServerTls(WriteHalf<ServerTls>),
    ClientTls(WriteHalf<ClientTls>),
}

/// Splits a cleartext connection.
pub fn split_tcp(stream: TcpStream) -> (ConnRead, ConnWrite) {
    let (read, write) = stream.into_split();
    (ConnRead::Tcp(read), ConnWrite::Tcp(write))
}

/// Splits a TLS connection accepted from a client.
pub fn split_server_tls(stream: ServerTls) -> (ConnRead, ConnWrite) {
    let (read, write) = tokio::io::split(stream);
    (ConnRead::ServerTls(read), ConnWrite::ServerTls(write))
}

/// Splits a TLS connection made to an upstream.
pub fn split_client_tls(stream: ClientTls) -> (ConnRead, ConnWrite) {
    let (read, write) = tokio::io::split(stream);
    (ConnRead::ClientTls(read), ConnWrite::ClientTls(write))
}

impl ConnRead {
    /// The cleartext socket, for checks that only a raw socket allows (is an idle pooled
    /// connection closed?).
    pub fn tcp(&self) -> Option<&OwnedReadHalf> {
        match self {
            Self::Tcp(read) => Some(read),
            _ => None,
        }
    }
}

impl ConnWrite {
    /// The cleartext socket, for bodies moved into it without copies (see [`crate::splice`]).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Tcp(write) => Some(write.as_ref()),
            _ => None,
        }
    }
}

impl AsyncRead for ConnRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            Self::ServerTls(read) => Pin::new(read).poll_read(cx, buf),
            Self::ClientTls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(write) => Pin::new(write).poll_write(cx, buf),
            Self::ServerTls(write) => Pin::new(write).poll_write(cx, buf),
            Self::ClientTls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            Self::ServerTls(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            Self::ClientTls(write) => Pin::new(write).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(write) => write.is_write_vectored(),
            Self::ServerTls(write) => write.is_write_vectored(),
            Self::ClientTls(write) => write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(write) => Pin::new(write).poll_flush(cx),
            Self::ServerTls(write) => Pin::new(write).poll_flush(cx),
            Self::ClientTls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            Self::ServerTls(write) => Pin::new(write).poll_shutdown(cx),
            Self::ClientTls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}
