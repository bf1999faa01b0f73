//! `/huds/shard/1`: how nodes put, get and ask for shards.
//!
//! Goals: a shard moves in one request-response exchange; every frame has a hard size limit checked before any
//! allocation; decoding untrusted bytes returns an error, never panics. A frame is a u32 big-endian length and
//! a body `[version = 1][tag][fields]`:
//!
//! | message | tag | fields |
//! |---|---|---|
//! | Put request | 1 | cid length u8, cid, shard bytes (rest of the frame) |
//! | Get request | 2 | cid length u8, cid |
//! | Has request | 3 | cid length u8, cid |
//! | Sign request | 4 | a deal sign request (`deals::SignRequest` encoding, rest of the frame) |
//! | Deal request | 5 | a deal id, 32 bytes: the sign request this holder keeps for it (answered with Data, or NotFound) |
//! | Stored response | 1 | none |
//! | Data response | 2 | shard bytes (rest of the frame) |
//! | Present response | 3 | 0 or 1 |
//! | NotFound response | 4 | none |
//! | Refused response | 5 | UTF-8 reason, at most 256 bytes |
//! | Signed response | 6 | ed25519 signature, 64 bytes |

use std::io;

use cid::Cid;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/huds/shard/1");
/// Largest shard a node accepts or sends.
pub const SHARD_BYTES_MAX: usize = 16 << 20;
/// Largest frame: a shard plus its header.
pub const FRAME_BYTES_MAX: usize = SHARD_BYTES_MAX + 512;
const VERSION: u8 = 1;
const REASON_BYTES_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        cid: Cid,
        data: Vec<u8>,
    },
    Get {
        cid: Cid,
    },
    Has {
        cid: Cid,
    },
    /// Sign a storage deal: the encoded `deals::SignRequest`, decoded by the serving node.
    Sign(Vec<u8>),
    /// The sign request a holder keeps for a deal it holds a slot of (what a repairer needs of its shards:
    /// their CIDs, commitments and list proofs).
    Deal([u8; 32]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Stored,
    Data(Vec<u8>),
    Present(bool),
    NotFound,
    Refused(String),
    Signed([u8; 64]),
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("shard protocol: {what}"),
    )
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let b = cid.to_bytes();
    out.push(b.len() as u8);
    out.extend_from_slice(&b);
}

fn take_cid(b: &[u8]) -> io::Result<(Cid, &[u8])> {
    let (&len, rest) = b.split_first().ok_or_else(|| invalid("missing CID"))?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(invalid("truncated CID"));
    }
    let cid = Cid::try_from(&rest[..len]).map_err(|_| invalid("malformed CID"))?;
    Ok((cid, &rest[len..]))
}

fn header(b: &[u8]) -> io::Result<(u8, &[u8])> {
    match b {
        [VERSION, tag, rest @ ..] => Ok((*tag, rest)),
        [v, ..] if *v != VERSION => Err(invalid(&format!("unsupported version {v}"))),
        _ => Err(invalid("empty frame")),
    }
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    let mut out = vec![VERSION];
    match r {
        Request::Put { cid, data } => {
            out.push(1);
            put_cid(&mut out, cid);
            out.extend_from_slice(data);
        }
        Request::Get { cid } => {
            out.push(2);
            put_cid(&mut out, cid);
        }
        Request::Has { cid } => {
            out.push(3);
            put_cid(&mut out, cid);
        }
        Request::Sign(body) => {
            out.push(4);
            out.extend_from_slice(body);
        }
        Request::Deal(id) => {
            out.push(5);
            out.extend_from_slice(id);
        }
    }
    out
}

pub fn decode_request(b: &[u8]) -> io::Result<Request> {
    let (tag, rest) = header(b)?;
    if tag == 4 {
        return Ok(Request::Sign(rest.to_vec()));
    }
    if tag == 5 {
        let id = rest
            .try_into()
            .map_err(|_| invalid("a deal id is 32 bytes"))?;
        return Ok(Request::Deal(id));
    }
    let (cid, rest) = take_cid(rest)?;
    match tag {
        1 => Ok(Request::Put {
            cid,
            data: rest.to_vec(),
        }),
        2 | 3 if !rest.is_empty() => Err(invalid("trailing bytes")),
        2 => Ok(Request::Get { cid }),
        3 => Ok(Request::Has { cid }),
        t => Err(invalid(&format!("unknown request {t}"))),
    }
}

pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut out = vec![VERSION];
    match r {
        Response::Stored => out.push(1),
        Response::Data(d) => {
            out.push(2);
            out.extend_from_slice(d);
        }
        Response::Present(p) => out.extend_from_slice(&[3, u8::from(*p)]),
        Response::NotFound => out.push(4),
        Response::Refused(why) => {
            out.push(5);
            let mut end = why.len().min(REASON_BYTES_MAX);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&why.as_bytes()[..end]);
        }
        Response::Signed(signature) => {
            out.push(6);
            out.extend_from_slice(signature);
        }
    }
    out
}

pub fn decode_response(b: &[u8]) -> io::Result<Response> {
    let (tag, rest) = header(b)?;
    match (tag, rest) {
        (1, []) => Ok(Response::Stored),
        (2, d) => Ok(Response::Data(d.to_vec())),
        (3, [p @ (0 | 1)]) => Ok(Response::Present(*p == 1)),
        (4, []) => Ok(Response::NotFound),
        (6, s) if s.len() == 64 => {
            let mut signature = [0u8; 64];
            signature.copy_from_slice(s);
            Ok(Response::Signed(signature))
        }
        (5, r) if r.len() <= REASON_BYTES_MAX => {
            Ok(Response::Refused(String::from_utf8_lossy(r).into_owned()))
        }
        (t, _) => Err(invalid(&format!("malformed response {t}"))),
    }
}

/// A frame's length, checked against the limit before anything is allocated.
async fn read_frame_len<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(invalid(&format!(
            "frame of {len} bytes is over the {FRAME_BYTES_MAX}-byte limit"
        )));
    }
    Ok(len)
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let len = read_frame_len(io).await?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one frame whose body is `head` then `tail`, without joining them first (a shard is the tail).
async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    head: &[u8],
    tail: &[u8],
) -> io::Result<()> {
    let len = head.len() + tail.len();
    if len > FRAME_BYTES_MAX {
        return Err(invalid("outgoing frame over the limit"));
    }
    io.write_all(&(len as u32).to_be_bytes()).await?;
    io.write_all(head).await?;
    io.write_all(tail).await?;
    io.flush().await
}

/// Reads a response; a Data body is read straight into its own buffer (no second copy of the shard).
async fn read_response_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Response> {
    let len = read_frame_len(io).await?;
    let mut head = [0u8; 2];
    if len < head.len() {
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        return decode_response(&body);
    }
    io.read_exact(&mut head).await?;
    let mut rest = vec![0u8; len - head.len()];
    io.read_exact(&mut rest).await?;
    match head {
        [VERSION, 2] => Ok(Response::Data(rest)),
        _ => decode_response(&[head.as_slice(), &rest].concat()),
    }
}

/// The request-response codec of the shard protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardCodec;

impl libp2p::request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_request(&read_frame(io).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_response_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match &req {
            Request::Put { cid, data } => {
                let mut head = vec![VERSION, 1];
                put_cid(&mut head, cid);
                write_frame(io, &head, data).await
            }
            _ => write_frame(io, &encode_request(&req), &[]).await,
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match &res {
            Response::Data(d) => write_frame(io, &[VERSION, 2], d).await,
            _ => write_frame(io, &encode_response(&res), &[]).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huds::cids::blake3_cid;

    #[test]
    fn messages_round_trip() {
        let cid = blake3_cid(b"s");
        for r in [
            Request::Put {
                cid,
                data: b"shard".to_vec(),
            },
            Request::Put {
                cid,
                data: Vec::new(),
            },
            Request::Get { cid },
            Request::Has { cid },
        ] {
            assert_eq!(decode_request(&encode_request(&r)).expect("decodes"), r);
        }
        for r in [
            Response::Stored,
            Response::Data(vec![1, 2, 3]),
            Response::Present(true),
            Response::Present(false),
            Response::NotFound,
            Response::Refused("disk full".into()),
        ] {
            assert_eq!(decode_response(&encode_response(&r)).expect("decodes"), r);
        }
    }

    /// The streaming codec writes shards without joining them to their header: the bytes on the wire must be
    /// exactly the frame of the encoded message, and read back to the same message.
    #[test]
    fn the_streaming_codec_writes_the_encoded_frames_and_reads_them_back() {
        use futures::io::Cursor;
        use libp2p::request_response::Codec;
        let frame = |body: Vec<u8>| [(body.len() as u32).to_be_bytes().to_vec(), body].concat();
        futures::executor::block_on(async {
            let mut codec = ShardCodec;
            let responses = [
                Response::Data(vec![9; 70_000]),
                Response::Data(vec![]),
                Response::NotFound,
                Response::Present(true),
                Response::Stored,
                Response::Refused("storage full".into()),
            ];
            for res in responses {
                let mut wire = Vec::new();
                codec
                    .write_response(&PROTOCOL, &mut Cursor::new(&mut wire), res.clone())
                    .await
                    .expect("write");
                assert_eq!(wire, frame(encode_response(&res)), "{res:?}");
                let back = codec
                    .read_response(&PROTOCOL, &mut Cursor::new(&wire))
                    .await
                    .expect("read");
                assert_eq!(back, res);
            }
            let cid = blake3_cid(b"shard");
            for req in [
                Request::Put {
                    cid,
                    data: vec![7; 70_000],
                },
                Request::Get { cid },
                Request::Has { cid },
            ] {
                let mut wire = Vec::new();
                codec
                    .write_request(&PROTOCOL, &mut Cursor::new(&mut wire), req.clone())
                    .await
                    .expect("write");
                assert_eq!(wire, frame(encode_request(&req)));
                let back = codec
                    .read_request(&PROTOCOL, &mut Cursor::new(&wire))
                    .await
                    .expect("read");
                assert_eq!(back, req);
            }
        });
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            &[][..],
            &[2, 1],
            &[1, 9, 0],
            &[1, 2, 40, 1],
            &[1, 2, 0],
            &[1, 3, 1, 1],
        ] {
            assert!(decode_request(bad).is_err(), "{bad:?}");
        }
        for bad in [&[][..], &[1, 3, 2], &[1, 1, 0], &[1, 4, 0], &[1, 9]] {
            assert!(decode_response(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let mut frame = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 16]);
        let r = futures::executor::block_on(read_frame(&mut futures::io::Cursor::new(frame)));
        assert_eq!(r.expect_err("refused").kind(), io::ErrorKind::InvalidData);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }
    }
}
