-- One index for the lines list's carrier filters instead of two
-- (PostgreSQL). Keep in step with migrations/sqlite/0008_lines_carrier_index.sql.
--
-- Every report moves its line's last_seen, which the lines list pages by,
-- so no update of a line is HOT: each one adds an entry to every index of
-- the table, and those entries were the largest part of the server's
-- index work in the pipeline. lines_actual_carrier_seen (actual carrier
-- alone) and lines_carriers_seen (declared and actual carrier) become one
-- index led by the actual carrier: a pair of carriers walks it in the
-- list's order as before; the actual carrier alone is either common,
-- where walking lines_seen finds a page's lines within a few hundred, or
-- rare, where its prefix of this index holds few lines to sort. The
-- declared carrier alone keeps lines_carrier_seen (a rarely declared
-- carrier has no other index to start from).
CREATE INDEX lines_actual_carriers_seen
    ON lines (actual_carrier, declared_carrier, last_seen, line_key);
DROP INDEX lines_actual_carrier_seen;
DROP INDEX lines_carriers_seen;
