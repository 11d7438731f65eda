//! Decoding of row images in ROWS events.
//!
//! tidemark reads the row images itself rather than through `mysql_common`'s row decoder, whose
//! TIME(1)/TIME(2) decoding underflows on negative values with a fraction (a panic in debug
//! builds, a wrong value in release). The format is the server's: per image a NULL bitmap over the
//! columns present, then each non-NULL value in the column's binary form (with the per-type
//! metadata of the table map). Values come out in the forms [`super::schema::convert`] reads.

use mysql_async::binlog::events::TableMapEvent;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value as MyValue;
use mysql_common::binlog::decimal::Decimal;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

/// One row image: (table column index, value) for each column present.
pub type Image = Vec<(usize, BinlogValue<'static>)>;

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.p.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("row image ends early")?;
        let s = &self.b[self.p..end];
        self.p = end;
        Ok(s)
    }
    fn le(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }
    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }
}

/// A row change's before and after images (an insert has no before, a delete no after).
pub type ImagePair = (Option<Image>, Option<Image>);

/// Decode every (before, after) image pair of a rows event.
pub fn decode(
    data: &[u8],
    tme: &TableMapEvent<'_>,
    before_cols: Option<&[usize]>,
    after_cols: Option<&[usize]>,
) -> Result<Vec<ImagePair>, String> {
    let mut c = Cursor { b: data, p: 0 };
    let mut out = Vec::new();
    while c.p < c.b.len() {
        let at = c.p;
        let before = before_cols.map(|cols| image(&mut c, tme, cols)).transpose()?;
        let after = after_cols.map(|cols| image(&mut c, tme, cols)).transpose()?;
        if c.p == at {
            return Err("a row image with no columns".into());
        }
        out.push((before, after));
    }
    Ok(out)
}

fn image(c: &mut Cursor<'_>, tme: &TableMapEvent<'_>, cols: &[usize]) -> Result<Image, String> {
    let nulls = c.take(cols.len().div_ceil(8))?;
    let mut out = Vec::with_capacity(cols.len());
    for (k, &col) in cols.iter().enumerate() {
        if nulls[k / 8] & (1 << (k % 8)) != 0 {
            out.push((col, BinlogValue::Value(MyValue::NULL)));
            continue;
        }
        let ty = tme
            .get_column_type(col)
            .map_err(|e| format!("column {col}: {e}"))?
            .ok_or_else(|| format!("column {col}: no type in the table map"))?;
        let meta = tme.get_column_metadata(col).ok_or_else(|| format!("column {col}: no metadata in the table map"))?;
        out.push((col, value(c, ty, meta).map_err(|e| format!("column {col} ({ty:?}): {e}"))?));
    }
    Ok(out)
}

fn m(meta: &[u8], i: usize) -> usize {
    meta.get(i).copied().unwrap_or(0) as usize
}

/// Fractional seconds stored in `(fsp + 1) / 2` bytes, as microseconds.
fn frac(c: &mut Cursor<'_>, fsp: usize) -> Result<i64, String> {
    Ok(match fsp {
        1 | 2 => c.be(1)? as i64 * 10_000,
        3 | 4 => c.be(2)? as i64 * 100,
        5 | 6 => c.be(3)? as i64,
        _ => 0,
    })
}

fn value(c: &mut Cursor<'_>, ty: ColumnType, meta: &[u8]) -> Result<BinlogValue<'static>, String> {
    use ColumnType::*;
    let v = match ty {
        MYSQL_TYPE_TINY => MyValue::Int(c.le(1)? as i64),
        MYSQL_TYPE_SHORT => MyValue::Int(c.le(2)? as i64),
        MYSQL_TYPE_INT24 => MyValue::Int(c.le(3)? as i64),
        MYSQL_TYPE_LONG => MyValue::Int(c.le(4)? as i64),
        MYSQL_TYPE_LONGLONG => MyValue::Int(c.le(8)? as i64),
        MYSQL_TYPE_FLOAT => MyValue::Float(f32::from_bits(c.le(4)? as u32)),
        MYSQL_TYPE_DOUBLE => MyValue::Double(f64::from_bits(c.le(8)?)),
        MYSQL_TYPE_NEWDECIMAL => {
            let (precision, scale) = (m(meta, 0), m(meta, 1));
            if precision == 0 || scale > precision || precision > 65 {
                return Err(format!("DECIMAL({precision},{scale}) metadata is malformed"));
            }
            let rest = &c.b[c.p..];
            let mut reader = rest;
            let d = Decimal::read_bin(&mut reader, precision, scale, false).map_err(|e| e.to_string())?;
            c.p += rest.len() - reader.len();
            MyValue::Bytes(d.to_string().into_bytes())
        }
        MYSQL_TYPE_YEAR => {
            let y = c.le(1)?;
            MyValue::Int(if y == 0 { 0 } else { 1900 + y as i64 })
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => {
            let v = c.le(3)?;
            MyValue::Date((v >> 9) as u16, ((v >> 5) & 15) as u8, (v & 31) as u8, 0, 0, 0, 0)
        }
        MYSQL_TYPE_TIME2 => {
            // MySQL's my_time_packed_from_binary, with signed arithmetic.
            let fsp = m(meta, 0);
            let mut int_part = c.be(3)? as i64 - 0x80_0000;
            let packed = match fsp {
                1 | 2 => {
                    let mut f = c.be(1)? as i64;
                    if int_part < 0 && f != 0 {
                        int_part += 1;
                        f -= 0x100;
                    }
                    (int_part << 24) + f * 10_000
                }
                3 | 4 => {
                    let mut f = c.be(2)? as i64;
                    if int_part < 0 && f != 0 {
                        int_part += 1;
                        f -= 0x1_0000;
                    }
                    (int_part << 24) + f * 100
                }
                5 | 6 => {
                    c.p -= 3;
                    c.be(6)? as i64 - 0x8000_0000_0000
                }
                _ => int_part << 24,
            };
            let neg = packed < 0;
            let t = packed.unsigned_abs();
            let hms = t >> 24;
            let micros = (t % (1 << 24)) as u32;
            let hour = ((hms >> 12) % (1 << 10)) as u32;
            MyValue::Time(neg, hour / 24, (hour % 24) as u8, ((hms >> 6) % 64) as u8, (hms % 64) as u8, micros)
        }
        MYSQL_TYPE_TIME => {
            let v = c.le(3)?;
            MyValue::Time(false, 0, (v / 10000) as u8, (v / 100 % 100) as u8, (v % 100) as u8, 0)
        }
        MYSQL_TYPE_DATETIME2 => {
            let fsp = m(meta, 0);
            let int_part = c.be(5)? as i64 - 0x80_0000_0000;
            let f = frac(c, fsp)?;
            let ymd = int_part >> 17;
            let ym = ymd >> 5;
            let hms = int_part % (1 << 17);
            MyValue::Date(
                (ym / 13) as u16,
                (ym % 13) as u8,
                (ymd % (1 << 5)) as u8,
                (hms >> 12) as u8,
                ((hms >> 6) % (1 << 6)) as u8,
                (hms % (1 << 6)) as u8,
                f as u32,
            )
        }
        MYSQL_TYPE_DATETIME => {
            let v = c.le(8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            MyValue::Date(
                (d / 10000) as u16,
                (d / 100 % 100) as u8,
                (d % 100) as u8,
                (t / 10000) as u8,
                (t / 100 % 100) as u8,
                (t % 100) as u8,
                0,
            )
        }
        MYSQL_TYPE_TIMESTAMP2 => {
            let fsp = m(meta, 0);
            let secs = c.be(4)?;
            let f = frac(c, fsp)?;
            MyValue::Bytes(format!("{secs}.{f:06}").into_bytes())
        }
        MYSQL_TYPE_TIMESTAMP => MyValue::Bytes(c.le(4)?.to_string().into_bytes()),
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = m(meta, 0) | (m(meta, 1) << 8);
            let len = c.le(if max > 255 { 2 } else { 1 })? as usize;
            MyValue::Bytes(c.take(len)?.to_vec())
        }
        MYSQL_TYPE_STRING | MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => {
            let (m0, m1) = (m(meta, 0), m(meta, 1));
            let (real, len) = if m0 & 0x30 != 0x30 { (m0 | 0x30, m1 | (((m0 & 0x30) ^ 0x30) << 4)) } else { (m0, m1) };
            match real {
                0xf7 => MyValue::Int(c.le(len)? as i64),       // ENUM: 1 or 2 bytes
                0xf8 => MyValue::Bytes(c.take(len)?.to_vec()), // SET: bitmask
                _ => {
                    let n = c.le(if len > 255 { 2 } else { 1 })? as usize;
                    MyValue::Bytes(c.take(n)?.to_vec())
                }
            }
        }
        MYSQL_TYPE_BIT => {
            let n = m(meta, 1) + usize::from(m(meta, 0) > 0);
            MyValue::Bytes(c.take(n)?.to_vec())
        }
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR => {
            let len = c.le(m(meta, 0).clamp(1, 4))? as usize;
            MyValue::Bytes(c.take(len)?.to_vec())
        }
        MYSQL_TYPE_JSON => {
            // MySQL's binary JSON.
            let len = c.le(m(meta, 0).clamp(1, 4))? as usize;
            let bytes = c.take(len)?;
            // An empty value is JSON null in MySQL's binlog; anything else is checked first.
            if !bytes.is_empty() {
                super::json::check_binary(bytes)?;
            }
            let parsed =
                mysql_common::binlog::jsonb::Value::deserialize((), &mut ParseBuf(bytes)).map_err(|e| e.to_string())?;
            return Ok(BinlogValue::Jsonb(parsed.into_owned()));
        }
        other => return Err(format!("type {other:?} cannot be decoded")),
    };
    Ok(BinlogValue::Value(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time2(bytes: &[u8], fsp: u8) -> MyValue {
        let mut c = Cursor { b: bytes, p: 0 };
        match value(&mut c, ColumnType::MYSQL_TYPE_TIME2, &[fsp]).unwrap() {
            BinlogValue::Value(v) => v,
            _ => unreachable!(),
        }
    }

    #[test]
    fn time2_negative_fractions() {
        // -00:00:01.5 (fsp 2): int part -2 (0x7ffffe), fraction byte 0x100 - 50.
        assert_eq!(time2(&[0x7f, 0xff, 0xfe, 0xce], 2), MyValue::Time(true, 0, 0, 0, 1, 500_000));
        // 12:00:00.5 (fsp 2): int part 12 << 12 + 0x800000.
        assert_eq!(time2(&[0x80, 0xc0, 0x00, 0x32], 2), MyValue::Time(false, 0, 12, 0, 0, 500_000));
        // -838:59:58.99 (fsp 2), the minimum with that precision.
        let int_part: i64 = -((838 << 12) | (59 << 6) | 59) + 0x80_0000;
        let b = int_part as u32;
        assert_eq!(
            time2(&[(b >> 16) as u8, (b >> 8) as u8, b as u8, 0x9d], 2),
            MyValue::Time(true, 34, 22, 59, 58, 990_000)
        );
    }
}
