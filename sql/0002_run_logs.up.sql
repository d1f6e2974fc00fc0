-- pgjobs schema, revision 0002: the last lines each run logged, kept with the run.
--
-- The worker captures what a run logs through ctx.log (bounded to its last 200 lines and 64 KB)
-- and stores it with the run's outcome, so "why did it fail" is answered with
-- `SELECT logs FROM pgjobs.runs WHERE id = ...` or `pgjobs runs show ID`.
-- TOAST keeps the text out of the heap pages the claim and reap statements read.

ALTER TABLE {schema}.runs ADD COLUMN logs text;

COMMENT ON COLUMN {schema}.runs.logs IS
    'Last lines the run logged through ctx.log (at most 200 lines / 64 KB), oldest first';
