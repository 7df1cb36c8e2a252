//! Where banger keeps its files.
//!
//! User mode follows XDG: state in `$XDG_STATE_HOME/banger` (`~/.local/state/banger`), cache in
//! `$XDG_CACHE_HOME/banger`, config in `$XDG_CONFIG_HOME/banger`, runtime files (the socket) in
//! `$XDG_RUNTIME_DIR/banger` or `/tmp/banger-runtime-<uid>`. `BANGER_HOME=/x` puts them all
//! under `/x/{state,cache,run,config}`; `BANGER_SOCKET` and `BANGER_CONFIG` override one path each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::env;

/// Errors resolving or creating the layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Neither `BANGER_HOME` nor `HOME` is set.
    #[error("cannot find a home directory: neither BANGER_HOME nor HOME is set")]
    NoHome,
    /// A directory could not be created.
    #[error("cannot create directory")]
    CreateDir(#[source] std::io::Error),
}

/// All paths banger uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Durable state: database, VM dirs, images, kernels, ssh keys, daemon log.
    pub state_dir: PathBuf,
    /// Re-creatable data: downloads, build caches.
    pub cache_dir: PathBuf,
    /// Runtime files: the daemon socket, VMM sockets.
    pub runtime_dir: PathBuf,
    /// The config directory.
    pub config_dir: PathBuf,
    /// The daemon's unix socket.
    pub socket_path: PathBuf,
    /// `config.toml`.
    pub config_path: PathBuf,
}

/// Written by `banger system install`.
pub const SYSTEM_INSTALL: &str = "/etc/banger/install.toml";
/// The system install's config.
pub const SYSTEM_CONFIG: &str = "/etc/banger/config.toml";

/// What the CLI needs from `install.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SystemInstall {
    /// The owner's uid.
    pub uid: u32,
    /// The owner's daemon socket.
    pub socket: String,
}

/// The system install at `path` when `uid` owns it.
pub fn system_install(path: &Path, uid: u32) -> Option<SystemInstall> {
    let text = std::fs::read_to_string(path).ok()?;
    let i: SystemInstall = toml::from_str(&text).ok()?;
    (i.uid == uid).then_some(i)
}

impl Layout {
    /// The layout from the process environment. For the owner of a system install
    /// (`/etc/banger/install.toml`), the socket and config default to the installed ones.
    pub fn from_env() -> Result<Self, LayoutError> {
        let uid = current_uid();
        let env = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| !p.as_os_str().is_empty())
        };
        let installed = if env(env::BANGER_HOME).is_none() {
            system_install(Path::new(SYSTEM_INSTALL), uid)
        } else {
            None
        };
        Self::from_vars(
            |k| {
                env(k).or_else(|| match (k, &installed) {
                    (env::BANGER_SOCKET, Some(i)) => Some(PathBuf::from(&i.socket)),
                    (env::BANGER_CONFIG, Some(_)) => Some(PathBuf::from(SYSTEM_CONFIG)),
                    _ => None,
                })
            },
            uid,
        )
    }

    /// The layout from `var` (an environment lookup) for user `uid`.
    pub fn from_vars(var: impl Fn(&str) -> Option<PathBuf>, uid: u32) -> Result<Self, LayoutError> {
        let (state_dir, cache_dir, runtime_dir, config_dir) =
            if let Some(home) = var(env::BANGER_HOME) {
                (
                    home.join("state"),
                    home.join("cache"),
                    home.join("run"),
                    home.join("config"),
                )
            } else {
                let home = var("HOME").ok_or(LayoutError::NoHome)?;
                let xdg = |key: &str, default: &str| var(key).unwrap_or_else(|| home.join(default));
                (
                    xdg("XDG_STATE_HOME", ".local/state").join("banger"),
                    xdg("XDG_CACHE_HOME", ".cache").join("banger"),
                    var("XDG_RUNTIME_DIR").map_or_else(
                        || PathBuf::from(format!("/tmp/banger-runtime-{uid}")),
                        |d| d.join("banger"),
                    ),
                    xdg("XDG_CONFIG_HOME", ".config").join("banger"),
                )
            };
        let socket_path =
            var(env::BANGER_SOCKET).unwrap_or_else(|| runtime_dir.join("bangerd.sock"));
        let config_path = var(env::BANGER_CONFIG).unwrap_or_else(|| config_dir.join("config.toml"));
        Ok(Layout {
            state_dir,
            cache_dir,
            runtime_dir,
            config_dir,
            socket_path,
            config_path,
        })
    }

    /// The SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }

    /// Per-VM directories live here (`vms/<id>/`).
    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    /// Managed images (`images/<name>/`).
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }

    /// Managed kernels (`kernels/<name>/`).
    pub fn kernels_dir(&self) -> PathBuf {
        self.state_dir.join("kernels")
    }

    /// The ssh config banger keeps for `ssh NAME.vm` (one block per VM), which
    /// `banger ssh-config --install` includes from `~/.ssh/config`.
    pub fn ssh_config_path(&self) -> PathBuf {
        self.config_dir.join("ssh_config")
    }

    /// banger's ssh key and known_hosts.
    pub fn ssh_dir(&self) -> PathBuf {
        self.state_dir.join("ssh")
    }

    /// banger's ssh key: config's `ssh_key_path`, else `<state>/ssh/id_ed25519` (the daemon
    /// and `doctor --fix` both ask here).
    pub fn ssh_key_path(&self, config: &crate::Config) -> PathBuf {
        config
            .ssh_key_path
            .clone()
            .unwrap_or_else(|| self.ssh_dir().join("id_ed25519"))
    }

    /// Creates the state, cache and runtime directories (mode 0700) and the socket's parent.
    pub fn ensure_dirs(&self) -> Result<(), LayoutError> {
        for dir in [&self.state_dir, &self.cache_dir, &self.runtime_dir] {
            create_private_dir(dir)?;
        }
        if let Some(parent) = self.socket_path.parent() {
            fs_err::create_dir_all(parent).map_err(LayoutError::CreateDir)?;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), LayoutError> {
    fs_err::create_dir_all(dir).map_err(LayoutError::CreateDir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(LayoutError::CreateDir)
}

/// The real uid of this process.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(test)]
mod tests {

    #[test]
    fn test_system_install_applies_to_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("install.toml");
        std::fs::write(&p, "owner = \"ada\"\nuid = 1000\nsocket = \"/run/bangerd/bangerd.sock\"\nprefix = \"/usr/local\"\n").unwrap();
        assert_eq!(
            system_install(&p, 1000).unwrap().socket,
            "/run/bangerd/bangerd.sock"
        );
        assert!(system_install(&p, 1001).is_none());
        assert!(system_install(&dir.path().join("absent.toml"), 1000).is_none());
    }

    use std::collections::HashMap;

    use super::*;

    fn layout(vars: &[(&str, &str)]) -> Layout {
        let map: HashMap<String, PathBuf> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), PathBuf::from(v)))
            .collect();
        Layout::from_vars(|k| map.get(k).cloned(), 1000).unwrap()
    }

    #[test]
    fn test_layout_banger_home_overrides_everything() {
        let l = layout(&[
            ("BANGER_HOME", "/b"),
            ("HOME", "/home/u"),
            ("XDG_STATE_HOME", "/x"),
        ]);
        assert_eq!(l.state_dir, PathBuf::from("/b/state"));
        assert_eq!(l.cache_dir, PathBuf::from("/b/cache"));
        assert_eq!(l.socket_path, PathBuf::from("/b/run/bangerd.sock"));
        assert_eq!(l.config_path, PathBuf::from("/b/config/config.toml"));
    }

    #[test]
    fn test_layout_xdg_defaults_and_runtime_fallback() {
        let l = layout(&[("HOME", "/home/u")]);
        assert_eq!(l.state_dir, PathBuf::from("/home/u/.local/state/banger"));
        assert_eq!(l.cache_dir, PathBuf::from("/home/u/.cache/banger"));
        assert_eq!(l.config_dir, PathBuf::from("/home/u/.config/banger"));
        assert_eq!(l.runtime_dir, PathBuf::from("/tmp/banger-runtime-1000"));
        let l = layout(&[("HOME", "/home/u"), ("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            l.socket_path,
            PathBuf::from("/run/user/1000/banger/bangerd.sock")
        );
    }

    #[test]
    fn test_layout_socket_and_config_overrides() {
        let l = layout(&[
            ("HOME", "/h"),
            ("BANGER_SOCKET", "/s.sock"),
            ("BANGER_CONFIG", "/c.toml"),
        ]);
        assert_eq!(l.socket_path, PathBuf::from("/s.sock"));
        assert_eq!(l.config_path, PathBuf::from("/c.toml"));
    }

    #[test]
    fn test_layout_without_home_is_an_error() {
        assert!(matches!(
            Layout::from_vars(|_| None, 0),
            Err(LayoutError::NoHome)
        ));
    }

    #[test]
    fn test_layout_ensure_dirs_creates_private_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layout(&[("BANGER_HOME", tmp.path().to_str().unwrap())]);
        l.ensure_dirs().unwrap();
        let mode = std::fs::metadata(&l.state_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(l.runtime_dir.is_dir());
    }
}
