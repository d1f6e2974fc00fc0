-- pgjobs schema, revision 0007: pgjobs.enqueue(...), the enqueue API as a SQL function, for
-- clients that speak only SQL and for triggers (docs/sql.md#enqueueing-from-sql).
--
-- It queues one run exactly as the Python `enqueue` does (pgjobs/enqueue.py and its statement
-- enqueue_runs in pgjobs/queries/enqueue.sql; tests/test_sql_enqueue.py runs the same cases
-- through both): in the caller's transaction, with the job's priority, queue and max_attempts
-- unless given, its concurrency key from the job's payload field unless given, and a dedup_key
-- that returns the queued run holding it. The NOTIFY that wakes the workers comes from the insert
-- trigger on runs (revision 0001), delivered when the caller commits.
--
-- Refused, with one line and nothing inserted: an unknown job (42704 undefined_object, the
-- nearest names as HINT), and, as invalid_parameter_value (22023), a blank job, queue, dedup_key
-- or concurrency_key, a run_at that is not finite, a payload that is not a JSON object, parameters
-- that are not an object of strings, a payload or parameters over the size limit, a dedup_key or
-- concurrency_key over 512 bytes, and a job that computes its concurrency key in code (only the
-- job's class can) or whose payload field key holds over 512 bytes. The limits are those of
-- pgjobs.enqueue.MAX_DEDUP_KEY_BYTES and pgjobs.limits.MAX_KEY_BYTES. The size limit is the
-- setting pgjobs.max_payload_bytes (ALTER DATABASE / ROLE ... SET, or SET), 262144 by default,
-- the default of the client's PGJOBS_MAX_PAYLOAD_BYTES: a payload is measured as the client
-- measures it, in bytes of compact JSON text (no space after ':' and ','), parameters in the
-- spaced text that both Postgres and the client write.
--
-- SECURITY INVOKER: the caller needs the rights of a producer (SELECT on jobs and runs, INSERT
-- on runs), which the worker role has; EXECUTE is not granted to PUBLIC.
-- What to tell a caller who names job `job`, which is not registered: the nearest registered
-- names, or the known ones, or that none is. (The message of pgjobs.enqueue's and
-- pgjobs.schedule's unknown-job error.)
CREATE FUNCTION {schema}.unknown_job_hint(job text) RETURNS text
LANGUAGE sql STABLE AS $fn$
    -- The nearest names by their shared pairs of letters (Dice's coefficient): those about as
    -- close as the best, as the client's suggestion does.
    SELECT CASE WHEN count(*) = 0 THEN 'no jobs are registered (a job is known once a '
                                       'worker that loads it has started)'
                WHEN count(*) FILTER (WHERE s.is_close) > 0 THEN
                    'did you mean: ' || string_agg(s.name, ', ' ORDER BY s.place)
                        FILTER (WHERE s.is_close) || '?'
                ELSE 'known jobs: ' || string_agg(s.name, ', ' ORDER BY s.name)
                    FILTER (WHERE s.name_place <= 10)
                    || CASE WHEN count(*) > 10 THEN ', ...' ELSE '' END
           END
    FROM (SELECT c.name, c.place, row_number() OVER (ORDER BY c.name) AS name_place,
                 c.place <= 3
                     AND c.score >= greatest(0.6, max(c.score) OVER () - 0.15) AS is_close
          FROM (SELECT j.name, d.score,
                       row_number() OVER (ORDER BY d.score DESC, j.name) AS place
                FROM {schema}.jobs j,
                     LATERAL (SELECT 2.0 * coalesce(sum(least(a.n, b.n)), 0)
                                     / greatest(length(unknown_job_hint.job) + length(j.name) - 2, 1)
                                     AS score
                              FROM (SELECT substr(unknown_job_hint.job, i, 2) AS pair, count(*) AS n
                                    FROM generate_series(1, length(unknown_job_hint.job) - 1) i
                                    GROUP BY 1) a
                              JOIN (SELECT substr(j.name, i, 2) AS pair, count(*) AS n
                                    FROM generate_series(1, length(j.name) - 1) i
                                    GROUP BY 1) b USING (pair)) d) c) s
$fn$;

-- Raise the unknown-job error of every SQL entry point unless job `job` is registered.
CREATE FUNCTION {schema}.require_job(job text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.name = require_job.job) THEN
        RAISE EXCEPTION 'unknown job %', coalesce(quote_literal(job), 'NULL')
            USING ERRCODE = 'undefined_object', HINT = {schema}.unknown_job_hint(job);
    END IF;
END
$$;

-- Why a run's `payload` (a JSON object or NULL) or `parameters` (a JSON object of strings to
-- strings, or NULL) cannot be stored, or NULL: the rule of enqueue and of the schedules.
CREATE FUNCTION {schema}.run_input_error(payload jsonb, parameters jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(payload) <> 'object' THEN
            format('payload must be a JSON object or NULL, got %s', jsonb_typeof(payload))
        WHEN jsonb_typeof(parameters) <> 'object'
             OR (CASE WHEN jsonb_typeof(parameters) = 'object' THEN  -- jsonb_each of objects only
                     EXISTS (SELECT FROM jsonb_each(parameters) p
                             WHERE jsonb_typeof(p.value) <> 'string')
                 END) THEN
            format('parameters must be a JSON object of strings to strings, got %s',
                   left(parameters::text, 200))
    END
$$;

CREATE FUNCTION {schema}.enqueue(
    job text,
    payload jsonb DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    priority integer DEFAULT NULL,
    queue text DEFAULT NULL,
    dedup_key text DEFAULT NULL,
    parameters jsonb DEFAULT NULL,
    concurrency_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
-- In a statement, a bare name is the column: the arguments are named like the columns they fill,
-- and are written there as enqueue.<argument>.
#variable_conflict use_column
DECLARE
    limit_text text := nullif(btrim(current_setting('pgjobs.max_payload_bytes', true)), '');
    max_bytes bigint := 262144;
    json_bytes bigint;
    target record;
    run_key text;
    found_id bigint;
    problem text;
BEGIN
    IF job IS NULL OR job !~ '\S' THEN
        RAISE EXCEPTION 'job must be a job name, got %', coalesce(quote_literal(job), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF run_at IS NOT NULL AND NOT isfinite(run_at) THEN
        RAISE EXCEPTION 'run_at must be a finite timestamp, got %', run_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF queue = '' OR dedup_key = '' OR concurrency_key = '' THEN
        RAISE EXCEPTION '% must be a non-empty string, got ''''',
            CASE WHEN queue = '' THEN 'queue' WHEN dedup_key = '' THEN 'dedup_key'
                 ELSE 'concurrency_key' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(dedup_key) > 512 OR octet_length(concurrency_key) > 512 THEN
        RAISE EXCEPTION '% is % bytes, over the limit of 512',
            CASE WHEN octet_length(dedup_key) > 512 THEN 'dedup_key' ELSE 'concurrency_key' END,
            CASE WHEN octet_length(dedup_key) > 512 THEN octet_length(dedup_key)
                 ELSE octet_length(concurrency_key) END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use a hash of a long key (e.g. its SHA-256 in hex)';
    END IF;

    -- A JSON null is no payload (no parameters), as for the client.
    payload := nullif(payload, 'null');
    parameters := nullif(parameters, 'null');
    problem := {schema}.run_input_error(payload, parameters);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF limit_text IS NOT NULL THEN
        IF limit_text !~ '^[0-9]+$' OR limit_text::numeric = 0 THEN
            RAISE EXCEPTION 'pgjobs.max_payload_bytes must be a positive integer, got %',
                quote_literal(limit_text)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        max_bytes := least(limit_text::numeric, 9223372036854775807)::bigint;
    END IF;
    json_bytes := octet_length(payload::text);
    IF json_bytes > max_bytes THEN
        -- Postgres writes a space after each ':' and ',' between items, the client's compact
        -- JSON does not: take them off (a cost only for a payload that may be over the limit).
        SELECT json_bytes - coalesce(sum(greatest(
                   CASE jsonb_typeof(node)
                       WHEN 'object' THEN 2 * (SELECT count(*) FROM jsonb_object_keys(node)) - 1
                       ELSE jsonb_array_length(node) - 1
                   END, 0)), 0)
        INTO json_bytes
        FROM jsonb_path_query(payload, 'strict $.**') AS node
        WHERE jsonb_typeof(node) IN ('object', 'array');
        IF json_bytes > max_bytes THEN
            RAISE EXCEPTION 'payload is % bytes of JSON, over the limit of % '
                            '(pgjobs.max_payload_bytes)', json_bytes, max_bytes
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'store large data elsewhere and pass its key';
        END IF;
    END IF;
    IF octet_length(parameters::text) > max_bytes THEN
        RAISE EXCEPTION 'parameters are % bytes of JSON, over the limit of % '
                        '(pgjobs.max_payload_bytes)', octet_length(parameters::text), max_bytes
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'store large data elsewhere and pass its key';
    END IF;

    SELECT j.name, j.priority, j.queue, j.max_attempts, j.concurrency_key AS key_field
    INTO target
    FROM {schema}.jobs j
    WHERE j.name = enqueue.job;
    IF NOT FOUND THEN
        PERFORM {schema}.require_job(job);
    END IF;

    -- The run's concurrency key: the one given; else, for a job keyed by a payload field, that
    -- field's value. A job keyed in code needs its key given: only its class computes it.
    run_key := concurrency_key;
    IF run_key IS NULL AND target.key_field LIKE 'callable:%' THEN
        RAISE EXCEPTION 'job % computes its concurrency key in code', quote_literal(job)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass concurrency_key => ..., or enqueue from Python with the Job class';
    ELSIF run_key IS NULL THEN
        run_key := payload ->> target.key_field;
        IF octet_length(run_key) > 512 THEN
            RAISE EXCEPTION 'job %: the payload field %, its concurrency key, holds more than '
                            '512 bytes', quote_literal(job), quote_literal(target.key_field)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass concurrency_key => a hash of it';
        END IF;
    END IF;

    -- With a dedup_key held by a queued run, that run. A concurrent transaction's run with the
    -- key makes the insert wait for it, then do nothing if it committed: the next statement, with
    -- a snapshot of its own, sees that run (unless it has started since, and then a new run may
    -- go in: look again).
    FOR look IN 1..3 LOOP
        INSERT INTO {schema}.runs AS r
            (job, trigger, scheduled_for, payload, parameters, priority, queue, max_attempts,
             dedup_key, concurrency_key)
        VALUES (target.name, 'enqueue', coalesce(enqueue.run_at, now()), enqueue.payload,
                enqueue.parameters, coalesce(enqueue.priority, target.priority),
                coalesce(enqueue.queue, target.queue), target.max_attempts, enqueue.dedup_key,
                run_key)
        ON CONFLICT (job, dedup_key) WHERE dedup_key IS NOT NULL AND status = 'queued' DO NOTHING
        RETURNING r.id INTO found_id;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
        SELECT r.id INTO found_id
        FROM {schema}.runs r
        WHERE r.job = target.name AND r.dedup_key = enqueue.dedup_key AND r.status = 'queued';
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not enqueue % with dedup_key %: its queued run kept changing state',
        quote_literal(job), quote_literal(dedup_key)
        USING ERRCODE = 'serialization_failure', HINT = 'retry the transaction';
END
$$;

COMMENT ON FUNCTION {schema}.enqueue(text, jsonb, timestamptz, integer, text, text, jsonb, text) IS
    'Queue a run of a job in the caller''s transaction, as the Python enqueue does; returns its id';

REVOKE EXECUTE ON FUNCTION {schema}.enqueue(text, jsonb, timestamptz, integer, text, text, jsonb,
                                            text) FROM PUBLIC;
