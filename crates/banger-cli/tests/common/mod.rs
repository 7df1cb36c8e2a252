//! Shared fixtures: a private BANGER_HOME and the real binaries.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `banger` binary under test.
pub fn banger_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_banger"))
}

/// The `bangerd` binary next to it (the test command builds all workspace binaries first).
pub fn bangerd_bin() -> PathBuf {
    let path = banger_bin().with_file_name("bangerd");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Config keys every host-netns test daemon gets.
pub const HOST_SAFE_CONFIG: &str = "tap_pool_size = 0\ndns_listen = \"127.0.0.1:0\"\n";

/// A private banger installation: its own BANGER_HOME, daemon, socket and database.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self::with_prefix("bt")
    }

    /// A home whose directory name starts with `prefix` (e.g. with a space and a comma).
    pub fn with_prefix(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let env = Env { dir };
        env.write_config("");
        env
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.home().join("run/bangerd.sock")
    }

    pub fn db(&self) -> PathBuf {
        self.home().join("state/state.db")
    }

    pub fn config_path(&self) -> PathBuf {
        self.home().join("config/config.toml")
    }

    /// Writes config.toml: `text` after the host-safety base (these daemons run in the host's
    /// network namespace, so no tap pool, which would create a bridge, and DNS on a free
    /// port).
    pub fn write_config(&self, text: &str) {
        self.write_config_raw(&format!("{HOST_SAFE_CONFIG}{text}"));
    }

    /// Writes config.toml exactly (tests running in their own netns).
    pub fn write_config_raw(&self, text: &str) {
        std::fs::create_dir_all(self.home().join("config")).unwrap();
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("BANGER_HOME", self.home())
            .env("BANGER_DAEMON_BIN", bangerd_bin())
            .env("NO_COLOR", "1");
    }

    pub fn banger_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(banger_bin());
        cmd.args(args);
        self.apply(&mut cmd);
        cmd
    }

    pub fn bangerd_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bangerd_bin());
        cmd.args(args);
        self.apply(&mut cmd);
        cmd
    }

    /// Runs `banger ARGS` and returns its output.
    pub fn banger(&self, args: &[&str]) -> Output {
        self.banger_cmd(args).output().unwrap()
    }

    /// Runs `banger ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.banger(args);
        assert!(
            out.status.success(),
            "banger {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Makes the home and socket reachable by other users (to test SO_PEERCRED refusal).
    pub fn open_permissions(&self) {
        for dir in [self.home().to_owned(), self.home().join("run")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(self.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self
            .banger_cmd(&["daemon", "stop"])
            .env("BANGER_NO_AUTOSTART", "1")
            .output();
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
