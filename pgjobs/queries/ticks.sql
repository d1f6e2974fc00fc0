-- name: runs_statistics_behind_ticks
-- Whether the planner statistics of runs are far behind the ticks this worker has just inserted,
-- and no ANALYZE has refreshed them since its tick round began (another replica's, or
-- autovacuum's). The worker knows how many runs it inserted; the server's own counters
-- (n_live_tup, n_mod_since_analyze) learn of them only when the inserting backends report, up
-- to a second or more later, which is too late: until the next ANALYZE, every worker's cached
-- claim plan was made for the table as it was, and with runs made for an empty table it reads
-- the whole queue several times per claim (seconds of delay for 10,000 ticks).
SELECT (c.reltuples < 0 OR %(inserted)s > greatest(1000, c.reltuples * 0.2))
       AND coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity') < %(since)s
FROM pg_class c
JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = '{schema}.runs'::regclass;
