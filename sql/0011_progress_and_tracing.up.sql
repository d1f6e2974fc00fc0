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
