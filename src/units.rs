//! Humane units for definitions and displays: sizes ("2G", "512M") and durations ("10m", "1h30m").
//! Owns parsing and formatting only; it knows nothing of where the strings come from.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes, written in definitions as a number with an optional binary suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "`{0}` is not a size: write a number with an optional unit, like \"512M\", \"2G\" or \"20G\""
    )]
    BadSize(String),
    #[error(
        "`{0}` is not a duration: write a number with a unit, like \"90s\", \"10m\", \"1h30m\" or \"7d\""
    )]
    BadDuration(String),
}

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;
    pub const TIB: u64 = 1024 * Self::GIB;

    #[must_use]
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Whole mebibytes, rounded down: what QEMU's `-m` takes.
    #[must_use]
    pub fn mebibytes(self) -> u64 {
        self.0 / Self::MIB
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::BadSize(text.to_owned());
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => Self::KIB,
            "M" | "MB" | "MIB" => Self::MIB,
            "G" | "GB" | "GIB" => Self::GIB,
            "T" | "TB" | "TIB" => Self::TIB,
            _ => return Err(bad()),
        };
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[allow(clippy::cast_precision_loss)]
        let value = self.0 as f64;
        let units = [("GiB", Self::GIB), ("MiB", Self::MIB), ("KiB", Self::KIB)];
        for (name, size) in units {
            #[allow(clippy::cast_precision_loss)]
            let size = size as f64;
            if value >= size {
                return write!(f, "{:.1} {name}", value / size);
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// The longest timeout a definition may set: a week. No boot or step takes that long, and
/// deadlines (`Instant::now() + timeout`) cannot overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// The longest refresh period of a layer: ten years, so that dates computed from it stay
/// within what `SystemTime` holds.
pub const MAX_REFRESH: Duration = Duration::from_secs(3650 * 86_400);

/// Parses "90s", "10m", "1h30m", "7d", "500ms". A bare number is refused: the unit is the point.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration(text.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(number.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(number.checked_mul(86_400).ok_or_else(bad)?),
            "w" => Duration::from_secs(number.checked_mul(7 * 86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// "1h02m", "3m05s", "41.2s", "850ms": short and readable in a table.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if duration.as_millis() >= 1000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("2G".parse::<ByteSize>(), Ok(ByteSize(2 * ByteSize::GIB)));
        assert_eq!("512M".parse::<ByteSize>(), Ok(ByteSize(512 * ByteSize::MIB)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("8GiB".parse::<ByteSize>(), Ok(ByteSize(8 * ByteSize::GIB)));
        assert!("2X".parse::<ByteSize>().is_err());
        assert!("G".parse::<ByteSize>().is_err());
        assert!("-1G".parse::<ByteSize>().is_err());
        assert!("99999999999999T".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations_need_units_and_add_up() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10 minutes").is_err());
    }

    #[test]
    fn durations_format_short() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(41_200)), "41.2s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }
}

/// A UTC timestamp like `2026-11-28T23:41:05Z` (no time-zone database needed).
#[must_use]
pub fn format_utc(time: std::time::SystemTime) -> String {
    let secs = time.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod time_tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn utc_timestamps_are_civil_dates() {
        let at = |secs| super::format_utc(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_906_865), "2026-11-28T23:01:05Z");
    }
}
