-- Named queries of the web dashboard (`pgjobs dashboard`). Reads first, then the operator's
-- actions; every action is guarded by the state it expects, like the worker's statements.

-- name: dashboard_summary
-- The strip at the top of every page: the database clock and the cluster at a glance.
SELECT now() AS db_now,
       (SELECT count(*) FROM {schema}.workers
        WHERE state = 'running' AND expires_at > now()) AS workers_alive,
       (SELECT count(*) FROM {schema}.runs
        WHERE status = 'queued' AND scheduled_for <= now()) AS queued_due,
       (SELECT count(*) FROM {schema}.runs WHERE status = 'running') AS running,
       (SELECT count(*) FROM {schema}.runs
        WHERE created_at > now() - interval '24 hours'
          AND status IN ('failed', 'timed_out', 'abandoned')) AS failed_24h,
       (SELECT count(*) FROM {schema}.queues WHERE paused) AS queues_paused,
       -- Schedules a worker refused (a job's own schedule is never in error).
       (SELECT count(*) FROM {schema}.schedules WHERE error IS NOT NULL) AS schedules_in_error;

-- name: dashboard_jobs
-- Every job with its status (the job_status view: its queue, limits and whether its queue is
-- paused) and its last few finished runs, oldest first.
SELECT s.*, j.description, j.tags, j.schedule_source, j.overlap, j.max_attempts,
       recent.outcomes
FROM {schema}.job_status s
JOIN {schema}.jobs j ON j.name = s.name
LEFT JOIN LATERAL (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', x.id, 'status', x.status, 'duration', x.duration_seconds,
               'finished', to_char(x.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"Z"'),
               'message', left(x.message, 200))
           ORDER BY x.id), '[]'::jsonb) AS outcomes
    FROM (
        SELECT r.id, r.status, r.duration_seconds, r.finished_at, r.message
        FROM {schema}.runs r
        WHERE r.job = j.name AND r.status NOT IN ('queued', 'running')
        ORDER BY r.id DESC
        LIMIT %(outcomes)s
    ) x
) recent ON true
ORDER BY s.name;

-- name: dashboard_timeline
-- Runs that started, ended or were skipped since %(since)s (and runs running now), newest first.
SELECT r.id, r.job, r.status, r.trigger, r.attempt, r.scheduled_for, r.started_at,
       r.finished_at, r.duration_seconds, left(r.message, 300) AS message, r.worker_id
FROM {schema}.runs r
WHERE (r.created_at >= %(since)s OR r.status = 'running')
  AND r.status <> 'queued'
  AND coalesce(r.finished_at, now()) >= %(since)s
  AND (%(job)s::text IS NULL OR r.job = %(job)s)
ORDER BY r.id DESC
LIMIT %(limit)s;

-- name: dashboard_runs
-- Recent runs, newest first, optionally of one job and/or in one status; a page of them.
SELECT h.id, h.job, h.trigger, h.status, h.attempt, h.scheduled_for, h.started_at,
       h.finished_at, h.duration_seconds, h.lag_seconds, h.worker_id, h.host,
       left(h.message, 300) AS message, h.error_type
FROM {schema}.run_history h
WHERE (%(job)s::text IS NULL OR h.job = %(job)s)
  AND (%(status)s::text IS NULL OR h.status = %(status)s)
ORDER BY h.id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: dashboard_run
-- One run with everything it recorded, its worker's host and pid, and the retries it led to.
SELECT r.*, w.host, w.pid,
       extract(epoch FROM r.started_at - r.scheduled_for)::double precision AS lag_seconds,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', x.id, 'status', x.status) ORDER BY x.id)
                 FROM {schema}.runs x
                 WHERE x.job = r.job AND x.id > r.id AND x.retry_of = r.id), '[]'::jsonb)
           AS retries
FROM {schema}.runs r
LEFT JOIN {schema}.workers w ON w.id = r.worker_id
WHERE r.id = %(id)s;

-- name: dashboard_workers
-- Worker rows, live ones first, with the runs each is executing now.
SELECT w.*, (w.state = 'running' AND w.expires_at > now()) AS alive,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', r.id, 'job', r.job) ORDER BY r.id)
                 FROM {schema}.runs r
                 WHERE r.status = 'running' AND r.worker_id = w.id), '[]'::jsonb) AS running
FROM {schema}.workers w
ORDER BY (w.state = 'running' AND w.expires_at > now()) DESC, w.heartbeat_at DESC
LIMIT %(limit)s;

-- name: dashboard_paused_queues
-- The paused queues, for the notice on the jobs page (the partial index of paused queues).
SELECT q.name, q.paused_at,
       (SELECT count(*) FROM {schema}.runs r
        WHERE r.queue = q.name AND r.status = 'queued') AS queued
FROM {schema}.queues q
WHERE q.paused
ORDER BY q.name;

-- name: dashboard_run_now
-- Queue a manual run of a job for the workers; nothing if the job does not exist.
INSERT INTO {schema}.runs (job, trigger, scheduled_for, max_attempts, priority, queue)
SELECT j.name, 'manual', now(), j.max_attempts, j.priority, j.queue
FROM {schema}.jobs j
WHERE j.name = %(job)s
RETURNING id;

-- name: dashboard_set_paused
-- Pause or resume a job (the runtime switch the CLI's `jobs pause` also sets).
UPDATE {schema}.jobs
SET paused = %(paused)s, paused_at = CASE WHEN %(paused)s THEN now() END, updated_at = now()
WHERE name = %(job)s
RETURNING name;

-- name: dashboard_retry_run
-- Queue a new attempt of a run that ended without succeeding, unless a retry of it is pending:
-- the same work, concurrency key and trace.
INSERT INTO {schema}.runs
    (job, trigger, scheduled_for, attempt, max_attempts, retry_of, payload, parameters, priority,
     queue, concurrency_key, trace_context)
SELECT r.job, 'retry', now(), r.attempt + 1, greatest(r.max_attempts, r.attempt + 1), r.id,
       r.payload, r.parameters, r.priority, r.queue, r.concurrency_key, r.trace_context
FROM {schema}.runs r
WHERE r.id = %(id)s
  AND r.status IN ('failed', 'timed_out', 'cancelled', 'abandoned', 'skipped')
  AND NOT EXISTS (SELECT 1 FROM {schema}.runs x
                  WHERE x.job = r.job AND x.id > r.id AND x.retry_of = r.id
                    AND x.status IN ('queued', 'running'))
RETURNING id;

-- name: dashboard_cancel_run
-- A queued or blocked run is cancelled at once, and the runs that wait for it in turn (but for
-- those that run after any outcome, which it releases: release_dependants); a running one is
-- asked to stop (its worker sees the request at its next heartbeat). Returns the run's status
-- after the statement.
WITH changed AS (
    UPDATE {schema}.runs
    SET status = CASE WHEN status IN ('queued', 'blocked') THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status IN ('queued', 'blocked') THEN now() ELSE finished_at END,
        message = CASE WHEN status IN ('queued', 'blocked') THEN 'cancelled by operator'
                       ELSE message END,
        cancel_requested_at = now()
    WHERE id = %(id)s AND status IN ('queued', 'blocked', 'running')
    RETURNING id, status
)
SELECT c.status,
       CASE WHEN c.status = 'cancelled'
            THEN {schema}.release_dependants(ARRAY[c.id], ARRAY['cancelled']) END
           AS released
FROM changed c;

