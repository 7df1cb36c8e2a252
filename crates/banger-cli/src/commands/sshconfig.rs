//! `banger ssh-config [--install|--uninstall]`: `ssh NAME.vm` with banger's key and pinned
//! host keys, through an `Include` of the config bangerd keeps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use banger_config::Layout;

use crate::output::{self, Hinted};

const MARKER: &str = "# Added by `banger ssh-config --install`: ssh NAME.vm reaches banger's VMs.";

fn include_line(managed: &Path) -> String {
    format!("Include {}", managed.display())
}

/// `existing` with the include added at the top (where it applies to every host), or
/// `None` when it is already there.
pub(crate) fn with_include(existing: &str, managed: &Path) -> Option<String> {
    let line = include_line(managed);
    if existing.lines().any(|l| l.trim() == line) {
        return None;
    }
    Some(format!("{MARKER}\n{line}\n\n{existing}"))
}

/// `existing` without banger's include (and its marker and the blank line after), or
/// `None` when it is not there.
pub(crate) fn without_include(existing: &str, managed: &Path) -> Option<String> {
    let line = include_line(managed);
    if !existing.lines().any(|l| l.trim() == line) {
        return None;
    }
    let mut out = Vec::new();
    let mut skip_blank = false;
    for l in existing.lines() {
        if l == MARKER {
            continue;
        }
        if l.trim() == line {
            skip_blank = true;
            continue;
        }
        if skip_blank && l.trim().is_empty() {
            skip_blank = false;
            continue;
        }
        skip_blank = false;
        out.push(l);
    }
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Some(text)
}

fn user_ssh_config() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or_else(|| {
        Hinted::new(
            "HOME is not set",
            "set HOME to the home directory whose ~/.ssh/config to change",
        )
    })?;
    Ok(PathBuf::from(home).join(".ssh/config"))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        fs_err::create_dir_all(dir)?;
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = path.with_extension("banger-tmp");
    fs_err::write(&tmp, text)?;
    fs_err::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn run(layout: &Layout, install: bool, uninstall: bool) -> anyhow::Result<ExitCode> {
    let managed = layout.ssh_config_path();
    let user = user_ssh_config()?;
    let existing = match fs_err::read_to_string(&user) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    if install {
        match with_include(&existing, &managed) {
            Some(text) => {
                write_private(&user, &text)?;
                output::status(&format!(
                    "added `{}` to {}",
                    include_line(&managed),
                    user.display()
                ));
            }
            None => output::status(&format!(
                "{} already includes {}",
                user.display(),
                managed.display()
            )),
        }
        if !managed.exists() {
            output::status("the managed file appears with the first `banger vm create`");
        }
    } else if uninstall {
        match without_include(&existing, &managed) {
            Some(text) => {
                write_private(&user, &text)?;
                output::status(&format!("removed banger's Include from {}", user.display()));
            }
            None => output::status(&format!(
                "{} does not include banger's config",
                user.display()
            )),
        }
    } else {
        output::data(&include_line(&managed));
        let state = if existing.lines().any(|l| l.trim() == include_line(&managed)) {
            "installed"
        } else {
            "not installed: `banger ssh-config --install` adds it to ~/.ssh/config"
        };
        output::status(&format!("{state}; then `ssh NAME.vm` reaches a running VM"));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_install_and_uninstall_are_idempotent_and_keep_the_rest() {
        let managed = Path::new("/home/u/.config/banger/ssh_config");
        let original = "Host work\n    User me\n";
        let installed = with_include(original, managed).unwrap();
        assert!(installed.starts_with(MARKER));
        assert!(installed.contains("Include /home/u/.config/banger/ssh_config\n\nHost work"));
        assert_eq!(with_include(&installed, managed), None, "installed twice");
        assert_eq!(without_include(&installed, managed).unwrap(), original);
        assert_eq!(without_include(original, managed), None);
        assert_eq!(
            without_include(&with_include("", managed).unwrap(), managed).unwrap(),
            ""
        );
    }
}
