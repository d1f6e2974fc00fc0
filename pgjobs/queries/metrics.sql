-- Named queries of the cluster-wide metrics exporter (`pgjobs metrics`), run on every scrape.
-- Read-only; each reads only the partial indexes of pending runs or one row per job or worker.

-- name: metrics_queues
-- Per queue: due and delayed queued runs, running runs, age of the oldest due run. Every queue a
-- job or a live worker names is listed, so an emptied queue reads 0 instead of disappearing.
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
), names AS (
    SELECT queue FROM {schema}.jobs
    UNION SELECT unnest(queues) FROM {schema}.workers WHERE state = 'running' AND expires_at > now()
    UNION SELECT queue FROM queued
    UNION SELECT queue FROM running
)
SELECT n.queue,
       coalesce(q.due, 0) AS due,
       coalesce(q.delayed, 0) AS delayed,
       coalesce(r.running, 0) AS running,
       coalesce(extract(epoch FROM now() - q.oldest_due), 0)::double precision AS oldest_age_seconds
FROM names n
LEFT JOIN queued q ON q.queue = n.queue
LEFT JOIN running r ON r.queue = n.queue
ORDER BY n.queue;

-- name: metrics_jobs
-- Per job: whether its last decisive run failed (skipped and cancelled runs decide nothing), when
-- it last succeeded, and how far its next tick is past due (0 unless it is due to tick: a paused,
-- disabled or unscheduled job is never overdue).
SELECT j.name,
       j.paused,
       coalesce(last.status IN ('failed', 'timed_out', 'abandoned'), false) AS last_failed,
       extract(epoch FROM ok.finished_at)::double precision AS last_success_at,
       CASE WHEN j.schedule IS NOT NULL AND j.enabled AND NOT j.paused
                 AND j.next_fire_at < now()
            THEN extract(epoch FROM now() - j.next_fire_at)::double precision
            ELSE 0 END AS overdue_seconds
FROM {schema}.jobs j
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

-- name: metrics_workers
-- Worker rows by state; a `running` worker whose heartbeat expired counts as `dead`.
SELECT CASE WHEN state IN ('running', 'stopping') AND expires_at <= now() THEN 'dead'
            ELSE state END AS state,
       count(*) AS workers
FROM {schema}.workers
GROUP BY 1;
