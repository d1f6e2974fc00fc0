-- Named queries of retention: pruning finished runs. Queued and running runs are never touched,
-- and neither is the latest finished run of each job, which `job_status` shows as its last run.

-- name: prune_cutoff
-- The cutoff of one prune, fixed once on the database clock so the batches agree on it.
SELECT now() - %(older_than)s::interval;

-- name: count_prunable_runs
SELECT count(*)
FROM {schema}.runs r
WHERE r.created_at < %(cutoff)s
  AND r.status NOT IN ('queued', 'running')
  AND EXISTS (SELECT 1 FROM {schema}.runs newer
              WHERE newer.job = r.job AND newer.id > r.id
                AND newer.status NOT IN ('queued', 'running'));

-- name: prune_runs_batch
-- Delete up to `batch` prunable runs, oldest first (ids ascend with creation: the primary key
-- finds them without sorting the history); rows locked by someone else are left for the next
-- prune rather than waited for.
WITH doomed AS (
    SELECT r.id
    FROM {schema}.runs r
    WHERE r.created_at < %(cutoff)s
      AND r.status NOT IN ('queued', 'running')
      AND EXISTS (SELECT 1 FROM {schema}.runs newer
                  WHERE newer.job = r.job AND newer.id > r.id
                    AND newer.status NOT IN ('queued', 'running'))
    ORDER BY r.id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM {schema}.runs r USING doomed WHERE r.id = doomed.id RETURNING r.id
)
SELECT count(*) FROM deleted;
