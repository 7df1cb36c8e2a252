//! `banger system install|status|restart|uninstall`: the system install. Two units —
//! `bangerd.service` (the owner's daemon, no root) and `bangerd-root.service` (the root
//! helper) — binaries under the prefix, `/etc/banger/{install.toml,config.toml}`.
//! `--destdir` installs into a staging root and touches nothing else (packaging, tests).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::output::{self, Hinted};

/// Where the root helper listens.
pub(crate) const HELPER_SOCKET: &str = "/run/banger/root-helper.sock";
/// Where the owner's daemon listens (its own runtime directory).
pub(crate) const DAEMON_SOCKET: &str = "/run/bangerd/bangerd.sock";

/// `/etc/banger/install.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstallInfo {
    pub(crate) owner: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
    pub(crate) prefix: String,
    pub(crate) socket: String,
    pub(crate) helper_socket: String,
    pub(crate) version: String,
}

/// A user from a passwd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
}

/// Finds `name` in passwd text.
pub(crate) fn find_user(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| {
            Some(User {
                name: name.to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })?
    })
}

/// The hardening both units share, and their install section.
const HARDENING: &str = "PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
";

/// The owner's daemon unit.
pub(crate) fn daemon_unit(i: &InstallInfo) -> String {
    format!(
        "[Unit]
Description=banger daemon for {owner} (VM state and host work; no root)
Documentation=https://github.com/banger/banger
Wants=bangerd-root.service network-online.target
After=bangerd-root.service network-online.target

[Service]
Type=simple
User={owner}
Group={gid}
Environment=BANGER_CONFIG=/etc/banger/config.toml
Environment=BANGER_SOCKET={socket}
ExecStart={prefix}/bin/bangerd
# VMs live in their own sessions; stopping or restarting the daemon never stops them.
KillMode=process
Restart=on-failure
RestartSec=1
RuntimeDirectory=bangerd
RuntimeDirectoryPreserve=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={home}
{HARDENING}",
        owner = i.owner,
        gid = i.gid,
        socket = i.socket,
        prefix = i.prefix,
        home = i.home,
    )
}

/// The root helper's unit.
pub(crate) fn helper_unit(i: &InstallInfo) -> String {
    format!(
        "[Unit]
Description=banger root helper for uid {uid} (bridge, taps, NAT; every argument checked)
Documentation=https://github.com/banger/banger
Before=bangerd.service

[Service]
Type=simple
Environment=BANGER_CONFIG=/etc/banger/config.toml
Environment=BANGER_HOME=/var/lib/banger-root
ExecStart={prefix}/bin/bangerd --root-helper --owner-uid {uid} --socket {helper}
Restart=on-failure
RestartSec=1
RuntimeDirectory=banger
RuntimeDirectoryPreserve=yes
StateDirectory=banger-root
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
{HARDENING}",
        uid = i.uid,
        prefix = i.prefix,
        helper = i.helper_socket,
    )
}

/// Every file a system install writes, relative to the root (`/`), with its content
/// source and mode. Binaries are copied from `bin_dir`.
pub(crate) fn plan(
    i: &InstallInfo,
    bin_dir: &Path,
    agent: Option<&Path>,
) -> Vec<(PathBuf, Source, u32)> {
    let prefix = Path::new(i.prefix.trim_start_matches('/'));
    let mut files = vec![
        (
            prefix.join("bin/banger"),
            Source::Copy(bin_dir.join("banger")),
            0o755,
        ),
        (
            prefix.join("bin/bangerd"),
            Source::Copy(bin_dir.join("bangerd")),
            0o755,
        ),
        (
            PathBuf::from("etc/systemd/system/bangerd.service"),
            Source::Text(daemon_unit(i)),
            0o644,
        ),
        (
            PathBuf::from("etc/systemd/system/bangerd-root.service"),
            Source::Text(helper_unit(i)),
            0o644,
        ),
        (
            PathBuf::from("etc/banger/install.toml"),
            Source::Text(toml::to_string(i).unwrap_or_default()),
            0o644,
        ),
        (
            PathBuf::from("etc/banger/config.toml"),
            Source::KeepOrText(format!(
                "# banger system config (see README). The owner's daemon sends privileged work here:\n\
                 root_helper_socket = \"{}\"\n",
                i.helper_socket
            )),
            0o644,
        ),
    ];
    if let Some(a) = agent {
        files.push((
            prefix.join("lib/banger/banger-agent"),
            Source::Copy(a.to_owned()),
            0o755,
        ));
    }
    files
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Copy(PathBuf),
    Text(String),
    /// Written only when the file does not exist yet (the admin's edits are kept).
    KeepOrText(String),
}

fn write_file(dst: &Path, src: &Source, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = dst.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let tmp = dst.with_extension("banger-new");
    match src {
        Source::Copy(from) => {
            fs_err::copy(from, &tmp)?;
        }
        Source::Text(t) => fs_err::write(&tmp, t)?,
        Source::KeepOrText(t) => {
            if dst.exists() {
                return Ok(());
            }
            fs_err::write(&tmp, t)?;
        }
    }
    fs_err::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    fs_err::rename(&tmp, dst)?;
    Ok(())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("systemctl")
        .args(args)
        .status()?;
    if !status.success() {
        anyhow::bail!("`systemctl {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn static_agent(bin_dir: &Path) -> Option<PathBuf> {
    banger_host::process::agent_beside(bin_dir)
        .into_iter()
        .find(|p| banger_host::process::is_static_elf(p))
}

/// `system install`.
pub(crate) async fn install(
    owner: &str,
    destdir: Option<&Path>,
    prefix: &str,
) -> anyhow::Result<ExitCode> {
    let root = destdir.unwrap_or(Path::new("/"));
    if destdir.is_none() && banger_config::layout::current_uid() != 0 {
        return Err(Hinted::new("system install needs root", "run it with sudo").into());
    }
    let passwd = fs_err::read_to_string("/etc/passwd")?;
    let user = find_user(&passwd, owner).ok_or_else(|| {
        Hinted::new(
            format!("no user {owner:?} on this host"),
            "pass the login of the user who will run banger: --owner $USER",
        )
    })?;
    if user.uid == 0 || user.uid == 65534 {
        return Err(Hinted::new(
            format!("--owner {owner} is not a user banger should run as"),
            "pass the login of the person who will use banger",
        )
        .into());
    }
    if !prefix.starts_with('/') {
        return Err(Hinted::new(
            format!("--prefix {prefix:?} is not absolute"),
            "e.g. --prefix /usr/local",
        )
        .into());
    }
    let info = InstallInfo {
        owner: user.name.clone(),
        uid: user.uid,
        gid: user.gid,
        home: user.home.clone(),
        prefix: prefix.trim_end_matches('/').to_owned(),
        socket: DAEMON_SOCKET.to_owned(),
        helper_socket: HELPER_SOCKET.to_owned(),
        version: banger_api::VERSION.to_owned(),
    };
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| anyhow::anyhow!("cannot tell where banger's binaries are"))?;
    let agent = static_agent(&bin_dir);
    if agent.is_none() {
        output::status(
            "no static banger-agent next to banger: guests will run without it (ssh is used)",
        );
    }
    for (rel, src, mode) in plan(&info, &bin_dir, agent.as_deref()) {
        let dst = root.join(&rel);
        write_file(&dst, &src, mode)?;
        output::status(&format!("wrote {}", dst.display()));
    }
    if destdir.is_some() {
        output::status("installed into the staging root; nothing was started");
        return Ok(ExitCode::SUCCESS);
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", "bangerd-root.service", "bangerd.service"])?;
    wait_for_ping(Path::new(DAEMON_SOCKET)).await?;
    output::status(&format!(
        "banger is installed for {owner}: bangerd.service (as {owner}) and bangerd-root.service (root) are running"
    ));
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_ping(socket: &Path) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(mut c) = banger_api::Client::connect(socket).await
            && c.call::<banger_api::methods::Ping>(&banger_api::types::Empty {})
                .await
                .is_ok()
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Hinted::new(
                format!("bangerd did not answer on {} within 15 s", socket.display()),
                "`journalctl -u bangerd -u bangerd-root` says why",
            )
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn read_info(root: &Path) -> anyhow::Result<InstallInfo> {
    let path = root.join("etc/banger/install.toml");
    let text = fs_err::read_to_string(&path).map_err(|_| {
        Hinted::new(
            "banger is not installed system-wide",
            "`sudo banger system install --owner $USER`",
        )
    })?;
    Ok(toml::from_str(&text)?)
}

/// `system status`.
pub(crate) async fn status() -> anyhow::Result<ExitCode> {
    let info = read_info(Path::new("/"))?;
    let mut ok = true;
    for unit in ["bangerd-root.service", "bangerd.service"] {
        let out = std::process::Command::new("systemctl")
            .args(["is-active", unit])
            .output()?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ok &= state == "active";
        output::data(&format!("{unit}: {state}"));
    }
    let ping = wait_for_ping(Path::new(&info.socket)).await.is_ok();
    output::data(&format!(
        "daemon for {} on {}: {}",
        info.owner,
        info.socket,
        if ping { "answers" } else { "no answer" }
    ));
    Ok(if ok && ping {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `system restart`: both services; running VMs keep running.
pub(crate) async fn restart() -> anyhow::Result<ExitCode> {
    let info = read_info(Path::new("/"))?;
    systemctl(&["restart", "bangerd-root.service", "bangerd.service"])?;
    wait_for_ping(Path::new(&info.socket)).await?;
    output::status("restarted; running VMs were not touched");
    Ok(ExitCode::SUCCESS)
}

/// `system uninstall [--purge]`.
pub(crate) fn uninstall(destdir: Option<&Path>, purge: bool) -> anyhow::Result<ExitCode> {
    let root = destdir.unwrap_or(Path::new("/"));
    let info = read_info(root)?;
    if destdir.is_none() {
        let _ = systemctl(&[
            "disable",
            "--now",
            "bangerd.service",
            "bangerd-root.service",
        ]);
    }
    let prefix = Path::new(info.prefix.trim_start_matches('/'));
    let mut gone = vec![
        prefix.join("bin/banger"),
        prefix.join("bin/bangerd"),
        prefix.join("lib/banger/banger-agent"),
        PathBuf::from("etc/systemd/system/bangerd.service"),
        PathBuf::from("etc/systemd/system/bangerd-root.service"),
        PathBuf::from("etc/banger/install.toml"),
    ];
    if purge {
        gone.push(PathBuf::from("etc/banger/config.toml"));
    }
    for rel in gone {
        let p = root.join(&rel);
        if fs_err::remove_file(&p).is_ok() {
            output::status(&format!("removed {}", p.display()));
        }
    }
    for dir in [prefix.join("lib/banger"), PathBuf::from("etc/banger")] {
        let _ = std::fs::remove_dir(root.join(dir));
    }
    if destdir.is_none() {
        let _ = systemctl(&["daemon-reload"]);
    }
    if !purge {
        output::status(
            "kept /etc/banger/config.toml and the owner's VMs and images (--purge removes the config)",
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> InstallInfo {
        InstallInfo {
            owner: "ada".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/ada".into(),
            prefix: "/usr/local".into(),
            socket: DAEMON_SOCKET.into(),
            helper_socket: HELPER_SOCKET.into(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn test_find_user() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nada:x:1000:1001:Ada:/home/ada:/bin/zsh\n";
        assert_eq!(
            find_user(passwd, "ada"),
            Some(User {
                name: "ada".into(),
                uid: 1000,
                gid: 1001,
                home: "/home/ada".into()
            })
        );
        assert_eq!(find_user(passwd, "bob"), None);
        assert_eq!(find_user("ada:x:notanumber:1:a:/h:/s\n", "ada"), None);
    }

    #[test]
    fn test_units_are_hardened_and_keep_vms_alive() {
        let d = daemon_unit(&info());
        for line in [
            "User=ada",
            "KillMode=process",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
        ] {
            assert!(d.contains(line), "{line}\n{d}");
        }
        let h = helper_unit(&info());
        for line in [
            "--owner-uid 1000",
            "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
        ] {
            assert!(h.contains(line), "{line}\n{h}");
        }
    }
}
