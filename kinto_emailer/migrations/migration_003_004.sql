-- Web notifications newest first, the oldest, and those older than a time: their ids
-- sort by creation (kinto_emailer.inbox.notification_id).
CREATE INDEX IF NOT EXISTS idx_objects_emailer_notifications
    ON objects (parent_id, id) WHERE resource_name = 'emailer-notification';
-- An inbox's timestamp, as Kinto's own index of records serves a collection's: without
-- it, the one above may be taken for it, and every notification read.
CREATE INDEX IF NOT EXISTS idx_objects_emailer_notifications_last_modified
    ON objects (parent_id, last_modified DESC) WHERE resource_name = 'emailer-notification';
-- What each inbox holds, written with its notifications (kinto_emailer.inbox.Counts).
CREATE TABLE IF NOT EXISTS kinto_emailer_inboxes (
    parent_id TEXT COLLATE "C" PRIMARY KEY,
    held BIGINT NOT NULL,
    unread BIGINT NOT NULL,
    oldest TEXT COLLATE "C"
);

INSERT INTO metadata (name, value) VALUES ('kinto_emailer_schema_version', '4');
