//! Parking the other CPUs: running code while no other CPU runs a thread,
//! as if the kernel ran on one CPU.
//!
//! The page invariant checker and the test runner's free-page count read
//! state that running threads change step by step (a page on its way to
//! the zero pool, a queue being scanned). On one CPU every other thread is
//! switched out at a preemption point while the checker runs; with several,
//! [`with_other_cpus_parked`] makes it so again. Each CPU has a parker
//! thread pinned to it, asleep until asked; asked, it turns preemption off
//! and spins (interrupts on, so IPIs are served) until released. A thread
//! is only switched out with preemption on, so once every parker runs, every
//! other thread sits at a switch, as on one CPU.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use super::*;

/// The parking round asked for (0: none yet), the CPUs it parks, the
/// round released last, and the parkers parked now. (A: SeqCst, as they
/// are few and read in spin loops.)
static ROUND: AtomicU64 = AtomicU64::new(0);
static MASK: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// One parking at a time.
static BUSY: AtomicBool = AtomicBool::new(false);
/// The CPUs that have a parker: started once, on first use.
static STARTED: AtomicU64 = AtomicU64::new(0);

fn chan() -> usize {
    &ROUND as *const AtomicU64 as usize
}

fn parker(cpu: usize) {
    let mut seen = 0;
    loop {
        sleep_if(chan(), || ROUND.load(Ordering::SeqCst) == seen);
        let round = ROUND.load(Ordering::SeqCst);
        if round == seen {
            continue;
        }
        seen = round;
        if MASK.load(Ordering::SeqCst) & (1 << cpu) == 0 {
            continue;
        }
        preempt_disable();
        PARKED.fetch_add(1, Ordering::SeqCst);
        while RELEASED.load(Ordering::SeqCst) < round {
            core::hint::spin_loop();
        }
        PARKED.fetch_sub(1, Ordering::SeqCst);
        preempt_enable();
    }
}

/// Runs `f` on this CPU with every other CPU parked (see the module docs).
/// The caller stays on its CPU meanwhile. Parkers are started the first
/// time; if one cannot be (no memory), `f` runs with that CPU unparked.
pub fn with_other_cpus_parked<R>(f: impl FnOnce() -> R) -> R {
    let n = crate::arch::percpu::online();
    if n < 2 || !interrupts::are_enabled() {
        return f();
    }
    while BUSY.swap(true, Ordering::SeqCst) {
        yield_now();
    }
    for cpu in 0..n {
        if STARTED.load(Ordering::SeqCst) & (1 << cpu) == 0
            && let Some(t) = super::spawn::prepare_kernel("parker", move || parker(cpu))
        {
            let t = t.pinned(cpu);
            if t.start().is_ok() {
                STARTED.fetch_or(1 << cpu, Ordering::SeqCst);
            }
        }
    }
    let affinity = affinity();
    set_affinity(1 << current_cpu());
    let me = current_cpu();
    let mask = STARTED.load(Ordering::SeqCst) & !(1 << me);
    MASK.store(mask, Ordering::SeqCst);
    let round = ROUND.fetch_add(1, Ordering::SeqCst) + 1;
    wakeup(chan());
    while PARKED.load(Ordering::SeqCst) < mask.count_ones() as usize {
        yield_now();
    }
    let r = f();
    RELEASED.store(round, Ordering::SeqCst);
    while PARKED.load(Ordering::SeqCst) != 0 {
        core::hint::spin_loop();
    }
    set_affinity(affinity);
    BUSY.store(false, Ordering::SeqCst);
    r
}
