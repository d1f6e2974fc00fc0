-- pgjobs schema, revision 0011: a run's progress, and the trace context it was enqueued in.
--
-- A running job reports progress with ctx.progress(done, total, message); the worker writes it
-- on the run's row, a few times a second at most. `trace_context` is the W3C trace context
-- (traceparent, and tracestate when there is one) of the transaction that enqueued the run,
-- so that the run's span is a child of the request's.
ALTER TABLE {schema}.runs
    ADD COLUMN progress_done    bigint,
    ADD COLUMN progress_total   bigint,
    ADD COLUMN progress_message text,
    ADD COLUMN progress_at      timestamptz,
    ADD COLUMN trace_context    jsonb;

-- Runs for people, with the last progress their job reported (appended: the view keeps its
-- columns and their order, and what was granted on it).
CREATE OR REPLACE VIEW {schema}.run_history AS
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
       r.payload,
       r.progress_done,
       r.progress_total,
       r.progress_message,
       r.progress_at
FROM {schema}.runs r
LEFT JOIN {schema}.workers w ON w.id = r.worker_id;
