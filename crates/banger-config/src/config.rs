//! `config.toml`: every key optional, unknown keys rejected.
//!
//! A parse error names the file, the line and the key, e.g.
//! `/home/u/.config/banger/config.toml:3: key `vm_defaults.vcpus`: unknown field ...`.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Errors loading `config.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config")]
    Read(#[source] std::io::Error),
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{path}:{line}: {detail}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// Which key and what is wrong with it.
        detail: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: key `{key}`: {detail}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debug and above.
    Debug,
    /// Info and above (default).
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The tracing filter directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            other => Err(format!(
                "unknown log level {other:?} (expected trace, debug, info, warn or error)"
            )),
        }
    }
}

/// Which VMM runs guests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    /// Firecracker when its binary is present and KVM can run a guest, else QEMU.
    #[default]
    Auto,
    /// Always Firecracker.
    Firecracker,
    /// Always QEMU (`-M microvm`; KVM when usable, else TCG).
    Qemu,
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmKind::Auto => "auto",
            VmmKind::Firecracker => "firecracker",
            VmmKind::Qemu => "qemu",
        })
    }
}

/// `[vm_defaults]`: sizing used when a flag is not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmDefaults {
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Work disk size, e.g. `"8G"`.
    pub disk_size: Option<String>,
}

/// `[mcp]`: what `banger mcp` lets a coding agent do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Most sandboxes created over MCP that may exist at once.
    pub max_sandboxes: u32,
    /// Most vCPUs per sandbox.
    pub max_vcpu: u32,
    /// Most memory per sandbox, MiB.
    pub max_memory_mib: u64,
    /// Images a sandbox may use (empty: any).
    pub allowed_images: Vec<String>,
    /// Whether a sandbox may have NAT (reach the outside world).
    pub allow_nat: bool,
    /// Default timeout of `sandbox_exec`, seconds.
    pub exec_timeout_secs: u64,
    /// The one host directory (a git work tree) a sandbox may get as its workspace.
    pub workspace: Option<PathBuf>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            max_sandboxes: 4,
            max_vcpu: 4,
            max_memory_mib: 8192,
            allowed_images: Vec::new(),
            allow_nat: false,
            exec_timeout_secs: 120,
            workspace: None,
        }
    }
}

/// The host heuristic for vCPUs when neither a flag nor config sets them: a quarter of the
/// host's CPUs, at most 4; `None` below 4 host CPUs (the builtin 1 applies).
pub fn auto_vcpu(host_cpus: u32) -> Option<u32> {
    (host_cpus >= 4).then(|| (host_cpus / 4).min(4))
}

/// The host heuristic for memory: an eighth of the host's RAM, at most 8 GiB; `None` when
/// that is under 512 MiB (the builtin 512 applies).
pub fn auto_memory_mib(host_mib: u64) -> Option<u64> {
    (host_mib / 8 >= 512).then(|| (host_mib / 8).min(8192))
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Daemon log level; `BANGER_LOG_LEVEL` overrides it.
    pub log_level: LogLevel,
    /// VMM backend choice.
    pub vmm: VmmKind,
    /// Firecracker binary (default: `firecracker` on PATH).
    pub firecracker_bin: Option<PathBuf>,
    /// Firecracker's `jailer`: when set, every Firecracker VMM runs chrooted in its VM's
    /// directory as `jailer_uid:jailer_gid` (no effect on the QEMU backend).
    pub jailer_bin: Option<PathBuf>,
    /// The user a jailed Firecracker runs as (required with `jailer_bin`).
    pub jailer_uid: Option<u32>,
    /// The group a jailed Firecracker runs as (required with `jailer_bin`).
    pub jailer_gid: Option<u32>,
    /// QEMU binary (default: `qemu-system-x86_64` on PATH).
    pub qemu_bin: Option<PathBuf>,
    /// Under TCG, the size of QEMU's translation cache per VM in MiB (QEMU's own default
    /// is 1 GiB, most of an idle VM's footprint); 0 leaves QEMU's default.
    pub qemu_tb_size_mib: u32,
    /// Runs every VMM in a cgroup of its own with memory, CPU and task limits derived from
    /// the VM's spec (needs root or a delegated cgroup; without one VMs run unlimited and
    /// `doctor` says why).
    pub vmm_cgroups: bool,
    /// Image used when `--image` is not given.
    pub default_image_name: String,
    /// Bridge all VM taps attach to.
    pub bridge_name: String,
    /// The bridge's address: the guests' gateway.
    pub bridge_ip: Ipv4Addr,
    /// Network guests get addresses from.
    pub cidr: Ipv4Net,
    /// Resolver written into guests.
    pub default_dns: Ipv4Addr,
    /// Idle taps kept warm on the bridge so a create takes one instead of making one.
    pub tap_pool_size: usize,
    /// Where the `<name>.vm` DNS server listens (UDP and TCP); an empty string disables it.
    pub dns_listen: String,
    /// banger's ssh key (default: `<state>/ssh/id_ed25519`).
    pub ssh_key_path: Option<PathBuf>,
    /// Seconds a guest gets to become ready (ssh answering) after start.
    pub boot_timeout_secs: u64,
    /// Seconds a guest gets to power off on `vm stop` before its VMM is killed.
    pub stop_timeout_secs: u64,
    /// Warm starts: the first VM of an image (per kernel, VMM, vCPUs, memory and disk size)
    /// boots cold and is snapshotted once ready as that image's template; later creates
    /// restore the template and give the copy its own identity (`vm create --cold` boots
    /// cold anyway).
    pub warm_start: bool,
    /// Seconds a client connection may sit without sending a complete request before the
    /// daemon closes it (a stalled or half-sent frame never holds a connection for long).
    pub rpc_idle_timeout_secs: u64,
    /// Sizing defaults.
    pub vm_defaults: VmDefaults,
    /// How often the daemon samples running VMs (VMM CPU/RSS) and looks for stale ones,
    /// e.g. `"30s"`, `"5m"`.
    pub stats_poll_interval: String,
    /// Stop running VMs nobody touched (ssh, exec, workspace, lifecycle) for this long, e.g.
    /// `"2h"`; `"0"` disables.
    pub auto_stop_stale_after: String,
    /// Host files copied into every guest at each start.
    pub file_sync: Vec<FileSync>,
    /// The root helper's socket (system installs): privileged operations go there instead
    /// of running in the daemon, which then needs no root.
    pub root_helper_socket: Option<PathBuf>,
    /// Image bundles `image pull NAME` and `vm create --image NAME` can fetch.
    pub image_catalog: Vec<crate::catalog::ImageCatalogEntry>,
    /// Kernel bundles `kernel pull NAME` can fetch.
    pub kernel_catalog: Vec<crate::catalog::KernelCatalogEntry>,
    /// Limits of `banger mcp`.
    pub mcp: McpConfig,
}

/// One `[[file_sync]]` entry: a host file or directory copied into the guest under /root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Host path: absolute, or `~/...` (the daemon owner's home).
    pub host: String,
    /// Guest path under /root: `/root/...` or `~/...`.
    pub guest: String,
    /// Octal file mode for what is copied, e.g. `"0600"` (default: the host file's).
    #[serde(default)]
    pub mode: Option<String>,
}

impl FileSync {
    /// The host path with `~/` expanded against `home`.
    pub fn host_path(&self, home: &Path) -> PathBuf {
        match self.host.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(&self.host),
        }
    }

    /// The guest path, absolute (`~/` is `/root/`).
    pub fn guest_path(&self) -> String {
        match self.guest.strip_prefix("~/") {
            Some(rest) => format!("/root/{rest}"),
            None => self.guest.clone(),
        }
    }

    /// The mode as a number.
    pub fn mode_bits(&self) -> Option<u32> {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
    }

    fn check(&self) -> Result<(), String> {
        let host_ok = self.host.starts_with('/') || self.host.starts_with("~/");
        if !host_ok {
            return Err(format!(
                "host {:?} must be absolute or start with ~/",
                self.host
            ));
        }
        let guest = self.guest_path();
        if !guest.starts_with("/root/") || guest.len() <= "/root/".len() {
            return Err(format!(
                "guest {:?} must be under /root (or ~/)",
                self.guest
            ));
        }
        for p in [self.host.as_str(), guest.as_str()] {
            if p.split('/').any(|c| c == "..") {
                return Err(format!("{p:?} must not contain '..'"));
            }
        }
        if let Some(m) = &self.mode
            && !(m.len() >= 3 && m.len() <= 4 && m.chars().all(|c| ('0'..='7').contains(&c)))
        {
            return Err(format!("mode {m:?} is not an octal mode such as \"0600\""));
        }
        Ok(())
    }
}

/// Parses a duration such as `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`; `"0"` is zero.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    if t == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let d: jiff::SignedDuration = t.parse().ok()?;
    std::time::Duration::try_from(d).ok()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: LogLevel::Info,
            vmm: VmmKind::Auto,
            firecracker_bin: None,
            jailer_bin: None,
            jailer_uid: None,
            jailer_gid: None,
            qemu_bin: None,
            qemu_tb_size_mib: 128,
            vmm_cgroups: true,
            default_image_name: "debian-bookworm".to_owned(),
            bridge_name: "br-fc".to_owned(),
            bridge_ip: Ipv4Addr::new(172, 16, 0, 1),
            cidr: Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 24).unwrap_or_default(),
            default_dns: Ipv4Addr::new(1, 1, 1, 1),
            tap_pool_size: 4,
            dns_listen: "127.0.0.1:42069".to_owned(),
            ssh_key_path: None,
            boot_timeout_secs: 180,
            stop_timeout_secs: 10,
            warm_start: true,
            rpc_idle_timeout_secs: 300,
            vm_defaults: VmDefaults::default(),
            stats_poll_interval: "30s".to_owned(),
            auto_stop_stale_after: "0".to_owned(),
            file_sync: Vec::new(),
            root_helper_socket: None,
            image_catalog: Vec::new(),
            kernel_catalog: Vec::new(),
            mcp: McpConfig::default(),
        }
    }
}

impl Config {
    /// `stats_poll_interval` as a duration (validated at load).
    pub fn stats_poll(&self) -> std::time::Duration {
        parse_duration(&self.stats_poll_interval).unwrap_or(std::time::Duration::from_secs(30))
    }

    /// `auto_stop_stale_after` as a duration; `None` when disabled.
    pub fn auto_stop_after(&self) -> Option<std::time::Duration> {
        parse_duration(&self.auto_stop_stale_after).filter(|d| !d.is_zero())
    }

    /// Loads `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match fs_err::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::Read(e)),
        }
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line = text[..offset.min(text.len())].matches('\n').count() + 1;
            let key = key_at(text, offset);
            let message = e.message().trim_end_matches('\n').to_owned();
            let detail = match key {
                Some(key) => format!("key `{key}`: {message}"),
                None => message,
            };
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                detail,
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, detail: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            detail,
        };
        if !self.cidr.contains(&self.bridge_ip) {
            return Err(invalid(
                "bridge_ip",
                format!("{} is not inside cidr {}", self.bridge_ip, self.cidr),
            ));
        }
        if self.jailer_bin.is_some() {
            for (key, v) in [
                ("jailer_uid", self.jailer_uid),
                ("jailer_gid", self.jailer_gid),
            ] {
                match v {
                    None => {
                        return Err(invalid(
                            key,
                            "must be set with jailer_bin: the unprivileged user and group jailed firecracker runs as (e.g. of `useradd --system banger-vmm`)".into(),
                        ));
                    }
                    Some(0) => {
                        return Err(invalid(
                            key,
                            "must not be 0: a jailed firecracker runs unprivileged".into(),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if self.cidr.prefix_len() > 30 {
            return Err(invalid(
                "cidr",
                format!("{} leaves no room for guests", self.cidr),
            ));
        }
        if self.bridge_name.is_empty() || self.bridge_name.len() > 15 {
            return Err(invalid(
                "bridge_name",
                format!(
                    "{:?} must be 1 to 15 characters (a Linux interface name)",
                    self.bridge_name
                ),
            ));
        }
        if !self.dns_listen.is_empty() && self.dns_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "dns_listen",
                format!(
                    "{:?} is not an address:port (e.g. 127.0.0.1:42069), or \"\" to disable",
                    self.dns_listen
                ),
            ));
        }
        if self.mcp.exec_timeout_secs == 0 {
            return Err(invalid(
                "mcp.exec_timeout_secs",
                "must be at least 1".to_owned(),
            ));
        }
        if let Some(ws) = &self.mcp.workspace
            && !ws.is_absolute()
        {
            return Err(invalid(
                "mcp.workspace",
                format!("{} is not an absolute path", ws.display()),
            ));
        }
        if self.tap_pool_size > 64 {
            return Err(invalid(
                "tap_pool_size",
                format!("{} is more than 64", self.tap_pool_size),
            ));
        }
        for (key, value) in [
            ("stats_poll_interval", &self.stats_poll_interval),
            ("auto_stop_stale_after", &self.auto_stop_stale_after),
        ] {
            if parse_duration(value).is_none() {
                return Err(invalid(
                    key,
                    format!(
                        "{value:?} is not a duration such as \"30s\", \"5m\" or \"2h\" (\"0\" disables)"
                    ),
                ));
            }
        }
        if parse_duration(&self.stats_poll_interval)
            .is_some_and(|d| d < std::time::Duration::from_millis(100))
        {
            return Err(invalid(
                "stats_poll_interval",
                "must be at least 100ms".to_owned(),
            ));
        }
        for (i, e) in self.image_catalog.iter().enumerate() {
            crate::catalog::check(&e.name, &e.url, &e.sha256)
                .map_err(|d| invalid("image_catalog", format!("entry {}: {d}", i + 1)))?;
        }
        for (i, e) in self.kernel_catalog.iter().enumerate() {
            crate::catalog::check(&e.name, &e.url, &e.sha256)
                .map_err(|d| invalid("kernel_catalog", format!("entry {}: {d}", i + 1)))?;
        }
        for (i, f) in self.file_sync.iter().enumerate() {
            f.check()
                .map_err(|d| invalid("file_sync", format!("entry {}: {d}", i + 1)))?;
        }
        if self.vm_defaults.vcpu == Some(0) {
            return Err(invalid("vm_defaults.vcpu", "must be at least 1".to_owned()));
        }
        Ok(())
    }
}

/// The dotted key whose line contains byte `offset`, with its `[table]` prefix.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/banger/config.toml"), text)
    }

    #[test]
    fn test_config_durations_and_file_sync() {
        let c = parse(
            "stats_poll_interval = \"5s\"\nauto_stop_stale_after = \"1h 30m\"\n\
             [[file_sync]]\nhost = \"~/.gitconfig\"\nguest = \"~/.gitconfig\"\nmode = \"0644\"\n\
             [[file_sync]]\nhost = \"/etc/hosts\"\nguest = \"/root/etc/hosts\"\n",
        )
        .unwrap();
        assert_eq!(c.stats_poll(), std::time::Duration::from_secs(5));
        assert_eq!(
            c.auto_stop_after(),
            Some(std::time::Duration::from_mins(90))
        );
        assert_eq!(c.file_sync[0].guest_path(), "/root/.gitconfig");
        assert_eq!(
            c.file_sync[0].host_path(Path::new("/home/u")),
            Path::new("/home/u/.gitconfig")
        );
        assert_eq!(c.file_sync[0].mode_bits(), Some(0o644));
        assert_eq!(Config::default().auto_stop_after(), None);
        for bad in [
            "auto_stop_stale_after = \"soon\"\n",
            "stats_poll_interval = \"1ms\"\n",
            "[[file_sync]]\nhost = \"rel/path\"\nguest = \"~/x\"\n",
            "[[file_sync]]\nhost = \"/a\"\nguest = \"/etc/x\"\n",
            "[[file_sync]]\nhost = \"/a\"\nguest = \"~/../etc/x\"\n",
            "[[file_sync]]\nhost = \"/a/../b\"\nguest = \"~/x\"\n",
            "[[file_sync]]\nhost = \"/a\"\nguest = \"~/x\"\nmode = \"0999\"\n",
            "[[file_sync]]\nhost = \"/a\"\nguest = \"/root/\"\n",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("file_sync") || err.contains("stale") || err.contains("poll"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn test_config_empty_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn test_config_known_keys_parse() {
        let c = parse(
            "log_level = \"debug\"\nvmm = \"qemu\"\n[vm_defaults]\nvcpu = 2\nmemory_mib = 1024\ndisk_size = \"2G\"\n",
        )
        .unwrap();
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.vmm, VmmKind::Qemu);
        assert_eq!(c.vm_defaults.vcpu, Some(2));
        assert_eq!(c.vm_defaults.disk_size.as_deref(), Some("2G"));
    }

    #[test]
    fn test_config_unknown_key_names_file_line_and_key() {
        let err = parse("log_level = \"info\"\n\nbogus_key = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/banger/config.toml:3:"), "{err}");
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn test_config_unknown_key_in_table_names_dotted_key() {
        let err = parse("[vm_defaults]\nvcpus = 2\n").unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(err.contains("vm_defaults.vcpus"), "{err}");
    }

    #[test]
    fn test_config_wrong_type_names_key() {
        let err = parse("boot_timeout_secs = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":1:") && err.contains("boot_timeout_secs"),
            "{err}"
        );
    }

    #[test]
    fn test_config_bridge_ip_outside_cidr_rejected() {
        let err = parse("bridge_ip = \"10.0.0.1\"\n").unwrap_err().to_string();
        assert!(err.contains("bridge_ip"), "{err}");
    }

    #[test]
    fn test_config_jailer_needs_an_unprivileged_user_and_group() {
        let err = parse("jailer_bin = \"/usr/bin/jailer\"\njailer_gid = 900\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jailer_uid") && err.contains("useradd"),
            "{err}"
        );
        let err = parse("jailer_bin = \"/usr/bin/jailer\"\njailer_uid = 0\njailer_gid = 900\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jailer_uid") && err.contains("not be 0"),
            "{err}"
        );
        let c = parse("jailer_bin = \"/usr/bin/jailer\"\njailer_uid = 900\njailer_gid = 900\n")
            .unwrap();
        assert_eq!((c.jailer_uid, c.jailer_gid), (Some(900), Some(900)));
    }

    #[test]
    fn test_config_missing_file_is_defaults() {
        let c = Config::load(Path::new("/nonexistent/banger/config.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn test_log_level_from_str() {
        assert_eq!("WARN".parse::<LogLevel>().unwrap(), LogLevel::Warn);
        assert!("loud".parse::<LogLevel>().is_err());
    }
}
