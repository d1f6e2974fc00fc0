-- An enqueue that no waiting worker can take sends no NOTIFY. PostgreSQL serialises the commits
-- of transactions that NOTIFY, so a NOTIFY to everyone on every enqueue kept single enqueues far
-- under the server's write rate, when every worker that serves the queue was busy anyway and
-- claims again as soon as it records its next end.
--
-- What replaces it is a lock, not a message. A statement that queues due runs takes, for each of
-- their queues, a shared transaction-level advisory lock before it looks for waiting
-- workers, and holds it until its transaction ends. Enqueues share it; a worker's settle_idle only
-- tries it, and holds it, exclusive, for the instant of its own statement.
--
-- Why no wake-up is lost. A worker that goes idle writes `waiting` in its claim's statement and
-- commits; then it calls settle_idle, which tries each of its queues' locks itself:
--   * An enqueue whose look at the workers came after that commit sees the worker waiting and
--     wakes it on its channel, as before.
--   * An enqueue whose look came before it took its lock before that commit too. If it has not
--     committed when settle_idle tries the lock, the try fails ('busy'): the worker looks again a
--     moment later, and again until the lock is free. If it has, the try succeeds, and
--     settle_idle's own look at the queue, a statement after the try with a snapshot of its own,
--     sees the run ('queued'): the worker claims once more.
-- Runs due later still wake everyone: every worker reckons its next wake-up time from them.

CREATE OR REPLACE FUNCTION {schema}.notify_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
    due integer;
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
    -- free slots cover the runs. SKIP LOCKED: a row another statement is taking, or a claim is
    -- writing, is not waiting for this statement (that worker settles after its claim, and
    -- finds this statement's lock). Under load nobody waits, which one look at the (small)
    -- workers table says before the query that picks and marks them.
    IF due > 0 AND EXISTS (SELECT 1 FROM {schema}.workers w WHERE w.waiting > 0) THEN
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
            RETURNING w.id
        LOOP
            PERFORM pg_notify({schema}.wake_channel(TG_TABLE_SCHEMA, woken.id), 'run');
        END LOOP;
    END IF;
    -- Runs due later: every worker reckons its next wake-up time from them. And a transaction
    -- of one snapshot (repeatable read, serializable) looked at the workers as they were when
    -- it began, not after its lock: it may have missed a worker that went idle since.
    IF due < queued OR current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'run');
    END IF;
    RETURN NULL;
END
$$;

-- What a listening worker whose claim came short (and so wrote `waiting`) does before it sleeps:
-- 'busy' when a transaction that queued due runs into one of `queues` has not committed yet
-- (look again in a moment), 'queued' when a due run of a job the worker serves is queued there
-- (claim once more), else 'idle' (sleep: any later enqueue sees the worker waiting). The look at
-- the queue is a statement after the tries, so its snapshot includes every enqueue whose lock
-- they found free. The exclusive tries last until this function's transaction ends: call it
-- alone, in autocommit.
CREATE FUNCTION {schema}.settle_idle(worker text, queues text[]) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    space integer;
    q text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- One snapshot for the whole transaction, taken before the tries: claim once more.
        RETURN 'queued';
    END IF;
    -- The queues' locks, as notify_runs_inserted takes them.
    SELECT hashtext('pgjobs queue ' || n.nspname) INTO space
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = '{schema}.runs'::regclass;
    FOREACH q IN ARRAY queues LOOP
        IF NOT pg_try_advisory_xact_lock(space, hashtext(q)) THEN
            RETURN 'busy';
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1
               FROM {schema}.runs r
               WHERE r.status = 'queued' AND r.scheduled_for <= now() AND r.queue = ANY (queues)
                 AND r.job IN (SELECT wj.job FROM {schema}.worker_jobs wj
                               WHERE wj.worker_id = worker)
                 AND NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.name = r.job AND j.paused))
    THEN
        RETURN 'queued';
    END IF;
    RETURN 'idle';
END
$$;
