use ktest::ktest;

use super::*;

/// Every CPU the MADT lists runs, each with its own block, TSS and IST
/// stacks, numbered in order, its APIC ID the MADT's.
#[ktest]
fn every_cpu_the_madt_lists_is_online() {
    let topo = crate::arch::madt::topology().expect("QEMU's firmware has an MADT");
    let n = online();
    assert_eq!(n, 1 + topo.application_processors.len(), "CPUs online");
    let mut tss = alloc::vec::Vec::new();
    for i in 0..n {
        let c = cpu(i).expect("a block for each CPU online");
        assert_eq!(c.id as usize, i);
        let want = if i == 0 { topo.boot_apic_id } else { topo.application_processors[i - 1] };
        assert_eq!(c.apic_id.load(Ordering::Relaxed), want);
        let t = c.tss.load(Ordering::Relaxed);
        assert!(!t.is_null() && !tss.contains(&t), "CPU {i} has a TSS of its own");
        tss.push(t);
        assert!(c.ist.iter().all(|b| b.load(Ordering::Relaxed) != 0), "CPU {i} has IST stacks");
    }
    assert!(cpu(n).is_none());
}
