//! Streaming a body from blocking read code: a `Write` that hands chunks to a bounded channel, drained by the
//! HTTP body. A client that stops reading for `SEND_TIMEOUT` ends the stream and frees the thread.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::Metrics;

/// Chunks in flight between the reader thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 8;
const CHUNK_BYTES: usize = 256 * 1024;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    rt: Handle,
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
}

impl ChannelWriter {
    fn send(&self, item: Result<Bytes, io::Error>) -> io::Result<()> {
        let sent = self
            .rt
            .block_on(tokio::time::timeout(SEND_TIMEOUT, self.tx.send(item)));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }

    /// Ends the body with an error, so the client sees a cut-short response rather than a short file.
    pub fn fail(&self, message: String) {
        let _ = self.send(Err(io::Error::other(message)));
    }
}

impl ChannelWriter {
    /// Sends `bytes` as one chunk, after whatever is buffered (no copy).
    pub fn send_bytes(&mut self, bytes: Bytes) -> io::Result<()> {
        self.flush()?;
        self.metrics.sent(bytes.len());
        self.send(Ok(bytes))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= CHUNK_BYTES {
            // Large writes go straight out, without a copy into the buffer first.
            self.metrics.sent(data.len());
            self.send(Ok(Bytes::copy_from_slice(data)))?;
            return Ok(data.len());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.metrics.sent(chunk.len());
        self.send(Ok(chunk))
    }
}

/// Runs `produce` on a blocking thread, writing into the returned body. The permit is held until it ends.
pub fn body_from_blocking(
    metrics: Arc<Metrics>,
    permit: OwnedSemaphorePermit,
    produce: impl FnOnce(&mut ChannelWriter) -> Result<(), String> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut w = ChannelWriter {
            tx,
            rt,
            buf: Vec::with_capacity(CHUNK_BYTES),
            metrics,
        };
        let result = produce(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = result {
            w.fail(e);
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}
