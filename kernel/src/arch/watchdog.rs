//! The watchdog: a CPU stuck with interrupts off for over a second says so,
//! with where it is, the lock it spins on and that lock's holder, instead of
//! hanging silently.
//!
//! A stuck CPU takes no interrupt, so the watchdog's tick is a
//! non-maskable one: the PIT's channel 0 runs at [`NMI_HZ`], and its I/O
//! APIC pin (ISA IRQ 0, which QEMU's `pc` machine wires to pin 2) is routed
//! with NMI delivery to the boot CPU. Each NMI compares every CPU's local
//! APIC timer tick count with the one the last NMI saw. The timer interrupt
//! needs interrupts on; when [`STUCK_NMIS`] NMIs in a row find a CPU's
//! count unchanged, that CPU has had them off (or been inside one handler)
//! for a second, and an NMI IPI asks it for its report. The report is
//! written from the stuck CPU's NMI stack, and the kernel then stops as for
//! a panic.
//!
//! An NMI that comes while gdb single-steps or holds the machine is held
//! back with the timer, so a stopped machine is not a stuck one.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::trapframe::TrapFrame;

/// NMIs per second.
pub const NMI_HZ: u32 = 20;
/// NMIs in a row that find no timer tick: a second's worth.
pub const STUCK_NMIS: u32 = NMI_HZ;

const PIT_HZ: u32 = 1_193_182;
const PIT_COMMAND: u16 = 0x43;
const PIT_CHANNEL0: u16 = 0x40;
/// The I/O APIC pin of ISA IRQ 0 on QEMU's `pc` machine (its MADT has the
/// interrupt source override 0 -> 2).
const PIT_PIN: u32 = 2;

/// Whether the watchdog runs. (A)
static RUNNING: AtomicBool = AtomicBool::new(false);
/// NMIs taken, for the test. (A)
pub static NMIS: AtomicU64 = AtomicU64::new(0);

/// Starts the watchdog: once the timer ticks and the I/O APIC is up.
pub fn start() {
    for cpu in (0..super::percpu::online()).filter_map(super::percpu::cpu) {
        cpu.watchdog_ticks.store(cpu.timer_ticks.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    let divisor = (PIT_HZ / NMI_HZ) as u16;
    // SAFETY: the PIT's command and channel-0 ports; mode 2 (rate
    // generator), low byte then high byte. Nothing else uses channel 0 once
    // the APIC timer is calibrated.
    unsafe {
        Port::<u8>::new(PIT_COMMAND).write(0x34);
        Port::<u8>::new(PIT_CHANNEL0).write(divisor as u8);
        Port::<u8>::new(PIT_CHANNEL0).write((divisor >> 8) as u8);
    }
    match super::ioapic::route_nmi(PIT_PIN) {
        Ok(()) => {
            RUNNING.store(true, Ordering::Relaxed);
            log::info!("watchdog: {NMI_HZ} NMIs a second from the PIT");
        }
        Err(e) => log::warn!("watchdog: not started: {e:?}"),
    }
}

/// The NMI handler. Returns whether the NMI was the watchdog's (it always
/// is while the watchdog runs: nothing else raises NMIs here but tests).
///
/// The PIT's NMIs come to the boot CPU, which watches every CPU: each
/// CPU's timer interrupts (`PerCpu::timer_ticks`) against what the last NMI
/// saw (`PerCpu::watchdog_ticks`, written by the boot CPU only). A CPU
/// found stuck is asked, by an NMI of its own, to write its report
/// (`PerCpu::report_stuck`): only it can say where it is.
pub fn nmi(tf: &TrapFrame) -> bool {
    // The CPU's own block: an NMI may land where the GS base is the
    // user's, which the NMI entry sets right first.
    let me = super::percpu::this();
    me.nmis.fetch_add(1, Ordering::Relaxed);
    if me.report_stuck.swap(false, Ordering::SeqCst) {
        report(tf);
    }
    if me.dump_request.swap(false, Ordering::SeqCst) {
        super::nmi::dump(me, tf);
        return true;
    }
    if !RUNNING.load(Ordering::Relaxed) {
        return false;
    }
    NMIS.fetch_add(1, Ordering::Relaxed);
    if me.id != 0 {
        return true;
    }
    for n in 0..super::percpu::online() {
        let Some(cpu) = super::percpu::cpu(n) else { continue };
        let now = cpu.timer_ticks.load(Ordering::Relaxed);
        // (A CPU whose timer never ran, one left out, is not watched.)
        if now == 0 || cpu.watchdog_ticks.swap(now, Ordering::Relaxed) != now {
            cpu.watchdog_unchanged.store(0, Ordering::Relaxed);
            continue;
        }
        if cpu.watchdog_unchanged.fetch_add(1, Ordering::Relaxed) + 1 < STUCK_NMIS {
            continue;
        }
        RUNNING.store(false, Ordering::Relaxed);
        if n == 0 {
            report(tf);
        }
        cpu.report_stuck.store(true, Ordering::SeqCst);
        super::apic::send_ipi(cpu.apic_id.load(Ordering::Relaxed), super::apic::Ipi::Nmi);
    }
    true
}

/// Writes what the stuck CPU is doing and stops the kernel.
fn report(tf: &TrapFrame) -> ! {
    use core::fmt::Write;

    let cpu = super::percpu::this();
    let mut w = crate::kern::serial::panic_writer();
    let _ = writeln!(
        w,
        "\nwatchdog: CPU {} stuck with interrupts off for {} ms at rip {:#x} (rflags {:#x})",
        cpu.id,
        1000 * STUCK_NMIS / NMI_HZ,
        tf.rip,
        tf.rflags
    );
    let lock = cpu.spinning_lock.load(Ordering::Relaxed);
    if lock != 0 {
        let holder = cpu.spinning_holder.load(Ordering::Relaxed);
        let holder_cpu = cpu.spinning_holder_cpu.load(Ordering::Relaxed);
        // SAFETY: only `&'static Location`s are stored.
        let holder = (!holder.is_null()).then(|| unsafe { &*holder });
        let _ = match holder {
            Some(site) => writeln!(w, "watchdog: spinning on lock {lock:#x}, held by CPU {holder_cpu} since {site}"),
            None => writeln!(w, "watchdog: spinning on lock {lock:#x}"),
        };
        if holder_cpu != crate::kern::sync::NO_CPU {
            drop(w);
            super::nmi::ask_for_dump(holder_cpu);
            w = crate::kern::serial::panic_writer();
        }
    }
    let _ = writeln!(w, "watchdog: where it is:");
    crate::kern::backtrace::write_from(&mut w, tf.rip, tf.rbp);
    drop(w);
    panic!("watchdog: a CPU was stuck with interrupts off");
}

mod tests {
    use ktest::ktest;

    use super::*;

    /// The NMIs come while interrupts are off.
    #[ktest]
    fn nmis_come_with_interrupts_off() {
        let before = NMIS.load(Ordering::Relaxed);
        let start = crate::kern::time::rdtsc();
        let tsc_ms = crate::kern::time::tsc_hz() / 1000;
        x86_64::instructions::interrupts::without_interrupts(|| {
            while NMIS.load(Ordering::Relaxed) < before + 3 && crate::kern::time::rdtsc() - start < 500 * tsc_ms {
                core::hint::spin_loop();
            }
        });
        assert!(NMIS.load(Ordering::Relaxed) >= before + 3, "no NMIs within half a second");
    }

    /// A CPU that spins with interrupts off on a lock its own context
    /// holds is reported, with the lock's holder, instead of hanging.
    #[ktest(should_panic = "watchdog: a CPU was stuck", timeout = 20)]
    fn a_spin_with_interrupts_off_is_reported() {
        let m = crate::kern::sync::IrqMutex::new(());
        let _held = m.lock();
        let _again = m.lock();
    }
}
