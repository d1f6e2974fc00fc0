-- pgjobs schema, revision 0016: the jobs with a concurrency limit, found without reading jobs.
--
-- A claim looks for the concurrency groups with every slot taken while any limited run is
-- running: it probes the slots' index of each limited job for its top slots, and this index
-- lists those jobs (a few among thousands of jobs).
CREATE INDEX jobs_limited_idx ON {schema}.jobs (name)
    WHERE max_concurrency IS NOT NULL OR concurrency_key IS NOT NULL;
