//! `doctor --fix`: the safe steps (directories, banger's ssh key — the daemon's own key step)
//! at once, then the packages that failing or warning rows name, after a confirmation.

use banger_config::Layout;

use crate::output;

/// `doctor --fix`: directories and ssh key (always safe), then the packages missing rows name,
/// installed with apt-get after a confirmation (or `--yes`), then the checks run again.
pub(crate) fn fix(layout: &Layout, yes: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    layout
        .ensure_dirs()
        .context("cannot create banger's directories")?;
    output::status("fix: directories exist");
    let config = banger_config::Config::load(&layout.config_path)?;
    // The daemon's own key step: race-safe, at `ssh_key_path` when configured.
    let key = layout.ssh_key_path(&config);
    let made =
        banger_host::sshkey::ensure(&banger_host::RealRunner, &banger_host::SystemClock, &key)
            .with_context(|| format!("cannot make the ssh key {}", key.display()))?;
    output::status(&match made {
        banger_host::sshkey::KeyState::Made => format!("fix: made the ssh key {}", key.display()),
        banger_host::sshkey::KeyState::Existed => "fix: ssh key exists".to_owned(),
    });
    let host = super::RealFacts {
        db: layout.db_path(),
        ssh_config: layout.ssh_config_path(),
    };
    let rows = super::checks(&host, &config, &super::DaemonFacts::default());
    let packages = super::packages_to_install(&rows);
    let crates = super::crates_to_install(&rows);
    if packages.is_empty() && crates.is_empty() {
        output::status("fix: nothing missing");
        return Ok(());
    }
    let list = packages.join(" ");
    let crate_list = crates.join(" ");
    let what = match (packages.is_empty(), crates.is_empty()) {
        (false, false) => format!("{list} with apt-get and {crate_list} with cargo install"),
        (false, true) => format!("{list} with apt-get"),
        _ => format!("{crate_list} with cargo install"),
    };
    if !packages.is_empty() && !banger_host::process::running_as_root() {
        return Err(output::Hinted::new(
            format!("missing packages: {list}"),
            format!("sudo apt-get install -y {list}"),
        )
        .into());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(output::Hinted::new(
                format!("would install {what}"),
                "run in a terminal to confirm, or add --yes",
            )
            .into());
        }
        let mut err = std::io::stderr();
        write!(err, "install {what}? [y/N] ")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            output::status("fix: nothing installed");
            return Ok(());
        }
    }
    if !packages.is_empty() {
        let status = std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        anyhow::ensure!(status.success(), "apt-get install {list} failed: {status}");
        output::status(&format!("fix: installed {list}"));
    }
    for krate in crates {
        let status = std::process::Command::new("cargo")
            .args(["install", "--locked", krate])
            .status()
            .context("cannot run cargo (install Rust with rustup first)")?;
        anyhow::ensure!(status.success(), "cargo install {krate} failed: {status}");
        output::status(&format!("fix: installed {krate}"));
    }
    Ok(())
}
