-- The schema and rows of the Debezium conformance comparison (PostgreSQL): every type of the
-- README's type table with its edge values. The rows inserted here are read by the initial
-- snapshot; postgres_changes.sql then streams the changes. Run in a fresh database.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');

CREATE TABLE numbers (
  id integer PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint, o oid,
  f4 real, f8 double precision,
  n numeric(20, 5), nu numeric, b boolean
);
CREATE TABLE texts (
  id integer PRIMARY KEY,
  t text, vc varchar(10), c char(5), nm name, u uuid, j json, jb jsonb, by bytea, e mood
);
CREATE TABLE times (
  id integer PRIMARY KEY,
  d date, t0 time(0), t3 time(3), t6 time, tz timetz,
  ts3 timestamp(3), ts6 timestamp, tstz timestamptz, tstz3 timestamptz(3), iv interval
);
CREATE TABLE arrays (
  id integer PRIMARY KEY,
  ia integer[], ta text[], m2 integer[][], p point, inet_ inet
);
CREATE TABLE pairs (
  a integer, b text, v text,
  PRIMARY KEY (a, b)
);
CREATE TABLE toasted (
  id integer PRIMARY KEY,
  big text, n integer
);
ALTER TABLE toasted ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE single (id integer PRIMARY KEY, v text);
CREATE TABLE zz_end (id integer PRIMARY KEY);

INSERT INTO numbers VALUES
  (1, 0, 0, 0, 0, 0, 0, 0, 0, false),
  (2, 32767, 2147483647, 9223372036854775807, 4294967295, 3.4e38, 1.7976931348623157e308,
     999999999999999.99999, 123456789012345678901234567890.123456789, true),
  (3, -32768, -2147483648, -9223372036854775808, 1, -1.5, -2.2250738585072014e-308,
     -0.00001, -0.5, NULL),
  (4, NULL, NULL, NULL, NULL, 'NaN', 'Infinity', 'NaN', 'NaN', NULL),
  (5, NULL, NULL, NULL, NULL, '-Infinity', '-Infinity', 12.5, 100, NULL);

INSERT INTO texts VALUES
  (1, 'héllo ✓ 🎉', 'abc', 'ab', 'a_name', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2]}', '\xdeadbeef', 'happy'),
  (2, '', '', '', '', NULL, '[]', '{}', '\x', 'sad'),
  (3, 'quote " and \ backslash', 'x', 'abcde', 'n', NULL, 'null', '"s"', '\x00', NULL);

INSERT INTO times VALUES
  (1, '2024-02-29', '13:45:30', '13:45:30.123', '13:45:30.123456', '11:45:30+02',
     '2024-02-29 13:45:30.123', '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30.123456+00',
     '2024-02-29 13:45:30.5+00', '1 year 2 mons 3 days 04:05:06.5'),
  (2, '1970-01-01', '00:00:00', '00:00:00', '00:00:00', '00:00:00+00',
     '1970-01-01 00:00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00',
     '1970-01-01 00:00:00+00', '0'),
  (3, '0044-03-15 BC', '23:59:59', '23:59:59.999', '23:59:59.999999', '11:45:30.5-05:30',
     '1900-01-01 00:00:00.001', '0001-01-01 00:00:00', '1969-12-31 23:59:59.999999+00',
     '2262-04-11 23:47:16.854+00', '-3 days -04:05:06.000001'),
  (4, 'infinity', NULL, NULL, NULL, NULL, 'infinity', 'infinity', 'infinity', 'infinity', '178000000 years'),
  (5, '-infinity', NULL, NULL, NULL, '24:00:00+00', '-infinity', '-infinity', '-infinity', '-infinity',
     '-178000000 years'),
  (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2001-01-01 00:00:00+00', '2001-01-01 00:00:00.1+00', '2 hours');

INSERT INTO arrays VALUES
  (1, '{1,NULL,3}', '{"a","b c",NULL}', '{{1,2},{3,4}}', '(1.5,2)', '192.168.0.1/24'),
  (2, '{}', '{}', NULL, NULL, NULL);

INSERT INTO single VALUES (1, 'only row');

INSERT INTO pairs VALUES (1, 'x', 'one'), (1, 'y', 'two'), (2, 'x', 'three');

INSERT INTO toasted SELECT 1, string_agg(md5(i::text), ''), 1 FROM generate_series(1, 400) i;
