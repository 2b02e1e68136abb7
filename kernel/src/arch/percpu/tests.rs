use ktest::ktest;

use super::*;

/// Kernel code runs with the CPU's block in the GS base, and the block
/// knows its own address.
#[ktest]
fn the_gs_base_is_the_boot_cpus_block() {
    crate::kern::sched::pin_to(Some(0));
    assert!(gs_is_kernel());
    let cpu = this();
    assert!(ptr::eq(cpu, &BOOT_CPU));
    assert_eq!(GsBase::read().as_u64(), cpu as *const PerCpu as u64);
    assert_eq!(cpu.id, 0);
    // The user's GS base waits in the other MSR, for `swapgs`.
    assert_eq!(KernelGsBase::read().as_u64(), 0);
    crate::kern::sched::pin_to(None);
}

/// Every CPU's GS base is its own block, which knows its number.
#[ktest]
fn every_cpu_has_its_own_block() {
    let n = crate::arch::smp::online();
    for c in (0..n).rev() {
        crate::kern::sched::pin_to(Some(c));
        let cpu = this();
        assert_eq!(cpu.id as usize, c);
        assert!(ptr::eq(cpu, crate::arch::smp::cpu(c).unwrap()));
        assert_eq!(GsBase::read().as_u64(), cpu as *const PerCpu as u64);
        assert_eq!(cpu.apic_id.load(Ordering::Relaxed), crate::arch::apic::id());
    }
    crate::kern::sched::pin_to(None);
}

/// An NMI that comes while kernel code runs with the user's GS base (as
/// between `syscall` and its `swapgs`, or the exit's `swapgs` and
/// `sysretq`) finds its CPU's block: the NMI entry asks the MSR, not the
/// saved CS, and swaps back on its way out.
#[ktest]
fn an_nmi_where_the_gs_base_is_the_users_finds_the_cpus_block() {
    use crate::arch::apic::{self, Ipi};
    // On the last CPU, which (unless it is the only one) takes no NMI but
    // those sent to it.
    let last = crate::arch::smp::online() - 1;
    crate::kern::sched::pin_to(Some(last));
    let cpu = this();
    let before = cpu.nmis.load(Ordering::Relaxed);
    let me = apic::id();
    let mut user_gs = false;
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off, and nothing between the two swaps
        // reaches per-CPU data: the APIC's registers are in the direct map,
        // the counter is read through `cpu`, taken before.
        unsafe { core::arch::asm!("swapgs", options(nomem, nostack, preserves_flags)) };
        user_gs = !gs_is_kernel();
        apic::send_ipi(me, Ipi::Nmi);
        // Half a second at most.
        let (start, limit) = (crate::kern::time::rdtsc(), crate::kern::time::tsc_hz() / 2);
        while cpu.nmis.load(Ordering::Relaxed) == before && crate::kern::time::rdtsc() - start < limit {
            core::hint::spin_loop();
        }
        // SAFETY: as above; back to the CPU's block.
        unsafe { core::arch::asm!("swapgs", options(nomem, nostack, preserves_flags)) };
    });
    assert!(user_gs, "the test ran with the user's GS base");
    assert!(cpu.nmis.load(Ordering::Relaxed) > before, "the NMI came");
    assert!(gs_is_kernel());
    assert!(ptr::eq(this(), cpu));
    crate::kern::sched::pin_to(None);
}
