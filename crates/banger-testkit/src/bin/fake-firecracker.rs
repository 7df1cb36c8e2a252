//! `fake-firecracker`: accepts Firecracker's command line, serves a fake API (see
//! `banger_testkit::fake_firecracker`) and journals requests next to the socket.
//!
//! The reported version is `1.16.1`, or `X.Y.Z` when the binary is invoked through a name
//! ending in `-vX.Y.Z` (tests symlink it to exercise version checks).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use banger_testkit::fake_firecracker::journal_path;
use banger_testkit::{ApiSpec, FakeFirecracker};

/// Flags firecracker accepts with a value.
const VALUE_FLAGS: &[&str] = &[
    "--api-sock",
    "--id",
    "--config-file",
    "--log-path",
    "--level",
    "--module",
    "--metrics-path",
    "--seccomp-filter",
    "--start-time-us",
    "--start-time-cpu-us",
    "--parent-cpu-time-us",
    "--http-api-max-payload-size",
    "--mmds-size-limit",
    "--metadata",
    "--describe-snapshot",
];
/// Flags firecracker accepts without a value.
const BOOL_FLAGS: &[&str] = &[
    "--show-level",
    "--show-log-origin",
    "--no-api",
    "--no-seccomp",
    "--boot-timer",
    "--enable-pci",
];

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let version = argv0
        .rsplit_once("-v")
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.split('.').all(|p| p.parse::<u32>().is_ok()))
        .unwrap_or_else(|| "1.16.1".to_owned());
    let mut sock: Option<PathBuf> = None;
    let mut id = "anonymous-instance".to_owned();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--version" => {
                println!(
                    "Firecracker v{version}\n\nSupported snapshot data format versions: v8.0.0"
                );
                return ExitCode::SUCCESS;
            }
            "--api-sock" => sock = args.next().map(PathBuf::from),
            "--id" => id = args.next().unwrap_or_default(),
            f if VALUE_FLAGS.contains(&f) => {
                let _ = args.next();
            }
            f if BOOL_FLAGS.contains(&f) => {}
            other => {
                eprintln!(
                    "Arguments parsing error: Found argument '{other}' which wasn't expected, or isn't valid in this context."
                );
                return ExitCode::from(153);
            }
        }
    }
    let sock = sock.unwrap_or_else(|| PathBuf::from("/run/firecracker.socket"));
    // Run by `fake-jailer`: paths are the jail's.
    let root = std::env::var_os("FAKE_FIRECRACKER_ROOT").map(PathBuf::from);
    let sock = match &root {
        None => sock,
        Some(_) => match banger_testkit::fake_firecracker::jailed_path(&sock.to_string_lossy()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fake-firecracker: --api-sock {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let spec = match ApiSpec::firecracker() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-firecracker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fake =
        Arc::new(FakeFirecracker::new(spec, &id, &version, Some(journal_path(&sock))).jailed(root));
    eprintln!("Running Firecracker v{version}");
    if let Err(e) = fake.serve(&sock) {
        eprintln!(
            "Failed to open the API socket at: {}. Check that it is not already used: {e}",
            sock.display()
        );
        return ExitCode::FAILURE;
    }
    let _ = std::fs::remove_file(&sock);
    ExitCode::SUCCESS
}
