-- The reader's contract as a macro, used by the other queries: a table's rows of published snapshots only
-- (manifests/snapshot_date=D/_SUCCESS exists). Set the output root first: SET VARIABLE output = '/path/to/output';
CREATE OR REPLACE MACRO published_snapshots() AS TABLE
    SELECT DISTINCT CAST(regexp_extract(file, 'snapshot_date=([0-9]{4}-[0-9]{2}-[0-9]{2})', 1) AS DATE) AS snapshot_date
    FROM glob(getvariable('output') || '/manifests/snapshot_date=*/_SUCCESS');
CREATE OR REPLACE MACRO published(tbl) AS TABLE
    SELECT t.*
    FROM read_parquet(getvariable('output') || '/' || tbl || '/snapshot_date=*/*.parquet', hive_partitioning = true) AS t
    WHERE t.snapshot_date IN (SELECT snapshot_date FROM published_snapshots());
