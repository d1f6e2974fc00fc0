-- Named queries of pgjobs.testing: throwaway databases for tests, and what a test reads of runs.
--
-- The database statements name databases, which parameters cannot: {{database}} and
-- {{template}} are written with doubled braces so that they survive the rendering for the schema
-- and are filled in by pgjobs.testing with quoted identifiers.

-- name: testing_create_database
-- A copy of a migrated template is a migrated database, made in milliseconds.
CREATE DATABASE {{database}} TEMPLATE {{template}};

-- name: testing_seal_template
-- Nobody may connect to the template: a session in it would make the next copy fail.
ALTER DATABASE {{database}} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;

-- name: testing_unseal_template
-- A template database cannot be dropped.
ALTER DATABASE {{database}} WITH IS_TEMPLATE false;

-- name: testing_drop_database
-- FORCE ends the sessions a test left open (a pool, a connection it did not close).
DROP DATABASE IF EXISTS {{database}} WITH (FORCE);

-- name: testing_end_sessions
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = %(database)s AND pid <> pg_backend_pid();

-- name: testing_databases_like
SELECT datname FROM pg_database WHERE datname LIKE %(pattern)s ORDER BY datname;

-- name: testing_runs
-- The runs a test asks about, oldest first; a NULL filter is no filter. `payload`: the run's
-- payload contains it (jsonb @>), so a test names only the fields it cares about.
SELECT r.id, r.job, r.trigger, r.status, r.attempt, r.max_attempts, r.retry_of, r.payload,
       r.parameters, r.queue, r.priority, r.dedup_key, r.scheduled_for, r.started_at,
       r.finished_at, r.duration_seconds, r.message, r.data, r.items_processed, r.items_failed,
       r.error_type, r.error_message, r.error_traceback, r.logs, r.worker_id
FROM {schema}.runs r
WHERE (%(ids)s::bigint[] IS NULL OR r.id = ANY (%(ids)s::bigint[]))
  AND (%(job)s::text IS NULL OR r.job = %(job)s::text)
  AND (%(triggers)s::text[] IS NULL OR r.trigger = ANY (%(triggers)s::text[]))
  AND (%(statuses)s::text[] IS NULL OR r.status = ANY (%(statuses)s::text[]))
  AND (%(payload)s::jsonb IS NULL OR r.payload @> %(payload)s::jsonb)
ORDER BY r.id;

-- name: testing_queued_queues
-- The queues that hold queued runs: what a drain serves when it is not told which.
SELECT DISTINCT r.queue FROM {schema}.runs r WHERE r.status = 'queued' ORDER BY r.queue;

-- name: testing_make_delayed_runs_due
-- Delayed runs of these queues (a later run_at, a retry waiting for its back-off) become due now,
-- for a drain that runs them without waiting. A tick keeps its time: it is its unique key.
UPDATE {schema}.runs r
SET scheduled_for = now()
WHERE r.status = 'queued' AND r.scheduled_for > now() AND r.trigger <> 'schedule'
  AND r.queue = ANY (%(queues)s::text[])
RETURNING r.id;
