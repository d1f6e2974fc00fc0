-- run_waits as revision 0006 made it.
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


DROP FUNCTION {schema}.settle_blocked(integer, bigint);
DROP FUNCTION {schema}.release_dependants(bigint[], text[]);
DROP FUNCTION {schema}.latest_attempt(bigint);
DROP INDEX {schema}.runs_blocked_idx;
DROP TABLE {schema}.run_dependencies;
-- The schema before workflows knows no blocked run: what still waits is cancelled.
UPDATE {schema}.runs
SET status = 'cancelled', finished_at = now(), message = 'cancelled: pgjobs was downgraded'
WHERE status = 'blocked';
ALTER TABLE {schema}.runs
    DROP COLUMN blocked_by,
    DROP CONSTRAINT runs_status_check,
    ADD CONSTRAINT runs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
        'timed_out', 'cancelled', 'skipped', 'abandoned'));
