-- pgjobs schema, revision 0014: workflows, runs that wait for other runs.
--
-- A run enqueued `after` other runs is inserted `blocked`, with `blocked_by` counting its
-- dependencies not yet satisfied, and one row of run_dependencies per dependency. The claim
-- only takes `queued` runs: a blocked run costs it nothing. Every statement that ends a run for
-- good (a worker's finish, a reap, a skipped tick, an operator's cancel) calls
-- release_dependants for the ended runs that have dependants: it counts their dependants down
-- and queues those that reach 0, or cancels them (transitively) when a dependency they needed
-- to succeed did not. A statement that retries a run moves its edges to the retry, so a
-- dependant waits for the last attempt.
ALTER TABLE {schema}.runs
    DROP CONSTRAINT runs_status_check,
    ADD CONSTRAINT runs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
        'timed_out', 'cancelled', 'skipped', 'abandoned', 'blocked')),
    ADD COLUMN blocked_by integer;

COMMENT ON COLUMN {schema}.runs.blocked_by IS
    'NULL: the run has no dependencies. Otherwise how many of its dependencies are not yet satisfied; a blocked run is queued when it reaches 0.';

-- One row per edge: `run_id` waits for `depends_on` (always the dependency's latest attempt).
CREATE TABLE {schema}.run_dependencies (
    run_id      bigint NOT NULL
                CONSTRAINT run_dependencies_run_id_fkey
                REFERENCES {schema}.runs (id) ON DELETE CASCADE,
    depends_on  bigint NOT NULL
                CONSTRAINT run_dependencies_depends_on_fkey
                REFERENCES {schema}.runs (id) ON DELETE CASCADE,
    any_outcome boolean NOT NULL DEFAULT false,
    CONSTRAINT run_dependencies_pkey PRIMARY KEY (run_id, depends_on)
);

COMMENT ON TABLE {schema}.run_dependencies IS
    'Edges of workflows: run_id waits for depends_on (its latest attempt) to succeed, or with any_outcome to end whatever its outcome.';

-- The runs that wait for a run that just ended, and what deleting a run cascades to.
CREATE INDEX run_dependencies_depends_on_idx ON {schema}.run_dependencies (depends_on);

-- The safety net (settle_blocked) and run_waits read the blocked runs alone.
CREATE INDEX runs_blocked_idx ON {schema}.runs (id) WHERE status = 'blocked';

-- The latest attempt of run `id`: the run itself, or the last of the retries that follow it.
-- An edge always points at a dependency's latest attempt: a dependant waits for the last one.
CREATE FUNCTION {schema}.latest_attempt(id bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT r.id, 1 AS depth FROM {schema}.runs r WHERE r.id = latest_attempt.id
        UNION ALL
        SELECT x.id, c.depth + 1
        FROM chain c JOIN {schema}.runs x ON x.retry_of = c.id
        WHERE c.depth < 1000
    )
    SELECT c.id FROM chain c ORDER BY c.depth DESC, c.id DESC LIMIT 1
$$;

-- The runs `ids` just ended for good (no retry follows them), each with the status it ended in
-- (`statuses`, as the caller wrote it): their dependants are counted down (and queued at 0) where
-- the edge is satisfied, cancelled where it failed, and the cancel goes on to the dependants of
-- the cancelled runs. Returns how many runs it queued.
--
-- Satisfied: the dependency succeeded, or the edge is `any_outcome` (after_any). Failed: it
-- ended otherwise on an edge that needs success.
--
-- VOLATILE: each statement here takes a snapshot of its own, so it sees the edges of dependants
-- committed since the calling statement began, and the calling statement's own changes (the
-- ended runs' new status, though it is given). Two statements that end two dependencies of one run at the same
-- instant count it down one after the other: the second waits for the first's row lock and
-- PostgreSQL re-reads `blocked_by` before writing. Rows are locked in id order, so statements
-- that release overlapping dependants queue instead of deadlocking.
CREATE FUNCTION {schema}.release_dependants(ids bigint[], statuses text[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ended bigint[] := ids;
    ended_status text[] := statuses;
    cancelled bigint[];
    released integer := 0;
    queued integer;
BEGIN
    WHILE cardinality(ended) > 0 LOOP
        cancelled := ARRAY[]::bigint[];
        IF 'succeeded' <> ANY (ended_status) THEN
            -- Dependants an ended run failed: cancelled, naming the first such run. Runs are
            -- looked up by key (an array, not a join: the generic plan of a join may read all
            -- of runs), and locked in id order so that two releases queue, not deadlock.
            WITH failed AS (
                SELECT DISTINCT ON (e.run_id) e.run_id, x.id, x.status
                FROM unnest(ended, ended_status) AS x(id, status)
                JOIN {schema}.run_dependencies e ON e.depends_on = x.id
                WHERE x.status <> 'succeeded' AND NOT e.any_outcome
                ORDER BY e.run_id, x.id
            ), locked AS (
                SELECT r.id FROM {schema}.runs r
                WHERE r.id = ANY (ARRAY(SELECT f.run_id FROM failed f)) AND r.status = 'blocked'
                ORDER BY r.id
                FOR UPDATE
            ), cancelling AS (
                UPDATE {schema}.runs r
                SET status = 'cancelled', finished_at = now(), error_type = 'DependencyFailed',
                    error_message = format('dependency run %s (%s) ended %s', f.id,
                                           (SELECT d.job FROM {schema}.runs d WHERE d.id = f.id),
                                           f.status),
                    message = 'cancelled: a dependency failed'
                FROM failed f
                WHERE r.id = f.run_id AND r.id = ANY (ARRAY(SELECT l.id FROM locked l))
                  AND r.status = 'blocked'
                RETURNING r.id
            )
            SELECT coalesce(array_agg(c.id), ARRAY[]::bigint[]) INTO cancelled FROM cancelling c;
        END IF;

        -- Dependants whose edges from the ended runs are satisfied: counted down by as many
        -- edges, queued at 0. (After the cancels: a run cancelled above is left alone.)
        WITH satisfied AS (
            SELECT e.run_id, count(*)::integer AS n
            FROM unnest(ended, ended_status) AS x(id, status)
            JOIN {schema}.run_dependencies e ON e.depends_on = x.id
            WHERE x.status = 'succeeded'
               OR (e.any_outcome AND x.status NOT IN ('queued', 'running', 'blocked'))
            GROUP BY e.run_id
        ), counted AS (
            -- The rows are read through the primary key for the array of ids, which the index
            -- scan sorts: they are locked in id order, as the cancels' are.
            UPDATE {schema}.runs r
            SET blocked_by = r.blocked_by - s.n,
                status = CASE WHEN r.blocked_by - s.n <= 0 THEN 'queued' ELSE r.status END
            FROM satisfied s
            WHERE r.id = ANY (ARRAY(SELECT x.run_id FROM satisfied x)) AND r.id = s.run_id
              AND r.status = 'blocked'
            RETURNING r.status
        )
        SELECT count(*) FILTER (WHERE c.status = 'queued') INTO queued FROM counted c;
        released := released + queued;

        -- The runs cancelled here ended for good in turn.
        ended := cancelled;
        ended_status := array_fill('cancelled'::text, ARRAY[cardinality(cancelled)]);
    END LOOP;
    -- Runs queued here are claimed by the worker whose statement released them: its next claim
    -- follows at once. Workers that wait idle are woken (every listener of the schema, as
    -- notify_runs_inserted does when it cannot pick one); none waiting, no NOTIFY: a busy
    -- worker claims again when it records its next end, and a NOTIFY would serialise this
    -- transaction's commit with every other's.
    IF released > 0 AND EXISTS (SELECT 1 FROM {schema}.workers w
                                WHERE w.waiting > 0 AND w.state = 'running') THEN
        PERFORM pg_notify(n.nspname, 'run')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = '{schema}.runs'::regclass;
    END IF;
    RETURN released;
END
$$;

-- The safety net, run by every worker's reaper once a lease: blocked runs whose count can no
-- longer come down by itself are settled from their edges.
--
-- Why it is needed: `enqueue(after=[X])` counts X as not yet satisfied in its statement's
-- snapshot. If its transaction commits only after the statement that ended X took the snapshot
-- in which release_dependants looked for X's dependants, that statement did not see the new
-- edge, and no other statement would ever count it down (likewise an edge to an attempt whose
-- retry was inserted meanwhile: it is not moved). This sweep bounds that rare race to one lease.
--
-- It reads at most `batch` blocked runs, those after `after_id` in id order (the reaper passes
-- the last one of its previous sweep, so that sweeps walk through a long list of blocked runs
-- instead of reading all of it each time). For each: edges pointing at an attempt since retried
-- move to the latest attempt; then a run one of whose dependencies failed it is cancelled, and
-- a run whose dependencies are all satisfied is queued, when those decisive ends are a second
-- old (their own statements released what they saw long before). It only ever writes a final
-- state, never an intermediate count, so it cannot undo a count-down that runs meanwhile.
-- Returns how many runs it settled and the last blocked run it read (0 when it read the end of
-- the list: the next sweep starts over).
CREATE FUNCTION {schema}.settle_blocked(batch integer, after_id bigint DEFAULT 0)
RETURNS TABLE (settled integer, last_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    window_ids bigint[];
    cancelled bigint[];
    queued integer;
BEGIN
    SELECT coalesce(array_agg(w.id ORDER BY w.id), ARRAY[]::bigint[]) INTO window_ids
    FROM (SELECT r.id FROM {schema}.runs r
          WHERE r.status = 'blocked' AND r.id > after_id
          ORDER BY r.id LIMIT batch) w;
    IF cardinality(window_ids) = 0 THEN
        RETURN QUERY SELECT 0, 0::bigint;
        RETURN;
    END IF;

    -- Edges left on an attempt that has been retried: onto the latest attempt (an edge that the
    -- run already has to that attempt is kept, the stricter of the two).
    WITH stale AS (
        SELECT e.run_id, e.depends_on, e.any_outcome,
               {schema}.latest_attempt(e.depends_on) AS latest
        FROM {schema}.run_dependencies e
        WHERE e.run_id = ANY (window_ids)
          AND EXISTS (SELECT 1 FROM {schema}.runs x WHERE x.retry_of = e.depends_on)
    ), removed AS (
        DELETE FROM {schema}.run_dependencies e
        USING stale s
        WHERE e.run_id = s.run_id AND e.depends_on = s.depends_on
        RETURNING e.run_id
    )
    INSERT INTO {schema}.run_dependencies AS e (run_id, depends_on, any_outcome)
    SELECT s.run_id, s.latest, bool_and(s.any_outcome)
    FROM stale s
    WHERE (SELECT count(*) FROM removed) >= 0
    GROUP BY s.run_id, s.latest
    ON CONFLICT (run_id, depends_on)
    DO UPDATE SET any_outcome = e.any_outcome AND excluded.any_outcome;

    WITH edges AS (
        SELECT e.run_id, e.any_outcome, d.id, d.job, d.status, d.finished_at,
               d.status IN ('queued', 'running', 'blocked') AS pending
        FROM {schema}.run_dependencies e
        JOIN {schema}.runs d ON d.id = e.depends_on
        WHERE e.run_id = ANY (window_ids)
    ), verdict AS (
        SELECT e.run_id,
               (array_agg(format('dependency run %s (%s) ended %s', e.id, e.job, e.status)
                          ORDER BY e.id)
                    FILTER (WHERE NOT e.pending AND NOT e.any_outcome
                            AND e.status <> 'succeeded'
                            AND e.finished_at < now() - interval '1 second'))[1] AS failure,
               bool_and(NOT e.pending AND (e.status = 'succeeded' OR e.any_outcome)
                        AND e.finished_at < now() - interval '1 second') AS satisfied
        FROM edges e
        GROUP BY e.run_id
    ), locked AS (
        SELECT r.id FROM {schema}.runs r
        WHERE r.id IN (SELECT v.run_id FROM verdict v WHERE v.failure IS NOT NULL OR v.satisfied)
          AND r.status = 'blocked'
        ORDER BY r.id
        FOR UPDATE
    ), settled_runs AS (
        UPDATE {schema}.runs r
        SET status = CASE WHEN v.failure IS NOT NULL THEN 'cancelled' ELSE 'queued' END,
            blocked_by = CASE WHEN v.failure IS NOT NULL THEN r.blocked_by ELSE 0 END,
            finished_at = CASE WHEN v.failure IS NOT NULL THEN now() END,
            error_type = CASE WHEN v.failure IS NOT NULL THEN 'DependencyFailed' END,
            error_message = v.failure,
            message = CASE WHEN v.failure IS NOT NULL THEN 'cancelled: a dependency failed' END
        FROM verdict v
        WHERE r.id = v.run_id AND r.id IN (SELECT l.id FROM locked l) AND r.status = 'blocked'
        RETURNING r.id, r.status
    )
    SELECT coalesce(array_agg(s.id) FILTER (WHERE s.status = 'cancelled'), ARRAY[]::bigint[]),
           count(*) FILTER (WHERE s.status = 'queued')
    INTO cancelled, queued
    FROM settled_runs s;

    IF queued > 0 THEN
        PERFORM pg_notify(n.nspname, 'run')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = '{schema}.runs'::regclass;
    END IF;
    -- The cancel goes on to the dependants of the runs cancelled here.
    IF cardinality(cancelled) > 0 THEN
        PERFORM {schema}.release_dependants(
            cancelled, array_fill('cancelled'::text, ARRAY[cardinality(cancelled)]));
    END IF;
    RETURN QUERY
    SELECT queued + cardinality(cancelled),
           CASE WHEN cardinality(window_ids) < batch THEN 0::bigint
                ELSE window_ids[cardinality(window_ids)] END;
END
$$;


-- Why each queued or blocked run waits (see revisions 0005 and 0006): a blocked run waits for
-- its dependencies, and `detail` names those that have not ended yet.
CREATE OR REPLACE VIEW {schema}.run_waits AS
SELECT r.id,
       r.job,
       r.queue,
       r.trigger,
       r.priority,
       r.scheduled_for,
       r.concurrency_key,
       CASE
           WHEN r.status = 'blocked' THEN 'dependencies'
           WHEN r.scheduled_for > now() THEN 'scheduled'
           WHEN j.paused THEN 'job paused'
           WHEN q.paused THEN 'queue paused'
           WHEN slots.taken >= coalesce(j.max_concurrency, 1) THEN 'concurrency'
           WHEN tb.job_available < 1 OR tb.queue_available < 1 THEN 'rate limit'
           ELSE 'worker'
       END AS waiting_for,
       CASE
           WHEN r.status = 'blocked' THEN coalesce((
               -- The first dependencies it still waits for, by id, and how many more.
               SELECT format('runs %s%s', string_agg(format('%s (%s) %s', d.id, d.job, d.status),
                                                     ', ' ORDER BY d.id)
                                               FILTER (WHERE d.n <= 5),
                             CASE WHEN count(*) > 5 THEN format(' and %s more', count(*) - 5)
                                  ELSE '' END)
               FROM (SELECT d.id, d.job, d.status, row_number() OVER (ORDER BY d.id) AS n
                     FROM {schema}.run_dependencies e
                     JOIN {schema}.runs d ON d.id = e.depends_on
                     WHERE e.run_id = r.id AND d.status IN ('queued', 'running', 'blocked')) d
               HAVING count(*) > 0),
               -- A release missed (see settle_blocked): a worker's reaper settles it.
               'its dependencies have ended: settled by the next sweep')
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
WHERE r.status IN ('queued', 'blocked');

