-- pgjobs schema, revision 0019: the claim's debit of a rate bucket and its recheck of fresh slots
-- each cost one query less.

-- take_tokens: the shard is chosen, locked and debited by one UPDATE (revision 0008 chose and
-- locked it with a SELECT first). Still a statement of its own, with a snapshot of its own: the
-- shard with the most tokens that no other claim holds; when other claims hold every shard,
-- shard 0, waited for and debited as its holder left it. No row when the bucket does not exist.
CREATE OR REPLACE FUNCTION {schema}.take_tokens(scope text, name text, wanted integer)
RETURNS TABLE (shard smallint, granted integer, tokens double precision, rate double precision)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE {schema}.rate_buckets b
    SET granted = least(wanted, floor({schema}.rate_bucket_level(b))),
        tokens = {schema}.rate_bucket_level(b) - least(wanted, floor({schema}.rate_bucket_level(b))),
        updated_at = greatest(b.updated_at, now())
    WHERE b.scope = take_tokens.scope AND b.name = take_tokens.name
      AND b.shard = coalesce((SELECT c.shard
                              FROM {schema}.rate_buckets c
                              WHERE c.scope = take_tokens.scope AND c.name = take_tokens.name
                              ORDER BY {schema}.rate_bucket_level(c) DESC, c.shard
                              LIMIT 1
                              FOR UPDATE SKIP LOCKED),
                             0)
    RETURNING b.shard, b.granted, b.tokens, b.rate;
END
$$;

-- Of the slots a claim tried (runs `ids`, each with slot `slots` of its group: job `jobs`, key
-- `keys`), those that no running run holds, as of now: a claim that committed one of them after
-- the trying statement's snapshot was taken shows here. The claim passes each run's group, so
-- each slot is one probe of runs_slot_idx (the two-argument form, kept for workers of revision
-- 0018 during a rolling upgrade, looks each run up first).
CREATE FUNCTION {schema}.unheld_slots(ids bigint[], slots integer[], jobs text[], keys text[])
RETURNS TABLE (run_id bigint, run_slot integer)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RETURN QUERY
    SELECT c.id, c.slot
    FROM unnest(ids, slots, jobs, keys) AS c(id, slot, job, lock_key)
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.runs h
                      WHERE h.job = c.job AND coalesce(h.concurrency_key, '') = c.lock_key
                        AND h.slot = c.slot AND h.status = 'running' AND h.slot IS NOT NULL);
END
$$;
