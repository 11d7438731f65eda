//! Encoding typed values the way Debezium's JSON output does, under Debezium's option names.
//!
//! The one deliberate deviation from Debezium's defaults is `decimal_handling = "string"` (Debezium:
//! `precise`, base64 of the unscaled integer), because a cache is read by applications, not by
//! Kafka Connect converters; `precise` is available. The README's type table lists every encoding.

use std::fmt::Write;

use std::sync::Arc;

use base64::Engine;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value as Json;

use super::time::{iso_utc_fixed, write_time_trimmed, MICROS_PER_DAY};
use super::{Op, Value};
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub decimal: DecimalHandling,
    pub time: TimePrecision,
    pub binary: BinaryHandling,
    pub interval: IntervalHandling,
    /// `unavailable_value_placeholder`: what an envelope holds for a value the source did not
    /// send (an unchanged TOASTed PostgreSQL column). Caches never see it: they keep the stored
    /// value.
    pub unavailable: Arc<str>,
    /// `skipped_operations`: operations dropped before the processing stage (Debezium's
    /// `skipped.operations`; tidemark skips none by default, since a cache must see truncates).
    pub skipped: SkippedOps,
}

/// A set of operations, as Debezium's `skipped.operations` names them (`c,u,d,t` or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkippedOps(u8);

impl SkippedOps {
    const ALL: [(Op, &'static str); 4] = [(Op::Create, "c"), (Op::Update, "u"), (Op::Delete, "d"), (Op::Truncate, "t")];

    pub fn contains(self, op: Op) -> bool {
        Self::ALL.iter().position(|(o, _)| *o == op).is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parse `c,u,d,t` (any of them) or `none`.
    pub fn parse(text: &str) -> Result<SkippedOps, String> {
        let mut set = 0u8;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "none" {
                continue;
            }
            match Self::ALL.iter().position(|(_, code)| *code == part) {
                Some(i) => set |= 1 << i,
                None => {
                    return Err(format!(
                        "`{part}` is not an operation: use any of c, u, d, t (comma-separated), or none"
                    ))
                }
            }
        }
        Ok(SkippedOps(set))
    }
}

/// Debezium's `unavailable.value.placeholder` default.
pub const UNAVAILABLE_PLACEHOLDER: &str = "__debezium_unavailable_value";

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            decimal: DecimalHandling::String,
            time: TimePrecision::Adaptive,
            binary: BinaryHandling::Bytes,
            interval: IntervalHandling::Numeric,
            unavailable: UNAVAILABLE_PLACEHOLDER.into(),
            skipped: SkippedOps::default(),
        }
    }
}

pub const ENCODING_KEYS: [&str; 6] = [
    "decimal_handling",
    "time_precision",
    "binary_handling",
    "interval_handling",
    "unavailable_value_placeholder",
    "skipped_operations",
];

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
            unavailable: s.opt_str(d, "unavailable_value_placeholder").map_or(dflt.unavailable, Arc::from),
            skipped: match s.opt_str(d, "skipped_operations").map(|t| SkippedOps::parse(&t)) {
                Some(Ok(set)) => set,
                Some(Err(e)) => {
                    d.error(s.key("skipped_operations"), e);
                    dflt.skipped
                }
                None => dflt.skipped,
            },
        }
    }

    /// The Debezium JSON form of a value, as a `serde_json` value (documents, expressions).
    pub fn to_json(&self, v: &Value) -> Json {
        serde_json::to_value(Encoded(v, self)).unwrap_or(Json::Null)
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
        // PostgreSQL 'infinity' / '-infinity' become the JDBC driver's sentinels, as in Debezium.
        let micros = match micros {
            i64::MAX => 9_223_372_036_825_200_000,
            i64::MIN => -9_223_372_036_832_400_000,
            m => m,
        };
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

    /// The precise form of a finite decimal: base64 of the unscaled value (with the scale
    /// beside it for a column without a declared one).
    fn precise(&self, text: &str, scale: Option<u16>) -> (String, usize) {
        let frac_digits = text.split_once('.').map_or(0, |(_, f)| f.len());
        let target = scale.map_or(frac_digits, usize::from).max(frac_digits);
        (base64::engine::general_purpose::STANDARD.encode(unscaled_twos_complement(text, target)), target)
    }
}

/// A value together with the encoding options it is written under: serializes to exactly the
/// JSON Debezium writes for it (through [`super::json::JavaFormatter`], byte for byte).
pub struct Encoded<'a>(pub &'a Value, pub &'a Encoding);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let enc = self.1;
        match self.0 {
            Value::Null => ser.serialize_unit(),
            Value::Bool(b) => ser.serialize_bool(*b),
            Value::Int(i) => ser.serialize_i64(*i),
            Value::UInt(u) => ser.serialize_u64(*u),
            Value::Float(f) => float(*f, ser),
            Value::Numeric { text, scale } => {
                let finite = text.trim_start_matches('-').starts_with(|c: char| c.is_ascii_digit());
                match enc.decimal {
                    DecimalHandling::String => ser.serialize_str(text),
                    DecimalHandling::Double => match text.parse::<f64>() {
                        Ok(f) => float(f, ser),
                        Err(_) => ser.serialize_unit(),
                    },
                    // Debezium's precise mode has no form for NaN and the infinities: null.
                    DecimalHandling::Precise if !finite => ser.serialize_unit(),
                    DecimalHandling::Precise => {
                        let (value, target) = enc.precise(text, *scale);
                        match scale {
                            Some(_) => ser.serialize_str(&value),
                            None => {
                                let mut m = ser.serialize_map(Some(2))?;
                                m.serialize_entry("scale", &target)?;
                                m.serialize_entry("value", &value)?;
                                m.end()
                            }
                        }
                    }
                }
            }
            Value::Text(s) | Value::Json(s) => ser.serialize_str(s),
            Value::Bytes(b) => ser.serialize_str(&enc.bytes_text(b)),
            Value::Array(items) => {
                let mut seq = ser.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Encoded(item, enc))?;
                }
                seq.end()
            }
            Value::Date(d) => ser.serialize_i32(*d),
            Value::Time { micros, precision } => ser.serialize_i64(enc.time_number(*micros, *precision)),
            Value::Timestamp { micros, precision } => ser.serialize_i64(enc.timestamp_number(*micros, *precision)),
            Value::TimestampTz { micros, precision } => ser.serialize_str(&match *micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                m => iso_utc_fixed(m, *precision),
            }),
            Value::TimeTz { micros, offset_secs, .. } => {
                let utc = (micros - *offset_secs as i64 * 1_000_000).rem_euclid(MICROS_PER_DAY);
                let mut s = String::with_capacity(20);
                write_time_trimmed(&mut s, utc);
                s.push('Z');
                ser.serialize_str(&s)
            }
            Value::Interval { months, days, micros } => match enc.interval {
                IntervalHandling::String => ser.serialize_str(&iso_interval(*months, *days, *micros)),
                IntervalHandling::Numeric => ser.serialize_i64(interval_micros(*months, *days, *micros)),
            },
            Value::Point { x, y } => {
                let mut m = ser.serialize_map(Some(4))?;
                m.serialize_entry("x", &JavaDouble(*x))?;
                m.serialize_entry("y", &JavaDouble(*y))?;
                m.serialize_entry("wkb", &base64::engine::general_purpose::STANDARD.encode(point_wkb(*x, *y)))?;
                m.serialize_entry("srid", &())?;
                m.end()
            }
            Value::Unavailable => ser.serialize_str(&enc.unavailable),
        }
    }
}

/// A double that stays a double (`2.0`, not `2`) in every serializer.
struct JavaDouble(f64);

impl Serialize for JavaDouble {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        float(self.0, ser)
    }
}

/// Finite doubles as numbers; `NaN`, `Infinity` and `-Infinity` as strings (Jackson's
/// `WRITE_NAN_AS_STRINGS`, which Kafka Connect leaves on).
fn float<S: Serializer>(f: f64, ser: S) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        ser.serialize_f64(f)
    } else if f.is_nan() {
        ser.serialize_str("NaN")
    } else if f > 0.0 {
        ser.serialize_str("Infinity")
    } else {
        ser.serialize_str("-Infinity")
    }
}

/// Well-known binary of a 2-D point, little-endian (as Debezium's `Geometry.wkb`).
fn point_wkb(x: f64, y: f64) -> [u8; 21] {
    let mut wkb = [0u8; 21];
    wkb[0] = 1;
    wkb[1..5].copy_from_slice(&1u32.to_le_bytes());
    wkb[5..13].copy_from_slice(&x.to_le_bytes());
    wkb[13..21].copy_from_slice(&y.to_le_bytes());
    wkb
}

/// Debezium's MicroDuration: a month is 365.25 / 12 = 30.4375 days; an interval beyond 64-bit
/// microseconds saturates, as Debezium's does (PostgreSQL allows ±178,000,000 years).
fn interval_micros(months: i32, days: i32, micros: i64) -> i64 {
    let total = months as i128 * 2_629_800_000_000 + days as i128 * MICROS_PER_DAY as i128 + micros as i128;
    total.clamp(i64::MIN as i128, i64::MAX as i128) as i64
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
    use serde_json::json;

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
            "2024-01-01T12:00:00.000000Z"
        );
        assert_eq!(
            text(&e, &Value::TimestampTz { micros: 1_704_110_400_500_000, precision: 3 }),
            "2024-01-01T12:00:00.500Z"
        );
        assert_eq!(text(&e, &Value::TimeTz { micros: 3_600_250_000, offset_secs: 0, precision: 6 }), "01:00:00.25Z");
        // Beyond 64-bit microseconds an interval saturates, as Debezium's does.
        assert_eq!(text(&e, &Value::Interval { months: 2_136_000_000, days: 0, micros: 0 }), i64::MAX.to_string());
        assert_eq!(text(&e, &Value::Interval { months: -2_136_000_000, days: 0, micros: 0 }), i64::MIN.to_string());
        assert_eq!(text(&e, &Value::Timestamp { micros: i64::MAX, precision: 6 }), "9223372036825200000");
        assert_eq!(text(&e, &Value::Timestamp { micros: i64::MIN, precision: 3 }), "-9223372036832400");
        assert_eq!(
            text(&e, &Value::Point { x: 1.5, y: 2.0 }),
            r#"{"x":1.5,"y":2.0,"wkb":"AQEAAAAAAAAAAAD4PwAAAAAAAABA","srid":null}"#
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
            ..Encoding::default()
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

    /// Property tests at the edges: intervals saturate exactly, timestamps of any 64-bit value
    /// encode (and read back) without overflow, doubles round-trip through Java's text.
    #[test]
    fn conversions_hold_at_their_edges() {
        let e = Encoding::default();
        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..100_000 {
            let (months, days, micros) = (rng.i32(..), rng.i32(..), rng.i64(..));
            let exact = months as i128 * 2_629_800_000_000 + days as i128 * 86_400_000_000 + micros as i128;
            let want = exact.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            assert_eq!(e.to_json(&Value::Interval { months, days, micros }), Json::from(want));

            let m = rng.i64(..);
            let precision = rng.u8(0..=6);
            let text = match e.to_json(&Value::TimestampTz { micros: m, precision }) {
                Json::String(t) => t,
                other => panic!("{other}"),
            };
            if m != i64::MAX && m != i64::MIN {
                assert_eq!(read_iso(&text), m - m.rem_euclid(10i64.pow(6 - precision as u32)), "{m} {text}");
            }
            let _ = e.to_json(&Value::Timestamp { micros: m, precision });
            let _ = e.to_json(&Value::TimeTz {
                micros: m.rem_euclid(86_400_000_000),
                offset_secs: rng.i32(-57_600..57_600),
                precision,
            });

            let d = f64::from_bits(rng.u64(..));
            if d.is_finite() {
                let mut t = String::new();
                crate::event::json::java_double(&mut t, d);
                assert_eq!(t.parse::<f64>().unwrap().to_bits(), d.to_bits(), "{t}");
                let plain = (1e-3..1e7).contains(&d.abs());
                assert_eq!(!t.contains('E'), plain, "{t}");
                assert!(t.contains('.'), "{t}");
            }
        }
    }

    /// Microseconds since the epoch of `[±]YYYY-MM-DDTHH:MM:SS[.f]Z`.
    fn read_iso(t: &str) -> i64 {
        let t = t.strip_suffix('Z').unwrap();
        let (date, time) = t.rsplit_once('T').unwrap();
        let (neg, date) = match date.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, date.trim_start_matches('+')),
        };
        let mut parts = date.split('-').map(|p| p.parse::<i64>().unwrap());
        let (y, mo, d) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let y = if neg { -y } else { y };
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut hms = hms.split(':').map(|p| p.parse::<i64>().unwrap());
        let secs = hms.next().unwrap() * 3600 + hms.next().unwrap() * 60 + hms.next().unwrap();
        let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().unwrap() };
        let days = crate::event::time::days_from_civil(y, mo as u32, d as u32);
        (days as i128 * 86_400_000_000 + secs as i128 * 1_000_000 + frac as i128) as i64
    }
}
