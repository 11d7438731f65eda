//! Exact decimals for sums and averages: a 128-bit mantissa and a scale.

use serde::{Deserialize, Serialize};

/// An exact decimal: `mant / 10^scale`.
///
/// The 128-bit mantissa is kept as two 64-bit halves: aligned to 8 bytes rather than 16, a
/// [`Scalar`] takes 32 bytes instead of 48, and multisets of them take fewer cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    hi: i64,
    lo: u64,
    pub scale: u32,
}

/// How a decimal is stored.
#[derive(Serialize, Deserialize)]
struct StoredDec {
    mant: i128,
    scale: u32,
}

impl Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredDec { mant: self.mant(), scale: self.scale }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StoredDec::deserialize(d)?;
        Ok(Dec::new(s.mant, s.scale))
    }
}

impl Dec {
    pub const fn new(mant: i128, scale: u32) -> Dec {
        Dec { hi: (mant >> 64) as i64, lo: mant as u64, scale }
    }

    pub const fn mant(self) -> i128 {
        ((self.hi as i128) << 64) | self.lo as i128
    }

    pub fn parse(text: &str) -> Option<Dec> {
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let scale = frac.len() as u32;
        if scale > 30 || int.len() + frac.len() > 36 {
            return None;
        }
        // At most 36 digits: no overflow in an i128.
        let mant = int.bytes().chain(frac.bytes()).fold(0i128, |m, b| m * 10 + i128::from(b - b'0'));
        Some(Dec::new(if neg { -mant } else { mant }, scale))
    }

    fn rescale(self, scale: u32) -> Dec {
        Dec::new(self.mant() * 10i128.pow(scale - self.scale), scale)
    }

    pub fn plus(self, o: Dec) -> Dec {
        if self.scale == o.scale {
            return Dec::new(self.mant() + o.mant(), self.scale);
        }
        let s = self.scale.max(o.scale);
        Dec::new(self.rescale(s).mant() + o.rescale(s).mant(), s)
    }

    pub fn negated(self) -> Dec {
        Dec::new(-self.mant(), self.scale)
    }

    pub fn to_f64(self) -> f64 {
        self.mant() as f64 / 10f64.powi(self.scale as i32)
    }

    pub fn text(self) -> String {
        let mut out = String::with_capacity(self.scale as usize + 8);
        let _ = self.write(&mut out);
        out
    }

    /// The text, formatted on the stack: one allocation, of the right size.
    pub(super) fn boxed_text(self) -> Box<str> {
        let mut buf = StackText { buf: [0; 48], len: 0 };
        match self.write(&mut buf) {
            Ok(()) => std::str::from_utf8(&buf.buf[..buf.len]).expect("ASCII digits").into(),
            Err(_) => self.text().into(),
        }
    }

    fn write(self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        if self.mant() < 0 {
            out.write_char('-')?;
        }
        let (abs, scale) = (self.mant().unsigned_abs(), self.scale as usize);
        if scale == 0 {
            return write!(out, "{abs}");
        }
        // u64 arithmetic when it fits: 128-bit division is a library call.
        match (u64::try_from(abs), scale <= 19) {
            (Ok(small), true) => {
                let p = 10u64.pow(self.scale);
                write!(out, "{}.{:0scale$}", small / p, small % p)
            }
            _ => {
                let p = 10u128.pow(self.scale);
                write!(out, "{}.{:0scale$}", abs / p, abs % p)
            }
        }
    }
}

/// A short text on the stack (a decimal's digits); writing past its end fails.
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Dec {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        if self.scale == o.scale {
            return self.mant().cmp(&o.mant());
        }
        let s = self.scale.max(o.scale);
        self.rescale(s).mant().cmp(&o.rescale(s).mant())
    }
}
