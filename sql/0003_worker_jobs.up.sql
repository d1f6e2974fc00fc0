-- pgjobs schema, revision 0003: which jobs each worker's code registers, as rows.
--
-- A worker claims runs only of the jobs its code has, and ticks only the schedules its code has
-- (during a rolling deploy the code that registered a schedule ticks it). Registering them once
-- as rows, instead of sending the names with every claim, keeps the claim statement small and
-- its plan an ordered walk of the queued-runs index however many jobs a worker has.

CREATE TABLE {schema}.worker_jobs (
    worker_id  text NOT NULL REFERENCES {schema}.workers (id) ON DELETE CASCADE,
    job        text NOT NULL,
    schedule   text,
    timezone   text NOT NULL DEFAULT 'UTC',
    CONSTRAINT worker_jobs_pkey PRIMARY KEY (worker_id, job)
);

CREATE INDEX worker_jobs_job_idx ON {schema}.worker_jobs (job);

-- When the next delayed run (a retry in backoff, a run_at in the future) is due: the first entry
-- after now(), without reading the queue. Only runs created to wait are in it, so it stays small
-- and claiming (which reads runs_claim_idx in order) has no use for it.
CREATE INDEX runs_delayed_idx ON {schema}.runs (scheduled_for)
    WHERE status = 'queued' AND scheduled_for > created_at;

INSERT INTO {schema}.worker_jobs (worker_id, job)
SELECT w.id, name FROM {schema}.workers w, unnest(w.jobs) AS name;

-- Jobs for people: schedule, next fire, last outcome, running now, 24 h statistics.
CREATE OR REPLACE VIEW {schema}.job_status AS
SELECT j.name,
       j.extension,
       j.schedule,
       j.timezone,
       j.enabled,
       j.paused,
       EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
               JOIN {schema}.workers w ON w.id = wj.worker_id
               WHERE wj.job = j.name AND w.state = 'running' AND w.expires_at > now()) AS registered,
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

ALTER TABLE {schema}.workers DROP COLUMN jobs;
