-- pgjobs schema, revision 0020: a statement queueing due runs that cannot take a waiting worker's
-- mark (another statement holds the worker's row) tells every listener instead of nobody.
--
-- A waiting worker's own heartbeat updates its row. An enqueue at that instant skipped the worker
-- (SKIP LOCKED) and, when no other waiting worker took the runs, told nobody: unlike a claim, the
-- heartbeat does not settle after it, and the runs waited for the worker's next poll.

CREATE OR REPLACE FUNCTION {schema}.notify_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
    due integer;
    needed text[];
    told integer := 0;
    woken record;
BEGIN
    -- The queues of due runs are locked (shared) as they are counted, and held until this
    -- transaction ends: a worker going idle meanwhile sees them (settle_idle). Taken before the
    -- look at the workers below, whose snapshot follows them. (Taken again for each run: the
    -- lock is this transaction's already, which costs a look-up in its own table.) A queue's
    -- lock is the pair (hashtext('pgjobs queue ' || schema), hashtext(queue)), a key space apart
    -- from the slots' bigint keys.
    SELECT count(*),
           count(*) FILTER (WHERE n.scheduled_for <= now()
                              AND pg_advisory_xact_lock_shared(
                                      hashtext('pgjobs queue ' || TG_TABLE_SCHEMA),
                                      hashtext(n.queue)) IS NOT NULL)
    INTO queued, due
    FROM new_runs n
    WHERE n.status = 'queued';
    IF queued = 0 THEN
        RETURN NULL;
    END IF;
    -- Waiting workers that serve a due run's queue and job, longest waiting first, until their
    -- free slots cover the runs. Under load nobody waits, which one look at the (small) workers
    -- table says before the query that picks them.
    IF due > 0 AND EXISTS (SELECT 1 FROM {schema}.workers w WHERE w.waiting > 0) THEN
        needed := ARRAY(
            SELECT c.id
            FROM (SELECT w.id,
                         sum(w.waiting) OVER (ORDER BY w.waiting_since, w.id) - w.waiting AS before
                  FROM {schema}.workers w
                  WHERE w.waiting > 0 AND w.state = 'running' AND w.expires_at > now()
                    AND EXISTS (SELECT 1
                                FROM new_runs n
                                JOIN {schema}.worker_jobs wj
                                  ON wj.worker_id = w.id AND wj.job = n.job
                                WHERE n.status = 'queued' AND n.scheduled_for <= now()
                                  AND n.queue = ANY (w.queues))) c
            WHERE c.before < due);
        -- Each is woken on its own channel, its mark taken off. SKIP LOCKED: this statement
        -- does not wait for a worker's row that another statement holds: the worker's claim
        -- writing its mark (it settles after its claim, and finds this statement's lock), its
        -- heartbeat, or another enqueue waking it.
        FOR woken IN
            UPDATE {schema}.workers w
            SET waiting = 0, waiting_since = NULL
            FROM (SELECT x.id FROM {schema}.workers x
                  WHERE x.id = ANY (needed)
                  FOR UPDATE SKIP LOCKED) c
            WHERE w.id = c.id AND w.waiting > 0
            RETURNING w.id
        LOOP
            PERFORM pg_notify({schema}.wake_channel(TG_TABLE_SCHEMA, woken.id), 'run');
            told := told + 1;
        END LOOP;
    END IF;
    -- Runs due later: every worker reckons its next wake-up time from them. A transaction of one
    -- snapshot (repeatable read, serializable) looked at the workers as they were when it began,
    -- not after its lock: it may have missed a worker that went idle since. And a waiting worker
    -- this statement needed but could not take (its row held, or its mark taken meanwhile) may
    -- hear of these runs from nobody else.
    IF due < queued OR told < coalesce(cardinality(needed), 0)
       OR current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'run');
    END IF;
    RETURN NULL;
END
$$;
