//! JSON text exactly as Kafka Connect's JsonConverter writes it (Jackson under Java 17), so an
//! envelope tidemark writes is byte-identical to Debezium's: no whitespace, doubles as Java's
//! `Double.toString` prints them (`0.0`, `1.25`, `3.4E38`, `-2.2250738585072014E-308`), control
//! characters as `\u00XX` with upper-case hex, and characters outside the Basic Multilingual Plane as
//! a `\uD83C\uDF89` surrogate pair (Jackson's UTF-8 generator does not combine them).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// serde_json's compact formatter with Jackson's number and string forms.
#[derive(Debug, Clone, Copy, Default)]
pub struct JavaFormatter;

impl Formatter for JavaFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let mut s = String::with_capacity(24);
        java_double(&mut s, value);
        writer.write_all(s.as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // Java's Float.toString: the shortest digits of the float, laid out as for a double.
        let shortest: f64 = value.to_string().parse().unwrap_or(value as f64);
        self.write_f64(writer, shortest)
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        // A character outside the BMP is the only one written differently, and its UTF-8 is the
        // only one that starts with a byte of 0xF0 or more: look for those bytes alone.
        let bytes = fragment.as_bytes();
        let mut start = 0;
        while let Some(at) = bytes[start..].iter().position(|&b| b >= 0xF0) {
            let i = start + at;
            writer.write_all(&bytes[start..i])?;
            let c = fragment[i..].chars().next().expect("a character starts at a lead byte");
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{:04X}", unit)?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()> {
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return write!(writer, "\\u{:04X}", byte),
        };
        writer.write_all(s)
    }
}

/// Append `value` serialized as Jackson would.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, JavaFormatter);
    value.serialize(&mut ser)
}

/// `value` serialized as Jackson would, as bytes (UTF-8), in a buffer of about `capacity`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Serializing our own types into memory cannot fail (no maps with non-string keys).
    let _ = write(&mut out, value);
    out
}

/// `value` serialized as Jackson would, as a string.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    // Serializing our own types into memory cannot fail (no maps with non-string keys).
    let _ = write(&mut out, value);
    String::from_utf8(out).unwrap_or_default()
}

/// Java's `Double.toString` for a finite value: the shortest digits that read back as `d`, in
/// plain notation with at least one fraction digit for 1e-3 <= |d| < 1e7, else as `d.dddE±n`.
/// Non-finite values print as Java does (`NaN`, `Infinity`), which callers quote.
pub fn java_double(out: &mut String, d: f64) {
    use std::fmt::Write as _;
    if d.is_nan() {
        out.push_str("NaN");
        return;
    }
    if d.is_infinite() {
        out.push_str(if d > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if d == 0.0 {
        out.push_str(if d.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    let sci = format!("{:e}", d.abs()); // shortest round-trip digits: "d[.ddd]e<exp>"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if d.is_sign_negative() {
        out.push('-');
    }
    if (-3..7).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if digits.len() > 1 { &digits[1..] } else { "0" });
        let _ = write!(out, "E{exp}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(d: f64) -> String {
        let mut s = String::new();
        java_double(&mut s, d);
        s
    }

    #[test]
    fn doubles_print_as_java_prints_them() {
        // Each as Java 17's Double.toString prints it.
        for (d, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.25, "1.25"),
            (2.0, "2.0"),
            (100.0, "100.0"),
            (1234567.0, "1234567.0"),
            (1e7, "1.0E7"),
            (12345678.9, "1.23456789E7"),
            (0.001, "0.001"),
            (0.000_999, "9.99E-4"),
            (3.4e38, "3.4E38"),
            (1.7976931348623157e308, "1.7976931348623157E308"),
            (-2.2250738585072014e-308, "-2.2250738585072014E-308"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
        ] {
            assert_eq!(double(d), want, "{d:e}");
        }
    }

    #[test]
    fn strings_escape_as_jackson_does() {
        let s = to_string("q\"\\\n\t\u{1}\u{1f}\u{7f}é ✓ 🎉/");
        assert_eq!(s, "\"q\\\"\\\\\\n\\t\\u0001\\u001F\u{7f}é ✓ \\uD83C\\uDF89/\"");
        assert_eq!(to_string(&serde_json::json!({"a": [1.5, 1e300, 7]})), "{\"a\":[1.5,1.0E300,7]}");
    }
}
