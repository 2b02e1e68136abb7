//! Time: the timer tick count and TSC-based timestamps.
//!
//! The local APIC timer interrupts [`HZ`] times a second and each interrupt
//! advances [`ticks`]. Finer times come from the TSC, whose rate is measured
//! against the PIT at boot (see `arch::apic`). Under software emulation both
//! follow the host's clock closely enough for logs and test durations.

use core::sync::atomic::{AtomicU64, Ordering};

/// Timer interrupts per second.
pub const HZ: u64 = 1000;

/// Timer interrupts since the timer started. (A) atomic.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// TSC value at kernel entry. (C) set once at boot.
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// TSC counts per second, 0 until calibrated. (C) set once at boot.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Records the boot TSC; call first thing in kernel entry.
pub fn init_boot_tsc() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

pub(crate) fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::Relaxed);
}

/// TSC counts per second (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Called from the timer interrupt.
pub(crate) fn tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Timer ticks since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Waits briefly: until the next interrupt if interrupts are on, else about
/// a millisecond by the TSC. The VM's waits (busy pages, free memory) use it
/// until there is a scheduler to sleep in.
pub fn wait_a_moment() {
    if x86_64::instructions::interrupts::are_enabled() {
        x86_64::instructions::hlt();
    } else {
        let start = rdtsc();
        let ms = (tsc_hz() / 1000).max(1);
        while rdtsc().wrapping_sub(start) < ms {
            core::hint::spin_loop();
        }
    }
}

/// Converts a TSC interval to microseconds (0 before calibration).
pub fn tsc_to_us(delta: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 { 0 } else { (delta as u128 * 1_000_000 / hz as u128) as u64 }
}

/// Microseconds since kernel entry (0 before calibration).
pub fn uptime_us() -> u64 {
    tsc_to_us(rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

mod tests {
    use ktest::ktest;

    use super::*;

    /// The timer interrupt fires and advances the tick count at about HZ.
    #[ktest]
    fn ticks_advance() {
        assert!(x86_64::instructions::interrupts::are_enabled());
        assert!(tsc_hz() > 0, "TSC not calibrated");
        let start = ticks();
        let tsc0 = rdtsc();
        while ticks() < start + 20 {
            x86_64::instructions::hlt();
        }
        let us = tsc_to_us(rdtsc() - tsc0);
        // 20 ticks at HZ = 20 ms. A wrong divisor or calibration would be off
        // by 16x or more; allow generous slack for a loaded host.
        let nominal = 20 * 1_000_000 / HZ;
        assert!(us > nominal / 4 && us < nominal * 50, "20 ticks took {us} us, nominal {nominal} us");
    }
}
