//! Image and kernel catalogs: the entries built into banger plus `[[image_catalog]]` and
//! `[[kernel_catalog]]` from config.toml (a config entry replaces a built-in one of the same
//! name). A catalog entry points at a bundle: a tar+zstd file fetched over HTTP(S) or from a
//! local path, checked against its sha256.

use serde::{Deserialize, Serialize};

/// An image bundle: `rootfs.ext4` + `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCatalogEntry {
    /// Image name (`vm create --image NAME` pulls it when missing).
    pub name: String,
    /// Distro, informational (`debian`, `alpine`, ...).
    #[serde(default)]
    pub distro: String,
    /// Architecture; only `amd64` entries are offered.
    #[serde(default = "amd64")]
    pub arch: String,
    /// Kernel to boot it with (a kernel catalog name or a stored kernel).
    pub kernel_ref: String,
    /// Where the bundle is: `https://`, `http://`, `file://` or an absolute path.
    pub url: String,
    /// sha256 of the bundle file, hex.
    pub sha256: String,
    /// Size of the bundle file in bytes (0: unknown).
    #[serde(default)]
    pub size: u64,
}

/// A kernel bundle: `vmlinux`, optional `initrd.img` and `modules/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCatalogEntry {
    /// Kernel name.
    pub name: String,
    /// Kernel version, informational.
    #[serde(default)]
    pub version: String,
    /// Architecture; only `amd64` entries are offered.
    #[serde(default = "amd64")]
    pub arch: String,
    /// Where the bundle is.
    pub url: String,
    /// sha256 of the bundle file, hex.
    pub sha256: String,
    /// Size in bytes (0: unknown).
    #[serde(default)]
    pub size: u64,
}

fn amd64() -> String {
    "amd64".to_owned()
}

#[derive(Debug, Default, Deserialize)]
struct Builtin {
    #[serde(default)]
    images: Vec<ImageCatalogEntry>,
    #[serde(default)]
    kernels: Vec<KernelCatalogEntry>,
}

/// The catalog compiled into banger. Empty in this build: banger publishes no bundles yet;
/// teams list theirs in config.toml (`banger image export` makes one from any image).
const BUILTIN: &str = include_str!("../catalog.json");

fn builtin() -> Builtin {
    serde_json::from_str(BUILTIN).unwrap_or_default()
}

fn merge<T: Clone>(mut base: Vec<T>, extra: &[T], name: impl Fn(&T) -> &str) -> Vec<T> {
    for e in extra {
        base.retain(|b| name(b) != name(e));
        base.push(e.clone());
    }
    base
}

/// Built-in image entries plus `extra` (config), amd64 only.
pub fn images(extra: &[ImageCatalogEntry]) -> Vec<ImageCatalogEntry> {
    let mut all = merge(builtin().images, extra, |e| &e.name);
    all.retain(|e| e.arch == "amd64");
    all
}

/// Built-in kernel entries plus `extra` (config), amd64 only.
pub fn kernels(extra: &[KernelCatalogEntry]) -> Vec<KernelCatalogEntry> {
    let mut all = merge(builtin().kernels, extra, |e| &e.name);
    all.retain(|e| e.arch == "amd64");
    all
}

/// Checks an entry's fields (called at config load).
pub(crate) fn check(name: &str, url: &str, sha256: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(format!("name {name:?}: use a-z, 0-9, '-', '_', '.'"));
    }
    if !(url.starts_with("https://")
        || url.starts_with("http://")
        || url.starts_with("file:///")
        || url.starts_with('/'))
    {
        return Err(format!(
            "url {url:?}: use https://, http://, file:/// or an absolute path"
        ));
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256 {sha256:?}: 64 hex digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_builtin_catalog_parses_and_config_entries_replace_by_name() {
        assert!(serde_json::from_str::<Builtin>(BUILTIN).is_ok());
        let e = ImageCatalogEntry {
            name: "team-dev".into(),
            distro: "debian".into(),
            arch: "amd64".into(),
            kernel_ref: "debian-cloud".into(),
            url: "https://example.com/a.tar.zst".into(),
            sha256: "a".repeat(64),
            size: 1,
        };
        let arm = ImageCatalogEntry {
            name: "arm".into(),
            arch: "arm64".into(),
            ..e.clone()
        };
        let mut newer = e.clone();
        newer.size = 2;
        let all = images(&[e.clone(), arm, newer]);
        assert_eq!(all.iter().filter(|i| i.name == "team-dev").count(), 1);
        assert_eq!(all.iter().find(|i| i.name == "team-dev").unwrap().size, 2);
        assert!(all.iter().all(|i| i.arch == "amd64"));
        assert!(check("ok-1", "/srv/x.tar.zst", &"0".repeat(64)).is_ok());
        assert!(check("Bad", "/x", &"0".repeat(64)).is_err());
        assert!(check("ok", "ftp://x", &"0".repeat(64)).is_err());
        assert!(check("ok", "/x", "abc").is_err());
    }
}
