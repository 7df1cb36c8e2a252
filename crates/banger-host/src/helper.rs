//! The root helper: serves [`PrivilegedOps`] on its own unix socket so the owner's daemon
//! runs without root. One typed JSON request per connection, answered by one JSON reply.
//! Each connection's peer uid (`SO_PEERCRED`) must be 0 or the owner's; every argument is
//! checked against a [`Policy`] (banger's bridge and network, `bt-` tap names, loopback DNS)
//! before anything runs. [`HelperClient`] is the daemon's side: a `PrivilegedOps` that
//! forwards each call.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ifname::InvalidArg;
use crate::nat::NatSpec;
use crate::privileged::{PrivError, PrivilegedOps, ResolverRouting, TapLink, validate_ifname};

/// The prefix of every tap banger makes (`bt-` + 12 hex digits).
pub const TAP_PREFIX: &str = "bt-";

/// One privileged operation, as sent to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum HelperRequest {
    /// [`PrivilegedOps::ensure_bridge`].
    EnsureBridge {
        /// Bridge.
        bridge: String,
        /// Its address.
        ip: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// [`PrivilegedOps::create_tap`].
    CreateTap {
        /// Tap.
        tap: String,
        /// Bridge.
        bridge: String,
    },
    /// [`PrivilegedOps::delete_tap`].
    DeleteTap {
        /// Tap.
        tap: String,
    },
    /// [`PrivilegedOps::link_exists`].
    LinkExists {
        /// Interface.
        name: String,
    },
    /// [`PrivilegedOps::list_taps`].
    ListTaps {
        /// Name prefix.
        prefix: String,
    },
    /// [`PrivilegedOps::sync_nat`].
    SyncNat {
        /// The table's content.
        spec: NatSpec,
    },
    /// [`PrivilegedOps::sync_resolver`].
    SyncResolver {
        /// Bridge.
        bridge: String,
        /// banger's DNS server.
        addr: SocketAddr,
    },
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HelperReply {
    /// Done; `value` is the operation's result.
    Ok {
        /// `null`, a bool, a tap list or a resolver routing.
        value: serde_json::Value,
    },
    /// The caller's uid is neither root nor the owner.
    Unauthorized {
        /// Why.
        message: String,
    },
    /// An argument was refused; nothing ran.
    Invalid {
        /// Why.
        message: String,
    },
    /// The operation ran and failed.
    Failed {
        /// Why.
        message: String,
    },
}

/// What the helper accepts: banger's own bridge and network only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The one bridge it may create and attach to.
    pub bridge: String,
    /// The guest network's address.
    pub network: Ipv4Addr,
    /// The guest network's prefix length (8–30).
    pub prefix: u8,
}

fn invalid(what: &'static str, value: &dyn std::fmt::Display, why: &'static str) -> PrivError {
    InvalidArg::new(what, value, why).into()
}

/// A tap name banger makes: `bt-` and 12 lowercase hex digits.
pub fn validate_tap(name: &str) -> Result<(), PrivError> {
    let ok = name.strip_prefix(TAP_PREFIX).is_some_and(|h| {
        h.len() == 12 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "tap name",
            &name,
            "must be bt- and 12 lowercase hex digits",
        ))
    }
}

impl Policy {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether `ip` is a host address inside the guest network (not its network or
    /// broadcast address).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (ip, net, mask) = (u32::from(ip), u32::from(self.network), self.mask());
        ip & mask == net & mask && ip & !mask != 0 && ip & !mask != !mask
    }

    fn bridge(&self, name: &str) -> Result<(), PrivError> {
        validate_ifname("bridge name", name)?;
        if name == self.bridge {
            Ok(())
        } else {
            Err(invalid("bridge name", &name, "is not banger's bridge"))
        }
    }

    /// Checks every argument of `req`; nothing may run when this fails.
    pub fn check(&self, req: &HelperRequest) -> Result<(), PrivError> {
        match req {
            HelperRequest::EnsureBridge { bridge, ip, prefix } => {
                self.bridge(bridge)?;
                if *prefix != self.prefix {
                    return Err(invalid(
                        "prefix length",
                        prefix,
                        "is not the guest network's",
                    ));
                }
                if !self.contains(*ip) {
                    return Err(invalid(
                        "bridge address",
                        ip,
                        "is not inside the guest network",
                    ));
                }
                Ok(())
            }
            HelperRequest::CreateTap { tap, bridge } => {
                validate_tap(tap)?;
                self.bridge(bridge)
            }
            HelperRequest::DeleteTap { tap } => validate_tap(tap),
            HelperRequest::LinkExists { name } => {
                if name == &self.bridge {
                    Ok(())
                } else {
                    validate_tap(name)
                }
            }
            HelperRequest::ListTaps { prefix } => {
                if prefix == TAP_PREFIX {
                    Ok(())
                } else {
                    Err(invalid("tap prefix", prefix, "must be bt-"))
                }
            }
            HelperRequest::SyncNat { spec } => {
                spec.validate()?;
                self.bridge(&spec.bridge)?;
                for e in &spec.entries {
                    validate_tap(&e.tap)?;
                    if !self.contains(e.ip) {
                        return Err(invalid(
                            "guest address",
                            &e.ip,
                            "is not inside the guest network",
                        ));
                    }
                }
                Ok(())
            }
            HelperRequest::SyncResolver { bridge, addr } => {
                self.bridge(bridge)?;
                if addr.ip().is_loopback() {
                    Ok(())
                } else {
                    Err(invalid("dns address", addr, "must be a loopback address"))
                }
            }
        }
    }
}

fn run(ops: &dyn PrivilegedOps, req: HelperRequest) -> Result<serde_json::Value, PrivError> {
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| PrivError::Helper(e.to_string()))
    };
    match req {
        HelperRequest::EnsureBridge { bridge, ip, prefix } => ops
            .ensure_bridge(&bridge, ip, prefix)
            .map(|()| serde_json::Value::Null),
        HelperRequest::CreateTap { tap, bridge } => ops
            .create_tap(&tap, &bridge)
            .map(|()| serde_json::Value::Null),
        HelperRequest::DeleteTap { tap } => ops.delete_tap(&tap).map(|()| serde_json::Value::Null),
        HelperRequest::LinkExists { name } => ops.link_exists(&name).map(serde_json::Value::Bool),
        HelperRequest::ListTaps { prefix } => json(serde_json::to_value(ops.list_taps(&prefix)?)),
        HelperRequest::SyncNat { spec } => ops.sync_nat(&spec).map(|()| serde_json::Value::Null),
        HelperRequest::SyncResolver { bridge, addr } => {
            json(serde_json::to_value(ops.sync_resolver(&bridge, addr)?))
        }
    }
}

/// Answers one connection: peer check, one request, one reply.
pub fn handle(
    stream: &UnixStream,
    owner_uid: u32,
    policy: &Policy,
    ops: &dyn PrivilegedOps,
) -> HelperReply {
    let uid = rustix::net::sockopt::socket_peercred(stream).map(|c| c.uid.as_raw());
    let reply = match uid {
        Ok(uid) if uid == 0 || uid == owner_uid => {
            let mut line = String::new();
            let read = BufReader::new(std::io::Read::take(stream, 1 << 20))
                .read_line(&mut line)
                .map_err(|e| e.to_string());
            match read.and_then(|_| {
                serde_json::from_str::<HelperRequest>(&line).map_err(|e| e.to_string())
            }) {
                Err(e) => HelperReply::Invalid {
                    message: format!("bad request: {e}"),
                },
                Ok(req) => match policy.check(&req) {
                    Err(e) => HelperReply::Invalid {
                        message: e.to_string(),
                    },
                    Ok(()) => match run(ops, req) {
                        Ok(value) => HelperReply::Ok { value },
                        Err(e) => HelperReply::Failed {
                            message: e.to_string(),
                        },
                    },
                },
            }
        }
        Ok(uid) => HelperReply::Unauthorized {
            message: format!(
                "uid {uid} may not use banger's root helper (only root and uid {owner_uid})"
            ),
        },
        Err(e) => HelperReply::Unauthorized {
            message: format!("cannot identify the caller: {e}"),
        },
    };
    let mut w = stream;
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    bytes.push(b'\n');
    let _ = w.write_all(&bytes);
    reply
}

/// Serves `listener` until it fails: a thread per connection.
pub fn serve(
    listener: &UnixListener,
    owner_uid: u32,
    policy: &Arc<Policy>,
    ops: &Arc<dyn PrivilegedOps>,
) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let (policy, ops) = (Arc::clone(policy), Arc::clone(ops));
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            handle(&stream, owner_uid, &policy, ops.as_ref());
        });
    }
}

/// The daemon's side: every call goes to the helper at `socket`.
#[derive(Debug, Clone)]
pub struct HelperClient {
    socket: PathBuf,
}

impl HelperClient {
    /// A client of the helper listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        HelperClient {
            socket: socket.into(),
        }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and waits for its reply.
    pub fn call(&self, req: &HelperRequest) -> Result<serde_json::Value, PrivError> {
        let err = |e: std::io::Error| {
            PrivError::Helper(format!("root helper at {}: {e}", self.socket.display()))
        };
        let mut s = UnixStream::connect(&self.socket).map_err(err)?;
        // NAT syncs and bridge setup run several commands; a minute is generous.
        s.set_read_timeout(Some(Duration::from_mins(1)))
            .map_err(err)?;
        let mut line = serde_json::to_vec(req).map_err(|e| PrivError::Helper(e.to_string()))?;
        line.push(b'\n');
        s.write_all(&line).map_err(err)?;
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).map_err(err)?;
        match serde_json::from_str::<HelperReply>(&reply)
            .map_err(|e| PrivError::Helper(format!("bad reply: {e}")))?
        {
            HelperReply::Ok { value } => Ok(value),
            HelperReply::Unauthorized { message }
            | HelperReply::Invalid { message }
            | HelperReply::Failed { message } => Err(PrivError::Helper(message)),
        }
    }

    fn unit(&self, req: &HelperRequest) -> Result<(), PrivError> {
        self.call(req).map(|_| ())
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, req: &HelperRequest) -> Result<T, PrivError> {
        serde_json::from_value(self.call(req)?)
            .map_err(|e| PrivError::Helper(format!("bad reply: {e}")))
    }
}

impl PrivilegedOps for HelperClient {
    fn ensure_bridge(&self, bridge: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), PrivError> {
        self.unit(&HelperRequest::EnsureBridge {
            bridge: bridge.to_owned(),
            ip,
            prefix,
        })
    }
    fn create_tap(&self, tap: &str, bridge: &str) -> Result<(), PrivError> {
        self.unit(&HelperRequest::CreateTap {
            tap: tap.to_owned(),
            bridge: bridge.to_owned(),
        })
    }
    fn delete_tap(&self, tap: &str) -> Result<(), PrivError> {
        self.unit(&HelperRequest::DeleteTap {
            tap: tap.to_owned(),
        })
    }
    fn link_exists(&self, name: &str) -> Result<bool, PrivError> {
        self.typed(&HelperRequest::LinkExists {
            name: name.to_owned(),
        })
    }
    fn list_taps(&self, prefix: &str) -> Result<Vec<TapLink>, PrivError> {
        self.typed(&HelperRequest::ListTaps {
            prefix: prefix.to_owned(),
        })
    }
    fn sync_nat(&self, spec: &NatSpec) -> Result<(), PrivError> {
        self.unit(&HelperRequest::SyncNat { spec: spec.clone() })
    }
    fn sync_resolver(&self, bridge: &str, addr: SocketAddr) -> Result<ResolverRouting, PrivError> {
        self.typed(&HelperRequest::SyncResolver {
            bridge: bridge.to_owned(),
            addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::NatEntry;
    use crate::privileged::FakePrivileged;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            bridge: "br-fc".into(),
            network: Ipv4Addr::new(172, 16, 0, 0),
            prefix: 24,
        }
    }

    fn start(owner: u32) -> (tempfile::TempDir, PathBuf, Arc<FakePrivileged>) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("helper.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let fake = Arc::new(FakePrivileged::default());
        let ops: Arc<dyn PrivilegedOps> = Arc::clone(&fake) as _;
        let policy = Arc::new(policy());
        std::thread::spawn(move || serve(&listener, owner, &policy, &ops));
        (dir, sock, fake)
    }

    #[test]
    fn test_client_and_server_carry_every_operation_and_refuse_bad_arguments() {
        let (_dir, sock, fake) = start(4242);
        let c = HelperClient::new(&sock);
        c.ensure_bridge("br-fc", Ipv4Addr::new(172, 16, 0, 1), 24)
            .unwrap();
        c.create_tap("bt-0123456789ab", "br-fc").unwrap();
        assert!(c.link_exists("bt-0123456789ab").unwrap());
        assert_eq!(c.list_taps("bt-").unwrap().len(), 1);
        let spec = NatSpec {
            bridge: "br-fc".into(),
            entries: vec![NatEntry {
                ip: Ipv4Addr::new(172, 16, 0, 2),
                tap: "bt-0123456789ab".into(),
                vm: "web".into(),
            }],
        };
        c.sync_nat(&spec).unwrap();
        assert_eq!(fake.nat_ips(), [Ipv4Addr::new(172, 16, 0, 2)]);
        c.delete_tap("bt-0123456789ab").unwrap();
        assert!(fake.taps().is_empty());
        // Refused before reaching the operations: another bridge, a foreign tap, an address
        // outside the network, a non-loopback DNS server.
        let refused = [
            c.ensure_bridge("eth0", Ipv4Addr::new(172, 16, 0, 1), 24),
            c.ensure_bridge("br-fc", Ipv4Addr::new(10, 0, 0, 1), 24),
            c.create_tap("eth0", "br-fc"),
            c.delete_tap("docker0"),
            c.create_tap("bt-0123456789ab", "docker0"),
            c.sync_nat(&NatSpec {
                entries: vec![NatEntry {
                    ip: Ipv4Addr::new(8, 8, 8, 8),
                    ..spec.entries[0].clone()
                }],
                ..spec.clone()
            }),
            c.sync_resolver("br-fc", "192.0.2.1:53".parse().unwrap())
                .map(|_| ()),
        ];
        for r in refused {
            let e = r.unwrap_err().to_string();
            assert!(e.starts_with("invalid"), "{e}");
        }
        assert!(fake.taps().is_empty(), "a refused request ran");
        assert_eq!(
            fake.nat_ips(),
            [Ipv4Addr::new(172, 16, 0, 2)],
            "a refused request ran"
        );
    }

    #[test]
    fn test_an_unauthorized_uid_is_refused() {
        // The helper serves uid 4242 (and root); a process running as nobody is refused.
        use banger_testkit::require;
        banger_testkit::require!(
            require::root(),
            require::tool("setpriv"),
            require::file("/usr/bin/python3")
        );
        let (dir, sock, fake) = start(4242);
        // Let `nobody` reach the socket, so only the peer-credential check can refuse it.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        // The helper may answer and close before the request is even sent: a send error is
        // expected, the reply is what counts.
        let client = "import socket, sys\n\
                      s = socket.socket(socket.AF_UNIX)\n\
                      s.connect(sys.argv[1])\n\
                      try:\n    s.sendall(b'{\"op\":\"delete_tap\",\"tap\":\"bt-0123456789ab\"}\\n')\n\
                      except OSError:\n    pass\n\
                      print(s.makefile().readline())\n";
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                client,
            ])
            .arg(&sock)
            .output()
            .unwrap();
        let reply: HelperReply = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(
            matches!(&reply, HelperReply::Unauthorized { message } if message.contains("uid 65534")),
            "{reply:?}"
        );
        // Root is always let in.
        HelperClient::new(&sock)
            .delete_tap("bt-0123456789ab")
            .unwrap();
        assert!(fake.taps().is_empty());
    }

    #[test]
    fn test_policy_network_membership() {
        let p = policy();
        assert!(p.contains(Ipv4Addr::new(172, 16, 0, 1)));
        assert!(p.contains(Ipv4Addr::new(172, 16, 0, 254)));
        assert!(!p.contains(Ipv4Addr::new(172, 16, 0, 0)), "network address");
        assert!(!p.contains(Ipv4Addr::new(172, 16, 0, 255)), "broadcast");
        assert!(!p.contains(Ipv4Addr::new(172, 16, 1, 1)));
    }

    proptest! {
        #[test]
        fn prop_tap_names_are_exactly_bt_and_12_hex(name in "\\PC{0,24}") {
            let good = name.len() == 15
                && name.starts_with("bt-")
                && name[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            prop_assert_eq!(validate_tap(&name).is_ok(), good);
        }

        #[test]
        fn prop_generated_tap_names_pass(hex in "[0-9a-f]{12}") {
            let name = format!("bt-{hex}");
            prop_assert!(validate_tap(&name).is_ok());
        }

        #[test]
        fn prop_addresses_outside_the_network_are_refused(raw in any::<u32>(), prefix in 0u8..=32) {
            let ip = Ipv4Addr::from(raw);
            let p = policy();
            let inside = raw >> 8 == u32::from(Ipv4Addr::new(172, 16, 0, 0)) >> 8 && !matches!(raw & 0xff, 0 | 255);
            let req = HelperRequest::EnsureBridge { bridge: "br-fc".into(), ip, prefix };
            prop_assert_eq!(p.check(&req).is_ok(), inside && prefix == 24);
            let nat = HelperRequest::SyncNat { spec: NatSpec {
                bridge: "br-fc".into(),
                entries: vec![NatEntry { ip, tap: "bt-0123456789ab".into(), vm: "v".into() }],
            }};
            if !inside {
                prop_assert!(p.check(&nat).is_err());
            }
        }

        #[test]
        fn prop_only_banger_bridge_passes(name in "[a-z0-9-]{1,15}") {
            let req = HelperRequest::CreateTap { tap: "bt-0123456789ab".into(), bridge: name.clone() };
            prop_assert_eq!(policy().check(&req).is_ok(), name == "br-fc");
        }

        #[test]
        fn prop_dns_must_be_loopback(raw in any::<u32>(), port in any::<u16>()) {
            let addr = SocketAddr::from((Ipv4Addr::from(raw), port));
            let req = HelperRequest::SyncResolver { bridge: "br-fc".into(), addr };
            prop_assert_eq!(policy().check(&req).is_ok(), Ipv4Addr::from(raw).is_loopback());
        }
    }
}
