//! Pulling from OCI / Docker v2 registries: references, credentials, manifests (an image
//! index resolves to its linux/amd64 manifest), the image config, and layer blobs streamed
//! into a file while their sha256 is checked.
//!
//! Plain HTTP is used only for loopback registries (`localhost`, `127.0.0.1`, `[::1]`) or
//! when the caller says `insecure`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt as _;

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("bad image reference {reference:?}: {why}")]
    BadReference {
        /// What was given.
        reference: String,
        /// Why.
        why: String,
    },
    /// The registry answered with an error (not found, unauthorized, ...).
    #[error("{what} from {registry}")]
    Registry {
        /// What was asked for.
        what: String,
        /// Which registry.
        registry: String,
        /// Cause.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The image is not something banger can boot.
    #[error("{0}")]
    Unsupported(String),
    /// A blob did not match its digest or size.
    #[error("blob {digest}: {why}")]
    Corrupt {
        /// The expected digest.
        digest: String,
        /// What was wrong.
        why: String,
    },
    /// Writing a downloaded blob failed.
    #[error("blob {digest}: cannot write {path}")]
    Io {
        /// The blob.
        digest: String,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A parsed image reference plus how to reach its registry.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// The normalized reference (`docker.io/library/debian:bookworm`).
    pub reference: Reference,
    /// Whether plain HTTP is used.
    pub plain_http: bool,
}

/// Parses `text` (`debian:bookworm`, `127.0.0.1:5000/x/y@sha256:...`).
pub fn parse_ref(text: &str, insecure: bool) -> Result<ImageRef, RegistryError> {
    let reference: Reference = text.parse().map_err(|e| RegistryError::BadReference {
        reference: text.to_owned(),
        why: format!("{e}"),
    })?;
    let plain_http = insecure || is_loopback(reference.registry());
    Ok(ImageRef {
        reference,
        plain_http,
    })
}

/// Whether `registry` (host\[:port\]) is a loopback address.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.split(':').next().unwrap_or(registry));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The default image name for a reference: last path component plus tag, or the first 12
/// hex digits of the digest (`docker.io/library/debian:bookworm` → `debian-bookworm`).
pub fn default_name(reference: &Reference) -> String {
    let base = reference
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or("image")
        .to_owned();
    let suffix = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_owned(),
        (None, Some(d)) => d.trim_start_matches("sha256:").chars().take(12).collect(),
        (None, None) => "latest".to_owned(),
    };
    let name: String = format!("{base}-{suffix}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name
}

/// Credentials for `registry` from a Docker `config.json` text (`auths.<registry>.auth`,
/// base64 `user:password`). Docker Hub is also looked up under its legacy key.
pub fn docker_auth(config_json: &str, registry: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let mut keys = vec![
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" || registry == "index.docker.io" {
        keys.push("https://index.docker.io/v1/".to_owned());
        keys.push("index.docker.io".to_owned());
    }
    let entry = keys.iter().find_map(|k| auths.get(k))?;
    let raw = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// What banger needs from an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env` (`K=V`).
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[serde(default)]
    pub workdir: String,
    /// `User`.
    #[serde(default)]
    pub user: String,
}

/// One layer to fetch and apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Blob digest (`sha256:...`), as fetched.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Media type (tells the compression).
    pub media_type: String,
    /// sha256 of the uncompressed tar (`sha256:...`), from the config's `rootfs.diff_ids`.
    pub diff_id: String,
}

/// A resolved image: its manifest digest, layers oldest first and run config.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Layers, oldest first.
    pub layers: Vec<Layer>,
    /// Entrypoint, env, workdir, ...
    pub config: RunConfig,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type says, or `None` for a type that is not a layer.
pub fn compression(media_type: &str) -> Option<Compression> {
    let m = media_type.to_ascii_lowercase();
    if !(m.contains("layer") || m.contains("rootfs.diff")) || !m.contains("tar") {
        return None;
    }
    Some(if m.ends_with("gzip") {
        Compression::Gzip
    } else if m.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// A connection to one image's registry.
pub struct Puller {
    client: Client,
    auth: RegistryAuth,
    image: ImageRef,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("image", &self.image.reference.whole())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ConfigInner>,
    rootfs: RootFs,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigInner {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(serde::Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses an image config JSON into the run config and diff ids, refusing non-linux/amd64.
pub fn parse_config(raw: &[u8]) -> Result<(RunConfig, Vec<String>), RegistryError> {
    let cfg: ConfigFile = serde_json::from_slice(raw)
        .map_err(|e| RegistryError::Unsupported(format!("the image config is not valid: {e}")))?;
    if (!cfg.architecture.is_empty() && cfg.architecture != "amd64")
        || (!cfg.os.is_empty() && cfg.os != "linux")
    {
        return Err(RegistryError::Unsupported(format!(
            "the image is {}/{}; banger boots linux/amd64 images",
            cfg.os, cfg.architecture
        )));
    }
    let inner = cfg.config.unwrap_or(ConfigInner {
        entrypoint: None,
        cmd: None,
        env: None,
        working_dir: None,
        user: None,
    });
    Ok((
        RunConfig {
            entrypoint: inner.entrypoint.unwrap_or_default(),
            cmd: inner.cmd.unwrap_or_default(),
            env: inner.env.unwrap_or_default(),
            workdir: inner.working_dir.unwrap_or_default(),
            user: inner.user.unwrap_or_default(),
        },
        cfg.rootfs.diff_ids,
    ))
}

impl Puller {
    /// A client for `image`, with credentials from `docker_config` when it has some.
    pub fn new(image: ImageRef, docker_config: Option<&Path>) -> Self {
        let registry = image.reference.resolve_registry().to_owned();
        let protocol = if image.plain_http {
            ClientProtocol::HttpsExcept(vec![
                image.reference.registry().to_owned(),
                registry.clone(),
            ])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..ClientConfig::default()
        };
        let auth = docker_config
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| {
                docker_auth(&text, image.reference.registry())
                    .or_else(|| docker_auth(&text, &registry))
            })
            .map_or(RegistryAuth::Anonymous, |(u, p)| RegistryAuth::Basic(u, p));
        Puller {
            client: Client::new(config),
            auth,
            image,
        }
    }

    fn registry_err(
        &self,
        what: &str,
    ) -> impl FnOnce(oci_client::errors::OciDistributionError) -> RegistryError + '_ {
        let what = what.to_owned();
        move |source| RegistryError::Registry {
            what,
            registry: self.image.reference.registry().to_owned(),
            source,
        }
    }

    /// Fetches the platform manifest and config.
    pub async fn resolve(&self) -> Result<Resolved, RegistryError> {
        let r = &self.image.reference;
        let (manifest, manifest_digest) = self
            .client
            .pull_image_manifest(r, &self.auth)
            .await
            .map_err(self.registry_err(&format!("manifest of {}", r.whole())))?;
        let mut raw = Vec::new();
        self.client
            .pull_blob(r, &manifest.config, &mut raw)
            .await
            .map_err(self.registry_err("image config"))?;
        let (config, diff_ids) = parse_config(&raw)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(RegistryError::Unsupported(format!(
                "the image has {} layers but its config lists {} diff ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            if compression(&desc.media_type).is_none() {
                return Err(RegistryError::Unsupported(format!(
                    "layer {} has media type {:?}, which is not a tar layer",
                    desc.digest, desc.media_type
                )));
            }
            layers.push(Layer {
                digest: desc.digest.clone(),
                size: u64::try_from(desc.size).unwrap_or(0),
                media_type: desc.media_type.clone(),
                diff_id,
            });
        }
        Ok(Resolved {
            manifest_digest,
            layers,
            config,
        })
    }

    /// Streams `layer`'s blob into `dest` (created), checking size and sha256; `on_bytes`
    /// is called with each chunk's length. On error `dest` is removed.
    pub async fn fetch_blob(
        &self,
        layer: &Layer,
        dest: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let result = self.fetch_blob_inner(layer, dest, on_bytes).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    async fn fetch_blob_inner(
        &self,
        layer: &Layer,
        dest: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            digest: layer.digest.clone(),
            path: dest.to_owned(),
            source,
        };
        let corrupt = |why: String| RegistryError::Corrupt {
            digest: layer.digest.clone(),
            why,
        };
        let desc = OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.image.reference, &desc)
            .await
            .map_err(self.registry_err(&format!("layer {}", layer.digest)))?
            .stream;
        // oci-client checks the sha256 while streaming (a mismatch fails the last chunk);
        // the size is checked here, and the flatten step hashes the uncompressed stream too.
        let mut file = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(dest).await.map_err(io)?,
        );
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| corrupt(format!("download failed or digest mismatch: {e}")))?;
            got += chunk.len() as u64;
            if got > layer.size {
                return Err(corrupt(format!(
                    "more than the {} bytes the manifest says",
                    layer.size
                )));
            }
            file.write_all(&chunk).await.map_err(io)?;
            on_bytes(chunk.len() as u64);
        }
        file.flush().await.map_err(io)?;
        if got != layer.size {
            return Err(corrupt(format!("truncated: {got} of {} bytes", layer.size)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_names_derive_from_the_reference() {
        let name = |s: &str| default_name(&parse_ref(s, false).unwrap().reference);
        assert_eq!(name("docker.io/library/debian:bookworm"), "debian-bookworm");
        assert_eq!(name("debian"), "debian-latest");
        assert_eq!(name("127.0.0.1:5000/team/tools:V1.2"), "tools-v1.2");
        let d = format!("ghcr.io/x/y@sha256:{}", "ab".repeat(32));
        assert_eq!(name(&d), "y-abababababab");
    }

    #[test]
    fn test_plain_http_only_for_loopback_or_insecure() {
        assert!(parse_ref("127.0.0.1:5000/a:b", false).unwrap().plain_http);
        assert!(parse_ref("localhost:5000/a:b", false).unwrap().plain_http);
        assert!(is_loopback("[::1]:5000"));
        assert!(parse_ref("team/Upper:x", false).is_err());
        assert!(!parse_ref("ghcr.io/a:b", false).unwrap().plain_http);
        assert!(!parse_ref("10.0.0.1:5000/a:b", false).unwrap().plain_http);
        assert!(parse_ref("10.0.0.1:5000/a:b", true).unwrap().plain_http);
        assert!(parse_ref("Bad Ref!", false).is_err());
    }

    #[test]
    fn test_docker_config_credentials() {
        let auth = base64::engine::general_purpose::STANDARD.encode("me:s3cr:et");
        let cfg = format!(
            r#"{{"auths":{{"reg.example:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#
        );
        assert_eq!(
            docker_auth(&cfg, "reg.example:5000"),
            Some(("me".into(), "s3cr:et".into()))
        );
        assert!(docker_auth(&cfg, "docker.io").is_some());
        assert_eq!(docker_auth(&cfg, "other.example"), None);
        assert_eq!(docker_auth("not json", "x"), None);
    }

    #[test]
    fn test_config_parsing_and_platform_check() {
        let raw = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"],"Env":["A=1"],"WorkingDir":"/srv"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let (cfg, ids) = parse_config(raw).unwrap();
        assert_eq!(cfg.entrypoint, ["/bin/app"]);
        assert_eq!(cfg.env, ["A=1"]);
        assert_eq!(cfg.workdir, "/srv");
        assert_eq!(ids, ["sha256:aa"]);
        let arm = br#"{"architecture":"arm64","os":"linux","rootfs":{"diff_ids":[]}}"#;
        assert!(
            parse_config(arm)
                .unwrap_err()
                .to_string()
                .contains("linux/arm64")
        );
    }

    #[test]
    fn test_layer_media_types() {
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            compression("application/vnd.oci.image.config.v1+json"),
            None
        );
    }
}
