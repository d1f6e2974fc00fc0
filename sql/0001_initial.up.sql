-- pgjobs schema, revision 0001. Every object lives in the schema named by {schema}, which the
-- migration runner substitutes as a quoted identifier.

CREATE SCHEMA IF NOT EXISTS {schema};

-- One row per registered job: its effective definition and the tick watermark.
CREATE TABLE {schema}.jobs (
    name              text PRIMARY KEY,
    extension         text NOT NULL,
    description       text NOT NULL DEFAULT '',
    schedule          text,
    schedule_source   text NOT NULL DEFAULT 'code'
                      CONSTRAINT jobs_schedule_source_check CHECK (schedule_source IN ('code', 'profile')),
    timezone          text NOT NULL DEFAULT 'UTC',
    enabled           boolean NOT NULL DEFAULT true,
    paused            boolean NOT NULL DEFAULT false,
    paused_at         timestamptz,
    tags              text[] NOT NULL DEFAULT ARRAY[]::text[],
    timeout_seconds   double precision,
    max_attempts      integer NOT NULL DEFAULT 1
                      CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    retry_backoff     jsonb NOT NULL DEFAULT jsonb_build_object(),
    overlap           text NOT NULL DEFAULT 'skip'
                      CONSTRAINT jobs_overlap_check CHECK (overlap IN ('skip', 'allow')),
    misfire           text NOT NULL DEFAULT 'coalesce'
                      CONSTRAINT jobs_misfire_check CHECK (misfire IN ('coalesce', 'skip', 'backfill')),
    backfill_cap      integer NOT NULL DEFAULT 100
                      CONSTRAINT jobs_backfill_cap_check CHECK (backfill_cap >= 1),
    priority          integer NOT NULL DEFAULT 0,
    queue             text NOT NULL DEFAULT 'default',
    parameters        jsonb NOT NULL DEFAULT jsonb_build_object(),
    next_fire_at      timestamptz,
    last_tick_at      timestamptz,
    registered_by     text,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_next_fire_at_idx ON {schema}.jobs (next_fire_at)
    WHERE schedule IS NOT NULL AND enabled AND NOT paused;

-- The queue and the history in one table: one row per attempt.
CREATE TABLE {schema}.runs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job                 text NOT NULL,
    trigger             text NOT NULL
                        CONSTRAINT runs_trigger_check CHECK (trigger IN ('schedule', 'manual', 'enqueue', 'retry')),
    scheduled_for       timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'queued'
                        CONSTRAINT runs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                            'timed_out', 'cancelled', 'skipped', 'abandoned')),
    attempt             integer NOT NULL DEFAULT 1,
    max_attempts        integer NOT NULL DEFAULT 1,
    retry_of            bigint,
    payload             jsonb,
    parameters          jsonb,
    priority            integer NOT NULL DEFAULT 0,
    queue               text NOT NULL DEFAULT 'default',
    dedup_key           text,
    worker_id           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    heartbeat_at        timestamptz,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    duration_seconds    double precision,
    message             text,
    data                jsonb,
    items_processed     integer,
    items_failed        integer,
    error_type          text,
    error_message       text,
    error_traceback     text
) WITH (
    -- Claimed and finished rows leave dead entries in the queued index; vacuum this table early.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);

-- A tick can be materialised once, whatever the number of workers.
CREATE UNIQUE INDEX runs_tick_key ON {schema}.runs (job, scheduled_for) WHERE trigger = 'schedule';
-- A second enqueue of the same pending work returns the first.
CREATE UNIQUE INDEX runs_dedup_key ON {schema}.runs (job, dedup_key)
    WHERE dedup_key IS NOT NULL AND status = 'queued';
-- Claiming reads only queued rows, in claim order.
CREATE INDEX runs_claim_idx ON {schema}.runs (priority, scheduled_for, id) WHERE status = 'queued';
-- Reaping and heartbeats read only running rows.
CREATE INDEX runs_lease_idx ON {schema}.runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_worker_idx ON {schema}.runs (worker_id) WHERE status = 'running';
-- History per job, newest first; pruning by age.
CREATE INDEX runs_job_id_idx ON {schema}.runs (job, id);
CREATE INDEX runs_created_at_idx ON {schema}.runs (created_at);

-- Which run holds the lock of a non-overlapping job, on which worker, until when.
CREATE TABLE {schema}.run_locks (
    job               text PRIMARY KEY,
    run_id            bigint NOT NULL,
    worker_id         text NOT NULL,
    acquired_at       timestamptz NOT NULL DEFAULT now(),
    lease_expires_at  timestamptz NOT NULL
);

-- One row per worker process.
CREATE TABLE {schema}.workers (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    queues        text[] NOT NULL,
    concurrency   integer NOT NULL,
    jobs          text[] NOT NULL DEFAULT ARRAY[]::text[],
    state         text NOT NULL DEFAULT 'running'
                  CONSTRAINT workers_state_check CHECK (state IN ('running', 'stopping', 'stopped', 'dead')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    stopped_at    timestamptz
);

-- A new queued run wakes listening workers when its transaction commits.
CREATE FUNCTION {schema}.notify_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_runs WHERE status = 'queued') THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'run');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_notify_inserted AFTER INSERT ON {schema}.runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_runs_inserted();

-- Runs for people: timings derived, newest first by id.
CREATE VIEW {schema}.run_history AS
SELECT r.id,
       r.job,
       r.trigger,
       r.status,
       r.attempt,
       r.retry_of,
       r.scheduled_for,
       r.started_at,
       r.finished_at,
       r.duration_seconds,
       extract(epoch FROM r.started_at - r.scheduled_for)::double precision AS lag_seconds,
       r.worker_id,
       w.host,
       w.pid,
       r.queue,
       r.priority,
       r.message,
       r.data,
       r.items_processed,
       r.items_failed,
       r.error_type,
       r.error_message,
       r.payload
FROM {schema}.runs r
LEFT JOIN {schema}.workers w ON w.id = r.worker_id;

-- Jobs for people: schedule, next fire, last outcome, running now, 24 h statistics.
CREATE VIEW {schema}.job_status AS
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
