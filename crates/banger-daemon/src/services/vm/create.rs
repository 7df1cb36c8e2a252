//! Creating VMs: the asynchronous create (`vm.create.begin/status/cancel`), the reservation
//! (name check + IP allocation + first row, nothing slower), generated names, and the undo
//! of a failed or cancelled create.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use banger_api::types::{OpBegun, OpStatus, SizingSources, VmCreateParams, VmInfo, VmState};
use banger_store::{ImageRecord, KernelRecord, Store, VmRecord};
use tracing::{info, warn};

use super::settings::{Sizing, validate_labels, validate_name};
use super::{VmError, VmService};
use crate::ops::OpRegistry;
use crate::progress::{AsyncOps, OpError, OpOutput, Progress};
use crate::services::network::allocate_ip;
use crate::services::support::{Cancelled, chain, new_id, with_store};

const ADJECTIVES: &[&str] = &[
    "brisk", "calm", "eager", "fuzzy", "gentle", "happy", "jolly", "keen", "lucky", "mellow",
    "nimble", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty",
];
const NOUNS: &[&str] = &[
    "otter", "badger", "falcon", "heron", "lynx", "marten", "newt", "owl", "panda", "quokka",
    "raven", "seal", "tapir", "walrus", "yak", "zebra", "ibis", "koala",
];

/// A random `adjective-noun-xxxx` name.
pub(super) fn generate_name() -> String {
    let r = uuid::Uuid::new_v4().as_u128();
    format!(
        "{}-{}-{:04x}",
        ADJECTIVES[(r % ADJECTIVES.len() as u128) as usize],
        NOUNS[((r >> 16) % NOUNS.len() as u128) as usize],
        (r >> 40) as u16
    )
}

/// The row's spec key marking a create in progress.
pub(super) const CREATING: &str = "creating";

impl VmService {
    /// Begins an asynchronous create; its progress is queried with [`Self::create_status`].
    pub fn begin_create(self: &Arc<Self>, p: VmCreateParams, ops: &Arc<OpRegistry>) -> OpBegun {
        let op = self
            .creates
            .begin(ops, "vm.create", self.infra.clock.now_rfc3339());
        let op_id = op.op_id.clone();
        let (this, progress) = (Arc::clone(self), Arc::clone(&op.progress));
        AsyncOps::run(
            op,
            "vm.create",
            |vm| OpOutput::Vm(Box::new(vm)),
            async move { this.create(p, &progress).await },
        );
        OpBegun { op_id }
    }

    /// Stages and outcome of an asynchronous create.
    pub async fn create_status(
        &self,
        op_id: &str,
        seen: usize,
        wait: Duration,
    ) -> Result<OpStatus, OpError> {
        self.creates.status(op_id, seen, wait).await
    }

    /// Cancels an asynchronous create.
    pub fn create_cancel(&self, op_id: &str) -> Result<OpStatus, OpError> {
        self.creates.cancel(op_id)
    }

    /// Creates a VM; unless `no_start`, starts it and waits until the guest is ready.
    /// Reports its stages to `progress` and stops (undoing everything) when it is
    /// cancelled.
    pub async fn create(
        &self,
        p: VmCreateParams,
        progress: &Arc<Progress>,
    ) -> Result<VmInfo, VmError> {
        if let Some(from) = p.from_snapshot.clone() {
            let snap = self.get_snapshot(&from).await?;
            let how = format!("snapshot {}", snap.name);
            return self
                .create_from(p, snap, (how, super::snapshot::Source::Stored), progress)
                .await;
        }
        // Validation first: nothing is created for bad input.
        if let Some(name) = &p.name {
            validate_name(name)?;
        }
        validate_labels(&p.labels)?;
        let sizing = self.sizing(&p)?;
        if p.nat {
            self.network.check_nat_possible()?;
        }
        let image_name = p
            .image
            .clone()
            .unwrap_or_else(|| self.infra.config.default_image_name.clone());
        progress.stage("image")?;
        let (image, kernel) = self.image.ensure_image(&image_name).await?;
        // A warm start: the image's template for these sizes, restored and reidentified.
        let mut template_key = None;
        if self.warm_starts() && !p.cold && !p.no_start && !p.keep_failed_boot {
            let sizes = (sizing.vcpu.0, sizing.memory_mib.0, sizing.disk_bytes.0);
            let key = super::snapshot::restore_key(&kernel, &image, &self.infra.vmm.name(), sizes);
            if let Some(t) = self.template_for(key.clone()).await? {
                let how = format!("template {}", t.name);
                let params = VmCreateParams {
                    vcpu: None,
                    memory_mib: None,
                    disk_size: None,
                    ..p
                };
                return self
                    .create_from(params, t, (how, super::snapshot::Source::Stored), progress)
                    .await;
            }
            template_key = Some(key);
        }
        progress.stage("reserve")?;
        let mut vm = self.reserve(&p, &sizing, &image, &kernel, None).await?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        info!(vm = vm.name, ip = vm.guest_ip, "creating vm");
        let result = async {
            self.provision(&vm, &image, progress).await?;
            if !p.no_start {
                self.start_locked(&mut vm, &kernel, progress, None).await?;
            }
            progress.check().map_err(VmError::from)
        }
        .await;
        if let Err(err) = result {
            return Err(self
                .undo_create(vm, err, p.keep_failed_boot, progress)
                .await);
        }
        crate::crashpoint::hit("stage:created");
        self.finish_create(&mut vm).await?;
        if let Some(key) = template_key {
            self.make_template(&mut vm, &image, &key).await;
        }
        self.sync_ssh_config().await;
        self.show(&vm.id).await
    }

    /// Clears the row's in-creation marker: from here on the VM is the user's.
    pub(super) async fn finish_create(&self, vm: &mut VmRecord) -> Result<(), VmError> {
        if let Some(spec) = vm.spec.as_object_mut() {
            spec.remove(CREATING);
        }
        self.save(vm).await
    }

    /// Name check + IP allocation + first row insert, under `create_reservation`.
    pub(super) async fn reserve(
        &self,
        p: &VmCreateParams,
        sizing: &Sizing,
        image: &ImageRecord,
        kernel: &KernelRecord,
        memory_from: Option<&str>,
    ) -> Result<VmRecord, VmError> {
        let _reserve = self.create_reservation.lock().await;
        let name_taken = |name: String| async move {
            with_store(&self.infra.store, move |s| s.vm_name_taken(&name)).await
        };
        let name = match &p.name {
            Some(n) => n.clone(),
            None => loop {
                let n = generate_name();
                if !name_taken(n.clone()).await? {
                    break n;
                }
            },
        };
        if name_taken(name.clone()).await? {
            return Err(VmError::NameTaken(name));
        }
        let used: Vec<Ipv4Addr> = with_store(&self.infra.store, Store::used_guest_ips)
            .await?
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let cfg = &self.infra.config;
        let ip = allocate_ip(cfg.cidr, cfg.bridge_ip, &used)
            .ok_or_else(|| VmError::NoFreeAddress(cfg.cidr.to_string()))?;
        let now = self.infra.clock.now_rfc3339();
        let vm = VmRecord {
            id: new_id(),
            name,
            image_id: image.id.clone(),
            state: VmState::Created,
            guest_ip: ip.to_string(),
            vcpu: sizing.vcpu.0,
            memory_mib: sizing.memory_mib.0,
            disk_bytes: sizing.disk_bytes.0,
            nat: p.nat,
            vmm: Some(self.infra.vmm.name()),
            spec: serde_json::json!({
                "kernel": kernel.name,
                // A pulled image without systemd or sshd boots its first-boot init.
                "init": image.config.get("init").and_then(serde_json::Value::as_str),
                "sizing": SizingSources {
                    vcpu: sizing.vcpu.1,
                    memory_mib: sizing.memory_mib.1,
                    disk: sizing.disk_bytes.1,
                },
                "labels": p.labels,
                // Until the create finishes: reconcile undoes a create a kill interrupted.
                CREATING: true,
                // The snapshot a restore maps, from the reservation on (`snapshot rm`
                // checks under the same lock).
                "memory_from": memory_from,
            }),
            workspace: None,
            last_error: None,
            created_at: now.clone(),
            updated_at: now.clone(),
            last_touched_at: now,
        };
        let rec = vm.clone();
        with_store(&self.infra.store, move |s| s.insert_vm(&rec)).await?;
        Ok(vm)
    }

    /// Undoes a create that failed with `err` (VMM, tap, files, known_hosts line, row), or
    /// with `keep_failed_boot` and a failed boot keeps the VM in state `error` for its logs.
    /// Returns the error to report.
    pub(super) async fn undo_create(
        &self,
        mut vm: VmRecord,
        err: VmError,
        keep_failed_boot: bool,
        progress: &Progress,
    ) -> VmError {
        let err = if progress.is_cancelled() {
            VmError::Cancelled(Cancelled)
        } else {
            err
        };
        let boot_failed = !progress.is_cancelled()
            && progress.stage_names().last().map(String::as_str) == Some("boot");
        if keep_failed_boot && boot_failed {
            let why = chain(&err);
            warn!(
                vm = vm.name,
                "boot failed, keeping the vm for its logs: {why}"
            );
            self.teardown(&vm).await;
            vm.state = VmState::Error;
            vm.last_error = Some(why);
            vm.updated_at = self.infra.clock.now_rfc3339();
            if let Err(e) = self.finish_create(&mut vm).await {
                return e;
            }
            self.sync_ssh_config().await;
            return VmError::KeptForLogs {
                name: vm.name,
                source: Box::new(err),
            };
        }
        warn!(vm = vm.name, "create failed, undoing: {}", chain(&err));
        self.remove_unfinished(&vm).await;
        err
    }

    /// Removes what a create made so far: VMM, tap, files, known_hosts line, row.
    pub(super) async fn remove_unfinished(&self, vm: &VmRecord) {
        self.teardown(vm).await;
        let _ = fs_err::remove_dir_all(self.vm_dir(&vm.id));
        self.collect_layers().await;
        let id = vm.id.clone();
        let _ = with_store(&self.infra.store, move |s| s.delete_vm(&id)).await;
        self.forget_host_key(&vm.id).await;
    }
}
