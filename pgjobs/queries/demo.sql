-- Named queries of `pgjobs demo`. `{schema}` is the quoted pgjobs schema; parameters are bound.

-- name: demo_last_run_id
-- The runs of this demo are those with a greater id (an embedded database is reused).
SELECT coalesce(max(id), 0) FROM {schema}.runs;

-- name: demo_ready
-- How many of the demo's workers run, and whether the job to enqueue is registered.
SELECT (SELECT count(*) FROM {schema}.workers
        WHERE id = ANY (%(workers)s) AND state = 'running') AS running_workers,
       EXISTS (SELECT 1 FROM {schema}.jobs WHERE name = %(job)s) AS job_registered;

-- name: demo_recent_runs
-- The newest runs of the demo, newest first, as the live table shows them.
SELECT id, job, trigger, status, worker_id, scheduled_for, duration_seconds,
       CASE WHEN status = 'running'
            THEN extract(epoch FROM clock_timestamp() - started_at)::double precision
       END AS running_seconds,
       coalesce(error_message, message) AS message
FROM {schema}.run_history
WHERE id > %(after_id)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: demo_run_counts
-- How many runs of the demo are in each status.
SELECT status, count(*) FROM {schema}.runs WHERE id > %(after_id)s GROUP BY status;

