-- Named queries of the cluster-wide metrics exporter (`pgjobs metrics`), run on every scrape.
-- Read-only; each reads only the partial indexes of pending runs or one row per job or worker.

-- name: metrics_queues
-- Per queue: its controls (`paused` is NULL for a queue without a row in `queues`: running and
-- unlimited), due and delayed queued runs, running runs, age of the oldest due run, and the live
-- workers that serve it. Every queue a job, a live worker or a row of `queues` names is listed,
-- so an emptied queue reads 0 instead of disappearing. Also `queues list` and the dashboard's.
WITH queued AS (
    SELECT r.queue,
           count(*) FILTER (WHERE r.scheduled_for <= now()) AS due,
           count(*) FILTER (WHERE r.scheduled_for > now()) AS delayed,
           min(r.scheduled_for) FILTER (WHERE r.scheduled_for <= now()) AS oldest_due
    FROM {schema}.runs r
    WHERE r.status = 'queued'
    GROUP BY r.queue
), running AS (
    SELECT r.queue, count(*) AS running
    FROM {schema}.runs r
    WHERE r.status = 'running'
    GROUP BY r.queue
), serving AS (
    SELECT s.queue, array_agg(w.id ORDER BY w.id) AS workers
    FROM {schema}.workers w, unnest(w.queues) s(queue)
    WHERE w.state = 'running' AND w.expires_at > now()
    GROUP BY s.queue
), names AS (
    SELECT queue FROM {schema}.jobs
    UNION SELECT queue FROM serving
    UNION SELECT name FROM {schema}.queues
    UNION SELECT queue FROM queued
    UNION SELECT queue FROM running
)
SELECT n.queue,
       c.paused,
       c.paused_at,
       c.rate_limit,
       coalesce(q.due, 0) AS due,
       coalesce(q.delayed, 0) AS delayed,
       coalesce(r.running, 0) AS running,
       coalesce(extract(epoch FROM now() - q.oldest_due), 0)::double precision AS oldest_age_seconds,
       coalesce(s.workers, ARRAY[]::text[]) AS workers
FROM names n
LEFT JOIN {schema}.queues c ON c.name = n.queue
LEFT JOIN queued q ON q.queue = n.queue
LEFT JOIN running r ON r.queue = n.queue
LEFT JOIN serving s ON s.queue = n.queue
ORDER BY n.queue;

-- name: metrics_jobs
-- Per job: whether it or its queue is paused, whether its last decisive run failed (skipped and
-- cancelled runs decide nothing), when it last succeeded, and how far its next tick is past due
-- (0 unless it is due to tick: a paused, disabled or unscheduled job is never overdue; a job whose
-- queue is paused still ticks).
SELECT j.name,
       j.paused,
       coalesce(q.paused, false) AS queue_paused,
       coalesce(last.status IN ('failed', 'timed_out', 'abandoned'), false) AS last_failed,
       extract(epoch FROM ok.finished_at)::double precision AS last_success_at,
       CASE WHEN j.schedule IS NOT NULL AND j.enabled AND NOT j.paused
                 AND j.next_fire_at < now()
            THEN extract(epoch FROM now() - j.next_fire_at)::double precision
            ELSE 0 END AS overdue_seconds
FROM {schema}.jobs j
LEFT JOIN {schema}.queues q ON q.name = j.queue
LEFT JOIN LATERAL (
    SELECT r.status FROM {schema}.runs r
    WHERE r.job = j.name
      AND r.status IN ('succeeded', 'failed', 'timed_out', 'abandoned')
    ORDER BY r.id DESC
    LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT r.finished_at FROM {schema}.runs r
    WHERE r.job = j.name AND r.status = 'succeeded'
    ORDER BY r.id DESC
    LIMIT 1
) ok ON true
ORDER BY j.name;

-- name: waiting_runs
-- Queued runs counted by queue, job and what they wait for (the run_waits view), optionally of
-- one job; `keys` is how many concurrency keys the group holds, and `detail` is the reason's
-- detail when all the group's runs share it (one bucket, or one concurrency key), else NULL.
-- Also `queues list`, `jobs show` and the dashboard's.
SELECT w.queue, w.job, w.waiting_for, count(*) AS runs,
       count(DISTINCT w.concurrency_key) AS keys,
       CASE WHEN count(DISTINCT w.detail) = 1 THEN min(w.detail) END AS detail
FROM {schema}.run_waits w
WHERE %(job)s::text IS NULL OR w.job = %(job)s::text
GROUP BY w.queue, w.job, w.waiting_for
ORDER BY w.queue, w.job, w.waiting_for;

-- name: metrics_workers
-- Worker rows by state; a `running` worker whose heartbeat expired counts as `dead`.
SELECT CASE WHEN state IN ('running', 'stopping') AND expires_at <= now() THEN 'dead'
            ELSE state END AS state,
       count(*) AS workers
FROM {schema}.workers
GROUP BY 1;

-- name: schedule_states
-- Every schedule (the all_schedules view: each job's own, named `default`, and its further ones),
-- optionally of one job, with what it is doing: `state` is `error` (a worker could not use its
-- cron or timezone; `error` says why, and it ticks no more until they change), `disabled`,
-- `paused` (its own pause), `job paused` or `ticking`, the first that applies. `registered`: a
-- live worker registers its job (without one nothing ticks it). `next_fire_at` only while it
-- ticks. Also `jobs list`, `jobs show`, `check`, `schedules list/show` and the dashboard's.
SELECT a.job, a.name, a.cron, a.timezone, a.origin, a.enabled, a.paused, a.job_paused, a.misfire,
       a.overlap,
       a.payload, a.parameters, a.error,
       CASE WHEN a.error IS NOT NULL THEN 'error'
            WHEN NOT a.enabled THEN 'disabled'
            WHEN a.paused THEN 'paused'
            WHEN a.job_paused THEN 'job paused'
            ELSE 'ticking' END AS state,
       CASE WHEN a.error IS NULL AND a.enabled AND NOT a.paused AND NOT a.job_paused
            THEN a.next_fire_at END AS next_fire_at,
       a.last_tick_at, a.created_at, a.updated_at,
       EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
               JOIN {schema}.workers w ON w.id = wj.worker_id
               WHERE wj.job = a.job AND w.state = 'running' AND w.expires_at > now())
           AS registered
FROM {schema}.all_schedules a
WHERE %(job)s::text IS NULL OR a.job = %(job)s::text
ORDER BY a.job, a.name <> 'default', a.name;
