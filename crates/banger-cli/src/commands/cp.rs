//! `banger vm cp`: files and directories between the host and a guest, as a tar stream
//! through `vm.exec` (the guest agent runs `tar`). `SRC VM:DST` and `VM:SRC DST` like `cp -r`
//! (into DST when it is a directory, else as DST); `-` for a tar on stdin or stdout. Modes
//! are kept; files written in a guest belong to root, files written on the host to the user.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use banger_api::frame::streams;
use banger_api::methods::VmExec;
use banger_api::types::VmExecParams;
use banger_config::Layout;
use tokio::sync::mpsc;

use crate::connect::connect;
use crate::output::Hinted;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Loc {
    /// A host path.
    Host(PathBuf),
    /// stdin or stdout, as a tar stream.
    Stdio,
    /// A path in a VM.
    Guest { vm: String, path: String },
}

fn parse_loc(s: &str) -> Loc {
    if s == "-" {
        return Loc::Stdio;
    }
    match s.split_once(':') {
        // `./a:b` or `/x:y` is a host path; a VM name has no slash.
        Some((vm, path)) if !vm.is_empty() && !vm.contains('/') => Loc::Guest {
            vm: vm.to_owned(),
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_owned()
            },
        },
        _ => Loc::Host(PathBuf::from(s)),
    }
}

/// Unpacks the tar on stdin into `$1` (a directory; with `$2`, the single entry `$2` becomes
/// `$1` unless `$1` is a directory, then it goes inside).
const UNPACK: &str = r#"set -e
dst=$1 name=$2
x() { tar -x -p --no-same-owner -f - -C "$1"; }
if [ -z "$name" ]; then mkdir -p -- "$dst"; x "$dst"; exit; fi
if [ -d "$dst" ]; then x "$dst"; exit; fi
parent=$(dirname -- "$dst")
[ -d "$parent" ] || { echo "banger vm cp: $parent: no such directory" >&2; exit 1; }
tmp=$(mktemp -d "$parent/.banger-cp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
x "$tmp"
mv -f -- "$tmp/$name" "$dst"
"#;

/// Writes `$1` as a tar (its last component as the entry name) to stdout.
const PACK: &str = r#"set -e
[ -e "$1" ] || [ -L "$1" ] || { echo "banger vm cp: $1: no such file or directory" >&2; exit 1; }
cd -- "$(dirname -- "$1")"
exec tar -c -f - -- "$(basename -- "$1")"
"#;

/// Sends what is written to it as `stdin` chunks.
struct ChunkWriter(mpsc::Sender<(&'static str, Vec<u8>)>);

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send((streams::STDIN, buf.to_vec()))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn params(vm: &str, argv: &[&str], stdin: bool) -> VmExecParams {
    VmExecParams {
        name: vm.to_owned(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        stdin,
        ..VmExecParams::default()
    }
}

/// The name a host path is copied under (`.` and `..` resolved).
fn entry_name(path: &Path) -> anyhow::Result<String> {
    let full = std::fs::canonicalize(path).map_err(|e| {
        Hinted::new(
            format!("cannot read {}: {e}", path.display()),
            "the source must exist on the host",
        )
    })?;
    Ok(full
        .file_name()
        .map_or_else(|| "root".to_owned(), |n| n.to_string_lossy().into_owned()))
}

/// `banger vm cp SRC DST`.
pub(crate) async fn cp(layout: &Layout, src: &str, dst: &str) -> anyhow::Result<ExitCode> {
    match (parse_loc(src), parse_loc(dst)) {
        (from @ (Loc::Host(_) | Loc::Stdio), Loc::Guest { vm, path }) => {
            upload(layout, from, &vm, &path).await
        }
        (Loc::Guest { vm, path }, to @ (Loc::Host(_) | Loc::Stdio)) => {
            download(layout, &vm, &path, to).await
        }
        _ => Err(Hinted::new(
            format!("cannot copy {src:?} to {dst:?}"),
            "one side is VM:PATH, the other a host path or - (a tar on stdin/stdout)",
        )
        .into()),
    }
}

async fn upload(layout: &Layout, from: Loc, vm: &str, path: &str) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::channel(4);
    let name = match &from {
        Loc::Host(p) => entry_name(p)?,
        _ => String::new(),
    };
    let p = params(vm, &["sh", "-c", UNPACK, "banger-cp", path, &name], true);
    let producer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = ChunkWriter(tx.clone());
        match from {
            Loc::Host(src) => {
                let mut b = tar::Builder::new(&mut w);
                b.follow_symlinks(false);
                if std::fs::symlink_metadata(&src)?.is_dir() {
                    b.append_dir_all(&name, &src)?;
                } else {
                    b.append_path_with_name(&src, &name)?;
                }
                b.into_inner()?;
            }
            _ => {
                std::io::copy(&mut std::io::stdin().lock(), &mut w)?;
            }
        }
        let _ = tx.blocking_send((streams::STDIN_CLOSE, Vec::new()));
        Ok(())
    });
    let mut conn = connect(layout).await?;
    let mut stderr = std::io::stderr();
    let r = conn
        .client
        .call_duplex::<VmExec>(&p, rx, &mut |_, bytes| stderr.write_all(bytes))
        .await
        .with_context(|| format!("copy into vm {vm}"))?;
    let produced = producer.join();
    if r.shell_code() != 0 {
        return Err(anyhow::anyhow!(
            "copy into vm {vm} failed: the guest's tar exited with {}",
            r.shell_code()
        ));
    }
    if let Ok(Err(e)) = produced {
        return Err(e).context("reading the source");
    }
    Ok(ExitCode::SUCCESS)
}

async fn download(layout: &Layout, vm: &str, path: &str, to: Loc) -> anyhow::Result<ExitCode> {
    let p = params(vm, &["sh", "-c", PACK, "banger-cp", path], false);
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    // Where the tar is unpacked: into DST when it is a directory, else into a scratch
    // directory beside DST whose single entry then becomes DST.
    let (unpack_dir, rename_to) = match &to {
        Loc::Host(dst) if dst.is_dir() => (Some(dst.clone()), None),
        Loc::Host(dst) => {
            let parent = match dst.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            let scratch = tempfile::Builder::new()
                .prefix(".banger-cp.")
                .tempdir_in(&parent)
                .map_err(|e| {
                    Hinted::new(
                        format!("cannot write in {}: {e}", parent.display()),
                        "the destination's directory must exist and be writable",
                    )
                })?;
            (
                Some(scratch.path().to_owned()),
                Some((scratch, dst.clone())),
            )
        }
        _ => (None, None),
    };
    let (reader, mut writer) = std::io::pipe().context("pipe")?;
    let unpacker = unpack_dir.map(|dir| {
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(true);
            a.set_overwrite(true);
            a.unpack(&dir)
        })
    });
    let mut conn = connect(layout).await?;
    let (_tx, rx) = mpsc::channel(1);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let to_stdout = unpacker.is_none();
    let r = conn
        .client
        .call_duplex::<VmExec>(&p, rx, &mut |stream, bytes| {
            if stream == streams::STDERR {
                stderr.write_all(bytes)
            } else if to_stdout {
                stdout.write_all(bytes)
            } else {
                writer.write_all(bytes)
            }
        })
        .await;
    drop(writer);
    let unpacked = unpacker.map(std::thread::JoinHandle::join);
    let r = r.with_context(|| format!("copy from vm {vm}"))?;
    if r.shell_code() != 0 {
        return Err(anyhow::anyhow!(
            "copy from vm {vm} failed: the guest's tar exited with {}",
            r.shell_code()
        ));
    }
    match unpacked {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(e))) => return Err(e).context("unpacking on the host"),
        Some(Err(_)) => anyhow::bail!("unpacking on the host failed"),
    }
    if let (Some((scratch, dst)), Some(name)) = (rename_to, name) {
        let entry = scratch.path().join(&name);
        std::fs::rename(&entry, &dst)
            .with_context(|| format!("moving {} to {}", entry.display(), dst.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_locations_parse_like_docker_cp() {
        assert_eq!(parse_loc("-"), Loc::Stdio);
        assert_eq!(
            parse_loc("dev:/root/x"),
            Loc::Guest {
                vm: "dev".into(),
                path: "/root/x".into()
            }
        );
        assert_eq!(
            parse_loc("dev:"),
            Loc::Guest {
                vm: "dev".into(),
                path: ".".into()
            }
        );
        assert_eq!(parse_loc("./a:b"), Loc::Host("./a:b".into()));
        assert_eq!(parse_loc("/x:y"), Loc::Host("/x:y".into()));
        assert_eq!(parse_loc("file"), Loc::Host("file".into()));
    }

    #[test]
    fn test_guest_scripts_parse() {
        for script in [UNPACK, PACK] {
            let ok = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap()
                .success();
            assert!(ok, "{script}");
        }
    }
}
