-- pgjobs schema, revision 0012: waiting for a run's end (pgjobs.wait, `jobs run --wait`).
--
-- A caller that waits for a run LISTENs on the schema's awaited channel, then marks the run
-- `awaited`; every statement that changes an awaited run's status (its claim, its end, its hand
-- back to the queue) notifies that channel with the run's id.
--
-- Why no end is missed: the mark is an UPDATE of the run's row, so it and the statement that
-- ends the run take the row one after the other. Either the end comes first, and the mark's
-- RETURNING shows it; or the mark comes first, and the end sees `awaited` and notifies, after
-- the waiter's LISTEN took effect. A retry of an awaited run is inserted awaited too, so the
-- waiter follows it without marking it (and without holding its row while workers claim it).
--
-- Why it costs nothing for the runs nobody waits for: the trigger is a row trigger with a WHEN
-- clause, evaluated in the executor without calling a function or queueing an event, and only
-- by statements that set `status`. No NOTIFY, no serialised commit, unless someone waits.
ALTER TABLE {schema}.runs
    ADD COLUMN awaited boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN {schema}.runs.awaited IS
    'Someone waits for this run''s end (pgjobs.wait): each change of its status notifies awaited_channel(schema) with its id.';

-- The channel on which the changes of awaited runs of the schema `schema_name` are told: an
-- identifier of at most 63 bytes whatever the schema's name.
CREATE FUNCTION {schema}.awaited_channel(schema_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'pgjobs_a_' || md5(schema_name)
$$;

CREATE FUNCTION {schema}.notify_awaited_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify({schema}.awaited_channel(TG_TABLE_SCHEMA), NEW.id::text);
    RETURN NULL;
END
$$;

-- Every way a run changes: a claim, a worker's finish, a tick skipped, a lease reaped, a cancel,
-- a hand-back, an UPDATE by hand.
CREATE TRIGGER runs_notify_awaited AFTER UPDATE OF status ON {schema}.runs
    FOR EACH ROW WHEN (NEW.awaited AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION {schema}.notify_awaited_run();

-- What follows a run's retries reads them by the run they retry.
CREATE INDEX runs_retry_of_idx ON {schema}.runs (retry_of) WHERE retry_of IS NOT NULL;
