-- The streamed changes of the PostgreSQL conformance comparison, after the snapshot of
-- postgres.sql. Each statement is its own transaction unless grouped.
INSERT INTO numbers VALUES (6, 1, 2, 3, 4, 1.25, 2.5, 1.23456, 7, true);
UPDATE numbers SET i4 = 42, n = -12.34 WHERE id = 1;
DELETE FROM numbers WHERE id = 3;
BEGIN;
INSERT INTO texts VALUES (4, 'in a transaction', 'v', 'c', 'n', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12',
  '{"k": "v"}', '{"k": "v"}', '\x0102', 'ok');
UPDATE texts SET t = 'changed' WHERE id = 1;
DELETE FROM texts WHERE id = 2;
COMMIT;
INSERT INTO times VALUES
  (6, '2000-01-01', '12:00:00', '12:00:00.5', '12:00:00.000001', '12:00:00.25+01',
     '2000-01-01 12:00:00.5', '2000-01-01 12:00:00.000001', '2000-01-01 12:00:00.25+00',
     '2000-01-01 12:00:00+00', '1 mon');
UPDATE arrays SET ia = '{7}', m2 = '{{5}}' WHERE id = 1;
UPDATE pairs SET v = 'uno' WHERE a = 1 AND b = 'x';
UPDATE pairs SET b = 'z' WHERE a = 1 AND b = 'y';
DELETE FROM pairs WHERE a = 2 AND b = 'x';
UPDATE numbers SET id = 60 WHERE id = 6;
UPDATE toasted SET n = 2 WHERE id = 1;
TRUNCATE arrays;
INSERT INTO zz_end VALUES (1);
