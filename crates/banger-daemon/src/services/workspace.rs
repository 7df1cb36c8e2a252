//! `WorkspaceService`: workspace prepare/export, authorized keys, git identity, file sync.

use crate::daemon::Infra;

/// Workspaces in guests.
#[derive(Debug)]
pub struct WorkspaceService {
    #[allow(dead_code)]
    infra: Infra,
}

impl WorkspaceService {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        WorkspaceService { infra }
    }
}
