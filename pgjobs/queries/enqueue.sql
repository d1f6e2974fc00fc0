-- Named queries of the enqueue API. They run on the caller's connection, inside the caller's
-- transaction: nothing here commits, and the runs' NOTIFY goes out when the caller commits.

-- enqueue_runs, every enqueue's one statement. Its comments are here, above its name line, and
-- not in the statement: psycopg parses a statement over 4 KB again on every execution, which
-- would cost a single enqueue a sixth of its time.
--
-- It inserts one run per request, in request order, taking priority, queue and max_attempts from
-- the job's row unless the request gives them. If any request is refused, nothing is inserted and
-- the refused requests' jobs come back: 'unknown' (no row in `jobs`), 'keyless' (the job computes
-- its concurrency key in code, and the request brings none) or 'long key' (the payload field that
-- is the job's concurrency key holds more than 512 bytes, limits.MAX_KEY_BYTES: a slot of
-- `run_locks` is keyed by it in a B-tree). A request whose dedup_key matches a queued run of its
-- job inserts nothing: the queued run is returned instead.
--
-- Rows come back as (kind, id, job, key) with kind 'inserted', 'existing' or a refusal; key is
-- the dedup_key, or for a refusal the job's concurrency_key. The ids of inserted rows ascend in
-- request order, being drawn as the ordered rows go in.
--
-- The requests come as ONE jsonb document, an object of columns (an array per field, keyed job,
-- payload, parameters, run_at, priority, queue, dedup_key, concurrency_key, computed_key): a
-- single parameter, far cheaper for the client to send than a bound array per field. A column
-- that every request leaves empty is left out, and ROWS FROM fills it with NULLs. run_at is in
-- microseconds since the Unix epoch, split in whole seconds and the rest so that to_timestamp's
-- double is exact; payload and parameters are nested JSON, a JSON null meaning none. One more key,
-- trace_context, is not a column but one object for every run of the call: the W3C trace context
-- of the enqueue's span (pgjobs.tracing), left out, like an empty column, when nothing is traced.
--
-- A run's concurrency key is the request's own if it gives one; else, for a job whose key is a
-- payload field, that field's value; for a job whose key is `callable:...`, the computed_key that
-- the client computed with the job's class ('' when the callable gave none), and without one the
-- request is 'keyless'. The job's row decides, not the client: the profile may have changed the
-- key. A request without a dedup_key never reads runs (see the uncorrelated EXISTS below).

-- enqueue_graph: the statement of an enqueue whose requests have dependencies (after, after_any,
-- key); requests without any go through enqueue_runs, whose cost this leaves untouched. Its
-- comments are here, above its name line, for the reason given for enqueue_runs.
--
-- `requests` is enqueue_runs' document (no request has a dedup_key: the client refuses one in a
-- call with dependencies). The edges come as four arrays, one element per edge: the ordinal of
-- the dependant request (1-based), then either the id of an existing run or the ordinal of the
-- request it depends on, and whether any outcome satisfies it (after_any).
--
-- An existing run given as a dependency stands for its latest attempt (a retry follows it: the
-- dependant waits for the last one); it is read FOR KEY SHARE, so that no prune deletes it before
-- the caller commits (its edge's foreign key would then fail and abort the transaction), while
-- the workers go on updating it. A run id that no run has is refused ('unknown run', its id in
-- the fourth column), as an unknown job is, and nothing is inserted. Ids that name the same
-- latest attempt make one edge, which needs success if any of them does.
--
-- Each run is inserted with ids ascending in request order. A run without edges is queued; one
-- whose dependencies are all satisfied already (succeeded, or ended for good on an after_any
-- edge) is queued with blocked_by 0; one whose dependency has already failed (ended for good
-- otherwise, on an after edge) is inserted cancelled; the others are blocked, `blocked_by` being
-- their edges not satisfied in this statement's snapshot (a dependency that ends after it took
-- its snapshot may not see the new edge: settle_blocked settles that run within a lease). Rows
-- come back as (kind, id, job, status).

-- name: enqueue_runs
WITH request AS (
    SELECT r.ord, r.job, nullif(r.payload, 'null') AS payload,
           nullif(r.parameters, 'null') AS parameters,
           to_timestamp(r.run_at::bigint / 1000000)
               + r.run_at::bigint %% 1000000 * interval '1 microsecond' AS run_at,
           r.priority::integer AS priority, r.queue, r.dedup_key,
           j.priority AS job_priority, j.queue AS job_queue, j.max_attempts,
           j.concurrency_key AS key_field,
           coalesce(r.concurrency_key,
                    CASE WHEN j.concurrency_key LIKE 'callable:%%' THEN nullif(r.computed_key, '')
                         ELSE r.payload ->> j.concurrency_key
                    END) AS concurrency_key,
           CASE WHEN j.name IS NULL THEN 'unknown'
                WHEN r.concurrency_key IS NOT NULL THEN NULL
                WHEN j.concurrency_key LIKE 'callable:%%' THEN
                    CASE WHEN r.computed_key IS NULL THEN 'keyless' END
                WHEN octet_length(r.payload ->> j.concurrency_key) > 512 THEN 'long key'
           END AS refused
    FROM ROWS FROM (
             jsonb_array_elements_text(%(requests)s::jsonb -> 'job'),
             jsonb_array_elements(%(requests)s::jsonb -> 'payload'),
             jsonb_array_elements(%(requests)s::jsonb -> 'parameters'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'run_at'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'priority'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'queue'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'dedup_key'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'concurrency_key'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'computed_key')
         ) WITH ORDINALITY AS r(job, payload, parameters, run_at, priority, queue, dedup_key,
                                concurrency_key, computed_key, ord)
    LEFT JOIN {schema}.jobs j ON j.name = r.job
), inserted AS (
    INSERT INTO {schema}.runs AS runs
        (job, trigger, scheduled_for, payload, parameters, priority, queue, max_attempts, dedup_key,
         concurrency_key, trace_context)
    SELECT q.job, 'enqueue', coalesce(q.run_at, now()), q.payload, q.parameters,
           coalesce(q.priority, q.job_priority), coalesce(q.queue, q.job_queue), q.max_attempts,
           q.dedup_key, q.concurrency_key, %(requests)s::jsonb -> 'trace_context'
    FROM request q
    WHERE NOT EXISTS (SELECT 1 FROM request u WHERE u.refused IS NOT NULL)
    ORDER BY q.ord
    ON CONFLICT (job, dedup_key) WHERE dedup_key IS NOT NULL AND status = 'queued' DO NOTHING
    RETURNING runs.id, runs.job, runs.dedup_key
)
SELECT 'inserted' AS kind, i.id, i.job, i.dedup_key FROM inserted i
UNION ALL
-- Queued runs that held a requested dedup_key before this statement began. The uncorrelated
-- EXISTS is a one-time filter: without it, a generic plan made while runs was small would scan
-- all of runs on every enqueue until the table is next analysed.
SELECT 'existing', r.id, r.job, r.dedup_key
FROM {schema}.runs r
WHERE r.status = 'queued' AND r.dedup_key IS NOT NULL
  AND (r.job, r.dedup_key) IN (SELECT q.job, q.dedup_key FROM request q WHERE q.dedup_key IS NOT NULL)
  AND EXISTS (SELECT FROM request k WHERE k.dedup_key IS NOT NULL)
UNION ALL
SELECT DISTINCT q.refused, NULL::bigint, q.job, q.key_field FROM request q WHERE q.refused IS NOT NULL;

-- name: enqueue_one
-- One request without a dedup_key (a single enqueue): the run enqueue_runs would insert for it,
-- its values bound one parameter each instead of the batch's JSON columns, with no ON CONFLICT
-- (only a dedup_key needs one) and no look for refusals (a third of the server's time per single
-- enqueue). No row: the job is unknown or its concurrency key cannot be taken, and the caller
-- sends the request through enqueue_runs, which says which (or inserts it, if the job's row
-- changed in between). It is short: psycopg keeps its parse with these lines in it.
INSERT INTO {schema}.runs AS runs
    (job, trigger, scheduled_for, payload, parameters, priority, queue, max_attempts,
     concurrency_key, trace_context)
SELECT j.name, 'enqueue',
       coalesce(to_timestamp(%(run_at)s::bigint / 1000000)
                    + %(run_at)s::bigint %% 1000000 * interval '1 microsecond', now()),
       nullif(%(payload)s::jsonb, 'null'), nullif(%(parameters)s::jsonb, 'null'),
       coalesce(%(priority)s::integer, j.priority), coalesce(%(queue)s::text, j.queue),
       j.max_attempts,
       coalesce(%(concurrency_key)s::text,
                CASE WHEN j.concurrency_key LIKE 'callable:%%'
                     THEN nullif(%(computed_key)s::text, '')
                     ELSE %(payload)s::jsonb ->> j.concurrency_key
                END),
       %(trace_context)s::jsonb
FROM {schema}.jobs j
WHERE j.name = %(job)s
  AND (%(concurrency_key)s::text IS NOT NULL
       OR CASE WHEN j.concurrency_key LIKE 'callable:%%' THEN %(computed_key)s::text IS NOT NULL
               ELSE coalesce(octet_length(%(payload)s::jsonb ->> j.concurrency_key), 0) <= 512
          END)
RETURNING 'inserted' AS kind, runs.id, runs.job, runs.dedup_key;

-- name: enqueue_graph
WITH request AS (
    SELECT r.ord, r.job, nullif(r.payload, 'null') AS payload,
           nullif(r.parameters, 'null') AS parameters,
           to_timestamp(r.run_at::bigint / 1000000)
               + r.run_at::bigint %% 1000000 * interval '1 microsecond' AS run_at,
           r.priority::integer AS priority, r.queue,
           j.priority AS job_priority, j.queue AS job_queue, j.max_attempts,
           j.concurrency_key AS key_field,
           coalesce(r.concurrency_key,
                    CASE WHEN j.concurrency_key LIKE 'callable:%%' THEN nullif(r.computed_key, '')
                         ELSE r.payload ->> j.concurrency_key
                    END) AS concurrency_key,
           CASE WHEN j.name IS NULL THEN 'unknown'
                WHEN r.concurrency_key IS NOT NULL THEN NULL
                WHEN j.concurrency_key LIKE 'callable:%%' THEN
                    CASE WHEN r.computed_key IS NULL THEN 'keyless' END
                WHEN octet_length(r.payload ->> j.concurrency_key) > 512 THEN 'long key'
           END AS refused
    FROM ROWS FROM (
             jsonb_array_elements_text(%(requests)s::jsonb -> 'job'),
             jsonb_array_elements(%(requests)s::jsonb -> 'payload'),
             jsonb_array_elements(%(requests)s::jsonb -> 'parameters'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'run_at'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'priority'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'queue'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'concurrency_key'),
             jsonb_array_elements_text(%(requests)s::jsonb -> 'computed_key')
         ) WITH ORDINALITY AS r(job, payload, parameters, run_at, priority, queue,
                                concurrency_key, computed_key, ord)
    LEFT JOIN {schema}.jobs j ON j.name = r.job
), edge AS (
    SELECT e.ord, e.dep_id, e.dep_ord, e.any_outcome
    FROM unnest(%(edge_ords)s::integer[], %(edge_run_ids)s::bigint[], %(edge_dep_ords)s::integer[],
                %(edge_any)s::boolean[]) AS e(ord, dep_id, dep_ord, any_outcome)
), existing AS (
    SELECT g.dep_id, d.id, d.job, d.status
    FROM (SELECT DISTINCT e.dep_id FROM edge e WHERE e.dep_id IS NOT NULL) g
    LEFT JOIN LATERAL (
        SELECT d.id, d.job, d.status FROM {schema}.runs d
        WHERE d.id = {schema}.latest_attempt(g.dep_id)
        FOR KEY SHARE
    ) d ON true
), resolved AS (
    SELECT e.ord, x.id AS dep_id, e.dep_ord, bool_and(e.any_outcome) AS any_outcome,
           x.job, x.status
    FROM edge e
    LEFT JOIN existing x ON x.dep_id = e.dep_id
    GROUP BY e.ord, x.id, e.dep_ord, x.job, x.status
), verdict AS (
    SELECT r.ord,
           count(*) FILTER (WHERE r.dep_ord IS NOT NULL
                                  OR r.status IN ('queued', 'running', 'blocked')
                                  OR (r.status <> 'succeeded' AND NOT r.any_outcome))
               ::integer AS unsatisfied,
           (array_agg(format('dependency run %%s (%%s) ended %%s', r.dep_id, r.job, r.status)
                      ORDER BY r.dep_id)
                FILTER (WHERE r.status NOT IN ('queued', 'running', 'blocked', 'succeeded')
                              AND NOT r.any_outcome))[1] AS failure
    FROM resolved r
    GROUP BY r.ord
), refusal AS (
    SELECT DISTINCT q.refused AS kind, q.job, q.key_field AS detail
    FROM request q WHERE q.refused IS NOT NULL
    UNION ALL
    SELECT 'unknown run', NULL, x.dep_id::text FROM existing x WHERE x.id IS NULL
), inserted AS (
    INSERT INTO {schema}.runs AS runs
        (job, trigger, scheduled_for, payload, parameters, priority, queue, max_attempts,
         concurrency_key, trace_context, status, blocked_by, finished_at, error_type,
         error_message, message)
    SELECT q.job, 'enqueue', coalesce(q.run_at, now()), q.payload, q.parameters,
           coalesce(q.priority, q.job_priority), coalesce(q.queue, q.job_queue), q.max_attempts,
           q.concurrency_key, %(requests)s::jsonb -> 'trace_context',
           CASE WHEN v.ord IS NULL THEN 'queued'
                WHEN v.failure IS NOT NULL THEN 'cancelled'
                WHEN v.unsatisfied > 0 THEN 'blocked'
                ELSE 'queued' END,
           v.unsatisfied,
           CASE WHEN v.failure IS NOT NULL THEN now() END,
           CASE WHEN v.failure IS NOT NULL THEN 'DependencyFailed' END,
           v.failure,
           CASE WHEN v.failure IS NOT NULL THEN 'cancelled: a dependency failed' END
    FROM request q
    LEFT JOIN verdict v ON v.ord = q.ord
    WHERE NOT EXISTS (SELECT 1 FROM refusal)
    ORDER BY q.ord
    RETURNING runs.id, runs.job, runs.status
), numbered AS (
    SELECT i.id, i.job, i.status, row_number() OVER (ORDER BY i.id) AS ord FROM inserted i
), edges AS (
    INSERT INTO {schema}.run_dependencies (run_id, depends_on, any_outcome)
    SELECT n.id, coalesce(r.dep_id, m.id), r.any_outcome
    FROM resolved r
    JOIN numbered n ON n.ord = r.ord
    LEFT JOIN numbered m ON m.ord = r.dep_ord
)
SELECT 'inserted' AS kind, n.id, n.job, n.status FROM numbered n
UNION ALL
SELECT f.kind, NULL, f.job, f.detail FROM refusal f;

-- name: release_dependants
-- The dependants of runs just inserted cancelled (a dependency had failed already): cancelled
-- in turn, or counted down where they run after any outcome.
SELECT {schema}.release_dependants(
    %(ids)s::bigint[], array_fill('cancelled'::text, ARRAY[cardinality(%(ids)s::bigint[])]));

-- name: queued_runs_by_dedup_key
-- The queued runs holding these (job, dedup_key) pairs; read in a statement of its own to see a
-- run that a concurrent transaction committed while enqueue_runs was waiting on it.
SELECT r.id, r.job, r.dedup_key
FROM {schema}.runs r
JOIN unnest(%(jobs)b::text[], %(dedup_keys)b::text[]) AS k(job, dedup_key)
  ON r.job = k.job AND r.dedup_key = k.dedup_key
WHERE r.status = 'queued';

-- name: job_names
-- The registered jobs: those an enqueue may name (to suggest the nearest to an unknown one),
-- and those the CLI knows.
SELECT name FROM {schema}.jobs ORDER BY name;
