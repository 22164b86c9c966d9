-- Text keys in the "C" collation: PostgreSQL only. Keep in step with
-- migrations/postgres/0007_text_keys_c.sql, which moves PostgreSQL's text
-- keys to byte order. SQLite compares text bytewise (BINARY) unless a
-- column says otherwise, so its keys already compare that way; this
-- migration keeps the two lists of migrations numbered alike.
SELECT 1;
