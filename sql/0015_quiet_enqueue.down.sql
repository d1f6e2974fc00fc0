DROP FUNCTION {schema}.settle_idle(text, text[]);

CREATE OR REPLACE FUNCTION {schema}.notify_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
    due integer;
    covered integer := 0;
    woken record;
BEGIN
    SELECT count(*), count(*) FILTER (WHERE n.scheduled_for <= now())
    INTO queued, due
    FROM new_runs n
    WHERE n.status = 'queued';
    IF queued = 0 THEN
        RETURN NULL;
    END IF;
    IF due > 0 THEN
        -- Waiting workers that serve a due run's queue and job, longest waiting first, until
        -- their free slots cover the runs. SKIP LOCKED: a row another statement is taking, or
        -- a claim is writing, is not waiting for this statement.
        FOR woken IN
            WITH candidates AS (
                SELECT w.id, w.waiting,
                       sum(w.waiting) OVER (ORDER BY w.waiting_since, w.id) - w.waiting AS before
                FROM {schema}.workers w
                WHERE w.waiting > 0 AND w.state = 'running' AND w.expires_at > now()
                  AND EXISTS (SELECT 1
                              FROM new_runs n
                              JOIN {schema}.worker_jobs wj
                                ON wj.worker_id = w.id AND wj.job = n.job
                              WHERE n.status = 'queued' AND n.scheduled_for <= now()
                                AND n.queue = ANY (w.queues))
            ), chosen AS (
                SELECT w.id
                FROM {schema}.workers w
                JOIN candidates c ON c.id = w.id
                WHERE c.before < due
                FOR UPDATE OF w SKIP LOCKED
            )
            UPDATE {schema}.workers w
            SET waiting = 0, waiting_since = NULL
            FROM chosen c
            WHERE w.id = c.id AND w.waiting > 0
            RETURNING w.id, (SELECT c2.waiting FROM candidates c2 WHERE c2.id = w.id) AS slots
        LOOP
            PERFORM pg_notify({schema}.wake_channel(TG_TABLE_SCHEMA, woken.id), 'run');
            covered := covered + woken.slots;
        END LOOP;
    END IF;
    -- Runs due later (every worker reckons its next wake-up time from them), or more due runs
    -- than the woken workers have room for: wake everyone.
    IF covered < due OR due < queued THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'run');
    END IF;
    RETURN NULL;
END
$$;
