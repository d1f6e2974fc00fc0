-- pgjobs schema, revision 0019 undone: take_tokens as revision 0008 had it; no four-argument
-- unheld_slots.
DROP FUNCTION {schema}.unheld_slots(bigint[], integer[], text[], text[]);

CREATE OR REPLACE FUNCTION {schema}.take_tokens(scope text, name text, wanted integer)
RETURNS TABLE (shard smallint, granted integer, tokens double precision, rate double precision)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
    chosen smallint;
BEGIN
    SELECT b.shard INTO chosen
    FROM {schema}.rate_buckets b
    WHERE b.scope = take_tokens.scope AND b.name = take_tokens.name
    ORDER BY {schema}.rate_bucket_level(b) DESC, b.shard
    LIMIT 1
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT b.shard INTO chosen
        FROM {schema}.rate_buckets b
        WHERE b.scope = take_tokens.scope AND b.name = take_tokens.name AND b.shard = 0
        FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    UPDATE {schema}.rate_buckets b
    SET granted = least(wanted, floor({schema}.rate_bucket_level(b))),
        tokens = {schema}.rate_bucket_level(b) - least(wanted, floor({schema}.rate_bucket_level(b))),
        updated_at = greatest(b.updated_at, now())
    WHERE b.scope = take_tokens.scope AND b.name = take_tokens.name AND b.shard = chosen
    RETURNING b.shard, b.granted, b.tokens, b.rate;
END
$$;
