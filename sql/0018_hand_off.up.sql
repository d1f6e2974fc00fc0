-- pgjobs schema, revision 0018: a run released by its dependency's end starts at once on the
-- worker that recorded that end.
--
-- A chained run used to be written three times after its insert: queued by the statement that
-- recorded its dependency's end, running by a later claim, then ended. hand_off_dependants counts
-- down the dependants of runs that succeeded, as release_dependants does, and starts those that
-- reach 0 in the same write, on the recording worker, when it may take them:
--   * it serves their job and queue, and has room (`room`, what its claim may take);
--   * nothing holds them: their job and queue are not paused, the job has no concurrency limit,
--     no concurrency key, no rate limit and does not forbid overlap, the queue has no rate limit
--     (such runs are queued, and the claim gives them what they need);
--   * they are due, and no due queued run has a higher priority (that one starts first).
-- The others are queued, as before. It returns the runs it started, as a claim returns them
-- (`dependencies` included), and one row whose `released` says how many it queued.
--
-- Runs that ended otherwise go to release_dependants (a cancel, or the release of `after_any`
-- edges, may go on transitively). One dependant of two ends in one statement is counted down by
-- both, in either order, and starts only when the count reaches 0: counts only go down, so a run
-- this function saw reach 0 in its snapshot is at 0 in the version its write re-reads.
CREATE FUNCTION {schema}.hand_off_dependants(ids bigint[], worker text, queues text[],
                                             room integer, lease double precision)
RETURNS TABLE (id bigint, job text, trigger text, scheduled_for timestamptz, attempt integer,
               max_attempts integer, payload jsonb, parameters jsonb, started_at timestamptz,
               queue text, trace_context jsonb, dependencies jsonb, released integer)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    handed bigint[];
    queued integer;
BEGIN
    WITH satisfied AS (
        -- The edges of each ended run are a probe of their index (see revision 0017).
        SELECT e.run_id, count(*)::integer AS n
        FROM unnest(ids) AS x(id)
        CROSS JOIN LATERAL (SELECT e.run_id
                            FROM {schema}.run_dependencies e
                            WHERE e.depends_on = x.id OFFSET 0) e
        GROUP BY e.run_id
    ), head AS (
        -- The best priority of a due queued run (the claim's index answers with a probe).
        SELECT q.priority
        FROM {schema}.runs q
        WHERE q.status = 'queued' AND q.scheduled_for <= now()
        ORDER BY q.priority, q.scheduled_for, q.id
        LIMIT 1
    ), eligible AS (
        -- The dependants that reach 0 here and that this worker may start, in claim order.
        SELECT r.id
        FROM {schema}.runs r
        JOIN satisfied s ON s.run_id = r.id
        CROSS JOIN LATERAL (SELECT j.paused, j.max_concurrency, j.concurrency_key, j.rate_limit,
                                   j.overlap
                            FROM {schema}.jobs j WHERE j.name = r.job OFFSET 0) j
        WHERE r.id = ANY (ARRAY(SELECT x.run_id FROM satisfied x))
          AND r.status = 'blocked' AND r.blocked_by - s.n <= 0
          AND r.scheduled_for <= now() AND r.queue = ANY (hand_off_dependants.queues)
          AND r.priority <= coalesce((SELECT h.priority FROM head h), r.priority)
          AND NOT j.paused AND j.max_concurrency IS NULL AND j.concurrency_key IS NULL
          AND j.rate_limit IS NULL AND j.overlap <> 'skip'
          AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                      WHERE wj.worker_id = hand_off_dependants.worker AND wj.job = r.job)
          AND NOT EXISTS (SELECT 1 FROM {schema}.queues q WHERE q.name = r.queue AND q.paused)
          AND NOT EXISTS (SELECT 1 FROM {schema}.rate_buckets b
                          WHERE b.scope = 'queue' AND b.name = r.queue)
        ORDER BY r.priority, r.scheduled_for, r.id
        LIMIT greatest(room, 0)
    ), counted AS (
        -- Rows read through the primary key for the array of ids, locked in id order (as
        -- release_dependants locks them). A run at 0 that is not eligible is queued.
        UPDATE {schema}.runs r
        SET blocked_by = r.blocked_by - s.n,
            status = CASE WHEN r.blocked_by - s.n > 0 THEN r.status
                          WHEN g.id IS NOT NULL THEN 'running'
                          ELSE 'queued' END,
            worker_id = CASE WHEN r.blocked_by - s.n <= 0 AND g.id IS NOT NULL
                             THEN hand_off_dependants.worker ELSE r.worker_id END,
            started_at = CASE WHEN r.blocked_by - s.n <= 0 AND g.id IS NOT NULL
                              THEN clock_timestamp() ELSE r.started_at END,
            heartbeat_at = CASE WHEN r.blocked_by - s.n <= 0 AND g.id IS NOT NULL
                                THEN now() ELSE r.heartbeat_at END,
            lease_expires_at = CASE WHEN r.blocked_by - s.n <= 0 AND g.id IS NOT NULL
                                    THEN now() + make_interval(secs => lease)
                                    ELSE r.lease_expires_at END
        FROM satisfied s
        LEFT JOIN eligible g ON g.id = s.run_id
        WHERE r.id = ANY (ARRAY(SELECT x.run_id FROM satisfied x)) AND r.id = s.run_id
          AND r.status = 'blocked'
        RETURNING r.id, r.status
    )
    SELECT coalesce(array_agg(c.id ORDER BY c.id) FILTER (WHERE c.status = 'running'),
                    ARRAY[]::bigint[]),
           count(*) FILTER (WHERE c.status = 'queued')
    INTO handed, queued
    FROM counted c;

    -- The runs started here, as a claim returns them: a statement of its own sees them running.
    RETURN QUERY
    SELECT r.id, r.job, r.trigger, r.scheduled_for, r.attempt, r.max_attempts, r.payload,
           r.parameters, r.started_at, r.queue, r.trace_context,
           -- What its dependencies ended with (ctx.dependencies), as the claim gives them.
           (SELECT coalesce(jsonb_agg(jsonb_build_array(d.id, d.job, d.status, d.message, d.data)
                                      ORDER BY e.depends_on), '[]')
            FROM {schema}.run_dependencies e
            CROSS JOIN LATERAL (SELECT d.id, d.job, d.status, d.message, d.data
                                FROM {schema}.runs d
                                WHERE d.id = e.depends_on OFFSET 0) d
            WHERE e.run_id = r.id),
           NULL::integer
    FROM {schema}.runs r
    WHERE r.id = ANY (handed);

    -- Runs queued here wake waiting workers, as release_dependants does.
    IF queued > 0 AND EXISTS (SELECT 1 FROM {schema}.workers w
                              WHERE w.waiting > 0 AND w.state = 'running') THEN
        PERFORM pg_notify(n.nspname, 'run')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = '{schema}.runs'::regclass;
    END IF;
    RETURN QUERY
    SELECT NULL::bigint, NULL::text, NULL::text, NULL::timestamptz, NULL::integer, NULL::integer,
           NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::text, NULL::jsonb, NULL::jsonb,
           queued;
END
$$;
