-- Runs for people, as before progress: a view cannot lose columns in place.
DROP VIEW {schema}.run_history;
CREATE VIEW {schema}.run_history AS
SELECT r.id,
       r.job,
       r.trigger,
       r.status,
       r.attempt,
       r.retry_of,
       r.scheduled_for,
       r.started_at,
       r.finished_at,
       r.duration_seconds,
       extract(epoch FROM r.started_at - r.scheduled_for)::double precision AS lag_seconds,
       r.worker_id,
       w.host,
       w.pid,
       r.queue,
       r.priority,
       r.message,
       r.data,
       r.items_processed,
       r.items_failed,
       r.error_type,
       r.error_message,
       r.payload
FROM {schema}.runs r
LEFT JOIN {schema}.workers w ON w.id = r.worker_id;

ALTER TABLE {schema}.runs
    DROP COLUMN progress_done,
    DROP COLUMN progress_total,
    DROP COLUMN progress_message,
    DROP COLUMN progress_at,
    DROP COLUMN trace_context;
