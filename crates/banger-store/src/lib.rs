//! banger's durable state in SQLite (`state.db`).
//!
//! The database runs in WAL mode with a busy timeout and foreign keys on. Its schema is
//! built by versioned, forward-only [`migrations`], each applied in its own transaction and
//! recorded in `schema_migrations`. A database that has migrations this build does not know
//! (made by a newer banger) is refused and never modified.

pub mod migrations;
mod records;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use migrations::SchemaState;
pub use records::{ImageRecord, KernelRecord, SnapshotRecord, VmRecord, VmRow};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened.
    #[error("cannot open database {path}")]
    Open {
        /// Database path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer banger.
    #[error(
        "database {path} has schema version {db_version}, newer than this build's {known}; refusing to touch it"
    )]
    Incompatible {
        /// Database path.
        path: PathBuf,
        /// Highest migration recorded in the database.
        db_version: u32,
        /// Highest migration this build knows.
        known: u32,
    },
    /// A migration failed (it was rolled back).
    #[error("migration {version} ({name}) failed")]
    Migrate {
        /// Migration version.
        version: u32,
        /// Migration name.
        name: &'static str,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a SQLite database, or is damaged.
    #[error(
        "database {path} is not a usable SQLite database (damaged or overwritten); move it aside (`mv {path} {path}.bad`) and start again: banger then begins with an empty store (VMs and images have to be registered again)"
    )]
    Damaged {
        /// Database path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] rusqlite::Error),
    /// A stored JSON column could not be decoded.
    #[error("corrupt json in column {column}")]
    Json {
        /// Column name.
        column: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is out of its domain.
    #[error("corrupt value in column {column}: {value:?}")]
    Corrupt {
        /// Column name.
        column: &'static str,
        /// The value.
        value: String,
    },
}

/// The store: one SQLite connection behind a mutex. Calls are short; async callers run
/// them on a blocking thread.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// Whether SQLite says the file is not a database or is corrupt.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt))
}

/// The crash-consistency harness: with `BANGER_CRASH_AT=sqlite:N` the process SIGKILLs
/// itself at SQLite's N-th virtual-machine instruction on this connection (opening,
/// migrating, then whatever follows) — a `kill -9` at an arbitrary point inside a
/// statement or transaction. Never set in normal use.
fn crash_after_ops(conn: &Connection) {
    let Some(n) = std::env::var("BANGER_CRASH_AT")
        .ok()
        .and_then(|v| v.strip_prefix("sqlite:")?.parse::<u64>().ok())
    else {
        return;
    };
    // SQLite counts instructions per statement; this counts them across statements.
    let count = std::sync::atomic::AtomicU64::new(0);
    let _ = conn.progress_handler(
        1,
        Some(move || {
            if count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= n {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
            }
            false
        }),
    );
}

/// `err` as [`StoreError::Damaged`] when SQLite found the file damaged; otherwise unchanged.
fn damaged(path: &Path, err: StoreError) -> StoreError {
    match err {
        StoreError::Query(source) | StoreError::Open { source, .. } if is_damage(&source) => {
            StoreError::Damaged {
                path: path.to_owned(),
                source,
            }
        }
        other => other,
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    ///
    /// A database newer than this build is refused before anything is written to it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_checked(path).map_err(|e| damaged(path, e))
    }

    fn open_checked(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        crash_after_ops(&conn);
        if let SchemaState::Incompatible { db_version, known } = migrations::inspect(&conn)? {
            return Err(StoreError::Incompatible {
                path: path.to_owned(),
                db_version,
                known,
            });
        }
        // Switching to WAL takes an exclusive lock; two processes opening a fresh database at
        // once can get SQLITE_BUSY here without the busy handler being called (SQLite's
        // deadlock avoidance), so the switch is retried until the busy timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.map_err(open_err)?,
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        migrations::migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// Reports the schema state of the database at `path` without modifying it (read-only).
    /// A missing database needs migrations.
    pub fn inspect(path: &Path) -> Result<SchemaState, StoreError> {
        Self::inspect_checked(path).map_err(|e| damaged(path, e))
    }

    fn inspect_checked(path: &Path) -> Result<SchemaState, StoreError> {
        if !path.exists() {
            return Ok(SchemaState::NeedsMigration {
                pending: migrations::latest_version(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        migrations::inspect(&conn)
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock only means another thread panicked mid-call; SQLite's own
        // transactions keep the data consistent, so keep using the connection.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---- VMs ----

    /// All VMs with their image names, oldest first.
    pub fn list_vms(&self) -> Result<Vec<VmRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {}, i.name FROM vms v JOIN images i ON i.id = v.image_id ORDER BY v.created_at, v.id",
            records::VM_COLUMNS
        ))?;
        let rows = stmt.query_map([], records::vm_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
            .collect()
    }

    /// One VM by name or id.
    pub fn get_vm(&self, name_or_id: &str) -> Result<Option<VmRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {}, i.name FROM vms v JOIN images i ON i.id = v.image_id WHERE v.name = ?1 OR v.id = ?1",
            records::VM_COLUMNS
        ))?;
        stmt.query_row([name_or_id], records::vm_row)
            .optional()?
            .transpose()
    }

    /// Inserts a new VM row.
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        records::insert_vm(&conn, vm)
    }

    /// Replaces a VM row (matched by id) with `vm`.
    pub fn update_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        records::update_vm(&conn, vm)
    }

    /// Deletes a VM row. Returns whether it existed.
    pub fn delete_vm(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM vms WHERE id = ?1", [id])? > 0)
    }

    /// Whether a VM with this name exists.
    pub fn vm_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row("SELECT 1 FROM vms WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Guest IPs held by any VM, in any state.
    pub fn used_guest_ips(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT guest_ip FROM vms")?;
        let ips = stmt.query_map([], |r| r.get(0))?;
        Ok(ips.collect::<Result<_, _>>()?)
    }

    // ---- images ----

    /// Inserts or replaces an image (by name).
    pub fn upsert_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        records::upsert_image(&conn, image)
    }

    /// One image by name or id.
    pub fn get_image(&self, name_or_id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let conn = self.conn();
        records::get_image(&conn, name_or_id)
    }

    /// All images, by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let conn = self.conn();
        records::list_images(&conn)
    }

    /// Deletes an image row. Fails (foreign key) while a VM uses it.
    pub fn delete_image(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM images WHERE id = ?1", [id])?
            > 0)
    }

    /// Names of the VMs using an image.
    pub fn vms_using_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name FROM vms WHERE image_id = ?1 ORDER BY name")?;
        let names = stmt.query_map(params![image_id], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    // ---- snapshots ----

    /// All snapshots, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM snapshots ORDER BY created_at, id",
            records::SNAPSHOT_COLUMNS
        ))?;
        let rows = stmt.query_map([], records::snapshot_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
            .collect()
    }

    /// One snapshot by name or id.
    pub fn get_snapshot(&self, name_or_id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM snapshots WHERE name = ?1 OR id = ?1",
            records::SNAPSHOT_COLUMNS
        ))?;
        stmt.query_row([name_or_id], records::snapshot_row)
            .optional()?
            .transpose()
    }

    /// Inserts a snapshot (its files are complete).
    pub fn insert_snapshot(&self, snap: &SnapshotRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        records::insert_snapshot(&conn, snap)
    }

    /// Deletes a snapshot row. Returns whether it existed.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?
            > 0)
    }

    /// Deletes the warm-start templates of an image (they go with it); returns their ids
    /// (their directories are the caller's to remove).
    pub fn delete_image_templates(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "DELETE FROM snapshots WHERE image_id = ?1 AND kind = 'template' RETURNING id",
        )?;
        let ids = stmt.query_map([image_id], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// Names of the snapshots (not templates) taken of VMs of an image.
    pub fn snapshots_of_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM snapshots WHERE image_id = ?1 AND kind = 'snapshot' ORDER BY name",
        )?;
        let names = stmt.query_map([image_id], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// Whether a snapshot with this name exists.
    pub fn snapshot_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT 1 FROM snapshots WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    // ---- kernels ----

    /// Inserts or replaces a kernel (by name).
    pub fn upsert_kernel(&self, kernel: &KernelRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        records::upsert_kernel(&conn, kernel)
    }

    /// One kernel by name or id.
    pub fn get_kernel(&self, name_or_id: &str) -> Result<Option<KernelRecord>, StoreError> {
        let conn = self.conn();
        records::get_kernel(&conn, name_or_id)
    }

    /// Deletes a kernel row. Fails (foreign key) while an image uses it.
    pub fn delete_kernel(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM kernels WHERE id = ?1", [id])?
            > 0)
    }

    /// All kernels, by name.
    pub fn list_kernels(&self) -> Result<Vec<KernelRecord>, StoreError> {
        let conn = self.conn();
        records::list_kernels(&conn)
    }
}
