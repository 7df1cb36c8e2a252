//! A VM's disk files and how a snapshot takes them. Each drive is one file in the VM's
//! directory, named in the row (`spec.disks`; `root.ext4` and `work.ext4` until the VM is
//! first snapshotted): raw ext4, or a qcow2 overlay (`.qcow2`) on frozen layers
//! ([`crate::layers`]). A snapshot's directory holds one file per drive too
//! (`root.{ext4,qcow2}`, `work.{ext4,qcow2}`), which a VM started from it copies, or moves
//! when it is a fork's slot of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_host::vmm::VmmHandle;
use banger_store::VmRecord;

use super::{VmError, VmService};
use crate::services::support::{blocking, new_id};

/// The drives, in guest order, with the stem of their files.
pub(super) const DRIVES: [(&str, &str); 2] = [("rootfs", "root"), ("work", "work")];

/// Each drive's file name in the directory of the VM whose row's spec is `spec`.
pub(super) fn disk_files(spec: &serde_json::Value) -> Vec<(&'static str, String)> {
    DRIVES
        .iter()
        .map(|(drive, stem)| {
            let named = spec
                .get("disks")
                .and_then(|d| d.get(drive))
                .and_then(serde_json::Value::as_str)
                .filter(|f| is_plain_name(f));
            (
                *drive,
                named.map_or_else(|| format!("{stem}.ext4"), str::to_owned),
            )
        })
        .collect()
}

/// A file name with no directory part (a row's names never leave the VM's directory).
fn is_plain_name(f: &str) -> bool {
    !f.is_empty() && !f.contains('/') && f != "." && f != ".."
}

/// Records `files` as the disk files of the VM whose row's spec is `spec`.
pub(super) fn set_disk_files(spec: &mut serde_json::Value, files: &[(&str, String)]) {
    let map: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(d, f)| ((*d).to_owned(), f.clone().into()))
        .collect();
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("disks".into(), map.into());
    }
}

/// Each drive's file in snapshot directory `dir`: `STEM.qcow2` when there is one, else
/// `STEM.ext4`.
pub(super) fn snapshot_disks(dir: &Path) -> Vec<(&'static str, String)> {
    DRIVES
        .iter()
        .map(|(drive, stem)| {
            let layered = format!("{stem}.qcow2");
            let name = if dir.join(&layered).exists() {
                layered
            } else {
                format!("{stem}.ext4")
            };
            (*drive, name)
        })
        .collect()
}

/// Copies each `(from, to)` disk file, side by side (blocking).
pub(super) fn copy_side_by_side(
    runner: &dyn banger_host::CommandRunner,
    jobs: &[(PathBuf, PathBuf)],
) -> Result<(), VmError> {
    std::thread::scope(|scope| {
        let copies: Vec<_> = jobs
            .iter()
            .map(|(from, to)| scope.spawn(move || banger_host::disk::cow_copy(runner, from, to)))
            .collect();
        copies.into_iter().try_for_each(|t| {
            t.join()
                .map_err(|_| VmError::SnapshotFiles(std::io::Error::other("disk copy panicked")))?
                .map_err(VmError::SnapshotDisk)
        })
    })
}

/// A snapshot's file for drive `stem` whose VM file is `file`: same format.
fn snapshot_name(stem: &str, file: &str) -> String {
    let ext = banger_host::qcow2::Format::of(Path::new(file)).extension();
    format!("{stem}.{ext}")
}

impl VmService {
    /// Removes the disk layers nothing reads through any more ([`crate::layers`]).
    pub(super) async fn collect_layers(&self) {
        let layers = Arc::clone(&self.infra.layers);
        let _ = blocking(move || Ok::<_, VmError>(layers.collect())).await;
    }

    /// Copies paused VM `vm`'s disks into `disks_dir` (side by side). Holds the VM's lock
    /// (caller).
    pub(super) async fn copy_disks(&self, vm: &VmRecord, disks_dir: &Path) -> Result<(), VmError> {
        let runner = Arc::clone(&self.infra.runner);
        let jobs: Vec<(PathBuf, PathBuf)> = disk_files(&vm.spec)
            .into_iter()
            .zip(DRIVES)
            .map(|((_, file), (_, stem))| {
                (
                    self.vm_dir(&vm.id).join(&file),
                    disks_dir.join(snapshot_name(stem, &file)),
                )
            })
            .collect();
        blocking(move || copy_side_by_side(runner.as_ref(), &jobs)).await
    }

    /// Freezes each disk of paused VM `vm` as a layer, with an overlay for the VM and one in
    /// `disks_dir`, then moves the VM onto its overlays. The VM's new files are recorded in
    /// `vm` and its row before the VMM switches, so a kill in between leaves a row whose
    /// overlays read through to what the VM still writes. `false`: nothing done, the disks
    /// cannot be layered here (the caller copies them). Holds the VM's lock (caller).
    pub(super) async fn layer_disks(
        &self,
        vm: &mut VmRecord,
        handle: &VmmHandle,
        disks_dir: &Path,
        tool: PathBuf,
    ) -> Result<bool, VmError> {
        let vm_dir = self.vm_dir(&vm.id);
        let tag = new_id()[..8].to_owned();
        // (drive, current file, the VM's next file, the snapshot's file)
        let plan: Vec<(&'static str, PathBuf, String, PathBuf)> = disk_files(&vm.spec)
            .into_iter()
            .zip(DRIVES)
            .map(|((drive, file), (_, stem))| {
                (
                    drive,
                    vm_dir.join(file),
                    format!("{stem}-{tag}.qcow2"),
                    disks_dir.join(format!("{stem}.qcow2")),
                )
            })
            .collect();
        let (layers, runner) = (
            Arc::clone(&self.infra.layers),
            Arc::clone(&self.infra.runner),
        );
        let (p, dir) = (plan.clone(), vm_dir.clone());
        let frozen = blocking(move || -> Result<bool, VmError> {
            for (_, file, next, snap) in &p {
                let overlays = [dir.join(next), snap.clone()];
                let made = layers
                    .freeze(runner.as_ref(), &tool, file, &overlays)
                    .map_err(VmError::SnapshotLayer)?;
                if made.is_none() {
                    for (_, _, next, snap) in &p {
                        let _ = std::fs::remove_file(dir.join(next));
                        let _ = std::fs::remove_file(snap);
                    }
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await;
        let remove_next = |plan: &[(&str, PathBuf, String, PathBuf)]| {
            for (_, _, next, _) in plan {
                let _ = std::fs::remove_file(vm_dir.join(next));
            }
        };
        match frozen {
            Ok(true) => {}
            other => {
                remove_next(&plan);
                return other;
            }
        }
        let before = vm.clone();
        let next: Vec<(&str, String)> = plan.iter().map(|(d, _, n, _)| (*d, n.clone())).collect();
        set_disk_files(&mut vm.spec, &next);
        if let Err(e) = self.save(vm).await {
            *vm = before;
            remove_next(&plan);
            return Err(e);
        }
        crate::crashpoint::hit("snapshot:layered");
        let overlays: Vec<(String, PathBuf)> = plan
            .iter()
            .map(|(d, _, n, _)| ((*d).to_owned(), vm_dir.join(n)))
            .collect();
        let (vmm, h) = (Arc::clone(&self.infra.vmm), handle.clone());
        let switched =
            blocking(move || vmm.layer_disks(&h, &overlays).map_err(VmError::Snapshot)).await;
        if let Err(e) = switched {
            *vm = before;
            let _ = self.save(vm).await;
            remove_next(&plan);
            return Err(e);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_disk_files_default_to_the_ext4_files_and_follow_the_row() {
        let mut v = serde_json::json!({});
        assert_eq!(
            disk_files(&v),
            [
                ("rootfs", "root.ext4".to_owned()),
                ("work", "work.ext4".to_owned())
            ]
        );
        set_disk_files(
            &mut v,
            &[
                ("rootfs", "root-1.qcow2".into()),
                ("work", "work-1.qcow2".into()),
            ],
        );
        assert_eq!(
            disk_files(&v),
            [
                ("rootfs", "root-1.qcow2".to_owned()),
                ("work", "work-1.qcow2".to_owned())
            ]
        );
        // A name that would leave the VM's directory is not taken from the row.
        let v = serde_json::json!({"disks": {"rootfs": "../../etc/x.qcow2", "work": ".."}});
        assert_eq!(
            disk_files(&v),
            [
                ("rootfs", "root.ext4".to_owned()),
                ("work", "work.ext4".to_owned())
            ]
        );
    }

    #[test]
    fn test_a_snapshots_files_keep_the_vms_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(snapshot_name("root", "root.ext4"), "root.ext4");
        assert_eq!(snapshot_name("work", "work-ab.qcow2"), "work.qcow2");
        std::fs::write(dir.path().join("root.qcow2"), "").unwrap();
        std::fs::write(dir.path().join("work.ext4"), "").unwrap();
        assert_eq!(
            snapshot_disks(dir.path()),
            [
                ("rootfs", "root.qcow2".to_owned()),
                ("work", "work.ext4".to_owned())
            ]
        );
    }
}
