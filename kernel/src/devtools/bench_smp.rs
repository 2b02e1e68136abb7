//! The in-kernel benchmarks of several CPUs (`mode=bench bench=smp`, booted
//! with `-smp 4`): the page allocator's order-0 pair with 1, 2 and 4 CPUs
//! allocating and freeing at once, each on its own pinned thread.
//!
//! Lines: `kernel.phys.order0_pair_<N>cpu` (ns per pair as each CPU sees
//! it, the mean over the N CPUs; with per-CPU caches it should stay near
//! the one-CPU figure) and `kernel.phys.order0_pair_4cpu_vs_1cpu` (the
//! ratio of the two: 1.0 is perfect scaling).
//!
//! `mode=bench bench=tlb` (booted with `-smp 2`, where each vCPU has a host
//! core to itself) runs the TLB shootdown check of the tests
//! (`devtools::tlb_acid`) for [`ACID_ROUNDS`] rounds, ten times the
//! test's: a writer on the other CPU, one unmapping, write-protecting or
//! replacing its page, the frame taken back with a canary. It panics if a
//! write got through; `kernel.tlb_acid.rounds` and `kernel.tlb_acid.round`
//! (µs per round, a shootdown and a fault on every CPU) say what it did.
//! (At `-smp 4` on two host cores the writers spin on vCPUs the host has
//! to take turns running, and 10^5 rounds take most of an hour.)

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use vm::phys::AllocFlags;

use crate::kern::{sched, time};
use crate::kprintln;

/// Pairs each CPU makes.
const PAIRS: u64 = 200_000;
/// Rounds of the shootdown check.
const ACID_ROUNDS: u64 = 100_000;

/// Runs the pairs on `n` CPUs at once (0 to n-1); returns the mean time
/// per pair, in ns, or `None` when a thread could not be made.
fn order0_pairs_on(n: usize) -> Option<f64> {
    let ready = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let total_tsc = Arc::new(AtomicU64::new(0));
    // Every thread made before any starts: one that cannot be made leaves
    // none spinning for a start that never comes.
    let mut threads = Vec::new();
    for cpu in 0..n {
        let (ready, go, total_tsc) = (ready.clone(), go.clone(), total_tsc.clone());
        let t = sched::prepare_detached("bench-alloc", move || {
            let pm = vm::global();
            // Release/Acquire: `ready` pairs with the starter's wait below;
            // `go` with the starter's store that lets every thread start
            // at once.
            ready.fetch_add(1, Ordering::Release);
            while !go.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
            let t0 = time::rdtsc();
            for _ in 0..PAIRS {
                let Some(p) = pm.alloc(AllocFlags::NOBUSY) else { break };
                pm.free(core::hint::black_box(p));
            }
            total_tsc.fetch_add(time::rdtsc() - t0, Ordering::Relaxed);
        })?;
        threads.push(t.pinned(cpu));
    }
    let ids: Vec<_> = threads.into_iter().filter_map(|t| t.start().ok()).collect();
    let n = ids.len();
    while ready.load(Ordering::Acquire) < n {
        sched::yield_now();
    }
    go.store(true, Ordering::Release);
    for id in ids {
        sched::join(id);
    }
    // Relaxed: the joins ordered every thread's add before this load.
    let tsc = total_tsc.load(Ordering::Relaxed) / n as u64;
    Some(time::tsc_to_us(tsc) as f64 * 1000.0 / PAIRS as f64)
}

/// The order-0 pair on 1, 2 and 4 CPUs (as many as are online).
pub fn run() {
    let online = crate::arch::percpu::online();
    let mut one = None;
    for n in [1usize, 2, 4] {
        if n > online {
            break;
        }
        let Some(ns) = order0_pairs_on(n) else {
            kprintln!("bench: kernel.phys.order0_pair_{n}cpu: no memory for the threads");
            continue;
        };
        kprintln!("bench: kernel.phys.order0_pair_{n}cpu {ns:.1} ns/pair");
        if n == 1 {
            one = Some(ns);
        } else if n == 4
            && let Some(one) = one
        {
            kprintln!("bench: kernel.phys.order0_pair_4cpu_vs_1cpu {:.2} x", ns / one);
        }
    }
}

/// The TLB shootdown check for [`ACID_ROUNDS`] rounds (`bench=tlb`).
pub fn run_tlb() {
    let cpus = crate::arch::percpu::online();
    if cpus < 2 {
        kprintln!("tlb_acid: one CPU, no shootdown to check (boot with -smp 2)");
        return;
    }
    let t0 = time::rdtsc();
    let checked = super::tlb_acid::run_rounds(ACID_ROUNDS);
    let us = time::tsc_to_us(time::rdtsc() - t0);
    kprintln!("bench: kernel.tlb_acid.rounds {ACID_ROUNDS} rounds");
    kprintln!("bench: kernel.tlb_acid.rounds_checked {checked} rounds");
    kprintln!("bench: kernel.tlb_acid.round {:.1} us", us as f64 / ACID_ROUNDS as f64);
}
