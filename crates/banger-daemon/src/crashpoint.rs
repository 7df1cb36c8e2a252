//! Crash points for the crash-consistency harness (`crates/banger-cli/tests/crash.rs`): when
//! `BANGER_CRASH_AT` names a point the daemon reaches, the daemon SIGKILLs itself right there
//! — no unwinding, no cleanup, exactly what `kill -9` does at that instant. Points are
//! `stage:<name>` (every create, start, restore and pull stage, as it begins), `stop:<step>`,
//! `delete:<step>`, `snapshot:<step>`, `suspend:<step>` and `workspace:staged|imported`. Unset in normal use: one string comparison per point.

use std::sync::OnceLock;

static AT: OnceLock<Option<String>> = OnceLock::new();

/// Dies here when this is the configured crash point.
pub fn hit(point: &str) {
    let at = AT.get_or_init(|| std::env::var(banger_config::env::BANGER_CRASH_AT).ok());
    if at.as_deref() == Some(point) {
        tracing::warn!("crash point {point}: killing bangerd (BANGER_CRASH_AT)");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
