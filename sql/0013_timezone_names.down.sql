CREATE OR REPLACE FUNCTION {schema}.timezone_error(timezone text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN timezone IS NULL OR timezone = '' THEN 'a timezone is required'
        -- The IANA names the workers know: not the server's own aliases nor its posix/ and
        -- right/ copies.
        WHEN NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = timezone)
             OR timezone IN ('Factory', 'localtime', 'posixrules')
             OR timezone ~ '^(posix|right)/' THEN
            format('unknown timezone %L (an IANA name such as UTC or Europe/Paris)', timezone)
    END
$$;

DROP TABLE {schema}.timezone_names;
