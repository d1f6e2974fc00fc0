-- Wake one worker, not all of them. A worker whose claim came short while it listens says so on
-- its row (`waiting`: its free slots, `waiting_since`); a statement that queues due runs wakes
-- as many of those waiting workers as the runs need, each on a channel of its own, and takes
-- them off the list. Only when the waiting workers it found cannot take every run does it wake
-- every listener on the schema's channel, as before.
--
-- Why no wake-up is lost: a worker's claim that comes short and the row that says it waits are
-- one statement. A statement queueing runs either sees that row committed (and wakes the worker
-- on its channel), or it does not (the claim had not committed: that worker is busy, or is
-- still deciding), and then it wakes everyone on the schema's channel, which the worker listens
-- to all along. A worker whose listen connection is down does not say it waits.
ALTER TABLE {schema}.workers
    ADD COLUMN waiting integer NOT NULL DEFAULT 0,
    ADD COLUMN waiting_since timestamptz;

COMMENT ON COLUMN {schema}.workers.waiting IS
    'Free slots of a listening worker whose last claim came short: a statement queueing due runs wakes it on wake_channel(schema, id) and sets this to 0.';

-- The channel a worker of the schema `schema_name` listens on for the wake-ups meant for it
-- alone: an identifier of at most 63 bytes whatever the worker's id.
CREATE FUNCTION {schema}.wake_channel(schema_name text, worker_id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'pgjobs_w_' || md5(schema_name || '/' || worker_id)
$$;

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
