//! Structured logs to `<state>/bangerd.log`.

use std::path::Path;
use std::sync::Mutex;

use banger_config::LogLevel;
use tracing_subscriber::EnvFilter;

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log file could not be opened.
    #[error("cannot open log file")]
    Open(#[source] std::io::Error),
    /// `BANGER_LOG_LEVEL` is not a level.
    #[error("{0}")]
    Level(String),
}

/// The effective level: `BANGER_LOG_LEVEL` when set, else config.
pub fn effective_level(
    config_level: LogLevel,
    env: Option<&str>,
) -> Result<LogLevel, LoggingError> {
    match env.map(str::trim).filter(|s| !s.is_empty()) {
        Some(v) => v
            .parse()
            .map_err(|e: String| LoggingError::Level(format!("BANGER_LOG_LEVEL: {e}"))),
        None => Ok(config_level),
    }
}

/// Installs the global subscriber writing to `path` (appending).
pub fn init(path: &Path, level: LogLevel) -> Result<(), LoggingError> {
    let file = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(LoggingError::Open)?;
    let filter = EnvFilter::new(format!(
        "warn,banger={0},bangerd={0},banger_daemon={0},banger_host={0}",
        level.as_str()
    ));
    // A second init (tests starting several daemons in one process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file.into_parts().0))
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_effective_level_env_overrides_config() {
        assert_eq!(
            effective_level(LogLevel::Info, Some("debug")).unwrap(),
            LogLevel::Debug
        );
        assert_eq!(
            effective_level(LogLevel::Warn, None).unwrap(),
            LogLevel::Warn
        );
        assert_eq!(
            effective_level(LogLevel::Warn, Some("")).unwrap(),
            LogLevel::Warn
        );
        assert!(effective_level(LogLevel::Info, Some("loud")).is_err());
    }
}
