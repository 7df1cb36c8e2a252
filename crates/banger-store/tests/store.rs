//! Store behaviour against a real SQLite file.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::needless_pass_by_value,
    clippy::print_stderr
)]

use banger_api::types::VmState;
use banger_store::{ImageRecord, SchemaState, Store, StoreError, VmRecord};

fn image(id: &str, name: &str) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        name: name.into(),
        source: "test".into(),
        managed: true,
        rootfs_path: "/x/rootfs.ext4".into(),
        work_seed_path: None,
        kernel_id: None,
        digest: None,
        config: serde_json::json!({}),
        size_bytes: 1,
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

fn vm(id: &str, name: &str, ip: &str) -> VmRecord {
    VmRecord {
        id: id.into(),
        name: name.into(),
        image_id: "img1".into(),
        state: VmState::Created,
        guest_ip: ip.into(),
        vcpu: 1,
        memory_mib: 512,
        disk_bytes: 1 << 30,
        nat: false,
        vmm: Some("qemu".into()),
        spec: serde_json::json!({"kernel": "k"}),
        workspace: None,
        last_error: None,
        created_at: format!("2026-01-01T00:00:0{}Z", id.len() % 10),
        updated_at: "2026-01-01T00:00:00Z".into(),
        last_touched_at: "2026-01-01T00:00:00Z".into(),
    }
}

#[test]
fn test_store_fresh_open_is_compatible_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    assert!(matches!(
        Store::inspect(&db).unwrap(),
        SchemaState::NeedsMigration { .. }
    ));
    assert!(!db.exists(), "inspect must not create the database");
    drop(Store::open(&db).unwrap());
    assert_eq!(Store::inspect(&db).unwrap(), SchemaState::Compatible);
    let store = Store::open(&db).unwrap();
    assert!(store.list_vms().unwrap().is_empty());
}

#[test]
fn test_store_newer_db_is_refused_and_not_modified() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT '');
             INSERT INTO schema_migrations (version, name) VALUES (1, 'baseline'), (99, 'future');
             CREATE TABLE future_stuff (x INTEGER);",
        )
        .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let err = Store::open(&db).unwrap_err();
    assert!(
        matches!(err, StoreError::Incompatible { db_version: 99, .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a newer database must not be modified"
    );
    assert!(matches!(
        Store::inspect(&db).unwrap(),
        SchemaState::Incompatible { db_version: 99, .. }
    ));
}

#[test]
fn test_store_vm_roundtrip_and_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    store
        .upsert_image(&image("img1", "debian-bookworm"))
        .unwrap();
    let a = vm("a1", "alpha", "172.16.0.2");
    store.insert_vm(&a).unwrap();
    let got = store.get_vm("alpha").unwrap().unwrap();
    assert_eq!(got.vm, a);
    assert_eq!(got.image_name, "debian-bookworm");
    assert_eq!(store.get_vm("a1").unwrap().unwrap().vm.name, "alpha");
    assert!(store.get_vm("nosuch").unwrap().is_none());

    // Same name or same IP is refused by the schema.
    assert!(store.insert_vm(&vm("a2", "alpha", "172.16.0.3")).is_err());
    assert!(store.insert_vm(&vm("a3", "beta", "172.16.0.2")).is_err());
    assert!(store.vm_name_taken("alpha").unwrap());
    assert_eq!(
        store.used_guest_ips().unwrap(),
        vec!["172.16.0.2".to_string()]
    );

    // An image in use cannot be deleted.
    assert!(store.delete_image("img1").is_err());
    assert_eq!(
        store.vms_using_image("img1").unwrap(),
        vec!["alpha".to_string()]
    );

    let mut b = a.clone();
    b.state = VmState::Running;
    b.workspace = Some(serde_json::json!({"path": "/root/repo"}));
    store.update_vm(&b).unwrap();
    assert_eq!(store.get_vm("alpha").unwrap().unwrap().vm, b);
    assert!(store.delete_vm("a1").unwrap());
    assert!(!store.delete_vm("a1").unwrap());
    assert!(store.delete_image("img1").unwrap());
}

#[test]
fn test_concurrent_opens_of_a_fresh_database_all_succeed() {
    // Processes cold-starting together (several `banger` commands at once) open one new
    // database concurrently; none may fail with "database is locked".
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let opened: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6).map(|_| s.spawn(|| Store::open(&path))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in opened {
            o.unwrap();
        }
    }
}

#[test]
fn test_a_damaged_file_is_refused_as_damaged_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &junk).unwrap();
    for err in [
        Store::open(&path).err().unwrap(),
        Store::inspect(&path).unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
        assert!(err.to_string().contains("mv "), "{err}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), junk, "never modified");
}

/// The database of the crash test: migration 1 only (what an older banger left), with
/// images and VMs in it.
fn v1_database(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(include_str!("../migrations/0001_baseline.sql"))
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));
         INSERT INTO schema_migrations (version, name) VALUES (1, 'baseline');",
    )
    .unwrap();
    drop(conn);
    // Rows written the way banger writes them, then the later migrations taken back out.
    let store = Store::open(path).unwrap();
    store.upsert_image(&image("img1", "base")).unwrap();
    for i in 0..5 {
        store
            .insert_vm(&vm(
                &format!("v{i}"),
                &format!("vm{i}"),
                &format!("172.16.0.{}", i + 2),
            ))
            .unwrap();
    }
    drop(store);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "DROP TABLE snapshots; DELETE FROM schema_migrations WHERE version > 1;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
}

/// The child of the crash test (a no-op unless the parent ran it): opens the store —
/// migrating it — then makes multi-row changes, until `BANGER_CRASH_AT=sqlite:N` kills it.
#[test]
fn crash_child_migrate_and_change() {
    let Some(path) = std::env::var_os("BANGER_STORE_CRASH_DB") else {
        return;
    };
    let store = Store::open(std::path::Path::new(&path)).unwrap();
    for i in 0..3 {
        store
            .insert_snapshot(&banger_store::SnapshotRecord {
                id: format!("t{i}"),
                name: format!("tpl{i}"),
                kind: "template".into(),
                source_vm: "vm0".into(),
                image_id: "img1".into(),
                vcpu: 1,
                memory_mib: 256,
                disk_bytes: 1 << 30,
                vmm: "qemu".into(),
                key: "k".into(),
                spec: serde_json::json!({}),
                size_bytes: 1,
                created_at: "2026-01-01T00:00:00Z".into(),
            })
            .unwrap();
    }
    assert_eq!(store.delete_image_templates("img1").unwrap().len(), 3);
    store.delete_vm("v4").unwrap();
}

/// SIGKILL at every point (each SQLite instruction in turn) of a migration and of the
/// multi-row changes after it: the database is never damaged, a migration is all or
/// nothing (its table exists exactly when its version row does), the rows written before
/// survive, and the next open completes the migration and works.
#[test]
fn a_kill_at_any_point_of_a_migration_or_change_leaves_a_consistent_database() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("v1.db");
    v1_database(&template);
    let exe = std::env::current_exe().unwrap();
    let (mut n, mut kills, mut migrated_kills) = (1i64, 0u32, 0u32);
    loop {
        let db = dir.path().join(format!("run-{n}.db"));
        std::fs::copy(&template, &db).unwrap();
        let status = std::process::Command::new(&exe)
            .args([
                "--exact",
                "crash_child_migrate_and_change",
                "--nocapture",
                "-q",
            ])
            .env("BANGER_STORE_CRASH_DB", &db)
            .env("BANGER_CRASH_AT", format!("sqlite:{n}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(9);
        assert!(killed || status.success(), "child at {n}: {status}");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "killed at instruction {n}");
        let v2: bool = conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = 2)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let table: bool = conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE name = 'snapshots')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            v2, table,
            "half a migration after a kill at instruction {n}"
        );
        if killed && v2 {
            migrated_kills += 1;
        }
        let templates: i64 = if table {
            conn.query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0))
                .unwrap()
        } else {
            0
        };
        drop(conn);
        let store = Store::open(&db).unwrap();
        assert_eq!(
            Store::inspect(&db).unwrap(),
            SchemaState::Compatible,
            "at {n}"
        );
        let vms = store.list_vms().unwrap().len();
        assert!(vms == 5 || (vms == 4 && templates == 0), "{vms} vms at {n}");
        assert_eq!(store.list_snapshots().unwrap().len() as i64, templates);
        assert_eq!(store.get_image("base").unwrap().unwrap().id, "img1");
        drop(store);
        std::fs::remove_file(&db).unwrap();
        if !killed {
            break;
        }
        kills += 1;
        n += 1;
    }
    eprintln!("{kills} kills up to instruction {n}, {migrated_kills} after the migration");
    // It got through the migration and into the changes after it, killed many times.
    assert!(
        kills > 500 && migrated_kills > 50,
        "{kills} kills, {migrated_kills} after the migration"
    );
}
