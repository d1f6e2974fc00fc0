-- pgjobs schema, revision 0009: many schedules per job, and schedules added at runtime.
--
-- A job's own schedule (`Job.schedule`, or the profile's entry for the job) stays on its `jobs`
-- row, shown as the schedule named `default`. Further schedules of a job are rows of
-- `schedules`, each with its own cron, timezone, payload and parameters: listed in the profile
-- (`origin` profile, written by the workers that load it), or added at runtime by
-- pgjobs.schedule() (SQL, Python or `pgjobs schedules add`). A tick is unique per (job,
-- schedule, tick): two schedules of one job may fire at the same second, each once.

CREATE TABLE {schema}.schedules (
    job          text NOT NULL REFERENCES {schema}.jobs (name) ON DELETE CASCADE,
    name         text NOT NULL
                 CONSTRAINT schedules_name_check
                 CHECK (length(name) BETWEEN 1 AND 100 AND name = btrim(name)
                        AND name !~ '[[:cntrl:]]' AND name <> 'default'),
    cron         text NOT NULL,
    timezone     text NOT NULL DEFAULT 'UTC',
    payload      jsonb CONSTRAINT schedules_payload_check
                 CHECK (payload IS NULL OR jsonb_typeof(payload) = 'object'),
    parameters   jsonb CONSTRAINT schedules_parameters_check
                 CHECK (parameters IS NULL OR jsonb_typeof(parameters) = 'object'),
    enabled      boolean NOT NULL DEFAULT true,
    paused       boolean NOT NULL DEFAULT false,
    -- NULL: the job's policy.
    misfire      text CONSTRAINT schedules_misfire_check
                 CHECK (misfire IN ('coalesce', 'skip', 'backfill')),
    -- NULL: the job's. `skip`: a tick that finds the job's run lock held (a run of the job that
    -- forbids overlap) is skipped, and its run takes the lock; `allow`: its runs never wait.
    overlap      text CONSTRAINT schedules_overlap_check CHECK (overlap IN ('skip', 'allow')),
    origin       text NOT NULL DEFAULT 'runtime'
                 CONSTRAINT schedules_origin_check CHECK (origin IN ('profile', 'runtime')),
    -- The tick watermark; NULL until a worker works out the first tick after `updated_at`
    -- (the database has no cron arithmetic), and again whenever the cron or timezone changes.
    next_fire_at timestamptz,
    last_tick_at timestamptz,
    -- Why no worker ticks it: the cron expression or timezone a worker could not use.
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_pkey PRIMARY KEY (job, name)
);
COMMENT ON TABLE {schema}.schedules IS
    'Schedules of jobs added at runtime (a job''s own schedule is on its jobs row)';

-- Due schedules, and those whose first tick no worker has worked out yet, found by index.
CREATE INDEX schedules_due_idx ON {schema}.schedules (next_fire_at NULLS FIRST)
    WHERE enabled AND NOT paused AND error IS NULL;

-- A run of a tick says which schedule made it (NULL: the job's own).
ALTER TABLE {schema}.runs ADD COLUMN schedule text;
COMMENT ON COLUMN {schema}.runs.schedule IS
    'The schedule whose tick made this run (NULL: the job''s own schedule)';
CREATE UNIQUE INDEX runs_schedule_tick_key
    ON {schema}.runs (job, coalesce(schedule, ''), scheduled_for) WHERE trigger = 'schedule';
DROP INDEX {schema}.runs_tick_key;

-- A hand edit of a runtime schedule is adopted like one by pgjobs.alter_schedule: a new cron or
-- timezone has its watermark worked out again from now (and a worker that could not use the old
-- one tries the new one), and workers are told at once. A profile's schedule is written by the
-- workers that load the profile (`pgjobs.registering`); by hand, only its pause may change.
CREATE FUNCTION {schema}.schedules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('pgjobs.registering', true), '') <> 'on' THEN
        -- A profile's schedule is the profile's: only its pause is kept at runtime.
        IF TG_OP = 'DELETE' AND OLD.origin = 'profile' THEN
            RAISE EXCEPTION 'schedule % of job % comes from the profile', quote_literal(OLD.name),
                            quote_literal(OLD.job)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'remove it from the profile, or pause it';
        END IF;
        IF TG_OP = 'UPDATE' AND (OLD.origin = 'profile' OR NEW.origin = 'profile')
           AND (NEW.job, NEW.name, NEW.cron, NEW.timezone, NEW.payload, NEW.parameters,
                NEW.enabled, NEW.misfire, NEW.overlap, NEW.origin)
               IS DISTINCT FROM
               (OLD.job, OLD.name, OLD.cron, OLD.timezone, OLD.payload, OLD.parameters,
                OLD.enabled, OLD.misfire, OLD.overlap, OLD.origin) THEN
            RAISE EXCEPTION 'schedule % of job % comes from the profile', quote_literal(OLD.name),
                            quote_literal(OLD.job)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'change it in the profile; only its pause is kept at runtime';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF NEW.cron IS DISTINCT FROM OLD.cron OR NEW.timezone IS DISTINCT FROM OLD.timezone THEN
        NEW.next_fire_at := NULL;
        NEW.error := NULL;
    END IF;
    IF (NEW.cron, NEW.timezone, NEW.payload, NEW.parameters, NEW.enabled, NEW.paused, NEW.misfire,
        NEW.overlap)
       IS DISTINCT FROM
       (OLD.cron, OLD.timezone, OLD.payload, OLD.parameters, OLD.enabled, OLD.paused, OLD.misfire,
        OLD.overlap)
    THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER schedules_changed BEFORE UPDATE OR DELETE ON {schema}.schedules
    FOR EACH ROW EXECUTE FUNCTION {schema}.schedules_changed();

-- Workers pick up a new, changed or removed schedule at once, however it was written (a worker
-- advancing a watermark tells nobody).
CREATE FUNCTION {schema}.notify_schedules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA, 'schedule');
    RETURN NULL;
END
$$;
CREATE TRIGGER schedules_notify_written AFTER INSERT OR DELETE ON {schema}.schedules
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_schedules();
CREATE TRIGGER schedules_notify_changed AFTER UPDATE ON {schema}.schedules
    FOR EACH ROW WHEN (OLD.updated_at IS DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION {schema}.notify_schedules();

-- Every schedule: each job's own (named `default`, from its code or profile) and those added at
-- runtime; `paused` is the schedule's own pause, `job_paused` its job's (which holds both).
CREATE VIEW {schema}.all_schedules AS
SELECT j.name AS job, 'default'::text AS name, j.schedule AS cron, j.timezone,
       NULL::jsonb AS payload, NULL::jsonb AS parameters, j.enabled, false AS paused,
       j.paused AS job_paused, j.misfire, j.overlap, j.schedule_source AS origin, j.next_fire_at,
       j.last_tick_at, NULL::text AS error, j.registered_at AS created_at, j.updated_at
FROM {schema}.jobs j
WHERE j.schedule IS NOT NULL
UNION ALL
SELECT s.job, s.name, s.cron, s.timezone, s.payload, s.parameters, s.enabled, s.paused,
       j.paused, coalesce(s.misfire, j.misfire), coalesce(s.overlap, j.overlap), s.origin,
       s.next_fire_at, s.last_tick_at, s.error, s.created_at, s.updated_at
FROM {schema}.schedules s
JOIN {schema}.jobs j ON j.name = s.job;

-- A job's own schedule comes from code or the profile, which every worker that starts writes
-- again: changed by hand it would be overwritten, or, until then, ticked by no worker (none has
-- that schedule in its code). Refused, with what to do instead. Workers registering jobs set
-- `pgjobs.registering` for their transaction.
CREATE FUNCTION {schema}.jobs_schedule_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.schedule IS DISTINCT FROM OLD.schedule OR NEW.timezone IS DISTINCT FROM OLD.timezone)
       AND coalesce(current_setting('pgjobs.registering', true), '') <> 'on' THEN
        RAISE EXCEPTION 'the schedule of job % comes from its %', quote_literal(OLD.name),
            CASE OLD.schedule_source WHEN 'profile' THEN 'profile' ELSE 'code' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('change it there, or add a schedule at runtime: '
                                'SELECT %s.schedule(%L, ''<cron>'', name => ''<name>'')',
                                quote_ident(TG_TABLE_SCHEMA), OLD.name);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_schedule_guard BEFORE UPDATE OF schedule, timezone ON {schema}.jobs
    FOR EACH ROW EXECUTE FUNCTION {schema}.jobs_schedule_guard();

-- A cron expression as the workers read it, checked as far as the database can: 5 or 6 fields
-- of the characters cron uses, or an @-alias. (The workers check the rest, a value out of range
-- for instance, and say so in `schedules.error`.)
CREATE FUNCTION {schema}.cron_error(cron text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN cron IS NULL OR btrim(cron) = '' THEN 'a cron expression is required'
        WHEN btrim(cron) ~ '^@' THEN
            CASE WHEN lower(btrim(cron)) IN ('@yearly', '@annually', '@monthly', '@weekly',
                                             '@daily', '@midnight', '@hourly')
                 THEN NULL
                 ELSE format('unknown cron alias %s (@hourly, @daily, @weekly, @monthly, '
                             '@yearly)', btrim(cron))
            END
        WHEN array_length(regexp_split_to_array(btrim(cron), '\s+'), 1) NOT IN (5, 6) THEN
            format('cron expression %L has %s fields; it needs 6 (second minute hour day month '
                   'weekday) or 5 (minute hour day month weekday)', cron,
                   array_length(regexp_split_to_array(btrim(cron), '\s+'), 1))
        WHEN btrim(cron) !~ '^[0-9A-Za-z*/,?#-]+(\s+[0-9A-Za-z*/,?#-]+)*$' THEN
            format('cron expression %L has a character cron does not use', cron)
    END
$$;

-- Why `timezone` cannot be a schedule's timezone, or NULL.
CREATE FUNCTION {schema}.timezone_error(timezone text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN timezone IS NULL OR timezone = '' THEN 'a timezone is required'
        -- The IANA names the workers know: not the server's own aliases nor its posix/ and
        -- right/ copies.
        WHEN NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = timezone)
             OR timezone IN ('Factory', 'localtime', 'posixrules')
             OR timezone ~ '^(posix|right)/' THEN
            format('unknown timezone %L (an IANA name such as UTC or Europe/Paris)', timezone)
    END
$$;

-- Why a schedule's settings cannot be stored, or NULL; a NULL argument is not checked (the one
-- that alter_schedule leaves as it is).
CREATE FUNCTION {schema}.schedule_settings_error(
    cron text, timezone text, payload jsonb, parameters jsonb, misfire text, overlap text
) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        CASE WHEN cron IS NOT NULL THEN {schema}.cron_error(cron) END,
        CASE WHEN timezone IS NOT NULL THEN {schema}.timezone_error(timezone) END,
        {schema}.run_input_error(payload, parameters),
        CASE WHEN misfire NOT IN ('coalesce', 'skip', 'backfill') THEN
            format('misfire must be coalesce, skip or backfill, got %L', misfire) END,
        CASE WHEN overlap NOT IN ('skip', 'allow') THEN
            format('overlap must be skip or allow, got %L', overlap) END)
$$;

-- Add a schedule to a job, or replace the runtime schedule of that name: the pg_cron way, in the
-- caller's transaction. Returns the schedule's name (by default its cron expression).
CREATE FUNCTION {schema}.schedule(
    job text,
    cron text,
    name text DEFAULT NULL,
    timezone text DEFAULT 'UTC',
    payload jsonb DEFAULT NULL,
    parameters jsonb DEFAULT NULL,
    misfire text DEFAULT NULL,
    enabled boolean DEFAULT true,
    overlap text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    problem text;
    schedule_name text := coalesce(name, left(btrim(cron), 100));
BEGIN
    PERFORM {schema}.require_job(job);
    problem := {schema}.schedule_settings_error(coalesce(cron, ''), coalesce(timezone, ''), payload,
                                                parameters, misfire, overlap);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schedule_name = 'default' THEN
        RAISE EXCEPTION 'the schedule named default is the job''s own, from its code or profile'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'give the schedule another name';
    END IF;
    IF length(schedule_name) NOT BETWEEN 1 AND 100 OR schedule_name <> btrim(schedule_name)
       OR schedule_name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'schedule name % must be 1 to 100 characters, without control characters '
                        'or spaces at either end', quote_literal(schedule_name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO {schema}.schedules AS s
        (job, name, cron, timezone, payload, parameters, misfire, enabled, overlap)
    VALUES (schedule.job, schedule_name, btrim(schedule.cron), schedule.timezone,
            schedule.payload, schedule.parameters, schedule.misfire, schedule.enabled,
            schedule.overlap)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
    SET cron = excluded.cron, timezone = excluded.timezone, payload = excluded.payload,
        parameters = excluded.parameters, misfire = excluded.misfire, enabled = excluded.enabled,
        overlap = excluded.overlap;
    RETURN schedule_name;
END
$$;

-- Remove a runtime schedule: it ticks no more (runs it already queued stay). True if the job had
-- it.
CREATE FUNCTION {schema}.unschedule(job text, name text) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    IF name = 'default' THEN
        RAISE EXCEPTION 'the schedule named default is the job''s own, from its code or profile'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('pause the job instead: pgjobs jobs pause %s', job);
    END IF;
    PERFORM {schema}.require_job(job);
    DELETE FROM {schema}.schedules s WHERE s.job = unschedule.job AND s.name = unschedule.name;
    RETURN FOUND;
END
$$;

-- Change some of a schedule's settings (a NULL argument leaves that one as it is; to clear one,
-- replace the schedule with pgjobs.schedule). A new cron or timezone takes effect from its next
-- tick after now. Of a schedule the profile lists, only the pause may change.
CREATE FUNCTION {schema}.alter_schedule(
    job text,
    name text,
    cron text DEFAULT NULL,
    timezone text DEFAULT NULL,
    payload jsonb DEFAULT NULL,
    parameters jsonb DEFAULT NULL,
    misfire text DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    paused boolean DEFAULT NULL,
    overlap text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    problem text;
BEGIN
    IF name = 'default' THEN
        RAISE EXCEPTION 'the schedule named default is the job''s own, from its code or profile'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'change it there; pause it with pgjobs jobs pause';
    END IF;
    PERFORM {schema}.require_job(job);
    problem := {schema}.schedule_settings_error(cron, timezone, payload, parameters, misfire,
                                                overlap);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE {schema}.schedules s
    SET cron = coalesce(btrim(alter_schedule.cron), s.cron),
        timezone = coalesce(alter_schedule.timezone, s.timezone),
        payload = coalesce(alter_schedule.payload, s.payload),
        parameters = coalesce(alter_schedule.parameters, s.parameters),
        misfire = coalesce(alter_schedule.misfire, s.misfire),
        enabled = coalesce(alter_schedule.enabled, s.enabled),
        paused = coalesce(alter_schedule.paused, s.paused),
        overlap = coalesce(alter_schedule.overlap, s.overlap)
    WHERE s.job = alter_schedule.job AND s.name = alter_schedule.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % has no schedule named %', quote_literal(job), quote_literal(name)
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION
    {schema}.schedule(text, text, text, text, jsonb, jsonb, text, boolean, text),
    {schema}.unschedule(text, text),
    {schema}.alter_schedule(text, text, text, text, jsonb, jsonb, text, boolean, boolean, text)
    FROM PUBLIC;
