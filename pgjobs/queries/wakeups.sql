-- Named queries of a worker's wake-ups (see sql/0015_quiet_enqueue.up.sql).

-- name: settle_idle
-- A listening worker whose claim came short, before it sleeps: 'busy' (an enqueue into its
-- queues has not committed: look again in a moment), 'queued' (claim once more) or 'idle'.
SELECT {schema}.settle_idle(%(worker)s, %(queues)s);
