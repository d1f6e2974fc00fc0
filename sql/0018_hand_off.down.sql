DROP FUNCTION {schema}.hand_off_dependants(bigint[], text, text[], integer, double precision);
