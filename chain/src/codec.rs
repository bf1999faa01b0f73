//! The binary encoding used by every wire and persisted structure of the chain.
//!
//! Goals: canonical (one value, one encoding, so hashes and signatures are well defined), hand-written and
//! length-checked (a decoder never allocates more than the input can justify and never panics on any input),
//! and versioned (each top-level structure starts with a version byte).
//!
//! Integers are fixed-width big-endian. Variable-length fields carry a `u32` length prefix checked against
//! both the bytes that remain and a per-field maximum.

use crate::ids::{MemberIndex, ShardId};

/// Why some bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ended early: needed {needed} more bytes, {remaining} remain")]
    UnexpectedEnd { needed: usize, remaining: usize },
    #[error("{0} trailing bytes after the end of the structure")]
    TrailingBytes(usize),
    #[error("unsupported version {0}")]
    UnknownVersion(u8),
    #[error("unknown tag {tag} for {what}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{what} has {len} items/bytes, more than the maximum {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Appends encoded fields to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A shard id, as its `u16`.
    pub fn shard(&mut self, v: ShardId) -> &mut Self {
        self.u16(v.0)
    }

    /// A member index, as its `u16`.
    pub fn member(&mut self, v: MemberIndex) -> &mut Self {
        self.u16(v.0)
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Fixed-size bytes: no length prefix, the decoder knows the size.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }

    /// Variable-size bytes with a `u32` length prefix.
    pub fn var(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("encoders only write fields far below 4 GiB");
        self.u32(len);
        self.fixed(v)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads encoded fields from a byte slice, checking every length.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::UnexpectedEnd {
                needed: n,
                remaining: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A shard id (any `u16`: whether the shard exists is the reader's check).
    pub fn shard(&mut self) -> Result<ShardId, DecodeError> {
        self.u16().map(ShardId)
    }

    /// A member index (any `u16`: whether the committee has it is the reader's check).
    pub fn member(&mut self) -> Result<MemberIndex, DecodeError> {
        self.u16().map(MemberIndex)
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean")),
        }
    }

    /// Variable-size bytes written by [`Writer::var`], at most `max` bytes.
    pub fn var(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        self.take(len)
    }

    /// A `u32` item count, checked against `max` and against the bytes left given each item's minimum size,
    /// so a hostile count can never make the decoder allocate more than the input justifies.
    pub fn count(
        &mut self,
        what: &'static str,
        max: usize,
        item_bytes_min: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        let needed = len.saturating_mul(item_bytes_min.max(1));
        if needed > self.bytes.len() {
            return Err(DecodeError::UnexpectedEnd {
                needed,
                remaining: self.bytes.len(),
            });
        }
        Ok(len)
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.bytes.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_big_endian() {
        let mut w = Writer::new();
        w.u8(1)
            .u16(0x0203)
            .u32(0x0405_0607)
            .u64(0x0809_0a0b_0c0d_0e0f)
            .bool(true);
        let bytes = w.finish();
        assert_eq!(
            bytes,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1]
        );
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u32(), Ok(0x0405_0607));
        assert_eq!(r.u64(), Ok(0x0809_0a0b_0c0d_0e0f));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_input_and_trailing_bytes_are_errors() {
        assert_eq!(
            Reader::new(&[1, 2]).u32(),
            Err(DecodeError::UnexpectedEnd {
                needed: 4,
                remaining: 2
            })
        );
        let mut r = Reader::new(&[0, 9]);
        assert_eq!(r.u8(), Ok(0));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(
            Reader::new(&[2]).bool(),
            Err(DecodeError::Invalid("boolean"))
        );
    }

    #[test]
    fn hostile_lengths_are_rejected_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.finish();
        assert!(matches!(
            Reader::new(&bytes).var("field", 100),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            Reader::new(&bytes).count("items", usize::MAX, 8),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }
}
