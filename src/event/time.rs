//! Calendar arithmetic without a date library: proleptic Gregorian days since 1970-01-01
//! (Howard Hinnant's `days_from_civil` / `civil_from_days`), and the ISO-8601 text Debezium uses.

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Append `HH:MM:SS` and, unless zero, the fraction with its trailing zeros trimmed (`.5`,
/// `.25`, `.000001`), as Java's ISO time formatters write it.
pub fn write_time_trimmed(out: &mut String, micros_of_day: i64) {
    write_hms(out, micros_of_day);
    let frac = micros_of_day.rem_euclid(MICROS_PER_SEC);
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Append `HH:MM:SS` and the fraction padded to `digits` places (none for 0), as Debezium's
/// `ZonedTimestamp` writes a column of that precision.
pub fn write_time_fixed(out: &mut String, micros_of_day: i64, digits: u8) {
    write_hms(out, micros_of_day);
    let digits = digits.min(6) as usize;
    if digits > 0 {
        let frac = format!("{:06}", micros_of_day.rem_euclid(MICROS_PER_SEC));
        out.push('.');
        out.push_str(&frac[..digits]);
    }
}

fn write_hms(out: &mut String, micros_of_day: i64) {
    use std::fmt::Write;
    let secs = micros_of_day.div_euclid(MICROS_PER_SEC);
    let _ = write!(out, "{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
}

/// Append `YYYY-MM-DD` (years outside 0..=9999 get a sign, as ISO-8601 expanded years).
pub fn write_date(out: &mut String, days: i64) {
    use std::fmt::Write;
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let _ = write!(out, "{y:04}-{m:02}-{d:02}");
    } else {
        let _ = write!(out, "{y:+05}-{m:02}-{d:02}");
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` for microseconds since the epoch (UTC), the fraction padded to
/// the column's precision.
pub fn iso_utc_fixed(micros: i64, digits: u8) -> String {
    let mut out = String::with_capacity(32);
    write_date(&mut out, micros.div_euclid(MICROS_PER_DAY));
    out.push('T');
    write_time_fixed(&mut out, micros.rem_euclid(MICROS_PER_DAY), digits);
    out.push('Z');
    out
}

/// Current wall-clock time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for z in [-1_000_000i64, -719_468, -1, 0, 1, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn iso_text() {
        assert_eq!(iso_utc_fixed(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc_fixed(0, 6), "1970-01-01T00:00:00.000000Z");
        assert_eq!(iso_utc_fixed(1_704_110_400_500_000, 3), "2024-01-01T12:00:00.500Z");
        assert_eq!(iso_utc_fixed(1_704_110_400_123_456, 6), "2024-01-01T12:00:00.123456Z");
        assert_eq!(iso_utc_fixed(-1, 6), "1969-12-31T23:59:59.999999Z");
        let mut t = String::new();
        write_time_trimmed(&mut t, 41_400_250_000);
        assert_eq!(t, "11:30:00.25");
    }
}
