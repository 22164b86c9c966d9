-- The pipeline's writes (PostgreSQL): cheaper compression for the large
-- documents a batch writes. Keep in step with
-- migrations/sqlite/0005_pipeline_writes.sql.

-- A verdict's evidence (~5 KB of JSON) and reasons (~2.5 KB) are compressed
-- when stored. The server default, pglz, was the largest single cost of
-- applying a batch (a quarter of the backend's CPU); lz4 compresses them at
-- a fraction of that. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE verdicts ALTER COLUMN evidence SET COMPRESSION lz4;
    ALTER TABLE verdicts ALTER COLUMN reasons SET COMPRESSION lz4;
    ALTER TABLE quarantine ALTER COLUMN reasons SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 is not available (%); verdict documents use pglz', SQLERRM;
END
$$;
