//! Every environment variable banger reads, in one place.

/// Puts every banger directory (state, cache, runtime, config) under one root. Tests use it.
pub const BANGER_HOME: &str = "BANGER_HOME";
/// Overrides the daemon socket path.
pub const BANGER_SOCKET: &str = "BANGER_SOCKET";
/// Overrides the config file path.
pub const BANGER_CONFIG: &str = "BANGER_CONFIG";
/// Overrides `log_level` from config (`trace`, `debug`, `info`, `warn`, `error`).
pub const BANGER_LOG_LEVEL: &str = "BANGER_LOG_LEVEL";
/// When set to `1`, the CLI never starts `bangerd` by itself.
pub const BANGER_NO_AUTOSTART: &str = "BANGER_NO_AUTOSTART";
/// Path of the `bangerd` binary the CLI starts (default: next to `banger`).
pub const BANGER_DAEMON_BIN: &str = "BANGER_DAEMON_BIN";
/// When set (to anything), disables colour in the CLI's output.
pub const NO_COLOR: &str = "NO_COLOR";
/// When set to `1`, disables progress display.
pub const BANGER_NO_PROGRESS: &str = "BANGER_NO_PROGRESS";
/// Crash-consistency testing only: the daemon SIGKILLs itself when it reaches this crash
/// point (`stage:<create or start stage>`, `stop:<step>`, `delete:<step>`), as `kill -9`
/// would; `sqlite:N` kills any process opening the store after SQLite's N-th instruction.
/// Never set in normal use.
pub const BANGER_CRASH_AT: &str = "BANGER_CRASH_AT";
