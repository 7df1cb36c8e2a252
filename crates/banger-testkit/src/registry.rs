//! A real OCI registry for tests (Debian's `docker-registry`, distribution 2.8, on
//! 127.0.0.1 with a temp storage dir) and a tiny pusher: blobs, manifests, indexes, and
//! layer tars built entry by entry (whiteouts, hard links, devices and hostile paths too).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Where Debian's package puts the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A registry: one this process started (killed on drop) or one it only talks to.
#[derive(Debug)]
pub struct TestRegistry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: Option<tempfile::TempDir>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// sha256 of bytes as `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// sha256 of a file as `sha256:<hex>`.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("sha256:{:x}", h.finalize()))
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request body: bytes in memory or a file streamed from disk.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Nothing.
    Empty,
    /// In memory.
    Bytes(&'a [u8]),
    /// A file.
    File(&'a Path),
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Body<'_>,
) -> Result<Response, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let len = match body {
        Body::Empty => 0,
        Body::Bytes(b) => b.len() as u64,
        Body::File(p) => std::fs::metadata(p).map_err(|e| e.to_string())?.len(),
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {len}\r\n"
    );
    if let Some(ct) = content_type {
        head.push_str("Content-Type: ");
        head.push_str(ct);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    match body {
        Body::Empty => {}
        Body::Bytes(b) => s.write_all(b).map_err(|e| e.to_string())?,
        Body::File(p) => {
            let mut f = std::fs::File::open(p).map_err(|e| e.to_string())?;
            std::io::copy(&mut f, &mut s).map_err(|e| e.to_string())?;
        }
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(&raw).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err("partial response".into()),
    };
    Ok(Response {
        status: resp.code.unwrap_or(0),
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: raw[n..].to_vec(),
    })
}

/// OCI media types.
pub mod media {
    /// Image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Plain tar layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// gzip tar layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// A layer as pushed: its blob and the digest of the uncompressed tar.
#[derive(Debug, Clone)]
pub struct PushedLayer {
    /// Media type.
    pub media_type: String,
    /// Blob digest.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Uncompressed tar digest.
    pub diff_id: String,
}

impl TestRegistry {
    /// A registry someone else runs at `addr`.
    pub fn connect(addr: &str) -> Self {
        TestRegistry {
            child: None,
            addr: addr.to_owned(),
            dir: None,
        }
    }

    /// Its storage directory (when this process started it).
    pub fn storage(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("storage"))
    }

    /// Starts a registry on a free loopback port; `None` when the binary is missing.
    pub fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let reg = Self::spawn(None, port, None)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if request(&reg.addr, "GET", "/v2/", None, Body::Empty).is_ok_and(|r| r.status == 200) {
                return Some(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts a second registry inside network namespace `netns` on `port`, serving the
    /// same storage as `self` (push from the host, pull inside the netns). Waits until it
    /// listens.
    pub fn mirror_in_netns(&self, netns: &str, port: u16) -> Option<Self> {
        let reg = Self::spawn(Some(netns), port, self.storage())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = Command::new("ip")
                .args(["netns", "exec", netns, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return Some(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn spawn(netns: Option<&str>, port: u16, storage: Option<std::path::PathBuf>) -> Option<Self> {
        if !Path::new(REGISTRY_BIN).exists() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let storage = storage.unwrap_or_else(|| dir.path().join("storage"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .ok()?;
        let log = std::fs::File::create(dir.path().join("registry.log")).ok()?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, REGISTRY_BIN]);
                c
            }
            None => Command::new(REGISTRY_BIN),
        };
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn()
            .ok()?;
        Some(TestRegistry {
            child: Some(child),
            addr,
            dir: Some(dir),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Uploads a blob (monolithic); returns its digest.
    pub fn push_blob(&self, repo: &str, body: Body<'_>) -> Result<String, String> {
        let digest = match body {
            Body::Bytes(b) => digest(b),
            Body::File(p) => file_digest(p).map_err(|e| e.to_string())?,
            Body::Empty => digest(&[]),
        };
        let start = request(
            &self.addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            None,
            Body::Empty,
        )?;
        if start.status != 202 {
            return Err(format!("upload start: {}", start.status));
        }
        let loc = start.header("Location").ok_or("no Location")?.to_owned();
        let loc = loc
            .strip_prefix(&format!("http://{}", self.addr))
            .unwrap_or(&loc)
            .to_owned();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = request(
            &self.addr,
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            Some("application/octet-stream"),
            body,
        )?;
        if put.status != 201 {
            return Err(format!(
                "upload put: {} {}",
                put.status,
                String::from_utf8_lossy(&put.body)
            ));
        }
        Ok(digest)
    }

    /// Puts a manifest or index under `reference` (a tag); returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        json: &serde_json::Value,
    ) -> Result<String, String> {
        let body = serde_json::to_vec(json).map_err(|e| e.to_string())?;
        let r = request(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(media_type),
            Body::Bytes(&body),
        )?;
        if r.status != 201 {
            return Err(format!(
                "manifest put: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        Ok(digest(&body))
    }

    /// Pushes a layer given as an uncompressed tar (gzip-compressed when `compress`).
    pub fn push_layer(
        &self,
        repo: &str,
        tar: &[u8],
        compress: bool,
    ) -> Result<PushedLayer, String> {
        let diff_id = digest(tar);
        let (media_type, blob) = if compress {
            (media::LAYER_GZIP, gzip(tar))
        } else {
            (media::LAYER_TAR, tar.to_vec())
        };
        let digest = self.push_blob(repo, Body::Bytes(&blob))?;
        Ok(PushedLayer {
            media_type: media_type.into(),
            digest,
            size: blob.len() as u64,
            diff_id,
        })
    }

    /// Pushes a plain tar layer from a file.
    pub fn push_layer_file(&self, repo: &str, tar: &Path) -> Result<PushedLayer, String> {
        let digest = self.push_blob(repo, Body::File(tar))?;
        Ok(PushedLayer {
            media_type: media::LAYER_TAR.into(),
            diff_id: digest.clone(),
            digest,
            size: std::fs::metadata(tar).map_err(|e| e.to_string())?.len(),
        })
    }

    /// Pushes config + manifest for `layers` under `repo:tag` (architecture `arch`); the
    /// config's diff ids come from `diff_ids` when given (to test mismatches).
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        arch: &str,
        layers: &[PushedLayer],
        run: &serde_json::Value,
    ) -> Result<String, String> {
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let config_bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        let config_digest = self.push_blob(repo, Body::Bytes(&config_bytes))?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "config": {"mediaType": media::CONFIG, "digest": config_digest, "size": config_bytes.len()},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        self.push_manifest(repo, tag, media::MANIFEST, &manifest)
    }

    /// Pushes an index pointing at manifests (digest, size, arch) under `repo:tag`.
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        manifests: &[(String, u64, &str)],
    ) -> Result<String, String> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::INDEX,
            "manifests": manifests.iter().map(|(d, size, arch)| serde_json::json!({
                "mediaType": media::MANIFEST, "digest": d, "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            })).collect::<Vec<_>>(),
        });
        self.push_manifest(repo, tag, media::INDEX, &index)
    }

    /// The size of a manifest stored under `repo@digest`.
    pub fn manifest_size(&self, repo: &str, digest: &str) -> Result<u64, String> {
        let r = request(
            &self.addr,
            "GET",
            &format!("/v2/{repo}/manifests/{digest}"),
            None,
            Body::Empty,
        )?;
        Ok(r.body.len() as u64)
    }
}

/// One entry of a test layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with a mode.
    Dir(String, u32),
    /// A file: path, content, mode, uid.
    File(String, Vec<u8>, u32, u64),
    /// A symlink: path, target.
    Symlink(String, String),
    /// A hard link: path, target.
    Hard(String, String),
    /// A character device.
    CharDev(String),
}

/// A tar with `entries`, written raw (so hostile names survive).
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (p, &[])
            }
            Entry::File(p, body, mode, uid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                (p, body)
            }
            Entry::Symlink(p, t) | Entry::Hard(p, t) => {
                h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                let _ = h.set_link_name_literal(t);
                (p, &[])
            }
            Entry::CharDev(p) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                let _ = h.set_device_major(1);
                let _ = h.set_device_minor(3);
                (p, &[])
            }
        };
        // Raw name bytes: `set_path` would refuse `..` and absolute paths.
        let name = path.as_bytes();
        if let Some(gnu) = h.as_gnu_mut() {
            let n = name.len().min(gnu.name.len());
            gnu.name[..n].copy_from_slice(&name[..n]);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        let _ = b.append(&h, data);
    }
    b.into_inner().unwrap_or_default()
}

/// A plain tar of a directory tree (owners, modes, links kept), streamed into `out`.
pub fn tar_dir(dir: &Path, out: &Path) -> std::io::Result<()> {
    let status = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("tar failed: {status}")))
    }
}
