-- Undo revision 0001: drop every object it created.
DROP VIEW IF EXISTS {schema}.job_status;
DROP VIEW IF EXISTS {schema}.run_history;
DROP TABLE IF EXISTS {schema}.workers;
DROP TABLE IF EXISTS {schema}.run_locks;
DROP TABLE IF EXISTS {schema}.runs;
DROP FUNCTION IF EXISTS {schema}.notify_runs_inserted();
DROP TABLE IF EXISTS {schema}.jobs;
