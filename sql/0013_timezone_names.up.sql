-- pgjobs schema, revision 0013: checking a schedule's timezone without reading the zone files.
--
-- pg_timezone_names reads the server's whole time zone directory at every call, some 35 ms:
-- pgjobs.schedule() spent most of its time there. The names it lists are now kept in a table,
-- read by primary key. A name the table lacks (a zone added by a later tzdata release of the
-- server) is still looked up in pg_timezone_names, so nothing the server knows is refused.
CREATE TABLE {schema}.timezone_names (
    name text NOT NULL CONSTRAINT timezone_names_pkey PRIMARY KEY
);

COMMENT ON TABLE {schema}.timezone_names IS
    'The IANA zone names of the server when pgjobs was migrated: what timezone_error accepts without reading pg_timezone_names.';

INSERT INTO {schema}.timezone_names (name)
SELECT DISTINCT z.name FROM pg_timezone_names z
WHERE z.name NOT IN ('Factory', 'localtime', 'posixrules') AND z.name !~ '^(posix|right)/';

CREATE OR REPLACE FUNCTION {schema}.timezone_error(timezone text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN timezone IS NULL OR timezone = '' THEN 'a timezone is required'
        WHEN EXISTS (SELECT 1 FROM {schema}.timezone_names z WHERE z.name = timezone) THEN NULL
        -- The IANA names the workers know: not the server's own aliases nor its posix/ and
        -- right/ copies.
        WHEN NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = timezone)
             OR timezone IN ('Factory', 'localtime', 'posixrules')
             OR timezone ~ '^(posix|right)/' THEN
            format('unknown timezone %L (an IANA name such as UTC or Europe/Paris)', timezone)
    END
$$;
