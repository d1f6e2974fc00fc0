-- pgjobs schema, revision 0017 undone: release_dependants joins the edges as revision 0014 had it.
CREATE OR REPLACE FUNCTION {schema}.release_dependants(ids bigint[], statuses text[]) RETURNS integer
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
