//! Running host commands: always an argument vector, never a shell string.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program name or path.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Bytes fed to stdin.
    pub stdin: Option<Vec<u8>>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
}

impl Cmd {
    /// `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            cwd: None,
        }
    }

    /// Adds one argument.
    #[must_use]
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feeds `bytes` to stdin.
    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs in `dir`.
    #[must_use]
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    /// A successful, silent output.
    pub fn ok() -> Self {
        CmdOutput::default()
    }

    /// stdout as lossy UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Errors running a command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// Program.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The program exited non-zero.
    #[error("`{command}` exited with status {code}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit code.
        code: i32,
        /// The last lines of stderr.
        stderr: String,
    },
}

/// Runs host commands.
pub trait CommandRunner: Send + Sync + fmt::Debug {
    /// Runs `cmd` to completion, capturing its output, whatever its exit code.
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError>;

    /// Runs `cmd` and fails unless it exits 0.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let out = self.output(cmd)?;
        if out.code == 0 {
            Ok(out)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.trim().lines().rev().take(5).collect();
            Err(RunError::Failed {
                command: cmd.to_string(),
                code: out.code,
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join("; "),
            })
        }
    }
}

/// Runs commands for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealRunner;

impl CommandRunner for RealRunner {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let spawn_err = |source| RunError::Spawn {
            program: cmd.program.clone(),
            source,
        };
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &cmd.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(spawn_err)?;
        let stdin = child.stdin.take();
        // stdin is fed on its own thread while this one drains stdout and stderr: a child
        // that answers as it reads (debugfs echoes every command) would otherwise fill its
        // output pipe and stop reading, and both sides would wait forever.
        let out = std::thread::scope(|s| {
            if let (Some(bytes), Some(mut stdin)) = (&cmd.stdin, stdin) {
                s.spawn(move || {
                    // A child that exits without reading stdin is not our error; its status
                    // tells.
                    let _ = stdin.write_all(bytes);
                });
            }
            child.wait_with_output()
        })
        .map_err(spawn_err)?;
        Ok(CmdOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

type Responder = dyn Fn(&Cmd) -> Result<CmdOutput, RunError> + Send + Sync;

/// A fake runner: records every command and answers through a responder (default: success).
#[derive(Clone)]
pub struct RecordingRunner {
    calls: Arc<Mutex<Vec<Cmd>>>,
    responder: Arc<Responder>,
}

impl fmt::Debug for RecordingRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingRunner")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Default for RecordingRunner {
    fn default() -> Self {
        Self::with_responder(|_| Ok(CmdOutput::ok()))
    }
}

impl RecordingRunner {
    /// A runner answering with `responder`.
    pub fn with_responder(
        responder: impl Fn(&Cmd) -> Result<CmdOutput, RunError> + Send + Sync + 'static,
    ) -> Self {
        RecordingRunner {
            calls: Arc::default(),
            responder: Arc::new(responder),
        }
    }

    /// Every command run so far.
    pub fn calls(&self) -> Vec<Cmd> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every command line run so far, as text.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }
}

impl CommandRunner for RecordingRunner {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(cmd.clone());
        (self.responder)(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_real_runner_captures_output_and_fails_on_nonzero() {
        let out = RealRunner
            .run(&Cmd::new("sh").args(["-c", "echo out; echo err >&2"]))
            .unwrap();
        assert_eq!(out.stdout_str(), "out\n");
        let err = RealRunner
            .run(&Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .unwrap_err();
        assert!(err.to_string().contains("status 3: boom"), "{err}");
    }

    #[test]
    fn test_real_runner_feeds_large_stdin_to_a_chatty_child_without_deadlock() {
        let big = vec![b'x'; 4 << 20];
        let out = RealRunner.run(&Cmd::new("cat").stdin(big.clone())).unwrap();
        assert_eq!(out.stdout.len(), big.len());
    }

    #[test]
    fn test_real_runner_feeds_stdin() {
        let out = RealRunner
            .run(&Cmd::new("cat").stdin(b"hello".to_vec()))
            .unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn test_recording_runner_records_and_injects_failures() {
        let r = RecordingRunner::with_responder(|c| {
            if c.program == "mkfs.ext4" {
                Ok(CmdOutput {
                    code: 1,
                    stdout: vec![],
                    stderr: b"disk full".to_vec(),
                })
            } else {
                Ok(CmdOutput::ok())
            }
        });
        r.run(&Cmd::new("ip").args(["link", "show"])).unwrap();
        assert!(r.run(&Cmd::new("mkfs.ext4").arg("x")).is_err());
        assert_eq!(r.lines(), ["ip link show", "mkfs.ext4 x"]);
    }
}
