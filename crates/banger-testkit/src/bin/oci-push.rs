//! `oci-push REGISTRY REPO:TAG DIR...`: pushes each directory as one plain-tar layer (owners,
//! modes, links and xattrs kept; oldest first) plus a linux/amd64 config to a registry over
//! plain HTTP. For tests and benchmarks of `banger image pull`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;

use banger_testkit::registry::{PushedLayer, TestRegistry, tar_dir};

fn run(args: &[String]) -> Result<String, String> {
    let [registry, target, dirs @ ..] = args else {
        return Err("usage: oci-push REGISTRY REPO:TAG DIR...".into());
    };
    if dirs.is_empty() {
        return Err("usage: oci-push REGISTRY REPO:TAG DIR...".into());
    }
    let (repo, tag) = target.rsplit_once(':').ok_or("REPO:TAG needs a tag")?;
    let reg = TestRegistry::connect(registry);
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut layers: Vec<PushedLayer> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let tar = scratch.path().join(format!("layer{i}.tar"));
        tar_dir(Path::new(dir), &tar).map_err(|e| format!("{dir}: {e}"))?;
        layers.push(reg.push_layer_file(repo, &tar)?);
        let _ = std::fs::remove_file(&tar);
    }
    reg.push_image(
        repo,
        tag,
        "amd64",
        &layers,
        &serde_json::json!({"Cmd": ["/bin/bash"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}),
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oci-push: {e}");
            ExitCode::FAILURE
        }
    }
}
