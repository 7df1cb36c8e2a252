//! Preconditions of tests that need root or a host tool. Where one is missing a test skips
//! on a laptop (with a line saying why) but FAILS when `BANGER_REQUIRE_PRIVILEGED=1`, which
//! `scripts/test.sh` (and so CI) sets: in CI nothing skips silently.
//!
//! ```ignore
//! banger_testkit::require!(require::root(), require::tool("nft"));
//! ```

use std::path::Path;

/// The environment variable that turns a skip into a failure.
pub const STRICT_VAR: &str = "BANGER_REQUIRE_PRIVILEGED";

/// Whether unmet preconditions fail the test (`BANGER_REQUIRE_PRIVILEGED=1`).
pub fn strict() -> bool {
    std::env::var(STRICT_VAR).is_ok_and(|v| v == "1")
}

/// Running as root.
pub fn root() -> Result<(), String> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err("needs root".into())
    }
}

/// `name` on `PATH` (or an absolute path that exists).
pub fn tool(name: &str) -> Result<(), String> {
    let found = if name.starts_with('/') {
        Path::new(name).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
    };
    if found {
        Ok(())
    } else {
        Err(format!("needs `{name}` on PATH"))
    }
}

/// Environment variable `name` set (e.g. what `scripts/test.sh` prepares).
pub fn env(name: &str) -> Result<(), String> {
    if std::env::var_os(name).is_some() {
        Ok(())
    } else {
        Err(format!("needs {name} (scripts/test.sh sets it)"))
    }
}

/// A file that must exist.
pub fn file(path: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("needs {path}"))
    }
}

/// Whether every precondition holds. When one does not: panics in strict mode, else prints
/// why the test is skipped and returns `false`.
///
/// # Panics
/// In strict mode, when a precondition is unmet.
#[allow(clippy::print_stderr)]
pub fn met(needs: &[Result<(), String>]) -> bool {
    let unmet: Vec<&str> = needs
        .iter()
        .filter_map(|n| n.as_ref().err().map(String::as_str))
        .collect();
    if unmet.is_empty() {
        return true;
    }
    let why = unmet.join(", ");
    assert!(
        !strict(),
        "a required precondition is missing: {why} ({STRICT_VAR}=1: CI never skips)"
    );
    eprintln!("skipping: {why}");
    false
}

/// Returns from the enclosing test (skips it) unless every precondition holds; fails it
/// instead in strict mode. See the module doc.
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if !$crate::require::met(&[$($need),+]) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not run on its own: the guard's test below runs it in a child process with and
    /// without strict mode.
    #[test]
    #[ignore = "run by test_a_missing_tool_fails_in_strict_mode_and_skips_otherwise"]
    fn probe_needs_a_tool_that_does_not_exist() {
        crate::require!(tool("banger-no-such-tool-anywhere"));
        panic!("the guard let a test run without its tool");
    }

    fn run_probe(strict: Option<&str>) -> std::process::Output {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "require::tests::probe_needs_a_tool_that_does_not_exist",
            "--ignored",
            "--nocapture",
        ]);
        cmd.env_remove(STRICT_VAR);
        if let Some(v) = strict {
            cmd.env(STRICT_VAR, v);
        }
        cmd.output().unwrap()
    }

    #[test]
    fn test_a_missing_tool_fails_in_strict_mode_and_skips_otherwise() {
        let strict = run_probe(Some("1"));
        let text = String::from_utf8_lossy(&strict.stdout).into_owned()
            + &String::from_utf8_lossy(&strict.stderr);
        assert!(!strict.status.success(), "strict mode must fail: {text}");
        assert!(
            text.contains("a required precondition is missing"),
            "{text}"
        );
        let lax = run_probe(None);
        let text = String::from_utf8_lossy(&lax.stdout).into_owned()
            + &String::from_utf8_lossy(&lax.stderr);
        assert!(lax.status.success(), "without strict mode it skips: {text}");
        assert!(
            text.contains("skipping: needs `banger-no-such-tool-anywhere`"),
            "{text}"
        );
        assert!(text.contains("1 passed"), "the probe ran: {text}");
    }

    #[test]
    fn test_preconditions() {
        assert!(tool("sh").is_ok());
        assert!(tool("/bin/sh").is_ok());
        assert!(tool("banger-no-such-tool").is_err());
        assert!(file("/").is_ok());
        assert!(met(&[Ok(()), Ok(())]));
    }
}
