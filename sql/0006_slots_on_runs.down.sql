-- Back to revision 0005: the slots of limited jobs are rows of run_locks again.

-- Why each queued run waits, for people and for `runs waits`: the first that applies of
--   'scheduled'      its time has not come (a delayed run, a retry in back-off);
--   'job paused'     `jobs pause`;
--   'queue paused'   `queues pause`;
--   'concurrency'    its job (or its key) has every slot taken: `detail` says by how many runs;
--   'rate limit'     its job's or its queue's bucket is empty: `detail` says when the next token is;
--   'worker'         nothing holds it: a worker that serves its queue and has a free slot takes it.
CREATE OR REPLACE VIEW {schema}.run_waits AS
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

DROP FUNCTION {schema}.unheld_slots(bigint[], integer[]);
DROP FUNCTION {schema}.try_slot_lock(text, text, bigint);

-- The slots held by running runs become run_locks rows, with the runs' leases.
INSERT INTO {schema}.run_locks
    (job, lock_key, slot, run_id, worker_id, acquired_at, lease_expires_at)
SELECT r.job, coalesce(r.concurrency_key, ''), r.slot, r.id, coalesce(r.worker_id, ''),
       coalesce(r.started_at, now()), coalesce(r.lease_expires_at, now())
FROM {schema}.runs r
WHERE r.status = 'running' AND r.slot IS NOT NULL
ON CONFLICT (job, lock_key, slot) DO NOTHING;

-- The shards of each bucket become one row again.
UPDATE {schema}.rate_buckets b
SET rate = s.rate, burst = s.burst, tokens = s.tokens
FROM (SELECT scope, name, sum(rate) AS rate, sum(burst) AS burst, sum(tokens) AS tokens
      FROM {schema}.rate_buckets GROUP BY scope, name) s
WHERE b.scope = s.scope AND b.name = s.name AND b.shard = 0;
DELETE FROM {schema}.rate_buckets WHERE shard <> 0;
ALTER TABLE {schema}.rate_buckets
    DROP CONSTRAINT rate_buckets_pkey,
    DROP COLUMN shard,
    ADD CONSTRAINT rate_buckets_pkey PRIMARY KEY (scope, name);

DROP INDEX {schema}.runs_slot_idx;
ALTER TABLE {schema}.runs DROP COLUMN slot;
