//! Encoding typed values the way Debezium's JSON output does, under Debezium's option names.
//!
//! The one deliberate deviation from Debezium's defaults is `decimal_handling = "string"` (Debezium:
//! `precise`, base64 of the unscaled integer), because a cache is read by applications, not by
//! Kafka Connect converters; `precise` is available. The README's type table lists every encoding.

use std::fmt::Write;

use base64::Engine;
use serde_json::{json, Value as Json};

use super::time::{iso_utc, write_time, MICROS_PER_DAY};
use super::Value;
use crate::settings::{Diag, Section};

/// `decimal_handling`: how NUMERIC/DECIMAL values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalHandling {
    /// Debezium's default: base64 of the two's-complement unscaled value (a `{scale, value}`
    /// object for columns without a declared scale).
    Precise,
    /// A JSON number (may lose precision).
    Double,
    /// The exact decimal as text. tidemark's default.
    String,
}

/// `time_precision`: Debezium's `time.precision.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePrecision {
    /// Milliseconds for columns of precision 0-3, microseconds for 4-6 (Debezium's default).
    Adaptive,
    /// Like adaptive, but TIME is always microseconds.
    AdaptiveTimeMicroseconds,
    /// Kafka Connect's logical types: always milliseconds.
    Connect,
}

/// `binary_handling`: Debezium's `binary.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryHandling {
    /// Bytes, which JSON renders as base64 (Debezium's default).
    Bytes,
    Base64,
    Base64UrlSafe,
    Hex,
}

/// `interval_handling`: Debezium's `interval.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalHandling {
    /// Microseconds, a month counted as 30.4375 days (Debezium's default).
    Numeric,
    /// ISO-8601 text, `P1Y2M3DT4H5M6.78S`.
    String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub decimal: DecimalHandling,
    pub time: TimePrecision,
    pub binary: BinaryHandling,
    pub interval: IntervalHandling,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            decimal: DecimalHandling::String,
            time: TimePrecision::Adaptive,
            binary: BinaryHandling::Bytes,
            interval: IntervalHandling::Numeric,
        }
    }
}

pub const ENCODING_KEYS: [&str; 4] = ["decimal_handling", "time_precision", "binary_handling", "interval_handling"];

impl Encoding {
    /// Debezium's MySQL connector defaults to `adaptive_time_microseconds` (TIME in microseconds).
    pub fn mysql_default() -> Encoding {
        Encoding { time: TimePrecision::AdaptiveTimeMicroseconds, ..Encoding::default() }
    }

    /// Read the encoding options from a source section, defaulting to `dflt`.
    pub fn read(s: &mut Section, d: &mut Diag, dflt: Encoding) -> Encoding {
        Encoding {
            decimal: match s.opt_choice(d, "decimal_handling", &["precise", "double", "string"]).as_deref() {
                Some("precise") => DecimalHandling::Precise,
                Some("double") => DecimalHandling::Double,
                Some("string") => DecimalHandling::String,
                _ => dflt.decimal,
            },
            time: match s
                .opt_choice(d, "time_precision", &["adaptive", "adaptive_time_microseconds", "connect"])
                .as_deref()
            {
                Some("adaptive_time_microseconds") => TimePrecision::AdaptiveTimeMicroseconds,
                Some("connect") => TimePrecision::Connect,
                Some("adaptive") => TimePrecision::Adaptive,
                _ => dflt.time,
            },
            binary: match s.opt_choice(d, "binary_handling", &["bytes", "base64", "base64-url-safe", "hex"]).as_deref()
            {
                Some("base64") => BinaryHandling::Base64,
                Some("base64-url-safe") => BinaryHandling::Base64UrlSafe,
                Some("hex") => BinaryHandling::Hex,
                Some("bytes") => BinaryHandling::Bytes,
                _ => dflt.binary,
            },
            interval: match s.opt_choice(d, "interval_handling", &["numeric", "string"]).as_deref() {
                Some("string") => IntervalHandling::String,
                Some("numeric") => IntervalHandling::Numeric,
                _ => dflt.interval,
            },
        }
    }

    /// The Debezium JSON form of a value.
    pub fn to_json(&self, v: &Value) -> Json {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::UInt(u) => Json::from(*u),
            Value::Float(f) => float_json(*f),
            Value::Numeric { text, scale } => self.numeric_json(text, *scale),
            Value::Text(s) | Value::Json(s) => Json::String(s.clone()),
            Value::Bytes(b) => Json::String(self.bytes_text(b)),
            Value::Array(items) => Json::Array(items.iter().map(|v| self.to_json(v)).collect()),
            Value::Date(d) => Json::from(*d),
            Value::Time { micros, precision } => Json::from(self.time_number(*micros, *precision)),
            Value::Timestamp { micros, precision } => Json::from(self.timestamp_number(*micros, *precision)),
            Value::TimeTz { .. } | Value::TimestampTz { .. } | Value::Interval { .. } => {
                match self.interval_or_zoned(v) {
                    Some(text) => Json::String(text),
                    None => Json::from(interval_micros(v)),
                }
            }
        }
    }

    /// The text a Redis hash field holds for a value: the Debezium JSON value, with strings
    /// unquoted and arrays/objects as compact JSON. `None` for NULL (the field is left out).
    pub fn write_text(&self, v: &Value, out: &mut String) -> bool {
        match v {
            Value::Null => return false,
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Value::Text(s) | Value::Json(s) => out.push_str(s),
            Value::Numeric { text, .. } if self.decimal == DecimalHandling::String => out.push_str(text),
            Value::Date(d) => {
                let _ = write!(out, "{d}");
            }
            Value::Time { micros, precision } => {
                let _ = write!(out, "{}", self.time_number(*micros, *precision));
            }
            Value::Timestamp { micros, precision } => {
                let _ = write!(out, "{}", self.timestamp_number(*micros, *precision));
            }
            Value::Bytes(b) => out.push_str(&self.bytes_text(b)),
            other => match self.to_json(other) {
                Json::String(s) => out.push_str(&s),
                j => {
                    let _ = write!(out, "{j}");
                }
            },
        }
        true
    }

    fn time_number(&self, micros: i64, precision: u8) -> i64 {
        let millis = match self.time {
            TimePrecision::Adaptive => precision <= 3,
            TimePrecision::AdaptiveTimeMicroseconds => false,
            TimePrecision::Connect => true,
        };
        if millis {
            micros.div_euclid(1000)
        } else {
            micros
        }
    }

    fn timestamp_number(&self, micros: i64, precision: u8) -> i64 {
        if micros == i64::MAX || micros == i64::MIN {
            return micros; // PostgreSQL 'infinity' / '-infinity', as Debezium maps them
        }
        let millis = match self.time {
            TimePrecision::Adaptive | TimePrecision::AdaptiveTimeMicroseconds => precision <= 3,
            TimePrecision::Connect => true,
        };
        if millis {
            micros.div_euclid(1000)
        } else {
            micros
        }
    }

    fn bytes_text(&self, b: &[u8]) -> String {
        match self.binary {
            BinaryHandling::Bytes | BinaryHandling::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
            BinaryHandling::Base64UrlSafe => base64::engine::general_purpose::URL_SAFE.encode(b),
            BinaryHandling::Hex => {
                let mut s = String::with_capacity(b.len() * 2);
                for byte in b {
                    let _ = write!(s, "{byte:02x}");
                }
                s
            }
        }
    }

    fn numeric_json(&self, text: &str, scale: Option<u16>) -> Json {
        if !text.trim_start_matches('-').starts_with(|c: char| c.is_ascii_digit()) {
            return Json::String(text.to_string()); // NaN, Infinity, -Infinity
        }
        match self.decimal {
            DecimalHandling::String => Json::String(text.to_string()),
            DecimalHandling::Double => text.parse::<f64>().map(float_json).unwrap_or(Json::Null),
            DecimalHandling::Precise => {
                let frac_digits = text.split_once('.').map_or(0, |(_, f)| f.len());
                let target = scale.map_or(frac_digits, usize::from).max(frac_digits);
                let bytes = unscaled_twos_complement(text, target);
                let value = base64::engine::general_purpose::STANDARD.encode(bytes);
                match scale {
                    Some(_) => Json::String(value),
                    None => json!({ "scale": target, "value": value }),
                }
            }
        }
    }

    /// Text forms of zoned times and (in string mode) intervals; `None` for a numeric interval.
    fn interval_or_zoned(&self, v: &Value) -> Option<String> {
        match *v {
            Value::TimestampTz { micros, .. } => Some(match micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                m => iso_utc(m),
            }),
            Value::TimeTz { micros, offset_secs, .. } => {
                let utc = (micros - offset_secs as i64 * 1_000_000).rem_euclid(MICROS_PER_DAY);
                let mut s = String::new();
                write_time(&mut s, utc);
                s.push('Z');
                Some(s)
            }
            Value::Interval { months, days, micros } if self.interval == IntervalHandling::String => {
                Some(iso_interval(months, days, micros))
            }
            _ => None,
        }
    }
}

fn float_json(f: f64) -> Json {
    if f.is_finite() {
        serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
    } else if f.is_nan() {
        Json::String("NaN".into())
    } else if f > 0.0 {
        Json::String("Infinity".into())
    } else {
        Json::String("-Infinity".into())
    }
}

/// Debezium's MicroDuration: a month is 365.25 / 12 = 30.4375 days.
fn interval_micros(v: &Value) -> i64 {
    match *v {
        Value::Interval { months, days, micros } => {
            months as i64 * 2_629_800_000_000 + days as i64 * MICROS_PER_DAY + micros
        }
        _ => 0,
    }
}

fn iso_interval(months: i32, days: i32, micros: i64) -> String {
    let mut s = String::from("P");
    let (y, m) = (months / 12, months % 12);
    if y != 0 {
        let _ = write!(s, "{y}Y");
    }
    if m != 0 {
        let _ = write!(s, "{m}M");
    }
    if days != 0 {
        let _ = write!(s, "{days}D");
    }
    if micros != 0 {
        s.push('T');
        let neg = micros < 0;
        let abs = micros.unsigned_abs();
        let (h, rem) = (abs / 3_600_000_000, abs % 3_600_000_000);
        let (mi, rem) = (rem / 60_000_000, rem % 60_000_000);
        let (sec, frac) = (rem / 1_000_000, rem % 1_000_000);
        let sign = if neg { "-" } else { "" };
        if h != 0 {
            let _ = write!(s, "{sign}{h}H");
        }
        if mi != 0 {
            let _ = write!(s, "{sign}{mi}M");
        }
        if sec != 0 || frac != 0 {
            if frac != 0 {
                let f = format!("{frac:06}");
                let _ = write!(s, "{sign}{sec}.{}S", f.trim_end_matches('0'));
            } else {
                let _ = write!(s, "{sign}{sec}S");
            }
        }
    }
    if s == "P" {
        s.push_str("0D");
    }
    s
}

/// The unscaled value of decimal `text` at `scale`, as Java's `BigInteger.toByteArray()`: minimal
/// big-endian two's complement.
fn unscaled_twos_complement(text: &str, scale: usize) -> Vec<u8> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut mag: Vec<u8> = vec![0]; // big-endian magnitude
    let all = int.bytes().chain(frac.bytes()).chain(std::iter::repeat_n(b'0', scale.saturating_sub(frac.len())));
    for c in all {
        let mut carry = (c - b'0') as u32;
        for byte in mag.iter_mut().rev() {
            let v = *byte as u32 * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    while mag.len() > 1 && mag[0] == 0 {
        mag.remove(0);
    }
    if mag[0] & 0x80 != 0 {
        mag.insert(0, 0);
    }
    if neg && mag.iter().any(|&b| b != 0) {
        let mut carry = 1u16;
        for byte in mag.iter_mut().rev() {
            let v = (!*byte) as u16 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while mag.len() > 1 && mag[0] == 0xff && mag[1] & 0x80 != 0 {
            mag.remove(0);
        }
    }
    mag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(enc: &Encoding, v: &Value) -> String {
        let mut s = String::new();
        enc.write_text(v, &mut s);
        s
    }

    #[test]
    fn twos_complement_matches_java() {
        // new BigDecimal("12.34").unscaledValue().toByteArray() == [4, -46]
        assert_eq!(unscaled_twos_complement("12.34", 2), vec![0x04, 0xD2]);
        assert_eq!(unscaled_twos_complement("-12.34", 2), vec![0xFB, 0x2E]);
        assert_eq!(unscaled_twos_complement("128", 0), vec![0x00, 0x80]);
        assert_eq!(unscaled_twos_complement("-128", 0), vec![0x80]);
        assert_eq!(unscaled_twos_complement("0", 0), vec![0x00]);
        assert_eq!(unscaled_twos_complement("1.5", 3), vec![0x05, 0xDC]);
    }

    #[test]
    fn debezium_defaults() {
        let e = Encoding::default();
        assert_eq!(text(&e, &Value::Timestamp { micros: 1_500_123, precision: 6 }), "1500123");
        assert_eq!(text(&e, &Value::Timestamp { micros: 1_500_123, precision: 3 }), "1500");
        assert_eq!(text(&e, &Value::Time { micros: 3_600_000_001, precision: 6 }), "3600000001");
        assert_eq!(
            text(&e, &Value::TimestampTz { micros: 1_704_110_400_000_000, precision: 6 }),
            "2024-01-01T12:00:00Z"
        );
        assert_eq!(text(&e, &Value::TimeTz { micros: 3_600_000_000, offset_secs: 3600, precision: 6 }), "00:00:00Z");
        assert_eq!(text(&e, &Value::Interval { months: 1, days: 1, micros: 1 }), "2716200000001");
        assert_eq!(text(&e, &Value::Bytes(vec![0xde, 0xad])), "3q0=");
        assert_eq!(text(&e, &Value::Float(f64::NAN)), "NaN");
        assert_eq!(text(&e, &Value::Array(vec![Value::Int(1), Value::Null])), "[1,null]");
        assert!(!e.write_text(&Value::Null, &mut String::new()));
    }

    #[test]
    fn options() {
        let e = Encoding {
            decimal: DecimalHandling::Precise,
            time: TimePrecision::Connect,
            binary: BinaryHandling::Hex,
            interval: IntervalHandling::String,
        };
        assert_eq!(e.to_json(&Value::Numeric { text: "12.34".into(), scale: Some(2) }), json!("BNI="));
        assert_eq!(
            e.to_json(&Value::Numeric { text: "12.34".into(), scale: None }),
            json!({"scale": 2, "value": "BNI="})
        );
        assert_eq!(e.to_json(&Value::Time { micros: 1_234_567, precision: 6 }), json!(1234));
        assert_eq!(text(&e, &Value::Bytes(vec![0xde, 0xad])), "dead");
        assert_eq!(text(&e, &Value::Interval { months: 14, days: 3, micros: 3_723_500_000 }), "P1Y2M3DT1H2M3.5S");
        let d = Encoding { decimal: DecimalHandling::Double, ..Encoding::default() };
        assert_eq!(d.to_json(&Value::Numeric { text: "1.25".into(), scale: Some(2) }), json!(1.25));
    }
}
