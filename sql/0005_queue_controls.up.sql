-- pgjobs schema, revision 0005: queue controls. Pause that holds every run of a job or a queue,
-- concurrency limits across all workers (per job, optionally per key), token-bucket rate limits
-- per job and per queue, and a view that says why each queued run waits.

-- What limits a job, as its code or the profile declares it (shown by `jobs show`):
-- max_concurrency runs at once (per concurrency key when one is set), rate_limit runs per period.
ALTER TABLE {schema}.jobs
    ADD COLUMN max_concurrency integer
        CONSTRAINT jobs_max_concurrency_check CHECK (max_concurrency >= 1),
    ADD COLUMN concurrency_key text,
    ADD COLUMN rate_limit text;

-- A held job is found by the claim in one probe of a (usually empty) index.
CREATE INDEX jobs_paused_idx ON {schema}.jobs (name) WHERE paused;

-- The value that groups a run for its job's concurrency limit (a tenant, a customer, ...).
ALTER TABLE {schema}.runs ADD COLUMN concurrency_key text;

-- Queued ticks, claimed ahead of enqueued work so that a burst of bulk work does not delay
-- schedules. Only queued ticks are in it: enqueued runs never touch it.
CREATE INDEX runs_tick_claim_idx ON {schema}.runs (priority, scheduled_for, id)
    WHERE status = 'queued' AND trigger = 'schedule';

-- Run locks become slots: a limited job (overlap `skip`, or `max_concurrency`) has `limit` slots
-- per concurrency key, numbered from 1; a run holds one while it runs. The primary key makes a
-- slot held once, whatever the number of workers claiming at the same instant.
ALTER TABLE {schema}.run_locks
    ADD COLUMN lock_key text NOT NULL DEFAULT '',
    ADD COLUMN slot integer NOT NULL DEFAULT 1,
    DROP CONSTRAINT run_locks_pkey,
    ADD CONSTRAINT run_locks_pkey PRIMARY KEY (job, lock_key, slot);
CREATE INDEX run_locks_run_id_idx ON {schema}.run_locks (run_id);

-- Queues, as far as they are controlled: a queue without a row is running and unlimited.
CREATE TABLE {schema}.queues (
    name        text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    paused_at   timestamptz,
    rate_limit  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queues_paused_idx ON {schema}.queues (name) WHERE paused;

-- Token buckets of the rate limits: `rate` tokens per second up to `burst`; a claim takes a token
-- per run it starts. `tokens` is the count at `updated_at`; `granted` is what the last claim took.
CREATE TABLE {schema}.rate_buckets (
    scope       text NOT NULL CONSTRAINT rate_buckets_scope_check CHECK (scope IN ('job', 'queue')),
    name        text NOT NULL,
    rate        double precision NOT NULL CONSTRAINT rate_buckets_rate_check CHECK (rate > 0),
    burst       double precision NOT NULL CONSTRAINT rate_buckets_burst_check CHECK (burst >= 1),
    tokens      double precision NOT NULL,
    granted     integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_buckets_pkey PRIMARY KEY (scope, name)
);

-- A pause, a resume or a cancel wakes every worker at once, whoever makes it (the CLI, the
-- dashboard or an UPDATE by hand): a resumed job's held runs are claimed within a second, and a
-- cancelled run's worker stops it without waiting for its heartbeat.
CREATE FUNCTION {schema}.notify_control() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'runs' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'cancel:' || NEW.id);
    ELSE
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'control');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_paused AFTER UPDATE OF paused ON {schema}.jobs
    FOR EACH ROW WHEN (OLD.paused IS DISTINCT FROM NEW.paused)
    EXECUTE FUNCTION {schema}.notify_control();
CREATE TRIGGER queues_notify_paused AFTER INSERT OR UPDATE OF paused ON {schema}.queues
    FOR EACH ROW EXECUTE FUNCTION {schema}.notify_control();
CREATE TRIGGER runs_notify_cancel AFTER UPDATE OF cancel_requested_at ON {schema}.runs
    FOR EACH ROW WHEN (NEW.status = 'running' AND NEW.cancel_requested_at IS NOT NULL
                       AND OLD.cancel_requested_at IS NULL)
    EXECUTE FUNCTION {schema}.notify_control();

-- Jobs for people, with their limits and whether their queue is paused.
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
       stats.p95_seconds_24h,
       j.queue,
       j.max_concurrency,
       j.concurrency_key,
       j.rate_limit,
       coalesce(q.paused, false) AS queue_paused
FROM {schema}.jobs j
LEFT JOIN {schema}.queues q ON q.name = j.queue
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

-- Why each queued run waits, for people and for `runs waits`: the first that applies of
--   'scheduled'      its time has not come (a delayed run, a retry in back-off);
--   'job paused'     `jobs pause`;
--   'queue paused'   `queues pause`;
--   'concurrency'    its job (or its key) has every slot taken: `detail` says by how many runs;
--   'rate limit'     its job's or its queue's bucket is empty: `detail` says when the next token is;
--   'worker'         nothing holds it: a worker that serves its queue and has a free slot takes it.
CREATE VIEW {schema}.run_waits AS
SELECT r.id,
       r.job,
       r.queue,
       r.trigger,
       r.priority,
       r.scheduled_for,
       r.concurrency_key,
       CASE
           WHEN r.scheduled_for > now() THEN 'scheduled'
           WHEN j.paused THEN 'job paused'
           WHEN q.paused THEN 'queue paused'
           WHEN slots.taken >= coalesce(j.max_concurrency, 1) THEN 'concurrency'
           WHEN jb.available < 1 OR qb.available < 1 THEN 'rate limit'
           ELSE 'worker'
       END AS waiting_for,
       CASE
           WHEN r.scheduled_for > now() THEN NULL
           WHEN j.paused OR q.paused THEN NULL
           WHEN slots.taken >= coalesce(j.max_concurrency, 1) THEN
               format('%s of %s running%s', slots.taken, coalesce(j.max_concurrency, 1),
                      CASE WHEN coalesce(r.concurrency_key, '') <> ''
                           THEN format(' for key %s', r.concurrency_key) ELSE '' END)
           WHEN jb.available < 1 THEN
               format('job %s: next token in %ss', r.job,
                      round(((1 - jb.available) / jb.rate)::numeric, 3))
           WHEN qb.available < 1 THEN
               format('queue %s: next token in %ss', r.queue,
                      round(((1 - qb.available) / qb.rate)::numeric, 3))
       END AS detail,
       extract(epoch FROM now() - r.scheduled_for)::double precision AS waiting_seconds
FROM {schema}.runs r
LEFT JOIN {schema}.jobs j ON j.name = r.job
LEFT JOIN {schema}.queues q ON q.name = r.queue
LEFT JOIN LATERAL (
    SELECT count(*) AS taken
    FROM {schema}.run_locks l
    WHERE l.job = r.job AND l.lock_key = coalesce(r.concurrency_key, '')
      AND (j.overlap = 'skip' OR j.max_concurrency IS NOT NULL)
) slots ON true
LEFT JOIN LATERAL (
    SELECT b.rate, least(b.burst, b.tokens + b.rate
               * greatest(0, extract(epoch FROM now() - b.updated_at))) AS available
    FROM {schema}.rate_buckets b WHERE b.scope = 'job' AND b.name = r.job
) jb ON true
LEFT JOIN LATERAL (
    SELECT b.rate, least(b.burst, b.tokens + b.rate
               * greatest(0, extract(epoch FROM now() - b.updated_at))) AS available
    FROM {schema}.rate_buckets b WHERE b.scope = 'queue' AND b.name = r.queue
) qb ON true
WHERE r.status = 'queued';
