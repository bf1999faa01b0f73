//! IOST amounts: 8 decimal places, held as a count of base units (1 IOST = 100,000,000 base units).
//!
//! A `u64` of base units holds up to about 184 billion IOST, well above the 21 billion that exist. All
//! arithmetic is checked; text is parsed and printed exactly, never through floating point.

use std::fmt;
use std::str::FromStr;

pub const DECIMALS: u32 = 8;
pub const BASE_UNITS_PER_IOST: u64 = 100_000_000;

/// An amount of IOST in base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u64);

/// Why a decimal string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountParseError {
    #[error(
        "an amount is digits with an optional '.' and up to 8 decimals, e.g. \"12.5\"; got {0:?}"
    )]
    Malformed(String),
    #[error("more than 8 decimal places in {0:?}")]
    TooPrecise(String),
    #[error("{0:?} is larger than any amount of IOST")]
    Overflow(String),
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_iost(iost: u64) -> Option<Amount> {
        match iost.checked_mul(BASE_UNITS_PER_IOST) {
            Some(v) => Some(Amount(v)),
            None => None,
        }
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `self * numerator / denominator`, exact in 128-bit intermediate arithmetic, rounded down.
    pub fn mul_div(self, numerator: u64, denominator: u64) -> Option<Amount> {
        if denominator == 0 {
            return None;
        }
        let v = u128::from(self.0) * u128::from(numerator) / u128::from(denominator);
        u64::try_from(v).ok().map(Amount)
    }

    /// For people: the whole IOST grouped by thousands, the decimals without trailing zeros, and the unit:
    /// `1,234,567.5 IOST`, `0.00000001 IOST`, `0 IOST`. Exact, like [`fmt::Display`], which stays the
    /// machine form (`1234567.50000000`).
    pub fn for_people(&self) -> String {
        let whole = (self.0 / BASE_UNITS_PER_IOST).to_string();
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let frac = format!("{:08}", self.0 % BASE_UNITS_PER_IOST);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{grouped} IOST")
        } else {
            format!("{grouped}.{frac} IOST")
        }
    }
}

impl fmt::Display for Amount {
    /// Always 8 decimals: `123.45600000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:08}",
            self.0 / BASE_UNITS_PER_IOST,
            self.0 % BASE_UNITS_PER_IOST
        )
    }
}

impl FromStr for Amount {
    type Err = AmountParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || AmountParseError::Malformed(s.to_owned());
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(malformed());
        }
        if frac.len() > DECIMALS as usize {
            return Err(AmountParseError::TooPrecise(s.to_owned()));
        }
        let overflow = || AmountParseError::Overflow(s.to_owned());
        let whole: u64 = whole.parse().map_err(|_| overflow())?;
        let frac_units: u64 = if frac.is_empty() {
            0
        } else {
            let scale = 10u64.pow(DECIMALS - u32::try_from(frac.len()).expect("at most 8 digits"));
            frac.parse::<u64>().map_err(|_| malformed())? * scale
        };
        whole
            .checked_mul(BASE_UNITS_PER_IOST)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_for_people_are_grouped_exact_and_carry_the_unit() {
        let cases = [
            (0, "0 IOST"),
            (1, "0.00000001 IOST"),
            (50_000_000, "0.5 IOST"),
            (100_000_000, "1 IOST"),
            (99_900 * BASE_UNITS_PER_IOST, "99,900 IOST"),
            (123_456_789_050_000_000, "1,234,567,890.5 IOST"),
            (21_000_000_000 * BASE_UNITS_PER_IOST, "21,000,000,000 IOST"),
        ];
        for (units, text) in cases {
            assert_eq!(Amount(units).for_people(), text);
        }
    }
    use proptest::prelude::*;

    fn check(input: &str, expected: Result<u64, AmountParseError>) {
        assert_eq!(
            input.parse::<Amount>(),
            expected.map(Amount),
            "input {input:?}"
        );
    }

    #[test]
    fn parses_decimal_strings_exactly() {
        check("0", Ok(0));
        check("1", Ok(100_000_000));
        check("123.456", Ok(12_345_600_000));
        check("123.45600000", Ok(12_345_600_000));
        check("0.00000001", Ok(1));
        check("21000000000", Ok(2_100_000_000_000_000_000));
        check("184467440737.09551615", Ok(u64::MAX));
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        let m = |s: &str| Err(AmountParseError::Malformed(s.to_owned()));
        for bad in [
            "", ".", "1.", ".5", "-1", "+1", "1e5", "1,5", " 1", "1.2.3", "abc",
        ] {
            check(bad, m(bad));
        }
        check(
            "0.000000001",
            Err(AmountParseError::TooPrecise("0.000000001".into())),
        );
        check(
            "184467440737.09551616",
            Err(AmountParseError::Overflow("184467440737.09551616".into())),
        );
        check(
            "99999999999999999999999",
            Err(AmountParseError::Overflow("99999999999999999999999".into())),
        );
    }

    #[test]
    fn formats_with_eight_decimals() {
        assert_eq!(Amount(12_345_600_000).to_string(), "123.45600000");
        assert_eq!(Amount(1).to_string(), "0.00000001");
        assert_eq!(Amount::ZERO.to_string(), "0.00000000");
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount(u64::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(0).checked_sub(Amount(1)), None);
        assert_eq!(Amount(5).checked_add(Amount(7)), Some(Amount(12)));
        assert_eq!(
            Amount(u64::MAX).mul_div(3, 4),
            Some(Amount(u64::MAX / 4 * 3 + 2))
        );
        assert_eq!(Amount(1).mul_div(1, 0), None);
        assert_eq!(Amount::from_iost(u64::MAX), None);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(units in any::<u64>()) {
            let a = Amount(units);
            prop_assert_eq!(a.to_string().parse::<Amount>(), Ok(a));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}") {
            // Whatever parses must print back to a string that parses to the same amount.
            if let Ok(a) = s.parse::<Amount>() {
                prop_assert_eq!(a.to_string().parse::<Amount>(), Ok(a));
            }
        }
    }
}
