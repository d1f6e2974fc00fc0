DROP VIEW {schema}.run_waits;
-- Jobs for people: schedule, next fire, last outcome, running now, 24 h statistics.
DROP VIEW {schema}.job_status;
CREATE VIEW {schema}.job_status AS
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

DROP TRIGGER runs_notify_cancel ON {schema}.runs;
DROP TRIGGER queues_notify_paused ON {schema}.queues;
DROP TRIGGER jobs_notify_paused ON {schema}.jobs;
DROP FUNCTION {schema}.notify_control();
DROP FUNCTION {schema}.claim_limited(bigint[], text, double precision);
DROP FUNCTION {schema}.rate_bucket_level({schema}.rate_buckets);
DROP TABLE {schema}.rate_buckets;
DROP TABLE {schema}.queues;
DROP INDEX {schema}.run_locks_run_id_idx;
-- Only the overlap locks (slot 1 of the job-wide key) fit the old key.
DELETE FROM {schema}.run_locks WHERE lock_key <> '' OR slot <> 1;
ALTER TABLE {schema}.run_locks
    DROP CONSTRAINT run_locks_pkey,
    DROP COLUMN slot,
    DROP COLUMN lock_key,
    ADD CONSTRAINT run_locks_pkey PRIMARY KEY (job);
ALTER TABLE {schema}.runs DROP COLUMN concurrency_key;
DROP INDEX {schema}.jobs_paused_idx;
ALTER TABLE {schema}.jobs
    DROP COLUMN rate_limit,
    DROP COLUMN concurrency_key,
    DROP COLUMN max_concurrency;
