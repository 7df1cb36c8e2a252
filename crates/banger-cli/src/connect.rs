//! Reaching the daemon: connect, and in user mode start `bangerd` when its socket is absent
//! (or restart it when its version differs from the CLI's).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use banger_api::methods::{Ping, Shutdown};
use banger_api::types::{Empty, PingResult};
use banger_api::{Client, ClientError};
use banger_config::{Layout, env};

use crate::output::Hinted;

/// How long to wait for a freshly started daemon to answer `ping`.
const START_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a daemon that answered `ping`.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) ping: PingResult,
}

fn is_absent(err: &ClientError) -> bool {
    matches!(err, ClientError::Connect { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused))
}

/// Connects and pings, without starting anything. `Ok(None)` when no daemon listens.
pub(crate) async fn try_connect(socket: &Path) -> anyhow::Result<Option<Connection>> {
    let mut client = match Client::connect(socket).await {
        Ok(c) => c,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let ping = client.call::<Ping>(&Empty {}).await?;
    Ok(Some(Connection { client, ping }))
}

/// Connects to the daemon, starting (or restarting) it as needed.
pub(crate) async fn connect(layout: &Layout) -> anyhow::Result<Connection> {
    let socket = &layout.socket_path;
    if let Some(conn) = try_connect(socket).await? {
        if conn.ping.version == banger_api::VERSION && conn.ping.commit == banger_api::COMMIT {
            return Ok(conn);
        }
        if autostart_disabled() {
            return Ok(conn);
        }
        progress(&format!(
            "restarting bangerd: it is {} ({}), this CLI is {} ({})",
            conn.ping.version,
            conn.ping.commit,
            banger_api::VERSION,
            banger_api::COMMIT
        ));
        stop_daemon(conn, socket).await?;
    } else if autostart_disabled() {
        return Err(Hinted::new(
            format!("bangerd is not running (no socket at {})", socket.display()),
            format!(
                "start it with `bangerd &`, or unset {}",
                env::BANGER_NO_AUTOSTART
            ),
        )
        .into());
    }
    start_daemon(layout).await
}

fn autostart_disabled() -> bool {
    std::env::var(env::BANGER_NO_AUTOSTART).is_ok_and(|v| v == "1")
}

fn progress(msg: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("banger: {msg}");
    }
}

/// Asks the daemon to stop and waits until its socket is gone.
pub(crate) async fn stop_daemon(mut conn: Connection, socket: &Path) -> anyhow::Result<()> {
    conn.client
        .call::<Shutdown>(&Empty {})
        .await
        .context("cannot ask bangerd to stop")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while socket.exists() {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "bangerd (pid {}) did not stop within 15s",
                conn.ping.pid
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(env::BANGER_DAEMON_BIN) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("bangerd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

async fn start_daemon(layout: &Layout) -> anyhow::Result<Connection> {
    layout
        .ensure_dirs()
        .context("cannot create banger's directories")?;
    let bin = daemon_binary();
    let stderr_path = layout.runtime_dir.join("bangerd.stderr");
    let stderr = fs_err::File::create(&stderr_path)?;
    let mut child: Child = Command::new(&bin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.into_parts().0)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            // Two CLIs starting the daemon at once: the loser's bangerd exits because the
            // winner already serves. Use the winner.
            while Instant::now() < deadline {
                if let Some(conn) = try_connect(&layout.socket_path).await.ok().flatten() {
                    return Ok(conn);
                }
                if !layout.socket_path.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let why = fs_err::read_to_string(&stderr_path).unwrap_or_default();
            return Err(anyhow!(
                "bangerd exited during startup ({status}): {}",
                why.trim().trim_start_matches("bangerd: ")
            ));
        }
        if let Some(conn) = try_connect(&layout.socket_path).await.ok().flatten() {
            return Ok(conn);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "bangerd (pid {}) did not answer within {}s; see {}",
                child.id(),
                START_TIMEOUT.as_secs(),
                layout.log_path().display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
