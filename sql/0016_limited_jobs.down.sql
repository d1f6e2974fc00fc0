DROP INDEX {schema}.jobs_limited_idx;
