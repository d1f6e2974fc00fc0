ALTER TABLE {schema}.runs
    DROP COLUMN awaited;
