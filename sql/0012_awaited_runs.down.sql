DROP INDEX {schema}.runs_retry_of_idx;
DROP TRIGGER runs_notify_awaited ON {schema}.runs;
DROP FUNCTION {schema}.notify_awaited_run();
DROP FUNCTION {schema}.awaited_channel(text);
ALTER TABLE {schema}.runs
    DROP COLUMN awaited;
