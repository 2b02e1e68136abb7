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
}
