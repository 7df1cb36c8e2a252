//! NAT for guests: one nftables table (`ip banger`) that banger owns, rebuilt whole from a
//! [`NatSpec`] and swapped in atomically in one `nft -j -f -` transaction. No other table is
//! ever read or written.
//!
//! The table, for guests with NAT on (keyed by guest IP; the tap and VM name are in comments):
//!
//! ```text
//! table ip banger {
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname "br-fc" ip saddr 172.16.0.2 accept            # vm a, tap bt-…
//!     oifname "br-fc" ip daddr 172.16.0.2 ct state established,related accept
//!     iifname "br-fc" oifname != "br-fc" drop               # guests without NAT stay home
//!     oifname "br-fc" iifname != "br-fc" drop               # nothing unsolicited gets in
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 172.16.0.2 oifname != "br-fc" masquerade
//!   }
//! }
//! ```
//!
//! With no guest on NAT the table is deleted (in the same kind of transaction).

use std::borrow::Cow;
use std::net::Ipv4Addr;

use nftables::expr::{Expression, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::{Deserialize, Serialize};

use crate::ifname::{InvalidArg, validate_ifname};

/// The name of banger's table (family `ip`).
pub const TABLE: &str = "banger";

/// One guest with NAT on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NatEntry {
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// Its tap device.
    pub tap: String,
    /// The VM's name (for the rule comments).
    pub vm: String,
}

/// Everything the table is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatSpec {
    /// The bridge the guests sit on.
    pub bridge: String,
    /// Guests with NAT on; order does not matter.
    pub entries: Vec<NatEntry>,
}

impl NatSpec {
    /// Checks every field before anything is built or run.
    pub fn validate(&self) -> Result<(), InvalidArg> {
        validate_ifname("bridge name", &self.bridge)?;
        for e in &self.entries {
            validate_ifname("tap name", &e.tap)?;
            if e.ip.is_unspecified()
                || e.ip.is_loopback()
                || e.ip.is_broadcast()
                || e.ip.is_multicast()
            {
                return Err(InvalidArg::new(
                    "guest address",
                    &e.ip,
                    "must be a unicast address",
                ));
            }
            if e.vm.is_empty()
                || e.vm.len() > 63
                || !e.vm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(InvalidArg::new(
                    "vm name",
                    &e.vm,
                    "must be 1-63 letters, digits or '-'",
                ));
            }
        }
        Ok(())
    }
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    }
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

fn meta(key: nftables::expr::MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(nftables::expr::Meta { key }))
}

fn is(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn s(text: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(text.to_owned()))
}

fn rule(chain: &'static str, expr: Vec<Statement<'static>>, comment: String) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: chain.into(),
        expr: expr.into(),
        handle: None,
        index: None,
        comment: Some(comment.into()),
    })))
}

fn chain(name: &'static str, kind: NfChainType, hook: NfHook, prio: i32) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })))
}

/// The transaction that makes banger's table exactly what `spec` says: `add table` (so the
/// delete cannot fail), `delete table`, then — when any guest has NAT — the new table.
pub fn ruleset(spec: &NatSpec) -> Nftables<'static> {
    use nftables::expr::MetaKey::{Iifname, Oifname};
    let mut entries = spec.entries.clone();
    entries.sort();
    entries.dedup();
    let mut objects = vec![
        NfObject::CmdObject(NfCmd::Add(NfListObject::Table(table()))),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
    ];
    if !entries.is_empty() {
        let br = spec.bridge.as_str();
        objects.push(NfObject::CmdObject(NfCmd::Add(
            NfListObject::Table(table()),
        )));
        objects.push(chain("forward", NfChainType::Filter, NfHook::Forward, 0));
        objects.push(chain(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            100,
        ));
        for e in &entries {
            let tag = format!("banger vm {} tap {}", e.vm, e.tap);
            let ip = e.ip.to_string();
            objects.push(rule(
                "forward",
                vec![
                    is(meta(Iifname), Operator::EQ, s(br)),
                    is(field("ip", "saddr"), Operator::EQ, s(&ip)),
                    Statement::Accept(None),
                ],
                tag.clone(),
            ));
            objects.push(rule(
                "forward",
                vec![
                    is(meta(Oifname), Operator::EQ, s(br)),
                    is(field("ip", "daddr"), Operator::EQ, s(&ip)),
                    is(
                        Expression::Named(NamedExpression::CT(nftables::expr::CT {
                            key: "state".into(),
                            family: None,
                            dir: None,
                        })),
                        Operator::IN,
                        Expression::List(vec![s("established"), s("related")]),
                    ),
                    Statement::Accept(None),
                ],
                tag.clone(),
            ));
            objects.push(rule(
                "postrouting",
                vec![
                    is(field("ip", "saddr"), Operator::EQ, s(&ip)),
                    is(meta(Oifname), Operator::NEQ, s(br)),
                    Statement::Masquerade(None),
                ],
                tag,
            ));
        }
        objects.push(rule(
            "forward",
            vec![
                is(meta(Iifname), Operator::EQ, s(br)),
                is(meta(Oifname), Operator::NEQ, s(br)),
                Statement::Drop(None),
            ],
            "banger guests without nat stay on the bridge".into(),
        ));
        objects.push(rule(
            "forward",
            vec![
                is(meta(Oifname), Operator::EQ, s(br)),
                is(meta(Iifname), Operator::NEQ, s(br)),
                Statement::Drop(None),
            ],
            "banger nothing unsolicited reaches a guest".into(),
        ));
    }
    Nftables {
        objects: objects.into(),
    }
}

/// The transaction as `nft -j` input.
pub fn ruleset_json(spec: &NatSpec) -> String {
    // Serializing plain data structures to a String cannot fail.
    serde_json::to_string(&ruleset(spec)).unwrap_or_default()
}

/// The guest addresses that have a masquerade rule in `nft -j list table ip banger` output
/// (empty when the table does not exist).
pub fn masqueraded_ips(list_json: &str) -> Vec<Ipv4Addr> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(list_json) else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r.get("chain").and_then(|c| c.as_str()) == Some("postrouting"))
        .filter(|r| {
            r.get("expr")
                .and_then(|e| e.as_array())
                .is_some_and(|e| e.iter().any(|s| s.get("masquerade").is_some()))
        })
        .filter_map(|r| {
            r.get("expr")?.as_array()?.iter().find_map(|s| {
                let m = s.get("match")?;
                let left = m.get("left")?.get("payload")?;
                (left.get("field")?.as_str()? == "saddr")
                    .then(|| m.get("right")?.as_str()?.parse().ok())
                    .flatten()
            })
        })
        .collect();
    ips.sort();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Cmd, CommandRunner, RealRunner};

    fn spec(n: u8) -> NatSpec {
        NatSpec {
            bridge: "br-fc".into(),
            entries: (0..n)
                .map(|i| NatEntry {
                    ip: Ipv4Addr::new(172, 16, 0, 2 + i),
                    tap: format!("bt-{i:012x}"),
                    vm: format!("vm-{i}"),
                })
                .collect(),
        }
    }

    use banger_testkit::require::{self, tool};

    /// `nft -c` (check mode: parsed and validated by the kernel, never committed).
    fn nft_check(json: &str) -> Result<(), String> {
        let out = RealRunner
            .output(
                &Cmd::new("nft")
                    .args(["-c", "-j", "-f", "-"])
                    .stdin(json.as_bytes().to_vec()),
            )
            .map_err(|e| e.to_string())?;
        if out.code == 0 {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn test_every_generated_ruleset_passes_nft_check() {
        banger_testkit::require!(tool("nft"));
        for n in [0, 1, 3, 20] {
            let json = ruleset_json(&spec(n));
            nft_check(&json).unwrap_or_else(|e| panic!("{n} entries: {e}\n{json}"));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Any valid spec builds a ruleset that nft accepts in check mode.
        #[test]
        fn prop_any_valid_spec_passes_nft_check(
            ips in proptest::collection::btree_set(2u32..250, 0..12),
            bridge in "[a-z][a-z0-9-]{0,11}",
        ) {
            if !require::met(&[tool("nft")]) {
                return Ok(());
            }
            let spec = NatSpec {
                bridge,
                entries: ips.iter().map(|i| NatEntry {
                    ip: Ipv4Addr::from(0x0a00_0000 | i),
                    tap: format!("bt-{i:x}"),
                    vm: format!("v{i}"),
                }).collect(),
            };
            proptest::prop_assert!(spec.validate().is_ok());
            let json = ruleset_json(&spec);
            proptest::prop_assert!(nft_check(&json).is_ok(), "{}", json);
        }
    }

    #[test]
    fn test_empty_spec_only_deletes_the_table() {
        let v: serde_json::Value = serde_json::from_str(&ruleset_json(&spec(0))).unwrap();
        let objs = v["nftables"].as_array().unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["add"]["table"]["name"], TABLE);
        assert_eq!(objs[1]["delete"]["table"]["name"], TABLE);
    }

    #[test]
    fn test_ruleset_has_one_masquerade_per_guest_and_touches_only_our_table() {
        let json = ruleset_json(&spec(3));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for o in v["nftables"].as_array().unwrap() {
            let (_, obj) = o.as_object().unwrap().iter().next().unwrap();
            let (kind, body) = obj.as_object().unwrap().iter().next().unwrap();
            let table = if kind == "table" {
                &body["name"]
            } else {
                &body["table"]
            };
            assert_eq!(table, TABLE, "{o}");
            assert_eq!(body["family"], "ip");
        }
        // The listing parser reads our own rules back.
        let listed = json.replace("\"add\":", "\"x\":");
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let rules: Vec<serde_json::Value> = listed["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("x").cloned())
            .collect();
        let listing = serde_json::json!({ "nftables": rules }).to_string();
        assert_eq!(
            masqueraded_ips(&listing),
            (2..5)
                .map(|i| Ipv4Addr::new(172, 16, 0, i))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn test_validate_rejects_bad_fields() {
        let mut s = spec(1);
        s.entries[0].tap = "bad tap".into();
        assert!(s.validate().is_err());
        let mut s = spec(1);
        s.entries[0].ip = Ipv4Addr::BROADCAST;
        assert!(s.validate().is_err());
        let mut s = spec(1);
        s.entries[0].vm = "x\"; drop".into();
        assert!(s.validate().is_err());
        let mut s = spec(1);
        s.bridge = "br;x".into();
        assert!(s.validate().is_err());
    }
}
