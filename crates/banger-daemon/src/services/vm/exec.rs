//! `vm.exec`: a command in a guest through its agent. The VM lock is held only to check the
//! VM runs and snapshot how to reach it; the command then runs on two blocking threads (one
//! sends the client's stdin, signals and window sizes to the guest, one streams the guest's
//! output to the client) that end when it exits, when its timeout kills it, or when the
//! client goes away (dropping this future closes the guest stream, and the agent kills the
//! command's process group).

use std::time::Duration;

use banger_api::frame::streams;
use banger_api::types::{VmExecParams, VmExecResult};
use banger_host::GuestIoError;
use banger_host::exec::{Aborter, ExecSpec, ExitStatus, GuestFrame, HostFrame, WinSize};
use banger_host::guest::EXEC_PROTOCOL;
use tokio::sync::mpsc;
use tracing::debug;

use super::{VmError, VmService};
use crate::services::support::blocking;
use crate::stream::{StreamIn, StreamOut};

/// How long a command killed by its timeout gets to report its end.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Frames queued from the client to the guest.
const INPUT_QUEUE: usize = 4;

/// Closes the guest stream when dropped (the request ended or was cancelled).
struct AbortOnDrop(Aborter);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checks what a client may ask for, before anything runs.
fn validate(p: &VmExecParams) -> Result<(), VmError> {
    let bad = |why: String| Err(VmError::InvalidExec(why));
    if p.argv.is_empty() || p.argv[0].is_empty() {
        return bad("argv is empty".into());
    }
    if p.argv.iter().any(|a| a.contains('\0')) {
        return bad("an argument contains a NUL byte".into());
    }
    for (k, v) in &p.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return bad(format!("invalid environment variable name {k:?}"));
        }
    }
    if let Some(cwd) = &p.cwd
        && (!cwd.starts_with('/') || cwd.contains('\0'))
    {
        return bad(format!("cwd {cwd:?} is not an absolute path"));
    }
    if let Some(t) = p.tty
        && (t.rows == 0 || t.cols == 0)
    {
        return bad("a terminal needs at least one row and one column".into());
    }
    if p.timeout_secs == Some(0) {
        return bad("timeout_secs must be at least 1".into());
    }
    Ok(())
}

/// A client chunk as a frame for the guest (`None`: not one of exec's streams, ignored).
fn host_frame(stream: &str, bytes: Vec<u8>) -> Option<HostFrame> {
    let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
    match stream {
        streams::STDIN if !bytes.is_empty() => Some(HostFrame::Stdin(bytes)),
        streams::STDIN_CLOSE => Some(HostFrame::StdinClose),
        streams::SIGNAL => text().parse().ok().map(HostFrame::Signal),
        streams::RESIZE => {
            let t = text();
            let (rows, cols) = t.split_once(' ')?;
            Some(HostFrame::Resize {
                rows: rows.parse().ok()?,
                cols: cols.parse().ok()?,
            })
        }
        _ => None,
    }
}

impl VmService {
    /// Runs `p.argv` in VM `p.name` through its agent, streaming stdin from `input` and
    /// stdout/stderr to `out`.
    pub async fn exec(
        &self,
        p: VmExecParams,
        out: &StreamOut,
        input: &mut StreamIn,
    ) -> Result<VmExecResult, VmError> {
        validate(&p)?;
        let (target, vm) = self.guest_target(&p.name).await?;
        let mut addr = target.addr;
        if addr.agent.is_none() && addr.vsock.is_some() {
            // Not seen at readiness (e.g. adopted after a daemon restart): ask now.
            let guest = std::sync::Arc::clone(&self.infra.guest);
            let probe = addr.clone();
            addr.agent = blocking(move || Ok::<_, VmError>(guest.agent_protocol(&probe))).await?;
            self.handles.set_agent(&vm.id, addr.agent);
        }
        match addr.agent {
            None => return Err(VmError::NoAgent(vm.name)),
            Some(protocol) if protocol < EXEC_PROTOCOL => {
                return Err(VmError::AgentTooOld {
                    name: vm.name,
                    protocol,
                });
            }
            Some(_) => {}
        }
        let cwd = p.cwd.clone().or_else(|| {
            vm.workspace
                .as_ref()
                .and_then(|w| w.get("guest_path"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        });
        let spec = ExecSpec {
            argv: p.argv.clone(),
            env: p.env.clone().into_iter().collect(),
            cwd: Some(cwd.unwrap_or_else(|| "/root".to_owned())),
            tty: p.tty.map(|t| WinSize {
                rows: t.rows,
                cols: t.cols,
            }),
        };
        let guest = std::sync::Arc::clone(&self.infra.guest);
        let channel =
            blocking(move || guest.exec_stream(&addr, &spec).map_err(VmError::Exec)).await?;
        let abort = AbortOnDrop(channel.abort.clone());
        let mut guest_in = channel.input;
        let mut guest_out = channel.output;
        let sink = out.clone();
        let aborter = channel.abort.clone();
        let mut reader =
            tokio::task::spawn_blocking(move || -> Result<ExitStatus, GuestIoError> {
                loop {
                    let (name, data) = match guest_out.next()? {
                        GuestFrame::Stdout(d) => (streams::STDOUT, d),
                        GuestFrame::Stderr(d) => (streams::STDERR, d),
                        GuestFrame::Exit(status) => return Ok(status),
                    };
                    if sink.send_blocking(name, &data).is_err() {
                        aborter.abort();
                        return Err(GuestIoError("the client went away".into()));
                    }
                }
            });
        let (to_guest, mut frames) = mpsc::channel::<HostFrame>(INPUT_QUEUE);
        tokio::task::spawn_blocking(move || {
            while let Some(f) = frames.blocking_recv() {
                if guest_in.send(&f).is_err() {
                    break;
                }
            }
        });
        if !p.stdin {
            let _ = to_guest.send(HostFrame::StdinClose).await;
        }
        let timeout = p.timeout_secs.map(Duration::from_secs);
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut input_open = true;
        let ended = loop {
            tokio::select! {
                ended = &mut reader => break ended,
                chunk = input.recv(), if input_open => match chunk {
                    Some((stream, bytes)) => {
                        if let Some(f) = host_frame(&stream, bytes) {
                            // Waits while the guest does not read: that is flow control.
                            let _ = to_guest.send(f).await;
                        }
                    }
                    None => {
                        input_open = false;
                        if p.stdin {
                            let _ = to_guest.send(HostFrame::StdinClose).await;
                        }
                    }
                },
                () = &mut deadline, if timeout.is_some() => {
                    if timed_out {
                        // The guest did not report the end of the killed command.
                        abort.0.abort();
                        deadline.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE * 100);
                    } else {
                        debug!(vm = %p.name, "exec timed out; killing it");
                        timed_out = true;
                        let _ = to_guest.try_send(HostFrame::Signal(9));
                        deadline.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                    }
                }
            }
        };
        drop(to_guest);
        let status = match ended {
            Ok(Ok(status)) => Some(status),
            Ok(Err(_)) | Err(_) if timed_out => None,
            Ok(Err(e)) => return Err(VmError::ExecLost(e)),
            Err(e) => return Err(VmError::ExecLost(GuestIoError(e.to_string()))),
        };
        Ok(VmExecResult {
            exit_code: match status {
                Some(ExitStatus::Code(c)) => Some(c),
                _ => None,
            },
            signal: match status {
                Some(ExitStatus::Signal(s)) => Some(s),
                None => Some(9),
                _ => None,
            },
            timed_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_client_chunks_become_guest_frames() {
        assert_eq!(
            host_frame("stdin", b"x".to_vec()),
            Some(HostFrame::Stdin(b"x".to_vec()))
        );
        assert_eq!(host_frame("stdin", Vec::new()), None);
        assert_eq!(
            host_frame("signal", b"2".to_vec()),
            Some(HostFrame::Signal(2))
        );
        assert_eq!(
            host_frame("resize", b"40 120".to_vec()),
            Some(HostFrame::Resize {
                rows: 40,
                cols: 120
            })
        );
        assert_eq!(host_frame("resize", b"40x120".to_vec()), None);
        assert_eq!(host_frame("stdout", b"x".to_vec()), None);
    }

    #[test]
    fn test_bad_exec_params_are_refused() {
        let ok = VmExecParams {
            name: "a".into(),
            argv: vec!["true".into()],
            ..VmExecParams::default()
        };
        assert!(validate(&ok).is_ok());
        for bad in [
            VmExecParams {
                argv: vec![],
                ..ok.clone()
            },
            VmExecParams {
                cwd: Some("rel".into()),
                ..ok.clone()
            },
            VmExecParams {
                env: [("A=B".to_owned(), "1".to_owned())].into(),
                ..ok.clone()
            },
            VmExecParams {
                timeout_secs: Some(0),
                ..ok.clone()
            },
        ] {
            assert!(matches!(validate(&bad), Err(VmError::InvalidExec(_))));
        }
    }
}
