-- Named queries of the schedules API (pgjobs/schedules.py) and of `pgjobs schedules`. The API's
-- calls run on the caller's connection, inside the caller's transaction: nothing here commits,
-- and the NOTIFY that tells the workers of a change goes out when the caller commits.

-- name: call_schedule
-- Add a runtime schedule to a job, or replace the one of that name; returns its name.
SELECT {schema}.schedule(
    %(job)s::text, %(cron)s::text, name => %(name)s::text, timezone => %(timezone)s::text,
    payload => %(payload)s::jsonb, parameters => %(parameters)s::jsonb,
    misfire => %(misfire)s::text, enabled => %(enabled)s::boolean, overlap => %(overlap)s::text
);

-- name: call_unschedule
-- Remove a runtime schedule; true if it existed.
SELECT {schema}.unschedule(%(job)s::text, %(name)s::text);

-- name: call_alter_schedule
-- Change some settings of a runtime schedule (NULL leaves one as it is).
SELECT {schema}.alter_schedule(
    %(job)s::text, %(name)s::text, cron => %(cron)s::text, timezone => %(timezone)s::text,
    payload => %(payload)s::jsonb, parameters => %(parameters)s::jsonb,
    misfire => %(misfire)s::text, enabled => %(enabled)s::boolean, paused => %(paused)s::boolean,
    overlap => %(overlap)s::text
);

-- name: open_schedule_savepoint
-- A call of the caller's transaction runs under a savepoint, so that one the function refuses
-- is undone alone and the caller's transaction carries on.
SAVEPOINT pgjobs_schedule;

-- name: release_schedule_savepoint
RELEASE SAVEPOINT pgjobs_schedule;

-- name: rollback_to_schedule_savepoint
ROLLBACK TO SAVEPOINT pgjobs_schedule;
RELEASE SAVEPOINT pgjobs_schedule;
