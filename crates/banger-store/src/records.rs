//! Row types and their SQL.

use banger_api::types::VmState;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::StoreError;

/// A VM's durable record: identity, spec and state. Nothing transient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Stable id.
    pub id: String,
    /// Unique DNS-label name.
    pub name: String,
    /// The image it was created from.
    pub image_id: String,
    /// Lifecycle state.
    pub state: VmState,
    /// Guest IPv4 address (unique across all VMs).
    pub guest_ip: String,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Work disk size in bytes.
    pub disk_bytes: u64,
    /// NAT enabled.
    pub nat: bool,
    /// VMM backend that runs it (`qemu`, `firecracker`).
    pub vmm: Option<String>,
    /// Extra spec (kernel, sizing sources, ...) as JSON.
    pub spec: serde_json::Value,
    /// The prepared workspace, if any.
    pub workspace: Option<serde_json::Value>,
    /// Last error message.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339: last time a user touched the VM.
    pub last_touched_at: String,
}

/// A VM with its image's name (what listings show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    /// The record.
    pub vm: VmRecord,
    /// The image's name.
    pub image_name: String,
}

/// An image: a read-only rootfs plus what it needs to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Where it came from (`debootstrap:bookworm`, `oci:<ref>`, `register`).
    pub source: String,
    /// Files owned by banger (deleted with the image).
    pub managed: bool,
    /// The ext4 root filesystem.
    pub rootfs_path: String,
    /// Directory seeding each VM's /root work disk.
    pub work_seed_path: Option<String>,
    /// Kernel to boot it with.
    pub kernel_id: Option<String>,
    /// Content digest, when known.
    pub digest: Option<String>,
    /// Entrypoint, env, workdir and the like.
    pub config: serde_json::Value,
    /// Size of the rootfs in bytes.
    pub size_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
}

/// A kernel: vmlinux plus optional initrd and modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// Where it came from (`distro:linux-image-cloud-amd64`, `import`).
    pub source: String,
    /// Files owned by banger.
    pub managed: bool,
    /// Uncompressed ELF kernel.
    pub vmlinux_path: String,
    /// Initramfs.
    pub initrd_path: Option<String>,
    /// Modules directory.
    pub modules_dir: Option<String>,
    /// sha256 of the vmlinux.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
}

pub(crate) const VM_COLUMNS: &str = "v.id, v.name, v.image_id, v.state, v.guest_ip, v.vcpu, \
     v.memory_mib, v.disk_bytes, v.nat, v.vmm, v.spec_json, v.workspace_json, v.last_error, \
     v.created_at, v.updated_at, v.last_touched_at";

fn json(column: &'static str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { column, source })
}

/// Maps a row of `VM_COLUMNS, i.name`. The outer result is SQLite's, the inner is decoding.
pub(crate) fn vm_row(r: &Row<'_>) -> rusqlite::Result<Result<VmRow, StoreError>> {
    let state: String = r.get(3)?;
    let spec: String = r.get(10)?;
    let workspace: Option<String> = r.get(11)?;
    let vm = (|| {
        Ok(VmRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            image_id: r.get(2)?,
            state: state.parse().map_err(|_| StoreError::Corrupt {
                column: "vms.state",
                value: state.clone(),
            })?,
            guest_ip: r.get(4)?,
            vcpu: r.get(5)?,
            memory_mib: r.get(6)?,
            disk_bytes: r.get(7)?,
            nat: r.get(8)?,
            vmm: r.get(9)?,
            spec: json("vms.spec_json", &spec)?,
            workspace: workspace
                .as_deref()
                .map(|w| json("vms.workspace_json", w))
                .transpose()?,
            last_error: r.get(12)?,
            created_at: r.get(13)?,
            updated_at: r.get(14)?,
            last_touched_at: r.get(15)?,
        })
    })();
    let image_name: String = r.get(16)?;
    Ok(vm.map(|vm| VmRow { vm, image_name }))
}

pub(crate) fn insert_vm(conn: &Connection, vm: &VmRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO vms (id, name, image_id, state, guest_ip, vcpu, memory_mib, disk_bytes, nat, \
         vmm, spec_json, workspace_json, last_error, created_at, updated_at, last_touched_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        vm.id,
        vm.name,
        vm.image_id,
        vm.state.as_str(),
        vm.guest_ip,
        vm.vcpu,
        vm.memory_mib,
        vm.disk_bytes,
        vm.nat,
        vm.vmm,
        vm.spec.to_string(),
        vm.workspace.as_ref().map(ToString::to_string),
        vm.last_error,
        vm.created_at,
        vm.updated_at,
        vm.last_touched_at,
    ])?;
    Ok(())
}

pub(crate) fn update_vm(conn: &Connection, vm: &VmRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE vms SET name = ?2, image_id = ?3, state = ?4, guest_ip = ?5, vcpu = ?6, \
         memory_mib = ?7, disk_bytes = ?8, nat = ?9, vmm = ?10, spec_json = ?11, \
         workspace_json = ?12, last_error = ?13, updated_at = ?14, last_touched_at = ?15 \
         WHERE id = ?1",
    )?
    .execute(params![
        vm.id,
        vm.name,
        vm.image_id,
        vm.state.as_str(),
        vm.guest_ip,
        vm.vcpu,
        vm.memory_mib,
        vm.disk_bytes,
        vm.nat,
        vm.vmm,
        vm.spec.to_string(),
        vm.workspace.as_ref().map(ToString::to_string),
        vm.last_error,
        vm.updated_at,
        vm.last_touched_at,
    ])?;
    Ok(())
}

const IMAGE_COLUMNS: &str = "id, name, source, managed, rootfs_path, work_seed_path, kernel_id, \
     digest, config_json, size_bytes, created_at";

fn image_row(r: &Row<'_>) -> rusqlite::Result<Result<ImageRecord, StoreError>> {
    let config: String = r.get(8)?;
    let config = json("images.config_json", &config);
    Ok(match config {
        Ok(config) => Ok(ImageRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            source: r.get(2)?,
            managed: r.get(3)?,
            rootfs_path: r.get(4)?,
            work_seed_path: r.get(5)?,
            kernel_id: r.get(6)?,
            digest: r.get(7)?,
            config,
            size_bytes: r.get(9)?,
            created_at: r.get(10)?,
        }),
        Err(e) => Err(e),
    })
}

pub(crate) fn upsert_image(conn: &Connection, i: &ImageRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT(name) DO UPDATE SET source = excluded.source, managed = excluded.managed, \
         rootfs_path = excluded.rootfs_path, work_seed_path = excluded.work_seed_path, \
         kernel_id = excluded.kernel_id, digest = excluded.digest, config_json = excluded.config_json, \
         size_bytes = excluded.size_bytes"
    ))?
    .execute(params![
        i.id,
        i.name,
        i.source,
        i.managed,
        i.rootfs_path,
        i.work_seed_path,
        i.kernel_id,
        i.digest,
        i.config.to_string(),
        i.size_bytes,
        i.created_at,
    ])?;
    Ok(())
}

pub(crate) fn get_image(conn: &Connection, key: &str) -> Result<Option<ImageRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {IMAGE_COLUMNS} FROM images WHERE name = ?1 OR id = ?1"
    ))?
    .query_row([key], image_row)
    .optional()?
    .transpose()
}

pub(crate) fn list_images(conn: &Connection) -> Result<Vec<ImageRecord>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"))?;
    let rows = stmt.query_map([], image_row)?;
    rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
        .collect()
}

const KERNEL_COLUMNS: &str = "id, name, version, source, managed, vmlinux_path, initrd_path, modules_dir, sha256, created_at";

fn kernel_row(r: &Row<'_>) -> rusqlite::Result<KernelRecord> {
    Ok(KernelRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        source: r.get(3)?,
        managed: r.get(4)?,
        vmlinux_path: r.get(5)?,
        initrd_path: r.get(6)?,
        modules_dir: r.get(7)?,
        sha256: r.get(8)?,
        created_at: r.get(9)?,
    })
}

pub(crate) fn upsert_kernel(conn: &Connection, k: &KernelRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO kernels ({KERNEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT(name) DO UPDATE SET version = excluded.version, source = excluded.source, \
         managed = excluded.managed, vmlinux_path = excluded.vmlinux_path, \
         initrd_path = excluded.initrd_path, modules_dir = excluded.modules_dir, sha256 = excluded.sha256"
    ))?
    .execute(params![
        k.id,
        k.name,
        k.version,
        k.source,
        k.managed,
        k.vmlinux_path,
        k.initrd_path,
        k.modules_dir,
        k.sha256,
        k.created_at,
    ])?;
    Ok(())
}

pub(crate) fn get_kernel(conn: &Connection, key: &str) -> Result<Option<KernelRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {KERNEL_COLUMNS} FROM kernels WHERE name = ?1 OR id = ?1"
        ))?
        .query_row([key], kernel_row)
        .optional()?)
}

pub(crate) fn list_kernels(conn: &Connection) -> Result<Vec<KernelRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KERNEL_COLUMNS} FROM kernels ORDER BY name"
    ))?;
    let rows = stmt.query_map([], kernel_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A snapshot: files under `<state>/snapshots/<id>/` (`state`, `memory`, `root.ext4`,
/// `work.ext4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Stable id (its directory).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `snapshot` or `template`.
    pub kind: String,
    /// Name of the VM it was taken from (kept after that VM is gone).
    pub source_vm: String,
    /// The image the VM ran.
    pub image_id: String,
    /// Virtual CPUs a restore must have.
    pub vcpu: u32,
    /// Memory a restore must have, MiB.
    pub memory_mib: u64,
    /// Work disk size.
    pub disk_bytes: u64,
    /// The backend it was taken on.
    pub vmm: String,
    /// What a restore must match (kernel, image, VMM, vCPUs, memory).
    pub key: String,
    /// The source VM's spec (init, labels, workspace...).
    pub spec: serde_json::Value,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
}

pub(crate) const SNAPSHOT_COLUMNS: &str = "id, name, kind, source_vm, image_id, vcpu, memory_mib, \
     disk_bytes, vmm, key, spec_json, size_bytes, created_at";

pub(crate) fn snapshot_row(r: &Row<'_>) -> rusqlite::Result<Result<SnapshotRecord, StoreError>> {
    let spec: String = r.get(10)?;
    let rec = (|| {
        Ok(SnapshotRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            kind: r.get(2)?,
            source_vm: r.get(3)?,
            image_id: r.get(4)?,
            vcpu: r.get(5)?,
            memory_mib: r.get(6)?,
            disk_bytes: r.get(7)?,
            vmm: r.get(8)?,
            key: r.get(9)?,
            spec: json("snapshots.spec_json", &spec)?,
            size_bytes: r.get(11)?,
            created_at: r.get(12)?,
        })
    })();
    Ok(rec)
}

pub(crate) fn insert_snapshot(conn: &Connection, s: &SnapshotRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        s.id,
        s.name,
        s.kind,
        s.source_vm,
        s.image_id,
        s.vcpu,
        s.memory_mib,
        s.disk_bytes,
        s.vmm,
        s.key,
        s.spec.to_string(),
        s.size_bytes,
        s.created_at,
    ])?;
    Ok(())
}
