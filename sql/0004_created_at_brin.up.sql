-- Revision 0004: runs.created_at is indexed by a BRIN index instead of a B-tree.
--
-- Every claim and every finish writes a new version of a run's row, and a B-tree on created_at
-- took an entry for each: a quarter of the database's work per drained run when a batch was
-- enqueued at once (one created_at for all of it). Rows are appended in creation order, so a
-- BRIN index answers the time-window reads (the dashboard's last 24 hours, `runs list --since`,
-- pruning) at the cost of a summary per 128 pages, which a new row version rarely changes.

DROP INDEX {schema}.runs_created_at_idx;
CREATE INDEX runs_created_at_brin ON {schema}.runs USING brin (created_at);
