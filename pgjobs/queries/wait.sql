-- Named queries of pgjobs.wait and `jobs run --wait`: a caller waits for a run's end.
-- `{schema}` is the quoted pgjobs schema; parameters are bound.

-- name: awaited_channel
-- The channel on which changes of awaited runs are told (LISTENed to before anything is marked).
SELECT {schema}.awaited_channel(%(schema)s);

-- name: mark_run_awaited
-- The waiter, already listening, marks the run awaited and reads where it stands (migration 0012
-- says why no end is missed). A run already awaited (by another waiter, or the retry of an
-- awaited run) is only read: its mark was committed before this snapshot, so any later change
-- sees it and notifies. Otherwise the UPDATE takes the row after any statement changing it, and
-- RETURNING shows the row as that statement left it, which the snapshot would not.
--
-- The UPDATE holds the row for an instant: a claim at that instant passes over a queued run
-- (SKIP LOCKED), and its worker may then sleep until its next poll. So a due queued run marked
-- here wakes one waiting worker that can take it, or, when none is seen waiting (its claim may
-- not have committed yet), every worker, as an insert of runs does (notify_runs_inserted). The
-- wake-ups are delivered at commit, once the row is free.
WITH seen AS (
    SELECT r.id, r.status, r.awaited FROM {schema}.runs r WHERE r.id = %(id)s
), marked AS (
    UPDATE {schema}.runs r
    SET awaited = true
    FROM seen s
    WHERE r.id = s.id AND NOT s.awaited AND s.status IN ('queued', 'running')
    RETURNING r.id, r.status, r.job, r.queue, r.status = 'queued' AND r.scheduled_for <= now() AS due
), woken AS (
    UPDATE {schema}.workers w
    SET waiting = 0, waiting_since = NULL
    WHERE w.id = (SELECT x.id
                  FROM {schema}.workers x
                  JOIN marked m ON m.due
                  WHERE x.waiting > 0 AND x.state = 'running' AND x.expires_at > now()
                    AND m.queue = ANY (x.queues)
                    AND EXISTS (SELECT 1 FROM {schema}.worker_jobs wj
                                WHERE wj.worker_id = x.id AND wj.job = m.job)
                  ORDER BY x.waiting_since, x.id
                  LIMIT 1
                  FOR UPDATE OF x SKIP LOCKED)
    RETURNING pg_notify({schema}.wake_channel(%(schema)s, w.id), 'run')
)
SELECT coalesce(m.status, s.status) AS status,
       CASE WHEN m.due AND NOT EXISTS (SELECT 1 FROM woken)
            THEN pg_notify(%(schema)s, 'run') END AS woke_all
FROM seen s
LEFT JOIN marked m ON true;
