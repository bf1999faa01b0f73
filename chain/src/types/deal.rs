//! Storage deals: what a file's owner and its holders agree on, and the record a shard keeps of it
//! (`specs/economics.md` §3).
//!
//! A deal covers every shard of one stored file: `segments * (k + m)` shards, listed segment by segment,
//! shard index within. Each shard has a holder, an index into the deal's table of holders (at most
//! [`DEAL_HOLDERS_MAX`]; no two shards of one segment on one holder), and a commitment
//! ([`crate::pieces::Commitment`]) the deal records as its hash under a list root, so a deal of thousands of
//! shards stays a few kilobytes and a challenge proves one shard's commitment with a list proof.
//!
//! Every holder signs the deal id (`"IOS/deal/v1\0" || chain_id || deal_id`): it agrees to hold its shards
//! at its price for the deal's periods. The escrow is what the holders' prices come to over the deal:
//! holder `h` earns `ceil(bytes_h * price_h / GiB)` per period, where `bytes_h` is the sum of its shards'
//! lengths and `price_h` its asking price in base units per GiB per period.

use crate::address::Address;
use crate::amount::Amount;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, Hash, PublicKey, Signature, hash_with};

/// Holders one deal may name.
pub const DEAL_HOLDERS_MAX: usize = 32;
/// Shards one deal may cover: 341 segments of 4+2, or 64 of 16+16. With [`DEAL_SEGMENTS_MAX`] and the
/// holders this keeps a deal's transaction under 10 KiB.
pub const DEAL_SHARDS_MAX: usize = 2_048;
/// Segments one deal may cover (2 GiB at the default 4 MiB segments, 32 GiB at the largest).
pub const DEAL_SEGMENTS_MAX: usize = 512;
/// Data plus parity shards of one segment, at most.
pub const DEAL_SEGMENT_SHARDS_MAX: usize = 64;
/// The bytes of the root a deal names: a binary CID (a CIDv1 with a 32-byte multihash is 36 bytes).
pub const DEAL_ROOT_BYTES_MAX: usize = 96;
/// Periods one deal may run for, at most (about ten years of daily periods).
pub const DEAL_PERIODS_MAX: u64 = 4_096;
/// A GiB, the unit of prices.
pub const GIB: u128 = 1 << 30;
const DEAL_VERSION: u8 = 1;
const DOMAIN_DEAL_SIGNATURE: &[u8] = b"IOS/deal/v1\0";

/// One holder of a deal: the storage node's account key and the price it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub key: PublicKey,
    /// Base units of IOST per GiB per period.
    pub price: Amount,
}

impl Holder {
    pub fn address(&self) -> Address {
        Address::of(&self.key)
    }
}

/// What a deal says. Its hash (with the owner) is the deal id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealTerms {
    /// The stored file's root as a binary CID: the manifest CID of a private file (never its plaintext
    /// CID), the root CID of a public one.
    pub root: Vec<u8>,
    /// The file's size in bytes, as the owner states it (informative: the shards are what is paid for).
    pub size: u64,
    pub k: u8,
    pub m: u8,
    /// How many periods the deal runs for, from the block that opens it.
    pub periods: u64,
    pub holders: Vec<Holder>,
    /// Per shard, segment by segment, the index of its holder in `holders`.
    pub placement: Vec<u8>,
    /// Per segment, the length of each of its shards in bytes (a segment's shards are equally long).
    pub segment_lens: Vec<u64>,
    /// [`crate::smt::list_root`] over the shards' commitment hashes, in the same order.
    pub commitments_root: Hash,
}

/// Why deal terms are impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DealError {
    #[error("k must be at least 1 and k + m at most {DEAL_SEGMENT_SHARDS_MAX} (got k {k}, m {m})")]
    Coding { k: u8, m: u8 },
    #[error("a deal runs for 1..={DEAL_PERIODS_MAX} periods, not {0}")]
    Periods(u64),
    #[error(
        "the deal lists {shards} shards; a whole number of segments of {per_segment} is needed"
    )]
    Segments { shards: usize, per_segment: usize },
    #[error("the deal names {0} holders, at most {DEAL_HOLDERS_MAX}")]
    Holders(usize),
    #[error("the deal covers {0} shards, at most {DEAL_SHARDS_MAX}")]
    TooManyShards(usize),
    #[error("the deal covers {0} segments, at most {DEAL_SEGMENTS_MAX}")]
    TooManySegments(usize),
    #[error("the placement has {segments} segments but {lens} segment lengths")]
    Lengths { segments: usize, lens: usize },
    #[error("shard {shard} names holder {holder}; the deal has {holders}")]
    UnknownHolder {
        shard: usize,
        holder: u8,
        holders: usize,
    },
    #[error("segment {segment} places two of its shards on holder {holder}")]
    SameHolderTwice { segment: usize, holder: u8 },
    #[error("holder {0} holds no shard of the deal")]
    IdleHolder(usize),
    #[error("holder {0} appears twice")]
    DuplicateHolder(usize),
    #[error("segment {segment}'s shards are {len} bytes; shards hold 1..={max} bytes", max = crate::pieces::SHARD_BYTES_MAX)]
    ShardSize { segment: usize, len: u64 },
    #[error("the deal's root is {0} bytes: 1..={DEAL_ROOT_BYTES_MAX}")]
    Root(usize),
    #[error("holder {0} asks a price of zero")]
    FreeHolder(usize),
    #[error("the escrow this deal needs overflows")]
    Overflow,
}

impl DealTerms {
    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(DEAL_VERSION)
            .var(&self.root)
            .u64(self.size)
            .u8(self.k)
            .u8(self.m)
            .u64(self.periods);
        w.u32(self.holders.len() as u32);
        for h in &self.holders {
            w.fixed(&h.key.0).u64(h.price.0);
        }
        w.var(&self.placement);
        w.u32(self.segment_lens.len() as u32);
        for len in &self.segment_lens {
            w.u64(*len);
        }
        w.fixed(&self.commitments_root);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != DEAL_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let root = r.var("deal root", DEAL_ROOT_BYTES_MAX)?.to_vec();
        let size = r.u64()?;
        let k = r.u8()?;
        let m = r.u8()?;
        let periods = r.u64()?;
        let count = r.count("deal holders", DEAL_HOLDERS_MAX, 40)?;
        let holders = (0..count)
            .map(|_| {
                Ok(Holder {
                    key: PublicKey(r.array()?),
                    price: Amount(r.u64()?),
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let placement = r.var("deal placement", DEAL_SHARDS_MAX)?.to_vec();
        let count = r.count("deal segment lengths", DEAL_SEGMENTS_MAX, 8)?;
        let segment_lens = (0..count).map(|_| r.u64()).collect::<Result<_, _>>()?;
        Ok(Self {
            root,
            size,
            k,
            m,
            periods,
            holders,
            placement,
            segment_lens,
            commitments_root: r.array()?,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let terms = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(terms)
    }

    /// The hash of the terms' encoding, which the deal's record keeps.
    pub fn hash(&self) -> Hash {
        hash_with("IOS deal terms v1", &[&self.encode()])
    }

    /// The deal id: the terms and the owner who pays for them.
    pub fn id(&self, owner: &Address) -> Hash {
        hash_with("IOS deal id v1", &[&owner.0, &self.encode()])
    }

    /// Shards per segment.
    pub fn segment_shards(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Checks that the terms are possible: coding, periods, a whole number of segments, every holder known,
    /// used, distinct and paid, no two shards of a segment on one holder, shard sizes in range.
    pub fn check(&self) -> Result<(), DealError> {
        let n = self.segment_shards();
        if self.k == 0 || n > DEAL_SEGMENT_SHARDS_MAX {
            return Err(DealError::Coding {
                k: self.k,
                m: self.m,
            });
        }
        if self.periods == 0 || self.periods > DEAL_PERIODS_MAX {
            return Err(DealError::Periods(self.periods));
        }
        if self.root.is_empty() || self.root.len() > DEAL_ROOT_BYTES_MAX {
            return Err(DealError::Root(self.root.len()));
        }
        if self.holders.is_empty() || self.holders.len() > DEAL_HOLDERS_MAX {
            return Err(DealError::Holders(self.holders.len()));
        }
        if self.placement.len() > DEAL_SHARDS_MAX {
            return Err(DealError::TooManyShards(self.placement.len()));
        }
        if self.placement.is_empty() || !self.placement.len().is_multiple_of(n) {
            return Err(DealError::Segments {
                shards: self.placement.len(),
                per_segment: n,
            });
        }
        if self.segment_lens.len() > DEAL_SEGMENTS_MAX {
            return Err(DealError::TooManySegments(self.segment_lens.len()));
        }
        if self.placement.len() / n != self.segment_lens.len() {
            return Err(DealError::Lengths {
                segments: self.placement.len() / n,
                lens: self.segment_lens.len(),
            });
        }
        for (i, h) in self.holders.iter().enumerate() {
            if h.price == Amount::ZERO {
                return Err(DealError::FreeHolder(i));
            }
            if self.holders[..i].iter().any(|o| o.key == h.key) {
                return Err(DealError::DuplicateHolder(i));
            }
        }
        let mut used = vec![false; self.holders.len()];
        for (segment, chunk) in self.placement.chunks(n).enumerate() {
            for (j, &holder) in chunk.iter().enumerate() {
                let shard = segment * n + j;
                let Some(u) = used.get_mut(usize::from(holder)) else {
                    return Err(DealError::UnknownHolder {
                        shard,
                        holder,
                        holders: self.holders.len(),
                    });
                };
                *u = true;
                if chunk[..j].contains(&holder) {
                    return Err(DealError::SameHolderTwice { segment, holder });
                }
            }
        }
        if let Some(idle) = used.iter().position(|u| !u) {
            return Err(DealError::IdleHolder(idle));
        }
        for (segment, &len) in self.segment_lens.iter().enumerate() {
            if len == 0 || len > crate::pieces::SHARD_BYTES_MAX {
                return Err(DealError::ShardSize { segment, len });
            }
        }
        self.escrow().map(|_| ())
    }

    /// The bytes each holder keeps.
    pub fn holder_bytes(&self) -> Vec<u64> {
        let mut bytes = vec![0u64; self.holders.len()];
        let n = self.segment_shards().max(1);
        for (segment, &len) in self.segment_lens.iter().enumerate() {
            for &h in self.placement.iter().skip(segment * n).take(n) {
                if let Some(b) = bytes.get_mut(usize::from(h)) {
                    *b = b.saturating_add(len);
                }
            }
        }
        bytes
    }

    /// What each holder earns per period: `ceil(bytes * price / GiB)`.
    pub fn per_period(&self) -> Result<Vec<Amount>, DealError> {
        self.holder_bytes()
            .iter()
            .zip(&self.holders)
            .map(|(&bytes, h)| {
                let due = (u128::from(bytes) * u128::from(h.price.0)).div_ceil(GIB);
                u64::try_from(due)
                    .map(Amount)
                    .map_err(|_| DealError::Overflow)
            })
            .collect()
    }

    /// The whole escrow: every holder's pay for every period.
    pub fn escrow(&self) -> Result<Amount, DealError> {
        let per_period: u128 = self.per_period()?.iter().map(|a| u128::from(a.0)).sum();
        u64::try_from(per_period * u128::from(self.periods))
            .map(Amount)
            .map_err(|_| DealError::Overflow)
    }
}

/// The message a holder signs to take its part of a deal.
pub fn signing_message(chain_id: u32, deal_id: &Hash) -> Vec<u8> {
    [DOMAIN_DEAL_SIGNATURE, &chain_id.to_be_bytes(), deal_id].concat()
}

/// A holder's signature on a deal.
pub fn sign(key: &crypto::SecretKey, chain_id: u32, deal_id: &Hash) -> Signature {
    key.sign(&signing_message(chain_id, deal_id))
}

/// Where a deal stands on its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealRecord {
    pub owner: Address,
    /// The hash of the terms' encoding.
    pub terms: Hash,
    /// The height of the block that opened it: period `p` covers heights `start + p * period_blocks + 1
    /// ..= start + (p + 1) * period_blocks`.
    pub start_height: u64,
    pub period_blocks: u64,
    /// Periods it runs for: the terms' count, or fewer once the owner ended it.
    pub periods: u64,
    /// What the holders earn per period, all together.
    pub per_period: Amount,
    /// Escrow not yet paid out or refunded.
    pub escrow_left: Amount,
    /// Paid to holders so far.
    pub paid: Amount,
    /// Refunded to the owner when it ended the deal.
    pub refunded: Amount,
}

impl DealRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DEAL_VERSION)
            .fixed(&self.owner.0)
            .fixed(&self.terms)
            .u64(self.start_height)
            .u64(self.period_blocks)
            .u64(self.periods)
            .u64(self.per_period.0)
            .u64(self.escrow_left.0)
            .u64(self.paid.0)
            .u64(self.refunded.0);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != DEAL_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let record = Self {
            owner: Address(r.array()?),
            terms: r.array()?,
            start_height: r.u64()?,
            period_blocks: r.u64()?,
            periods: r.u64()?,
            per_period: Amount(r.u64()?),
            escrow_left: Amount(r.u64()?),
            paid: Amount(r.u64()?),
            refunded: Amount(r.u64()?),
        };
        r.finish()?;
        Ok(record)
    }

    /// The leaf value the state tree holds for it.
    pub fn value_hash(&self) -> Hash {
        hash_with("IOS deal v1", &[&self.encode()])
    }

    /// The period a block at `height` falls in (0 before the first begins), if the deal had begun.
    pub fn period_at(&self, height: u64) -> u64 {
        height.saturating_sub(self.start_height + 1) / self.period_blocks.max(1)
    }

    /// The height after which the deal has run its course.
    pub fn end_height(&self) -> u64 {
        self.start_height
            .saturating_add(self.periods.saturating_mul(self.period_blocks))
    }

    /// Whether the deal is still running at `height`.
    pub fn is_active_at(&self, height: u64) -> bool {
        height <= self.end_height()
    }

    /// The height after which no proof of the deal is accepted any more: the last period's proof window
    /// (the period after it) has closed.
    pub fn settled_after(&self) -> u64 {
        self.end_height().saturating_add(self.period_blocks)
    }

    /// What ending the deal at `height` does: the periods it then runs for and the refund to its owner.
    /// While it runs, the current period runs to its end (its holders may still prove and be paid for it)
    /// and the periods not begun are refunded; once it has run its course and its last proof window has
    /// closed, whatever escrow is left (the pay of the periods its holders did not prove) goes back.
    pub fn end_at(&self, height: u64) -> Result<(u64, Amount), DealEndError> {
        if height > self.settled_after() {
            if self.escrow_left == Amount::ZERO {
                return Err(DealEndError::Settled);
            }
            return Ok((self.periods, self.escrow_left));
        }
        let ends_after = self.period_at(height).saturating_add(1);
        if !self.is_active_at(height) || ends_after >= self.periods {
            return Err(DealEndError::Ending {
                settles_after: self.settled_after(),
            });
        }
        let unused = self.periods - ends_after;
        let refund = u64::try_from(u128::from(self.per_period.0) * u128::from(unused))
            .map_err(|_| DealEndError::Overflow)?;
        // Never more than the escrow holds.
        Ok((ends_after, Amount(refund.min(self.escrow_left.0))))
    }
}

/// Why a deal cannot be ended now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DealEndError {
    #[error(
        "the deal is in its last period or its last proof window; what is left settles after height {settles_after}"
    )]
    Ending { settles_after: u64 },
    #[error("the deal has ended and its escrow is settled")]
    Settled,
    #[error("the refund overflows")]
    Overflow,
}

/// The leaf of one shard under a deal's `commitments_root`: its binary CID and its commitment, so that the
/// deal names the shards a repairer must fetch as well as what each holds.
pub fn shard_leaf(cid: &[u8], commitment: &crate::pieces::Commitment) -> Hash {
    hash_with("IOS deal shard v1", &[cid, &commitment.hash()])
}

/// The state-tree key of a deal.
pub fn deal_key(id: &Hash) -> Hash {
    hash_with("IOS deal key v1", &[id])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    pub(crate) fn terms(holders: usize, segments: usize) -> DealTerms {
        let (k, m) = (4u8, 2u8);
        let n = 6;
        DealTerms {
            root: vec![1, 0x55, 0x1e, 32, 7, 7],
            size: 1_000_000,
            k,
            m,
            periods: 10,
            holders: (0..holders)
                .map(|i| Holder {
                    key: SecretKey::dev(&format!("holder{i}")).public(),
                    price: Amount(1_000_000),
                })
                .collect(),
            placement: (0..segments * n)
                .map(|s| ((s % n + s / n) % holders) as u8)
                .collect(),
            segment_lens: vec![1 << 20; segments],
            commitments_root: [9; 32],
        }
    }

    #[test]
    fn terms_round_trip_and_the_escrow_is_each_holders_price_for_its_bytes() {
        let t = terms(6, 3);
        t.check().expect("possible terms");
        assert_eq!(DealTerms::decode(&t.encode()).expect("decodes"), t);
        // Each holder keeps 3 shards of 1 MiB: 3 MiB at 1,000,000 per GiB per period is 2,930 (rounded up).
        assert_eq!(t.holder_bytes(), vec![3 << 20; 6]);
        assert_eq!(t.per_period().expect("fits"), vec![Amount(2_930); 6]);
        assert_eq!(t.escrow(), Ok(Amount(2_930 * 6 * 10)));
        let owner = Address([1; 32]);
        assert_ne!(t.id(&owner), t.id(&Address([2; 32])));
    }

    #[test]
    fn impossible_terms_are_refused_with_the_reason() {
        let ok = terms(6, 2);
        type Expected = fn(&DealError) -> bool;
        let cases: Vec<(DealTerms, Expected)> = vec![
            (DealTerms { k: 0, ..ok.clone() }, |e| {
                matches!(e, DealError::Coding { .. })
            }),
            (
                DealTerms {
                    periods: 0,
                    ..ok.clone()
                },
                |e| matches!(e, DealError::Periods(0)),
            ),
            (
                DealTerms {
                    periods: DEAL_PERIODS_MAX + 1,
                    ..ok.clone()
                },
                |e| matches!(e, DealError::Periods(_)),
            ),
            (
                DealTerms {
                    root: vec![],
                    ..ok.clone()
                },
                |e| matches!(e, DealError::Root(0)),
            ),
            (
                DealTerms {
                    placement: ok.placement[..7].to_vec(),
                    ..ok.clone()
                },
                |e| matches!(e, DealError::Segments { .. }),
            ),
            (
                DealTerms {
                    k: 1,
                    m: 0,
                    placement: vec![0; DEAL_SEGMENTS_MAX + 1],
                    segment_lens: vec![1; DEAL_SEGMENTS_MAX + 1],
                    holders: ok.holders[..1].to_vec(),
                    ..ok.clone()
                },
                |e| matches!(e, DealError::TooManySegments(_)),
            ),
            (
                DealTerms {
                    segment_lens: ok.segment_lens[..1].to_vec(),
                    ..ok.clone()
                },
                |e| matches!(e, DealError::Lengths { .. }),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.placement[1] = t.placement[0];
                    t
                },
                |e| matches!(e, DealError::SameHolderTwice { segment: 0, .. }),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.placement[0] = 6;
                    t
                },
                |e| matches!(e, DealError::UnknownHolder { .. }),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.holders.push(Holder {
                        key: SecretKey::dev("idle").public(),
                        price: Amount(1),
                    });
                    t
                },
                |e| matches!(e, DealError::IdleHolder(6)),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.holders[1].key = t.holders[0].key;
                    t
                },
                |e| matches!(e, DealError::DuplicateHolder(1)),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.segment_lens[1] = 0;
                    t
                },
                |e| matches!(e, DealError::ShardSize { segment: 1, len: 0 }),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.holders[2].price = Amount::ZERO;
                    t
                },
                |e| matches!(e, DealError::FreeHolder(2)),
            ),
            (
                {
                    let mut t = ok.clone();
                    t.holders[0].price = Amount(u64::MAX);
                    t.segment_lens = vec![crate::pieces::SHARD_BYTES_MAX; t.segment_lens.len()];
                    t.periods = DEAL_PERIODS_MAX;
                    t
                },
                |e| matches!(e, DealError::Overflow),
            ),
        ];
        for (i, (t, expected)) in cases.into_iter().enumerate() {
            let err = t.check().expect_err("impossible terms");
            assert!(expected(&err), "case {i}: {err}");
        }
    }

    #[test]
    fn records_round_trip_and_garbage_never_panics() {
        let r = DealRecord {
            owner: Address([3; 32]),
            terms: [4; 32],
            start_height: 10,
            period_blocks: 8,
            periods: 5,
            per_period: Amount(100),
            escrow_left: Amount(500),
            paid: Amount::ZERO,
            refunded: Amount::ZERO,
        };
        assert_eq!(DealRecord::decode(&r.encode()), Ok(r.clone()));
        assert_eq!(r.period_at(11), 0);
        assert_eq!(r.period_at(18), 0);
        assert_eq!(r.period_at(19), 1);
        assert_eq!(r.end_height(), 50);
        assert!(r.is_active_at(50) && !r.is_active_at(51));
        let t = terms(6, 1).encode();
        for cut in 0..t.len() {
            assert!(DealTerms::decode(&t[..cut]).is_err());
        }
        for len in 0..200usize {
            let junk: Vec<u8> = (0..len).map(|i| (i * 91 + 1) as u8).collect();
            let _ = DealTerms::decode(&junk);
            let _ = DealRecord::decode(&junk);
        }
    }
}
