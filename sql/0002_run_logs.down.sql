-- Undo revision 0002: drop the captured run logs.
ALTER TABLE {schema}.runs DROP COLUMN IF EXISTS logs;
