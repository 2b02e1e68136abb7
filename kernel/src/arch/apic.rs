//! The local APIC timer, calibrated against the PIT.
//!
//! The legacy 8259 PICs are remapped out of the exception range and masked; all
//! interrupts come through the local APIC. The APIC timer runs periodically at
//! [`crate::kern::time::HZ`]. Its input clock is unknown, so it is measured once at
//! boot against PIT channel 2 (a fixed 1.193182 MHz), which also gives the TSC
//! rate used for timestamps.
//!
//! The APIC registers are reached through the direct map of physical memory,
//! which the bootloader extends to at least 4 GiB for this reason.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use volatile::VolatilePtr;
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

use super::trapframe::{VEC_SPURIOUS, VEC_TIMER};
use crate::kern::time;

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;

// Register offsets (Intel SDM vol. 3, table 11-1).
const REG_ID: usize = 0x20;
const REG_EOI: usize = 0xB0;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;
/// ICR: the previous IPI has not been accepted yet.
const ICR_PENDING: u32 = 1 << 12;
/// ICR: assert (for every kind but INIT de-assert).
const ICR_ASSERT: u32 = 1 << 14;
const REG_SVR: usize = 0xF0;
const REG_LVT_TIMER: usize = 0x320;
const REG_TIMER_INITIAL: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3E0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const DIVIDE_BY_16: u32 = 0b0011;

const PIT_HZ: u64 = 1_193_182;
/// Length of the calibration window: 10 ms of PIT ticks.
const CALIBRATION_PIT_TICKS: u16 = (PIT_HZ / 100) as u16;

/// Virtual address of the local APIC's registers (0 until [`init`]).
static APIC_BASE: AtomicU64 = AtomicU64::new(0);
/// APIC timer counts per second after the divider, measured at boot.
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);
/// The timer's initial count for one tick, as the boot CPU measured it:
/// the other CPUs' timers use it too (all local APICs run off one clock).
static TIMER_COUNT: AtomicU64 = AtomicU64::new(0);

fn reg(offset: usize) -> VolatilePtr<'static, u32> {
    let base = APIC_BASE.load(Ordering::Relaxed);
    debug_assert!(base != 0, "local APIC used before init");
    // SAFETY: `base` maps the 4 KiB APIC register page (set in `init` from the
    // APIC base MSR and the direct map); every offset used is a 32-bit register
    // inside it, 16-byte aligned.
    unsafe { VolatilePtr::new(NonNull::new_unchecked((base as usize + offset) as *mut u32)) }
}

/// Masks both 8259 PICs after moving their vectors to 0x20..0x30, so a stray
/// legacy interrupt can never look like a CPU exception.
fn disable_pic() {
    // SAFETY: these are the standard PIC command/data ports; the ICW sequence
    // below is the documented initialisation and leaves every line masked.
    unsafe {
        let mut cmd1 = Port::<u8>::new(0x20);
        let mut data1 = Port::<u8>::new(0x21);
        let mut cmd2 = Port::<u8>::new(0xA0);
        let mut data2 = Port::<u8>::new(0xA1);
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(0x20);
        data2.write(0x28);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xFF);
        data2.write(0xFF);
    }
}

/// Counts APIC timer and TSC ticks over one PIT window.
/// Returns (apic counts, tsc counts) per 10 ms.
fn calibrate() -> (u64, u64) {
    // SAFETY: port 0x61 (speaker/gate control) and 0x42/0x43 (PIT channel 2)
    // are the standard PC ports; channel 2 drives only the speaker, which stays
    // disconnected (bit 1 of 0x61 clear).
    unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let mut mode = Port::<u8>::new(0x43);
        let mut ch2 = Port::<u8>::new(0x42);
        let g = gate.read();
        gate.write((g & !0x02) | 0x01);
        // Channel 2, low then high byte, mode 0 (interrupt on terminal count).
        mode.write(0b1011_0000);
        ch2.write(CALIBRATION_PIT_TICKS as u8);
        ch2.write((CALIBRATION_PIT_TICKS >> 8) as u8);
        // Restart the count by pulsing the gate.
        let g = gate.read();
        gate.write(g & !0x01);
        gate.write(g | 0x01);

        reg(REG_TIMER_INITIAL).write(u32::MAX);
        let tsc0 = time::rdtsc();
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        let tsc1 = time::rdtsc();
        let apic = u32::MAX - reg(REG_TIMER_CURRENT).read();
        reg(REG_TIMER_INITIAL).write(0);
        (apic as u64, tsc1 - tsc0)
    }
}

/// Enables the local APIC and starts its timer at `time::HZ`.
pub fn init(phys_offset: u64) {
    disable_pic();
    let mut msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the enable bit
    // at the address the firmware chose changes nothing else.
    let base_phys = unsafe {
        let v = msr.read();
        msr.write(v | APIC_BASE_ENABLE);
        v & 0x000F_FFFF_FFFF_F000
    };
    APIC_BASE.store(phys_offset + base_phys, Ordering::Relaxed);

    reg(REG_SVR).write(SVR_ENABLE | VEC_SPURIOUS as u32);
    reg(REG_TIMER_DIVIDE).write(DIVIDE_BY_16);
    reg(REG_LVT_TIMER).write(LVT_MASKED | VEC_TIMER as u32);

    let (apic_per_10ms, tsc_per_10ms) = calibrate();
    TIMER_HZ.store(apic_per_10ms * 100, Ordering::Relaxed);
    time::set_tsc_hz(tsc_per_10ms * 100);

    let count = (apic_per_10ms * 100 / time::HZ).max(1);
    TIMER_COUNT.store(count, Ordering::Relaxed);
    reg(REG_LVT_TIMER).write(LVT_PERIODIC | VEC_TIMER as u32);
    reg(REG_TIMER_INITIAL).write(count as u32);
    log::info!(
        "local APIC at {:#x}: timer {} kHz, period {} counts ({} Hz); TSC {} MHz",
        base_phys,
        apic_per_10ms / 10,
        count,
        time::HZ,
        tsc_per_10ms / 10_000
    );
}

/// Enables an AP's local APIC, with its timer masked: the AP takes no
/// interrupt until the scheduler runs on it.
pub fn init_ap() {
    let mut msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: as in `init`; every CPU's local APIC sits at the address the
    // boot CPU's does (the base MSR is the same), each seeing its own.
    unsafe {
        let v = msr.read();
        msr.write(v | APIC_BASE_ENABLE);
    }
    reg(REG_SVR).write(SVR_ENABLE | VEC_SPURIOUS as u32);
    reg(REG_TIMER_DIVIDE).write(DIVIDE_BY_16);
    reg(REG_LVT_TIMER).write(LVT_MASKED | VEC_TIMER as u32);
}

/// Starts this AP's timer at `time::HZ`, with the boot CPU's calibration.
pub fn start_timer_ap() {
    reg(REG_LVT_TIMER).write(LVT_PERIODIC | VEC_TIMER as u32);
    reg(REG_TIMER_INITIAL).write(TIMER_COUNT.load(Ordering::Relaxed) as u32);
}

/// Signals end-of-interrupt to the local APIC.
pub fn eoi() {
    reg(REG_EOI).write(0);
}

/// The APIC timer's measured input rate (after the divider), in Hz.
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}

/// This CPU's local APIC ID.
pub fn id() -> u32 {
    reg(REG_ID).read() >> 24
}

/// An inter-processor interrupt's kind.
#[derive(Clone, Copy, Debug)]
pub enum Ipi {
    /// A non-maskable interrupt.
    Nmi,
    /// INIT: the target resets and waits for a start-up IPI.
    Init,
    /// Start-up: a CPU in wait-for-SIPI starts in real mode at
    /// `page * 4096`.
    Startup(u8),
    /// An ordinary interrupt on `vector`.
    Fixed(u8),
}

/// Sends `ipi` to the CPU whose local APIC ID is `dest` (for INIT and
/// start-up, waiting until the local APIC has sent it). Interrupts are off
/// across the two ICR writes, so a handler's own IPI cannot come between
/// them.
pub fn send_ipi(dest: u32, ipi: Ipi) {
    let low = match ipi {
        Ipi::Nmi => 0b100 << 8 | ICR_ASSERT,
        Ipi::Init => 0b101 << 8 | ICR_ASSERT,
        Ipi::Startup(page) => 0b110 << 8 | page as u32 | ICR_ASSERT,
        Ipi::Fixed(vector) => vector as u32 | ICR_ASSERT,
    };
    x86_64::instructions::interrupts::without_interrupts(|| {
        while reg(REG_ICR_LOW).read() & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
        reg(REG_ICR_HIGH).write(dest << 24);
        // The write of the low word sends it.
        reg(REG_ICR_LOW).write(low);
        if matches!(ipi, Ipi::Init | Ipi::Startup(_)) {
            while reg(REG_ICR_LOW).read() & ICR_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
    });
}
