-- Undo revision 0003: the registered jobs go back into workers.jobs.

ALTER TABLE {schema}.workers ADD COLUMN jobs text[] NOT NULL DEFAULT ARRAY[]::text[];

UPDATE {schema}.workers w
SET jobs = ARRAY(SELECT wj.job FROM {schema}.worker_jobs wj WHERE wj.worker_id = w.id ORDER BY wj.job);

-- Jobs for people: schedule, next fire, last outcome, running now, 24 h statistics.
CREATE OR REPLACE VIEW {schema}.job_status AS
SELECT j.name,
       j.extension,
       j.schedule,
       j.timezone,
       j.enabled,
       j.paused,
       EXISTS (SELECT 1 FROM {schema}.workers w
               WHERE w.state = 'running' AND w.expires_at > now() AND j.name = ANY (w.jobs)) AS registered,
       CASE WHEN j.schedule IS NOT NULL AND j.enabled AND NOT j.paused THEN j.next_fire_at END AS next_fire_at,
       last.id AS last_run_id,
       last.status AS last_status,
       last.started_at AS last_started_at,
       last.finished_at AS last_finished_at,
       last.duration_seconds AS last_duration_seconds,
       last.message AS last_message,
       (SELECT count(*) FROM {schema}.runs r WHERE r.job = j.name AND r.status = 'running') AS running_now,
       (SELECT count(*) FROM {schema}.runs r WHERE r.job = j.name AND r.status = 'queued') AS queued_now,
       stats.succeeded_24h,
       stats.failed_24h,
       stats.skipped_24h,
       stats.p50_seconds_24h,
       stats.p95_seconds_24h
FROM {schema}.jobs j
LEFT JOIN LATERAL (
    SELECT r.id, r.status, r.started_at, r.finished_at, r.duration_seconds, r.message
    FROM {schema}.runs r
    WHERE r.job = j.name AND r.status NOT IN ('queued', 'running')
    ORDER BY r.id DESC
    LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded_24h,
           count(*) FILTER (WHERE r.status IN ('failed', 'timed_out', 'abandoned')) AS failed_24h,
           count(*) FILTER (WHERE r.status = 'skipped') AS skipped_24h,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_seconds) AS p50_seconds_24h,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_seconds) AS p95_seconds_24h
    FROM {schema}.runs r
    WHERE r.job = j.name AND r.finished_at > now() - interval '24 hours'
) stats ON true;

DROP TABLE {schema}.worker_jobs;

DROP INDEX {schema}.runs_delayed_idx;
