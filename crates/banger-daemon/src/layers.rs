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
        let ext = qcow2::Format::of(file).as_str().replace("raw", "ext4");
        let layer = self.dir.join(format!(
            "{}.{ext}",
            uuid::Uuid::new_v4().simple()
        ));
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
                    Err(e) if matches!(&e, LayerError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound) => {}
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
