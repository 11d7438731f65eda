#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark::fuzz::binlog_rows(data));
