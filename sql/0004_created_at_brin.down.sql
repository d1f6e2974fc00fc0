-- Undo revision 0004: runs.created_at gets its B-tree back.

DROP INDEX {schema}.runs_created_at_brin;
CREATE INDEX runs_created_at_idx ON {schema}.runs (created_at);
