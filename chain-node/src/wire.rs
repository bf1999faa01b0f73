//! The gossip envelope and the catch-up messages live with the sans-IO node, which speaks them
//! (`chain::node::wire`); this path stays so that the driver, its tests and anything outside keep their
//! imports. What is the driver's own is the framing of the catch-up protocol on a libp2p stream
//! ([`BlocksCodec`]): it moves bytes and checks only their size; the node decodes them.

pub use chain::node::wire::*;

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The request-response codec of the catch-up protocol (`chain::node::wire::blocks_protocol`): one request
/// and one answer per stream, each a u32 big-endian length and then its bytes. A request over
/// [`CATCH_UP_REQUEST_BYTES`] or an answer over [`CATCH_UP_ANSWER_BYTES_MAX`] is refused from its length,
/// before anything is allocated; the stream is closed with an error and the asker counts the request as
/// failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlocksCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a catch-up frame of {len} bytes, over the limit of {max}"),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    body: &[u8],
    max: usize,
) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l as usize <= max)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "catch-up frame over the limit")
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

impl libp2p::request_response::Codec for BlocksCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, CATCH_UP_REQUEST_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, CATCH_UP_ANSWER_BYTES_MAX).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, CATCH_UP_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, CATCH_UP_ANSWER_BYTES_MAX).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain::ShardId;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    /// Frames round-trip, and a length over the limit is refused before its body is read or allocated.
    #[test]
    fn frames_round_trip_and_oversized_lengths_are_refused() {
        futures::executor::block_on(async {
            let protocol = StreamProtocol::new("/test/blocks/1");
            let mut codec = BlocksCodec;
            let request = encode_blocks_request(&BlocksRequest::Blocks {
                shard: ShardId(2),
                from: 9,
            });
            let mut out = Cursor::new(Vec::new());
            codec
                .write_request(&protocol, &mut out, request.clone())
                .await
                .expect("writes");
            let mut back = Cursor::new(out.into_inner());
            let got = codec
                .read_request(&protocol, &mut back)
                .await
                .expect("reads");
            assert_eq!(got, request);

            let answer = encode_busy_answer();
            let mut out = Cursor::new(Vec::new());
            codec
                .write_response(&protocol, &mut out, answer.clone())
                .await
                .expect("writes");
            let mut back = Cursor::new(out.into_inner());
            assert_eq!(
                codec
                    .read_response(&protocol, &mut back)
                    .await
                    .expect("reads"),
                answer
            );

            // A request claiming 4 GiB, and an answer one byte over the limit, with no body behind them.
            let mut huge = Cursor::new(u32::MAX.to_be_bytes().to_vec());
            assert!(codec.read_request(&protocol, &mut huge).await.is_err());
            let over = (CATCH_UP_ANSWER_BYTES_MAX as u32 + 1)
                .to_be_bytes()
                .to_vec();
            assert!(
                codec
                    .read_response(&protocol, &mut Cursor::new(over))
                    .await
                    .is_err()
            );
            // Nor does the writer send a request over the limit.
            let mut out = Cursor::new(Vec::new());
            assert!(
                codec
                    .write_request(&protocol, &mut out, vec![0; CATCH_UP_REQUEST_BYTES + 1])
                    .await
                    .is_err()
            );
        });
    }
}
