//! `fake-jailer`: Firecracker's jailer, as far as banger's contract with it goes. It checks
//! the command line as the jailer does (`--id` of alphanumerics and hyphens, ≤ 64; an
//! `--exec-file` whose name contains `firecracker`; numeric `--uid`/`--gid`; an absolute
//! `--chroot-base-dir`), builds `<base>/<exec name>/<id>/root`, copies the exec file in,
//! hands the root to uid:gid, drops to them when run as root, and execs the copy with the
//! arguments after `--` plus `--id`. A real chroot would need a static binary, so the jail
//! is simulated: `FAKE_FIRECRACKER_ROOT` tells `fake-firecracker` to resolve every path
//! it is given inside the root and to refuse paths that leave it. The accepted command
//! line is written to `<base>/<exec name>/<id>/jailer.json` for tests.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[allow(clippy::print_stderr)]
fn fail(msg: &str) -> ExitCode {
    eprintln!("Jailer error: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut id, mut exec, mut uid, mut gid) = (None, None, None, None);
    let mut base = PathBuf::from("/srv/jailer");
    let mut extra: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--id" => id = args.next(),
            "--exec-file" => exec = args.next().map(PathBuf::from),
            "--uid" => uid = args.next().and_then(|v| v.parse::<u32>().ok()),
            "--gid" => gid = args.next().and_then(|v| v.parse::<u32>().ok()),
            "--chroot-base-dir" => match args.next() {
                Some(b) => base = PathBuf::from(b),
                None => return fail("--chroot-base-dir needs a value"),
            },
            "--" => {
                extra = args.by_ref().collect();
            }
            other => return fail(&format!("unexpected argument {other}")),
        }
    }
    let Some(id) = id.filter(|i| {
        !i.is_empty() && i.len() <= 64 && i.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }) else {
        return fail("invalid --id");
    };
    let (Some(uid), Some(gid)) = (uid, gid) else {
        return fail("--uid and --gid are required numbers");
    };
    let Some(exec) = exec.filter(|e| e.is_file()) else {
        return fail("--exec-file is missing or not a file");
    };
    let Some(name) = exec.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return fail("--exec-file has no file name");
    };
    if !name.contains("firecracker") {
        return fail("the exec file name must contain \"firecracker\"");
    }
    if !base.is_absolute() {
        return fail("--chroot-base-dir must be absolute");
    }
    if extra.iter().any(|a| a == "--id" || a.starts_with("--id=")) {
        return fail("the jailer passes --id to firecracker itself");
    }
    let jail = base.join(&name).join(&id);
    let root = jail.join("root");
    let made = (|| -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&root)?;
        let copy = root.join(&name);
        std::fs::copy(&exec, &copy)?;
        std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        let record = serde_json::json!({
            "id": id, "exec_file": exec, "uid": uid, "gid": gid,
            "chroot_base_dir": base, "extra": extra,
        });
        std::fs::write(jail.join("jailer.json"), record.to_string())?;
        Ok(copy)
    })();
    let _copy = match made {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot build the jail at {}: {e}", root.display())),
    };
    // Into the root before privileges drop (a real jailer pivots into it), then the copy
    // by its path there.
    if let Err(e) = std::env::set_current_dir(&root) {
        return fail(&format!("chdir {}: {e}", root.display()));
    }
    let mut cmd = std::process::Command::new(PathBuf::from(".").join(&name));
    cmd.arg("--id")
        .arg(&id)
        .args(&extra)
        .env_clear()
        .env("FAKE_FIRECRACKER_ROOT", &root);
    if rustix::process::geteuid().is_root() {
        cmd.uid(uid).gid(gid);
    }
    let err = cmd.exec();
    fail(&format!("exec {name}: {err}"))
}
