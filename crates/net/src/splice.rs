//! Moving bytes from one TCP socket to another without copying them through user space:
//! splice(2) from the source socket into a pipe, and from the pipe into the destination socket.
//! The kernel moves page references; neither copy of a read-then-write relay happens, and the
//! pages the sender filled reach the final reader without passing through this process's cache.
//!
//! [`forward_exact`] moves a known number of bytes (an HTTP body with a Content-Length). Pipes
//! are kept per thread and reused: making one costs two descriptors and a system call, and a
//! pipe that ends a transfer empty is as good as new. A pipe left holding bytes (the transfer
//! failed) is closed instead.
//!
//! Linux only; elsewhere [`supported`] is false and callers keep their copying path.

use std::io;

/// Why a forward stopped short.
#[derive(Debug)]
pub enum ForwardError {
    /// Nothing was moved and the source is untouched: no pipe could be made (the descriptor
    /// limit), or this kernel refuses to splice these sockets. The caller can copy instead.
    NotStarted(io::Error),
    /// Reading the source failed, it closed early, or it sent nothing for its idle timeout.
    Source(io::Error),
    /// Writing the destination failed, or it took nothing for its idle timeout.
    Destination(io::Error),
}

/// How long each side of a forward may stall: each is watched by an [`IdleWatch`], so a side
/// that moves no byte for between one and two of its periods ends the forward.
///
/// [`IdleWatch`]: crate::IdleWatch
#[derive(Debug, Clone, Copy)]
pub struct Stalls {
    /// The source sends nothing.
    pub source: std::time::Duration,
    /// The destination takes nothing (its reader stopped reading).
    pub destination: std::time::Duration,
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotStarted(e) => write!(f, "cannot splice: {e}"),
            Self::Source(e) => write!(f, "reading: {e}"),
            Self::Destination(e) => write!(f, "writing: {e}"),
        }
    }
}

impl std::error::Error for ForwardError {}

/// Whether [`forward_exact`] can run on this system.
pub const fn supported() -> bool {
    cfg!(target_os = "linux")
}

#[cfg(target_os = "linux")]
pub use linux::{forward_exact, refuse_next_pipe};

/// Not available here: nothing to refuse.
#[cfg(not(target_os = "linux"))]
#[doc(hidden)]
pub fn refuse_next_pipe() {}

#[cfg(not(target_os = "linux"))]
/// Not available here: [`supported`] is false, and this fails at once.
pub async fn forward_exact(
    _from: &tokio::net::TcpStream,
    _to: &tokio::net::TcpStream,
    _len: u64,
    _stalls: Stalls,
) -> Result<(), ForwardError> {
    Err(ForwardError::NotStarted(io::ErrorKind::Unsupported.into()))
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{ForwardError, Stalls};
    use crate::IdleWatch;
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Asked of each new pipe (the default is 64 KiB in 16 page slots): a 256 KiB body moves
    /// in one splice each way. Refused above /proc/sys/fs/pipe-max-size; then the default stays.
    const PIPE_SIZE: libc::c_int = 256 * 1024;
    /// Smallest pipe worth splicing through.
    const MIN_PIPE_SIZE: libc::c_int = 64 * 1024;
    /// Pipes kept per thread between transfers (each holds its pages' budget while kept).
    const KEPT_PIPES: usize = 16;

    thread_local! {
        static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
        static REFUSE_NEXT_PIPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes this thread's next pipe fail to open, as at the descriptor limit: for tests of
    /// callers' fallback.
    #[doc(hidden)]
    pub fn refuse_next_pipe() {
        REFUSE_NEXT_PIPE.with(|refuse| refuse.set(true));
    }

    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// What one splice into it may ask for.
        capacity: usize,
    }

    impl Pipe {
        fn take() -> io::Result<Pipe> {
            if REFUSE_NEXT_PIPE.with(|refuse| refuse.replace(false)) {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            if let Some(pipe) = PIPES.with(|pipes| pipes.borrow_mut().pop()) {
                return Ok(pipe);
            }
            let mut fds = [0 as RawFd; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both descriptors were just opened and are owned by nothing else.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: fcntl on a descriptor we own. Setting returns the size given; a refusal
            // (above fs/pipe-max-size) leaves the size as it was, which is then asked for.
            let size = unsafe {
                match libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) {
                    set if set > 0 => set,
                    _ => libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ),
                }
            };
            // A user past its pipe page budget (fs/pipe-user-pages-soft) gets pipes of one or
            // two pages: splicing through those costs more system calls than copying saves.
            if size < MIN_PIPE_SIZE {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("pipes are limited to {size} bytes"),
                ));
            }
            let capacity = size as usize;
            Ok(Pipe {
                read,
                write,
                capacity,
            })
        }

        /// Back to the thread's pool; only empty pipes come here.
        fn give_back(self) {
            PIPES.with(|pipes| {
                let mut pipes = pipes.borrow_mut();
                if pipes.len() < KEPT_PIPES {
                    pipes.push(self);
                }
            });
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // No SPLICE_F_MORE: bytes in the pipe go out now, even if the source pauses after them.
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: splice only reads and writes the descriptors' kernel objects; null offsets
        // mean "the current position", as sockets and pipes require.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The error for a side that moved nothing for its period.
    fn stalled(watch: &IdleWatch, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing {what} for {:?}", watch.timeout()),
        )
    }

    /// Errors that say splice is not possible here rather than that a socket broke.
    fn refused(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP)
        )
    }

    /// Moves exactly `len` bytes from `from` to `to`, each side allowed to stall as `stalls`
    /// says. On error the sockets are left mid-message: the caller must close both.
    pub async fn forward_exact(
        from: &TcpStream,
        to: &TcpStream,
        len: u64,
        stalls: Stalls,
    ) -> Result<(), ForwardError> {
        let pipe = Pipe::take().map_err(ForwardError::NotStarted)?;
        let mut source_watch = IdleWatch::new(stalls.source);
        let mut destination_watch = IdleWatch::new(stalls.destination);
        let mut remaining = len;
        // Bytes in the pipe. The pipe is filled only when empty, so a splice into it that
        // would block always means the socket has nothing (a full pipe would block too, and
        // then the socket's readiness would be cleared wrongly).
        let mut in_pipe = 0usize;
        while remaining > 0 || in_pipe > 0 {
            if in_pipe == 0 {
                let want = remaining.min(pipe.capacity as u64) as usize;
                let filled = from.try_io(Interest::READABLE, || {
                    splice(from.as_raw_fd(), pipe.write.as_raw_fd(), want)
                });
                match filled {
                    Ok(0) => {
                        return Err(ForwardError::Source(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("closed with {remaining} bytes still to come"),
                        )));
                    }
                    Ok(n) => {
                        in_pipe = n;
                        remaining -= n as u64;
                        source_watch.moved();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match source_watch.wait(|cx| from.poll_read_ready(cx)).await {
                            Some(ready) => ready.map_err(ForwardError::Source)?,
                            None => {
                                return Err(ForwardError::Source(stalled(
                                    &source_watch,
                                    "received",
                                )));
                            }
                        }
                        continue;
                    }
                    // The first splice found this kernel unwilling: the socket is untouched.
                    Err(e) if remaining == len && refused(&e) => {
                        return Err(ForwardError::NotStarted(e));
                    }
                    Err(e) => return Err(ForwardError::Source(e)),
                }
            }
            let drained = to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), in_pipe)
            });
            match drained {
                Ok(0) => {
                    return Err(ForwardError::Destination(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    in_pipe -= n;
                    destination_watch.moved();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match destination_watch.wait(|cx| to.poll_write_ready(cx)).await {
                        Some(ready) => ready.map_err(ForwardError::Destination)?,
                        None => {
                            return Err(ForwardError::Destination(stalled(
                                &destination_watch,
                                "taken",
                            )));
                        }
                    }
                }
                Err(e) => return Err(ForwardError::Destination(e)),
            }
        }
        pipe.give_back();
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Long enough for any test's transfer.
    const PATIENT: Stalls = Stalls {
        source: Duration::from_secs(5),
        destination: Duration::from_secs(5),
    };

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn moves_exactly_the_length_and_leaves_what_follows() {
        // Larger than any pipe, so the pipe is filled and drained many times, and the reader
        // is slow to start, so the destination blocks.
        for len in [1usize, 4096, 300_000, 3_000_000] {
            let (mut source_writer, source) = pair().await;
            let (destination, mut reader) = pair().await;
            let body = pattern(len);
            let sent = body.clone();
            let writer = tokio::spawn(async move {
                source_writer.write_all(&sent).await.unwrap();
                source_writer.write_all(b"NEXT").await.unwrap();
                source_writer
            });
            let reading = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut got = vec![0; len];
                reader.read_exact(&mut got).await.unwrap();
                got
            });
            forward_exact(&source, &destination, len as u64, PATIENT)
                .await
                .unwrap();
            assert!(reading.await.unwrap() == body, "{len} bytes arrived intact");
            let _writer = writer.await.unwrap();
            // What came after the body is still in the source, unread.
            let mut next = [0u8; 4];
            let mut source = source;
            source.read_exact(&mut next).await.unwrap();
            assert_eq!(&next, b"NEXT");
        }
    }

    #[tokio::test]
    async fn a_source_that_closes_early_is_an_error() {
        let (mut source_writer, source) = pair().await;
        let (destination, _reader) = pair().await;
        source_writer.write_all(&pattern(1000)).await.unwrap();
        drop(source_writer);
        let error = forward_exact(&source, &destination, 5000, PATIENT)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ForwardError::Source(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{error}"
        );
    }

    #[tokio::test]
    async fn without_a_pipe_nothing_is_touched() {
        let (mut source_writer, mut source) = pair().await;
        let (destination, _reader) = pair().await;
        source_writer.write_all(b"still here").await.unwrap();
        refuse_next_pipe();
        let error = forward_exact(&source, &destination, 10, PATIENT)
            .await
            .unwrap_err();
        assert!(matches!(error, ForwardError::NotStarted(_)), "{error}");
        let mut kept = [0u8; 10];
        source.read_exact(&mut kept).await.unwrap();
        assert_eq!(&kept, b"still here");
    }

    #[tokio::test]
    async fn a_silent_source_times_out() {
        let (_source_writer, source) = pair().await;
        let (destination, _reader) = pair().await;
        let stalls = Stalls {
            source: Duration::from_millis(50),
            ..PATIENT
        };
        let error = forward_exact(&source, &destination, 10, stalls)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ForwardError::Source(e) if e.kind() == io::ErrorKind::TimedOut),
            "{error}"
        );
    }

    /// Forwards `len` bytes, which a writer keeps offering, into `destination`, expecting
    /// the forward to fail; returns why.
    async fn forward_offered(len: usize, destination: &TcpStream, stalls: Stalls) -> ForwardError {
        let (mut source_writer, source) = pair().await;
        let writer = tokio::spawn(async move {
            // Ignore failure: the forward stops reading once it gives up.
            let _ = source_writer.write_all(&pattern(len)).await;
        });
        let error = forward_exact(&source, destination, len as u64, stalls)
            .await
            .unwrap_err();
        drop(source);
        writer.await.unwrap();
        error
    }

    #[tokio::test]
    async fn a_closed_destination_is_an_error() {
        let (destination, reader) = pair().await;
        drop(reader);
        let error = forward_offered(4_000_000, &destination, PATIENT).await;
        assert!(matches!(error, ForwardError::Destination(_)), "{error}");
    }

    #[tokio::test]
    async fn a_destination_that_takes_nothing_times_out() {
        // Its reader stays open but never reads: the socket buffers fill, then nothing moves.
        let (destination, _reader) = pair().await;
        let stalls = Stalls {
            destination: Duration::from_millis(50),
            ..PATIENT
        };
        let error = forward_offered(16_000_000, &destination, stalls).await;
        assert!(
            matches!(&error, ForwardError::Destination(e) if e.kind() == io::ErrorKind::TimedOut),
            "{error}"
        );
    }
}
