//! `Range: bytes=...` (RFC 9110 section 14): single and multiple ranges, capped.

use std::ops::Range;

/// Most ranges one request may ask for; more is refused with 416.
pub const RANGES_MAX: usize = 16;

/// What a request's Range header asks of a representation of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No Range header, or one in a unit other than bytes: the whole representation.
    Full,
    /// One or more satisfiable ranges, in the order asked.
    Partial(Vec<Range<u64>>),
}

/// Why a Range header is answered 416.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed Range header")]
    Malformed,
    #[error("more than {RANGES_MAX} ranges")]
    TooMany,
    #[error("the ranges ask for more than twice the representation's bytes")]
    TooMuch,
    #[error("no range is satisfiable")]
    Unsatisfiable,
}

fn number(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse().map_err(|_| RangeError::Malformed)
}

/// Parses a Range header against a size. Unsatisfiable specs are dropped; if none is left the answer is 416.
pub fn parse(header: Option<&str>, size: u64) -> Result<Ranges, RangeError> {
    let Some(header) = header else {
        return Ok(Ranges::Full);
    };
    let Some(specs) = header.trim().strip_prefix("bytes=") else {
        // Another unit: RFC 9110 lets the server ignore it.
        return Ok(Ranges::Full);
    };
    let specs: Vec<&str> = specs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() {
        return Err(RangeError::Malformed);
    }
    if specs.len() > RANGES_MAX {
        return Err(RangeError::TooMany);
    }
    let mut ranges = Vec::with_capacity(specs.len());
    for spec in specs {
        let (first, last) = spec.split_once('-').ok_or(RangeError::Malformed)?;
        let range = if first.is_empty() {
            let suffix = number(last)?;
            (suffix > 0 && size > 0).then(|| size - suffix.min(size)..size)
        } else {
            let start = number(first)?;
            let end = if last.is_empty() {
                size
            } else {
                let last = number(last)?;
                if last < start {
                    return Err(RangeError::Malformed);
                }
                last.saturating_add(1).min(size)
            };
            (start < size).then_some(start..end)
        };
        ranges.extend(range);
    }
    if ranges.is_empty() {
        return Err(RangeError::Unsatisfiable);
    }
    let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    if total > size.saturating_mul(2) {
        return Err(RangeError::TooMuch);
    }
    Ok(Ranges::Partial(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ranges: &[(u64, u64)]) -> Result<Vec<Range<u64>>, RangeError> {
        Ok(ranges.iter().map(|&(a, b)| a..b).collect())
    }

    fn check(header: &str, size: u64, expected: Result<Vec<Range<u64>>, RangeError>) {
        let got = parse(Some(header), size);
        let expected = expected.map(Ranges::Partial);
        assert_eq!(got, expected, "{header:?} of {size}");
    }

    #[test]
    fn ranges_as_rfc_9110_defines_them() {
        assert_eq!(parse(None, 10), Ok(Ranges::Full));
        assert_eq!(parse(Some("items=0-1"), 10), Ok(Ranges::Full));
        check("bytes=0-0", 10, ok(&[(0, 1)]));
        check("bytes=0-9", 10, ok(&[(0, 10)]));
        check("bytes=5-100", 10, ok(&[(5, 10)]));
        check("bytes=5-", 10, ok(&[(5, 10)]));
        check("bytes=-3", 10, ok(&[(7, 10)]));
        check("bytes=-30", 10, ok(&[(0, 10)]));
        check("bytes=0-1, 4-5,-1", 10, ok(&[(0, 2), (4, 6), (9, 10)]));
        check("bytes=0-1,20-30", 10, ok(&[(0, 2)]));
    }

    #[test]
    fn bad_ranges_are_refused() {
        check("bytes=10-", 10, Err(RangeError::Unsatisfiable));
        check("bytes=-0", 10, Err(RangeError::Unsatisfiable));
        check("bytes=0-", 0, Err(RangeError::Unsatisfiable));
        check("bytes=5-2", 10, Err(RangeError::Malformed));
        check("bytes=a-b", 10, Err(RangeError::Malformed));
        check("bytes=+1-2", 10, Err(RangeError::Malformed));
        check("bytes=", 10, Err(RangeError::Malformed));
        check("bytes=1", 10, Err(RangeError::Malformed));
        check(
            "bytes=0-99999999999999999999999",
            10,
            Err(RangeError::Malformed),
        );
        let many = vec!["0-0"; RANGES_MAX + 1].join(",");
        check(&format!("bytes={many}"), 10, Err(RangeError::TooMany));
        check("bytes=0-,0-,0-", 10, Err(RangeError::TooMuch));
    }
}

#[cfg(test)]
mod properties {
    use super::*;

    proptest::proptest! {
        /// Every accepted range lies inside the representation and is not empty.
        #[test]
        fn accepted_ranges_are_inside(header in "bytes=[-0-9, ]{0,40}", size in 0u64..10_000) {
            if let Ok(Ranges::Partial(rs)) = parse(Some(&header), size) {
                proptest::prop_assert!(!rs.is_empty() && rs.len() <= RANGES_MAX);
                for r in rs {
                    proptest::prop_assert!(r.start < r.end && r.end <= size);
                }
            }
        }
    }
}
