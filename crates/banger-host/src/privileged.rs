//! Privileged host operations (bridge, taps). One trait, so a root helper can take them over;
//! in user/dev mode [`InProcessPrivileged`] runs them directly. Every argument is validated
//! before anything runs.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ifname::InvalidArg;
pub use crate::ifname::validate_ifname;
use crate::nat::{NatSpec, ruleset_json};
use crate::runner::{Cmd, CommandRunner, RunError};

/// A tap device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapLink {
    /// Interface name.
    pub name: String,
    /// The bridge it is attached to, if any.
    pub master: Option<String>,
    /// Whether a process holds it open (a VMM): the kernel reports carrier then.
    pub carrier: bool,
}

/// Whether the host's resolver routes a domain to banger's DNS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolverRouting {
    /// systemd-resolved now sends `~vm` queries on the bridge link to banger.
    Routed,
    /// systemd-resolved is not running; nothing was changed.
    NoResolved,
}

/// Errors of privileged operations.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// An argument failed validation; nothing was run.
    #[error(transparent)]
    Invalid(#[from] InvalidArg),
    /// The host command failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The root helper refused or failed the request, or could not be reached.
    #[error("{0}")]
    Helper(String),
}

/// Operations that need root (CAP_NET_ADMIN).
pub trait PrivilegedOps: Send + Sync + fmt::Debug {
    /// Creates the bridge with `ip/prefix` and brings it up; a no-op when it is already so.
    fn ensure_bridge(&self, bridge: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), PrivError>;
    /// Creates a persistent tap attached to `bridge`, up.
    fn create_tap(&self, tap: &str, bridge: &str) -> Result<(), PrivError>;
    /// Deletes a tap; a missing tap is not an error.
    fn delete_tap(&self, tap: &str) -> Result<(), PrivError>;
    /// Whether an interface exists.
    fn link_exists(&self, name: &str) -> Result<bool, PrivError>;
    /// Tap devices whose names start with `prefix`.
    fn list_taps(&self, prefix: &str) -> Result<Vec<TapLink>, PrivError>;
    /// Makes banger's nftables table exactly `spec` in one atomic transaction (deleting it
    /// when no guest has NAT) and turns on IPv4 forwarding when a guest needs it.
    fn sync_nat(&self, spec: &NatSpec) -> Result<(), PrivError>;
    /// Routes the `vm` domain to `dns` on the bridge link through systemd-resolved, when it
    /// runs.
    fn sync_resolver(
        &self,
        bridge: &str,
        dns: std::net::SocketAddr,
    ) -> Result<ResolverRouting, PrivError>;
}

/// Parses `ip -j link show type tun` output into the taps named `prefix*`.
pub fn parse_tap_links(json: &str, prefix: &str) -> Vec<TapLink> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    links
        .iter()
        .filter_map(|l| {
            let name = l.get("ifname")?.as_str()?;
            if !name.starts_with(prefix) {
                return None;
            }
            let flags: Vec<&str> = l
                .get("flags")
                .and_then(|f| f.as_array())
                .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            Some(TapLink {
                name: name.to_owned(),
                master: l.get("master").and_then(|m| m.as_str()).map(str::to_owned),
                carrier: !flags.contains(&"NO-CARRIER") && flags.contains(&"LOWER_UP"),
            })
        })
        .collect()
}

/// Runs privileged operations in this process through `ip`.
#[derive(Debug, Clone)]
pub struct InProcessPrivileged {
    runner: Arc<dyn CommandRunner>,
    tap_owner: Option<u32>,
}

impl InProcessPrivileged {
    /// Uses `runner` for the `ip` commands.
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        InProcessPrivileged {
            runner,
            tap_owner: None,
        }
    }

    /// Creates taps owned by `uid`, so that user's VMM can open them (the root helper
    /// serving an unprivileged daemon).
    #[must_use]
    pub fn with_tap_owner(mut self, uid: u32) -> Self {
        self.tap_owner = Some(uid);
        self
    }

    fn ip(&self, args: &[&str]) -> Result<(), PrivError> {
        self.runner
            .run(&Cmd::new("ip").args(args.iter().copied()))?;
        Ok(())
    }
}

impl PrivilegedOps for InProcessPrivileged {
    fn ensure_bridge(&self, bridge: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), PrivError> {
        validate_ifname("bridge name", bridge)?;
        if !(8..=30).contains(&prefix) {
            return Err(
                InvalidArg::new("prefix length", &prefix, "must be between 8 and 30").into(),
            );
        }
        // Concurrent callers may race between the check and the add: an add that fails
        // because the other one won is fine, so each failure is re-checked before it counts.
        if !self.link_exists(bridge)?
            && let Err(e) = self.ip(&["link", "add", bridge, "type", "bridge"])
            && !self.link_exists(bridge)?
        {
            return Err(e);
        }
        let addr = format!("{ip}/{prefix}");
        let has_addr = || -> Result<bool, PrivError> {
            let shown = self
                .runner
                .run(&Cmd::new("ip").args(["-o", "-4", "addr", "show", "dev", bridge]))?;
            Ok(shown.stdout_str().split_whitespace().any(|w| w == addr))
        };
        if !has_addr()?
            && let Err(e) = self.ip(&["addr", "add", &addr, "dev", bridge])
            && !has_addr()?
        {
            return Err(e);
        }
        self.ip(&["link", "set", bridge, "up"])
    }

    fn create_tap(&self, tap: &str, bridge: &str) -> Result<(), PrivError> {
        validate_ifname("tap name", tap)?;
        validate_ifname("bridge name", bridge)?;
        if self.link_exists(tap)? {
            self.ip(&["link", "del", tap])?;
        }
        match self.tap_owner {
            Some(uid) => {
                let uid = uid.to_string();
                self.ip(&["tuntap", "add", "dev", tap, "mode", "tap", "user", &uid])?;
            }
            None => self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?,
        }
        let attach = self
            .ip(&["link", "set", tap, "master", bridge])
            .and_then(|()| self.ip(&["link", "set", tap, "up"]));
        if attach.is_err() {
            let _ = self.ip(&["link", "del", tap]);
        }
        attach
    }

    fn delete_tap(&self, tap: &str) -> Result<(), PrivError> {
        validate_ifname("tap name", tap)?;
        if self.link_exists(tap)? {
            self.ip(&["link", "del", tap])?;
        }
        Ok(())
    }

    fn link_exists(&self, name: &str) -> Result<bool, PrivError> {
        validate_ifname("interface name", name)?;
        Ok(self
            .runner
            .output(&Cmd::new("ip").args(["link", "show", "dev", name]))?
            .code
            == 0)
    }

    fn list_taps(&self, prefix: &str) -> Result<Vec<TapLink>, PrivError> {
        let out = self
            .runner
            .run(&Cmd::new("ip").args(["-j", "link", "show", "type", "tun"]))?;
        Ok(parse_tap_links(&out.stdout_str(), prefix))
    }

    fn sync_nat(&self, spec: &NatSpec) -> Result<(), PrivError> {
        spec.validate()?;
        if spec.entries.is_empty() {
            // Nothing to NAT: only a table of ours that exists needs removing (a host without
            // nft, or without our table, is left exactly as it is).
            let listed = self.runner.output(&Cmd::new("nft").args([
                "list",
                "table",
                "ip",
                crate::nat::TABLE,
            ]));
            if !matches!(listed, Ok(o) if o.code == 0) {
                return Ok(());
            }
        } else {
            let fwd = self
                .runner
                .run(&Cmd::new("sysctl").args(["-n", "net.ipv4.ip_forward"]))?;
            if fwd.stdout_str().trim() != "1" {
                self.runner
                    .run(&Cmd::new("sysctl").args(["-q", "-w", "net.ipv4.ip_forward=1"]))?;
            }
        }
        self.runner.run(
            &Cmd::new("nft")
                .args(["-j", "-f", "-"])
                .stdin(ruleset_json(spec)),
        )?;
        Ok(())
    }

    fn sync_resolver(
        &self,
        bridge: &str,
        dns: std::net::SocketAddr,
    ) -> Result<ResolverRouting, PrivError> {
        validate_ifname("bridge name", bridge)?;
        let status = self
            .runner
            .output(&Cmd::new("resolvectl").args(["status", bridge]));
        match status {
            Ok(o) if o.code == 0 => {}
            _ => return Ok(ResolverRouting::NoResolved),
        }
        self.runner
            .run(&Cmd::new("resolvectl").args(["dns", bridge, &dns.to_string()]))?;
        self.runner
            .run(&Cmd::new("resolvectl").args(["domain", bridge, "~vm"]))?;
        Ok(ResolverRouting::Routed)
    }
}

/// A fake for tests: keeps the set of links in memory, records every call, and fails the
/// operation named in `fail` (`ensure_bridge`, `create_tap`, `delete_tap`).
#[derive(Debug, Default)]
pub struct FakePrivileged {
    /// Existing links (bridges and taps).
    pub links: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Calls, as `op arg...`.
    pub calls: std::sync::Mutex<Vec<String>>,
    /// The operation to fail.
    pub fail: std::sync::Mutex<Option<&'static str>>,
    /// The last NAT spec applied (`None` until the first `sync_nat`).
    pub nat: std::sync::Mutex<Option<NatSpec>>,
}

impl FakePrivileged {
    fn enter(&self, op: &'static str, args: &[&str]) -> Result<(), PrivError> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(
                std::iter::once(op)
                    .chain(args.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        if *self
            .fail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            == Some(op)
        {
            return Err(PrivError::Run(RunError::Failed {
                command: format!("fake {op}"),
                code: 1,
                stderr: "injected failure".into(),
            }));
        }
        Ok(())
    }

    fn links(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The taps that exist (links other than bridges named `br-*`).
    pub fn taps(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter(|l| !l.starts_with("br-"))
            .cloned()
            .collect()
    }
}

impl PrivilegedOps for FakePrivileged {
    fn ensure_bridge(&self, bridge: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), PrivError> {
        validate_ifname("bridge name", bridge)?;
        self.enter("ensure_bridge", &[bridge, &format!("{ip}/{prefix}")])?;
        self.links().insert(bridge.to_owned());
        Ok(())
    }

    fn create_tap(&self, tap: &str, bridge: &str) -> Result<(), PrivError> {
        validate_ifname("tap name", tap)?;
        self.enter("create_tap", &[tap, bridge])?;
        self.links().insert(tap.to_owned());
        Ok(())
    }

    fn delete_tap(&self, tap: &str) -> Result<(), PrivError> {
        validate_ifname("tap name", tap)?;
        self.enter("delete_tap", &[tap])?;
        self.links().remove(tap);
        Ok(())
    }

    fn link_exists(&self, name: &str) -> Result<bool, PrivError> {
        Ok(self.links().contains(name))
    }

    fn list_taps(&self, prefix: &str) -> Result<Vec<TapLink>, PrivError> {
        Ok(self
            .links()
            .iter()
            .filter(|l| l.starts_with(prefix) && !l.starts_with("br-"))
            .map(|l| TapLink {
                name: l.clone(),
                master: Some("br-fc".into()),
                carrier: false,
            })
            .collect())
    }

    fn sync_nat(&self, spec: &NatSpec) -> Result<(), PrivError> {
        spec.validate()?;
        let ips: Vec<String> = spec.entries.iter().map(|e| e.ip.to_string()).collect();
        self.enter("sync_nat", &[&ips.join(",")])?;
        *self
            .nat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(spec.clone());
        Ok(())
    }

    fn sync_resolver(
        &self,
        bridge: &str,
        dns: std::net::SocketAddr,
    ) -> Result<ResolverRouting, PrivError> {
        self.enter("sync_resolver", &[bridge, &dns.to_string()])?;
        Ok(ResolverRouting::NoResolved)
    }
}

impl FakePrivileged {
    /// The guest addresses NATed by the last `sync_nat`, sorted.
    pub fn nat_ips(&self) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = self
            .nat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|s| s.entries.iter().map(|e| e.ip).collect())
            .unwrap_or_default();
        ips.sort();
        ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{CmdOutput, RecordingRunner};

    #[test]
    fn test_validate_ifname_rejects_bad_names() {
        assert!(validate_ifname("tap", "bt-0123456789ab").is_ok());
        for bad in ["", "way-too-long-interface", "a b", "x;rm", "..", "ta/p"] {
            assert!(validate_ifname("tap", bad).is_err(), "{bad}");
        }
    }

    /// A runner under which commands whose line starts with one of `failing` exit 1; the
    /// rest succeed.
    fn failing(failing: &'static [&'static str]) -> RecordingRunner {
        RecordingRunner::with_responder(move |c| {
            let line = c.to_string();
            let code = i32::from(failing.iter().any(|p| line.starts_with(p)));
            Ok(CmdOutput {
                code,
                ..CmdOutput::ok()
            })
        })
    }

    #[test]
    fn test_create_tap_attaches_to_bridge() {
        // `ip link show` of the tap: absent.
        let runner = failing(&["ip link show"]);
        let ops = InProcessPrivileged::new(Arc::new(runner.clone()));
        ops.create_tap("bt-1", "br-fc").unwrap();
        assert_eq!(
            runner.lines(),
            [
                "ip link show dev bt-1",
                "ip tuntap add dev bt-1 mode tap",
                "ip link set bt-1 master br-fc",
                "ip link set bt-1 up"
            ]
        );
    }

    #[test]
    fn test_create_tap_failure_to_attach_removes_tap() {
        let runner = failing(&["ip link show", "ip link set bt-1 master"]);
        let ops = InProcessPrivileged::new(Arc::new(runner.clone()));
        assert!(ops.create_tap("bt-1", "br-fc").is_err());
        assert_eq!(runner.lines().last().unwrap(), "ip link del bt-1");
    }

    #[test]
    fn test_parse_tap_links() {
        let json = r#"[{"ifindex":5,"ifname":"bt-1","flags":["NO-CARRIER","BROADCAST","UP"],"master":"br-fc"},
            {"ifindex":6,"ifname":"bt-2","flags":["BROADCAST","UP","LOWER_UP"]},
            {"ifindex":7,"ifname":"tun0","flags":["UP"]}]"#;
        let taps = parse_tap_links(json, "bt-");
        assert_eq!(
            taps,
            [
                TapLink {
                    name: "bt-1".into(),
                    master: Some("br-fc".into()),
                    carrier: false
                },
                TapLink {
                    name: "bt-2".into(),
                    master: None,
                    carrier: true
                },
            ]
        );
        assert!(parse_tap_links("garbage", "bt-").is_empty());
    }

    #[test]
    fn test_sync_nat_enables_forwarding_then_applies_one_transaction() {
        let runner = RecordingRunner::with_responder(|c| {
            Ok(if c.to_string().starts_with("sysctl -n") {
                CmdOutput {
                    stdout: b"0\n".to_vec(),
                    ..CmdOutput::ok()
                }
            } else {
                CmdOutput::ok()
            })
        });
        let ops = InProcessPrivileged::new(Arc::new(runner.clone()));
        let spec = NatSpec {
            bridge: "br-fc".into(),
            entries: vec![crate::nat::NatEntry {
                ip: Ipv4Addr::new(172, 16, 0, 2),
                tap: "bt-1".into(),
                vm: "a".into(),
            }],
        };
        ops.sync_nat(&spec).unwrap();
        let lines = runner.lines();
        assert_eq!(
            lines[..2],
            [
                "sysctl -n net.ipv4.ip_forward",
                "sysctl -q -w net.ipv4.ip_forward=1"
            ]
        );
        assert_eq!(lines[2], "nft -j -f -");
        assert_eq!(
            runner.calls()[2].stdin.as_deref(),
            Some(ruleset_json(&spec).as_bytes())
        );
        // A bad spec runs nothing.
        let before = runner.calls().len();
        let mut bad = spec;
        bad.entries[0].tap = "x y".into();
        assert!(ops.sync_nat(&bad).is_err());
        assert_eq!(runner.calls().len(), before);
    }

    #[test]
    fn test_sync_nat_with_no_guests_leaves_a_host_without_our_table_alone() {
        let runner = failing(&["nft list"]);
        let ops = InProcessPrivileged::new(Arc::new(runner.clone()));
        ops.sync_nat(&NatSpec {
            bridge: "br-fc".into(),
            entries: vec![],
        })
        .unwrap();
        assert_eq!(runner.lines(), ["nft list table ip banger"]);
    }

    #[test]
    fn test_sync_resolver_routes_vm_only_when_resolved_runs() {
        let absent = failing(&[""]);
        let ops = InProcessPrivileged::new(Arc::new(absent.clone()));
        let dns: std::net::SocketAddr = "127.0.0.1:42069".parse().unwrap();
        assert_eq!(
            ops.sync_resolver("br-fc", dns).unwrap(),
            ResolverRouting::NoResolved
        );
        assert_eq!(absent.lines(), ["resolvectl status br-fc"]);
        let present = RecordingRunner::default();
        let ops = InProcessPrivileged::new(Arc::new(present.clone()));
        assert_eq!(
            ops.sync_resolver("br-fc", dns).unwrap(),
            ResolverRouting::Routed
        );
        assert_eq!(
            present.lines(),
            [
                "resolvectl status br-fc",
                "resolvectl dns br-fc 127.0.0.1:42069",
                "resolvectl domain br-fc ~vm"
            ]
        );
        assert!(ops.sync_resolver("br fc", dns).is_err());
    }

    #[test]
    fn test_ensure_bridge_tolerates_losing_a_race() {
        // `ip link show` says absent first, then present (another caller made it); the add
        // fails with "File exists": that is success.
        let shows = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runner = RecordingRunner::with_responder(move |c| {
            let line = c.to_string();
            Ok(if line.starts_with("ip link show") {
                let n = shows.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                CmdOutput {
                    code: i32::from(n == 0),
                    ..CmdOutput::ok()
                }
            } else if line.starts_with("ip link add") {
                CmdOutput {
                    code: 2,
                    stderr: b"RTNETLINK answers: File exists".to_vec(),
                    ..CmdOutput::ok()
                }
            } else if line.starts_with("ip -o -4 addr show") {
                CmdOutput {
                    stdout: b"5: br-fc    inet 172.16.0.1/24 brd 172.16.0.255 scope global br-fc"
                        .to_vec(),
                    ..CmdOutput::ok()
                }
            } else {
                CmdOutput::ok()
            })
        });
        let ops = InProcessPrivileged::new(Arc::new(runner.clone()));
        ops.ensure_bridge("br-fc", Ipv4Addr::new(172, 16, 0, 1), 24)
            .unwrap();
        assert_eq!(runner.lines().last().unwrap(), "ip link set br-fc up");
    }

    #[test]
    fn test_invalid_input_runs_nothing() {
        let runner = RecordingRunner::default();
        let ops = InProcessPrivileged::new(Arc::new(runner.clone()));
        assert!(ops.ensure_bridge("br;x", Ipv4Addr::LOCALHOST, 24).is_err());
        assert!(ops.ensure_bridge("br-fc", Ipv4Addr::LOCALHOST, 31).is_err());
        assert!(runner.calls().is_empty());
    }
}
