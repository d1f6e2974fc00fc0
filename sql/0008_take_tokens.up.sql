-- pgjobs schema, revision 0008: a claim debits a rate bucket in a snapshot of its own.

-- A claim's debit of one rate bucket, in a snapshot of its own: up to `wanted` tokens of a
-- shard of the bucket (`scope`, `name`), refilled for the time since it was last debited; what
-- it granted, what the shard has left, and its rate. No row when the bucket does not exist.
--
-- The shard is the one with the most tokens that no other claim holds, locked; when other
-- claims hold every shard, shard 0, waited for. Being a statement of its own, each query here
-- reads the newest committed version of the shard: locking and debiting it never re-evaluates
-- the calling claim's plan for a version that committed after the claim began (which, for a
-- bucket that every claim debits, would be nearly every time).
CREATE FUNCTION {schema}.take_tokens(scope text, name text, wanted integer)
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
