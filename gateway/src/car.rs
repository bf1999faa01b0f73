//! Trustless CAR responses (CARv1, blocks in depth-first order, no duplicates): the blocks of the path from
//! the root to its end, then the end's DAG as `dag-scope` (`all`, `entity`, `block`) and `entity-bytes` ask.
//!
//! Every block comes from `Reader::block`, which checks it against its CID, and the walk is iterative with a
//! depth limit and a visited set, so a hostile DAG cannot make it loop or grow without bound.

use std::collections::HashSet;
use std::io::Write;

use axum::http::HeaderMap;
use axum::response::Response;
use cid::Cid;
use huds::cids::{DAG_PB, RAW};
use huds::unixfs::{DataType, Node};
use huds::{ReadError, Reader};

use crate::Gateway;
use crate::error::GatewayError;
use crate::path::ContentPath;
use crate::serve::{Query, cache_control, not_modified, not_modified_response, trustless_response};
use crate::stream::body_from_blocking;

const DEPTH_MAX: usize = 64;
const CONTENT_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Block,
    Entity,
    All,
}

impl Scope {
    fn parse(s: Option<&str>) -> Result<Scope, GatewayError> {
        match s {
            None | Some("all") => Ok(Scope::All),
            Some("entity") => Ok(Scope::Entity),
            Some("block") => Ok(Scope::Block),
            Some(other) => Err(GatewayError::BadRequest(format!(
                "dag-scope {other:?} is not one of block, entity, all"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Block => "block",
            Scope::Entity => "entity",
            Scope::All => "all",
        }
    }
}

/// `entity-bytes=from:to`: `from` an offset (negative: from the end), `to` an inclusive offset, negative
/// from the end, or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityBytes {
    from: i64,
    to: Option<i64>,
}

impl EntityBytes {
    pub fn parse(s: &str) -> Result<EntityBytes, GatewayError> {
        let bad = || GatewayError::BadRequest(format!("entity-bytes {s:?} is not from:to"));
        let (from, to) = s.split_once(':').ok_or_else(bad)?;
        let from: i64 = from.parse().map_err(|_| bad())?;
        let to = match to {
            "*" => None,
            t => Some(t.parse::<i64>().map_err(|_| bad())?),
        };
        Ok(EntityBytes { from, to })
    }

    /// The byte range of a file of `size` bytes this selects (empty when nothing).
    pub fn range(self, size: u64) -> std::ops::Range<u64> {
        let at = |x: i64| {
            if x >= 0 {
                (x as u64).min(size)
            } else {
                size.saturating_sub(x.unsigned_abs())
            }
        };
        let start = at(self.from);
        let end = match self.to {
            None => size,
            Some(t) if t >= 0 => (t as u64).saturating_add(1).min(size),
            Some(t) => at(t).saturating_add(1).min(size),
        };
        start..end.max(start)
    }
}

/// Appends an unsigned LEB128 varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The CARv1 header `{roots: [root], version: 1}` in dag-cbor, length-prefixed.
pub fn header(root: &Cid) -> Vec<u8> {
    let cid = root.to_bytes();
    let mut cbor = vec![0xa2, 0x65];
    cbor.extend_from_slice(b"roots");
    cbor.push(0x81);
    // Tag 42, then a byte string: the multibase identity prefix 0x00 and the binary CID.
    cbor.extend_from_slice(&[0xd8, 0x2a]);
    let len = cid.len() + 1;
    if len < 24 {
        cbor.push(0x40 | len as u8);
    } else {
        cbor.extend_from_slice(&[0x58, len as u8]);
    }
    cbor.push(0x00);
    cbor.extend_from_slice(&cid);
    cbor.push(0x67);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    varint(cbor.len() as u64, &mut out);
    out.extend_from_slice(&cbor);
    out
}

fn write_block(out: &mut dyn Write, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
    let cid = cid.to_bytes();
    let mut frame = Vec::with_capacity(10 + cid.len());
    varint((cid.len() + data.len()) as u64, &mut frame);
    frame.extend_from_slice(&cid);
    out.write_all(&frame)?;
    out.write_all(data)
}

fn decode(cid: &Cid, block: &[u8]) -> Result<Node, ReadError> {
    Node::decode(cid.codec(), block).map_err(|source| ReadError::Decode { cid: *cid, source })
}

/// The blocks of the path's directories, from the root down, and the CID the path ends at.
fn path_blocks(reader: &Reader, names: &[String]) -> Result<(Vec<Cid>, Cid), ReadError> {
    let mut chain = Vec::with_capacity(names.len());
    let mut cid = reader.root();
    for name in names {
        chain.push(cid);
        if cid.codec() != DAG_PB {
            return Err(ReadError::NotDirectory(name.clone()));
        }
        let node = decode(&cid, &reader.block(&cid)?)?;
        if node.kind != DataType::Directory {
            return Err(ReadError::NotDirectory(name.clone()));
        }
        cid = node
            .links
            .iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| ReadError::NoEntry(name.clone()))?
            .cid;
    }
    Ok((chain, cid))
}

/// Writes the CAR: header, path blocks, then the terminus DAG under `scope` and `bytes`.
pub fn write_car(
    reader: &Reader,
    chain: &[Cid],
    terminus: Cid,
    scope: Scope,
    bytes: Option<EntityBytes>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let rd = |e: ReadError| e.to_string();
    out.write_all(&header(&reader.root())).map_err(io)?;
    let mut seen: HashSet<(Cid, u64)> = HashSet::new();
    for cid in chain {
        if seen.insert((*cid, u64::MAX)) {
            write_block(out, cid, &reader.block(cid).map_err(rd)?).map_err(io)?;
        }
    }
    // The terminus' size bounds entity-bytes; for anything but a file the range is ignored.
    let range = match bytes {
        Some(b) => {
            let block = reader.block(&terminus).map_err(rd)?;
            let size = if terminus.codec() == RAW {
                block.len() as u64
            } else {
                decode(&terminus, &block).map_err(rd)?.file_size()
            };
            b.range(size)
        }
        None => 0..u64::MAX,
    };
    // (cid, offset of its first byte within the file, depth)
    let mut stack = vec![(terminus, 0u64, 0usize)];
    while let Some((cid, start, depth)) = stack.pop() {
        if depth > DEPTH_MAX {
            return Err(ReadError::TooDeep.to_string());
        }
        if !seen.insert((cid, start)) {
            continue;
        }
        let block = reader.block(&cid).map_err(rd)?;
        write_block(out, &cid, &block).map_err(io)?;
        if scope == Scope::Block || cid.codec() != DAG_PB {
            continue;
        }
        let node = decode(&cid, &block).map_err(rd)?;
        let mut children = Vec::new();
        match node.kind {
            DataType::File | DataType::Raw => {
                let mut child_start = start + node.data.len() as u64;
                for (link, &bs) in node.links.iter().zip(&node.blocksizes) {
                    if bs > 0 && range.start < child_start + bs && range.end > child_start {
                        children.push((link.cid, child_start, depth + 1));
                    }
                    child_start += bs;
                }
            }
            DataType::Directory | DataType::HamtShard if scope == Scope::All => {
                children.extend(node.links.iter().map(|l| (l.cid, 0, depth + 1)));
            }
            _ => {}
        }
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

pub async fn respond(
    gw: Gateway,
    path: ContentPath,
    query: &Query,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let scope = Scope::parse(query.dag_scope.as_deref())?;
    let bytes = query
        .entity_bytes
        .as_deref()
        .map(EntityBytes::parse)
        .transpose()?;
    let (g, p) = (gw.clone(), path.clone());
    let (reader, chain, terminus) = gw
        .blocking(move || {
            let reader = g.reader(&p.root)?;
            let (chain, terminus) = path_blocks(&reader, &p.names)?;
            reader.block(&terminus)?;
            Ok((reader, chain, terminus))
        })
        .await?;
    let bytes_tag = bytes.map_or(String::new(), |b| {
        format!(".{}-{}", b.from, b.to.map_or("*".into(), |t| t.to_string()))
    });
    let etag = format!("\"{terminus}.car.{}{bytes_tag}\"", scope.name());
    let cache_control = cache_control(&path);
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag, cache_control));
    }
    let mut resp = trustless_response(
        CONTENT_TYPE,
        &etag,
        cache_control,
        &format!("{terminus}.car"),
    );
    if head {
        return Ok(resp);
    }
    let permit = gw.stream_permit()?;
    *resp.body_mut() = body_from_blocking(gw.inner.metrics.clone(), permit, move |w| {
        write_car(&reader, &chain, terminus, scope, bytes, w)
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_bytes_select_ranges() {
        let check = |s: &str, size: u64, r: std::ops::Range<u64>| {
            assert_eq!(EntityBytes::parse(s).expect(s).range(size), r, "{s}");
        };
        check("0:*", 100, 0..100);
        check("10:19", 100, 10..20);
        check("-10:*", 100, 90..100);
        check("0:-11", 100, 0..90);
        check("50:1000", 100, 50..100);
        check("200:*", 100, 100..100);
        assert!(EntityBytes::parse("x:1").is_err());
        assert!(EntityBytes::parse("1").is_err());
    }

    #[test]
    fn header_is_the_dag_cbor_of_roots_and_version() {
        let root = huds::cids::sha256_cid(RAW, b"x");
        let h = header(&root);
        // One-byte varint, then the map; the CID bytes sit after tag 42 and the identity prefix.
        assert_eq!(h[0] as usize, h.len() - 1);
        let cid = root.to_bytes();
        let at = h
            .windows(cid.len())
            .position(|w| w == cid)
            .expect("root in header");
        assert_eq!(
            &h[at - 5..at],
            &[0xd8, 0x2a, 0x58, (cid.len() + 1) as u8, 0x00]
        );
        assert!(h.ends_with(b"version\x01"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;

    proptest::proptest! {
        #[test]
        fn entity_bytes_select_inside_the_file(s in "-?[0-9]{0,20}:(\\*|-?[0-9]{0,20})", size in 0u64..1_000_000) {
            if let Ok(b) = EntityBytes::parse(&s) {
                let r = b.range(size);
                proptest::prop_assert!(r.start <= r.end && r.end <= size);
            }
        }
    }
}
