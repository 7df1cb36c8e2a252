//! Workspaces, host side: what of a git repository ships to a guest, a shallow `.git` for
//! it, the tar stream that carries both, and the fixed guest scripts that unpack and export.
//!
//! Every git call goes through a [`CommandRunner`] (argument vectors, never a shell string).
//! Guest scripts are fixed text; the only values in them are shell-quoted.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::runner::{Cmd, CommandRunner, RunError};

/// Why a workspace cannot be prepared or exported.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The path is not inside a git work tree.
    #[error("{0} is not inside a git repository")]
    NotARepo(PathBuf),
    /// A bare repository (or a path inside `.git`).
    #[error("{0} is a bare repository or inside a .git directory; it has no work tree to ship")]
    Bare(PathBuf),
    /// No commit yet.
    #[error("the repository at {0} has no commits yet")]
    NoCommits(PathBuf),
    /// Submodules are not supported.
    #[error("the repository uses submodules ({0}), which workspaces do not support")]
    Submodules(String),
    /// `--from` names nothing.
    #[error("--from {0:?} is not a commit in the repository")]
    BadRef(String),
    /// A name git would reject.
    #[error("{what} {value:?} is not a valid git name")]
    BadName {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A value the guest's shell cannot be given quoted (it holds a NUL byte).
    #[error("{0:?} cannot be quoted for the guest's shell")]
    Unquotable(String),
    /// A git command failed.
    #[error("git failed")]
    Git(#[from] RunError),
    /// Reading the repository or writing the stream failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl WorkspaceError {
    /// A hint for the user, when there is a fix.
    pub fn hint(&self) -> Option<String> {
        match self {
            WorkspaceError::NotARepo(_) => {
                Some("run it on a directory inside a git repository (`git init` makes one)".into())
            }
            WorkspaceError::Bare(_) => Some("use a clone with a work tree".into()),
            WorkspaceError::NoCommits(_) => Some("commit something first (`git commit`)".into()),
            WorkspaceError::Submodules(_) => Some(
                "copy the submodule's files yourself (`banger vm ssh`), or vendor them into the repo"
                    .into(),
            ),
            WorkspaceError::BadRef(_) => {
                Some("give a branch, tag or commit that `git rev-parse` knows".into())
            }
            _ => None,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkspaceError {
    let context = context.into();
    move |source| WorkspaceError::Io { context, source }
}

/// What the user asked to ship.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipOptions {
    /// Create and check out this branch in the guest.
    pub branch: Option<String>,
    /// Start the branch from this ref instead of HEAD (the guest gets that commit's tree).
    pub from: Option<String>,
    /// Also ship untracked files that are not ignored.
    pub include_untracked: bool,
}

/// What will ship: computed on the host without touching the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSnapshot {
    /// The repository's top level.
    pub root: PathBuf,
    /// The commit the guest's HEAD will be.
    pub head: String,
    /// The branch the guest will be on (`None`: detached).
    pub branch: Option<String>,
    /// The host repo's `origin` URL.
    pub origin: Option<String>,
    /// The host's `user.name` and `user.email` (for the guest repo's config).
    pub identity: (Option<String>, Option<String>),
    /// The work-tree files the guest ends up with, relative to `root`, sorted.
    pub files: Vec<String>,
    /// How many of `files` are untracked.
    pub untracked: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Files copied from the host work tree over the checkout of `head`: those that differ
    /// from it (uncommitted changes) and the untracked ones. The rest comes from the pack.
    pub overlay: Vec<String>,
    /// Files of `head` deleted in the host work tree (removed in the guest too).
    pub deleted: Vec<String>,
    /// `true`: the guest gets `head`'s tree (`--from`), not the host's work tree.
    pub checkout: bool,
}

impl RepoSnapshot {
    /// "tracked", "tracked+untracked", or "checkout of <ref>" (what `--dry-run` reports).
    pub fn mode(&self) -> String {
        let base = if self.checkout {
            format!("checkout of {}", short(&self.head))
        } else {
            "tracked".to_owned()
        };
        if self.untracked > 0 {
            format!("{base}+untracked")
        } else {
            base
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn git(runner: &dyn CommandRunner, dir: &Path, args: &[&str]) -> Result<String, RunError> {
    let out = runner.run(
        &Cmd::new("git")
            .arg("-C")
            .arg(dir.display().to_string())
            .args(args.iter().copied()),
    )?;
    Ok(out.stdout_str())
}

fn git_opt(runner: &dyn CommandRunner, dir: &Path, args: &[&str]) -> Option<String> {
    let out = runner
        .output(
            &Cmd::new("git")
                .arg("-C")
                .arg(dir.display().to_string())
                .args(args.iter().copied()),
        )
        .ok()?;
    let text = out.stdout_str().trim().to_owned();
    (out.code == 0 && !text.is_empty()).then_some(text)
}

fn nul_list(text: &str) -> impl Iterator<Item = &str> {
    text.split('\0').filter(|s| !s.is_empty())
}

/// Whether git accepts `name` as a branch name (a conservative subset: no leading '-', no
/// spaces, control characters, `..`, `~^:?*[\`, no trailing `/`, `.lock` or `.`).
pub fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        // Git's own rule is case-sensitive: `x.LOCK` is a valid branch.
        && name.strip_suffix(".lock").is_none()
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !"~^:?*[\\".contains(c))
}

/// Looks at the repository containing `path` and decides what ships.
pub fn snapshot(
    runner: &dyn CommandRunner,
    path: &Path,
    opts: &ShipOptions,
) -> Result<RepoSnapshot, WorkspaceError> {
    if !path.is_dir() {
        return Err(WorkspaceError::NotARepo(path.to_owned()));
    }
    let inside = runner.output(
        &Cmd::new("git")
            .arg("-C")
            .arg(path.display().to_string())
            .args(["rev-parse", "--is-inside-work-tree"]),
    )?;
    match inside.stdout_str().trim() {
        "true" => {}
        "false" => return Err(WorkspaceError::Bare(path.to_owned())),
        _ => return Err(WorkspaceError::NotARepo(path.to_owned())),
    }
    let root = PathBuf::from(git(runner, path, &["rev-parse", "--show-toplevel"])?.trim());
    if let Some(b) = &opts.branch
        && !valid_branch(b)
    {
        return Err(WorkspaceError::BadName {
            what: "--branch",
            value: b.clone(),
        });
    }
    if let Some(r) = &opts.from
        && !valid_rev(r)
    {
        return Err(WorkspaceError::BadName {
            what: "--from",
            value: r.clone(),
        });
    }
    let head = match &opts.from {
        Some(r) => git_opt(
            runner,
            &root,
            &["rev-parse", "--verify", "-q", &format!("{r}^{{commit}}")],
        )
        .ok_or_else(|| WorkspaceError::BadRef(r.clone()))?,
        None => git_opt(
            runner,
            &root,
            &["rev-parse", "--verify", "-q", "HEAD^{commit}"],
        )
        .ok_or_else(|| WorkspaceError::NoCommits(root.clone()))?,
    };
    // Submodules: gitlinks (mode 160000) in the index.
    let staged = git(runner, &root, &["ls-files", "-s", "-z"])?;
    let gitlinks: Vec<&str> = nul_list(&staged)
        .filter(|l| l.starts_with("160000 "))
        .filter_map(|l| l.split_once('\t').map(|(_, p)| p))
        .collect();
    if !gitlinks.is_empty() {
        return Err(WorkspaceError::Submodules(gitlinks.join(", ")));
    }
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    if opts.from.is_none() {
        let tracked = git(runner, &root, &["ls-files", "-z", "--cached"])?;
        files.extend(nul_list(&tracked).map(str::to_owned));
        let diff = git(
            runner,
            &root,
            &["diff", "-z", "--name-only", "--no-renames", "HEAD"],
        )?;
        changed.extend(nul_list(&diff).map(str::to_owned));
    } else {
        let tree = git(
            runner,
            &root,
            &["ls-tree", "-r", "-z", "--name-only", &head],
        )?;
        files.extend(nul_list(&tree).map(str::to_owned));
    }
    let mut others: BTreeSet<String> = BTreeSet::new();
    if opts.include_untracked {
        let listed = git(
            runner,
            &root,
            &["ls-files", "-z", "--others", "--exclude-standard"],
        )?;
        others.extend(
            nul_list(&listed)
                .filter(|f| !files.contains(*f))
                .map(str::to_owned),
        );
        files.extend(others.iter().cloned());
    }
    // Tracked files deleted in the work tree do not ship (the guest sees them deleted too).
    let mut bytes = 0;
    let mut kept = Vec::with_capacity(files.len());
    let mut deleted = Vec::new();
    for f in files {
        if opts.from.is_some() && !others.contains(&f) {
            kept.push(f);
            continue;
        }
        match std::fs::symlink_metadata(root.join(&f)) {
            Ok(m) if m.is_file() || m.file_type().is_symlink() => {
                bytes += m.len();
                kept.push(f);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted.push(f),
            Err(e) => return Err(io(format!("cannot read {}", root.join(&f).display()))(e)),
        }
    }
    // Changed files that are gone from the work tree (deleted, or staged then removed).
    let gone: Vec<String> = changed
        .iter()
        .filter(|f| !kept.contains(*f) && !deleted.contains(*f))
        .cloned()
        .collect();
    deleted.extend(gone);
    deleted.sort();
    let overlay: Vec<String> = kept
        .iter()
        .filter(|f| changed.contains(*f) || others.contains(*f))
        .cloned()
        .collect();
    let untracked = kept.iter().filter(|f| others.contains(*f)).count();
    let branch = match &opts.branch {
        Some(b) => Some(b.clone()),
        None if opts.from.is_none() => {
            git_opt(runner, &root, &["symbolic-ref", "-q", "--short", "HEAD"])
        }
        None => None,
    };
    Ok(RepoSnapshot {
        origin: git_opt(runner, &root, &["remote", "get-url", "origin"]),
        identity: (
            git_opt(runner, &root, &["config", "user.name"]),
            git_opt(runner, &root, &["config", "user.email"]),
        ),
        root,
        head,
        branch,
        files: kept,
        untracked,
        bytes,
        overlay,
        deleted,
        checkout: opts.from.is_some(),
    })
}

/// Makes `dir` a git repository whose only history is `snap.head` (depth 1), on
/// `snap.branch` (or detached), with the host's origin and identity. Returns its `.git`.
pub fn shallow_git_dir(
    runner: &dyn CommandRunner,
    snap: &RepoSnapshot,
    dir: &Path,
) -> Result<PathBuf, WorkspaceError> {
    git(runner, dir, &["init", "-q"])?;
    // Depth 1 without `git fetch`: list the commit and every object of its tree, and let
    // pack-objects write them as one pack straight into the new repository. No delta
    // search and the fastest compression (source text still shrinks for the trip): ~6x
    // faster than a shallow fetch on loose objects.
    let objects = git(
        runner,
        &snap.root,
        &[
            "rev-list",
            "--objects",
            "--no-object-names",
            "--max-count=1",
            &snap.head,
        ],
    )?;
    // pack-objects runs in the new repository, reading the host's objects through an
    // alternate: git writes a pack as a temp file in the object directory of the repository
    // it runs in, then renames it, which fails across filesystems (the repo on one, the
    // staging dir on another).
    let source = git(
        runner,
        &snap.root,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "objects",
        ],
    )?;
    let alternates = dir.join(".git/objects/info/alternates");
    std::fs::create_dir_all(dir.join(".git/objects/info"))
        .and_then(|()| std::fs::write(&alternates, format!("{}\n", source.trim())))
        .map_err(io("cannot write the staging repository's alternates"))?;
    let pack_base = dir.join(".git/objects/pack/pack");
    runner.run(
        &Cmd::new("git")
            .arg("-C")
            .arg(dir.display().to_string())
            .args(["pack-objects", "-q", "--window=0", "--compression=1"])
            .arg(pack_base.display().to_string())
            .stdin(objects),
    )?;
    // The guest's copy must not point at a host path.
    std::fs::remove_file(&alternates).map_err(io("cannot remove the alternates file"))?;
    let has_parents = !git(
        runner,
        &snap.root,
        &["rev-parse", &format!("{}^@", snap.head)],
    )?
    .trim()
    .is_empty();
    if has_parents {
        std::fs::write(dir.join(".git/shallow"), format!("{}\n", snap.head))
            .map_err(io("cannot write .git/shallow"))?;
    }
    match &snap.branch {
        Some(b) => {
            git(
                runner,
                dir,
                &["update-ref", &format!("refs/heads/{b}"), &snap.head],
            )?;
            git(
                runner,
                dir,
                &["symbolic-ref", "HEAD", &format!("refs/heads/{b}")],
            )?;
        }
        None => {
            git(
                runner,
                dir,
                &["update-ref", "--no-deref", "HEAD", &snap.head],
            )?;
        }
    }
    if let Some(url) = &snap.origin {
        git(runner, dir, &["remote", "add", "origin", url])?;
    }
    if let Some(name) = &snap.identity.0 {
        git(runner, dir, &["config", "user.name", name])?;
    }
    if let Some(email) = &snap.identity.1 {
        git(runner, dir, &["config", "user.email", email])?;
    }
    Ok(dir.join(".git"))
}

/// Where the overlay and the deletion list travel inside the stream (under `.git`, so they
/// can never collide with a work-tree path).
const OVERLAY: &str = ".git/banger-overlay";
const DELETED: &str = ".git/banger-deleted";

/// Writes the tar stream the guest unpacks: `.git` from `dot_git` (its pack holds every
/// file of HEAD), then the overlay files from the host work tree (symlinks as symlinks,
/// modes kept) and the NUL-separated list of deleted files.
pub fn write_tar(
    snap: &RepoSnapshot,
    dot_git: &Path,
    out: &mut dyn Write,
) -> Result<(), WorkspaceError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.append_dir_all(".git", dot_git)
        .map_err(io(format!("cannot pack {}", dot_git.display())))?;
    for f in &snap.overlay {
        let src = snap.root.join(f);
        tar.append_path_with_name(&src, format!("{OVERLAY}/{f}"))
            .map_err(io(format!("cannot pack {}", src.display())))?;
    }
    if !snap.deleted.is_empty() {
        let list: Vec<u8> = snap
            .deleted
            .iter()
            .flat_map(|f| f.bytes().chain([0]))
            .collect();
        let mut header = tar::Header::new_gnu();
        header.set_size(list.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, DELETED, list.as_slice())
            .map_err(io("cannot pack the deletion list"))?;
    }
    tar.finish()
        .map_err(io("cannot finish the workspace stream"))?;
    Ok(())
}

/// `s` quoted for the guest's shell; a value that cannot be quoted (a NUL byte) is an
/// error, never silently replaced.
fn q(s: &str) -> Result<String, WorkspaceError> {
    shlex::try_quote(s)
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| WorkspaceError::Unquotable(s.to_owned()))
}

/// Exit code the guest scripts use when git is missing in the guest.
pub const NO_GIT: i32 = 90;

/// The guest script that unpacks the stream from stdin into `guest_path` (replacing what
/// was there only once everything unpacked): checks out HEAD from the pack (which also
/// writes the index with fresh stat data, so nothing is re-hashed), lays the overlay over
/// it, removes the deleted files, and refreshes the index for the overlay only.
pub fn unpack_script(guest_path: &str) -> Result<String, WorkspaceError> {
    Ok(format!(
        "set -e\n\
         command -v git >/dev/null 2>&1 || {{ echo 'git is not installed in the guest' >&2; exit {NO_GIT}; }}\n\
         dst={dst}\n\
         tmp=\"$dst.banger-incoming\"\n\
         rm -rf \"$tmp\"\n\
         mkdir -p \"$tmp\"\n\
         tar -x --no-same-owner -C \"$tmp\"\n\
         cd \"$tmp\"\n\
         git reset -q --hard HEAD\n\
         if [ -d {OVERLAY} ]; then cp -a {OVERLAY}/. . && rm -rf {OVERLAY}; fi\n\
         if [ -f {DELETED} ]; then xargs -0 -r rm -f -- < {DELETED}; rm -f {DELETED}; fi\n\
         git update-index -q --refresh >/dev/null || true\n\
         cd /\n\
         rm -rf \"$dst\"\n\
         mv \"$tmp\" \"$dst\"\n",
        dst = q(guest_path)?,
    ))
}

/// The guest script that prints a binary-safe patch of everything in `guest_path` that
/// differs from `base` (commits since, staged, unstaged and untracked-not-ignored files),
/// without touching the guest repo's own index.
pub fn export_script(guest_path: &str, base: &str) -> Result<String, WorkspaceError> {
    Ok(format!(
        "set -e\n\
         command -v git >/dev/null 2>&1 || {{ echo 'git is not installed in the guest' >&2; exit {NO_GIT}; }}\n\
         cd {dir}\n\
         idx=$(mktemp)\n\
         trap 'rm -f \"$idx\"' EXIT\n\
         if [ -f .git/index ]; then cp .git/index \"$idx\"; fi\n\
         export GIT_INDEX_FILE=\"$idx\"\n\
         [ -s \"$idx\" ] || git read-tree HEAD\n\
         git add -A\n\
         git diff --cached --binary --full-index {base} --\n",
        dir = q(guest_path)?,
        base = q(base)?,
    ))
}

/// Whether `s` is acceptable as a revision (`--from`, `--base-commit`): printable ASCII
/// without spaces, not an option.
pub fn valid_rev(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_a_value_that_cannot_be_quoted_is_an_error_not_an_empty_string() {
        let err = unpack_script("/root/a\0b").unwrap_err();
        assert!(matches!(err, WorkspaceError::Unquotable(_)), "{err}");
        assert!(export_script("/root/repo", "HEAD\0x").is_err());
        assert!(
            unpack_script("/root/my repo, here")
                .unwrap()
                .contains("dst='/root/my repo, here'")
        );
    }

    use super::*;
    use crate::runner::RealRunner;

    use banger_testkit::git::sh;

    fn repo() -> tempfile::TempDir {
        banger_testkit::git::repo(
            "git config user.name Ada && git config user.email ada@example.com && \
             git remote add origin https://example.com/r.git && \
             mkdir -p src && echo a > src/a && echo b > b && ln -s b link && echo '*.log' > .gitignore && \
             git add -A && git commit -qm one && echo u > untracked && echo i > x.log && echo c >> b",
        )
    }

    #[test]
    fn test_snapshot_ships_tracked_files_and_optionally_untracked_never_ignored() {
        let d = repo();
        let snap = snapshot(&RealRunner, &d.path().join("src"), &ShipOptions::default()).unwrap();
        assert_eq!(snap.files, [".gitignore", "b", "link", "src/a"]);
        assert_eq!(snap.branch.as_deref(), Some("main"));
        assert_eq!(snap.origin.as_deref(), Some("https://example.com/r.git"));
        assert_eq!(snap.identity.0.as_deref(), Some("Ada"));
        assert_eq!(snap.mode(), "tracked");
        let snap = snapshot(
            &RealRunner,
            d.path(),
            &ShipOptions {
                include_untracked: true,
                ..ShipOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            snap.files,
            [".gitignore", "b", "link", "src/a", "untracked"]
        );
        assert_eq!(snap.untracked, 1);
        assert_eq!(snap.mode(), "tracked+untracked");
    }

    #[test]
    fn test_snapshot_refuses_non_repos_bare_empty_submodules_and_bad_names() {
        let plain = tempfile::tempdir().unwrap();
        let err = snapshot(&RealRunner, plain.path(), &ShipOptions::default()).unwrap_err();
        assert!(matches!(err, WorkspaceError::NotARepo(_)), "{err}");
        assert!(err.hint().is_some());
        sh(
            plain.path(),
            "git init -q --bare bare.git && git init -q empty",
        );
        let err = snapshot(
            &RealRunner,
            &plain.path().join("bare.git"),
            &ShipOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, WorkspaceError::Bare(_)), "{err}");
        let err = snapshot(
            &RealRunner,
            &plain.path().join("empty"),
            &ShipOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, WorkspaceError::NoCommits(_)), "{err}");
        let d = repo();
        let opts = ShipOptions {
            branch: Some("-x".into()),
            ..ShipOptions::default()
        };
        assert!(matches!(
            snapshot(&RealRunner, d.path(), &opts).unwrap_err(),
            WorkspaceError::BadName { .. }
        ));
        let opts = ShipOptions {
            branch: Some("feat".into()),
            from: Some("nosuch".into()),
            ..ShipOptions::default()
        };
        assert!(matches!(
            snapshot(&RealRunner, d.path(), &opts).unwrap_err(),
            WorkspaceError::BadRef(_)
        ));
        let sha = git(&RealRunner, d.path(), &["rev-parse", "HEAD"]).unwrap();
        sh(
            d.path(),
            &format!(
                "git update-index --add --cacheinfo 160000,{},vendor/lib",
                sha.trim()
            ),
        );
        let err = snapshot(&RealRunner, d.path(), &ShipOptions::default()).unwrap_err();
        assert!(err.to_string().contains("vendor/lib"), "{err}");
    }

    #[test]
    fn test_shallow_git_dir_and_tar_round_trip_through_the_guest_scripts() {
        let d = repo();
        sh(
            d.path(),
            "echo two > b2 && echo g > gone && git add b2 gone && git commit -qm two && rm gone",
        );
        let snap = snapshot(&RealRunner, d.path(), &ShipOptions::default()).unwrap();
        // Only what differs from HEAD travels as files; the rest comes from the pack.
        assert_eq!(snap.overlay, ["b"]);
        assert_eq!(snap.deleted, ["gone"]);
        let staging = tempfile::tempdir().unwrap();
        let dot_git = shallow_git_dir(&RealRunner, &snap, staging.path()).unwrap();
        let mut stream = Vec::new();
        write_tar(&snap, &dot_git, &mut stream).unwrap();
        // Play the guest locally: unpack, then check HEAD, shallowness and the work tree.
        let guest = tempfile::tempdir().unwrap();
        let dst = guest.path().join("repo");
        let out = RealRunner
            .run(
                &Cmd::new("sh")
                    .args(["-c", &unpack_script(&dst.display().to_string()).unwrap()])
                    .stdin(stream),
            )
            .unwrap();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let g = |args: &[&str]| git(&RealRunner, &dst, args).unwrap().trim().to_owned();
        assert_eq!(g(&["rev-parse", "HEAD"]), snap.head);
        assert_eq!(g(&["rev-parse", "--is-shallow-repository"]), "true");
        assert_eq!(g(&["rev-list", "--count", "HEAD"]), "1");
        git(&RealRunner, &dst, &["fsck", "--strict"]).expect("a complete, consistent repository");
        assert_eq!(g(&["symbolic-ref", "--short", "HEAD"]), "main");
        assert_eq!(
            g(&["remote", "get-url", "origin"]),
            "https://example.com/r.git"
        );
        assert_eq!(g(&["config", "user.email"]), "ada@example.com");
        // The uncommitted host change shipped and shows as modified; nothing else differs.
        assert_eq!(g(&["status", "--porcelain"]), "M b\n D gone");
        assert!(!dst.join("gone").exists() && dst.join("b2").exists());
        assert!(
            std::fs::symlink_metadata(dst.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!dst.join("untracked").exists() && !dst.join("x.log").exists());
        // Export: a commit and an uncommitted binary file, applied to a clean host checkout.
        sh(
            &dst,
            "echo changed > src/a && git -c user.name=g -c user.email=g@x commit -qam guest && \
             printf '\\000\\001\\002' > blob.bin",
        );
        let patch = RealRunner
            .run(&Cmd::new("sh").args([
                "-c",
                &export_script(&dst.display().to_string(), &snap.head).unwrap(),
            ]))
            .unwrap()
            .stdout;
        assert_eq!(
            g(&["status", "--porcelain"]),
            "?? blob.bin",
            "export left the index alone"
        );
        let clean = tempfile::tempdir().unwrap();
        sh(
            clean.path(),
            &format!(
                "git clone -q {} c && cd c && git checkout -q {}",
                d.path().display(),
                snap.head
            ),
        );
        let c = clean.path().join("c");
        RealRunner
            .run(
                &Cmd::new("git")
                    .arg("-C")
                    .arg(c.display().to_string())
                    .arg("apply")
                    .stdin(patch),
            )
            .unwrap();
        assert_eq!(std::fs::read(c.join("blob.bin")).unwrap(), b"\0\x01\x02");
        assert_eq!(
            std::fs::read_to_string(c.join("src/a")).unwrap(),
            "changed\n"
        );
        assert_eq!(std::fs::read_to_string(c.join("b")).unwrap(), "b\nc\n");
        assert!(!c.join("gone").exists(), "the deletion came back too");
    }

    #[test]
    fn test_branch_from_ref_checks_out_that_commit() {
        let d = repo();
        let first = git(&RealRunner, d.path(), &["rev-parse", "HEAD"]).unwrap();
        sh(d.path(), "git commit -qam two");
        let opts = ShipOptions {
            branch: Some("feature/x".into()),
            from: Some("HEAD~1".into()),
            include_untracked: false,
        };
        let snap = snapshot(&RealRunner, d.path(), &opts).unwrap();
        assert_eq!(snap.head, first.trim());
        assert!(snap.overlay.is_empty() && snap.deleted.is_empty() && snap.checkout);
        assert_eq!(snap.files, [".gitignore", "b", "link", "src/a"]);
        let staging = tempfile::tempdir().unwrap();
        let dot_git = shallow_git_dir(&RealRunner, &snap, staging.path()).unwrap();
        let mut stream = Vec::new();
        write_tar(&snap, &dot_git, &mut stream).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let dst = guest.path().join("r");
        RealRunner
            .run(
                &Cmd::new("sh")
                    .args(["-c", &unpack_script(&dst.display().to_string()).unwrap()])
                    .stdin(stream),
            )
            .unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("b")).unwrap(), "b\n");
        let g = |args: &[&str]| git(&RealRunner, &dst, args).unwrap().trim().to_owned();
        assert_eq!(g(&["symbolic-ref", "--short", "HEAD"]), "feature/x");
        assert_eq!(g(&["status", "--porcelain"]), "");
    }

    #[test]
    fn test_branch_names() {
        for ok in ["main", "feature/x", "v1.2", "a-b_c"] {
            assert!(valid_branch(ok), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a~1", "x.lock", "a/", "/a", "a:b", "a\nb", "@{u}x",
        ] {
            assert!(!valid_branch(bad), "{bad:?}");
        }
    }
}
