//! The in-flight operation registry (`daemon.operations.list`).
//!
//! Every request gets an op id; the registry holds the ones still running. Its lock is a
//! leaf: never held across I/O or while taking another lock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use banger_api::types::OperationSummary;

#[derive(Debug)]
struct Entry {
    kind: String,
    started_at: String,
    started: Instant,
    seq: u64,
}

/// Registry of running operations.
#[derive(Debug, Default)]
pub struct OpRegistry {
    inner: Mutex<(u64, BTreeMap<String, Entry>)>,
}

/// Removes its operation from the registry when dropped.
#[derive(Debug)]
pub struct OpGuard {
    registry: Arc<OpRegistry>,
    op_id: String,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        self.registry.lock().1.remove(&self.op_id);
    }
}

/// A new op id: 12 hex digits, unique across daemon restarts (random part of a UUIDv7).
pub fn new_op_id() -> String {
    let simple = uuid::Uuid::now_v7().simple().to_string();
    format!("op-{}", &simple[simple.len() - 12..])
}

impl OpRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<String, Entry>)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a running operation until the returned guard drops.
    pub fn begin(self: &Arc<Self>, op_id: &str, kind: &str, started_at: String) -> OpGuard {
        let mut inner = self.lock();
        inner.0 += 1;
        let seq = inner.0;
        inner.1.insert(
            op_id.to_owned(),
            Entry {
                kind: kind.to_owned(),
                started_at,
                started: Instant::now(),
                seq,
            },
        );
        OpGuard {
            registry: Arc::clone(self),
            op_id: op_id.to_owned(),
        }
    }

    /// The running operations, oldest first.
    pub fn list(&self) -> Vec<OperationSummary> {
        let inner = self.lock();
        let mut entries: Vec<_> = inner.1.iter().collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries
            .into_iter()
            .map(|(id, e)| OperationSummary {
                op_id: id.clone(),
                kind: e.kind.clone(),
                started_at: e.started_at.clone(),
                elapsed_ms: e.started.elapsed().as_millis() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_op_registry_guard_removes_entry() {
        let reg = Arc::new(OpRegistry::default());
        let a = reg.begin("op-a", "vm.create", "t".into());
        let b = reg.begin("op-b", "vm.stop", "t".into());
        let kinds: Vec<_> = reg.list().into_iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["vm.create", "vm.stop"]);
        drop(a);
        assert_eq!(reg.list().len(), 1);
        drop(b);
        assert!(reg.list().is_empty());
    }

    #[test]
    fn test_op_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_op_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
