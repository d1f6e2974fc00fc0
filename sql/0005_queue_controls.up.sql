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

-- How many tokens a bucket holds now: what it held when last debited, refilled since at its rate,
-- up to its size. A plain expression, inlined wherever it is used.
CREATE FUNCTION {schema}.rate_bucket_level(b {schema}.rate_buckets) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT least(b.burst, b.tokens + b.rate * greatest(0, extract(epoch FROM now() - b.updated_at)))
$$;

-- The runs of limited jobs among those a claim picked (`ids`, locked by it): which may start now.
-- Called by the worker's claim only when it picked such runs, so unlimited work pays nothing.
--
-- A limited run starts with a slot of its group (its job, or its job and key: a run_locks row
-- taken with ON CONFLICT DO NOTHING, in one order in every worker, so two claims at the same
-- instant can neither both take it nor wait for each other in a cycle) and, when its job or its
-- queue has a rate limit, a token of each bucket. A bucket is refilled for the time since it was
-- last debited and debited on the row as it is when locked, so concurrent claims add up. A run
-- that gets neither stays queued; a tick of an overlap `skip` job that finds its group full is
-- recorded as skipped. Returns the ids that may start and the seconds until a bucket this claim
-- emptied has a token again (NULL if none).
CREATE FUNCTION {schema}.claim_limited(
    ids bigint[], worker text, lease double precision,
    OUT granted bigint[], OUT next_token_in double precision
) LANGUAGE plpgsql
-- Every table here is read by index, a probe per run or group. The plans are cached for the
-- session, and one made while run_locks was nearly empty would otherwise keep scanning it
-- whole once it holds thousands of (live or dead) rows.
SET enable_seqscan = off
AS $$
BEGIN
    -- The buckets these runs draw on, locked first and in one order, by a statement of its own:
    -- claims of two workers at the same instant then queue for them instead of deadlocking.
    PERFORM 1
    FROM {schema}.rate_buckets b
    WHERE EXISTS (SELECT 1 FROM {schema}.rate_buckets)
      AND (b.scope, b.name) IN (SELECT 'job', r.job FROM {schema}.runs r WHERE r.id = ANY (ids)
                                UNION
                                SELECT 'queue', r.queue FROM {schema}.runs r WHERE r.id = ANY (ids))
    ORDER BY b.scope, b.name
    FOR UPDATE;
    WITH picked AS (
        SELECT r.id, r.job, r.queue, r.trigger, coalesce(r.concurrency_key, '') AS lock_key,
               j.overlap, j.misfire,
               CASE WHEN j.max_concurrency IS NOT NULL OR j.concurrency_key IS NOT NULL
                    THEN coalesce(j.max_concurrency, 1)
                    WHEN j.overlap = 'skip' THEN 1 END AS slots,
               row_number() OVER (PARTITION BY r.job, coalesce(r.concurrency_key, '')
                                  ORDER BY r.trigger <> 'schedule', r.priority, r.scheduled_for,
                                           r.id) AS rn
        FROM {schema}.runs r
        -- A probe of jobs per run (OFFSET 0): a generic plan would hash all of jobs otherwise.
        CROSS JOIN LATERAL (SELECT j.overlap, j.misfire, j.max_concurrency, j.concurrency_key
                            FROM {schema}.jobs j WHERE j.name = r.job OFFSET 0) j
        WHERE r.id = ANY (ids) AND r.status = 'queued'
    ), free AS (
        -- The free slots of each group, lowest first, as many as it has runs here. A slot is
        -- taken only with its transaction-level advisory lock, tried without waiting: a claim at
        -- the same instant holds the slots it is taking, and this one passes on to the next free
        -- ones instead of waiting for the other to commit and then finding them gone. (Only the
        -- rows the LIMIT reads are tested, in order: the scalar subquery keeps this a scan of the
        -- series, not a join that would lock every free slot.) A slot a claim committed since
        -- this statement began is met by the insert's ON CONFLICT, without waiting either.
        SELECT g.job, g.lock_key, s.slot,
               row_number() OVER (PARTITION BY g.job, g.lock_key ORDER BY s.slot) AS rn
        FROM (SELECT p.job, p.lock_key, p.slots, count(*) AS wanted
              FROM picked p WHERE p.slots IS NOT NULL
              GROUP BY p.job, p.lock_key, p.slots) g
        CROSS JOIN LATERAL (
            SELECT n AS slot
            FROM generate_series(1, g.slots) n
            WHERE (SELECT true FROM {schema}.run_locks l
                   WHERE l.job = g.job AND l.lock_key = g.lock_key AND l.slot = n) IS NULL
              AND pg_try_advisory_xact_lock(
                      hashtextextended(format('pgjobs slot %s/%s', g.job, g.lock_key), n))
            LIMIT g.wanted) s
    ), eligible AS (
        SELECT p.*, f.slot,
               row_number() OVER (PARTITION BY p.job
                                  ORDER BY p.trigger <> 'schedule', p.rn, p.id) AS job_rn
        FROM picked p
        LEFT JOIN free f ON f.job = p.job AND f.lock_key = p.lock_key AND f.rn = p.rn
        WHERE p.slots IS NULL OR f.slot IS NOT NULL
    ), wanted AS (
        -- Tokens each bucket is asked for: a queue's bucket only for the runs its jobs' buckets
        -- can pay for, as far as this claim's snapshot tells.
        SELECT e.*, row_number() OVER (PARTITION BY e.queue
                                       ORDER BY e.trigger <> 'schedule', e.job_rn, e.id)
                        AS queue_rn
        FROM eligible e
        LEFT JOIN {schema}.rate_buckets b ON b.scope = 'job' AND b.name = e.job
        WHERE b.name IS NULL OR e.job_rn <= floor({schema}.rate_bucket_level(b))
    ), tokens AS (
        UPDATE {schema}.rate_buckets b
        SET granted = least(w.wanted, floor({schema}.rate_bucket_level(b))),
            tokens = {schema}.rate_bucket_level(b)
                     - least(w.wanted, floor({schema}.rate_bucket_level(b))),
            updated_at = greatest(b.updated_at, now())
        FROM (SELECT 'job' AS scope, w.job AS name, count(*) AS wanted FROM wanted w GROUP BY w.job
              UNION ALL
              SELECT 'queue', w.queue, count(*) FROM wanted w GROUP BY w.queue) w
        WHERE b.scope = w.scope AND b.name = w.name
        RETURNING b.scope, b.name, b.granted, b.tokens, b.rate
    ), allowed AS (
        SELECT w.id, w.job, w.lock_key, w.slot
        FROM wanted w
        LEFT JOIN tokens jt ON jt.scope = 'job' AND jt.name = w.job
        LEFT JOIN tokens qt ON qt.scope = 'queue' AND qt.name = w.queue
        WHERE (jt.name IS NULL OR w.job_rn <= jt.granted)
          AND (qt.name IS NULL OR w.queue_rn <= qt.granted)
    ), locked AS (
        INSERT INTO {schema}.run_locks AS l
            (job, lock_key, slot, run_id, worker_id, acquired_at, lease_expires_at)
        SELECT a.job, a.lock_key, a.slot, a.id, worker, now(),
               now() + make_interval(secs => lease)
        FROM allowed a
        WHERE a.slot IS NOT NULL
        ORDER BY a.job, a.lock_key, a.slot
        ON CONFLICT (job, lock_key, slot) DO NOTHING
        RETURNING l.run_id
    ), skipped AS (
        UPDATE {schema}.runs r
        SET status = 'skipped', finished_at = clock_timestamp(), worker_id = worker,
            message = format('skipped: lock held by run %s on worker %s', h.run_id, h.worker_id)
        FROM picked p
        CROSS JOIN LATERAL (
            SELECT l.run_id, l.worker_id, count(*) OVER () AS taken
            FROM {schema}.run_locks l
            WHERE l.job = p.job AND l.lock_key = p.lock_key
            ORDER BY l.slot
            LIMIT 1) h
        WHERE r.id = p.id AND p.overlap = 'skip' AND p.trigger = 'schedule'
          AND p.misfire <> 'backfill' AND h.taken >= p.slots AND h.run_id <> p.id
    )
    SELECT coalesce(array_agg(a.id), ARRAY[]::bigint[]),
           (SELECT min((1 - t.tokens) / t.rate) FROM tokens t WHERE t.tokens < 1)
    INTO granted, next_token_in
    FROM allowed a
    WHERE a.slot IS NULL OR a.id IN (SELECT run_id FROM locked);
END
$$;

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
    SELECT b.rate, {schema}.rate_bucket_level(b) AS available
    FROM {schema}.rate_buckets b WHERE b.scope = 'job' AND b.name = r.job
) jb ON true
LEFT JOIN LATERAL (
    SELECT b.rate, {schema}.rate_bucket_level(b) AS available
    FROM {schema}.rate_buckets b WHERE b.scope = 'queue' AND b.name = r.queue
) qb ON true
WHERE r.status = 'queued';
