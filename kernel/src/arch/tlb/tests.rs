use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ktest::ktest;

use super::*;

/// A request to a CPU set reaches every CPU in it: each handles it and
/// says so, and the initiator returns only after all have.
#[ktest]
fn a_shootdown_is_acknowledged_by_every_target() {
    let n = percpu::online();
    if n < 2 {
        // One CPU: only the local flush, which needs no acknowledgement.
        let before = SHOOTDOWNS.load(Ordering::Relaxed);
        shootdown(all_cpus(), 0, ALL);
        assert_eq!(SHOOTDOWNS.load(Ordering::Relaxed), before, "a shootdown sent with no other CPU");
        return;
    }
    // On one CPU throughout: the acknowledgements are per initiator.
    let me = crate::kern::sched::current_cpu();
    crate::kern::sched::pin_to(Some(me));
    let handled = HANDLED.load(Ordering::Relaxed);
    for _ in 0..100 {
        shootdown(all_cpus(), 0x1000, 0x3000);
    }
    crate::kern::sched::pin_to(None);
    for c in (0..n).filter(|&c| c != me) {
        let cpu = percpu::cpu(c).unwrap();
        assert!(cpu.tlb_done[me].load(Ordering::Relaxed) >= 100, "CPU {c} acknowledged too little");
    }
    assert!(HANDLED.load(Ordering::Relaxed) - handled >= 100 * (n as u64 - 1));
}

/// Two CPUs that shoot at each other at once both finish: each serves the
/// other's request while it waits for its own.
#[ktest]
fn crossing_shootdowns_do_not_deadlock() {
    if percpu::online() < 2 {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let (s, r) = (stop.clone(), rounds.clone());
    let other = crate::kern::sched::spawn("shooter", move || {
        crate::kern::sched::pin_to(Some(1));
        while !s.load(Ordering::Relaxed) {
            shootdown(all_cpus(), 0x1000, 0x2000);
            r.fetch_add(1, Ordering::Relaxed);
        }
    })
    .unwrap();
    crate::kern::sched::pin_to(Some(0));
    for _ in 0..2000 {
        shootdown(all_cpus(), 0x1000, 0x2000);
    }
    while rounds.load(Ordering::Relaxed) < 100 {
        crate::kern::sched::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    crate::kern::sched::join(other);
    crate::kern::sched::pin_to(None);
}
