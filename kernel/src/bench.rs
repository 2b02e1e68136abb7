//! In-kernel benchmarks (`mode=bench`), printed as `bench: <name> <value> <unit>`.
//!
//! Figures that need a clock outside the guest (boot time, the real timer
//! rate) are measured by the host from the times at which these lines arrive;
//! the `ktick:` lines exist for that.

use crate::{kprintln, time};

/// How long the tick-rate window lasts, in ticks.
const TICK_WINDOW: u64 = 2 * time::HZ;

pub fn run() {
    // Tick rate: the host times the two ktick lines with its own clock.
    let t0 = time::ticks();
    while time::ticks() == t0 {
        x86_64::instructions::hlt();
    }
    let start = time::ticks();
    let tsc0 = time::rdtsc();
    kprintln!("ktick: start {start} hz={}", time::HZ);
    while time::ticks() < start + TICK_WINDOW {
        x86_64::instructions::hlt();
    }
    let end = time::ticks();
    let tsc1 = time::rdtsc();
    kprintln!("ktick: end {end}");
    let us = time::tsc_to_us(tsc1 - tsc0).max(1);
    kprintln!("bench: timer.tick_rate_by_tsc {} Hz", (end - start) * 1_000_000 / us);
    kprintln!("bench: cpu.tsc_rate {} MHz", time::tsc_hz() / 1_000_000);
    kprintln!("bench: apic.timer_input_rate {} kHz", crate::arch::apic::timer_hz() / 1000);
    page_allocator();
}

/// Page-allocator micro-benchmarks over the real page array: the same
/// workloads as the host benchmark (`vm/benches/phys.rs`), timed by the TSC.
pub fn page_allocator() {
    use vm::phys::AllocFlags;
    let pm = vm::global();
    let ns_per = |iters: u64, tsc: u64| time::tsc_to_us(tsc) as f64 * 1000.0 / iters as f64;

    const PAIRS: u64 = 200_000;
    let t0 = time::rdtsc();
    for _ in 0..PAIRS {
        let Some(p) = pm.alloc(AllocFlags::NOBUSY) else { break };
        pm.free(core::hint::black_box(p));
    }
    kprintln!("bench: kernel.phys.order0_pair {:.1} ns/pair", ns_per(PAIRS, time::rdtsc() - t0));

    const BIG: u64 = 5_000;
    let t0 = time::rdtsc();
    for _ in 0..BIG {
        let Some(p) = pm.alloc_order(9, AllocFlags::UNMANAGED) else { break };
        pm.free_contig(core::hint::black_box(p), 512);
    }
    kprintln!("bench: kernel.phys.order9_pair {:.1} ns/pair", ns_per(BIG, time::rdtsc() - t0));

    const MIXED: u64 = 200_000;
    let mut rng = 42u64;
    let mut live: alloc::vec::Vec<(&'static vm::page::Page, usize)> = alloc::vec::Vec::with_capacity(1024);
    let t0 = time::rdtsc();
    for _ in 0..MIXED {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = rng >> 33;
        if live.len() < 1024 && (live.is_empty() || r % 3 != 0) {
            let order = (r / 3 % 5) as u8;
            if let Some(p) = pm.alloc_order(order, AllocFlags::UNMANAGED) {
                live.push((p, 1 << order));
            }
        } else {
            let (p, pages) = live.swap_remove(r as usize % live.len());
            if pages == 1 { pm.free(p) } else { pm.free_contig(p, pages) }
        }
    }
    for (p, pages) in live {
        if pages == 1 { pm.free(p) } else { pm.free_contig(p, pages) }
    }
    kprintln!("bench: kernel.phys.mixed_op {:.1} ns/op", ns_per(MIXED, time::rdtsc() - t0));
}
