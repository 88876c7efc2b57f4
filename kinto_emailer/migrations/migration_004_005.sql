-- The delivery log (kinto_emailer.deliverylog), read from the queue's own rows.
-- The reason of the last failed attempt of a message waiting for its retry, and the time
-- of its change (as its draft says, once, for the log's order), written by the statement
-- that queues it. Rows queued before get theirs now, if their draft has a readable one.
ALTER TABLE kinto_emailer_jobs
    ADD COLUMN IF NOT EXISTS last_error TEXT,
    ADD COLUMN IF NOT EXISTS created TIMESTAMPTZ;
UPDATE kinto_emailer_jobs SET created = (draft->>'created')::timestamptz
 WHERE created IS NULL
   AND draft->>'created' ~ '^\d{4}-\d\d-\d\dT[\d:.]+([+-]\d\d:\d\d|Z)$';
ALTER TABLE kinto_emailer_failed ADD COLUMN IF NOT EXISTS bucket TEXT
    GENERATED ALWAYS AS (
        CASE WHEN draft->>'uri' LIKE '/buckets/%' THEN split_part(draft->>'uri', '/', 3) ELSE '' END
    ) STORED;
-- Messages sent, moved here by the statement that ends their claim, and what workers
-- decided instead of queuing a message: a digest entry, mail turned off by its
-- recipient, mail dropped (over a bound, or too old).
CREATE TABLE IF NOT EXISTS kinto_emailer_log (
    key TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    recipient TEXT NOT NULL,
    uri TEXT NOT NULL,
    subject TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    state TEXT NOT NULL,
    at TIMESTAMPTZ,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS kinto_emailer_log_bucket ON kinto_emailer_log (bucket, created);
CREATE INDEX IF NOT EXISTS kinto_emailer_log_created ON kinto_emailer_log (created);

INSERT INTO metadata (name, value) VALUES ('kinto_emailer_schema_version', '5');
