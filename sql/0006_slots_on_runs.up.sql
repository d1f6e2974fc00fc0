-- pgjobs schema, revision 0006: the concurrency slots of limited jobs (`max_concurrency`, a
-- concurrency key) live on their runs. A running run holds slot `slot` of its group (its job, or
-- its job and key) from its claim to its end; the slot is free again as soon as the run stops
-- running (an outcome, a reaped lease, a hand-back), with no row of its own to insert, renew or
-- delete. `run_locks` keeps the one lock of a job that only forbids overlap (`skip`).

ALTER TABLE {schema}.runs ADD COLUMN slot integer;
COMMENT ON COLUMN {schema}.runs.slot IS
    'The concurrency slot of its job (or key) a limited run holds while running';

-- A slot is held once: the claim checks that it is free, and this index makes sure of it.
CREATE UNIQUE INDEX runs_slot_idx ON {schema}.runs (job, coalesce(concurrency_key, ''), slot)
    WHERE status = 'running' AND slot IS NOT NULL;

-- Slots held in run_locks by running runs of limited jobs move onto the runs.
WITH moved AS (
    DELETE FROM {schema}.run_locks l
    USING {schema}.jobs j
    WHERE j.name = l.job AND (j.max_concurrency IS NOT NULL OR j.concurrency_key IS NOT NULL)
    RETURNING l.run_id, l.slot
)
UPDATE {schema}.runs r SET slot = m.slot
FROM moved m
WHERE r.id = m.run_id AND r.status = 'running';

-- The transaction-level advisory lock a claim takes a slot under, tried without waiting: a claim
-- at the same instant holds the slots it is taking, and others pass over them. (A plain
-- expression, inlined where it is used.)
CREATE FUNCTION {schema}.try_slot_lock(job text, lock_key text, slot bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pg_try_advisory_xact_lock(hashtextextended(format('pgjobs slot %s/%s', job, lock_key),
                                                      slot))
$$;

-- Of the slots a claim tried (`ids` paired with `slots`, each taken under its advisory lock), those
-- that no running run holds, as of now: a claim that committed one of them after the trying
-- statement's snapshot was taken shows here. A statement of its own, so a snapshot of its own.
CREATE FUNCTION {schema}.unheld_slots(ids bigint[], slots integer[])
RETURNS TABLE (run_id bigint, run_slot integer)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RETURN QUERY
    SELECT c.id, c.slot
    FROM unnest(ids, slots) AS c(id, slot)
    JOIN {schema}.runs r ON r.id = c.id
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.runs h
                      WHERE h.job = r.job
                        AND coalesce(h.concurrency_key, '') = coalesce(r.concurrency_key, '')
                        AND h.slot = c.slot AND h.status = 'running' AND h.slot IS NOT NULL);
END
$$;

-- The worker's claim debits the rate buckets itself, in the statement that claims the runs.
--
-- A bucket of a high rate is split into shards (rows of rate/K and burst/K that together make
-- the bucket): claims of several workers at the same instant each debit a shard of its own
-- instead of queueing for one row until the other commits. Together the shards never allow
-- more than the bucket: burst + rate x t starts in any t seconds.
ALTER TABLE {schema}.rate_buckets
    ADD COLUMN shard smallint NOT NULL DEFAULT 0,
    DROP CONSTRAINT rate_buckets_pkey,
    ADD CONSTRAINT rate_buckets_pkey PRIMARY KEY (scope, name, shard);
DROP FUNCTION {schema}.claim_limited(bigint[], text, double precision);

-- Why each queued run waits (see revision 0005): a limited job's group is full when its running
-- runs hold every slot; a job that only forbids overlap, when its run lock is held.
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
           WHEN tb.job_available < 1 OR tb.queue_available < 1 THEN 'rate limit'
           ELSE 'worker'
       END AS waiting_for,
       CASE
           WHEN r.scheduled_for > now() THEN NULL
           WHEN j.paused OR q.paused THEN NULL
           WHEN slots.taken >= coalesce(j.max_concurrency, 1) THEN
               format('%s of %s running%s', slots.taken, coalesce(j.max_concurrency, 1),
                      CASE WHEN coalesce(r.concurrency_key, '') <> ''
                           THEN format(' for key %s', r.concurrency_key) ELSE '' END)
           WHEN tb.job_available < 1 THEN
               format('job %s: next token in %ss', r.job, round(tb.job_next_in::numeric, 3))
           WHEN tb.queue_available < 1 THEN
               format('queue %s: next token in %ss', r.queue, round(tb.queue_next_in::numeric, 3))
       END AS detail,
       extract(epoch FROM now() - r.scheduled_for)::double precision AS waiting_seconds
FROM {schema}.runs r
LEFT JOIN {schema}.jobs j ON j.name = r.job
LEFT JOIN {schema}.queues q ON q.name = r.queue
LEFT JOIN LATERAL (
    SELECT CASE WHEN j.max_concurrency IS NOT NULL OR j.concurrency_key IS NOT NULL
                THEN (SELECT count(*) FROM {schema}.runs h
                      WHERE h.job = r.job
                        AND coalesce(h.concurrency_key, '') = coalesce(r.concurrency_key, '')
                        AND h.status = 'running' AND h.slot IS NOT NULL)
                WHEN j.overlap = 'skip'
                THEN (SELECT count(*) FROM {schema}.run_locks l WHERE l.job = r.job)
                ELSE 0
           END AS taken
) slots ON true
-- The run's job's and queue's buckets: one has a token when one of its shards has; its next
-- token is its shards' first.
LEFT JOIN LATERAL (
    SELECT max(b.level) FILTER (WHERE b.scope = 'job') AS job_available,
           min(b.next_in) FILTER (WHERE b.scope = 'job') AS job_next_in,
           max(b.level) FILTER (WHERE b.scope = 'queue') AS queue_available,
           min(b.next_in) FILTER (WHERE b.scope = 'queue') AS queue_next_in
    FROM (SELECT b.scope, {schema}.rate_bucket_level(b) AS level,
                 (1 - {schema}.rate_bucket_level(b)) / b.rate AS next_in
          FROM {schema}.rate_buckets b
          WHERE (b.scope, b.name) IN (('job', r.job), ('queue', r.queue))) b
) tb ON true
WHERE r.status = 'queued';
