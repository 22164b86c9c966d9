-- The pipeline's writes (SQLite). Keep in step with
-- migrations/postgres/0005_pipeline_writes.sql, which chooses lz4 for the
-- large verdict documents; SQLite stores them as they are, so there is
-- nothing to change here. The file keeps the two migration lists in step.
SELECT 1;
