//! PostgreSQL types and their text forms.
//!
//! pgoutput (without `binary`) and the snapshot's simple queries both deliver values in text form,
//! so one decoder serves both. The session pins the settings that shape that text:
//! `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=iso_8601`, `bytea_output=hex`,
//! `extra_float_digits=3` (see [`SESSION_OPTIONS`]).
//!
//! A value whose type tidemark does not know, or whose text it cannot parse, is kept as text and
//! reported through a warning metric: nothing is dropped.

use crate::event::time::{days_from_civil, MICROS_PER_DAY, MICROS_PER_SEC};
use crate::event::Value;

/// Startup options pinning the text forms [`decode_text`] parses.
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 -c bytea_output=hex -c extra_float_digits=3";
pub const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "3"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Bytea,
    Json,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Enum,
    /// `point`, as Debezium's geometry struct.
    Point,
    Array(Box<PgType>),
    /// Anything else, kept as its text form; the name goes into the warning metric.
    Other(String),
}

impl PgType {
    /// The built-in types, by OID; `None` for types to look up in the catalog.
    pub fn builtin(oid: u32) -> Option<PgType> {
        use PgType::*;
        let arr = |t: PgType| Array(Box::new(t));
        Some(match oid {
            16 => Bool,
            17 => Bytea,
            18 | 19 | 25 | 1042 | 1043 => Text,
            20 | 21 | 23 | 26 => Int,
            114 | 3802 => Json,
            700 | 701 => Float,
            1082 => Date,
            1083 => Time,
            1114 => Timestamp,
            1184 => TimestampTz,
            1186 => Interval,
            1266 => TimeTz,
            1700 => Numeric,
            2950 => Uuid,
            600 => Point,
            1017 => arr(Point),
            1000 => arr(Bool),
            1001 => arr(Bytea),
            1002 | 1003 | 1009 | 1014 | 1015 => arr(Text),
            1005 | 1007 | 1016 | 1028 => arr(Int),
            199 | 3807 => arr(Json),
            1021 | 1022 => arr(Float),
            1182 => arr(Date),
            1183 => arr(Time),
            1115 => arr(Timestamp),
            1185 => arr(TimestampTz),
            1187 => arr(Interval),
            1270 => arr(TimeTz),
            1231 => arr(Numeric),
            2951 => arr(Uuid),
            _ => return None,
        })
    }

    /// The name of the innermost unsupported type, if this type falls back to text.
    pub fn fallback_name(&self) -> Option<&str> {
        match self {
            PgType::Other(name) => Some(name),
            PgType::Array(inner) => inner.fallback_name(),
            _ => None,
        }
    }
}

/// Fractional-second precision from a time type's modifier (-1: unspecified, i.e. 6).
pub fn time_precision(typmod: i32) -> u8 {
    if (0..=6).contains(&typmod) {
        typmod as u8
    } else {
        6
    }
}

/// Declared scale of a numeric from its modifier.
pub fn numeric_scale(typmod: i32) -> Option<u16> {
    (typmod >= 4).then(|| ((typmod - 4) & 0xffff) as u16)
}

/// Decode a value's text form. Returns the value and whether it fell back to text (unknown type
/// or unparsable text).
pub fn decode_text(ty: &PgType, typmod: i32, s: &str) -> (Value, bool) {
    match parse(ty, typmod, s) {
        Some(v) => (v, matches!(ty, PgType::Other(_))),
        None => (Value::Text(s.to_string()), true),
    }
}

fn parse(ty: &PgType, typmod: i32, s: &str) -> Option<Value> {
    Some(match ty {
        PgType::Bool => Value::Bool(match s {
            "t" | "true" => true,
            "f" | "false" => false,
            _ => return None,
        }),
        PgType::Int => Value::Int(s.parse().ok()?),
        PgType::Point => {
            let (x, y) = s.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
            Value::Point { x: x.trim().parse().ok()?, y: y.trim().parse().ok()? }
        }
        PgType::Float => Value::Float(match s {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => s.parse().ok()?,
        }),
        PgType::Numeric => Value::Numeric { text: s.into(), scale: numeric_scale(typmod) },
        PgType::Text | PgType::Uuid | PgType::Enum | PgType::Other(_) => Value::Text(s.to_string()),
        PgType::Json => Value::Json(s.to_string()),
        PgType::Bytea => Value::Bytes(parse_hex_bytea(s)?),
        PgType::Date => Value::Date(parse_date(s)?),
        PgType::Time => Value::Time { micros: parse_time(s)?, precision: time_precision(typmod) },
        PgType::TimeTz => {
            let split = s.rfind(['+', '-'])?;
            let micros = parse_time(&s[..split])?;
            Value::TimeTz { micros, offset_secs: parse_offset(&s[split..])?, precision: time_precision(typmod) }
        }
        PgType::Timestamp => Value::Timestamp { micros: parse_timestamp(s, false)?, precision: time_precision(typmod) },
        PgType::TimestampTz => {
            Value::TimestampTz { micros: parse_timestamp(s, true)?, precision: time_precision(typmod) }
        }
        PgType::Interval => {
            let (months, days, micros) = parse_iso_interval(s)?;
            Value::Interval { months, days, micros }
        }
        PgType::Array(elem) => parse_array(s, elem, typmod)?,
    })
}

fn parse_hex_bytea(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.chunks(2).map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8)).collect()
}

fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD[ BC]` to days since the epoch; `infinity` as i32::MAX (Debezium's mapping).
fn parse_date(s: &str) -> Option<i32> {
    match s {
        "infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let mut parts = s.splitn(3, '-');
    let y = parse_u32(parts.next()?)? as i64;
    let m = parse_u32(parts.next()?)?;
    let d = parse_u32(parts.next()?)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let year = if bc { 1 - y } else { y };
    i32::try_from(days_from_civil(year, m, d)).ok()
}

/// `HH:MM:SS[.ffffff]` to microseconds since midnight (24:00:00 is allowed).
fn parse_time(s: &str) -> Option<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.splitn(3, ':');
    let h = parse_u32(parts.next()?)? as i64;
    let m = parse_u32(parts.next()?)? as i64;
    let sec = parse_u32(parts.next()?)? as i64;
    Some((h * 3600 + m * 60 + sec) * MICROS_PER_SEC + parse_fraction(frac)?)
}

/// Digits after the decimal point as microseconds.
fn parse_fraction(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(frac.parse::<i64>().ok()? * 10i64.pow(6 - frac.len() as u32))
}

/// `+HH[:MM[:SS]]` to seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut secs = 0i32;
    for (i, part) in s[1..].split(':').enumerate() {
        let v = parse_u32(part)? as i32;
        secs += v * [3600, 60, 1].get(i)?;
    }
    Some(sign * secs)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]][ BC]` to microseconds since the epoch (UTC when
/// `zoned`). `infinity` maps to i64::MAX, as Debezium does.
fn parse_timestamp(s: &str, zoned: bool) -> Option<i64> {
    match s {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, time) = s.split_once(' ')?;
    let (time, offset) = if zoned {
        let at = time.rfind(['+', '-'])?;
        (&time[..at], parse_offset(&time[at..])?)
    } else {
        (time, 0)
    };
    let days = if bc { parse_date(&format!("{date} BC"))? } else { parse_date(date)? };
    // Near PostgreSQL's limits (year 294276) the microseconds overflow i64: fall back to text.
    (days as i64)
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(parse_time(time)?)?
        .checked_sub(offset as i64 * MICROS_PER_SEC)
}

/// An `IntervalStyle=iso_8601` interval (`P1Y2M3DT4H5M6.5S`, fields may be negative) as
/// (months, days, microseconds).
fn parse_iso_interval(s: &str) -> Option<(i32, i32, i64)> {
    let body = s.strip_prefix('P')?;
    let (date_part, time_part) = body.split_once('T').unwrap_or((body, ""));
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    for (part, is_time) in [(date_part, false), (time_part, true)] {
        let mut rest = part;
        while !rest.is_empty() {
            let unit_at = rest.find(|c: char| c.is_ascii_alphabetic())?;
            let (num, unit) = (&rest[..unit_at], rest.as_bytes()[unit_at]);
            rest = &rest[unit_at + 1..];
            match (is_time, unit) {
                (false, b'Y') => months += num.parse::<i64>().ok()? * 12,
                (false, b'M') => months += num.parse::<i64>().ok()?,
                (false, b'W') => days += num.parse::<i64>().ok()? * 7,
                (false, b'D') => days += num.parse::<i64>().ok()?,
                (true, b'H') => micros += num.parse::<i64>().ok()? * 3_600 * MICROS_PER_SEC,
                (true, b'M') => micros += num.parse::<i64>().ok()? * 60 * MICROS_PER_SEC,
                (true, b'S') => {
                    let (neg, digits) = match num.strip_prefix('-') {
                        Some(d) => (true, d),
                        None => (false, num),
                    };
                    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
                    let v = parse_u32(whole)? as i64 * MICROS_PER_SEC + parse_fraction(frac)?;
                    micros += if neg { -v } else { v };
                }
                _ => return None,
            }
        }
    }
    Some((i32::try_from(months).ok()?, i32::try_from(days).ok()?, micros))
}

/// An array literal (`{1,2}`, `{{1,2},{3,4}}`, `{"a b",NULL}`, `[0:1]={1,2}`), elements decoded
/// as `elem`.
fn parse_array(s: &str, elem: &PgType, typmod: i32) -> Option<Value> {
    let s = match s.strip_prefix('[') {
        Some(_) => &s[s.find('=')? + 1..],
        None => s,
    };
    let mut p = ArrayParser { s: s.as_bytes(), pos: 0 };
    let v = p.array(elem, typmod)?;
    (p.pos == p.s.len()).then_some(v)
}

struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl ArrayParser<'_> {
    fn array(&mut self, elem: &PgType, typmod: i32) -> Option<Value> {
        if self.s.get(self.pos) != Some(&b'{') {
            return None;
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Some(Value::Array(items));
        }
        loop {
            match self.s.get(self.pos)? {
                b'{' => items.push(self.array(elem, typmod)?),
                b'"' => {
                    let text = self.quoted()?;
                    items.push(parse(elem, typmod, &text)?);
                }
                _ => {
                    let start = self.pos;
                    while !matches!(self.s.get(self.pos)?, b',' | b'}') {
                        self.pos += 1;
                    }
                    let raw = std::str::from_utf8(&self.s[start..self.pos]).ok()?.trim();
                    items.push(if raw.eq_ignore_ascii_case("NULL") { Value::Null } else { parse(elem, typmod, raw)? });
                }
            }
            match self.s.get(self.pos)? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match *self.s.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(*self.s.get(self.pos + 1)?);
                    self.pos += 2;
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(ty: PgType, typmod: i32, s: &str) -> Value {
        let (v, fallback) = decode_text(&ty, typmod, s);
        assert!(!fallback, "{s} fell back to text");
        v
    }

    #[test]
    fn scalars() {
        assert_eq!(dec(PgType::Bool, -1, "t"), Value::Bool(true));
        assert_eq!(dec(PgType::Int, -1, "-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(dec(PgType::Float, -1, "1.5e+30"), Value::Float(1.5e30));
        assert!(matches!(dec(PgType::Float, -1, "NaN"), Value::Float(f) if f.is_nan()));
        assert_eq!(
            dec(PgType::Numeric, (10 << 16) + 2 + 4, "12.50"),
            Value::Numeric { text: "12.50".into(), scale: Some(2) }
        );
        assert_eq!(dec(PgType::Bytea, -1, "\\xdeadbeef"), Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(dec(PgType::Date, -1, "2024-01-01"), Value::Date(19_723));
        assert_eq!(dec(PgType::Date, -1, "0001-01-01 BC"), Value::Date(days_from_civil(0, 1, 1) as i32));
        assert_eq!(dec(PgType::Time, 3, "13:45:30.5"), Value::Time { micros: 49_530_500_000, precision: 3 });
        assert_eq!(
            dec(PgType::TimeTz, -1, "13:45:30+05:30"),
            Value::TimeTz { micros: 49_530_000_000, offset_secs: 19_800, precision: 6 }
        );
        assert_eq!(
            dec(PgType::Timestamp, -1, "2024-01-01 00:00:01.000001"),
            Value::Timestamp { micros: 1_704_067_201_000_001, precision: 6 }
        );
        assert_eq!(
            dec(PgType::TimestampTz, -1, "2024-01-01 02:00:00+02"),
            Value::TimestampTz { micros: 1_704_067_200_000_000, precision: 6 }
        );
        assert_eq!(dec(PgType::TimestampTz, -1, "infinity"), Value::TimestampTz { micros: i64::MAX, precision: 6 });
        // Beyond what i64 microseconds hold: kept as text, not wrapped.
        assert_eq!(
            decode_text(&PgType::Timestamp, -1, "294276-12-31 23:59:59"),
            (Value::Text("294276-12-31 23:59:59".into()), true)
        );
        assert_eq!(
            dec(PgType::Interval, -1, "P1Y2M3DT4H5M6.5S"),
            Value::Interval { months: 14, days: 3, micros: (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000 }
        );
        assert_eq!(
            dec(PgType::Interval, -1, "P-1Y-2M3DT-4H-5M-6.25S"),
            Value::Interval { months: -14, days: 3, micros: -((4 * 3600 + 5 * 60 + 6) * 1_000_000 + 250_000) }
        );
        assert_eq!(dec(PgType::Interval, -1, "PT0S"), Value::Interval { months: 0, days: 0, micros: 0 });
    }

    #[test]
    fn arrays() {
        let ints = PgType::Int;
        assert_eq!(dec(PgType::Array(Box::new(ints.clone())), -1, "{}"), Value::Array(vec![]));
        assert_eq!(
            dec(PgType::Array(Box::new(ints)), -1, "{{1,2},{3,NULL}}"),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null]),
            ])
        );
        assert_eq!(
            dec(PgType::Array(Box::new(PgType::Text)), -1, r#"{"a b","say \"hi\"",NULL,"NULL",plain}"#),
            Value::Array(vec![
                Value::Text("a b".into()),
                Value::Text("say \"hi\"".into()),
                Value::Null,
                Value::Text("NULL".into()),
                Value::Text("plain".into()),
            ])
        );
        assert_eq!(
            dec(PgType::Array(Box::new(PgType::Int)), -1, "[0:1]={7,8}"),
            Value::Array(vec![Value::Int(7), Value::Int(8)])
        );
    }

    #[test]
    fn unknown_and_unparsable_fall_back_to_text() {
        assert_eq!(decode_text(&PgType::Other("point".into()), -1, "(1,2)"), (Value::Text("(1,2)".into()), true));
        assert_eq!(decode_text(&PgType::Int, -1, "twelve"), (Value::Text("twelve".into()), true));
        assert_eq!(PgType::Array(Box::new(PgType::Other("inet".into()))).fallback_name(), Some("inet"));
    }

    /// Malformed text from a server never panics the decoder: every type, random text made of
    /// the characters its forms use.
    #[test]
    fn random_text_never_panics() {
        let types = [
            PgType::Bool,
            PgType::Int,
            PgType::Float,
            PgType::Numeric,
            PgType::Bytea,
            PgType::Date,
            PgType::Time,
            PgType::TimeTz,
            PgType::Timestamp,
            PgType::TimestampTz,
            PgType::Interval,
            PgType::Point,
            PgType::Array(Box::new(PgType::Int)),
            PgType::Array(Box::new(PgType::Array(Box::new(PgType::Text)))),
        ];
        let alphabet: Vec<char> = "0123456789-+:. ,()[]{}\"PYMDTHSBCinfity\\x".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200_000 {
            let len = rng.usize(0..24);
            let text: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            for ty in &types {
                let _ = decode_text(ty, rng.i32(-1..8), &text);
            }
        }
    }
}
