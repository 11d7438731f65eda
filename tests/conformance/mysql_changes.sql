-- The streamed changes of the MySQL conformance comparison, after the snapshot of mysql.sql.
SET NAMES utf8mb4;
SET SESSION sql_mode = '';
SET SESSION time_zone = '+00:00';
INSERT INTO numbers VALUES (5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1.5, 1.25, 2.5, b'1', b'11');
UPDATE numbers SET i = 42, de = -12.34 WHERE id = 1;
DELETE FROM numbers WHERE id = 3;
BEGIN;
INSERT INTO texts VALUES (4, 'c', 'in a transaction', 't', x'ff', x'00', x'01', 'ok', 'b', '{"k": "v"}');
UPDATE texts SET vc = 'changed', j = '{"x": [true, false]}' WHERE id = 1;
DELETE FROM texts WHERE id = 2;
COMMIT;
INSERT INTO times VALUES
  (4, '2000-01-01', '12:00:00', '12:00:00.5', '12:00:00.000001', '2000-01-01 12:00:00',
     '2000-01-01 12:00:00.5', '2000-01-01 12:00:00.000001', '2000-01-01 12:00:00',
     '2000-01-01 12:00:00.5', '2000-01-01 12:00:00.000001', 2000),
  (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2001-01-01 00:00:00', '2001-01-01 00:00:00',
     '2001-01-01 00:00:00', NULL);
UPDATE pairs SET v = 'uno' WHERE a = 1 AND b = 'x';
UPDATE pairs SET b = 'z' WHERE a = 1 AND b = 'y';
DELETE FROM pairs WHERE a = 2 AND b = 'x';
UPDATE numbers SET id = 50 WHERE id = 5;
TRUNCATE TABLE pairs;
INSERT INTO zz_end VALUES (1);
