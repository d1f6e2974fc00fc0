-- pgjobs schema, revision 0012: waiting for a run's end (pgjobs.wait).
--
-- A caller that waits for a run marks it `awaited`; the run's end then notifies.
ALTER TABLE {schema}.runs
    ADD COLUMN awaited boolean NOT NULL DEFAULT false;
