//! Connections: a cap on how many are open, and an idle timeout on each, so slow or stalled clients cost a
//! bounded number of sockets and tasks and are closed, without disturbing anyone else.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How a gateway's connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A connection that neither sends nor takes a byte for this long is closed: a stalled request head, an idle
    /// keep-alive connection, a client that stopped reading.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the kernel's backlog until one closes.
    pub connections_max: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            idle_timeout: Duration::from_secs(60),
            connections_max: 1024,
        }
    }
}

/// A listener that hands out connections under a cap, each with an idle timeout.
pub struct Guarded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Guarded {
    pub fn new(inner: TcpListener, opts: ServeOptions) -> Guarded {
        Guarded {
            inner,
            permits: Arc::new(Semaphore::new(opts.connections_max.max(1))),
            idle: opts.idle_timeout,
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = IdleStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IdleStream, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (IdleStream::new(stream, permit, self.idle), addr);
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails with `TimedOut` once it has been idle for too long.
pub struct IdleStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    last_activity: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl IdleStream {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> IdleStream {
        let now = Instant::now();
        IdleStream {
            inner,
            _permit: permit,
            idle,
            last_activity: now,
            deadline: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// On a pending operation: whether the connection has now been idle too long. The timer is re-armed lazily
    /// from the last activity, so activity itself costs only a clock read.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let due = self.last_activity + self.idle;
            if self.deadline.deadline() != due {
                self.deadline.as_mut().reset(due);
            }
            match self.deadline.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if self.last_activity + self.idle <= Instant::now() => return true,
                Poll::Ready(()) => {}
            }
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long")
    }
}

impl AsyncRead for IdleStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl IdleStream {
    /// A write's outcome: bytes written count as activity; a write stalled past the idle limit fails.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.written(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
