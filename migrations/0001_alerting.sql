-- Alert rules, notification channels, routing, silences, SLOs, alert state
-- and history. Definitions are stored as JSON documents (the API shapes),
-- keyed by name or id; state and history are rows.

CREATE TABLE rule_groups (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE channels (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE silences (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE slos (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

-- Single documents such as the routing tree and inhibition rules.
CREATE TABLE settings (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

-- The active (pending, firing, recently resolved) alerts of each rule.
CREATE TABLE alert_state (
    rule_key    TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

-- Every state transition of every alert.
CREATE TABLE alert_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    t_ms        INTEGER NOT NULL,
    rule_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    value       REAL,
    labels      TEXT NOT NULL
);
CREATE INDEX alert_history_t ON alert_history (t_ms);
CREATE INDEX alert_history_rule ON alert_history (rule_key, t_ms);
