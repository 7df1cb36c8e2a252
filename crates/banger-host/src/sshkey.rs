//! banger's ssh key: made once, race-free, wherever `ssh_key_path` points. Used by VM
//! creation in the daemon and by `doctor --fix` in the CLI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Clock;
use crate::runner::{Cmd, CommandRunner, RunError};

/// Why the key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    /// `ssh-keygen` failed.
    #[error("ssh-keygen")]
    Keygen(#[source] RunError),
    /// Creating the directory or linking the pair into place.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process was making the key and its public half never appeared.
    #[error("the key being made by another process never appeared at {0}")]
    NeverAppeared(PathBuf),
}

impl SshKeyError {
    /// How to fix it.
    pub fn hint(&self) -> Option<String> {
        match self {
            SshKeyError::Keygen(_) => Some("install openssh-client (`ssh-keygen`)".into()),
            SshKeyError::NeverAppeared(p) => Some(format!(
                "remove {} and retry",
                p.with_extension("").display()
            )),
            SshKeyError::Io { .. } => None,
        }
    }
}

/// Whether it was made now or existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Made by this call.
    Made,
    /// Already there (or made by a concurrent caller).
    Existed,
}

/// Makes the ed25519 key pair at `key` (and `key.pub`) unless the public key exists.
/// Concurrent callers race safely: each generates a pair under a temporary name and
/// hard-links it into place, private key first, so exactly one pair wins and a `.pub` that
/// exists always matches the private key next to it. Blocking: run it off async runtimes.
pub fn ensure(
    runner: &dyn CommandRunner,
    clock: &dyn Clock,
    key: &Path,
) -> Result<KeyState, SshKeyError> {
    let public = key.with_extension("pub");
    if public.exists() {
        return Ok(KeyState::Existed);
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SshKeyError::Io { path, source }
    };
    if let Some(dir) = key.parent() {
        fs_err::create_dir_all(dir).map_err(io(dir))?;
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let tmp = key.with_extension(format!("tmp-{}", &tag[..16]));
    let tmp_pub = PathBuf::from(format!("{}.pub", tmp.display()));
    let made = runner
        .run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger"])
                .arg("-f")
                .arg(tmp.display().to_string()),
        )
        .map_err(SshKeyError::Keygen);
    let won = made.and_then(|_| match std::fs::hard_link(&tmp, key) {
        Ok(()) => std::fs::hard_link(&tmp_pub, &public)
            .map(|()| true)
            .map_err(io(&public)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(key)(e)),
    });
    let _ = fs_err::remove_file(&tmp);
    let _ = fs_err::remove_file(&tmp_pub);
    if won? {
        return Ok(KeyState::Made);
    }
    // Another caller won: its public key follows its private key within moments.
    if clock.wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        &mut || public.exists(),
    ) {
        Ok(KeyState::Existed)
    } else {
        Err(SshKeyError::NeverAppeared(public))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FakeClock, SystemClock};
    use crate::runner::RecordingRunner;

    fn fake_keygen() -> RecordingRunner {
        RecordingRunner::with_responder(|cmd| {
            let i = cmd.args.iter().position(|a| a == "-f").unwrap_or(0);
            let path = cmd.args.get(i + 1).cloned().unwrap_or_default();
            std::fs::write(&path, format!("private {path}\n")).unwrap();
            std::fs::write(format!("{path}.pub"), format!("public {path}\n")).unwrap();
            Ok(crate::runner::CmdOutput::ok())
        })
    }

    #[test]
    fn test_ensure_makes_the_pair_once_with_spaces_in_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("my keys, here").join("id_ed25519");
        let runner = fake_keygen();
        assert_eq!(ensure(&runner, &SystemClock, &key).unwrap(), KeyState::Made);
        assert_eq!(
            ensure(&runner, &SystemClock, &key).unwrap(),
            KeyState::Existed
        );
        assert_eq!(runner.calls().len(), 1, "ssh-keygen ran once");
        let private = std::fs::read_to_string(&key).unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        assert_eq!(
            private.replace("private", "public"),
            public,
            "the pair matches"
        );
        let left: Vec<_> = std::fs::read_dir(key.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary files left");
    }

    #[test]
    fn test_a_lost_race_whose_public_key_never_comes_times_out_on_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "another process's key\n").unwrap();
        let clock = FakeClock::new(jiff::Timestamp::UNIX_EPOCH);
        let err = ensure(&fake_keygen(), &clock, &key).unwrap_err();
        assert!(matches!(err, SshKeyError::NeverAppeared(_)), "{err}");
        assert!(err.hint().unwrap().contains("remove"));
    }
}
