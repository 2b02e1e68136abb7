use ktest::ktest;

use super::*;

/// The MADT names the CPU that booted, the others QEMU was given (none
/// at `-smp 1`), and the I/O APIC where the kernel drives it.
#[ktest]
fn the_madt_names_this_cpu_and_the_io_apic() {
    let topo = topology().expect("QEMU's firmware has an MADT");
    crate::kern::sched::pin_to(Some(0));
    assert_eq!(topo.boot_apic_id, crate::arch::apic::id());
    crate::kern::sched::pin_to(None);
    assert!(!topo.application_processors.contains(&topo.boot_apic_id));
    assert_eq!(topo.disabled, 0);
    assert!(
        topo.io_apics.iter().any(|&(_, addr, gsi)| addr == crate::arch::ioapic::IOAPIC_PHYS && gsi == 0),
        "I/O APICs {:x?}",
        topo.io_apics
    );
}
