-- What each notification group last sent, so that a restart neither
-- repeats notifications inside repeat_interval nor forgets resolved ones.
CREATE TABLE notification_log (
    group_key   TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);
