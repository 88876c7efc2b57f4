-- The mail queue: changes noted in Kinto's transactions, messages, sent keys, failures,
-- counts and hourly usage. Idempotent: the tables made by versions that created them
-- without a migration (and recorded no version) are kept with what they hold.
CREATE TABLE IF NOT EXISTS kinto_emailer_changes (
    id BIGSERIAL PRIMARY KEY,
    change JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS kinto_emailer_jobs (
    key TEXT PRIMARY KEY,
    draft JSONB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp()
);
-- The bucket of each change and message, for fair claims: generated, so that rows queued
-- by an older version are filled in when the column is added.
ALTER TABLE kinto_emailer_changes ADD COLUMN IF NOT EXISTS bucket TEXT
    GENERATED ALWAYS AS (coalesce(change->'base'->>'bucket_id', '')) STORED;
CREATE INDEX IF NOT EXISTS kinto_emailer_changes_bucket ON kinto_emailer_changes (bucket, id);
ALTER TABLE kinto_emailer_jobs ADD COLUMN IF NOT EXISTS bucket TEXT
    GENERATED ALWAYS AS (
        CASE WHEN draft->>'uri' LIKE '/buckets/%' THEN split_part(draft->>'uri', '/', 3) ELSE '' END
    ) STORED;
CREATE INDEX IF NOT EXISTS kinto_emailer_jobs_bucket ON kinto_emailer_jobs (bucket, due);
-- Replaced by the index above: claims that used it read the whole of a flooding bucket.
DROP INDEX IF EXISTS kinto_emailer_jobs_due;
CREATE OR REPLACE FUNCTION kinto_emailer_wake_workers() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('kinto_emailer_jobs', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER kinto_emailer_jobs_queued AFTER INSERT ON kinto_emailer_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION kinto_emailer_wake_workers();
CREATE OR REPLACE TRIGGER kinto_emailer_changes_recorded AFTER INSERT ON kinto_emailer_changes
    FOR EACH STATEMENT EXECUTE FUNCTION kinto_emailer_wake_workers();
CREATE TABLE IF NOT EXISTS kinto_emailer_sent (
    key TEXT PRIMARY KEY,
    sent_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS kinto_emailer_sent_at ON kinto_emailer_sent (sent_at);
CREATE TABLE IF NOT EXISTS kinto_emailer_failed (
    key TEXT PRIMARY KEY,
    draft JSONB NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kinto_emailer_counts (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS kinto_emailer_usage (
    key TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (window_start, key)
);

-- Each step records the version it leads to.
INSERT INTO metadata (name, value) VALUES ('kinto_emailer_schema_version', '2');
