//! Versioned, forward-only schema migrations.
//!
//! Each migration runs in its own transaction together with its `schema_migrations` row, so
//! a failure leaves the database at the previous version. Migrations are never edited once
//! released: a change is a new migration.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// One migration.
#[derive(Debug)]
pub struct Migration {
    /// Strictly increasing, starting at 1.
    pub version: u32,
    /// Short name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "baseline",
        sql: include_str!("../migrations/0001_baseline.sql"),
    },
    Migration {
        version: 2,
        name: "snapshots",
        sql: include_str!("../migrations/0002_snapshots.sql"),
    },
];

/// How a database relates to this build's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// Every known migration is applied and nothing newer is recorded.
    Compatible,
    /// Some known migrations are not applied yet.
    NeedsMigration {
        /// How many.
        pending: u32,
    },
    /// The database records a migration newer than any this build knows.
    Incompatible {
        /// The newest version recorded in the database.
        db_version: u32,
        /// The newest version this build knows.
        known: u32,
    },
}

/// The newest migration version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn applied_versions(conn: &Connection) -> Result<Vec<u32>, StoreError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
    let versions = stmt.query_map([], |r| r.get(0))?;
    Ok(versions.collect::<Result<_, _>>()?)
}

/// Classifies the database without writing to it.
pub fn inspect(conn: &Connection) -> Result<SchemaState, StoreError> {
    let applied = applied_versions(conn)?;
    let known = latest_version();
    if let Some(&newest) = applied.last()
        && newest > known
    {
        return Ok(SchemaState::Incompatible {
            db_version: newest,
            known,
        });
    }
    let pending = MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count() as u32;
    Ok(if pending == 0 {
        SchemaState::Compatible
    } else {
        SchemaState::NeedsMigration { pending }
    })
}

/// Applies every pending migration, each in its own transaction.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
         )",
    )?;
    let applied = applied_versions(conn)?;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let fail = |source| StoreError::Migrate {
            version: m.version,
            name: m.name,
            source,
        };
        // `Connection` is shared, so use an unchecked transaction on a `&Connection`.
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Another process (a concurrent cold start) may have applied it while this one
        // waited for the write lock: check again inside the transaction.
        let done: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [m.version],
                |r| r.get(0),
            )
            .map_err(fail)?;
        if done {
            continue;
        }
        tx.execute_batch(m.sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            rusqlite::params![m.version, m.name],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_migrations_versions_strictly_increase_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn test_a_migration_applied_while_waiting_for_the_write_lock_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Another daemon holds the write lock and is about to apply everything.
        let first = Connection::open(&path).unwrap();
        first
            .execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 applied_at TEXT NOT NULL DEFAULT '') ; BEGIN IMMEDIATE",
            )
            .unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let racer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let conn = Connection::open(&path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(20))
                    .unwrap();
                ready_tx.send(()).unwrap();
                migrate(&conn)
            })
        };
        ready_rx.recv().unwrap();
        // Let the racer read "nothing applied" and block on BEGIN IMMEDIATE.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for m in MIGRATIONS {
            first.execute_batch(m.sql).unwrap();
            first
                .execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                    rusqlite::params![m.version, m.name],
                )
                .unwrap();
        }
        first.execute_batch("COMMIT").unwrap();
        racer.join().unwrap().unwrap();
        assert_eq!(applied_versions(&first).unwrap().len(), MIGRATIONS.len());
    }

    #[test]
    fn test_migrate_fresh_then_idempotent() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            inspect(&conn).unwrap(),
            SchemaState::NeedsMigration {
                pending: latest_version()
            }
        );
        migrate(&conn).unwrap();
        assert_eq!(inspect(&conn).unwrap(), SchemaState::Compatible);
        migrate(&conn).unwrap();
        let rows: u32 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, latest_version());
    }

    #[test]
    fn test_inspect_newer_db_is_incompatible() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')",
            [],
        )
        .unwrap();
        assert_eq!(
            inspect(&conn).unwrap(),
            SchemaState::Incompatible {
                db_version: 999,
                known: latest_version()
            }
        );
    }
}
