-- Named queries of the schedules API (pgjobs/schedules.py) and of `pgjobs schedules`. The API's
-- calls run on the caller's connection, inside the caller's transaction: nothing here commits,
-- and the NOTIFY that tells the workers of a change goes out when the caller commits.

-- name: call_schedule
-- Add a runtime schedule to a job, or replace the one of that name; returns its name.
SELECT {schema}.schedule(
    %(job)s::text, %(cron)s::text, name => %(name)s::text, timezone => %(timezone)s::text,
    payload => %(payload)s::jsonb, parameters => %(parameters)s::jsonb,
    misfire => %(misfire)s::text, enabled => %(enabled)s::boolean
);

-- name: call_unschedule
-- Remove a runtime schedule; true if it existed.
SELECT {schema}.unschedule(%(job)s::text, %(name)s::text);

-- name: call_alter_schedule
-- Change some settings of a runtime schedule (NULL leaves one as it is).
SELECT {schema}.alter_schedule(
    %(job)s::text, %(name)s::text, cron => %(cron)s::text, timezone => %(timezone)s::text,
    payload => %(payload)s::jsonb, parameters => %(parameters)s::jsonb,
    misfire => %(misfire)s::text, enabled => %(enabled)s::boolean, paused => %(paused)s::boolean
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

-- name: list_schedules
-- Every schedule, or a job's: its own (`default`) first, then the runtime ones by name.
SELECT s.job, s.name, s.cron, s.timezone, s.origin, s.enabled, s.paused, s.job_paused,
       s.misfire, s.next_fire_at, s.last_tick_at, s.error, s.payload, s.parameters,
       s.created_at, s.updated_at
FROM {schema}.all_schedules s
WHERE %(job)s::text IS NULL OR s.job = %(job)s::text
ORDER BY s.job, s.name <> 'default', s.name;

-- name: get_schedule
-- One schedule of a job, or no row.
SELECT s.job, s.name, s.cron, s.timezone, s.origin, s.enabled, s.paused, s.job_paused,
       s.misfire, s.next_fire_at, s.last_tick_at, s.error, s.payload, s.parameters,
       s.created_at, s.updated_at
FROM {schema}.all_schedules s
WHERE s.job = %(job)s AND s.name = %(name)s;
