//! A KVM probe that boots nothing heavy: a one-page 64-bit guest (identity-mapped 2 MiB,
//! long mode set up directly in the vCPU registers) runs `lock cmpxchg16b; hlt`. A real KVM
//! (VMX/SVM) stops at the `hlt`. A paravirtual one that emulates a stock guest's kernel mode
//! (`kvm_pvm` on nested cloud VMs) fails with an internal error on exactly that instruction,
//! the one a stock Debian kernel dies on. Takes about a millisecond.
#![allow(unsafe_code)]

use std::time::Duration;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};

const MEM: usize = 0x20_0000;
const PAGE: usize = 0x1000;
const PML4: usize = 0x1000;
const PDPT: usize = 0x2000;
const PD: usize = 0x3000;
const CODE: usize = 0x4000;
const DATA: u64 = 0x5000;

fn put(mem: &mut [u8], at: usize, bytes: &[u8]) {
    mem[at..at + bytes.len()].copy_from_slice(bytes);
}

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        ..kvm_segment::default()
    }
}

fn run_probe() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    // Declared before the VM so it is dropped after it: the guest's memory.
    let mut backing = vec![0u8; MEM + PAGE];
    let off = backing.as_ptr().align_offset(PAGE);
    let mem = &mut backing[off..off + MEM];
    put(mem, PML4, &(PDPT as u64 | 3).to_le_bytes());
    put(mem, PDPT, &(PD as u64 | 3).to_le_bytes());
    put(mem, PD, &0x83u64.to_le_bytes()); // one 2 MiB page at 0, present + writable
    put(mem, CODE, &[0xf0, 0x48, 0x0f, 0xc7, 0x0f, 0xf4]); // lock cmpxchg16b [rdi]; hlt
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM as u64,
        userspace_addr: mem.as_mut_ptr() as u64,
    };
    // SAFETY: `mem` is a live, page-aligned region of exactly `MEM` bytes owned by `backing`,
    // which is declared before `vm` and so outlives it; nothing else maps or frees it.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs = segment(8, 11, true);
    let data = segment(16, 3, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 = 0x8000_0011; // PG | ET | PE
    sregs.cr3 = PML4 as u64;
    sregs.cr4 = 0x20; // PAE
    sregs.efer = 0x500; // LME | LMA
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_regs {
        rip: CODE as u64,
        rflags: 2,
        rbx: 1,
        rcx: 1,
        rdi: DATA,
        ..kvm_regs::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    match vcpu.run() {
        Ok(VcpuExit::Hlt) => Ok(()),
        Ok(VcpuExit::InternalError) => {
            Err("a 64-bit probe guest failed with an internal KVM error".to_owned())
        }
        Ok(other) => Err(format!("a 64-bit probe guest stopped with {other:?}")),
        Err(e) => Err(format!("KVM_RUN failed: {e}")),
    }
}

/// Whether KVM here can run a stock 64-bit guest kernel (`Err` says why not). Gives up after
/// two seconds (a guest that never stops counts as a failure).
pub fn probe() -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_probe());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .unwrap_or_else(|_| Err("the probe guest did not stop within 2 s".to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_probe_answers_quickly_with_a_reason_when_kvm_cannot_run_guests() {
        let started = std::time::Instant::now();
        let result = super::probe();
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        if let Err(why) = &result {
            assert!(!why.is_empty());
        }
        // On a kvm_pvm host (these CI machines) the probe must fail: stock kernels die there.
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            assert!(result.is_err(), "kvm_pvm cannot run stock guests");
        }
    }
}
