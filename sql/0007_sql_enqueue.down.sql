DROP FUNCTION {schema}.enqueue(text, jsonb, timestamptz, integer, text, text, jsonb, text);
DROP FUNCTION {schema}.require_job(text);
DROP FUNCTION {schema}.run_input_error(jsonb, jsonb);
DROP FUNCTION {schema}.unknown_job_hint(text);
