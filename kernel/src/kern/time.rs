//! Time: the timer tick count and TSC-based timestamps.
//!
//! The local APIC timer interrupts every CPU [`HZ`] times a second, and
//! each interrupt brings [`ticks`] up to the TSC's count of
//! 1/[`HZ`] seconds since the first one. Counting the interrupts instead
//! lost time whenever a virtual CPU was not run for a while (its missed
//! interrupts are not all delivered later), so that sleeps overran by a
//! second on a busy host; any CPU's interrupt now catches the count up.
//! Finer times come from the TSC, whose rate is measured against the PIT at
//! boot (see `arch::apic`).

use core::sync::atomic::{AtomicU64, Ordering};

/// Timer interrupts per second.
pub const HZ: u64 = 1000;

/// 1/HZ seconds since the first timer interrupt, as the TSC counts them,
/// brought up to date at each timer interrupt. (A) Relaxed: a clock; it
/// publishes nothing.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// TSC value at the first timer interrupt (0: none yet). (A)
static TICK_BASE_TSC: AtomicU64 = AtomicU64::new(0);
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

/// Called from each CPU's timer interrupt: brings the tick count up to the
/// TSC's (never back).
pub(crate) fn tick() {
    let now = rdtsc();
    let hz = tsc_hz();
    if hz == 0 {
        TICKS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let base = match TICK_BASE_TSC.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => now,
        Err(b) => b,
    };
    let due = ((now.wrapping_sub(base) as u128 * HZ as u128) / hz as u128) as u64;
    if due > TICKS.load(Ordering::Relaxed) {
        TICKS.fetch_max(due, Ordering::Relaxed);
    }
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

/// Converts a TSC interval to nanoseconds (0 before calibration).
pub fn tsc_to_ns(delta: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 { 0 } else { (delta as u128 * 1_000_000_000 / hz as u128) as u64 }
}

/// Nanoseconds since kernel entry: the monotonic clock.
pub fn monotonic_ns() -> u64 {
    tsc_to_ns(rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// The wall-clock time at boot, seconds since 1970 (from the CMOS clock). (C)
static BOOT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Reads the CMOS real-time clock (UTC, as QEMU keeps it) into the wall
/// clock's base.
pub fn init_wall_clock() {
    use x86_64::instructions::port::Port;
    let read = |reg: u8| -> u8 {
        // SAFETY: ports 0x70/0x71 are the CMOS index and data registers; the
        // NMI-disable bit stays clear.
        unsafe {
            Port::<u8>::new(0x70).write(reg);
            Port::<u8>::new(0x71).read()
        }
    };
    // Wait out an update in progress, then read until two reads agree.
    let snapshot = || {
        let mut spins = 0;
        while read(0x0A) & 0x80 != 0 && spins < 1_000_000 {
            spins += 1;
        }
        [read(0x00), read(0x02), read(0x04), read(0x07), read(0x08), read(0x09), read(0x32)]
    };
    let mut t = snapshot();
    for _ in 0..5 {
        let u = snapshot();
        if u == t {
            break;
        }
        t = u;
    }
    let status_b = read(0x0B);
    let bcd = |v: u8| if status_b & 0x04 == 0 { (v & 0x0F) + (v >> 4) * 10 } else { v };
    let (sec, min) = (bcd(t[0]) as u64, bcd(t[1]) as u64);
    let mut hour = bcd(t[2] & 0x7F) as u64;
    if status_b & 0x02 == 0 && t[2] & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let (day, month) = (bcd(t[3]) as u64, bcd(t[4]) as u64);
    let century = match bcd(t[6]) as u64 {
        c @ 19..=21 => c,
        _ => 20,
    };
    let year = century * 100 + bcd(t[5]) as u64;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return;
    }
    BOOT_EPOCH.store(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec, Ordering::Relaxed);
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The wall-clock time in nanoseconds since 1970.
pub fn realtime_ns() -> u64 {
    BOOT_EPOCH.load(Ordering::Relaxed) * 1_000_000_000 + monotonic_ns()
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

    /// The calendar arithmetic of the wall clock.
    #[ktest]
    fn civil_dates_to_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
        // The CMOS clock gave a date after this code was written.
        assert!(realtime_ns() / 1_000_000_000 > 1_700_000_000, "wall clock not set from the CMOS clock");
    }
}
