//! Running a command in a sandbox for a tool: `vm.exec` through the daemon, stdin sent
//! whole, stdout and stderr kept up to a limit (the rest counted, not kept).

use std::collections::BTreeMap;
use std::path::Path;

use banger_api::Client;
use banger_api::frame::streams;
use banger_api::methods::VmExec;
use banger_api::types::VmExecParams;
use tokio::sync::mpsc;

use crate::error::ToolError;

/// What one command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ran {
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Whether its timeout killed it.
    pub timed_out: bool,
    /// The first `max` bytes of stdout.
    pub stdout: Vec<u8>,
    /// The first `max` bytes of stderr.
    pub stderr: Vec<u8>,
    /// All of stdout's bytes.
    pub stdout_bytes: u64,
    /// All of stderr's bytes.
    pub stderr_bytes: u64,
}

impl Ran {
    /// The exit code a shell would report (128 + N for signal N).
    pub fn code(&self) -> i32 {
        self.exit_code
            .unwrap_or_else(|| 128 + self.signal.unwrap_or(127))
    }

    /// stderr as text, for errors.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory (`None`: the workspace, else /root).
    pub cwd: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Bytes for stdin (`None`: empty).
    pub stdin: Option<Vec<u8>>,
    /// Kill it after this many seconds.
    pub timeout_secs: u64,
    /// Keep at most this many bytes of each output.
    pub max_output: usize,
}

/// Runs `cmd` in VM `vm` through the daemon at `socket`.
pub async fn run(socket: &Path, vm: &str, cmd: Command) -> Result<Ran, ToolError> {
    let mut client = Client::connect(socket).await?;
    let params = VmExecParams {
        name: vm.to_owned(),
        argv: cmd.argv,
        env: cmd.env,
        cwd: cmd.cwd,
        tty: None,
        timeout_secs: Some(cmd.timeout_secs),
        stdin: cmd.stdin.is_some(),
    };
    let (tx, rx) = mpsc::channel(4);
    if let Some(data) = cmd.stdin {
        tokio::spawn(async move {
            for piece in data.chunks(64 << 10) {
                if tx.send((streams::STDIN, piece.to_vec())).await.is_err() {
                    return;
                }
            }
            let _ = tx.send((streams::STDIN_CLOSE, Vec::new())).await;
        });
    } else {
        drop(tx);
    }
    let mut ran = Ran::default();
    let max = cmd.max_output;
    let result = client
        .call_duplex::<VmExec>(&params, rx, &mut |stream, bytes| {
            let (kept, total) = if stream == streams::STDERR {
                (&mut ran.stderr, &mut ran.stderr_bytes)
            } else {
                (&mut ran.stdout, &mut ran.stdout_bytes)
            };
            *total += bytes.len() as u64;
            let room = max.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
            Ok(())
        })
        .await
        .map_err(|e| {
            ToolError::from(e).not_found_hint("`sandbox_list` shows the sandboxes that exist")
        })?;
    ran.exit_code = result.exit_code;
    ran.signal = result.signal;
    ran.timed_out = result.timed_out;
    Ok(ran)
}

/// `bytes` as text for an agent: UTF-8 (lossy), with a marker when `total` was more.
pub fn clip(bytes: &[u8], total: u64) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if total > bytes.len() as u64 {
        use std::fmt::Write as _;
        let _ = write!(
            text,
            "\n[... truncated: showing {} of {total} bytes]",
            bytes.len()
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clip_marks_what_was_cut() {
        assert_eq!(clip(b"abc", 3), "abc");
        assert_eq!(
            clip(b"ab", 10),
            "ab\n[... truncated: showing 2 of 10 bytes]"
        );
        let r = Ran {
            signal: Some(9),
            ..Ran::default()
        };
        assert_eq!(r.code(), 137);
    }
}
