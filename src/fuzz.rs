//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), and for the unit tests that keep
//! every input they found: each takes arbitrary bytes, runs them through a decoder that faces
//! bytes from outside, and must return (an error is fine) without panicking, hanging or
//! allocating without bound.

use bytes::Bytes;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{FormatDescriptionEvent, TableMapEvent};
use mysql_common::binlog::{BinlogCtx, BinlogEvent};
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

use crate::metrics::Metrics;
use crate::sources::mysql::{json, rows, schema};
use crate::sources::postgres::pgoutput;

/// A pgoutput message, as the replication stream hands it over.
pub fn pgoutput(data: &[u8]) {
    let _ = pgoutput::decode(Bytes::copy_from_slice(data));
}

/// MySQL's binary JSON, as a JSON column of a binlog row carries it, to text.
pub fn mysql_json(data: &[u8]) {
    if json::check_binary(data).is_err() {
        return;
    }
    if let Ok(v) = mysql_common::binlog::jsonb::Value::deserialize((), &mut ParseBuf(data)) {
        if let Ok(dom) = v.parse() {
            let _ = json::to_text(&dom);
        }
    }
}

/// A binlog table map (its body: the first two bytes give its length) and a rows event's row
/// images against it: the schema built from the map, every image decoded and converted.
pub fn binlog_rows(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (map, images) = rest.split_at(len);
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let ctx = BinlogCtx::new(map.len(), &fde, TableMapEvent::EVENT_TYPE as u8);
    let Ok(tme) = TableMapEvent::deserialize(ctx, &mut ParseBuf(map)) else { return };
    let metrics = Metrics::new();
    let Ok(table) = schema::from_table_map(&tme, &[], "fuzz", &metrics) else { return };
    let cols: Vec<usize> = (0..table.columns.len()).collect();
    let Ok(pairs) = rows::decode(images, &tme, Some(&cols), Some(&cols)) else { return };
    for (before, after) in pairs {
        for image in before.into_iter().chain(after) {
            for (col, v) in image {
                if let Some(c) = table.columns.get(col) {
                    let _ = schema::convert(&c.kind, v, schema::Origin::Binlog);
                }
            }
        }
    }
}

/// A connector file: every mistake reported, nothing panics.
pub fn connector_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse_connector(std::path::Path::new("fuzz.toml"), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input a fuzz target found, kept in tests/fixtures/fuzz.
    fn found(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A table map whose SET values list claims 2^63 values: mysql_common reserved room for them
    /// (capacity overflow, or an allocation that aborts); the check refuses the map first.
    #[test]
    fn a_table_map_with_an_impossible_value_count_is_refused() {
        let data = found("binlog_rows-set-count");
        binlog_rows(&data);
        let (len, rest) = data.split_first_chunk::<2>().unwrap();
        let map = &rest[..usize::from(u16::from_le_bytes(*len)).min(rest.len())];
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let ctx = BinlogCtx::new(map.len(), &fde, TableMapEvent::EVENT_TYPE as u8);
        let tme = TableMapEvent::deserialize(ctx, &mut ParseBuf(map)).unwrap();
        assert_eq!(schema::check_optional_metadata(&tme), Err("a malformed table map".to_string()));
    }

    /// A binary JSON decimal whose scale exceeds its precision: mysql_common computed a negative
    /// size and asked for 8 EB.
    #[test]
    fn a_binary_json_decimal_with_a_bad_scale_is_refused() {
        let data = found("mysql_json-decimal-scale");
        mysql_json(&data);
        assert!(json::check_binary(&data).unwrap_err().contains("decimal"));
        // A valid one passes and parses: DECIMAL(5,2) 123.45 as an opaque value (type, length,
        // precision, scale, the packed digits).
        let ok = [0x0f, 246, 5, 5, 2, 0x80, 0x7b, 0x2d];
        json::check_binary(&ok).unwrap();
        let v = mysql_common::binlog::jsonb::Value::deserialize((), &mut ParseBuf(&ok)).unwrap();
        assert_eq!(json::to_text(&v.parse().unwrap()), "123.45");
    }

    /// Nesting deeper than MySQL allows, and values sharing storage, are refused before a parser
    /// recurses or walks exponentially.
    #[test]
    fn deep_or_shared_binary_json_is_refused() {
        // A small array holding one value: an array... 200 levels deep.
        let mut doc = vec![0x04, 0x00]; // literal null, as the innermost value (type, then value)
        for _ in 0..200 {
            let inner = doc.clone();
            let mut arr = vec![0x02];
            let size = 4 + 3 + inner.len() - 1;
            arr.extend((1u16).to_le_bytes());
            arr.extend((size as u16).to_le_bytes());
            arr.push(inner[0]);
            arr.extend((7u16).to_le_bytes());
            arr.extend(&inner[1..]);
            doc = arr;
        }
        assert!(json::check_binary(&doc).unwrap_err().contains("deeper"));
        // Two entries pointing at the same element, level upon level (innermost an int64, which
        // is stored, not inlined in its entry).
        let mut body = vec![0x09, 1, 0, 0, 0, 0, 0, 0, 0];
        for _ in 0..40 {
            let inner = body.clone();
            let mut arr = vec![0x02];
            let size = 4 + 6 + inner.len() - 1;
            arr.extend((2u16).to_le_bytes());
            arr.extend((size as u16).to_le_bytes());
            for _ in 0..2 {
                arr.push(inner[0]);
                arr.extend((10u16).to_le_bytes());
            }
            arr.extend(&inner[1..]);
            body = arr;
        }
        assert!(json::check_binary(&body).unwrap_err().contains("share storage"));
    }

    /// A connector file with a duration of 1e300 seconds: Duration::from_secs_f64 panicked.
    #[test]
    fn a_duration_too_long_to_hold_is_a_configuration_error() {
        connector_file(&found("connector_file-huge-duration"));
        let err = crate::settings::reader::parse_duration("2333333333333333333333333333333333333333333333333334h")
            .unwrap_err();
        assert!(err.contains("is not a duration"), "{err}");
        assert!(crate::settings::reader::parse_duration("99999999999999999999999d").is_err());
    }

    /// Seeded random bytes through every entry point: a cheap stand-in for the fuzz runs in
    /// every test run (the inputs the fuzzers found are kept as named tests below).
    #[test]
    fn random_bytes_never_panic_a_decoder() {
        let mut rng = fastrand::Rng::with_seed(14);
        for _ in 0..20_000 {
            let len = rng.usize(0..256);
            let mut data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Steer some inputs toward the interesting message types and shapes.
            if let Some(first) = data.first_mut() {
                if rng.bool() {
                    *first = *rng.choice(b"BCIUDRTYOM").unwrap();
                }
            }
            pgoutput(&data);
            mysql_json(&data);
            binlog_rows(&data);
            connector_file(&data);
        }
    }
}
