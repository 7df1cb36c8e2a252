//! Helpers every service uses: blocking work off the async runtime, store calls, ids,
//! leaf-lock access and the cancelled error. A leaf: it imports no service.

use std::sync::{Arc, Mutex, MutexGuard};

use banger_store::{Store, StoreError};

/// A blocking step could not finish because its worker thread panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("worker task failed")]
pub struct WorkerError(#[source] pub tokio::task::JoinError);

/// The operation was cancelled by its caller; what it had done was undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled; everything it created was removed")]
pub struct Cancelled;

/// Runs `f` on the blocking pool (host commands, file I/O, SQLite).
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<WorkerError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(WorkerError(e)))?
}

/// A store call failed, or its worker did.
#[derive(Debug, thiserror::Error)]
pub enum StoreCallError {
    /// SQLite.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The worker thread.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Runs one store call on the blocking pool.
pub(crate) async fn with_store<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreCallError> {
    let store = Arc::clone(store);
    blocking(move || f(&store).map_err(StoreCallError::from)).await
}

/// A new random id: 16 hex digits (VMs, images, kernels).
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// A short random suffix for staging and scratch names.
pub(crate) fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Locks a leaf mutex, ignoring poisoning (the data stays consistent: no leaf lock is held
/// across a panic-prone section).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bytes as megabytes, one decimal (`40.0 MB`).
pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// An error and its sources joined with `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `names` without repeats, first occurrence order kept.
pub(crate) fn unique_names(names: &[String]) -> Vec<&String> {
    let mut unique: Vec<&String> = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    unique
}

/// What the RPC edge needs from a service error: its kind and, when there is a fix, a hint.
/// The message is the error's `Display` plus its sources; the RPC edge (`edge.rs`) is the
/// one place that turns a service error into the wire's `RpcError`.
pub trait ServiceError: std::error::Error + Send + Sync + 'static {
    /// The wire error kind.
    fn code(&self) -> banger_api::ErrorCode;
    /// How to fix it, when there is a fix.
    fn hint(&self) -> Option<String> {
        None
    }
}

impl ServiceError for Cancelled {
    fn code(&self) -> banger_api::ErrorCode {
        banger_api::ErrorCode::Cancelled
    }
}
