-- The schema and rows of the Debezium conformance comparison (MySQL): every type of the
-- README's type table with its edge values. The rows inserted here are read by the initial
-- snapshot; mysql_changes.sql then streams the changes. Run in a fresh database.
SET NAMES utf8mb4;
SET SESSION sql_mode = '';
SET SESSION time_zone = '+00:00';

CREATE TABLE numbers (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT,
  miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  de DECIMAL(20, 6), f FLOAT, d DOUBLE, b1 BIT(1), b10 BIT(10)
);
CREATE TABLE texts (
  id INT PRIMARY KEY,
  c CHAR(5), vc VARCHAR(20), t TEXT, bn BINARY(4), vb VARBINARY(8), bl BLOB,
  e ENUM('sad', 'ok', 'happy'), s SET('a', 'b', 'c'), j JSON
) DEFAULT CHARSET = utf8mb4;
CREATE TABLE times (
  id INT PRIMARY KEY,
  d DATE, t0 TIME, t3 TIME(3), t6 TIME(6), dt0 DATETIME, dt3 DATETIME(3), dt6 DATETIME(6),
  ts0 TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, ts6 TIMESTAMP(6) NULL, y YEAR
);
CREATE TABLE pairs (
  a INT, b VARCHAR(10), v VARCHAR(10),
  PRIMARY KEY (a, b)
);
CREATE TABLE zz_end (id INT PRIMARY KEY);

INSERT INTO numbers VALUES
  (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'0', b'0'),
  (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,
     18446744073709551615, 99999999999999.999999, 3.4e38, 1.7976931348623157e308, b'1', b'1111111111'),
  (3, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
     -99999999999999.999999, -1.5, -2.2250738585072014e-308, b'0', b'1000000001'),
  (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

INSERT INTO texts VALUES
  (1, 'ab', 'héllo ✓ 🎉', 'a text', x'01020000', x'dead', x'beef', 'happy', 'a,c',
     '{"b": 1, "a": [1, 2], "s": "x y"}'),
  (2, '', '', '', x'00000000', x'', x'', 'sad', '', '[]'),
  (3, 'abcde', 'quote " \\ bs', NULL, NULL, NULL, NULL, NULL, NULL, '{"n": 1.5, "t": true, "z": null}');

INSERT INTO times VALUES
  (1, '2024-02-29', '13:45:30', '13:45:30.123', '-838:59:59.000000', '2024-02-29 13:45:30',
     '2024-02-29 13:45:30.123', '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30',
     '2024-02-29 13:45:30.123', '2024-02-29 13:45:30.123456', 2024),
  (2, '1970-01-01', '00:00:00', '00:00:00', '838:59:59.000000', '1970-01-01 00:00:00',
     '1000-01-01 00:00:00', '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01',
     '2038-01-19 03:14:07.999', '2000-01-01 00:00:00', 1901),
  (3, '0000-00-00', '-12:34:56', '-00:00:00.5', '00:00:00.000001', '0000-00-00 00:00:00',
     NULL, NULL, '2001-01-01 00:00:00', '2001-01-01 00:00:00.5', '2001-01-01 00:00:00.1', 0);

INSERT INTO pairs VALUES (1, 'x', 'one'), (1, 'y', 'two'), (2, 'x', 'three');
