//! banger's own state on this host: the store's schema, the sizing defaults new VMs get, and
//! whether `ssh NAME.vm` is wired up.

use banger_config::Config;

use super::{Check, Facts, Level, StoreFact, row};

/// The store, vm defaults and ssh config rows.
pub(super) fn checks(f: &dyn Facts, cfg: &Config, out: &mut Vec<Check>) {
    out.push(match f.store() {
        StoreFact::Absent => row(
            "store",
            Level::Pass,
            "no database yet (created on first use)",
            None,
        ),
        StoreFact::Compatible => row("store", Level::Pass, "schema is current", None),
        StoreFact::NeedsMigration(n) => row(
            "store",
            Level::Warn,
            format!("{n} migration(s) pending"),
            Some(
                "they run when the daemon next starts (`banger daemon stop`, then any command)"
                    .into(),
            ),
        ),
        StoreFact::Incompatible { db, known } => row(
            "store",
            Level::Fail,
            format!("written by a newer banger (schema {db}, this build knows {known})"),
            Some("upgrade banger; the database is never modified by an older one".into()),
        ),
        StoreFact::Unreadable(e) => row("store", Level::Fail, e, None),
    });
    let (cpus, mem) = f.cpus_and_memory_mib();
    let vd = &cfg.vm_defaults;
    let (vcpu, vsrc) = match vd.vcpu {
        Some(v) => (v, "config"),
        None => banger_config::auto_vcpu(cpus).map_or((1, "builtin"), |v| (v, "auto")),
    };
    let (memory, msrc) = match vd.memory_mib {
        Some(v) => (v, "config"),
        None => banger_config::auto_memory_mib(mem).map_or((512, "builtin"), |v| (v, "auto")),
    };
    let (disk, dsrc) = match &vd.disk_size {
        Some(s) => (s.clone(), "config"),
        None => ("8G".to_owned(), "builtin"),
    };
    out.push(row(
        "vm defaults",
        Level::Pass,
        format!("{vcpu} vcpu ({vsrc}), {memory} MiB ({msrc}), {disk} disk ({dsrc})"),
        None,
    ));
    out.push(if f.ssh_config_included() {
        row(
            "ssh config",
            Level::Pass,
            "~/.ssh/config includes banger's: `ssh NAME.vm` works",
            None,
        )
    } else {
        row(
            "ssh config",
            Level::Warn,
            "~/.ssh/config does not include banger's (use `banger vm ssh NAME`)",
            Some("`banger ssh-config --install` makes plain `ssh NAME.vm` work".into()),
        )
    });
}
