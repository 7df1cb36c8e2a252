//! Disk layers under `<state>/layers/` (QEMU with `qemu-img`): a snapshot of a running VM
//! freezes each of its disks instead of copying it. The file the VM wrote until then gets a
//! second name here (a hard link: nothing is copied) and is never written again; the VM
//! goes on writing a new qcow2 overlay on it, and the snapshot keeps an overlay of its own
//! that every VM started from it copies (a few hundred KiB). So a fork or a snapshot costs
//! the same whatever the disks hold.
//!
//! A layer lives while a disk file reads through it: [`Layers::collect`] follows the chains
//! of every `.qcow2` file in VM and snapshot directories and removes the rest. Files only
//! move from snapshot directories into VM directories (a fork's slots), and the collector
//! reads the snapshot directories first, so a file moving meanwhile is seen in one of them.
//! `freeze` makes a layer and the overlays that keep it alive under the same lock the
//! collector holds, so it never sees a layer nothing reads yet.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_config::Layout;
use banger_host::CommandRunner;
use banger_host::qcow2::{self, LayerError};
use tracing::{info, warn};

/// How deep the collector looks for disk files under its roots (`snapshots/.fork-ID/SLOT/F`).
const SCAN_DEPTH: usize = 3;

/// The layer directory and what keeps its files alive.
#[derive(Debug)]
pub struct Layers {
    dir: PathBuf,
    /// Snapshot directories first, then VM directories (see the module's doc).
    roots: [PathBuf; 2],
    lock: Mutex<()>,
}

impl Layers {
    /// The layers of `layout`'s state directory.
    pub fn new(layout: &Layout) -> Self {
        Layers {
            dir: layout.state_dir.join("layers"),
            roots: [layout.state_dir.join("snapshots"), layout.vms_dir()],
            lock: Mutex::new(()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Freezes `file`, a paused VM's disk, as a new layer and makes each of `overlays` a
    /// qcow2 overlay on it (with `qemu_img`). Returns the layer, or `None` when it cannot be
    /// linked from here (another filesystem: the caller copies instead). Blocking.
    pub fn freeze(
        &self,
        runner: &dyn CommandRunner,
        qemu_img: &Path,
        file: &Path,
        overlays: &[PathBuf],
    ) -> Result<Option<PathBuf>, LayerError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LayerError::Io { path, source }
        };
        let ext = qcow2::Format::of(file).extension();
        let layer = self
            .dir
            .join(format!("{}.{ext}", uuid::Uuid::new_v4().simple()));
        let _held = crate::services::support::lock(&self.lock);
        fs_err::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        match std::fs::hard_link(file, &layer) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => return Ok(None),
            Err(e) => return Err(io(&layer)(e)),
        }
        for o in overlays {
            if let Err(e) = qcow2::create_overlay(runner, qemu_img, &layer, o) {
                for o in overlays {
                    let _ = std::fs::remove_file(o);
                }
                let _ = std::fs::remove_file(&layer);
                return Err(e);
            }
        }
        Ok(Some(layer))
    }

    /// Removes the layers no disk file reads through; returns how many. Keeps everything
    /// when a chain cannot be read (a layer it needs would look unused). Blocking.
    pub fn collect(&self) -> usize {
        let _held = crate::services::support::lock(&self.lock);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut live = HashSet::new();
        for root in &self.roots {
            let mut files = Vec::new();
            qcow2_files(root, SCAN_DEPTH, &mut files);
            for f in files {
                match qcow2::backing_chain(&f) {
                    Ok(chain) => live.extend(chain),
                    Err(e) if matches!(&e, LayerError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound) =>
                        {}
                    Err(e) => {
                        warn!(file = %f.display(), "layers kept: {e}");
                        return 0;
                    }
                }
            }
        }
        let mut removed = 0;
        for e in entries.flatten() {
            let path = e.path();
            if !live.contains(&path) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            info!(removed, "unused disk layers removed");
        }
        removed
    }
}

/// The `.qcow2` files under `dir`, `depth` levels down.
fn qcow2_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let path = e.path();
        if kind.is_dir() && depth > 1 {
            qcow2_files(&path, depth - 1, out);
        } else if kind.is_file() && qcow2::Format::of(&path) == qcow2::Format::Qcow2 {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::RealRunner;
    use banger_testkit::require::tool;

    fn layout(home: &Path) -> Layout {
        let home = home.to_owned();
        Layout::from_vars(
            move |k| (k == banger_config::env::BANGER_HOME).then(|| home.clone()),
            0,
        )
        .unwrap()
    }

    #[test]
    fn test_a_frozen_disk_lives_while_an_overlay_reads_through_it() {
        banger_testkit::require!(tool("qemu-img"));
        let qemu_img = banger_host::process::find_in_path("qemu-img").unwrap();
        let home = tempfile::tempdir().unwrap();
        let layout = layout(home.path());
        let layers = Layers::new(&layout);
        let vm = layout.vms_dir().join("v1");
        let snap = layout.state_dir.join("snapshots/.fork-x/1");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        let disk = vm.join("root.ext4");
        std::fs::write(&disk, vec![1u8; 1 << 16]).unwrap();

        let (vm_next, snap_top) = (vm.join("root-1.qcow2"), snap.join("root.qcow2"));
        let layer = layers
            .freeze(
                &RealRunner,
                &qemu_img,
                &disk,
                &[vm_next.clone(), snap_top.clone()],
            )
            .unwrap()
            .unwrap();
        // The same file under a second name, not a copy.
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            std::fs::metadata(&layer).unwrap().ino(),
            std::fs::metadata(&disk).unwrap().ino()
        );
        assert_eq!(layer.extension().unwrap(), "ext4");
        for top in [&vm_next, &snap_top] {
            assert_eq!(qcow2::backing_chain(top).unwrap(), vec![layer.clone()]);
        }
        // A layer nothing reads through goes; one an overlay reads through stays, wherever
        // the overlay is (a VM's directory or a fork's slot).
        let stray = layers.dir().join("stray.ext4");
        std::fs::write(&stray, "x").unwrap();
        assert_eq!(layers.collect(), 1);
        assert!(layer.exists() && !stray.exists());
        std::fs::remove_file(&vm_next).unwrap();
        assert_eq!(layers.collect(), 0);
        assert!(layer.exists(), "the slot's overlay still reads it");
        std::fs::remove_file(&snap_top).unwrap();
        assert_eq!(layers.collect(), 1);
        assert!(!layer.exists());
    }

    #[test]
    fn test_an_unreadable_chain_keeps_every_layer() {
        let home = tempfile::tempdir().unwrap();
        let layout = layout(home.path());
        let layers = Layers::new(&layout);
        std::fs::create_dir_all(layers.dir()).unwrap();
        let vm = layout.vms_dir().join("v1");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(layers.dir().join("a.ext4"), "x").unwrap();
        // An overlay whose header cannot be read: what it needs is unknown.
        std::fs::write(vm.join("root-1.qcow2"), "not qcow2").unwrap();
        assert_eq!(layers.collect(), 0);
        assert!(layers.dir().join("a.ext4").exists());
    }
}
