//! `banger version`, `banger daemon status|stop`.

use std::fmt::Write as _;
use std::process::ExitCode;

use banger_config::Layout;
use serde_json::json;

use crate::connect::{stop_daemon, try_connect};
use crate::output;

pub(crate) async fn version(layout: &Layout) -> anyhow::Result<ExitCode> {
    let mut text = format!(
        "banger {} (commit {}, protocol {})",
        banger_api::VERSION,
        banger_api::COMMIT,
        banger_api::PROTOCOL_VERSION
    );
    match try_connect(&layout.socket_path).await {
        Ok(Some(conn)) => {
            let p = &conn.ping;
            let _ = write!(
                text,
                "\nbangerd {} (commit {}, protocol {}, pid {})",
                p.version, p.commit, p.protocol, p.pid
            );
        }
        _ => text.push_str("\nbangerd not running"),
    }
    output::data(&text);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    let conn = try_connect(&layout.socket_path).await?;
    let socket = layout.socket_path.display().to_string();
    let log = layout.log_path().display().to_string();
    if as_json {
        output::json(&match &conn {
            Some(c) => json!({"running": true, "ping": c.ping, "socket": socket, "log": log}),
            None => json!({"running": false, "socket": socket, "log": log}),
        })?;
    } else {
        output::data(&match &conn {
            Some(c) => format!(
                "running: yes\npid: {}\nversion: {} (commit {})\nuptime: {}\nsocket: {socket}\nlog: {log}",
                c.ping.pid,
                c.ping.version,
                c.ping.commit,
                output::duration_ms(c.ping.uptime_ms)
            ),
            None => format!("running: no\nsocket: {socket}\nlog: {log}"),
        });
    }
    // Like `systemctl status`: non-zero when not running, so scripts can test it.
    Ok(if conn.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub(crate) async fn stop(layout: &Layout) -> anyhow::Result<ExitCode> {
    match try_connect(&layout.socket_path).await? {
        Some(conn) => {
            let pid = conn.ping.pid;
            stop_daemon(conn, &layout.socket_path).await?;
            output::status(&format!(
                "bangerd (pid {pid}) stopped; running VMs keep running"
            ));
        }
        None => output::status("bangerd is not running"),
    }
    Ok(ExitCode::SUCCESS)
}
