ALTER TABLE {schema}.runs
    DROP COLUMN progress_done,
    DROP COLUMN progress_total,
    DROP COLUMN progress_message,
    DROP COLUMN progress_at,
    DROP COLUMN trace_context;
