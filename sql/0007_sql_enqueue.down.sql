DROP FUNCTION {schema}.enqueue(text, jsonb, timestamptz, integer, text, text, jsonb, text);
DROP FUNCTION {schema}.unknown_job_hint(text);
