-- Named queries of the worker loop. `{schema}` is the quoted pgjobs schema; parameters are bound.
-- Every state change of a run is guarded by the state and owner it expects.
--
-- `EXISTS (SELECT 1 FROM worker_jobs ... OFFSET 0)`: the OFFSET keeps PostgreSQL from turning
-- the check into a join, so it stays a primary-key probe per candidate row and claims and ticks
-- walk their indexes in order, whatever the statistics say (or whether there are any).

-- name: register_worker
INSERT INTO {schema}.workers AS w
    (id, host, pid, version, queues, concurrency, state, started_at, heartbeat_at, expires_at)
VALUES (%(worker)s, %(host)s, %(pid)s, %(version)s, %(queues)s, %(concurrency)s,
        'running', now(), now(), now() + make_interval(secs => %(ttl)s))
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, pid = excluded.pid, version = excluded.version,
    queues = excluded.queues, concurrency = excluded.concurrency, state = 'running',
    started_at = now(), heartbeat_at = now(), expires_at = excluded.expires_at, stopped_at = NULL
RETURNING w.started_at;

-- name: register_worker_jobs
-- One row per job the worker's code registers, with the schedule and timezone it has for it:
-- claims and ticks read them instead of receiving the names with every statement.
WITH forgotten AS (
    DELETE FROM {schema}.worker_jobs wj
    WHERE wj.worker_id = %(worker)s AND wj.job <> ALL (%(jobs)s::text[])
)
INSERT INTO {schema}.worker_jobs (worker_id, job, schedule, timezone)
SELECT %(worker)s, mine.job, mine.schedule, mine.timezone
FROM unnest(%(jobs)s::text[], %(schedules)s::text[], %(timezones)s::text[])
     AS mine(job, schedule, timezone)
ON CONFLICT (worker_id, job) DO UPDATE
SET schedule = excluded.schedule, timezone = excluded.timezone;

-- name: lock_registered_jobs
-- Serialises registration of the same jobs by workers starting together; returns the db clock.
-- Rows are locked in name order (the lock is taken after the sort), and the worker upserts them
-- in that order too: workers starting at the same instant never wait for each other in a cycle.
SELECT j.name, j.schedule, j.timezone, j.next_fire_at, now() AS db_now
FROM {schema}.jobs j
WHERE j.name = ANY (%(names)s)
ORDER BY j.name
FOR UPDATE;

-- name: db_now
SELECT now();

-- name: mark_registering
-- This transaction writes the jobs' own schedules, as the code and profile say: the guard on
-- jobs.schedule (which refuses a hand edit) lets it.
SELECT set_config('pgjobs.registering', 'on', true);

-- name: upsert_job
INSERT INTO {schema}.jobs AS j
    (name, extension, description, schedule, schedule_source, timezone, enabled, tags,
     timeout_seconds, max_attempts, retry_backoff, overlap, misfire, backfill_cap, priority, queue,
     parameters, max_concurrency, concurrency_key, rate_limit, next_fire_at, registered_by,
     registered_at, updated_at)
VALUES (%(name)s, %(extension)s, %(description)s, %(schedule)s, %(schedule_source)s, %(timezone)s,
        %(enabled)s, %(tags)s, %(timeout_seconds)s, %(max_attempts)s, %(retry_backoff)s,
        %(overlap)s, %(misfire)s, %(backfill_cap)s, %(priority)s, %(queue)s, %(parameters)s,
        %(max_concurrency)s, %(concurrency_key)s, %(rate_limit)s, %(next_fire_at)s, %(worker)s,
        now(), now())
ON CONFLICT (name) DO UPDATE
SET extension = excluded.extension, description = excluded.description,
    schedule = excluded.schedule, schedule_source = excluded.schedule_source,
    timezone = excluded.timezone, enabled = excluded.enabled, tags = excluded.tags,
    timeout_seconds = excluded.timeout_seconds, max_attempts = excluded.max_attempts,
    retry_backoff = excluded.retry_backoff, overlap = excluded.overlap,
    misfire = excluded.misfire, backfill_cap = excluded.backfill_cap,
    priority = excluded.priority, queue = excluded.queue, parameters = excluded.parameters,
    max_concurrency = excluded.max_concurrency, concurrency_key = excluded.concurrency_key,
    rate_limit = excluded.rate_limit,
    -- The watermark survives a restart with the same schedule, so missed ticks stay visible to
    -- the misfire policy; a changed schedule starts afresh from now.
    next_fire_at = CASE WHEN %(reset_next_fire)s THEN excluded.next_fire_at ELSE j.next_fire_at END,
    registered_by = excluded.registered_by, updated_at = now();

-- name: sync_profile_schedules
-- The further schedules the profile gives these jobs (`jobs`), written as it says: a changed cron
-- or timezone starts afresh, a pause set at runtime is kept, and a runtime schedule of the same
-- name becomes the profile's. The profile's schedules of these jobs that it no longer lists go.
WITH wanted AS (
    SELECT w.*
    FROM jsonb_to_recordset(%(schedules)s::jsonb)
         AS w(job text, name text, cron text, timezone text, payload jsonb, parameters jsonb,
              enabled boolean, misfire text, overlap text)
), written AS (
    INSERT INTO {schema}.schedules AS s
        (job, name, cron, timezone, payload, parameters, enabled, misfire, overlap, origin)
    SELECT w.job, w.name, w.cron, w.timezone, w.payload, w.parameters, w.enabled, w.misfire,
           w.overlap, 'profile'
    FROM wanted w
    ORDER BY w.job, w.name
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
    SET cron = excluded.cron, timezone = excluded.timezone, payload = excluded.payload,
        parameters = excluded.parameters, enabled = excluded.enabled, misfire = excluded.misfire,
        overlap = excluded.overlap, origin = 'profile'
    WHERE (s.cron, s.timezone, s.payload, s.parameters, s.enabled, s.misfire, s.overlap, s.origin)
          IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.payload,
                            excluded.parameters, excluded.enabled, excluded.misfire,
                            excluded.overlap, 'profile')
)
DELETE FROM {schema}.schedules s
WHERE s.origin = 'profile' AND s.job = ANY (%(jobs)s::text[])
  AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.job = s.job AND w.name = s.name);

-- name: sync_rate_buckets
-- The token buckets of these jobs or queues (`scope`), as the registering code or profile says:
-- a bucket per rate limit (one that exists keeps its tokens, up to its new size), none without.
-- A bucket of at least 100 a second and 100 at once is 4 shards of a quarter each, so that
-- workers claiming at the same instant debit different rows; a smaller one is a single row.
WITH wanted AS (
    SELECT w.name, w.rate / k.shards AS rate, w.burst / k.shards AS burst, s.shard
    FROM unnest(%(names)s::text[], %(rates)s::float8[], %(bursts)s::float8[]) AS w(name, rate, burst)
    CROSS JOIN LATERAL (SELECT CASE WHEN w.rate >= 100 AND w.burst >= 100 THEN 4 ELSE 1 END
                            AS shards) k
    CROSS JOIN LATERAL generate_series(0, k.shards - 1) AS s(shard)
    WHERE w.rate IS NOT NULL
), kept AS (
    INSERT INTO {schema}.rate_buckets AS b (scope, name, shard, rate, burst, tokens)
    SELECT %(scope)s, w.name, w.shard, w.rate, w.burst, w.burst
    FROM wanted w
    ORDER BY w.name, w.shard
    ON CONFLICT (scope, name, shard) DO UPDATE
    SET rate = excluded.rate, burst = excluded.burst, tokens = least(b.tokens, excluded.burst)
    WHERE (b.rate, b.burst) IS DISTINCT FROM (excluded.rate, excluded.burst)
)
-- The buckets of no limit, and the shards a bucket no longer has.
DELETE FROM {schema}.rate_buckets b
WHERE b.scope = %(scope)s AND b.name = ANY (%(names)s::text[])
  AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.name = b.name AND w.shard = b.shard);

-- name: sync_queue_rate_limits
-- The rate limits of the queues this worker serves, as its profile says (shown by `queues list`).
-- A queue gets a row only to hold a limit; a pause set at runtime is left as it is.
INSERT INTO {schema}.queues AS q (name, rate_limit)
SELECT w.name, w.rate_limit
FROM unnest(%(names)s::text[], %(rate_limits)s::text[]) AS w(name, rate_limit)
WHERE w.rate_limit IS NOT NULL
ORDER BY w.name
ON CONFLICT (name) DO UPDATE
SET rate_limit = excluded.rate_limit, updated_at = now()
WHERE q.rate_limit IS DISTINCT FROM excluded.rate_limit;

-- name: clear_queue_rate_limits
UPDATE {schema}.queues q
SET rate_limit = NULL, updated_at = now()
WHERE q.name = ANY (%(names)s::text[]) AND q.rate_limit IS NOT NULL;

-- name: lock_due_jobs
-- Tick, step 1: the jobs whose next tick is due, locked so one worker materialises each tick.
-- Only jobs whose stored schedule is the one this worker's code has: during a rolling deploy
-- the code that registered the schedule ticks it. In the order of jobs_next_fire_at_idx, reading
-- no more due jobs than it locks (10,000 due at once take ten of these).
SELECT j.name, j.schedule, j.timezone, j.misfire, j.backfill_cap, j.next_fire_at, now() AS db_now
FROM {schema}.jobs j
WHERE j.next_fire_at <= now() AND j.schedule IS NOT NULL AND j.enabled AND NOT j.paused
  AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
              WHERE wj.worker_id = %(worker)s AND wj.job = j.name
                AND wj.schedule = j.schedule AND wj.timezone = j.timezone OFFSET 0)
ORDER BY j.next_fire_at
LIMIT %(limit)s
FOR UPDATE OF j SKIP LOCKED;

-- name: lock_due_jobs_oftenest_first
-- lock_due_jobs for a round's first, small batch: due at the same instant, the job whose ticks
-- come oftenest goes first (the gap from its last tick to its next), so an every-second job is
-- not made to wait behind the thousand jobs that fire once a minute at the same second. It reads
-- every due job to sort them: the rest of the round goes in index order.
SELECT j.name, j.schedule, j.timezone, j.misfire, j.backfill_cap, j.next_fire_at, now() AS db_now
FROM {schema}.jobs j
WHERE j.next_fire_at <= now() AND j.schedule IS NOT NULL AND j.enabled AND NOT j.paused
  AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
              WHERE wj.worker_id = %(worker)s AND wj.job = j.name
                AND wj.schedule = j.schedule AND wj.timezone = j.timezone OFFSET 0)
ORDER BY j.next_fire_at, j.next_fire_at - j.last_tick_at NULLS LAST
LIMIT %(limit)s
FOR UPDATE OF j SKIP LOCKED;

-- name: insert_ticks_advance_watermarks
-- Tick, step 2: insert the ticks' runs (a tick that exists already is left alone) and advance each
-- job's watermark in the same statement, so the watermark and the runs commit together.
WITH ticks AS (
    INSERT INTO {schema}.runs (job, trigger, scheduled_for, max_attempts, priority, queue)
    SELECT j.name, 'schedule', t.tick, j.max_attempts, j.priority, j.queue
    FROM unnest(%(tick_jobs)s::text[], %(tick_times)s::timestamptz[]) AS t(job, tick)
    JOIN {schema}.jobs j ON j.name = t.job
    ON CONFLICT (job, coalesce(schedule, ''), scheduled_for) WHERE trigger = 'schedule' DO NOTHING
    RETURNING id, scheduled_for
), advanced AS (
    UPDATE {schema}.jobs j
    SET next_fire_at = w.next_fire_at, last_tick_at = coalesce(w.last_tick_at, j.last_tick_at)
    FROM unnest(%(names)s::text[], %(next_fire_ats)s::timestamptz[], %(last_ticks)s::timestamptz[])
         AS w(name, next_fire_at, last_tick_at)
    WHERE j.name = w.name
    RETURNING j.name
)
SELECT ARRAY(SELECT t.id FROM ticks t ORDER BY t.scheduled_for, t.id) AS inserted,
       (SELECT count(*) FROM advanced) AS advanced;

-- name: lock_due_schedules
-- Runtime schedules, step 1: those of this worker's jobs whose next tick is due, or whose first
-- tick no worker has worked out yet (a new or changed cron), locked so one worker materialises
-- each tick. Any worker that registers the job may tick them: their cron is in the row. In the
-- order of schedules_due_idx, reading no more due schedules than it locks.
SELECT s.job, s.name, s.cron, s.timezone, coalesce(s.misfire, j.misfire) AS misfire,
       j.backfill_cap, s.next_fire_at, s.updated_at, s.payload, now() AS db_now
FROM {schema}.schedules s
JOIN {schema}.jobs j ON j.name = s.job
WHERE (s.next_fire_at <= now() OR s.next_fire_at IS NULL)
  AND s.enabled AND NOT s.paused AND s.error IS NULL AND NOT j.paused
  AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
              WHERE wj.worker_id = %(worker)s AND wj.job = s.job OFFSET 0)
ORDER BY s.next_fire_at NULLS FIRST
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED;

-- name: lock_due_schedules_oftenest_first
-- lock_due_schedules for a round's first, small batch: due at the same instant, the oftenest
-- first, as lock_due_jobs_oftenest_first does for jobs. It reads every due schedule to sort them.
SELECT s.job, s.name, s.cron, s.timezone, coalesce(s.misfire, j.misfire) AS misfire,
       j.backfill_cap, s.next_fire_at, s.updated_at, s.payload, now() AS db_now
FROM {schema}.schedules s
JOIN {schema}.jobs j ON j.name = s.job
WHERE (s.next_fire_at <= now() OR s.next_fire_at IS NULL)
  AND s.enabled AND NOT s.paused AND s.error IS NULL AND NOT j.paused
  AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
              WHERE wj.worker_id = %(worker)s AND wj.job = s.job OFFSET 0)
ORDER BY s.next_fire_at NULLS FIRST, s.next_fire_at - s.last_tick_at NULLS LAST
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED;

-- name: insert_schedule_ticks
-- Runtime schedules, step 2: insert the ticks' runs, with the schedule's payload and parameters
-- (a tick that exists already is left alone), and advance each schedule's watermark in the same
-- statement; a schedule whose cron or timezone the worker could not use gets its error instead.
WITH ticks AS (
    INSERT INTO {schema}.runs
        (job, trigger, schedule, scheduled_for, max_attempts, priority, queue, payload, parameters,
         concurrency_key)
    SELECT j.name, 'schedule', s.name, t.tick, j.max_attempts, j.priority, j.queue, s.payload,
           s.parameters, t.concurrency_key
    FROM unnest(%(tick_jobs)s::text[], %(tick_schedules)s::text[], %(tick_times)s::timestamptz[],
                %(tick_keys)s::text[]) AS t(job, schedule, tick, concurrency_key)
    JOIN {schema}.jobs j ON j.name = t.job
    JOIN {schema}.schedules s ON s.job = t.job AND s.name = t.schedule
    ON CONFLICT (job, coalesce(schedule, ''), scheduled_for) WHERE trigger = 'schedule' DO NOTHING
    RETURNING id, scheduled_for
), advanced AS (
    UPDATE {schema}.schedules s
    SET next_fire_at = w.next_fire_at, last_tick_at = coalesce(w.last_tick_at, s.last_tick_at),
        error = w.error
    FROM unnest(%(jobs)s::text[], %(names)s::text[], %(next_fire_ats)s::timestamptz[],
                %(last_ticks)s::timestamptz[], %(errors)s::text[])
         AS w(job, name, next_fire_at, last_tick_at, error)
    WHERE s.job = w.job AND s.name = w.name
    RETURNING s.name
)
SELECT ARRAY(SELECT t.id FROM ticks t ORDER BY t.scheduled_for, t.id) AS inserted,
       (SELECT count(*) FROM advanced) AS advanced;

-- name: finish_and_claim_runs
-- One statement, one commit per loop iteration: record the outcomes of finished runs (only those
-- this worker still owns), free their slots, queue their retries; then claim up to `limit` due
-- runs, ticks first, then the rest in priority order. The last row says how many seconds remain
-- until the next delayed run, tick or rate-limit token of these jobs.
--
-- What holds a queued run back is read once per statement, not per run: the paused jobs and
-- queues, the jobs and queues whose rate bucket is empty, and the concurrency groups (a limited
-- job, or one key of it) with every slot taken. Runs they hold are passed over by the walk of
-- the queue, so a held run never stands in front of one that may start. A run of a limited job
-- starts only with a slot of its group (runs.slot, unique among running runs), a run of a job
-- that forbids overlap with its run lock (a run_locks row, taken with ON CONFLICT DO NOTHING),
-- and a rate-limited run with a token. A run that gets none stays queued; a tick of an overlap
-- `skip` job that finds its group full is recorded as skipped.
WITH outcome AS (
    -- One JSON document for the whole batch: a field a run has no value for is left out.
    SELECT o.run_id AS id, o.*
    FROM jsonb_to_recordset(%(outcomes)s::jsonb)
         AS o(run_id bigint, status text, duration double precision, message text, data jsonb,
              processed integer, failed integer, error_type text, error_message text,
              error_traceback text, retry_delay double precision, logs text,
              start_delay double precision)
), unheld AS MATERIALIZED (
    -- Of the ended runs whose outcomes may wait (`defer`, the worker's loop: runs that free no
    -- slot or run lock), the rows no other transaction holds, locked here. The outcome of a run
    -- whose row is held is not waited for: the worker records it with a later statement
    -- (`deferred`) and goes on claiming. The holder may be a transaction left open on the row;
    -- most often it is another worker's claim, whose walk of the queue keeps to its end a lock
    -- on a run this worker started after the walk's snapshot was taken (the row fails the
    -- walk's recheck, and PostgreSQL keeps the lock). A limited run's end is waited for: held
    -- over, it would keep its slot, and near the limit its group would look full.
    SELECT r.id
    FROM {schema}.runs r
    WHERE r.id = ANY (%(defer)s::bigint[])
    FOR UPDATE SKIP LOCKED
), done AS (
    -- A prefetched run started start_delay seconds after its claim: started_at says when it did.
    UPDATE {schema}.runs r
    SET status = o.status, finished_at = clock_timestamp(), duration_seconds = o.duration,
        started_at = r.started_at + make_interval(secs => coalesce(o.start_delay, 0)),
        message = o.message, data = o.data, items_processed = o.processed,
        items_failed = o.failed, error_type = o.error_type, error_message = o.error_message,
        error_traceback = o.error_traceback, logs = o.logs, lease_expires_at = NULL
    FROM outcome o
    WHERE r.id = o.id AND r.status = 'running' AND r.worker_id = %(worker)s
      AND (r.id <> ALL (%(defer)s::bigint[]) OR r.id IN (SELECT u.id FROM unheld u))
    RETURNING r.id, r.job, r.attempt, r.max_attempts, r.payload, r.parameters, r.priority,
              r.queue, r.concurrency_key, o.retry_delay, r.slot, r.trace_context, r.awaited,
              r.status
), unlocked AS (
    DELETE FROM {schema}.run_locks l USING done WHERE l.job = done.job AND l.run_id = done.id
    RETURNING l.job
), retried AS (
    -- A retry is the same enqueued work: its span joins the trace of the attempt it retries,
    -- and whoever waits for that attempt waits for it (pgjobs.wait follows retries).
    INSERT INTO {schema}.runs
        (job, trigger, scheduled_for, attempt, max_attempts, retry_of, payload, parameters,
         priority, queue, concurrency_key, trace_context, awaited)
    SELECT done.job, 'retry', clock_timestamp() + make_interval(secs => done.retry_delay),
           done.attempt + 1, done.max_attempts, done.id, done.payload, done.parameters,
           done.priority, done.queue, done.concurrency_key, done.trace_context, done.awaited
    FROM done
    WHERE done.retry_delay IS NOT NULL AND done.attempt < done.max_attempts
    RETURNING id, retry_of
), moved AS (
    -- Runs that wait for a retried attempt wait for its retry (workflows: run_dependencies).
    UPDATE {schema}.run_dependencies e
    SET depends_on = t.id
    FROM retried t
    WHERE e.depends_on = t.retry_of
), held AS MATERIALIZED (
    -- What may hold queued runs back, read once per statement. Each filter of the queue's walk
    -- below is skipped when its kind of hold exists nowhere, as is usual.
    --
    -- A first row in index order, not EXISTS: EXISTS expects its first row at once and may scan
    -- the whole table for it (10,000 jobs, none paused; run_locks after a minute of ticks, all
    -- dead); the partial or primary index answers with a probe whatever the statistics say.
    --
    -- `holds`: a job or a queue is paused, or a rate bucket is empty (every bucket that has a
    -- token is no reason to pass a run over: a bucket far above the drain's rate costs the walk
    -- nothing). `rates`: a rate bucket exists (a run of a queue with one needs its token).
    -- `waits`: some run waits for another (workflows): the runs that ended here look for
    -- dependants only then.
    SELECT (SELECT j.name FROM {schema}.jobs j WHERE j.paused ORDER BY j.name LIMIT 1) IS NOT NULL
               OR EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.paused)
               OR EXISTS (SELECT 1 FROM {schema}.rate_buckets b
                          WHERE {schema}.rate_bucket_level(b) < 1) AS holds,
           EXISTS (SELECT 1 FROM {schema}.rate_buckets b) AS rates,
           (SELECT e.depends_on FROM {schema}.run_dependencies e ORDER BY e.depends_on LIMIT 1)
               IS NOT NULL AS waits,
           (SELECT l.job FROM {schema}.run_locks l ORDER BY l.job, l.lock_key, l.slot LIMIT 1)
               IS NOT NULL
               OR (SELECT h.job FROM {schema}.runs h
                   WHERE h.status = 'running' AND h.slot IS NOT NULL
                   ORDER BY h.job, coalesce(h.concurrency_key, ''), h.slot LIMIT 1)
               IS NOT NULL AS slots_taken
), handed AS MATERIALIZED (
    -- Runs that succeeded here start the runs that waited for them and may start now, on this
    -- worker, within its room: one write from blocked to running (hand_off_dependants); the
    -- others are queued (the row whose `id` is NULL says how many). Gated as `released` is below.
    -- The claim below takes the rest of the room from the queue.
    SELECT h.*
    FROM (SELECT array_agg(d.id ORDER BY d.id) AS ids
          FROM done d
          WHERE d.status = 'succeeded'
            AND EXISTS (SELECT 1 FROM {schema}.run_dependencies e WHERE e.depends_on = d.id)
            AND (SELECT h.waits FROM held h)) w
    CROSS JOIN LATERAL {schema}.hand_off_dependants(w.ids, %(worker)s, %(queues)s, %(limit)s,
                                                    %(lease)s) h
    WHERE w.ids IS NOT NULL
), picked_ticks AS (
    -- The ticks this worker just made (`ticks`, usually none): claimed whatever stands before
    -- them in the queue, so that bulk work does not delay schedules. This transaction inserted
    -- them, so no other can see them yet: they are queued and unlocked. Tested for nothing
    -- else, they are found by primary key (a test of `status` would let the plan read the
    -- whole queue's index for them).
    SELECT r.id, r.job, r.trigger, r.priority, r.scheduled_for, r.queue, r.concurrency_key,
           r.schedule
    FROM {schema}.runs r
    WHERE r.id = ANY (%(ticks)s::bigint[])
      AND r.queue NOT IN (SELECT q.name FROM {schema}.queues q WHERE q.paused)
), picked_work AS (
    -- Runs held back by a pause, an empty rate bucket or a full concurrency group are passed
    -- over, so a held run never stands in front of one that may start.
    SELECT r.id, r.job, r.trigger, r.priority, r.scheduled_for, r.queue, r.concurrency_key,
           r.schedule
    FROM {schema}.runs r
    WHERE r.status = 'queued' AND r.scheduled_for <= now()
      AND r.queue = ANY (%(queues)s)
      AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                  WHERE wj.worker_id = %(worker)s AND wj.job = r.job OFFSET 0)
      AND (NOT (SELECT h.holds FROM held h)
           OR (r.job NOT IN (
                   SELECT j.name FROM {schema}.jobs j WHERE j.paused
                   UNION ALL
                   SELECT b.name FROM {schema}.rate_buckets b WHERE b.scope = 'job'
                   GROUP BY b.name HAVING max({schema}.rate_bucket_level(b)) < 1)
               AND r.queue NOT IN (
                   SELECT q.name FROM {schema}.queues q WHERE q.paused
                   UNION ALL
                   SELECT b.name FROM {schema}.rate_buckets b WHERE b.scope = 'queue'
                   GROUP BY b.name HAVING max({schema}.rate_bucket_level(b)) < 1)))
      AND (NOT (SELECT h.slots_taken FROM held h)
           OR r.trigger = 'schedule'  -- a tick of a full `skip` job is picked to be skipped
           OR (r.job, coalesce(r.concurrency_key, '')) NOT IN (
                  -- Groups whose run lock is taken (a job that forbids overlap; a job that
                  -- allows it locks only for its `skip` schedules' ticks).
                  SELECT l.job, l.lock_key
                  FROM {schema}.run_locks l
                  CROSS JOIN LATERAL (SELECT j.overlap
                                      FROM {schema}.jobs j
                                      WHERE j.name = l.job OFFSET 0) j
                  WHERE j.overlap = 'skip'
                  UNION ALL
                  -- Concurrency groups with every slot taken. L runs of a group limited to L
                  -- hold L distinct slots, so one of them holds slot L or above: a group with no
                  -- running run there has a free slot, and only the others are counted. Each
                  -- limited job is a probe of the slots' index for its top slots; a limit of 1
                  -- (one run per key) needs no count.
                  SELECT t.job, t.lock_key
                  FROM {schema}.jobs j
                  CROSS JOIN LATERAL (
                      SELECT DISTINCT t.job, coalesce(t.concurrency_key, '') AS lock_key
                      FROM {schema}.runs t
                      WHERE t.job = j.name AND t.status = 'running' AND t.slot IS NOT NULL
                        AND t.slot >= coalesce(j.max_concurrency, 1)) t
                  WHERE (j.max_concurrency IS NOT NULL OR j.concurrency_key IS NOT NULL)
                    AND (coalesce(j.max_concurrency, 1) = 1
                         OR (SELECT count(*)
                             FROM {schema}.runs h
                             WHERE h.job = t.job AND coalesce(h.concurrency_key, '') = t.lock_key
                               AND h.status = 'running' AND h.slot IS NOT NULL)
                            >= j.max_concurrency)))
    ORDER BY r.priority, r.scheduled_for, r.id
    LIMIT greatest(0, %(limit)s - (SELECT count(h.id) FROM handed h))
    FOR UPDATE SKIP LOCKED
), ranked AS (
    -- Each picked run's job by its key (OFFSET 0 keeps it a probe per run): a generic plan,
    -- costed for an unknown LIMIT, would otherwise hash all of jobs, 10,000 rows or more.
    -- `slots`: its job's max_concurrency (1 for a concurrency key alone), NULL when unlimited.
    -- `skip`: its job forbids overlap, or the schedule that made it does (a runtime or profile
    -- schedule's own overlap policy, when it has one, is its ticks').
    -- `single`: it only forbids overlap: one run lock.
    -- `rated`: its job or its queue has a rate limit: it needs a token of each bucket.
    SELECT p.id, p.job, p.trigger, p.queue, coalesce(p.concurrency_key, '') AS lock_key, j.misfire,
           j.overlap = 'skip' AS skip, j.slots, j.overlap = 'skip' AND j.slots IS NULL AS single,
           j.rated
               OR ((SELECT h.rates FROM held h)
                   AND p.queue IN (SELECT b.name FROM {schema}.rate_buckets b
                                   WHERE b.scope = 'queue')) AS rated,
           row_number() OVER (PARTITION BY p.job ORDER BY p.priority, p.scheduled_for, p.id) AS rn
    FROM (SELECT * FROM picked_ticks UNION ALL SELECT * FROM picked_work) p
    CROSS JOIN LATERAL (
        SELECT coalesce(CASE WHEN p.schedule IS NOT NULL
                             THEN (SELECT s.overlap FROM {schema}.schedules s
                                   WHERE s.job = p.job AND s.name = p.schedule) END,
                        j.overlap) AS overlap,
               j.misfire, j.rate_limit IS NOT NULL AS rated,
               CASE WHEN j.max_concurrency IS NOT NULL OR j.concurrency_key IS NOT NULL
                    THEN coalesce(j.max_concurrency, 1) END AS slots
        FROM {schema}.jobs j WHERE j.name = p.job OFFSET 0) j
), freed AS MATERIALIZED (
    -- The slots whose runs this statement recorded as ended: free for the runs it claims now
    -- (no other claim takes them before this one commits).
    SELECT d.job, coalesce(d.concurrency_key, '') AS lock_key, d.slot
    FROM done d WHERE d.slot IS NOT NULL
), slot_groups AS (
    -- The runs of each concurrency group (a limited job, or one key of it) in claim order.
    SELECT k.job, k.lock_key, k.slots,
           array_agg(k.id ORDER BY k.trigger <> 'schedule', k.rn) AS ids
    FROM ranked k WHERE k.slots IS NOT NULL
    GROUP BY k.job, k.lock_key, k.slots
), mine AS (
    -- The slots freed here that each group may reuse (within its limit, which may have been
    -- lowered since they were taken).
    SELECT g.job, g.lock_key, array_agg(fr.slot ORDER BY fr.slot) AS slots
    FROM slot_groups g
    JOIN freed fr ON fr.job = g.job AND fr.lock_key = g.lock_key AND fr.slot <= g.slots
    GROUP BY g.job, g.lock_key
), offered AS MATERIALIZED (
    -- Each group's runs paired with slots: first those freed here, then the lowest that look
    -- free. One of those is tried with its transaction-level advisory lock, without waiting: a
    -- claim at the same instant holds the slots it is taking, and this one passes on to the next
    -- free ones instead of waiting for the other to commit and then finding them gone. (Only
    -- the slots the LIMIT reads are tried, in order, and only once the snapshot says they are
    -- free: the CASE keeps that order.) `fresh`: a slot of the second kind.
    SELECT x.id, x.slot, x.n > cardinality(f.mine) AS fresh, g.job, g.lock_key
    FROM slot_groups g
    LEFT JOIN mine m ON m.job = g.job AND m.lock_key = g.lock_key
    CROSS JOIN LATERAL (
        SELECT coalesce(m.slots[1:cardinality(g.ids)], ARRAY[]::integer[]) AS mine OFFSET 0) f
    CROSS JOIN LATERAL (
        SELECT f.mine || ARRAY(
            SELECT n::integer
            -- A series the planner counts as short, unlike generate_series (see the plan test).
            FROM unnest(array_fill(true, ARRAY[g.slots])) WITH ORDINALITY AS s(_, n)
            WHERE CASE WHEN NOT EXISTS (
                               SELECT 1 FROM {schema}.runs h
                               WHERE h.job = g.job AND coalesce(h.concurrency_key, '') = g.lock_key
                                 AND h.slot = n AND h.status = 'running' AND h.slot IS NOT NULL)
                       THEN {schema}.try_slot_lock(g.job, g.lock_key, n)
                  END
            LIMIT greatest(0, cardinality(g.ids) - cardinality(f.mine))) AS free) a
    CROSS JOIN LATERAL unnest(g.ids[1:cardinality(a.free)], a.free) WITH ORDINALITY
        AS x(id, slot, n)
), slotted AS MATERIALIZED (
    -- The slots the runs start with. A fresh one is checked again in a snapshot of its own:
    -- a claim may have committed it after this statement's snapshot was taken, and released
    -- its advisory lock since.
    SELECT o.id, o.slot FROM offered o WHERE NOT o.fresh
    UNION ALL
    SELECT u.run_id, u.run_slot
    FROM (SELECT array_agg(o.id ORDER BY o.id) AS ids, array_agg(o.slot ORDER BY o.id) AS slots,
                 array_agg(o.job ORDER BY o.id) AS jobs,
                 array_agg(o.lock_key ORDER BY o.id) AS lock_keys
          FROM offered o WHERE o.fresh) f
    CROSS JOIN LATERAL {schema}.unheld_slots(f.ids, f.slots, f.jobs, f.lock_keys) u
    WHERE f.ids IS NOT NULL
), rated AS MATERIALIZED (
    -- The runs whose job or queue has a rate limit and that have their slot, or need none, in
    -- claim order within their job: each starts with a token of each bucket of its job and its
    -- queue.
    SELECT k.id, k.job, k.queue, k.trigger,
           row_number() OVER (PARTITION BY k.job ORDER BY k.trigger <> 'schedule', k.rn, k.id)
               AS job_rn
    FROM ranked k
    WHERE k.rated AND (k.slots IS NULL OR k.id IN (SELECT s.id FROM slotted s))
), job_tokens AS MATERIALIZED (
    -- Tokens of the buckets of their jobs, then of their queues (`queue_tokens`), each bucket
    -- debited by pgjobs.take_tokens for as many runs as ask it: buckets are locked in one order
    -- (by scope and name), so claims of workers at the same instant queue instead of
    -- deadlocking, and once the outcomes are recorded (the counts of `done` and `unlocked` are
    -- read first), so this worker never waits for a run's row while holding a bucket. (The walk
    -- keeps a lock on a run another worker has just started: a row that fails the walk's recheck
    -- stays locked. That worker, recording the run's end while holding a bucket this one waits
    -- for, would deadlock with it.)
    SELECT w.name, t.shard, t.granted, t.tokens, t.rate
    FROM (SELECT r.job AS name, count(*)::integer AS wanted
          FROM rated r
          WHERE r.job IN (SELECT b.name FROM {schema}.rate_buckets b WHERE b.scope = 'job')
          GROUP BY r.job
          ORDER BY r.job) w
    CROSS JOIN LATERAL {schema}.take_tokens('job', w.name, w.wanted) t
    WHERE (SELECT count(*) FROM done) + (SELECT count(*) FROM unlocked) >= 0
), wanted AS (
    -- The rated runs that got a token of their job's bucket (or need none), in claim order
    -- within their queue: each asks its queue's bucket for one more.
    SELECT r.*, row_number() OVER (PARTITION BY r.queue
                                   ORDER BY r.trigger <> 'schedule', r.job_rn, r.id) AS queue_rn
    FROM rated r
    LEFT JOIN job_tokens jt ON jt.name = r.job
    WHERE jt.name IS NULL OR r.job_rn <= jt.granted
), queue_tokens AS MATERIALIZED (
    SELECT w.name, t.shard, t.granted, t.tokens, t.rate
    FROM (SELECT r.queue AS name, count(*)::integer AS wanted
          FROM wanted r
          WHERE r.queue IN (SELECT b.name FROM {schema}.rate_buckets b WHERE b.scope = 'queue')
          GROUP BY r.queue
          ORDER BY r.queue) w
    CROSS JOIN LATERAL {schema}.take_tokens('queue', w.name, w.wanted) t
    WHERE (SELECT count(*) FROM job_tokens) >= 0
), limited AS (
    -- The rated runs that got their tokens, and the seconds until a bucket whose shard this
    -- claim emptied has a token again (in that shard or another).
    SELECT coalesce(array_agg(w.id), ARRAY[]::bigint[]) AS granted,
           (SELECT min(greatest(0, (1 - CASE WHEN b.shard = t.shard THEN t.tokens
                                             ELSE {schema}.rate_bucket_level(b) END) / b.rate))
            FROM (SELECT 'job' AS scope, * FROM job_tokens
                  UNION ALL
                  SELECT 'queue', * FROM queue_tokens) t
            JOIN {schema}.rate_buckets b ON b.scope = t.scope AND b.name = t.name
            WHERE t.tokens < 1) AS next_token_in
    FROM wanted w
    LEFT JOIN queue_tokens qt ON qt.name = w.queue
    WHERE qt.name IS NULL OR w.queue_rn <= qt.granted
), locked AS (
    -- The run lock of a job that forbids overlap, for its first run here (with a token, if
    -- it needs one).
    INSERT INTO {schema}.run_locks AS l
        (job, lock_key, slot, run_id, worker_id, acquired_at, lease_expires_at)
    SELECT k.job, '', 1, k.id, %(worker)s, now(), now() + make_interval(secs => %(lease)s)
    FROM ranked k
    WHERE k.single AND k.rn = 1
      AND (NOT k.rated OR k.id = ANY ((SELECT l.granted FROM limited l)::bigint[]))
    ON CONFLICT (job, lock_key, slot) DO NOTHING
    RETURNING l.run_id
), skipped AS (
    -- A tick of a job that forbids overlap, when its lock or every slot of its group is held
    -- by another run.
    UPDATE {schema}.runs r
    SET status = 'skipped', finished_at = clock_timestamp(), worker_id = %(worker)s,
        message = format('skipped: lock held by run %%s on worker %%s', h.run_id, h.worker_id)
    FROM ranked k
    CROSS JOIN LATERAL (
        SELECT l.run_id, l.worker_id
        FROM {schema}.run_locks l
        WHERE k.single AND l.job = k.job AND l.lock_key = '' AND l.slot = 1
          AND k.id NOT IN (SELECT run_id FROM locked)
          AND (NOT k.rated OR k.id = ANY ((SELECT l.granted FROM limited l)::bigint[]))
        UNION ALL
        SELECT h.id, h.worker_id
        FROM (SELECT h.id, h.worker_id, count(*) OVER () AS taken
              FROM {schema}.runs h
              WHERE k.slots IS NOT NULL AND h.job = k.job
                AND coalesce(h.concurrency_key, '') = k.lock_key AND h.status = 'running'
                AND h.slot IS NOT NULL AND h.id NOT IN (SELECT d.id FROM done d)
              ORDER BY h.slot) h
        WHERE h.taken >= k.slots AND k.id NOT IN (SELECT s.id FROM slotted s)
        LIMIT 1) h
    WHERE r.id = k.id AND k.skip AND k.trigger = 'schedule' AND k.misfire <> 'backfill'
      AND h.run_id <> k.id
    RETURNING r.id
), released AS (
    -- The runs that ended for good here otherwise than succeeded (recorded without a retry, or
    -- skipped) release or cancel the runs that wait for them (release_dependants). Gated so that
    -- a run nobody waits for costs a probe of run_dependencies' index, and a statement where no
    -- run waits for any other one probe in all: the function is only called for runs that have
    -- dependants. (A run that waits for one run that succeeded here and one that failed is
    -- counted down by `handed` and cancelled here, in either order: it never reaches 0.)
    SELECT {schema}.release_dependants(w.ids, w.statuses) AS released
    FROM (SELECT array_agg(x.id ORDER BY x.id) AS ids, array_agg(x.status ORDER BY x.id) AS statuses
          FROM (SELECT d.id, d.status FROM done d
                WHERE d.status <> 'succeeded' AND d.id NOT IN (SELECT t.retry_of FROM retried t)
                UNION ALL
                SELECT s.id, 'skipped' FROM skipped s) x
          WHERE EXISTS (SELECT 1 FROM {schema}.run_dependencies e WHERE e.depends_on = x.id)
            AND (SELECT h.waits FROM held h)) w
    WHERE w.ids IS NOT NULL
), started AS (
    UPDATE {schema}.runs r
    SET status = 'running', worker_id = %(worker)s, started_at = clock_timestamp(),
        heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s),
        slot = (SELECT s.slot FROM slotted s WHERE s.id = r.id)
    -- An array of ids, not a join: a primary-key probe per run in the plan cached for every
    -- batch size (a join planned for an unknown LIMIT hashes the whole table).
    WHERE r.id = ANY (ARRAY(SELECT k.id FROM ranked k
                            WHERE NOT k.single AND k.slots IS NULL AND NOT k.rated)
                      || ARRAY(SELECT l.run_id FROM locked l)
                      || ARRAY(SELECT s.id FROM slotted s
                               WHERE s.id NOT IN (SELECT k.id FROM ranked k WHERE k.rated))
                      || ARRAY(SELECT g.id
                               FROM limited l CROSS JOIN LATERAL unnest(l.granted) AS g(id)
                               WHERE g.id NOT IN (SELECT k.id FROM ranked k WHERE k.single)))
    RETURNING r.id, r.job, r.trigger, r.scheduled_for, r.attempt, r.max_attempts, r.payload,
              r.parameters, r.started_at,
              -- Whether its end frees what another run may wait for: a slot, or a run lock. (A
              -- rate limit's token is spent: a run's end gives none back.)
              r.slot IS NOT NULL OR r.id IN (SELECT l.run_id FROM locked l) AS limited,
              r.queue, r.trace_context,
              -- It waited for other runs: what they ended with (ctx.dependencies), their final
              -- attempts (an edge follows its dependency's retries) in the order of their ids.
              -- Each is a probe of runs' primary key (OFFSET 0 keeps it one: the generic plan of
              -- a join may read all of runs); a run without dependencies reads nothing.
              CASE WHEN r.blocked_by IS NOT NULL THEN
                  (SELECT coalesce(jsonb_agg(jsonb_build_array(d.id, d.job, d.status, d.message,
                                                               d.data)
                                             ORDER BY e.depends_on), '[]')
                   FROM {schema}.run_dependencies e
                   CROSS JOIN LATERAL (SELECT d.id, d.job, d.status, d.message, d.data
                                       FROM {schema}.runs d
                                       WHERE d.id = e.depends_on OFFSET 0) d
                   WHERE e.run_id = r.id)
              END AS dependencies
), waits AS (
    -- A listening worker whose claim came short says so, with its free slots: the next
    -- statement that queues a due run it can take wakes it alone (notify_runs_inserted). Written
    -- only when it changes. SKIP LOCKED: a statement queueing runs holds the row while it wakes
    -- this worker, until the enqueuing transaction ends, and the claim must not wait for that.
    UPDATE {schema}.workers w
    SET waiting = v.slots,
        waiting_since = CASE WHEN v.slots > 0 THEN clock_timestamp() END
    FROM (SELECT CASE WHEN %(listening)s
                      THEN greatest(%(limit)s - (SELECT count(*) FROM started)
                                    - (SELECT count(h.id) FROM handed h), 0)::integer
                      ELSE 0 END AS slots) v
    WHERE w.id = (SELECT x.id FROM {schema}.workers x
                  WHERE x.id = %(worker)s AND x.waiting <> v.slots
                  FOR UPDATE SKIP LOCKED)
)
SELECT 'started' AS kind, s.id, s.job, s.trigger, s.scheduled_for, s.attempt, s.max_attempts,
       s.payload, s.parameters, s.started_at, NULL::bigint AS ref, NULL::double precision AS seconds,
       s.limited, s.queue, s.trace_context, s.dependencies
FROM started s
UNION ALL
SELECT 'started', h.id, h.job, h.trigger, h.scheduled_for, h.attempt, h.max_attempts, h.payload,
       h.parameters, h.started_at, NULL, NULL, false, h.queue, h.trace_context, h.dependencies
FROM handed h
WHERE h.id IS NOT NULL
UNION ALL
SELECT 'finished', d.id, d.job, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL
FROM done d
UNION ALL
-- The ended runs this worker still owns whose rows another transaction held (`unheld`).
SELECT 'deferred', r.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL
FROM {schema}.runs r
WHERE r.id = ANY (%(defer)s::bigint[])
  AND r.status = 'running' AND r.worker_id = %(worker)s
  AND r.id NOT IN (SELECT d.id FROM done d)
UNION ALL
SELECT 'retried', t.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t.retry_of, NULL, NULL,
       NULL, NULL, NULL
FROM retried t
UNION ALL
-- Seconds until the next tick (of a job's own schedule or a runtime one), delayed run or
-- rate-limit token of these jobs, by the database clock; now, when this statement queued runs
-- that waited for the runs it recorded (their NOTIFY does not reach a worker that polls).
SELECT 'wakeup', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       extract(epoch FROM least(
           (SELECT clock_timestamp() FROM released r WHERE r.released > 0),
           (SELECT clock_timestamp() FROM handed h WHERE h.released > 0),
           (SELECT j.next_fire_at FROM {schema}.jobs j
            WHERE j.schedule IS NOT NULL AND j.enabled AND NOT j.paused
              AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                          WHERE wj.worker_id = %(worker)s AND wj.job = j.name
                            AND wj.schedule = j.schedule AND wj.timezone = j.timezone OFFSET 0)
            ORDER BY j.next_fire_at
            LIMIT 1),
           -- A schedule whose first tick no worker has worked out yet (a new or changed cron)
           -- is due now, as lock_due_schedules reads it.
           (SELECT coalesce(s.next_fire_at, now()) FROM {schema}.schedules s
            JOIN {schema}.jobs j ON j.name = s.job
            WHERE s.enabled AND NOT s.paused AND s.error IS NULL AND NOT j.paused
              AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                          WHERE wj.worker_id = %(worker)s AND wj.job = s.job OFFSET 0)
            ORDER BY s.next_fire_at NULLS FIRST
            LIMIT 1),
           (SELECT r.scheduled_for FROM {schema}.runs r
            WHERE r.status = 'queued' AND r.scheduled_for > r.created_at
              AND r.scheduled_for > now() AND r.queue = ANY (%(queues)s)
              AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                          WHERE wj.worker_id = %(worker)s AND wj.job = r.job OFFSET 0)
            ORDER BY r.scheduled_for
            LIMIT 1),
           -- The next token of a bucket this claim emptied, or of one empty before it.
           now() + make_interval(secs => (SELECT l.next_token_in FROM limited l)),
           (SELECT now() + make_interval(secs => min(e.next_in))
            FROM (SELECT min((1 - {schema}.rate_bucket_level(b)) / b.rate) AS next_in
                  FROM {schema}.rate_buckets b
                  WHERE (SELECT h.holds FROM held h)
                    AND CASE b.scope
                        WHEN 'queue' THEN b.name = ANY (%(queues)s)
                        ELSE EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                                     WHERE wj.worker_id = %(worker)s AND wj.job = b.name OFFSET 0)
                        END
                  GROUP BY b.scope, b.name
                  HAVING max({schema}.rate_bucket_level(b)) < 1) e)
       ) - clock_timestamp())::double precision, NULL, NULL, NULL, NULL;

-- name: heartbeat
-- Extend this worker's row, and the leases and locks of the runs it holds in memory (only
-- those: a run nobody executes must not be kept alive); return which of them it still owns,
-- whether an operator asked to cancel them, and how many jobs the worker has registered (none
-- once a reaper took it for dead: it then registers them again).
-- A run the database says this process claimed (since it registered) but that it does not hold
-- was claimed by a statement whose reply was lost with the connection: its job never started, so
-- it goes back to the queue without using an attempt. One claimed under the same worker id by an
-- earlier process is left to the reaper, like any run of a dead worker.
WITH me AS (
    UPDATE {schema}.workers
    SET heartbeat_at = now(), expires_at = now() + make_interval(secs => %(ttl)s),
        state = CASE WHEN state = 'dead' THEN 'running' ELSE state END
    WHERE id = %(worker)s
    RETURNING id
), unheld AS MATERIALIZED (
    -- The rows of the held runs that no other transaction holds, locked here. A run whose row
    -- is held (another worker's walk of the queue, a transaction left open on it) keeps the
    -- lease it has until the next heartbeat, which comes a third of a lease later: waiting for
    -- the row would stall the worker's loop.
    SELECT r.id
    FROM {schema}.runs r
    WHERE r.id = ANY (%(held)s::bigint[])
    FOR UPDATE SKIP LOCKED
), leases AS (
    UPDATE {schema}.runs
    SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE id = ANY (%(held)s::bigint[]) AND status = 'running' AND worker_id = %(worker)s
      AND id IN (SELECT u.id FROM unheld u)
    RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested
), owned AS (
    -- Still this worker's: those renewed, and those whose rows were held, as of this statement.
    SELECT l.id, l.cancel_requested FROM leases l
    UNION ALL
    SELECT r.id, r.cancel_requested_at IS NOT NULL
    FROM {schema}.runs r
    WHERE r.id = ANY (%(held)s::bigint[]) AND r.status = 'running' AND r.worker_id = %(worker)s
      AND r.id NOT IN (SELECT u.id FROM unheld u)
), strays AS (
    UPDATE {schema}.runs
    SET status = 'queued', worker_id = NULL, started_at = NULL, heartbeat_at = NULL,
        lease_expires_at = NULL, slot = NULL,
        message = format('claimed by worker %%s, whose reply was lost; back in the queue',
                         %(worker)s::text)
    WHERE status = 'running' AND worker_id = %(worker)s
      AND id <> ALL (%(held)s::bigint[]) AND started_at >= %(since)s::timestamptz
    RETURNING id
), unlocked AS (
    DELETE FROM {schema}.run_locks l USING strays WHERE l.run_id = strays.id
), locks AS (
    -- The run locks of the runs renewed above, after them: a claim that meets one of these
    -- locks waits for this statement, so this statement must not be waiting for a run that
    -- claim's walk of the queue has locked while it holds the lock row.
    UPDATE {schema}.run_locks
    SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    WHERE worker_id = %(worker)s AND run_id IN (SELECT l.id FROM leases l)
)
SELECT o.id, o.cancel_requested, registered.jobs AS registered_jobs, handed.back AS handed_back
FROM (SELECT count(*) AS jobs FROM {schema}.worker_jobs WHERE worker_id = %(worker)s) registered
CROSS JOIN (SELECT count(*) AS back FROM strays) handed
LEFT JOIN owned o ON true;

-- name: record_progress
-- The latest progress report of each run this worker executes, all in one statement, a few times
-- a second at most. Only runs still running and still this worker's: a report that arrives after
-- its run ended (a sync job still running after its timeout) or was reaped changes nothing.
-- A run of `skip` whose row another transaction holds is not waited for: its id is returned, and
-- the worker writes its report later (as it records such a run's outcome later).
WITH unheld AS MATERIALIZED (
    SELECT r.id
    FROM {schema}.runs r
    WHERE r.id = ANY (%(skip)s::bigint[])
    FOR UPDATE SKIP LOCKED
), written AS (
    UPDATE {schema}.runs r
    SET progress_done = p.done, progress_total = p.total, progress_message = p.message,
        progress_at = now()
    FROM unnest(%(ids)s::bigint[], %(done)s::bigint[], %(total)s::bigint[], %(message)s::text[])
         AS p(id, done, total, message)
    WHERE r.id = p.id AND r.status = 'running' AND r.worker_id = %(worker)s
      AND (r.id <> ALL (%(skip)s::bigint[]) OR r.id IN (SELECT u.id FROM unheld u))
)
SELECT s.id
FROM unnest(%(skip)s::bigint[]) AS s(id)
WHERE s.id NOT IN (SELECT u.id FROM unheld u);

-- name: reap_expired_leases
-- Runs whose lease expired (their worker died) become abandoned, release their locks and are
-- retried when attempts remain; workers whose heartbeat expired are marked dead.
--
-- After the server itself restarted (a crash, a failover), every lease counts from the moment it
-- came back: workers were reconnecting, not dead, and get a whole lease to heartbeat again.
WITH expired AS (
    SELECT id FROM {schema}.runs
    WHERE status = 'running' AND lease_expires_at < now()
      AND pg_postmaster_start_time() + (lease_expires_at - coalesce(heartbeat_at, started_at))
          < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE {schema}.runs r
    SET status = 'abandoned', finished_at = now(), error_type = 'LeaseExpired',
        error_message = format('lease expired at %%s on worker %%s', r.lease_expires_at, r.worker_id)
    FROM expired
    WHERE r.id = expired.id
    RETURNING r.id, r.job, r.worker_id, r.attempt, r.max_attempts, r.payload, r.parameters,
              r.priority, r.queue, r.concurrency_key, r.awaited, r.trace_context
), unlocked AS (
    DELETE FROM {schema}.run_locks l USING reaped WHERE l.run_id = reaped.id
), stale_locks AS (
    DELETE FROM {schema}.run_locks l
    WHERE l.lease_expires_at < now()
      AND NOT EXISTS (SELECT 1 FROM {schema}.runs r WHERE r.id = l.run_id AND r.status = 'running')
), retried AS (
    -- Awaited as the attempt it retries was (pgjobs.wait follows retries), in its trace.
    INSERT INTO {schema}.runs
        (job, trigger, scheduled_for, attempt, max_attempts, retry_of, payload, parameters,
         priority, queue, concurrency_key, awaited, trace_context)
    SELECT job, 'retry', now(), attempt + 1, max_attempts, id, payload, parameters, priority, queue,
           concurrency_key, awaited, trace_context
    FROM reaped
    WHERE attempt < max_attempts
    RETURNING id, retry_of
), moved AS (
    -- Runs that wait for a retried attempt wait for its retry.
    UPDATE {schema}.run_dependencies e
    SET depends_on = t.id
    FROM retried t
    WHERE e.depends_on = t.retry_of
), released AS (
    -- Abandoned for good (no attempt left): the runs that wait for them are released or
    -- cancelled (release_dependants), as when a worker records an end.
    SELECT {schema}.release_dependants(w.ids, array_fill('abandoned'::text,
                                                          ARRAY[cardinality(w.ids)])) AS released
    FROM (SELECT ARRAY(SELECT x.id FROM reaped x
                       WHERE x.attempt >= x.max_attempts
                         AND EXISTS (SELECT 1 FROM {schema}.run_dependencies e
                                     WHERE e.depends_on = x.id)) AS ids) w
    WHERE cardinality(w.ids) > 0
), dead AS (
    UPDATE {schema}.workers
    SET state = 'dead'
    WHERE state IN ('running', 'stopping') AND expires_at < now()
    RETURNING id
), forgotten AS (
    -- A dead worker's registrations go; a worker that was only late registers again.
    DELETE FROM {schema}.worker_jobs wj USING dead WHERE wj.worker_id = dead.id
)
SELECT (SELECT count(*) FROM reaped) AS reaped, (SELECT count(*) FROM retried) AS retried,
       (SELECT count(*) FROM dead) AS dead_workers,
       -- Whether the planner's statistics of runs are missing or behind. Behind: the table holds
       -- more than twice the rows they say (every cached plan was made for a smaller table: made
       -- for an empty queue, the claim reads all of runs on every claim until the next ANALYZE),
       -- or many rows changed since the last ANALYZE, over 5 s ago (autovacuum off or lagging:
       -- with no statistics the planner takes a queue of thousands for a handful of rows and
       -- sorts it on every claim; a busy table changes that much every few seconds, and plans
       -- left stale for longer let claims of a deep queue take seconds).
       (SELECT c.reltuples < 0
               OR s.n_live_tup > greatest(1000, 2 * c.reltuples)
               OR (s.n_mod_since_analyze > greatest(1000, c.reltuples * 0.2)
                   AND coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity')
                       < now() - interval '5 seconds')
        FROM pg_class c
        JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.oid = '{schema}.runs'::regclass) AS statistics_stale,
       (SELECT coalesce(sum(r.released), 0)::integer FROM released r) AS released;

-- name: settle_blocked
-- The safety net of workflows (see settle_blocked in sql/0014_workflows.up.sql): at most `batch`
-- blocked runs after `after_id`, settled when their dependencies have all ended.
SELECT settled, last_id FROM {schema}.settle_blocked(%(batch)s, %(after_id)s);

-- name: hand_back_runs
-- At shutdown, runs this worker could not finish go back to the queue for another worker.
WITH back AS (
    UPDATE {schema}.runs
    SET status = 'queued', worker_id = NULL, started_at = NULL, heartbeat_at = NULL,
        lease_expires_at = NULL, slot = NULL, message = %(message)s
    WHERE id = ANY (%(ids)s) AND status = 'running' AND worker_id = %(worker)s
    RETURNING id, job
), unlocked AS (
    DELETE FROM {schema}.run_locks l USING back WHERE l.run_id = back.id
)
SELECT count(*) FROM back;

-- name: deregister_worker
-- A worker that stops says so and takes its registered jobs with it.
WITH stopped AS (
    UPDATE {schema}.workers SET state = 'stopped', stopped_at = now() WHERE id = %(worker)s
)
DELETE FROM {schema}.worker_jobs WHERE worker_id = %(worker)s;

-- name: wake_channel
-- The channel on which this worker alone is woken (see notify_runs_inserted).
SELECT {schema}.wake_channel(%(channel)s, %(worker)s);

-- name: notify
SELECT pg_notify(%(channel)s, %(message)s);

-- name: analyze_runs_once
-- One worker at a time refreshes the statistics; the others carry on.
SELECT pg_try_advisory_xact_lock(hashtext(%(table)s));

-- name: analyze_runs
-- SKIP_LOCKED: never wait for an autovacuum of runs, which the wait would cancel.
ANALYZE (SKIP_LOCKED) {schema}.runs;
