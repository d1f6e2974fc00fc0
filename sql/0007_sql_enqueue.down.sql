DROP FUNCTION {schema}.enqueue(text, jsonb, timestamptz, integer, text, text, jsonb, text);
