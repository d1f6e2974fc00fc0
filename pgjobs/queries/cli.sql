-- Named queries of the command line. `{schema}` is the quoted pgjobs schema; parameters are bound.
-- Reads go through the job_status and run_history views where they can, so what the CLI shows is
-- what an operator gets from psql.

-- name: list_jobs
-- Every job in the database with its status and limits, optionally only those carrying a tag.
SELECT s.name, s.extension, j.description, s.schedule, j.schedule_source, s.timezone, s.enabled,
       s.paused, j.paused_at, j.tags, s.registered, s.next_fire_at, j.last_tick_at,
       j.registered_by, j.registered_at, s.last_status, s.last_finished_at, s.running_now,
       s.queued_now, j.max_attempts, j.priority, j.queue, s.queue_paused, j.overlap,
       j.max_concurrency, j.concurrency_key, j.rate_limit
FROM {schema}.job_status s
JOIN {schema}.jobs j ON j.name = s.name
WHERE %(tag)s::text IS NULL OR %(tag)s::text = ANY (j.tags)
ORDER BY s.name;

-- name: run_job_names
-- Every job name that has runs (jobs no worker registered may have manual runs): a skip scan of
-- the (job, id) index, one probe per distinct job rather than a scan of every run.
WITH RECURSIVE names(job) AS (
    (SELECT job FROM {schema}.runs ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT r.job FROM {schema}.runs r WHERE r.job > n.job ORDER BY r.job LIMIT 1)
    FROM names n
    WHERE n.job IS NOT NULL
)
SELECT job FROM names WHERE job IS NOT NULL;

-- name: get_job
-- One job's full definition, as the last worker that registered it wrote it.
SELECT j.*, s.registered
FROM {schema}.jobs j
JOIN {schema}.job_status s ON s.name = j.name
WHERE j.name = %(job)s;

-- name: job_status
-- The job_status view, with the latest finished outcomes of each job (newest first).
SELECT s.*,
       coalesce((SELECT array_agg(x.status ORDER BY x.id DESC)
                 FROM (SELECT r.id, r.status FROM {schema}.runs r
                       WHERE r.job = s.name AND r.status NOT IN ('queued', 'running')
                       ORDER BY r.id DESC
                       LIMIT %(recent)s) x),
                ARRAY[]::text[]) AS recent
FROM {schema}.job_status s
WHERE %(job)s::text IS NULL OR s.name = %(job)s::text
ORDER BY s.name;

-- name: pause_job
-- The runtime switch: a paused job's ticks are not materialised (its watermark stays where it
-- is) and its queued runs of every trigger are held; running runs finish. Guarded by the state it
-- changes, so no row back means it was paused already; the trigger on `paused` wakes the workers.
WITH paused AS (
    UPDATE {schema}.jobs j
    SET paused = true, paused_at = now(), updated_at = now()
    WHERE j.name = %(job)s AND NOT j.paused
    RETURNING j.name, j.paused_at
)
SELECT p.name, p.paused_at,
       count(r.id) FILTER (WHERE r.status = 'queued') AS queued,
       count(r.id) FILTER (WHERE r.status = 'running') AS running
FROM paused p
LEFT JOIN {schema}.runs r ON r.job = p.name AND r.status IN ('queued', 'running')
GROUP BY p.name, p.paused_at;

-- name: resume_job
-- Resuming keeps the watermark, so the job's misfire policy decides about the ticks it missed,
-- and releases its queued runs but those in a paused queue (`held`, in `held_queues`).
-- `queue_paused`: the job's own queue, where its next runs go, is paused. No row back: it was
-- not paused.
UPDATE {schema}.jobs j
SET paused = false, paused_at = NULL, updated_at = now()
WHERE j.name = %(job)s AND j.paused
RETURNING j.name, j.schedule, j.next_fire_at, j.misfire, j.queue,
          coalesce((SELECT q.paused FROM {schema}.queues q WHERE q.name = j.queue), false)
              AS queue_paused,
          (SELECT count(*) FROM {schema}.runs r
           WHERE r.job = j.name AND r.status = 'queued') AS queued,
          (SELECT count(*) FROM {schema}.runs r
           JOIN {schema}.queues q ON q.name = r.queue AND q.paused
           WHERE r.job = j.name AND r.status = 'queued') AS held,
          ARRAY(SELECT DISTINCT r.queue FROM {schema}.runs r
                JOIN {schema}.queues q ON q.name = r.queue AND q.paused
                WHERE r.job = j.name AND r.status = 'queued'
                ORDER BY r.queue) AS held_queues;

-- name: job_controls
-- What holds one job's runs back now, for `jobs show` and the dashboard's job page: its queue's
-- pause and rate limit, its running runs per concurrency key (the busiest first, at most
-- %(keys)s of them, and how many keys in all), and the tokens left in its and its queue's rate
-- buckets (filled up to now, as the claim sees them; NULL for a bucket no claim made yet).
SELECT coalesce(q.paused, false) AS queue_paused, q.paused_at AS queue_paused_at,
       q.rate_limit AS queue_rate_limit,
       coalesce(k.running, 0)::bigint AS running_now,
       coalesce(k.keys, 0) AS running_keys,
       coalesce(k.busiest, '[]'::jsonb) AS running_by_key,
       b.job_tokens, b.queue_tokens
FROM {schema}.jobs j
LEFT JOIN {schema}.queues q ON q.name = j.queue
LEFT JOIN LATERAL (
    SELECT sum(g.running) AS running, count(*) AS keys,
           jsonb_agg(jsonb_build_object('key', g.key, 'running', g.running)
                     ORDER BY g.running DESC, g.key) FILTER (WHERE g.rank <= %(keys)s) AS busiest
    FROM (
        SELECT r.concurrency_key AS key, count(*) AS running,
               row_number() OVER (ORDER BY count(*) DESC, r.concurrency_key) AS rank
        FROM {schema}.runs r
        WHERE r.job = j.name AND r.status = 'running'
        GROUP BY r.concurrency_key
    ) g
) k ON true
LEFT JOIN LATERAL (
    -- A bucket's whole tokens, over its shards.
    SELECT sum(floor(t.available)) FILTER (WHERE t.scope = 'job') AS job_tokens,
           sum(floor(t.available)) FILTER (WHERE t.scope = 'queue') AS queue_tokens
    FROM (
        SELECT b.scope, least(b.burst, b.tokens + b.rate
                   * greatest(0, extract(epoch FROM now() - b.updated_at))) AS available
        FROM {schema}.rate_buckets b
        WHERE (b.scope, b.name) IN (('job', j.name), ('queue', j.queue))
    ) t
) b ON true
WHERE j.name = %(job)s;

-- name: list_runs
-- Past and current runs, newest first, from the run_history view.
SELECT h.*, r.created_at, r.parameters, r.cancel_requested_at
FROM {schema}.run_history h
JOIN {schema}.runs r ON r.id = h.id
WHERE (%(job)s::text IS NULL OR h.job = %(job)s::text)
  AND (%(status)s::text IS NULL OR h.status = %(status)s::text)
  AND (%(since)s::double precision IS NULL
       OR r.created_at >= now() - make_interval(secs => %(since)s::double precision))
ORDER BY h.id DESC
LIMIT %(limit)s;

-- name: get_run
-- One run with everything stored about it, its worker's host and the runs that retried it.
SELECT r.*, w.host, w.pid,
       extract(epoch FROM r.started_at - r.scheduled_for)::double precision AS lag_seconds,
       coalesce((SELECT array_agg(x.id ORDER BY x.id) FROM {schema}.runs x WHERE x.retry_of = r.id),
                ARRAY[]::bigint[]) AS retried_by
FROM {schema}.runs r
LEFT JOIN {schema}.workers w ON w.id = r.worker_id
WHERE r.id = %(id)s;

-- name: start_manual_run
-- A manual run executed by the command line itself: it starts running at once, owned by the CLI
-- process, with a lease that the CLI extends while the job runs.
INSERT INTO {schema}.runs
    (job, trigger, scheduled_for, status, max_attempts, payload, parameters, priority, queue,
     concurrency_key, worker_id, started_at, heartbeat_at, lease_expires_at)
VALUES (%(job)s, 'manual', now(), 'running', %(max_attempts)s, %(payload)s, %(parameters)s,
        %(priority)s, %(queue)s, %(concurrency_key)s, %(worker)s, clock_timestamp(), now(),
        now() + make_interval(secs => %(lease)s))
RETURNING id, job, trigger, scheduled_for, attempt, max_attempts, payload, parameters, started_at;

-- name: queue_manual_run
-- A manual run handed to the workers; the insert trigger wakes them when the transaction commits.
-- Its concurrency key is the payload's field that the job's row names, as for an enqueue.
INSERT INTO {schema}.runs
    (job, trigger, scheduled_for, max_attempts, payload, parameters, priority, queue,
     concurrency_key)
SELECT %(job)s, 'manual', now(), %(max_attempts)s, %(payload)s, %(parameters)s, %(priority)s,
       %(queue)s,
       (SELECT %(payload)s::jsonb ->> j.concurrency_key FROM {schema}.jobs j
        WHERE j.name = %(job)s AND j.concurrency_key NOT LIKE 'callable:%%')
RETURNING id;

-- name: take_run_lock
-- The lock of a job that forbids overlap, for a manual run; a lock whose lease expired (its holder
-- stopped heartbeating) is taken over. No row back means the lock is held.
INSERT INTO {schema}.run_locks AS l
    (job, lock_key, slot, run_id, worker_id, acquired_at, lease_expires_at)
VALUES (%(job)s, '', 1, %(run_id)s, %(worker)s, now(), now() + make_interval(secs => %(lease)s))
ON CONFLICT (job, lock_key, slot) DO UPDATE
SET run_id = excluded.run_id, worker_id = excluded.worker_id, acquired_at = excluded.acquired_at,
    lease_expires_at = excluded.lease_expires_at
WHERE l.lease_expires_at < now()
RETURNING run_id;

-- name: run_lock_holder
SELECT run_id, worker_id
FROM {schema}.run_locks
WHERE job = %(job)s AND lock_key = '' AND slot = 1;

-- name: try_slot
-- A concurrency slot of a limited job for a manual run, as a worker's claim tries one: the lowest
-- of its key's `slots` that no running run holds, with its advisory lock (not waited for). No row
-- back means every slot is held (or being taken).
SELECT n::integer AS slot
FROM unnest(array_fill(true, ARRAY[%(slots)s::integer])) WITH ORDINALITY AS s(_, n)
WHERE CASE WHEN NOT EXISTS (SELECT 1 FROM {schema}.runs h
                            WHERE h.job = %(job)s AND coalesce(h.concurrency_key, '') = %(lock_key)s
                              AND h.slot = n AND h.status = 'running' AND h.slot IS NOT NULL)
           THEN {schema}.try_slot_lock(%(job)s, %(lock_key)s, n)
      END
LIMIT 1;

-- name: hold_slot
-- The manual run takes the slot try_slot found, unless a claim committed it since (unheld_slots
-- looks again, as a worker's claim does). No row back means it was taken.
UPDATE {schema}.runs SET slot = %(slot)s
WHERE id = %(run_id)s
  AND id IN (SELECT u.run_id FROM {schema}.unheld_slots(ARRAY[%(run_id)s::bigint],
                                                        ARRAY[%(slot)s::integer]) u)
RETURNING slot;

-- name: slot_holder
SELECT id AS run_id, worker_id
FROM {schema}.runs
WHERE job = %(job)s AND coalesce(concurrency_key, '') = %(lock_key)s AND status = 'running'
  AND slot IS NOT NULL
ORDER BY slot
LIMIT 1;

-- name: run_progress
-- What `jobs run --wait` follows: a run's state and the retry that replaced it, if any.
SELECT r.id, r.job, r.status, r.attempt, r.worker_id, r.started_at, r.finished_at,
       r.duration_seconds, r.message, r.data, r.items_processed, r.items_failed, r.error_type,
       r.error_message,
       (SELECT min(x.id) FROM {schema}.runs x WHERE x.retry_of = r.id) AS retry_id
FROM {schema}.runs r
WHERE r.id = %(id)s;

-- name: cancel_queued_run
-- A queued or blocked run leaves the queue at once. The runs that wait for it are cancelled in
-- turn, transitively, but for those that run after any outcome of it, which it releases
-- (release_dependants).
WITH cancelled AS (
    UPDATE {schema}.runs
    SET status = 'cancelled', finished_at = now(), cancel_requested_at = now(),
        message = 'cancelled by operator before it started'
    WHERE id = %(id)s AND status IN ('queued', 'blocked')
    RETURNING id
)
SELECT c.id, {schema}.release_dependants(ARRAY[c.id], ARRAY['cancelled']) AS released
FROM cancelled c;

-- name: request_run_cancel
-- A running run is marked; its worker sees the mark at its next heartbeat and cancels the job.
UPDATE {schema}.runs
SET cancel_requested_at = coalesce(cancel_requested_at, now())
WHERE id = %(id)s AND status = 'running'
RETURNING id, worker_id, lease_expires_at;

-- name: retry_run
-- A finished, unsuccessful run queued again as a new attempt with the same work (its concurrency
-- key, which its job's limit counts it by, and its trace); the original stays as it was. Guarded
-- by the states that may be retried.
INSERT INTO {schema}.runs
    (job, trigger, scheduled_for, attempt, max_attempts, retry_of, payload, parameters, priority,
     queue, concurrency_key, trace_context)
SELECT r.job, 'retry', now(), r.attempt + 1, greatest(r.max_attempts, r.attempt + 1), r.id,
       r.payload, r.parameters, r.priority, r.queue, r.concurrency_key, r.trace_context
FROM {schema}.runs r
WHERE r.id = %(id)s AND r.status IN ('failed', 'timed_out', 'abandoned', 'cancelled')
RETURNING id, job, attempt;

-- name: list_run_waits
-- Queued runs with what each waits for (the run_waits view), the longest waiting first or the
-- newest first, optionally of one job, one queue, one reason or one run.
SELECT w.id, w.job, w.queue, w.trigger, w.priority, w.scheduled_for, w.concurrency_key,
       w.waiting_for, w.detail, w.waiting_seconds
FROM {schema}.run_waits w
WHERE (%(job)s::text IS NULL OR w.job = %(job)s::text)
  AND (%(queue)s::text IS NULL OR w.queue = %(queue)s::text)
  AND (%(reason)s::text IS NULL OR w.waiting_for = %(reason)s::text)
  AND (%(id)s::bigint IS NULL OR w.id = %(id)s::bigint)
ORDER BY CASE WHEN %(newest)s THEN w.scheduled_for END DESC,
         CASE WHEN %(newest)s THEN w.id END DESC,
         w.scheduled_for, w.id
LIMIT %(limit)s;

-- name: pause_queue
-- Hold every queued run of a queue, of any job and trigger; running runs finish. A queue without
-- a row (running and unlimited) gets one. Guarded by the state it changes: no row back means it
-- was paused already. The trigger on `queues` wakes the workers.
WITH paused AS (
    INSERT INTO {schema}.queues AS q (name, paused, paused_at, updated_at)
    VALUES (%(queue)s, true, now(), now())
    ON CONFLICT (name) DO UPDATE
    SET paused = true, paused_at = now(), updated_at = now()
    WHERE NOT q.paused
    RETURNING q.name, q.paused_at
)
SELECT p.name, p.paused_at,
       count(r.id) FILTER (WHERE r.status = 'queued') AS queued,
       count(r.id) FILTER (WHERE r.status = 'running') AS running
FROM paused p
LEFT JOIN {schema}.runs r ON r.queue = p.name AND r.status IN ('queued', 'running')
GROUP BY p.name, p.paused_at;

-- name: resume_queue
-- Release a paused queue's runs (its row stays, with its rate limit), except those of jobs paused
-- on their own, which it names. No row back: it was not paused.
UPDATE {schema}.queues q
SET paused = false, paused_at = NULL, updated_at = now()
WHERE q.name = %(queue)s AND q.paused
RETURNING q.name,
          (SELECT count(*) FROM {schema}.runs r
           WHERE r.queue = q.name AND r.status = 'queued') AS queued,
          ARRAY(SELECT j.name FROM {schema}.jobs j WHERE j.queue = q.name AND j.paused
                ORDER BY j.name) AS paused_jobs;

-- name: get_queue
-- One queue's row (NULL columns for a queue without one) and whether anything uses it: a job,
-- a queued or running run, a live worker.
SELECT %(queue)s::text AS name, coalesce(q.paused, false) AS paused, q.paused_at, q.rate_limit,
       EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.queue = %(queue)s::text)
       OR EXISTS (SELECT 1 FROM {schema}.runs r
                  WHERE r.queue = %(queue)s::text AND r.status IN ('queued', 'running'))
       OR EXISTS (SELECT 1 FROM {schema}.workers w
                  WHERE %(queue)s::text = ANY (w.queues) AND w.state = 'running'
                    AND w.expires_at > now()) AS in_use
FROM (SELECT 1) one
LEFT JOIN {schema}.queues q ON q.name = %(queue)s::text;

-- name: list_workers
-- Workers with their liveness and how many runs each is executing now.
SELECT w.id, w.host, w.pid, w.version, w.queues, w.concurrency,
       ARRAY(SELECT wj.job FROM {schema}.worker_jobs wj WHERE wj.worker_id = w.id ORDER BY wj.job)
           AS jobs,
       w.state, w.started_at,
       w.heartbeat_at, w.expires_at, w.stopped_at,
       (w.state IN ('running', 'stopping') AND w.expires_at > now()) AS live,
       (SELECT count(*) FROM {schema}.runs r
        WHERE r.status = 'running' AND r.worker_id = w.id) AS running_now
FROM {schema}.workers w
WHERE %(all)s OR (w.state IN ('running', 'stopping') AND w.expires_at > now())
ORDER BY w.started_at, w.id;

-- name: database_version
SELECT current_setting('server_version');

-- name: run_dependency_lists
-- A run's dependencies (the runs it waits for; `any_outcome`: after_any, any end will do) and its
-- dependants (the runs that wait for it), each in id order, at most %(limit)s of each, with how
-- many there are in all (counted on the run_dependencies indexes alone): `runs show` and the
-- dashboard's run page. An edge always names a dependency's latest attempt.
SELECT (SELECT count(*) FROM {schema}.run_dependencies d WHERE d.run_id = %(id)s)
           AS dependencies_total,
       (SELECT count(*) FROM {schema}.run_dependencies d WHERE d.depends_on = %(id)s)
           AS dependants_total,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'id', x.id, 'job', x.job, 'status', x.status,
                            'blocked_by', x.blocked_by, 'any_outcome', x.any_outcome)
                        ORDER BY x.id)
                 FROM (SELECT r.id, r.job, r.status, r.blocked_by, d.any_outcome
                       FROM {schema}.run_dependencies d
                       JOIN {schema}.runs r ON r.id = d.depends_on
                       WHERE d.run_id = %(id)s
                       ORDER BY d.depends_on
                       LIMIT %(limit)s) x), '[]'::jsonb) AS dependencies,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'id', x.id, 'job', x.job, 'status', x.status,
                            'blocked_by', x.blocked_by, 'any_outcome', x.any_outcome)
                        ORDER BY x.id)
                 FROM (SELECT r.id, r.job, r.status, r.blocked_by, d.any_outcome
                       FROM {schema}.run_dependencies d
                       JOIN {schema}.runs r ON r.id = d.run_id
                       WHERE d.depends_on = %(id)s
                       ORDER BY d.run_id
                       LIMIT %(limit)s) x), '[]'::jsonb) AS dependants;

-- name: run_graph
-- The workflow a run belongs to: the runs reached from it along edges either way, nearest
-- first (the walk goes breadth first, and its UNION drops a run reached twice, so a diamond
-- ends), at most %(limit)s of them, and the edges between those. The walk is read only as far
-- as the LIMIT needs: a graph of a million runs costs a thousand steps. The runs found are
-- kept in an array, in the order found, and read by primary key (`= ANY`), never by a join
-- that could scan the runs between their ids. `cut`: the walk found more runs than it shows.
-- Per run, `dependencies` and `dependants` count all its edges (on the indexes alone), so a
-- run at the rim of a cut graph shows how many of its neighbours are left out.
WITH RECURSIVE walk(id) AS (
    SELECT r.id FROM {schema}.runs r WHERE r.id = %(id)s
    UNION
    SELECT n.id
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT d.depends_on AS id FROM {schema}.run_dependencies d WHERE d.run_id = w.id
        UNION ALL
        SELECT d.run_id FROM {schema}.run_dependencies d WHERE d.depends_on = w.id
    ) n
),
found AS MATERIALIZED (
    SELECT ARRAY(SELECT w.id FROM walk w LIMIT %(limit)s + 1) AS ids
),
shown AS MATERIALIZED (
    SELECT f.ids[1:%(limit)s] AS ids, cardinality(f.ids) > %(limit)s AS cut FROM found f
)
SELECT r.id, r.job, r.status, r.blocked_by, r.attempt, r.retry_of, r.created_at,
       r.finished_at, left(r.message, 300) AS message, r.error_type,
       left(r.error_message, 300) AS error_message,
       (SELECT count(*) FROM {schema}.run_dependencies d WHERE d.run_id = r.id) AS dependencies,
       (SELECT count(*) FROM {schema}.run_dependencies d WHERE d.depends_on = r.id) AS dependants,
       ARRAY(SELECT d.depends_on FROM {schema}.run_dependencies d
             WHERE d.run_id = r.id AND NOT d.any_outcome AND d.depends_on = ANY (s.ids)
             ORDER BY d.depends_on) AS after,
       ARRAY(SELECT d.depends_on FROM {schema}.run_dependencies d
             WHERE d.run_id = r.id AND d.any_outcome AND d.depends_on = ANY (s.ids)
             ORDER BY d.depends_on) AS after_any,
       s.cut
FROM shown s
JOIN {schema}.runs r ON r.id = ANY (s.ids)
ORDER BY r.id;

-- name: walk_planner_settings
-- For the rest of the transaction, how run_graph is planned. Every step of its walk is an index
-- probe, but the estimates of a recursive query are far above its real cost, and a skewed
-- run_dependencies (one run with most of the dependants) makes the planner guess that a probe
-- returns most of the table: it would then pick a sequential scan per step, and JIT compilation
-- of hundreds of milliseconds for a statement that runs in a few.
SELECT set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true);
