CREATE OR REPLACE FUNCTION {schema}.notify_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_runs WHERE status = 'queued') THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA, 'run');
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION {schema}.wake_channel(text, text);

ALTER TABLE {schema}.workers
    DROP COLUMN waiting,
    DROP COLUMN waiting_since;
