//! Sizes and durations as people write them: "256KiB", "30d".

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A size in bytes. Reads "512B", "256KiB", "4MiB", "1GiB", "1TiB", "1PiB"
/// (powers of two), "1KB", "1MB", ... (powers of ten), "100" (bytes), or a
/// TOML integer; units are case-insensitive. Displays in the largest unit
/// that is exact, so `Display` output parses back to the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A duration written "500ms", "45s", "90m", "1h", "3d", "2w" (also "us",
/// "ns"), or several such parts as "1h30m". Displays in the largest unit that
/// is exact ("30d", "90m"), never weeks, so `Display` parses back (for
/// anything up to `u64::MAX` nanoseconds, about 584 years, which is also the
/// most that parses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

/// A size or duration string that does not parse.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// Not of the expected form; `expected` names it with an example.
    #[error("expected {expected}, got {got:?}")]
    Malformed { expected: &'static str, got: String },
    /// Well formed, but the value does not fit (u64 bytes or nanoseconds).
    #[error("{got:?} is too large")]
    TooLarge { got: String },
}

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;
pub(super) const TIB: u64 = 1 << 40;
pub(super) const HOUR: Duration = Duration::from_hours(1);
pub(super) const DAY: Duration = Duration::from_hours(24);

/// Size units, largest first within each base so `Display` picks the
/// largest exact one. Binary units come first: they are what people write.
const SIZE_UNITS: [(&str, u64); 10] = [
    ("PiB", 1 << 50),
    ("TiB", TIB),
    ("GiB", GIB),
    ("MiB", MIB),
    ("KiB", KIB),
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

/// Duration units in nanoseconds, largest first. Weeks parse but are not
/// displayed ("14d" reads better than "2w").
const DURATION_UNITS: [(&str, u64); 8] = [
    ("w", 7 * 86_400 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];
const NANOS_PER_SEC: u64 = 1_000_000_000;

const SIZE_EXAMPLE: &str = r#"a size like "256KiB""#;
const DURATION_EXAMPLE: &str = r#"a duration like "30d""#;

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let malformed = || UnitError::Malformed { expected: SIZE_EXAMPLE, got: text.to_owned() };
        let trimmed = text.trim();
        let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err(malformed());
        }
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() || unit.eq_ignore_ascii_case("B") {
            1
        } else {
            SIZE_UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|(_, multiplier)| *multiplier)
                .ok_or_else(malformed)?
        };
        let too_large = || UnitError::TooLarge { got: text.to_owned() };
        let count: u64 = digits.parse().map_err(|_| too_large())?;
        count.checked_mul(multiplier).map(ByteSize).ok_or_else(too_large)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = SIZE_UNITS.iter().find(|(_, multiplier)| self.0 != 0 && self.0.is_multiple_of(*multiplier));
        match exact {
            Some((name, multiplier)) => write!(f, "{}{name}", self.0 / multiplier),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let malformed = || UnitError::Malformed { expected: DURATION_EXAMPLE, got: text.to_owned() };
        let too_large = || UnitError::TooLarge { got: text.to_owned() };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(malformed());
        }
        let mut total_nanos: u64 = 0;
        while !rest.is_empty() {
            let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let (digits, after) = rest.split_at(digits_end);
            let unit_end = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_end);
            let nanos_per_unit = DURATION_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, nanos)| *nanos)
                .filter(|_| !digits.is_empty())
                .ok_or_else(malformed)?;
            let count: u64 = digits.parse().map_err(|_| too_large())?;
            total_nanos = count
                .checked_mul(nanos_per_unit)
                .and_then(|nanos| total_nanos.checked_add(nanos))
                .ok_or_else(too_large)?;
            rest = after.trim_start();
        }
        Ok(HumanDuration(Duration::from_nanos(total_nanos)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let exact = DURATION_UNITS[1..].iter().find(|(_, unit)| nanos != 0 && nanos.is_multiple_of(u128::from(*unit)));
        match exact {
            Some((name, unit)) => write!(f, "{}{name}", nanos / u128::from(*unit)),
            None => write!(f, "{}s", nanos / u128::from(NANOS_PER_SEC)),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl de::Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXAMPLE)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl de::Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXAMPLE)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}
