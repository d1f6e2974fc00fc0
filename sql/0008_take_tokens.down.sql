-- Undo revision 0008.
DROP FUNCTION {schema}.take_tokens(text, text, integer);
