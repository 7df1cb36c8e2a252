//! Transient facts about running VMs (never in SQLite): the VMM process and the tap. Kept in
//! a cache (a leaf lock, never held across I/O) mirrored to `<vm dir>/handles.json`, which
//! reconcile reads back after a daemon restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_host::vmm::VmmHandle;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::services::network::TapIndex;
use crate::services::support::lock;

/// What is true of a running VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handles {
    /// The VMM process.
    pub vmm: VmmHandle,
    /// The tap device.
    pub tap: String,
    /// The guest agent's protocol, learned at readiness (`None`: no agent answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<u32>,
}

/// The handle cache, by VM id.
#[derive(Debug)]
pub struct HandleCache {
    vms_dir: PathBuf,
    map: Mutex<HashMap<String, Handles>>,
}

impl HandleCache {
    /// An empty cache over VM dirs in `vms_dir`.
    pub fn new(vms_dir: PathBuf) -> Self {
        HandleCache {
            vms_dir,
            map: Mutex::default(),
        }
    }

    /// VM `id`'s handles, if it runs.
    pub fn get(&self, id: &str) -> Option<Handles> {
        lock(&self.map).get(id).cloned()
    }

    /// Sets (or clears) VM `id`'s handles, in memory and in its `handles.json`.
    pub fn set(&self, id: &str, h: Option<Handles>) {
        let path = self.vms_dir.join(id).join("handles.json");
        match &h {
            Some(h) => {
                if let Ok(text) = serde_json::to_string_pretty(h) {
                    let tmp = path.with_extension("json.tmp");
                    if fs_err::write(&tmp, text)
                        .and_then(|()| fs_err::rename(&tmp, &path))
                        .is_err()
                    {
                        warn!(vm = id, "cannot write handles.json");
                    }
                }
            }
            None => {
                let _ = fs_err::remove_file(&path);
            }
        }
        let mut map = lock(&self.map);
        match h {
            Some(h) => map.insert(id.to_owned(), h),
            None => map.remove(id),
        };
    }

    /// Records the agent protocol VM `id`'s guest speaks (no-op when it does not run).
    pub fn set_agent(&self, id: &str, agent: Option<u32>) {
        if let Some(mut h) = self.get(id)
            && h.agent != agent
        {
            h.agent = agent;
            self.set(id, Some(h));
        }
    }

    /// Adopts handles read back from disk (reconcile) without rewriting the file.
    pub fn adopt(&self, id: &str, h: Handles) {
        lock(&self.map).insert(id.to_owned(), h);
    }

    /// The handles VM `id`'s `handles.json` records.
    pub fn read(&self, id: &str) -> Option<Handles> {
        read_handles(&self.vms_dir.join(id))
    }

    /// Cached handles, else those on disk (a VM whose daemon died).
    pub fn cached_or_read(&self, id: &str) -> Option<Handles> {
        self.get(id).or_else(|| self.read(id))
    }
}

impl TapIndex for HandleCache {
    fn tap_of(&self, vm_id: &str) -> Option<String> {
        self.get(vm_id).map(|h| h.tap)
    }
}

fn read_handles(dir: &Path) -> Option<Handles> {
    serde_json::from_str(&fs_err::read_to_string(dir.join("handles.json")).ok()?).ok()
}
