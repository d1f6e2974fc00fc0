-- Undo revision 0009. The runs that runtime schedules made stay, as manual runs: before this
-- revision a job's ticks were its own schedule's, one per second at most.
DROP FUNCTION {schema}.alter_schedule(text, text, text, text, jsonb, jsonb, text, boolean, boolean,
                                      text);
DROP FUNCTION {schema}.unschedule(text, text);
DROP FUNCTION {schema}.schedule(text, text, text, text, jsonb, jsonb, text, boolean, text);
DROP FUNCTION {schema}.schedule_settings_error(text, text, jsonb, jsonb, text, text);
DROP FUNCTION {schema}.timezone_error(text);
DROP FUNCTION {schema}.cron_error(text);
DROP TRIGGER jobs_schedule_guard ON {schema}.jobs;
DROP FUNCTION {schema}.jobs_schedule_guard();
DROP VIEW {schema}.all_schedules;
DROP TABLE {schema}.schedules;
DROP FUNCTION {schema}.notify_schedules();
DROP FUNCTION {schema}.schedules_changed();
UPDATE {schema}.runs SET trigger = 'manual' WHERE trigger = 'schedule' AND schedule IS NOT NULL;
CREATE UNIQUE INDEX runs_tick_key ON {schema}.runs (job, scheduled_for) WHERE trigger = 'schedule';
DROP INDEX {schema}.runs_schedule_tick_key;
ALTER TABLE {schema}.runs DROP COLUMN schedule;
