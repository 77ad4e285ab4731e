//! The meta store: alert rules, notification channels and routing,
//! silences, SLOs, alert state and history, in one embedded SQLite database
//! (`<data_dir>/meta/meta.db`, WAL journal, `synchronous=FULL`).
//!
//! The schema is versioned: the ordered migrations in `migrations/`
//! (`NNNN_description.sql`, compiled in) run once each, in order, each in a
//! transaction together with its row in `schema_migrations`. A database
//! made by a newer version (a migration number this binary does not know)
//! is refused rather than guessed at.
//!
//! Definitions are JSON documents keyed by name ([`Kind`]); the types and
//! their validation belong to `analysis`, this module only stores them.
//! Every call blocks: async callers use `spawn_blocking`. This is the only
//! module that imports `rusqlite`.

use crate::model::time::now_ms;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

/// The migrations, in order: (number, name, SQL).
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "alerting",
        include_str!("../../../migrations/0001_alerting.sql"),
    ),
    (
        2,
        "notification_log",
        include_str!("../../../migrations/0002_notification_log.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("meta store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("meta store i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("meta store holds an invalid document: {0}")]
    Corrupt(String),
    #[error("meta store schema version {found} is newer than this binary knows ({known})")]
    NewerSchema { found: u32, known: u32 },
}

impl MetaError {
    pub fn code(&self) -> &'static str {
        match self {
            MetaError::Sqlite(_) => "meta_store",
            MetaError::Io(_) => "meta_store_io",
            MetaError::Corrupt(_) => "meta_store_corrupt",
            MetaError::NewerSchema { .. } => "meta_store_schema",
        }
    }
}

/// Kinds of JSON documents, each in its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RuleGroup,
    Channel,
    Silence,
    Slo,
    Setting,
    AlertState,
    NotificationLog,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::RuleGroup => "rule_groups",
            Kind::Channel => "channels",
            Kind::Silence => "silences",
            Kind::Slo => "slos",
            Kind::Setting => "settings",
            Kind::AlertState => "alert_state",
            Kind::NotificationLog => "notification_log",
        }
    }

    fn key_column(self) -> &'static str {
        match self {
            Kind::Silence => "id",
            Kind::AlertState => "rule_key",
            Kind::NotificationLog => "group_key",
            _ => "name",
        }
    }
}

/// One alert state transition.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    #[serde(default)]
    pub id: i64,
    pub t_ms: i64,
    pub rule_key: String,
    pub fingerprint: String,
    pub from_state: String,
    pub to_state: String,
    pub value: Option<f64>,
    pub labels: serde_json::Value,
}

/// A history query: newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub rule_key: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub limit: usize,
}

pub struct MetaStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl MetaStore {
    /// Opens (creating) `<dir>/meta.db` and applies every pending migration.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        Self::open_at(dir, u32::MAX)
    }

    /// Opens and migrates up to migration `max_version` only (tests use it
    /// to make a database as an earlier version left it).
    pub fn open_at(dir: &Path, max_version: u32) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("meta.db");
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_ms INTEGER NOT NULL
            )",
        )?;
        let found: u32 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if found > known {
            return Err(MetaError::NewerSchema { found, known });
        }
        for (version, name, sql) in MIGRATIONS {
            if *version <= found || *version > max_version {
                continue;
            }
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                params![version, name, now_ms()],
            )?;
            tx.commit()?;
            tracing::info!(version, name, "meta store migration applied");
        }
        Ok(MetaStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest applied migration.
    pub fn schema_version(&self) -> Result<u32, MetaError> {
        Ok(self.conn.lock().query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    /// Inserts or replaces a document.
    pub fn put(&self, kind: Kind, key: &str, body: &serde_json::Value) -> Result<(), MetaError> {
        let sql = format!(
            "INSERT INTO {t} ({k}, body, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT({k}) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
            t = kind.table(),
            k = kind.key_column()
        );
        self.conn
            .lock()
            .execute(&sql, params![key, body.to_string(), now_ms()])?;
        Ok(())
    }

    /// Replaces several documents of one kind in one transaction; keys in
    /// `delete` are removed in the same transaction.
    pub fn put_many(
        &self,
        kind: Kind,
        docs: &[(String, serde_json::Value)],
        delete: &[String],
    ) -> Result<(), MetaError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let put = format!(
                "INSERT INTO {t} ({k}, body, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT({k}) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
                t = kind.table(),
                k = kind.key_column()
            );
            let del = format!(
                "DELETE FROM {t} WHERE {k} = ?1",
                t = kind.table(),
                k = kind.key_column()
            );
            let now = now_ms();
            for (key, body) in docs {
                tx.execute(&put, params![key, body.to_string(), now])?;
            }
            for key in delete {
                tx.execute(&del, params![key])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, kind: Kind, key: &str) -> Result<Option<serde_json::Value>, MetaError> {
        let sql = format!(
            "SELECT body FROM {t} WHERE {k} = ?1",
            t = kind.table(),
            k = kind.key_column()
        );
        let body: Option<String> = self
            .conn
            .lock()
            .query_row(&sql, params![key], |r| r.get(0))
            .optional()?;
        body.map(|b| parse_doc(kind, key, &b)).transpose()
    }

    /// Every document of a kind, by key.
    pub fn list(&self, kind: Kind) -> Result<Vec<(String, serde_json::Value)>, MetaError> {
        let sql = format!(
            "SELECT {k}, body FROM {t} ORDER BY {k}",
            t = kind.table(),
            k = kind.key_column()
        );
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (k, b) = row?;
            let doc = parse_doc(kind, &k, &b)?;
            out.push((k, doc));
        }
        Ok(out)
    }

    /// Deletes a document; whether it existed.
    pub fn delete(&self, kind: Kind, key: &str) -> Result<bool, MetaError> {
        let sql = format!(
            "DELETE FROM {t} WHERE {k} = ?1",
            t = kind.table(),
            k = kind.key_column()
        );
        Ok(self.conn.lock().execute(&sql, params![key])? > 0)
    }

    /// Appends transitions, then keeps at most `max_rows` rows and none
    /// older than `min_t_ms`.
    pub fn append_history(
        &self,
        entries: &[HistoryEntry],
        max_rows: usize,
        min_t_ms: i64,
    ) -> Result<(), MetaError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare(
                "INSERT INTO alert_history (t_ms, rule_key, fingerprint, from_state, to_state, value, labels)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in entries {
                ins.execute(params![
                    e.t_ms,
                    e.rule_key,
                    e.fingerprint,
                    e.from_state,
                    e.to_state,
                    e.value.filter(|v| v.is_finite()),
                    e.labels.to_string()
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM alert_history WHERE t_ms < ?1 OR id <= (SELECT MAX(id) FROM alert_history) - ?2",
            params![min_t_ms, max_rows as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Transitions, newest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, MetaError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, t_ms, rule_key, fingerprint, from_state, to_state, value, labels
             FROM alert_history
             WHERE (?1 IS NULL OR rule_key = ?1) AND t_ms >= ?2 AND t_ms <= ?3
             ORDER BY id DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                q.rule_key,
                q.start_ms.unwrap_or(i64::MIN),
                q.end_ms.unwrap_or(i64::MAX),
                q.limit as i64
            ],
            |r| {
                Ok((
                    HistoryEntry {
                        id: r.get(0)?,
                        t_ms: r.get(1)?,
                        rule_key: r.get(2)?,
                        fingerprint: r.get(3)?,
                        from_state: r.get(4)?,
                        to_state: r.get(5)?,
                        value: r.get(6)?,
                        labels: serde_json::Value::Null,
                    },
                    r.get::<_, String>(7)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (mut e, labels) = row?;
            e.labels = serde_json::from_str(&labels)
                .map_err(|err| MetaError::Corrupt(format!("history row {}: {err}", e.id)))?;
            out.push(e);
        }
        Ok(out)
    }
}

fn parse_doc(kind: Kind, key: &str, body: &str) -> Result<serde_json::Value, MetaError> {
    serde_json::from_str(body)
        .map_err(|e| MetaError::Corrupt(format!("{} {key:?}: {e}", kind.table())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = MetaStore::open(dir.path()).unwrap();
            m.put(Kind::RuleGroup, "g1", &json!({"name": "g1", "rules": []}))
                .unwrap();
            m.put(Kind::RuleGroup, "g1", &json!({"name": "g1", "rules": [1]}))
                .unwrap();
            m.put(Kind::Channel, "hook", &json!({"type": "webhook"}))
                .unwrap();
            assert!(m.delete(Kind::Channel, "hook").unwrap());
            assert!(!m.delete(Kind::Channel, "hook").unwrap());
        }
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.schema_version().unwrap(), 2);
        let groups = m.list(Kind::RuleGroup).unwrap();
        assert_eq!(
            groups,
            vec![("g1".into(), json!({"name": "g1", "rules": [1]}))]
        );
        assert_eq!(m.get(Kind::Channel, "hook").unwrap(), None);
    }

    #[test]
    fn a_store_made_at_an_earlier_migration_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = MetaStore::open_at(dir.path(), 1).unwrap();
            assert_eq!(m.schema_version().unwrap(), 1);
            m.put(Kind::Slo, "checkout", &json!({"target": 0.99}))
                .unwrap();
            // The table of migration 2 does not exist yet.
            assert!(m.put(Kind::NotificationLog, "g", &json!({})).is_err());
        }
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.schema_version().unwrap(), 2);
        assert_eq!(
            m.get(Kind::Slo, "checkout").unwrap(),
            Some(json!({"target": 0.99}))
        );
        m.put(Kind::NotificationLog, "g", &json!({"sent": 1}))
            .unwrap();
        assert_eq!(
            m.get(Kind::NotificationLog, "g").unwrap(),
            Some(json!({"sent": 1}))
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = MetaStore::open(dir.path()).unwrap();
            m.conn
                .lock()
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (99, 'future', 0)",
                    [],
                )
                .unwrap();
        }
        match MetaStore::open(dir.path()) {
            Err(MetaError::NewerSchema {
                found: 99,
                known: 2,
            }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
    }

    #[test]
    fn history_is_bounded_and_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let entry = |t: i64| HistoryEntry {
            id: 0,
            t_ms: t,
            rule_key: if t % 2 == 0 { "a" } else { "b" }.into(),
            fingerprint: "f".into(),
            from_state: "pending".into(),
            to_state: "firing".into(),
            value: Some(t as f64),
            labels: json!({"alertname": "x"}),
        };
        let batch: Vec<_> = (0..10).map(entry).collect();
        m.append_history(&batch, 5, 0).unwrap();
        let all = m
            .history(&HistoryQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.t_ms).collect::<Vec<_>>(),
            vec![9, 8, 7, 6, 5]
        );
        let b = m
            .history(&HistoryQuery {
                rule_key: Some("b".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(b.iter().map(|e| e.t_ms).collect::<Vec<_>>(), vec![9, 7, 5]);
        // Retention by age.
        m.append_history(&[entry(20)], 100, 8).unwrap();
        let all = m
            .history(&HistoryQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.t_ms).collect::<Vec<_>>(),
            vec![20, 9, 8]
        );
        assert_eq!(all[0].labels, json!({"alertname": "x"}));
    }
}
