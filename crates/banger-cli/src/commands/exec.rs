//! `vm exec` (and `vm run`'s command or shell): a command in a guest through the daemon and
//! the guest agent. stdin streams in (when it is not a terminal, or with a PTY), stdout and
//! stderr stream out byte-exact, Ctrl-C and SIGTERM are forwarded (with a PTY Ctrl-C is a
//! byte the guest's terminal turns into SIGINT), window size changes follow the terminal.
//! A guest without an exec-capable agent falls back to ssh.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::Context as _;
use banger_api::frame::streams;
use banger_api::methods::VmExec;
use banger_api::types::{TtySize, VmExecParams, VmExecResult};
use banger_api::{ClientError, ErrorCode};
use banger_config::Layout;
use tokio::sync::mpsc;

use super::vm::{run_ssh, ssh_info};
use crate::connect::connect;
use crate::output;

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecOpts {
    /// Working directory in the guest (default: the workspace, else /root).
    pub cwd: Option<String>,
    /// Ask for a PTY (used only when stdin is a terminal).
    pub tty: bool,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Kill the command after this many seconds.
    pub timeout: Option<u64>,
}

/// Exit code for a command killed by its timeout (as `timeout(1)`).
const TIMED_OUT: u8 = 124;

/// Puts a terminal in raw mode until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin().as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn term_size() -> Option<TtySize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout().as_fd())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin().as_fd()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some(TtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(
                output::Hinted::new(format!("invalid --env {p:?}"), "use --env KEY=VALUE").into(),
            ),
        })
        .collect()
}

/// Reads stdin on a thread of its own (a blocked read must not keep the runtime alive) and
/// sends it as `stdin` chunks, then `stdin_close` at its end (not for a terminal).
fn pump_stdin(tx: mpsc::Sender<(&'static str, Vec<u8>)>, close_at_eof: bool) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .blocking_send((streams::STDIN, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        if close_at_eof {
            let _ = tx.blocking_send((streams::STDIN_CLOSE, Vec::new()));
        }
    });
}

/// Forwards SIGINT/SIGTERM (without a PTY) and SIGWINCH (with one) as chunks.
async fn forward_signals(tx: mpsc::Sender<(&'static str, Vec<u8>)>, tty: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut winch)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::window_change()),
    ) else {
        return;
    };
    loop {
        let msg = tokio::select! {
            _ = int.recv() => (streams::SIGNAL, b"2".to_vec()),
            _ = term.recv() => (streams::SIGNAL, b"15".to_vec()),
            _ = winch.recv(), if tty => match term_size() {
                Some(s) => (streams::RESIZE, format!("{} {}", s.rows, s.cols).into_bytes()),
                None => continue,
            },
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Runs `argv` in VM `name`; returns the command's exit code (128+N when signal N killed
/// it, 124 when its timeout did).
pub(crate) async fn exec(
    layout: &Layout,
    name: &str,
    argv: &[String],
    opts: &ExecOpts,
) -> anyhow::Result<ExitCode> {
    let stdin_tty = rustix::termios::isatty(std::io::stdin().as_fd());
    let tty = opts.tty && stdin_tty;
    if opts.tty && !stdin_tty {
        output::status("stdin is not a terminal: running without one");
    }
    // A terminal's stdin goes to the command only with a PTY (as `docker exec` without -i).
    let forward_stdin = tty || !stdin_tty;
    let params = VmExecParams {
        name: name.to_owned(),
        argv: argv.to_vec(),
        env: parse_env(&opts.env)?,
        cwd: opts.cwd.clone(),
        tty: if tty {
            Some(term_size().unwrap_or(TtySize { rows: 24, cols: 80 }))
        } else {
            None
        },
        timeout_secs: opts.timeout,
        stdin: forward_stdin,
    };
    let mut conn = connect(layout).await?;
    let (tx, rx) = mpsc::channel(4);
    let signals = tokio::spawn(forward_signals(tx.clone(), tty));
    let raw = if tty { RawMode::enter() } else { None };
    if forward_stdin {
        pump_stdin(tx, !tty);
    } else {
        drop(tx);
    }
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let result = conn
        .client
        .call_duplex::<VmExec>(&params, rx, &mut |stream, bytes| {
            if stream == streams::STDERR {
                stderr.write_all(bytes)?;
                stderr.flush()
            } else {
                stdout.write_all(bytes)?;
                stdout.flush()
            }
        })
        .await;
    drop(raw);
    signals.abort();
    match result {
        Ok(r) => Ok(exit_code(&r, opts.timeout)),
        Err(ClientError::Rpc(e)) if e.kind() == ErrorCode::Unsupported => {
            output::status(&format!("{e}: running it over ssh instead"));
            let mut info = ssh_info(layout, name).await?;
            if opts.cwd.is_some() {
                info.workdir.clone_from(&opts.cwd);
            }
            // A login shell is ssh's own interactive session.
            let argv = if argv == login_shell().as_slice() {
                &[][..]
            } else {
                argv
            };
            run_ssh(&info, argv, true)
        }
        // The reader went away (`| head`): not an error.
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::from(141))
        }
        Err(e) => Err(e).context(format!("exec in vm {name}")),
    }
}

fn exit_code(r: &VmExecResult, timeout: Option<u64>) -> ExitCode {
    if r.timed_out {
        output::status(&format!(
            "the command was killed after its {}s timeout",
            timeout.unwrap_or_default()
        ));
        return ExitCode::from(TIMED_OUT);
    }
    ExitCode::from(r.shell_code().clamp(0, 255) as u8)
}

/// The login shell `vm run` opens: bash when the guest has it, else sh.
pub(crate) fn login_shell() -> Vec<String> {
    [
        "/bin/sh",
        "-c",
        "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_env_pairs_parse_and_bad_ones_are_refused() {
        let env = parse_env(&["A=1".into(), "B==x".into(), "C=".into()]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "=x");
        assert_eq!(env["C"], "");
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["NOEQ".into()]).is_err());
    }

    #[test]
    fn test_exit_codes_follow_the_shell() {
        let r = |exit_code, signal, timed_out| VmExecResult {
            exit_code,
            signal,
            timed_out,
        };
        assert_eq!(exit_code(&r(Some(7), None, false), None), ExitCode::from(7));
        assert_eq!(
            exit_code(&r(None, Some(2), false), None),
            ExitCode::from(130)
        );
        assert_eq!(
            exit_code(&r(None, Some(9), true), Some(1)),
            ExitCode::from(124)
        );
    }
}
