-- Workers are woken after commit by the process that queued (kinto_emailer.wakeups): a
-- NOTIFY in the writers' own transactions made their commits wait for one another.
DROP TRIGGER IF EXISTS kinto_emailer_jobs_queued ON kinto_emailer_jobs;
DROP TRIGGER IF EXISTS kinto_emailer_changes_recorded ON kinto_emailer_changes;
DROP FUNCTION IF EXISTS kinto_emailer_wake_workers();

INSERT INTO metadata (name, value) VALUES ('kinto_emailer_schema_version', '3');
