//! Progress of long operations: named stages, cancellation, and the registry of
//! asynchronous operations (`vm.create.begin` / `status` / `cancel`).
//!
//! Locks here are leaves: never held across I/O or while taking another lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_api::types::{ImageInfo, OpStatus, StageInfo, StageState, VmInfo};
use banger_api::{ErrorCode, RpcError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::ops::{OpGuard, OpRegistry};
use crate::services::support::{Cancelled, ServiceError, lock, mb};

/// An asynchronous operation id that is not (or no longer) known.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such operation.
    #[error("operation {0:?} not found")]
    NotFound(String),
}

impl ServiceError for OpError {
    fn code(&self) -> ErrorCode {
        ErrorCode::NotFound
    }
    fn hint(&self) -> Option<String> {
        Some("finished operations are kept for 10 minutes; `banger daemon operations` lists running ones".into())
    }
}

#[derive(Debug)]
struct Stage {
    name: String,
    state: StageState,
    started: Instant,
    ended: Option<Instant>,
}

/// Stages of one operation plus its cancellation token.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    stages: Mutex<Vec<Stage>>,
    detail: Mutex<Option<String>>,
    events: watch::Sender<usize>,
    cancel: CancellationToken,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: Instant::now(),
            stages: Mutex::default(),
            detail: Mutex::default(),
            events: watch::Sender::new(0),
            cancel: CancellationToken::new(),
        }
    }
}

impl Progress {
    fn bump(&self) {
        self.events.send_modify(|n| *n += 1);
    }

    fn close_running(stages: &mut [Stage], state: StageState) {
        if let Some(last) = stages.last_mut()
            && last.state == StageState::Running
        {
            last.state = state;
            let now = Instant::now();
            last.ended = Some(now);
            tracing::debug!(
                stage = last.name,
                elapsed_ms = now.duration_since(last.started).as_millis() as u64,
                "stage ended"
            );
        }
    }

    /// Ends the running stage (done) and starts `name`; fails when cancelled.
    pub fn stage(&self, name: &str) -> Result<(), Cancelled> {
        self.check()?;
        crate::crashpoint::hit(&format!("stage:{name}"));
        lock(&self.detail).take();
        {
            let mut stages = lock(&self.stages);
            Self::close_running(&mut stages, StageState::Done);
            stages.push(Stage {
                name: name.to_owned(),
                state: StageState::Running,
                started: Instant::now(),
                ended: None,
            });
        }
        self.bump();
        Ok(())
    }

    /// Sets what the running stage is doing (cleared by the next stage); callers throttle.
    pub fn detail(&self, text: String) {
        *lock(&self.detail) = Some(text);
        self.bump();
    }

    /// A callback counting bytes of a `total`-byte transfer (0: unknown) into the running
    /// stage's detail, at most every 200 ms (and at the end).
    pub fn byte_meter(self: &Arc<Self>, total: u64) -> impl Fn(u64) + Send + Sync + use<> {
        let progress = Arc::clone(self);
        let got = std::sync::atomic::AtomicU64::new(0);
        let last = Mutex::new(Instant::now());
        move |n: u64| {
            let now = got.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            let mut last = lock(&last);
            if last.elapsed() >= Duration::from_millis(200) || now == total {
                *last = Instant::now();
                let of = if total > 0 { mb(total) } else { "?".into() };
                progress.detail(format!("{} / {of}", mb(now)));
            }
        }
    }

    /// Ends the running stage as done (`ok`) or failed.
    pub fn finish(&self, ok: bool) {
        {
            let mut stages = lock(&self.stages);
            Self::close_running(
                &mut stages,
                if ok {
                    StageState::Done
                } else {
                    StageState::Failed
                },
            );
        }
        self.bump();
    }

    /// An error when the operation was cancelled.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.cancel.is_cancelled() {
            return Err(Cancelled);
        }
        Ok(())
    }

    /// Whether the operation was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the operation is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.cancel.cancel();
        self.bump();
    }

    /// Stages so far and the event count.
    pub fn snapshot(&self) -> (Vec<StageInfo>, usize) {
        let stages = lock(&self.stages);
        let infos = stages
            .iter()
            .map(|s| StageInfo {
                name: s.name.clone(),
                state: s.state,
                elapsed_ms: s
                    .ended
                    .unwrap_or_else(Instant::now)
                    .duration_since(s.started)
                    .as_millis() as u64,
            })
            .collect();
        (infos, *self.events.borrow())
    }

    /// Names of the stages so far, in order.
    pub fn stage_names(&self) -> Vec<String> {
        lock(&self.stages).iter().map(|s| s.name.clone()).collect()
    }
}

/// What an asynchronous operation produced.
#[derive(Debug, Clone)]
pub enum OpOutput {
    /// A VM (`vm.create.begin`).
    Vm(Box<VmInfo>),
    /// An image (`image.pull.begin`).
    Image(Box<ImageInfo>),
}

/// One asynchronous operation.
#[derive(Debug)]
pub struct AsyncOp {
    /// Its id.
    pub op_id: String,
    /// Its stages.
    pub progress: Arc<Progress>,
    outcome: Mutex<Option<(Result<OpOutput, RpcError>, Instant)>>,
    guard: Mutex<Option<OpGuard>>,
}

impl AsyncOp {
    /// Records the outcome and drops the op from the in-flight list.
    pub fn complete(&self, result: Result<OpOutput, RpcError>) {
        self.progress.finish(result.is_ok());
        *lock(&self.outcome) = Some((result, Instant::now()));
        lock(&self.guard).take();
        self.progress.bump();
    }

    fn status(&self) -> OpStatus {
        let (stages, events) = self.progress.snapshot();
        let outcome = lock(&self.outcome);
        let (mut vm, mut image, mut error) = (None, None, None);
        match outcome.as_ref().map(|(r, _)| r) {
            Some(Ok(OpOutput::Vm(v))) => vm = Some(v.as_ref().clone()),
            Some(Ok(OpOutput::Image(i))) => image = Some(i.as_ref().clone()),
            Some(Err(e)) => error = Some(e.clone()),
            None => {}
        }
        OpStatus {
            op_id: self.op_id.clone(),
            stages,
            events,
            done: outcome.is_some(),
            elapsed_ms: self.progress.started.elapsed().as_millis() as u64,
            vm,
            image,
            detail: lock(&self.progress.detail).clone(),
            error,
        }
    }

    fn finished_before(&self, t: Instant) -> bool {
        lock(&self.outcome).as_ref().is_some_and(|(_, at)| *at < t)
    }
}

/// How long a finished operation's outcome stays queryable.
pub const KEEP_FINISHED: Duration = Duration::from_mins(10);

/// The registry of asynchronous operations.
#[derive(Debug, Default)]
pub struct AsyncOps {
    ops: Mutex<HashMap<String, Arc<AsyncOp>>>,
}

impl AsyncOps {
    /// Registers a new operation of `kind` (listed by `daemon.operations.list` until it
    /// completes) and forgets ones finished long ago. The registry's and this map's locks are
    /// taken one after the other, never nested.
    pub fn begin(&self, ops: &Arc<OpRegistry>, kind: &str, now: String) -> Arc<AsyncOp> {
        let op_id = crate::ops::new_op_id();
        let guard = ops.begin(&op_id, kind, now);
        self.insert(&op_id, guard)
    }

    /// Forgets an operation that never ran (a begin that lost a race to join another).
    pub fn discard(&self, op_id: &str) {
        let op = lock(&self.ops).remove(op_id);
        if let Some(op) = op {
            lock(&op.guard).take();
        }
    }

    /// Runs `work` as operation `op` on the runtime: its span carries the op id, and its
    /// outcome (the value wrapped by `output`, or the error in its wire form) is recorded for
    /// `status`.
    pub fn run<T, E, F>(op: Arc<AsyncOp>, kind: &'static str, output: fn(T) -> OpOutput, work: F)
    where
        F: std::future::Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
        RpcError: From<E>,
    {
        let span = tracing::info_span!("op", op_id = %op.op_id, method = kind);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = work.await.map(output).map_err(RpcError::from);
                if let Err(e) = &result {
                    warn!("{kind} failed: {}", e.message);
                }
                op.complete(result.map_err(|e| e.with_op_id(op.op_id.clone())));
            },
            span,
        ));
    }

    /// Registers a new operation (and forgets ones finished long ago).
    pub fn insert(&self, op_id: &str, guard: OpGuard) -> Arc<AsyncOp> {
        let op = Arc::new(AsyncOp {
            op_id: op_id.to_owned(),
            progress: Arc::new(Progress::default()),
            outcome: Mutex::default(),
            guard: Mutex::new(Some(guard)),
        });
        let mut ops = lock(&self.ops);
        if let Some(cutoff) = Instant::now().checked_sub(KEEP_FINISHED) {
            ops.retain(|_, o| !o.finished_before(cutoff));
        }
        ops.insert(op_id.to_owned(), Arc::clone(&op));
        op
    }

    /// The operation `op_id`, if known.
    pub fn find(&self, op_id: &str) -> Option<Arc<AsyncOp>> {
        lock(&self.ops).get(op_id).cloned()
    }

    fn get(&self, op_id: &str) -> Result<Arc<AsyncOp>, OpError> {
        lock(&self.ops)
            .get(op_id)
            .cloned()
            .ok_or_else(|| OpError::NotFound(op_id.to_owned()))
    }

    /// Status, long-polling up to `wait` for more than `seen` events.
    pub async fn status(
        &self,
        op_id: &str,
        seen: usize,
        wait: Duration,
    ) -> Result<OpStatus, OpError> {
        let op = self.get(op_id)?;
        let mut rx = op.progress.events.subscribe();
        let _ = tokio::time::timeout(wait.min(Duration::from_secs(5)), async {
            let _ = rx.wait_for(|n| *n > seen).await;
        })
        .await;
        Ok(op.status())
    }

    /// Cancels an operation; returns its status.
    pub fn cancel(&self, op_id: &str) -> Result<OpStatus, OpError> {
        let op = self.get(op_id)?;
        op.progress.cancel();
        Ok(op.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stages_close_in_order_and_cancel_stops_the_next_stage() {
        let p = Progress::default();
        p.stage("image").unwrap();
        p.stage("disk").unwrap();
        let (stages, events) = p.snapshot();
        assert_eq!(events, 2);
        assert_eq!(stages[0].state, StageState::Done);
        assert_eq!(stages[1].state, StageState::Running);
        p.cancel();
        assert_eq!(p.stage("boot"), Err(Cancelled));
        p.finish(false);
        assert_eq!(p.snapshot().0[1].state, StageState::Failed);
        assert_eq!(p.stage_names(), ["image", "disk"]);
    }

    #[tokio::test]
    async fn test_status_long_polls_until_a_new_event() {
        let reg = Arc::new(crate::ops::OpRegistry::default());
        let ops = Arc::new(AsyncOps::default());
        let op = ops.insert("op-1", reg.begin("op-1", "vm.create", "t".into()));
        assert_eq!(reg.list().len(), 1);
        let ops2 = Arc::clone(&ops);
        let waiter =
            tokio::spawn(async move { ops2.status("op-1", 0, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        op.progress.stage("image").unwrap();
        let st = waiter.await.unwrap().unwrap();
        assert_eq!(st.events, 1);
        assert!(!st.done);
        op.complete(Err(RpcError::from(Cancelled)));
        let st = ops.status("op-1", 0, Duration::ZERO).await.unwrap();
        assert!(st.done);
        assert_eq!(st.error.unwrap().kind(), ErrorCode::Cancelled);
        assert!(
            reg.list().is_empty(),
            "a finished op leaves the in-flight list"
        );
        assert!(ops.status("op-2", 0, Duration::ZERO).await.is_err());
    }
}
